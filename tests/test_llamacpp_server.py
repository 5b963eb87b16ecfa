"""OpenAIJudge against a real llama.cpp server (``python -m llama_cpp.server``) on the packaged
Qwen2.5-Coder-0.5B GGUF, compared with TransformersJudge on the same weights.

Skipped when llama-cpp-python (with its ``[server]`` extra) is not installed or the packaged
weights are missing; marked ``slow`` (model loads and ~40 requests: minutes on 2 cores).
Install with ``pip install 'llama-cpp-python[server]==0.3.36'``.

What is compared: the server runs the GGUF's quantized weights (Q5_0/Q4_K/Q6_K/Q8_0) with
llama.cpp's kernels (activations quantized to 8 bits for the dot products); the transformers
judge runs the SAME weights dequantized to float32 (:mod:`rlaif_gym.models` converts the
GGUF), in float32 here. Tokenization is the same: llama-cpp-python tokenizes the completion
prompt with ``special=True`` (``<|im_start|>`` becomes one token) and adds BOS only when the
GGUF says ``tokenizer.ggml.add_bos_token`` (False for Qwen2.5), like the transformers judge
(``add_special_tokens=False``). Tolerances (documented, not tight): soft labels
mean |diff| <= 0.05 and max <= 0.15; d-RLAIF expected scores (1-10) mean |diff| <= 0.3 and
max <= 1.0. For scale, bf16 vs float32 in transformers alone moves soft labels by ~1e-2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rewards.judges.llamacpp_server import INSTALL_HINT, LlamaCppServer, missing_server_modules

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-coder-0.5b-instruct"
START_TIMEOUT_S = 300.0
TOP_LOGPROBS = 1000  # llama.cpp's top-N is uncapped; the digits must be inside it
LABEL_TOL = (0.05, 0.15)  # (mean, max) |soft label difference|
SCORE_TOL = (0.3, 1.0)  # (mean, max) |expected score difference|


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    missing = missing_server_modules()
    if missing:
        pytest.skip(f"llama-cpp-python server not installed (missing {', '.join(missing)}): "
                    f"{INSTALL_HINT}")
    from rlaif_gym.models import ChecksumError, MissingWeightsError, packaged_gguf_path

    try:
        return packaged_gguf_path(MODEL)  # joins the package parts once (sha256-checked)
    except (MissingWeightsError, ChecksumError) as exc:
        pytest.skip(f"packaged weights of {MODEL} not available: {exc}")


@pytest.fixture(scope="module")
def llamacpp_url(gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with LlamaCppServer(gguf_path, alias=MODEL, threads=min(2, os.cpu_count() or 1),
                        log=log, timeout=START_TIMEOUT_S) as server:
        yield server.url


@pytest.fixture(scope="module")
def judges(llamacpp_url: str):
    from rewards.judges.openai_judge import OpenAIJudge
    from rewards.judges.transformers_judge import TransformersJudge

    reference = TransformersJudge(MODEL, dtype="float32", num_threads=2, batch_size=4)
    http = OpenAIJudge(reference.tokenizer, llamacpp_url, model=MODEL, server="llamacpp",
                       top_logprobs=TOP_LOGPROBS, max_concurrency=1, timeout=300.0)
    assert http.models() == [MODEL]
    yield http, reference
    http.close()


def _report(what: str, got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    diff = np.abs(got - want)
    print(f"\n{what}: n={len(diff)} mean|diff|={diff.mean():.4f} max|diff|={diff.max():.4f}")
    return float(diff.mean()), float(diff.max())


def test_soft_labels_agree_with_transformers(judges, shared_data_dir):
    from rewards.preference import label_pairs
    from rlaif_gym.data import load_preference_pairs

    http, reference = judges
    pairs = load_preference_pairs("tldr", data_dir=shared_data_dir, high_confidence=True,
                                  source="local", limit=5)  # 10 prompts: both orders
    got = list(label_pairs(http, pairs, progress=False))
    want = list(label_pairs(reference, pairs, progress=False))
    p_got = np.array([[x.p_order_ab, x.p_order_ba] for x in got]).ravel()
    p_want = np.array([[x.p_order_ab, x.p_order_ba] for x in want]).ravel()
    mean, worst = _report("soft labels (per order)", p_got, p_want)
    agree = np.mean([a.ai_choice == b.ai_choice for a, b in zip(got, want, strict=True)])
    print(f"AI choice agreement: {agree:.0%} of {len(got)} pairs")
    assert mean <= LABEL_TOL[0] and worst <= LABEL_TOL[1]


def test_direct_scores_agree_with_transformers(judges, shared_data_dir):
    from rewards.direct import direct_scores
    from rlaif_gym.data import format_tldr_post, load_tldr_posts

    http, reference = judges
    posts = list(load_tldr_posts(data_dir=shared_data_dir, source="local"))[:10]
    contexts = [format_tldr_post(p.subreddit, p.title, p.post) for p in posts]
    responses = [p.summary for p in posts]
    got = direct_scores(http, "tldr", contexts, responses)
    want = direct_scores(reference, "tldr", contexts, responses)
    np.testing.assert_allclose(got.distribution.sum(1), 1.0, atol=1e-9)
    mean, worst = _report("expected scores (1-10)", got.expected, want.expected)
    assert mean <= SCORE_TOL[0] and worst <= SCORE_TOL[1]
