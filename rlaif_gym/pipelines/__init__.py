"""The top layer: the paper's pipeline as public functions (the CLI calls exactly these).

=====================  ============================================================
function               what it does
=====================  ============================================================
``label_to_file``      AI preference labels of a task's pairs into a resumable file
``alignment_of_files``  agreement of label files with the human choices
``train_rm``           a reward model on AI labels or human choices
``evaluate_rm``        a reward model's accuracy on held-out human choices
``sample_run``         completions of a training run's policy
``evaluate_policies``  win rates of policies, judged in both orders
=====================  ============================================================

Also: :func:`rlaif_gym.pipelines.reproduce.reproduce` (all stages of the paper at small
scale, and a report) and :func:`rlaif_gym.pipelines.demo.demo` (a few d-RLAIF episodes on
the defaults). Training itself is :func:`agents.train.train`. Names are imported lazily
(each module pulls in torch and the models only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "label_to_file": "label", "alignment_of_files": "label",
    "train_rm": "reward_models", "evaluate_rm": "reward_models",
    "sample_run": "sample", "evaluate_policies": "evaluate",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'rlaif_gym.pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rlaif_gym.pipelines.{_HOMES[name]}"), name)
