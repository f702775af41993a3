"""The lm-evaluation-harness model `aya_jax`: any harness task on any checkpoint the project reads, scored with
the project's sharded likelihood scorer (aya_jax/evaluation/likelihood.py) and KV-cache sampler
(aya_jax/sampling.py). Needs the `lm-eval` extra (`pip install -e '.[eval]'`).

    from aya_jax.evaluation import harness          # registers "aya_jax" with lm-eval
    lm = harness.AyaJaxLM(checkpoint="workdirs/quickstart", config="configs/quickstart.py")
    lm_eval.simple_evaluate(model=lm, tasks=["global_mmlu_full_fr"], ...)

    aya-lm-eval --model aya_jax --model_args checkpoint=/ckpt/aya-expanse-8b --batch_size 16 --tasks ...
    aya-lm-eval --model aya_jax --model_args checkpoint=workdirs/quickstart,config=configs/quickstart.py ...

(`aya-lm-eval` is lm-eval's own command line with this model registered first: lm-eval 0.4 finds models
only in its own package or in modules already imported, and has no plugin entry point for them.)

`AyaJaxLM` subclasses the harness's `TemplateLM`, so the harness itself turns (context, continuation) strings
into token ids — moving trailing context whitespace into the continuation, encoding the pair whole for a
decoder — and this class supplies `tok_encode` (the tokenizer's special tokens unless the text starts with
BOS, as the harness's `hf` model), the scores (`_loglikelihood_tokens`), rolling log-likelihoods (disjoint
windows of at most `max_length` tokens, lm-eval's `get_rolling_token_windows` semantics) and `generate_until`
(greedy unless `do_sample`; the text cut at the first stop string, lm-eval's own `handle_stop_sequences` and
`postprocess_generated_text`). On the same checkpoint exported to Hugging Face, lm-eval's `hf` model gives the
same per-request log-likelihoods (to float rounding) and the same greedy text (tests/evaluation/test_harness.py).

Model arguments (`--model_args` strings or keyword arguments): `checkpoint` (an HF directory, an aya_jax run,
its checkpoints/ or a step directory, a merge), `config` (the experiment file the run was trained with, e.g.
configs/quickstart.py, or a ConfigDict: the model and vocabulary of an aya_jax run without an HF source; default:
the project's defaults; an HF directory needs none), `tokenizer`, `batch_size`, `max_length`, `max_gen_toks` (256), `dtype`,
`mesh_shape` ("1,-1,1"), `add_bos_token`.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys
from typing import Any

import ml_collections
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm.auto import tqdm

from aya_jax import defaults, sampling, sharding
from aya_jax.evaluation import likelihood

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256  # the harness's default


def load_config(config: str | ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
    """A ConfigDict as given, or an experiment file's `get_config()`, or the defaults."""
    if isinstance(config, ml_collections.ConfigDict):
        return config
    if not config:
        return defaults.base_config()
    path = pathlib.Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config: no experiment file at {path}")
    root = str(path.resolve().parent.parent)
    if root not in sys.path:  # experiment files import `configs.common`, as under `python -m aya_jax.main`
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_aya_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _int_or(value: Any, default: int) -> int:
    """lm-eval passes batch_size as an int, a digit string or "auto"; "auto" keeps the default."""
    if isinstance(value, str) and not value.isdigit():
        return default
    return int(value) if value is not None else default


@register_model("aya_jax")
class AyaJaxLM(TemplateLM):
    """lm-eval's model interface on an aya_jax checkpoint (module docstring)."""

    def __init__(
        self,
        checkpoint: str = "",
        config: str | ml_collections.ConfigDict | None = None,
        tokenizer: str = "",
        batch_size: int | str = 32,
        max_length: int = 0,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        dtype: str = "",
        mesh_shape: str = "",
        add_bos_token: bool | None = None,
        text_model: likelihood.TextModel | None = None,
        sampler: sampling.Sampler | None = None,
        **unused: Any,
    ):
        super().__init__()
        unused = {k: v for k, v in unused.items() if k not in ("device", "max_batch_size") and v is not None}
        if unused:
            raise ValueError(f"model_args: unknown argument(s) {sorted(unused)} for the aya_jax model")
        if text_model is None:
            if not checkpoint:
                raise ValueError("model_args: checkpoint= is required (an HF directory or an aya_jax run)")
            cfg = load_config(config)
            if dtype:
                cfg.model.dtype = str(dtype)
            if mesh_shape:
                cfg.mesh.shape = tuple(int(x) for x in str(mesh_shape).split(","))
            mesh, rules = sharding.setup(cfg.mesh)
            text_model = likelihood.TextModel.from_checkpoint(
                checkpoint, cfg.model, cfg.data, mesh, rules, tokenizer=tokenizer,
                batch_size=_int_or(batch_size, 32), max_length=int(max_length), field="model_args checkpoint",
            )  # fmt: skip
            text_model.add_special_tokens = add_bos_token
            scorer = text_model.scorer
            sampler = sampling.Sampler(
                scorer.model, scorer.params, mesh=mesh, rules=rules, pad_id=scorer.pad_id
            )
        self.text_model, self.sampler = text_model, sampler
        self.max_gen_toks = int(max_gen_toks)

    # -- what TemplateLM asks of a model ---------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.text_model.eot_id

    @property
    def prefix_token_id(self) -> int:
        return self.text_model.prefix_id

    @property
    def max_length(self) -> int:
        return self.text_model.max_length

    @property
    def backend(self) -> str:
        return "seq2seq" if self.text_model.encoder_decoder else "causal"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.text_model.tok_encode(string, add_special_tokens)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.text_model.codec.decode(tokens)

    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        with tqdm(
            total=len(pairs), desc="aya_jax loglikelihood", disable=disable_tqdm or self.rank != 0
        ) as bar:
            results = self.text_model.scorer.loglikelihood(pairs, progress=bar.update)
        for (key, _, _), answer in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [req.args[0] for req in requests]
        with tqdm(desc="aya_jax loglikelihood_rolling", disable=disable_tqdm or self.rank != 0) as bar:
            results = self.text_model.loglikelihood_rolling(texts, progress=bar.update)
        for text, answer in zip(texts, results, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), answer)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if self.sampler is None:
            raise ValueError("generate_until needs a sampler (construct AyaJaxLM from a checkpoint)")
        eos = self.text_model.codec.decode([self.eot_token_id]) or None
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        results: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc="aya_jax generate_until", disable=disable_tqdm or self.rank != 0)
        for indices in groups.values():
            kwargs = normalize_gen_kwargs(dict(requests[indices[0]].args[1]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = int(kwargs.pop("max_gen_toks"))
            do_sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 0.0)) if do_sample else 0.0
            params = sampling.SamplingParams(
                max_new_tokens=max_gen_toks, temperature=temperature, top_k=int(kwargs.pop("top_k", 0) or 0),
                top_p=float(kwargs.pop("top_p", 1.0) or 1.0), eos_ids=(self.eot_token_id,),
            )  # fmt: skip
            room = self.max_length if self.text_model.encoder_decoder else self.max_length - max_gen_toks
            if room <= 0:
                raise ValueError(
                    f"max_gen_toks {max_gen_toks} leaves no room for a context in {self.max_length}"
                )
            prompts = [self.tok_encode(requests[i].args[0])[-room:] for i in indices]
            batch = self.text_model.scorer.batch_size
            for begin in range(0, len(prompts), batch):
                out = self.sampler.generate(
                    prompts[begin : begin + batch], params, seed=int(kwargs.get("seed", 0))
                )
                for row, i in enumerate(indices[begin : begin + batch]):
                    tokens = out.tokens[row, : int(out.lengths[row])].tolist()
                    if tokens and tokens[-1] == self.eot_token_id:
                        tokens = tokens[:-1]
                    text = postprocess_generated_text(
                        generation=self.tok_decode(tokens), stop=until, think_end_token=None
                    )
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(prompts[begin : begin + batch]))
        bar.close()
        return results
