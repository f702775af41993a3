"""A reward model: the Cohere decoder with a scalar head on the last real token, trained with the Bradley–Terry
loss as in InstructGPT (arXiv 2203.02155); the objective is written out in docs/objectives.md.

    h      = CohereLM(tokens, positions, segment_ids, return_hidden=True)   # final-norm state [batch, len, embed]
    last_b = the last index of row b whose segment id is > 0                 # one sequence per row
    score  = h[b, last_b] · w + bias                                         # [batch] fp32

Rows hold one sequence each (prompt ++ completion ++ EOS), right-padded with segment id 0, the layout of
`data.prompt_converters.PreferencePairFeatureConverter`'s `*_target_tokens`. The score reads only the state of
the last real token (the EOS, when the completion has one), which under causal attention depends on that
token and the ones before it only: padding, and anything after it, cannot change the score.

Parameters: {"backbone": <CohereLM params, the same names and logical axes>, "head": {"kernel": [embed],
"bias": []}} — so an SFT checkpoint's params are a backbone as they are (`reward_params_from_policy`), and
the mesh rules that shard the policy shard the reward model the same way. Loading a trained reward model
from its run's checkpoints is `aya_jax.jobs.reward.load_reward_model` (models know nothing of
checkpoints or meshes).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from aya_jax.models import cohere

Array = jax.Array


def head_init_std(hidden_size: int) -> float:
    """Standard deviation of the head's initial kernel, 1/sqrt(embed + 1) (Stiennon et al. 2020, as in
    OpenAI's summarize-from-feedback reward models): initial scores have unit-order spread over the
    unit-variance final-norm state, small enough that the pretrained backbone, not the head, does the work."""
    return 1.0 / (hidden_size + 1) ** 0.5


class ScalarHead(nn.Module):
    """[batch, embed] -> [batch] fp32: `h · kernel + bias`."""

    hidden_size: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array) -> Array:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(head_init_std(self.hidden_size)), ("embed",)),
            (self.hidden_size,),
            self.param_dtype,
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(nn.initializers.zeros, ()), (), self.param_dtype
        )
        return jnp.einsum("be,e->b", h.astype(jnp.float32), kernel.astype(jnp.float32)) + bias.astype(
            jnp.float32
        )


def last_token_index(segment_ids: Array) -> Array:
    """[batch, len] segment ids -> [batch] index of each row's last token with segment id > 0 (0 for an
    all-padding row)."""
    index = jnp.arange(segment_ids.shape[1], dtype=jnp.int32)[None, :]
    return jnp.max(jnp.where(segment_ids > 0, index, 0), axis=1)


class RewardModel(nn.Module):
    """Call with tokens [batch, len] (plus positions and segment ids for padded rows); returns fp32 scores
    [batch]. Without segment ids every token is real and the score is the last column's."""

    cfg: cohere.CohereConfig
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    remat: str = "none"
    scan_layers: bool = True
    scan_unroll: int = 1

    def setup(self) -> None:
        self.backbone = cohere.CohereLM(
            self.cfg,
            self.dtype,
            self.param_dtype,
            remat=self.remat,
            scan_layers=self.scan_layers,
            scan_unroll=self.scan_unroll,
        )
        self.head = ScalarHead(self.cfg.hidden_size, self.param_dtype)

    def __call__(
        self, tokens: Array, positions: Array | None = None, segment_ids: Array | None = None
    ) -> Array:
        if segment_ids is None:
            segment_ids = jnp.ones(tokens.shape, jnp.int32)
        hidden = self.backbone(tokens, positions, segment_ids, return_hidden=True)  # [batch, len, embed]
        last = last_token_index(segment_ids)
        h_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [batch, embed]
        return self.head(h_last)


def reward_params_from_policy(policy_params: Any, rng: Array, param_dtype: jnp.dtype = jnp.float32) -> Any:
    """An initial reward model from a policy's (an SFT checkpoint's) CohereLM params: the backbone is those
    params as they are, the head fresh (kernel ~ N(0, head_init_std²), bias 0). Pure: jit it with output
    shardings to build it on the mesh."""
    embedding = policy_params["embedding"]  # [vocab, embed]
    hidden_size = embedding.shape[-1]
    kernel = jax.random.normal(rng, (hidden_size,), jnp.float32) * head_init_std(hidden_size)
    return {
        "backbone": policy_params,
        "head": {"kernel": kernel.astype(param_dtype), "bias": jnp.zeros((), param_dtype)},
    }
