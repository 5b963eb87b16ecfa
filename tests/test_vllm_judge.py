"""VLLMJudge: lazy import (runs everywhere) and agreement with TransformersJudge (GPU + vLLM).

The agreement test needs vLLM, a CUDA GPU and the packaged Qwen2.5-Coder-0.5B weights; it is
skipped cleanly otherwise. ``benchmarks/bench_vllm.py`` is the fuller GPU check.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rewards.judges import load_judge

REPO = Path(__file__).resolve().parents[1]

# A meta-path finder that records (and refuses) any import of vllm in a fresh interpreter.
BLOCK_VLLM = textwrap.dedent("""
    import sys
    attempts = []
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "vllm" or name.startswith("vllm."):
                attempts.append(name)
                raise ImportError("vllm is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
""")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO),
                                                       "HF_HUB_OFFLINE": "1", "PATH": ""})


def test_importing_the_module_does_not_import_vllm():
    code = BLOCK_VLLM + textwrap.dedent("""
        import rewards.judges
        import rewards.judges.vllm_judge as m
        assert hasattr(m, "VLLMJudge")
        assert not attempts, attempts
        assert not any(k == "vllm" or k.startswith("vllm.") for k in sys.modules)
        print("ok")
    """)
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_vllm_raises_import_error_naming_the_extra(monkeypatch):
    from rewards.judges.vllm_judge import VLLMJudge

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'rlaif-gym\[vllm\]'"):
        VLLMJudge("qwen2.5-coder-0.5b-instruct")
    with pytest.raises(ImportError, match=r"rlaif-gym\[vllm\]"):
        load_judge("qwen2.5-coder-0.5b-instruct", backend="vllm")


def _gpu_with_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.skipif(not _gpu_with_vllm(), reason="needs vLLM and a CUDA GPU")
def test_vllm_scores_match_transformers_on_gpu():
    from rewards.direct import direct_scores
    from rewards.judges.transformers_judge import TransformersJudge
    from rewards.judges.vllm_judge import VLLMJudge
    from rlaif_gym.models import MissingWeightsError

    spec = "qwen2.5-coder-0.5b-instruct"
    try:
        reference = TransformersJudge(spec, dtype="bfloat16", device="cuda")
    except (MissingWeightsError, FileNotFoundError) as exc:
        pytest.skip(f"packaged weights not available: {exc}")
    judge = VLLMJudge(spec, dtype="bfloat16", gpu_memory_utilization=0.3)
    contexts = ["SUBREDDIT: r/cooking\nTITLE: Burnt rice\nPOST: My rice burns every time.",
                "SUBREDDIT: r/running\nTITLE: Knee pain\nPOST: My knee hurts after runs."]
    responses = ["Rice keeps burning; how to stop it?", "Bananas are yellow."]
    got = direct_scores(judge, "tldr", contexts, responses)
    want = direct_scores(reference, "tldr", contexts, responses)
    # both run the same bf16 weights; kernels differ (bf16 accumulation order)
    assert np.abs(got.expected - want.expected).max() < 0.3
