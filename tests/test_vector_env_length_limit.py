"""The native vector env's fast path only compares lengths with the length limits when a
sub-env may have reached its limit; episodes of prompts of different lengths, reset at
different times (by EOS, by the limit, by a reset mask), must still end exactly at the
limit, as SyncVectorEnv's do."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs.text_env import TextGenerationEnv
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv
from rlaif_gym.testing import make_tiny_tokenizer

TOKENIZER = make_tiny_tokenizer()
EOS = 258
PROMPTS = [PromptRecord(f"p{i}", "tldr", "x" * (1 + 7 * i)) for i in range(6)]
KWARGS = dict(tokenizer=TOKENIZER, prompts=PROMPTS, max_prompt_tokens=256, max_new_tokens=5)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_episodes_end_at_the_length_limit_like_sync_vector_env(mode):
    native = TextGenerationVectorEnv(num_envs=3, autoreset_mode=mode, **KWARGS)
    sync = SyncVectorEnv([lambda: TextGenerationEnv(**KWARGS) for _ in range(3)],
                         autoreset_mode=mode)
    rng = np.random.default_rng(0)
    assert data_equivalence(native.reset(seed=4), sync.reset(seed=4))
    limit_ends = 0
    for _ in range(60):
        actions = rng.integers(0, 256, size=3)
        actions[rng.random(3) < 0.15] = EOS  # some episodes end early, out of phase
        out_native, out_sync = native.step(actions), sync.step(actions)
        assert data_equivalence(out_native, out_sync)
        info = out_native[4].get("final_info", out_native[4])
        limit_ends += int(np.sum(info.get("length_limit", False)))
    assert limit_ends > 5  # the limit, not only EOS, ended episodes


def test_a_masked_reset_in_disabled_mode_restarts_the_limit_countdown():
    native = TextGenerationVectorEnv(num_envs=2, autoreset_mode=AutoresetMode.DISABLED, **KWARGS)
    native.reset(options={"index": [0, 5]})
    a = np.array([65, 65])
    for _ in range(5):
        _, _, terminated, _, _ = native.step(a)
    assert terminated.all()
    native.reset(options={"index": 3, "reset_mask": np.array([True, False])})
    for step in range(5):
        _, _, terminated, _, info = native.step(a)
        assert terminated.tolist() == [step == 4, False]
    assert info["length_limit"].tolist() == [True, False]
    assert info["completion_length"][0] == 5
