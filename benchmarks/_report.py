"""The epilogue the benchmarks share: the command line that reproduces a result, and writing
the result as JSON.

Imported as ``from _report import ...``: running ``python benchmarks/X.py`` puts this folder
first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """``PYTHONPATH=. python benchmarks/<script> <args>``: ``script`` is the benchmark's
    ``__file__``, ``argv`` the arguments ``main`` got (None: this process's own)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    return " ".join(["PYTHONPATH=. python", f"benchmarks/{Path(script).name}", *args])


def write_json(path: str | os.PathLike[str], result: dict, indent: int = 1) -> None:
    """Write ``result`` to ``path`` (parent folders created), UTF-8, a newline at the end."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=indent) + "\n", encoding="utf-8")
