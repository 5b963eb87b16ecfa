"""benchmarks/gpu_reproduce.py: the device half trains and samples without a judge, the judge
half judges those completions on another machine, without the policies' weights."""

from __future__ import annotations

import json
import shutil
import tarfile


def test_device_half_samples_without_a_judge_and_judge_half_judges_the_packed_run(tmp_path):
    from benchmarks.gpu_reproduce import PAIRS, gpu_config, run_device, run_judge

    tiny = dict(policy="tiny-random", judge="tiny-random", rm_base="tiny-random",
                si_policy="tiny-random", si_judge="tiny-random", source="sample")
    device_out = tmp_path / "device" / "run"
    packed = tmp_path / "results.tgz"
    run_device(gpu_config(str(device_out), None, None, "cpu", tiny=True, threads=1, **tiny),
               packed)
    evaluation = json.loads((device_out / "eval" / "tldr-rm" / "evaluation.json").read_text())
    assert evaluation["judge"] is None and evaluation["comparisons"] == []
    assert set(evaluation["policies"]) == {"SFT", "RLAIF", "RLHF", "REF"}
    stages = json.loads((device_out / "gpu_stages.json").read_text())["seconds"]
    assert list(stages) == ["data", "sft", "labels", "reward_models", "rm_accuracy",
                            "rl tldr/rlaif", "rl tldr/rlhf", "sample"]

    # the judge half gets the pack (no weights in it) on a machine where the run is gone
    here = tmp_path / "here"
    with tarfile.open(packed) as tar:
        names = tar.getnames()
        tar.extractall(here, filter="data")
    assert not [n for n in names if n.endswith((".safetensors", ".pt"))]
    shutil.rmtree(tmp_path / "device")
    report = run_judge(gpu_config(str(here), None, None, "cpu", tiny=True, threads=1, **tiny),
                       "tiny-random", PAIRS)
    summary = json.loads((here / "eval" / "tldr-rm" / "evaluation.json").read_text())
    judged = [(c["a"], c["b"]) for c in summary["comparisons"]]
    assert judged == [tuple(p.split(":")) for p in PAIRS]
    assert all(c["win_rate"]["n"] == 4 for c in summary["comparisons"])
    text = report.read_text()
    assert "RLAIF vs SFT" in text and "## Reward models" in text
    assert (here / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
