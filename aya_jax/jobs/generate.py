"""Text generation from any checkpoint: a Hugging Face directory or an aya_jax run (orbax).

    python -m aya_jax.main --config configs/generate.py --config.generate.hf_dir=/ckpt/aya-expanse-8b \\
        --config.generate.prompt="Écris un haïku sur la mer."
    python -m aya_jax.main --config configs/generate.py --config.generate.checkpoint_dir=workdirs/quickstart \\
        --config.generate.prompts_file=prompts.txt

One prompt streams its reply to stdout token by token; several are generated in batches of
`config.generate.batch_size` (left-padded, one jitted prefill + decode loop per batch, see aya_jax/sampling.py)
and printed as they finish. Every result also goes to `<workdir>/generations.jsonl` (prompt, completion, token
ids, per-token log-probs, whether it stopped), or to `config.generate.output_file`; that location is checked
to be writable before the model is loaded.

The Cohere chat template (`chat_template = "auto"`: when the tokenizer has the turn tokens, and for an aya_jax run
unless it was trained with `config.data.format=raw`, pass the run's data overrides) wraps each prompt as one user
turn ready for the model's reply: the prefix of the rows the model was trained on. Stop strings (`stop`) stop a
row when their token ids appear in the output, and the text is also cut at the first occurrence of any of them
(a stop string can tokenize differently inside a reply).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import sys
import time
from typing import Any

import jax

from aya_jax import defaults, hf, pretrained, sampling, sharding, workdirs
from aya_jax.data import vocab
from aya_jax.models import families

log = logging.getLogger(__name__)

SECTIONS = ("model", "mesh", "data", "generate")


# ============================================================================================================
# The job
# ============================================================================================================


@dataclasses.dataclass
class GenerateSummary:
    prompts: int
    new_tokens: int
    seconds: float
    output_file: str
    results: list[dict[str, Any]]


def _sampling_params(g: Any, eos_ids: tuple[int, ...], stop_sequences: tuple[tuple[int, ...], ...]):
    return sampling.SamplingParams(
        max_new_tokens=int(g.max_new_tokens),
        temperature=float(g.temperature),
        top_k=int(g.top_k),
        top_p=float(g.top_p),
        eos_ids=eos_ids,
        stop_sequences=stop_sequences,
    )


def read_prompts(g: Any) -> list[str]:
    prompts = ([g.prompt] if g.prompt else []) + list(g.prompts)
    if g.prompts_file:
        path = pathlib.Path(g.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"config.generate.prompts_file: no file at {path}")
        if path.suffix == ".jsonl":
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if g.prompt_field not in row:
                        raise defaults.ConfigError(
                            f"{path}:{i}: no field {g.prompt_field!r} (config.generate.prompt_field)"
                        )
                    prompts.append(str(row[g.prompt_field]))
        else:
            prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts


def output_path(g: Any, workdir: str) -> pathlib.Path:
    """Where the results go (config.generate.output_file, else <workdir>/generations.jsonl), checked to be
    writable before any model is loaded; WorkdirError naming the field that set it."""
    if g.output_file:
        path, field = pathlib.Path(g.output_file), "config.generate.output_file"
        workdirs.check_parent_writable(path, field)
    else:
        path, field = pathlib.Path(workdir) / "generations.jsonl", "--workdir"
        workdirs.check_writable(workdir, field)
    if path.is_dir():
        raise workdirs.WorkdirError(f"{field}: {path} is a folder; give a file to write the generations to")
    return path


def _load(config: Any, mesh, rules) -> pretrained.InferenceModel:
    """The model of config.generate.hf_dir or .checkpoint_dir."""
    g = config.generate
    if g.hf_dir:
        hf.read_config(g.hf_dir)  # a wrong directory is reported as such, before anything else
    field = "config.generate.hf_dir" if g.hf_dir else "config.generate.checkpoint_dir"
    return pretrained.load_inference_model(
        g.hf_dir or g.checkpoint_dir, config.model, config.data, mesh, rules, tokenizer=str(g.tokenizer),
        field=field,
    )  # fmt: skip


def run(config: Any, workdir: str) -> GenerateSummary:
    g = config.generate
    defaults.validate(config, SECTIONS)
    try:
        _sampling_params(g, (), ())
    except sampling.SamplingError as e:
        raise defaults.ConfigError(f"config.generate.{e}") from None
    output = output_path(g, workdir)  # checked now: generations printed and then lost cost a whole run
    prompts = read_prompts(g)
    if not prompts:
        raise defaults.ConfigError("config.generate.prompts_file: the prompts file holds no prompt")
    mesh, rules = sharding.setup(config.mesh)

    t0 = time.perf_counter()
    loaded = _load(config, mesh, rules)
    model, params, codec, eos_ids = loaded.model, loaded.params, loaded.codec, loaded.eos_ids
    log.info("model ready in %.1f s (%s)", time.perf_counter() - t0, g.hf_dir or g.checkpoint_dir)

    chat = str(g.chat_template)
    if chat == "auto" and isinstance(codec, vocab.SeqioCodec) and config.data.format == "raw":
        chat = "none"  # a run trained on raw rows (configs/sft_mt5.py) reads its prompts as plain text
    token_ids = pretrained.encode_prompts(
        codec, prompts, template=chat, system=str(g.system),
        encoder_decoder=families.family_of(model).encoder_decoder,
    )  # fmt: skip
    stops = tuple(s for s in g.stop if s)
    stop_sequences = tuple(tuple(codec.encode(s, False)) for s in stops)
    params_ = _sampling_params(g, eos_ids, tuple(s for s in stop_sequences if s))
    sampler = sampling.Sampler(
        model, params, mesh=mesh, rules=rules, pad_id=codec.pad_id, prompt_bucket=int(g.prompt_bucket)
    )

    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if len(prompts) == 1 and bool(g.stream):
        text = vocab.IncrementalText(codec)
        ids, log_probs = [], []
        for token, log_prob in sampler.stream(token_ids[0], params_, seed=int(g.seed)):
            ids.append(token)
            log_probs.append(log_prob)
            if token not in eos_ids:
                sys.stdout.write(text.add(token))
                sys.stdout.flush()
            if stops and any(s in text.printed for s in stops):
                break
        sys.stdout.write("\n")
        stopped = bool(ids) and (
            ids[-1] in eos_ids or any(tuple(ids[-len(s) :]) == s for s in stop_sequences)
        )
        results.append(_result(prompts[0], ids, log_probs, stopped, codec, eos_ids, stops))
    else:
        batch = int(g.batch_size)
        for begin in range(0, len(prompts), batch):
            out = sampler.generate(token_ids[begin : begin + batch], params_, seed=int(g.seed) + begin)
            for i in range(out.tokens.shape[0]):
                n = int(out.lengths[i])
                result = _result(
                    prompts[begin + i],
                    out.tokens[i, :n].tolist(),
                    out.log_probs[i, :n].tolist(),
                    bool(out.stopped[i]),
                    codec,
                    eos_ids,
                    stops,
                )
                results.append(result)
                print(f"=== [{begin + i}] {result['prompt']}\n{result['completion']}\n", flush=True)
    seconds = time.perf_counter() - t0
    new_tokens = sum(len(r["tokens"]) for r in results)

    if jax.process_index() == 0:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "w", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    log.info(
        "generated %d tokens for %d prompt(s) in %.1f s (%.1f tokens/s, compilation included) -> %s",
        new_tokens,
        len(prompts),
        seconds,
        new_tokens / max(seconds, 1e-9),
        output,
    )
    return GenerateSummary(len(prompts), new_tokens, seconds, str(output), results)


def _result(prompt, ids, log_probs, stopped, codec, eos_ids, stops) -> dict[str, Any]:
    text = codec.decode([t for t in ids if t not in eos_ids])
    for s in stops:
        if s in text:
            text, stopped = text[: text.index(s)], True
    return {
        "prompt": prompt,
        "completion": text,
        "tokens": [int(t) for t in ids],
        "log_probs": [float(x) for x in log_probs],
        "stopped": stopped,
    }
