"""TextGenerationVectorEnv with ``group_size=k``: a group shares its prompt, its episodes are
scored in one reward call when the last one ends, early finishers are held; and the
``references`` side channel of the reward protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.rollout import collect_episodes
from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.text_env import TextGenerationEnv
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput
from rlaif_gym.testing import make_tiny_causal_lm, make_tiny_tokenizer

EOS = 258
VOCAB = 259
A = 65

PROMPTS = [PromptRecord(f"p{i}", "tldr", f"TITLE: Post {i}\nPOST: " + "word " * i,
                        reference=f"ref {i}") for i in range(9)]
TOKENIZER = make_tiny_tokenizer()
CH = TOKENIZER.decode([A])  # the text of token A


class RecordingReward(RewardFunction):
    """Scores each completion by its length; remembers every call's prompts and
    completions."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, prompts, completions):
        self.calls.append((list(prompts), list(completions)))
        return RewardOutput(scores=np.array([len(c) for c in completions], dtype=float))


class ReferenceReward(RewardFunction):
    """A reward that needs references: 1.0 where the completion equals its reference."""

    name = "needs-references"
    needs_references = True

    def __init__(self) -> None:
        self.seen: list[list[str | None]] = []

    def score(self, prompts, completions, references):
        self.seen.append(list(references))
        return RewardOutput(scores=np.array([float(c == r) for c, r in
                                             zip(completions, references, strict=True)]))


def make_vec(num_envs=4, group_size=2, **kwargs) -> TextGenerationVectorEnv:
    options = dict(tokenizer=TOKENIZER, prompts=PROMPTS, reward=RecordingReward(),
                   max_prompt_tokens=128, max_new_tokens=5, group_size=group_size,
                   autoreset_mode=AutoresetMode.DISABLED)
    options.update(kwargs)
    return TextGenerationVectorEnv(num_envs=num_envs, **options)


def test_group_size_must_divide_num_envs():
    with pytest.raises(ValueError, match="group_size"):
        make_vec(num_envs=4, group_size=3)
    with pytest.raises(ValueError, match="group_size"):
        make_vec(num_envs=4, group_size=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_reset_gives_a_group_one_prompt(seed):
    env = make_vec(num_envs=6, group_size=3)
    _, info = env.reset(seed=seed)
    index = info["prompt_index"]
    assert index[0] == index[1] == index[2] and index[3] == index[4] == index[5]


def test_explicit_indices_must_repeat_within_a_group():
    env = make_vec(num_envs=4, group_size=2)
    _, info = env.reset(options={"index": [3, 3, 5, 5]})
    assert info["prompt_index"].tolist() == [3, 3, 5, 5]
    with pytest.raises(ValueError, match="group"):
        env.reset(options={"index": [3, 4, 5, 5]})


def test_a_reset_mask_must_cover_whole_groups():
    env = make_vec(num_envs=4, group_size=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="whole groups"):
        env.reset(options={"reset_mask": np.array([True, False, False, False])})
    env.reset(options={"reset_mask": np.array([False, False, True, True])})


def test_early_finisher_is_held_and_the_group_is_scored_in_one_call():
    reward = RecordingReward()
    env = make_vec(num_envs=4, group_size=2, reward=reward)
    env.reset(options={"index": [1, 1, 2, 2]})
    obs, rewards, terminated, _, _ = env.step(np.array([A, EOS, A, A]))  # sub-env 1 ends
    assert not terminated.any() and rewards.tolist() == [0.0] * 4 and reward.calls == []
    held_length = obs["length"][1]
    obs, rewards, terminated, _, _ = env.step(np.array([A, A, A, A]))
    assert obs["length"][1] == held_length  # held: the action was ignored
    assert not terminated.any()
    obs, rewards, terminated, _, info = env.step(np.array([EOS, A, EOS, EOS]))
    # group 0 ends now (sub-env 0 at EOS, 1 held), group 1 too (both at EOS): one call
    assert terminated.tolist() == [True, True, True, True]
    assert len(reward.calls) == 1
    prompts, completions = reward.calls[0]
    assert prompts == [PROMPTS[1].text] * 2 + [PROMPTS[2].text] * 2
    assert completions == [CH * 2, "", CH * 2, CH * 2]
    assert rewards.tolist() == [2.0, 0.0, 2.0, 2.0]
    assert info["completion"].tolist() == completions


def test_held_rows_keep_their_length_limit_ending():
    reward = RecordingReward()
    env = make_vec(num_envs=2, group_size=2, reward=reward, max_new_tokens=2)
    env.reset(options={"index": 0})
    env.step(np.array([A, A]))
    _, _, terminated, _, _ = env.step(np.array([A, A]))  # both reach the limit together
    assert terminated.all() and reward.calls[0][1] == [CH * 2, CH * 2]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ends=st.lists(st.integers(1, 5), min_size=6, max_size=6),
       mode=st.sampled_from([AutoresetMode.DISABLED, AutoresetMode.NEXT_STEP,
                             AutoresetMode.SAME_STEP]))
def test_each_call_holds_whole_groups_and_every_episode_is_scored_once(ends, mode):
    """Sub-env i emits EOS at its step ends[i]: every reward call holds whole groups of
    one prompt, every first episode is scored exactly once with its own completion."""
    reward = RecordingReward()
    env = make_vec(num_envs=6, group_size=3, reward=reward, autoreset_mode=mode)
    env.reset(seed=0)
    scored = np.zeros(6, dtype=int)
    for step in range(1, 7):
        actions = np.array([EOS if step == e else A for e in ends])
        _, rewards, terminated, _, info = env.step(actions)
        final = info.get("final_info", info)  # SAME_STEP: the final infos
        for i in np.flatnonzero(terminated):
            if scored[i] == 0:  # the first episode of sub-env i
                assert rewards[i] == ends[i] - 1 == len(final["completion"][i])
            scored[i] += 1
        if (scored > 0).all():
            break
    assert (scored == 1).all()
    for prompts, _ in reward.calls:
        assert len(prompts) % 3 == 0
        for g in range(0, len(prompts), 3):
            assert len(set(prompts[g:g + 3])) == 1


def test_collect_episodes_leaves_held_actions_out_of_the_completions():
    torch.manual_seed(0)
    policy = make_tiny_causal_lm()
    reward = RecordingReward()
    env = make_vec(num_envs=4, group_size=2, reward=reward, max_new_tokens=8)
    generator = torch.Generator().manual_seed(0)
    batch = collect_episodes(policy, env, generator=generator,
                             reset_options={"index": [0, 0, 4, 4]})
    assert len(reward.calls) >= 1
    for i in range(4):
        ids = batch.completion_ids[i]
        assert len(ids) == len(batch.sample_logprobs[i]) == batch.final_infos[i][
            "completion_length"]
        body = ids[:-1] if ids[-1] == EOS else ids
        assert TOKENIZER.decode(body.tolist(), skip_special_tokens=True) == batch.completions[i]
    assert batch.prompts[0] == batch.prompts[1] and batch.prompts[2] == batch.prompts[3]


# -- references side channel ---------------------------------------------------------------------


def test_envs_pass_references_only_to_rewards_that_need_them():
    reward = ReferenceReward()
    env = TextGenerationEnv(tokenizer=TOKENIZER, prompts=PROMPTS, reward=reward,
                            max_prompt_tokens=128, max_new_tokens=5)
    env.reset(options={"index": 3})
    env.step(EOS)
    vec = make_vec(num_envs=2, group_size=1, reward=reward)
    vec.reset(options={"index": [4, 5]})
    vec.step(np.array([EOS, EOS]))
    assert reward.seen == [["ref 3"], ["ref 4", "ref 5"]]
    recording = RecordingReward()  # the two-argument protocol still works
    vec = make_vec(num_envs=2, group_size=1, reward=recording)
    vec.reset(seed=0)
    vec.step(np.array([EOS, EOS]))
    assert len(recording.calls) == 1


def test_a_reward_that_needs_references_gets_none_without_them():
    reward = ReferenceReward()
    out = reward(["p"], ["c"])
    assert reward.seen == [[None]] and out.scores.tolist() == [0.0]
    with pytest.raises(ValueError, match="references"):
        reward(["p"], ["c"], references=["a", "b"])


def test_wrappers_pass_references_through():
    from agents.postprocess import PostprocessedReward
    from rewards.wrappers import NormalizedReward

    inner = ReferenceReward()
    wrapped = NormalizedReward(PostprocessedReward(inner, str.strip), whiten=False)
    assert wrapped.needs_references
    out = wrapped(["p", "q"], [" a ", "b"], references=["a", "c"])
    assert out.scores.tolist() == [1.0, 0.0] and inner.seen == [["a", "c"]]
    assert not NormalizedReward(RecordingReward()).needs_references
