"""The epilogue the benchmarks and the studies share: the command line that reproduces a
result, and writing the result as JSON.

Imported as ``from _report import ...`` by a benchmark (running ``python benchmarks/X.py``
puts this folder first on ``sys.path``) and as ``from benchmarks._report import ...`` by a
study in ``research/`` (run with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rlaif_gym.files import write_json

__all__ = ["command_line", "write_json"]


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``PYTHONPATH=. python <folder>/<script> <args>``: ``script`` is the caller's
    ``__file__``, ``argv`` the arguments ``main`` got (None: this process's own)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    path = Path(script)
    return " ".join(["PYTHONPATH=. python", f"{path.parent.name}/{path.name}", *args])
