"""The error every public function raises for bad user input (core layer).

:class:`UsageError` means "the request cannot be done as asked": an unknown name, a file
that is not what it should be, options that contradict each other, an output that would
overwrite something. The CLI prints it as one line and exits with code 2; Python callers
catch it like the :class:`ValueError` it is. Anything else that escapes is a bug and keeps
its traceback.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """Bad input: printed by the CLI as one line, exit code 2."""
