"""Make-like stages of a multi-job recipe (the Aya Expanse pipeline, aya_jax/jobs/recipe.py): each stage is one
job run in its own folder `<root>/<stage>`, skipped when finished, resumed when interrupted, redone when what it
depends on changed.

A stage's *fingerprint* is the SHA-256 of its settings (a JSON value: the job's whole config, with the paths of
the earlier stages' outputs it reads) and of the fingerprints of those earlier stages. `<root>/<stage>/stage.json`
records the fingerprint, the settings and the state (`running` while the job runs, `done` after), so that a
rerun decides per stage, like `make`:

* no record: **run**;
* a record with the same fingerprint, `running` (the job was killed): **resume** — the job is called again in the
  same folder and continues from its own checkpoints and logs;
* the same fingerprint, `done`, its artefact present: **skip**;
* another fingerprint: **redo**, saying why (the settings that differ, as dotted keys, or the earlier stage
  whose output changed). The old folder is kept, renamed `<stage>.superseded-<n>`: nothing made is lost;
* named in `redo`: redo, whatever the record says.

Because a fingerprint includes its inputs' fingerprints, a changed stage is redone with every stage after it that
reads its output, and no stage before it. Running a subset (`only`) leaves the others alone, but a chosen stage
whose input stage has not finished stops before anything runs. Every failure is one line naming the stage and
the artefact (`StageError`); a job's own error is passed on with the stage named in front; a damaged record
stops the run rather than being guessed at.

On several hosts every process runs every job (they are SPMD), while the bookkeeping — reading and writing the
records, deciding, moving folders aside — is done by process 0 alone and its outcome handed to the others
(`share`, e.g. `sharding.on_first_process`), so that all processes take the same decisions.

Comparable in spirit to `make` and to DVC's stage lock files (a hash of the command and its dependencies); here
a stage is an in-process job call, and its dependencies are the settings and upstream stages, not file hashes —
checkpoints are large, and a stage's own job already checks the files it reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

RECORD = "stage.json"


class StageError(ValueError):
    """A stage could not run or its output is missing (the message names the stage and the artefact)."""


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    job: str  # what it runs, for the report
    settings: Mapping[str, Any]  # JSON-able: everything the stage's output depends on besides its inputs
    inputs: tuple[str, ...]  # the earlier stages whose outputs it reads
    artefact: str  # what it makes, relative to its folder (checked after it runs and before it is read)
    run: Callable[[pathlib.Path], Any]  # runs the job in the given folder (what it returns is not used)


@dataclasses.dataclass(frozen=True)
class Decision:
    stage: str
    action: str  # run | resume | skip | redo
    reason: str


@dataclasses.dataclass
class Outcome:
    stage: str
    action: str
    reason: str
    folder: pathlib.Path
    artefact: pathlib.Path
    seconds: float = 0.0


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def fingerprint(settings: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    return hashlib.sha256(
        canonical({"settings": settings, "inputs": dict(inputs)}).encode("utf-8")
    ).hexdigest()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf} of nested mappings (sequences are leaves)."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose value differs between two settings (added and removed keys included)."""
    a, b = flatten(json.loads(canonical(old))), flatten(json.loads(canonical(new)))
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def read_record(folder: pathlib.Path) -> dict[str, Any] | None:
    path = folder / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not {"fingerprint", "state", "settings"} <= record.keys():
            raise ValueError("fields missing")
    except (ValueError, OSError) as e:
        raise StageError(
            f"stage {folder.name}: {path} is damaged ({e}); move it away to redo the stage"
        ) from None
    return record


def _write_record(folder: pathlib.Path, record: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(
        json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n", "utf-8"
    )
    os.replace(tmp, folder / RECORD)


def decide(
    stage: Stage, folder: pathlib.Path, inputs: Mapping[str, str], changed_inputs: Iterable[str], force: bool
) -> tuple[Decision, str]:
    """(what to do with `stage` and why, its fingerprint). `changed_inputs`: the input stages redone (or first
    run) in this pass, named in the reason."""
    fp = fingerprint(stage.settings, inputs)
    record = read_record(folder)
    if record is None:
        return Decision(stage.name, "run", "not run before"), fp
    if force:
        return Decision(stage.name, "redo", "named in pipeline.redo"), fp
    if record["fingerprint"] == fp:
        if record["state"] != "done":
            return Decision(stage.name, "resume", "interrupted: the job continues from what it saved"), fp
        if not (folder / stage.artefact).exists():
            raise StageError(
                f"stage {stage.name}: finished, but its artefact {folder / stage.artefact} is missing; "
                f"set pipeline.redo=('{stage.name}',) to make it again"
            )
        return Decision(stage.name, "skip", "finished, nothing changed"), fp
    keys = changed_keys(record["settings"], stage.settings)
    upstream = sorted(
        set(changed_inputs) | {s for s in inputs if record.get("inputs", {}).get(s) != inputs[s]}
    )
    why = []
    if keys:
        why.append("changed: " + ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else ""))
    if upstream:
        why.append("its input changed: " + ", ".join(upstream))
    return Decision(stage.name, "redo", "; ".join(why) or "fingerprint differs"), fp


def _supersede(folder: pathlib.Path) -> pathlib.Path:
    n = 1
    while (aside := folder.with_name(f"{folder.name}.superseded-{n}")).exists():
        n += 1
    os.replace(folder, aside)
    return aside


def _once(share: Callable[[Callable[[], Any]], Any], work: Callable[[], Any]) -> Any:
    """work() done by one process (`share`), its StageError raised on every process alike."""

    def caught() -> dict[str, Any]:
        try:
            return {"value": work()}
        except StageError as e:
            return {"error": str(e)}

    got = share(caught)
    if "error" in got:
        raise StageError(got["error"])
    return got["value"]


def run_stages(
    stages: Sequence[Stage],
    root: pathlib.Path,
    *,
    only: Sequence[str] = (),
    redo: Sequence[str] = (),
    share: Callable[[Callable[[], Any]], Any] = lambda work: work(),
    announce: Callable[[Decision], None] | None = None,
) -> list[Outcome]:
    """Run `stages` (in order; each stage's inputs come before it) under `root` as the module docstring says.
    `only`: the stages to consider (() = all); `redo`: stages to redo regardless. The bookkeeping — reading and
    writing the records, deciding, moving folders aside — goes through `share(work)`, which on several hosts
    must run work() on one process and hand its (JSON) result to all (sharding.on_first_process), so that every
    process runs the same jobs; the jobs themselves run on every process."""
    names = [s.name for s in stages]
    for field, chosen in (("pipeline.stages", only), ("pipeline.redo", redo)):
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise StageError(f"{field}: unknown stage(s) {unknown} (stages: {', '.join(names)})")
    by_name = {s.name: s for s in stages}
    for s in stages:
        late = [i for i in s.inputs if i not in by_name or names.index(i) > names.index(s.name)]
        if late:
            raise StageError(f"stage {s.name}: reads {late}, which do not come before it")
    chosen = set(only or names)
    fingerprints: dict[str, str] = {}  # the bookkeeping process's view
    fresh: set[str] = set()  # stages (re)made in this pass
    records: dict[str, dict[str, Any]] = {}

    def prepare(stage: Stage) -> dict[str, Any] | None:
        """The decision on `stage` (None: not chosen), its folder made ready and its record marked running."""
        folder = root / stage.name
        if stage.name not in chosen:
            record = read_record(folder)
            if record is not None and record["state"] == "done":
                fingerprints[stage.name] = record["fingerprint"]
            return None
        missing = [i for i in stage.inputs if i not in fingerprints]
        if missing:
            raise StageError(
                f"stage {stage.name}: its input stage(s) {missing} have not finished "
                f"(no {RECORD} marked done under {root}); run them first or add them to pipeline.stages"
            )
        for i in stage.inputs:
            artefact = root / i / by_name[i].artefact
            if not artefact.exists():
                raise StageError(f"stage {stage.name}: the artefact of stage {i}, {artefact}, is missing")
        inputs = {i: fingerprints[i] for i in stage.inputs}
        decision, fp = decide(
            stage, folder, inputs, [i for i in stage.inputs if i in fresh], stage.name in redo
        )
        fingerprints[stage.name] = fp
        if decision.action != "skip":
            if decision.action == "redo":
                log.info("stage %s: the previous output is kept in %s", stage.name, _supersede(folder))
            records[stage.name] = {"stage": stage.name, "job": stage.job, "fingerprint": fp,
                                   "settings": stage.settings, "inputs": inputs, "state": "running"}  # fmt: skip
            _write_record(folder, records[stage.name])
        return dataclasses.asdict(decision)

    def finish(stage: Stage, seconds: float) -> None:
        artefact = root / stage.name / stage.artefact
        if not artefact.exists():
            raise StageError(f"stage {stage.name} ({stage.job}) ended without its artefact {artefact}")
        _write_record(
            root / stage.name, {**records[stage.name], "state": "done", "seconds": round(seconds, 3)}
        )
        fresh.add(stage.name)

    outcomes = []
    for stage in stages:
        got = _once(share, lambda stage=stage: prepare(stage))
        if got is None:
            continue
        decision = Decision(**got)
        if announce is not None:
            announce(decision)
        log.info("stage %s: %s (%s)", stage.name, decision.action, decision.reason)
        folder = root / stage.name
        outcome = Outcome(stage.name, decision.action, decision.reason, folder, folder / stage.artefact)
        if decision.action != "skip":
            t0 = time.perf_counter()
            try:
                stage.run(folder)
            except StageError:
                raise
            except (ValueError, OSError) as e:
                raise StageError(f"stage {stage.name} ({stage.job}): {e}") from None
            outcome.seconds = time.perf_counter() - t0
            _once(share, lambda stage=stage, seconds=outcome.seconds: finish(stage, seconds))
        outcomes.append(outcome)
    return outcomes
