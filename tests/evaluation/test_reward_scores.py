"""Reward functions on real models, against the training jobs' own preference pipeline: pairs written as a
preference file, read by a seqio task (chat and raw formats) and laid out by `PreferencePairFeatureConverter`
exactly as the reward and DPO jobs read them (a long prompt keeping its end, a long answer cut).

* classifier: the rows it builds from the text equal the converter's, token for token, and its scores equal
  `training.reward.pair_scores` on the converter's batch, for a tiny random-init reward model saved as a
  reward run and reloaded with `pretrained.load_reward_model` onto the 8-device (data 2, fsdp 2, tensor 2) mesh.
  The same rows from Command-R's tokenizer.json (shared test data; skipped without it).
* implicit reward: β (log π - log π_ref) equals β times the difference of the plain forward's log-probs of the
  converter rows' completion tokens (one row at a time, NumPy log-softmax), and `training.dpo.pair_log_probs`
  on the converter's batch, for a tiny random-init Cohere policy and a different reference.

Tolerances: scores of one fp32 forward, batched and sharded vs not: atol 1e-5 (as tests/jobs/test_reward.py).
Log-prob sums of <= 48 fp32 terms: atol 5e-5 each (as test_likelihood.py), so the rewards 2 x 5e-5 x β."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
from flax import linen as nn

from aya_jax import checkpoint as ckpt_lib
from aya_jax import pretrained, sharding
from aya_jax.data import chat_template, prompt_converters, sources, tasks, vocab
from aya_jax.evaluation import likelihood, reward_scores
from aya_jax.models import cohere, reward
from aya_jax.training import dpo
from aya_jax.training import reward as reward_trainer
from configs.common import default_rules

P, L = 24, 48  # config.reward.prompt_len / config.dpo.prompt_len, config.data.seq_len
BETA = 0.3
SCORE_TOL = dict(atol=1e-5, rtol=0)
REWARD_TOL = dict(atol=2 * 5e-5 * BETA, rtol=0)

PAIRS = [
    ("  Where is the library?\n", " At the end of the street. ", "I do not know."),
    ("Quelle heure est-il ?", "Il est midi.", "  Bonjour  "),
    ("Translate to German: the cat sleeps on the mat, the dog sleeps on the floor, and the bird sings in "
     "the tree all day long.", "Die Katze schläft.", "No."),  # a prompt longer than P tokens
    ("Count.", "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
     "sixteen seventeen eighteen nineteen twenty", "1 2 3"),  # an answer longer than L - len(prompt)
    ("¿Dónde está?", "Aquí.", "Allí está, al final de la calle."),
]  # fmt: skip


@pytest.fixture(scope="module")
def mesh_and_rules():
    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    return mesh, sharding.normalize_rules(default_rules(), mesh)


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    """A small SentencePiece model with the chat markers as single pieces (as `vocab.vocabulary` trains)."""
    text = [t for pair in PAIRS for t in pair] * 20
    text += [chat_template.prompt_text(f"question {i} ?") + f"answer {i}" for i in range(200)]
    return vocab.train_sentencepiece(
        text, size=400, cache_dir=tmp_path_factory.mktemp("vocab"),
        user_defined_symbols=chat_template.SPECIAL_TOKENS,
    )  # fmt: skip


@pytest.fixture(scope="module")
def spm(spm_path):
    return vocab.SentencePieceVocabulary(str(spm_path))


def model_vocab(spm):
    """The model's vocabulary: the tokenizer's rounded up to a multiple of 8 (divisible over the mesh)."""
    return -(-spm.vocab_size // 8) * 8


def converter_batch(spm, tmp_path, chat):
    """The pairs as the reward / DPO jobs' pipeline reads them: a preference task over a file, prompts passed
    untrimmed to the converter (pipeline._rows), one batch of every pair."""
    path = tmp_path / f"pairs_{chat}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for prompt, chosen, rejected in PAIRS:
            row = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "language_code": "eng"}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    name = f"reward_scores_pairs_{chat}"
    task = tasks.register_rows_task(
        name, {"validation": [str(path)]}, spm, schema=sources.PREFERENCE, chat=chat
    )
    converter = prompt_converters.PreferencePairFeatureConverter()
    lengths = {"prompt": P, "chosen": L, "rejected": L}
    task_lengths = {k: None if k in converter.untrimmed_features else v for k, v in lengths.items()}
    ds = converter(task.get_dataset(task_lengths, split="validation", shuffle=False), lengths)
    rows = list(ds.as_numpy_iterator())
    seqio.TaskRegistry.remove(name)
    assert len(rows) == len(PAIRS)
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}, converter.stats.truncated


def texts():
    prompts = [p for p, _, _ in PAIRS] * 2
    completions = [c for _, c, _ in PAIRS] + [r for _, _, r in PAIRS]
    return prompts, completions


def both(batch, name):
    return np.concatenate([batch[f"chosen_{name}"], batch[f"rejected_{name}"]], axis=0)


# ============================================================================================================
# Classifier reward model
# ============================================================================================================


@pytest.fixture(scope="module")
def reward_run(spm, spm_path, tmp_path_factory, mesh_and_rules):
    """A tiny random-init reward model saved as a `reward` run (checkpoint + reward_model.json), reloaded."""
    cfg = cohere.CohereConfig(
        vocab_size=model_vocab(spm), hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
        num_kv_heads=2, max_position_embeddings=128, logit_scale=0.125, bos_id=-1, eos_id=1,
    )  # fmt: skip
    model = reward.RewardModel(cfg)
    params = nn.unbox(model.init(jax.random.PRNGKey(3), jnp.zeros((1, 8), jnp.int32))["params"])
    workdir = tmp_path_factory.mktemp("reward_run")
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", async_save=False)
    ckpt.save(5, {"params": params, "step": jnp.asarray(5)}, {"position": 0})
    ckpt.close()
    pretrained.write_reward_record(workdir, cfg, str(spm_path), "")
    return pretrained.load_reward_model(workdir, *mesh_and_rules)


@pytest.mark.parametrize("chat", [True, False])
def test_classifier_scores_equal_the_reward_jobs_scores_of_the_pipelines_rows(
    chat, spm, reward_run, mesh_and_rules, tmp_path
):
    mesh, rules = mesh_and_rules
    batch, truncated = converter_batch(spm, tmp_path, chat)
    assert truncated == 2  # the long prompt and the long answer
    # codec from the run's recorded vocabulary; batches of 4 rows (a multiple of the 4-way data parallelism)
    rm = reward_scores.ClassifierReward(
        reward_run, mesh=mesh, rules=rules, prompt_len=P, seq_len=L, chat=chat, batch_size=3
    )
    assert rm.batch_size == 4
    prompts, completions = texts()
    rows = reward_scores.pair_rows(rm.format.ids(rm.codec, prompts, completions), L)
    for name in ("target_tokens", "positions", "segment_ids"):
        np.testing.assert_array_equal(rows[name], both(batch, name), err_msg=name)

    done = []
    got = rm(prompts, completions, progress=done.append)
    assert done == [4, 4, 2] and got.shape == (10,) and got.dtype == np.float32

    with sharding.rules_context(mesh, rules):
        r_c, r_r = jax.jit(lambda p, b: reward_trainer.pair_scores(reward_run.model, p, b))(
            reward_run.params, {k: jnp.asarray(v) for k, v in batch.items()}
        )
    want = np.concatenate([np.asarray(r_c), np.asarray(r_r)])
    np.testing.assert_allclose(got, want, **SCORE_TOL)
    assert np.ptp(want) > 1e-2  # distinct scores: the comparison can tell pairs apart


@pytest.fixture(scope="module")
def command_r(shared_data):
    """Command-R's tokenizer.json: (the pipeline's seqio vocabulary, `codec_for` of the path)."""
    path = shared_data / "tokenizers/command_r/tokenizer.json.gz"
    return vocab.HfTokenizerVocabulary(str(path)), reward_scores.codec_for(path)


@pytest.mark.parametrize("chat", [True, False])
def test_command_r_tokenizer_ids_equal_the_pipelines(chat, command_r, tmp_path):
    """A tokenizer.json vocabulary (as a run records it): the same ids as the pipeline's."""
    task_vocab, codec = command_r
    batch, _ = converter_batch(task_vocab, tmp_path, chat)
    rows = reward_scores.pair_rows(reward_scores.PairFormat(chat, P, L).ids(codec, *texts()), L)
    for name in ("target_tokens", "positions", "segment_ids"):
        np.testing.assert_array_equal(rows[name], both(batch, name), err_msg=name)


def test_classifier_refuses_a_row_layout_the_converter_refuses(reward_run, mesh_and_rules):
    with pytest.raises(ValueError, match=r"prompt_len=48 must be in \[1, seq_len=48\)"):
        reward_scores.ClassifierReward(reward_run, mesh=mesh_and_rules[0], rules=mesh_and_rules[1],
                                        prompt_len=L, seq_len=L)  # fmt: skip


# ============================================================================================================
# DPO implicit reward
# ============================================================================================================


@pytest.fixture(scope="module")
def policy_and_reference(spm, mesh_and_rules):
    """(model, policy params, reference params, their Scorers on the mesh, 4 rows a batch): one set for every
    test, so each shape compiles once."""
    cfg = cohere.CohereConfig(
        model_vocab(spm), 64, 128, 2, 4, 2, max_position_embeddings=128, use_qk_norm=True, logit_scale=0.5,
        initializer_range=0.3,
    )  # fmt: skip
    model = cohere.CohereLM(cfg)
    init = jax.jit(model.init)
    policy, ref = (
        nn.unbox(init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"]) for seed in (0, 1)
    )
    mesh, rules = mesh_and_rules
    scorers = [likelihood.Scorer(model, p, mesh=mesh, rules=rules, batch_size=4) for p in (policy, ref)]
    return model, policy, ref, scorers


@functools.cache
def plain_forward(model):
    return jax.jit(lambda params, tokens: model.apply({"params": params}, tokens))


def plain_completion_log_prob(model, params, tokens, weights):
    """Σ log p(tokens[t]) over the t with weight 1, from the plain forward of the row alone (positions 0..,
    no segment ids; the padding after the row cannot reach it under causal attention), in NumPy."""
    logits = np.asarray(plain_forward(model)(params, jnp.asarray(tokens[None]))[0], np.float64)
    m = logits.max(-1, keepdims=True)
    log_probs = logits - m - np.log(np.sum(np.exp(logits - m), -1, keepdims=True))
    steps = np.flatnonzero(weights[1:])  # the state at t predicts token t + 1
    return float(np.sum(log_probs[steps, tokens[steps + 1]]))


@functools.cache
def dpo_log_probs(model):
    return jax.jit(lambda params, batch: dpo.pair_log_probs(model, params, batch))


@pytest.mark.parametrize("chat", [True, False])
def test_implicit_reward_equals_the_plain_forward_and_the_dpo_step(chat, spm, policy_and_reference, tmp_path):
    model, policy, ref, scorers = policy_and_reference
    batch, truncated = converter_batch(spm, tmp_path, chat)
    assert truncated == 2  # the long prompt and the long answer
    reward_fn = reward_scores.ImplicitReward(
        *scorers, vocab.SeqioCodec(spm), beta=BETA, chat=chat, prompt_len=P, seq_len=L
    )
    prompts, completions = texts()
    done = []
    got = reward_fn(prompts, completions, progress=done.append)
    assert done == [4, 4, 2] and got.shape == (10,)

    tokens, weights = both(batch, "target_tokens"), both(batch, "loss_weights")
    want = []
    for i in range(len(tokens)):
        lp = [plain_completion_log_prob(model, p, tokens[i], weights[i]) for p in (policy, ref)]
        want.append(BETA * (lp[0] - lp[1]))
    np.testing.assert_allclose(got, want, **REWARD_TOL)

    features = {k: jnp.asarray(v) for k, v in dpo.pair_features(batch).items()}
    pi, pr = (
        np.concatenate([np.asarray(x) for x in dpo_log_probs(model)(p, features)]) for p in (policy, ref)
    )
    np.testing.assert_allclose(got, BETA * (pi - pr), **REWARD_TOL)
    assert np.ptp(got) > 1e-2


def test_implicit_reward_attribute_progress_and_refusals(spm, policy_and_reference):
    scorers = policy_and_reference[3]
    codec = vocab.SeqioCodec(spm)
    reward_fn = reward_scores.ImplicitReward(*scorers, codec, beta=1.0)
    done = []
    reward_fn.progress = done.append
    out = reward_fn(["Hi"], ["Hello"])
    assert done == [1] and np.isfinite(out).all()
    with pytest.raises(ValueError, match="beta=0"):
        reward_scores.ImplicitReward(*scorers, codec, beta=0.0)
    with pytest.raises(ValueError, match="exceeds what the scorers read whole"):
        reward_scores.ImplicitReward(*scorers, codec, beta=1.0, prompt_len=8, seq_len=1000)
