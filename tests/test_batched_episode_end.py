"""The batched episode-end path of the native vector env: batched completion decoding and
the many-sub-envs code paths (one NumPy operation for all ended / reset sub-envs) must give
exactly what per-sequence decoding and SyncVectorEnv give."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlaif_gym.data.records import PromptRecord
from rlaif_gym.envs import vector_env
from rlaif_gym.envs.decoding import completion_decoder
from rlaif_gym.envs.text_env import TextGenerationEnv
from rlaif_gym.envs.vector_env import TextGenerationVectorEnv
from rlaif_gym.reward_protocol import RewardFunction, RewardOutput
from rlaif_gym.testing import make_tiny_tokenizer

TOKENIZER = make_tiny_tokenizer()
VOCAB = 259  # bytes 0-255, then <|endoftext|> (pad), <|im_start|>, <|im_end|> (EOS)
EOS = 258
PROMPTS = [
    PromptRecord(f"p{i}", "tldr", f"SUBREDDIT: r/test\nTITLE: Post {i}\nPOST: " + "word " * (3 * i))
    for i in range(9)
]


def random_sequences(rng: np.random.Generator, n: int, vocab: int, max_len: int
                     ) -> list[np.ndarray]:
    """``n`` id arrays of random lengths in [0, max_len] (some empty)."""
    return [rng.integers(0, vocab, size=int(rng.integers(0, max_len + 1))) for _ in range(n)]


# -- batched decoding --------------------------------------------------------------------------


@pytest.mark.parametrize("vocab_size", [VOCAB, VOCAB + 13])
def test_batch_decode_of_many_tokens_equals_tokenizer_decode_of_each(vocab_size):
    decode = completion_decoder(TOKENIZER, vocab_size)
    rng = np.random.default_rng(5)
    sequences = [*random_sequences(rng, 60, vocab_size, 150), np.zeros(0, dtype=np.int64)]
    sequences.append(np.full(7, 256))  # only special tokens: decodes to ""
    assert sum(s.size for s in sequences) >= type(decode).BATCH_MIN_TOKENS  # the gather path
    expected = [TOKENIZER.decode(s.tolist(), skip_special_tokens=True) for s in sequences]
    assert decode.batch(sequences) == expected
    assert decode.batch(sequences[:3]) == expected[:3]  # few tokens: per-sequence path
    assert decode.batch([]) == []


def test_batch_decode_keeps_multibyte_characters_split_across_tokens():
    decode = completion_decoder(TOKENIZER, VOCAB)
    texts = ["naïve café ✓", "日本語のテキスト", "", "plain ascii"] * 200
    sequences = [np.array(TOKENIZER(t, add_special_tokens=False)["input_ids"], dtype=np.int64)
                 for t in texts]
    assert decode.batch(sequences) == texts


def test_batch_decode_of_a_non_byte_level_fast_tokenizer_equals_tokenizer_decode():
    vocab = {"[UNK]": 0, "[EOS]": 1, "hello": 2, "world": 3, "again": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="[EOS]", unk_token="[UNK]")
    decode = completion_decoder(tok, len(vocab))
    sequences = random_sequences(np.random.default_rng(0), 40, len(vocab), 12)
    expected = [tok.decode(s.tolist(), skip_special_tokens=True) for s in sequences]
    assert decode.batch(sequences) == expected == [decode(s) for s in sequences]


def test_batch_decode_of_the_fallback_decoder_equals_tokenizer_decode():
    class PlainTokenizer:
        all_special_ids = [0]

        def __len__(self):
            return 10

        def decode(self, ids, skip_special_tokens=False):
            return "-".join(str(i) for i in ids if i or not skip_special_tokens)

    decode = completion_decoder(PlainTokenizer(), 10)
    assert decode.batch([np.array([3, 0, 4]), np.array([], dtype=np.int64)]) == ["3-4", ""]


# -- many sub-envs ending and resetting together -------------------------------------------------


class DetailedReward(RewardFunction):
    """Scores plus per-episode details: a scalar and a (3,) vector."""

    name = "detailed"

    def score(self, prompts, completions):
        lengths = np.array([len(c) for c in completions], dtype=np.float64)
        return RewardOutput(scores=lengths / 7 + np.array([len(p) for p in prompts]) / 1000,
                            details={"judge_score": lengths, "dist": np.outer(lengths, [1, 2, 3])})


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_many_sub_envs_ending_together_match_sync_vector_env(mode):
    num_envs = 12
    assert num_envs >= vector_env._MANY_ROWS  # exercise the one-NumPy-operation paths
    max_new = 180  # 12 x 180 tokens decoded in one step: the batched gather path
    kwargs = dict(tokenizer=TOKENIZER, prompts=PROMPTS, reward=DetailedReward(),
                  max_prompt_tokens=128, max_new_tokens=max_new)
    native = TextGenerationVectorEnv(num_envs=num_envs, autoreset_mode=mode, **kwargs)
    sync = SyncVectorEnv([lambda: TextGenerationEnv(**kwargs) for _ in range(num_envs)],
                         autoreset_mode=mode)
    obs_n, info_n = native.reset(seed=3)
    obs_s, info_s = sync.reset(seed=3)
    assert data_equivalence((obs_n, info_n), (obs_s, info_s), exact=True)
    rng = np.random.default_rng(3)
    many_ended = 0
    for step in range(2 * max_new + 4):
        actions = rng.integers(0, EOS, size=num_envs)  # bytes and empty special tokens
        if step > max_new + 10:
            actions[rng.random(num_envs) < 0.05] = EOS  # then some end early, one by one
        out_n = native.step(actions)
        out_s = sync.step(actions)
        for got, want in zip(out_n, out_s, strict=True):
            assert data_equivalence(got, want, exact=True), (step, got, want)
        many_ended += int(out_n[2].sum() >= vector_env._MANY_ROWS)
    assert many_ended >= 1
