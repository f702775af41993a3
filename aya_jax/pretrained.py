"""Where a model, its weights and its tokenizer come from: the one place every job builds a model from
`config.model` and loads params.

Models. `build_model(config.model, vocab_size, hf_config)` builds the module of a preset (its family picks the
architecture, aya_jax/models/families.py; `config.model.overrides` on top, the tokenizer's vocabulary size
filling a placeholder vocabulary) or of a Hugging Face `config.json`. dtypes, remat and layer scanning always
come from config.model.

Params. `load_params(source, target)` reads the params of any source straight onto `target`'s shardings and
dtypes (a tree of ShapeDtypeStructs carrying shardings, e.g. from `abstract_params`), nothing else allocated:

* an aya_jax run: its workdir, its `checkpoints/` directory (the newest step, or `step`), or one step
  directory `checkpoints/<step>` — orbax, params only (a training run's optimiser state is not read);
* a Hugging Face directory (config.json + safetensors): streamed tensor by tensor (aya_jax/hf/).

Records a workdir keeps so that later jobs pointed at it rebuild the same model without being told again:

* `hf_config.json`: a run whose model came from a Hugging Face directory (config.model.hf_init_dir, hf_import)
  stores that directory's config.json, with the source path under "_aya_jax_source" (its tokenizer);
* `reward_model.json`: a reward-model run stores its architecture and vocabulary (`load_reward_model`).

Tokenizers. `codec_for(...)` gives the text <-> ids codec of a source: the recorded Hugging Face tokenizer, or
the run's own seqio vocabulary rebuilt (or found in the cache) from config.data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import Mesh

from aya_jax import checkpoint as ckpt_lib
from aya_jax import defaults, hf, sampling, sharding
from aya_jax.data import chat_template, pipeline, vocab
from aya_jax.models import cohere, families, reward

log = logging.getLogger(__name__)

HF_CONFIG_RECORD = "hf_config.json"
SOURCE_KEY = "_aya_jax_source"
REWARD_RECORD = "reward_model.json"


# ============================================================================================================
# Models
# ============================================================================================================


def dtype_from_name(name: str, field: str) -> jnp.dtype:
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{field}: {name!r} is not one of float32, bfloat16, float16")
    return jnp.dtype(name)


def build_model(model_config: Any, vocab_size: int | None, hf_config: dict[str, Any] | None = None):
    """(model, model config) of config.model: from an HF config.json dict when given, else the preset with
    config.model.overrides; `vocab_size` (the tokenizer's) fills presets whose vocabulary comes from the data."""
    overrides = {k: v for k, v in model_config.overrides.to_dict().items() if v is not None}
    if hf_config is None:
        cfg = families.family_of_preset(model_config.preset).resolve(
            model_config.preset, vocab_size, overrides
        )
    else:
        if overrides:
            raise ValueError(
                f"config.model.overrides: {sorted(overrides)} cannot change an architecture read from a Hugging "
                "Face config.json (config.model.hf_init_dir)"
            )
        cfg = hf.architecture(hf_config.get("model_type", "")).config_from_hf(hf_config)
        if vocab_size and cfg.vocab_size < vocab_size:
            raise ValueError(
                f"config.data.vocab: the tokenizer has {vocab_size} tokens, the checkpoint's embedding only "
                f"{cfg.vocab_size}"
            )
    model = families.build(
        cfg,
        dtype=dtype_from_name(model_config.dtype, "config.model.dtype"),
        param_dtype=dtype_from_name(model_config.param_dtype, "config.model.param_dtype"),
        remat=model_config.remat,
        scan_layers=bool(model_config.scan_layers),
        scan_unroll=int(model_config.scan_unroll),
    )
    return model, cfg


def abstract_params(model: nn.Module, mesh: Mesh | None, rules: Any) -> Any:
    """ShapeDtypeStructs of the model's params carrying their shardings (from the logical axis names through
    `rules`; one device when `mesh` is None). Nothing is allocated."""
    return hf.abstract_params(hf.architecture_of(model.cfg), model, model.cfg, mesh, rules)


def targets(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `abstract` carrying `shardings`: what `load_params` restores onto."""
    return ckpt_lib.abstract_like(abstract, shardings)


# ============================================================================================================
# Params
# ============================================================================================================


@dataclasses.dataclass(frozen=True)
class RunPath:
    """An aya_jax run's directories, from its workdir, its checkpoints/ directory or one step directory."""

    workdir: pathlib.Path
    checkpoints: pathlib.Path
    step: int | None  # a step directory's; None: the newest

    def steps(self) -> list[int]:
        return sorted(int(p.name) for p in self.checkpoints.iterdir() if p.name.isdigit())


def resolve_run(path: str | pathlib.Path) -> RunPath:
    """Where a run's checkpoints are; FileNotFoundError naming `path` when it is none of the three."""
    p = pathlib.Path(path).expanduser()
    if (p / "checkpoints").is_dir():
        return RunPath(p, p / "checkpoints", None)
    if p.name.isdigit() and (p / "state").is_dir():  # checkpoints/<step>
        return RunPath(p.parent.parent, p.parent, int(p.name))
    if p.is_dir():
        return RunPath(p.parent, p, None)
    raise FileNotFoundError(f"{path}: no such checkpoint directory")


def is_hf_directory(path: str | pathlib.Path) -> bool:
    p = pathlib.Path(path)
    return (p / hf.CONFIG_FILE).is_file() and any(p.glob("*.safetensors*"))


def load_params(
    source: str | pathlib.Path,
    target: Any,
    *,
    scan_layers: bool = True,
    step: int | None = None,
    field: str = "",
) -> tuple[int | None, Any]:
    """(the step read — None for a Hugging Face directory —, params) of `source` (module docstring), straight
    onto `target`'s shardings and dtypes. `step` picks a checkpoint of a run (default: the newest, or the step
    directory given). `field`: the config field that named `source`, which every error then starts with."""
    if not field:
        return _load_params(source, target, scan_layers, step)
    try:
        return _load_params(source, target, scan_layers, step)
    except (ckpt_lib.CheckpointError, FileNotFoundError, hf.HfCheckpointError) as e:
        raise type(e)(f"{field}: {e}") from None


def _load_params(source: str | pathlib.Path, target: Any, scan_layers: bool, step: int | None):
    if is_hf_directory(source):
        arch, cfg, _ = hf.model_config(source)
        return None, hf.load_params(source, arch, cfg, target, scan_layers=scan_layers)
    run = resolve_run(source)
    step = step if step is not None else run.step
    try:
        return ckpt_lib.load_params(run.checkpoints, target, step=step)
    except ckpt_lib.CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax reports shape mismatches in many ways; say what to check
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ckpt_lib.CheckpointError(
            f"{run.checkpoints}: params do not fit the model built from the config ({first[:200]}); pass the "
            "same --config.model.* (and data vocabulary) as the run that wrote them"
        ) from None


def save_params(workdir: pathlib.Path, params: Any, data: dict[str, Any], step: int = 0) -> pathlib.Path:
    """A params-only checkpoint at `<workdir>/checkpoints/<step>` that `load_params` (and
    config.checkpoint.init_from) read."""
    checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints", keep=1, async_save=False)
    checkpointer.save(step, {"params": params}, data)
    checkpointer.close()
    return workdir / "checkpoints"


# ============================================================================================================
# Records of where a run's model came from
# ============================================================================================================


def record_hf_source(workdir: str | pathlib.Path, hf_dir: str) -> None:
    """Write `<workdir>/hf_config.json` (process 0 only)."""
    if jax.process_index() != 0:
        return
    record = {**hf.read_config(hf_dir), SOURCE_KEY: str(pathlib.Path(hf_dir).absolute())}
    path = pathlib.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / HF_CONFIG_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def recorded_hf_source(workdir: str | pathlib.Path) -> tuple[dict[str, Any], str] | None:
    """(config.json dict, source directory) recorded in a workdir, or None."""
    path = pathlib.Path(workdir) / HF_CONFIG_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record, str(record.pop(SOURCE_KEY, ""))


def model_of_run(model_config: Any, data_config: Any, workdir: str | pathlib.Path, tokenizer: str = ""):
    """(model, model config, codec) of a run's workdir: an HF-recorded source rebuilds its own architecture and
    tokenizer; otherwise config.model's preset with config.data's vocabulary (the run's own, found in the data
    cache). `tokenizer` (a tokenizer.json) overrides the codec."""
    recorded = recorded_hf_source(workdir)
    if tokenizer or (recorded and recorded[1]):
        path = pathlib.Path(tokenizer or pathlib.Path(recorded[1]) / "tokenizer.json")
        if not path.is_file():
            raise FileNotFoundError(f"{workdir}: no tokenizer.json at {path} (the run's recorded tokenizer)")
        codec = vocab.HfTokenizerCodec(path)
        vocab_size = codec.vocab_size
    else:
        spec = pipeline.prepare(data_config)
        codec, vocab_size = vocab.SeqioCodec(spec.vocab), spec.vocab_size
    model, cfg = build_model(model_config, vocab_size, recorded[0] if recorded else None)
    return model, cfg, codec


def stop_ids(codec: Any, model_cfg: Any) -> tuple[int, ...]:
    """The ids a completion ends at: the tokenizer's (the chat template's end-of-turn, EOS) and the model
    config's own EOS, once each."""
    own = (model_cfg.eos_id,) if model_cfg.eos_id >= 0 else ()
    return tuple(dict.fromkeys((*codec.eos_ids, *own)))


# ============================================================================================================
# A model ready for inference (generation, evaluation)
# ============================================================================================================


@dataclasses.dataclass
class InferenceModel:
    model: nn.Module  # weights in the compute dtype: inference reads them every step
    params: Any
    codec: Any  # text <-> ids (aya_jax/data/vocab.py HfTokenizerCodec or SeqioCodec)
    eos_ids: tuple[int, ...]  # the ids a completion ends at
    step: int | None  # the checkpoint step read; None for a Hugging Face directory
    source: str


def load_inference_model(
    source: str | pathlib.Path,
    model_config: Any,
    data_config: Any,
    mesh: Mesh | None,
    rules: Any,
    *,
    tokenizer: str = "",
    field: str = "",
) -> InferenceModel:
    """Any checkpoint the project reads — a Hugging Face directory (config.json + safetensors + tokenizer.json),
    an aya_jax run's workdir, its checkpoints/, one step directory, a merge's output — with its tokenizer, on
    `mesh`. A run rebuilds its model from `model_config` and its vocabulary from `data_config` unless it
    recorded a Hugging Face source (`model_of_run`); `tokenizer` (a tokenizer.json) overrides the codec.
    `field`: the config field that named `source`, which every error starts with."""
    prefix = f"{field}: " if field else ""
    dtype = dtype_from_name(model_config.dtype, "config.model.dtype")
    if is_hf_directory(source):
        path = pathlib.Path(tokenizer or pathlib.Path(source) / "tokenizer.json")
        if not path.is_file():
            raise FileNotFoundError(
                f"{prefix}{source} has no tokenizer.json (the checkpoint needs its tokenizer; give one with the "
                "section's `tokenizer` field)"
            )
        codec = vocab.HfTokenizerCodec(path)
        loaded = hf.load(source, mesh, rules, dtype=dtype, scan_layers=bool(model_config.scan_layers))
        eos = tuple(dict.fromkeys(loaded.eos_ids + codec.eos_ids))
        return InferenceModel(loaded.model, loaded.params, codec, eos, None, str(source))
    if pathlib.Path(source).is_dir() and (pathlib.Path(source) / hf.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{prefix}{source} has a config.json but no *.safetensors weights")
    try:
        run = resolve_run(source)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{prefix}{e}") from None
    model, cfg, codec = model_of_run(model_config, data_config, run.workdir, str(tokenizer))
    model = model.clone(param_dtype=dtype)  # inference: weights in the compute dtype halve what is read
    step, params = load_params(
        run.checkpoints, abstract_params(model, mesh, rules), step=run.step, field=field,
        scan_layers=bool(model_config.scan_layers),
    )  # fmt: skip
    log.info("loaded step %d from %s", step, run.checkpoints)
    return InferenceModel(model, params, codec, stop_ids(codec, cfg), step, str(source))


def uses_chat_template(codec: Any, template: str, field: str = "config.generate.chat_template") -> bool:
    """Whether prompts go through the Cohere chat template: "cohere" (the tokenizer must have its turn tokens),
    "auto" (when it has them) or "none"."""
    if template == "cohere" and not codec.has_cohere_chat_tokens:
        raise defaults.ConfigError(f"{field}: 'cohere', but the tokenizer has no Cohere turn tokens")
    return template == "cohere" or (template == "auto" and codec.has_cohere_chat_tokens)


def encode_conversation(
    codec: Any,
    messages: list[dict[str, str]],
    *,
    template: str,
    encoder_decoder: bool = False,
    field: str = "config.generate.chat_template",
) -> list[int]:
    """A conversation (`[{"role": "system"|"user"|"assistant", "content": ...}]`, roles alternating after an
    optional system turn) as the model was trained to read it, ready for the next reply: in the chat format
    exactly the prefix of an SFT row's tokens (aya_jax/data/chat_template.py); without it (`template` "none",
    or "auto" and a tokenizer without turn markers) the contents joined by blank lines, with the tokenizer's
    own special tokens. An mT5 encoder input ends with EOS, as the SFT converter wrote it (an HF T5 tokenizer
    appends it itself)."""
    if uses_chat_template(codec, template, field):
        ids = codec.encode(chat_template.render(messages, add_generation_prompt=True), False)
    else:
        ids = codec.encode("\n\n".join(m["content"] for m in messages), True)
    if encoder_decoder and isinstance(codec, vocab.SeqioCodec) and codec.vocab.eos_id is not None:
        ids = ids + [int(codec.vocab.eos_id)]
    return ids


def encode_prompts(
    codec: Any,
    prompts: list[str],
    *,
    template: str,
    system: str = "",
    encoder_decoder: bool = False,
    field: str = "config.generate.chat_template",
) -> list[list[int]]:
    """Single-turn prompts (one user turn each, after an optional system turn) -> token ids, as
    `encode_conversation`."""
    head = [{"role": "system", "content": system}] if system else []
    return [
        encode_conversation(
            codec,
            [*head, {"role": "user", "content": p}],
            template=template,
            encoder_decoder=encoder_decoder,
            field=field,
        )  # fmt: skip
        for p in prompts
    ]


@dataclasses.dataclass
class ChatModel:
    """A loaded model as text in, text out: conversations -> replies (the answers of a win-rate run, an
    in-process judge). Conversations are encoded as `encode_conversation` does, sorted by length (rows of a batch
    then need little padding), generated `batch_size` at a time by `sampler`, and returned in the given order,
    stop tokens removed. A prompt longer than the model's positions leave room for (its maximum minus
    `params.max_new_tokens`) loses its middle: the head (the instruction, the template's opening) and the tail
    (the question's end, the template's turn markers) are kept; `cut` counts such prompts."""

    loaded: InferenceModel
    sampler: sampling.Sampler
    params: sampling.SamplingParams
    template: str = "auto"
    batch_size: int = 32
    seed: int = 0
    field: str = "config.eval.answer_template"
    cut: int = 0
    new_tokens: int = 0  # tokens generated so far (stop tokens included)

    def __call__(
        self, conversations: Sequence[list[dict[str, str]]], row_ids: Sequence[int] | None = None
    ) -> list[str]:
        """Replies in order. `row_ids` (one per conversation) key each one's sampling stream, so that a sampled
        reply does not depend on which other conversations share its batch (see `Sampler.generate`)."""
        loaded = self.loaded
        family = families.family_of(loaded.model)
        ids = [
            encode_conversation(
                loaded.codec,
                list(c),
                template=self.template,
                encoder_decoder=family.encoder_decoder,
                field=self.field,
            )  # fmt: skip
            for c in conversations
        ]
        limit = family.max_positions(loaded.model.cfg)
        if limit is not None:
            budget = max(1, limit - self.params.max_new_tokens)
            for i, row in enumerate(ids):
                if len(row) > budget:
                    head = budget // 2
                    ids[i] = row[:head] + row[len(row) - (budget - head) :]
                    self.cut += 1
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        replies: list[str] = [""] * len(ids)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            keys = None if row_ids is None else [int(row_ids[i]) for i in rows]
            seed = self.seed if row_ids is not None else self.seed + start
            out = self.sampler.generate([ids[i] for i in rows], self.params, seed=seed, row_ids=keys)
            for j, i in enumerate(rows):
                tokens = out.tokens[j, : int(out.lengths[j])].tolist()
                self.new_tokens += len(tokens)
                replies[i] = loaded.codec.decode([t for t in tokens if t not in loaded.eos_ids])
        return replies

    def reply(self, prompts: Sequence[str]) -> list[str]:
        """Single-turn prompts -> replies."""
        return self([[{"role": "user", "content": p}] for p in prompts])


def chat_model(
    source: str,
    model_config: Any,
    data_config: Any,
    mesh: Mesh | None,
    rules: Any,
    params: Callable[[tuple[int, ...]], sampling.SamplingParams],
    *,
    tokenizer: str = "",
    field: str = "",
    template: str = "auto",
    batch_size: int = 32,
    seed: int = 0,
) -> ChatModel:
    """A ChatModel of any checkpoint the project reads (`load_inference_model`), sampling with
    `params(its eos ids)`."""
    loaded = load_inference_model(
        source, model_config, data_config, mesh, rules, tokenizer=tokenizer, field=field
    )
    sampler = sampling.Sampler(
        loaded.model, loaded.params, mesh=mesh, rules=rules, pad_id=loaded.codec.pad_id
    )
    return ChatModel(loaded, sampler, params(loaded.eos_ids), template=template, batch_size=batch_size, seed=seed,
                     field=field)  # fmt: skip


# ============================================================================================================
# Reward models
# ============================================================================================================


@dataclasses.dataclass
class LoadedRewardModel:
    model: reward.RewardModel
    params: Any  # on `params_shardings`
    params_shardings: Any
    step: int  # the checkpoint step loaded
    vocab_path: str  # the vocabulary its inputs were tokenised with (that of the policy it was trained from)


def write_reward_record(
    workdir: pathlib.Path, cfg: cohere.CohereConfig, vocab_path: str, init_from: str
) -> None:
    """`<workdir>/reward_model.json`: the architecture and vocabulary of a reward-model run (process 0 only)."""
    if jax.process_index() != 0:
        return
    workdir.mkdir(parents=True, exist_ok=True)
    record = {"cohere_config": dataclasses.asdict(cfg), "vocab_path": vocab_path, "init_from": init_from}
    (workdir / REWARD_RECORD).write_text(json.dumps(record, indent=1) + "\n")


def reward_param_shardings(model: reward.RewardModel, mesh: Mesh, rules: sharding.Rules) -> tuple[Any, Any]:
    """(abstract params, NamedShardings) of a reward model from its logical axes and `rules`."""
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]
    shardings = sharding.tree_shardings(nn.get_partition_spec(boxed), mesh, rules)
    abstract = nn.unbox(boxed)
    sharding.check_divisible(abstract, shardings)
    return abstract, shardings


def load_reward_model(
    path: str | pathlib.Path,
    mesh: Mesh,
    rules: sharding.Rules,
    *,
    dtype: Any = jnp.float32,
    step: int | None = None,
) -> LoadedRewardModel:
    """A trained reward model from its run's workdir (or checkpoints/): the architecture from
    `reward_model.json`, the params of the newest (or `step`) checkpoint straight onto `rules`' shardings on
    `mesh`, computing in `dtype`."""
    run = resolve_run(path)
    record_path = run.workdir / REWARD_RECORD
    if not record_path.is_file():
        raise FileNotFoundError(f"{path}: no {REWARD_RECORD} (not a reward-model run's workdir)")
    record = json.loads(record_path.read_text())
    model = reward.RewardModel(cohere.CohereConfig(**record["cohere_config"]), dtype=jnp.dtype(dtype))
    abstract, shardings = reward_param_shardings(model, mesh, rules)
    loaded_step, params = load_params(run.checkpoints, targets(abstract, shardings), step=step)
    log.info("reward model: %s step %d", run.checkpoints, loaded_step)
    return LoadedRewardModel(model, params, shardings, int(loaded_step), str(record["vocab_path"]))
