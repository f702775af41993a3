"""Rewards: the registry, Unicode scripts, the verifiable rewards against hand-derived values (chrF also
against values computed with sacrebleu 2.6.0's `sentence_chrf`), and the reward-model adapter on a
(data=2, fsdp=2, tensor=2) mesh against the reward model applied to each row alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from aya_jax import pretrained, rewards, sampling, sharding
from aya_jax.models import cohere, reward
from aya_jax.training import rollouts, scoring
from configs.common import default_rules


def test_registry_register_get_and_errors():
    @rewards.register_reward("test_length")
    def length(completion, prompt):
        return float(len(completion))

    assert rewards.get_reward("test_length") is length
    assert rewards.get_reward("test_length")("abc", rewards.PromptInfo("p", "eng")) == 3.0
    assert {"script", "chrf", "script_chrf", "exact_match", "test_length"} <= set(
        rewards.registered_rewards()
    )
    rewards.register_reward("test_length")(length)  # the same function again is harmless
    with pytest.raises(ValueError, match="already registered"):
        rewards.register_reward("test_length")(lambda c, p: 0.0)
    with pytest.raises(ValueError, match=r"unknown reward function 'nope' \(registered: .*script"):
        rewards.get_reward("nope")


@pytest.mark.parametrize(
    ("ch", "script"),
    [
        ("a", "Latn"), ("é", "Latn"), ("я", "Cyrl"), ("ب", "Arab"), ("中", "Hani"), ("あ", "Hira"),
        ("カ", "Kana"), ("ー", "Kana"), ("한", "Hang"), ("ก", "Thai"), ("ि", "Deva"), ("α", "Grek"),
        ("ש", "Hebr"), ("ሀ", "Ethi"), ("5", None), (" ", None), ("!", None), ("\u0301", None), ("ᚠ", ""),
    ],
)  # fmt: skip
def test_char_script(ch, script):
    assert rewards.char_script(ch) == script


def test_language_scripts():
    assert rewards.language_scripts("jpn") == {"Hani", "Hira", "Kana"}
    assert rewards.language_scripts("ja") == {"Hani", "Hira", "Kana"}
    assert rewards.language_scripts("rus") == {"Cyrl"}
    assert rewards.language_scripts("kor") == {"Hang", "Hani"}
    with pytest.raises(ValueError, match="unknown language 'xx1'"):
        rewards.language_scripts("xx1")


def test_script_reward_hand_values():
    script = rewards.get_reward("script")
    rus = rewards.PromptInfo("Say hello in Russian.", "rus")
    assert script("Привет мир!", rus) == 1.0
    assert script("Привет hello", rus) == pytest.approx(6 / 11)  # 6 Cyrillic letters of 11
    assert script("123 !!", rus) == 0.0  # no letters
    assert script("", rus) == 0.0
    assert script("東京タワー です", rewards.PromptInfo("", "jpn")) == 1.0
    hin = rewards.PromptInfo("", "hin")
    assert script("नमस्ते", hin) == 1.0  # letters and vowel signs (category M) are all Devanagari
    assert script("नमस्ते hi", hin) == pytest.approx(6 / 8)


# (hypothesis, reference, sacrebleu.sentence_chrf(hyp, [ref]).score / 100 with sacrebleu 2.6.0)
CHRF_CASES = [
    # by hand: orders 1 and 2 only (both strings have them); P = (1 + 1)/2, R = (2/3 + 1/2)/2 = 7/12;
    # F2 = 5 P R / (4 P + R) = 7/11
    ("ab", "abc", 7 / 11),
    ("Hello world", "hello there world", 0.328573642758333),
    ("янв., февр.", "январь, февраль, март", 0.21933565455150103),
    ("", "abc", 0.0),
    ("x", "x", 1.0),
    ("the cat sat", "a cat sat down", 0.40491474889359663),
    ("東京タワー", "東京", 0.7065217391304348),
]


@pytest.mark.parametrize(("hyp", "ref", "expected"), CHRF_CASES)
def test_chrf_matches_sacrebleu(hyp, ref, expected):
    assert rewards.chrf(hyp, ref) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_reference_rewards():
    info = rewards.PromptInfo("What is 'Germany' in French?", "fra", reference="Allemagne")
    assert rewards.get_reward("exact_match")("  allemagne ", info) == 1.0
    assert rewards.get_reward("exact_match")("Allemand", info) == 0.0
    assert rewards.get_reward("chrf")("Allemagne", info) == 1.0
    assert rewards.get_reward("script_chrf")("Allemagne", info) == 1.0
    both = rewards.get_reward("script_chrf")("ab", rewards.PromptInfo("", "fra", reference="abc"))
    assert both == pytest.approx(0.5 * (1.0 + 7 / 11))
    with pytest.raises(ValueError, match="needs a reference answer"):
        rewards.get_reward("chrf")("x", rewards.PromptInfo("p", "fra"))


# ------------------------------------------------------------------------------------------------------------
# The reward-model adapter
# ------------------------------------------------------------------------------------------------------------

CFG = cohere.CohereConfig(64, 64, 128, 2, 4, 2, max_position_embeddings=64, initializer_range=0.3)


def test_reward_model_scorer_scores_rollout_rows_like_each_row_alone(tmp_path):
    rm = reward.RewardModel(CFG)
    params = nn.unbox(rm.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    pretrained.write_reward_record(tmp_path, CFG, "vocab.model", "sft")
    pretrained.save_params(tmp_path, params, {"source": "test"}, step=3)

    mesh = sharding.make_mesh(("data", "fsdp", "tensor"), (2, 2, 2))
    rules = sharding.normalize_rules(default_rules(), mesh)
    scorer = scoring.reward_model_scorer(
        str(tmp_path), mesh, rules, vocab_size=64, field="config.rloo.reward_model"
    )
    assert scorer.step == 3
    with pytest.raises(ValueError, match="config.rloo.reward_model: .* vocab_size 64, the policy 80"):
        scoring.reward_model_scorer(
            str(tmp_path), mesh, rules, vocab_size=80, field="config.rloo.reward_model"
        )

    # Rollouts of a policy with the same vocabulary: left-padded prompts, completions of varied lengths.
    policy = cohere.CohereLM(CFG)
    policy_params = nn.unbox(policy.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))["params"])
    rng = np.random.default_rng(0)
    prompts = [rng.integers(5, 64, size=n).tolist() for n in (3, 7, 5, 8)]
    tokens, start, _ = sampling.left_pad(prompts, 0, bucket=8)
    sp = sampling.SamplingParams(max_new_tokens=6, temperature=1.0, eos_ids=tuple(range(1, 9)))
    ro = rollouts.sample(
        policy, policy_params, jnp.asarray(tokens), jnp.asarray(start), 2, jax.random.PRNGKey(2), sp
    )
    with mesh, nn.logical_axis_rules(rules):
        scores = np.asarray(scorer(ro))
    ro = jax.device_get(ro)
    score_alone = jax.jit(
        lambda p, seq: rm.apply({"params": p}, seq)
    )  # compiled per length: faster than eager
    for row in range(len(scores)):
        n = int(ro.lengths[row])
        seq = list(prompts[row // 2]) + ro.tokens[row, ro.prompt_len : ro.prompt_len + n].tolist()
        alone = float(score_alone(params, jnp.asarray([seq], jnp.int32))[0])
        np.testing.assert_allclose(scores[row], alone, rtol=1e-4, atol=1e-4)
