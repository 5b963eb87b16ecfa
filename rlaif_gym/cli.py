"""The ``rlaif-gym`` console script.

Subcommands are contributed by the packages that own them (each exposes
``register(subparsers)``); heavy imports (torch, models) happen inside the command
functions, so ``rlaif-gym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that contribute subcommands through ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("rlaif_gym.demo", "rewards.cli", "rewards.calibrate_cli",
                                     "rewards.rm_cli", "agents.cli", "rlaif_gym.evaluate_cli",
                                     "rlaif_gym.reproduce")


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=``: a float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    from rlaif_gym import __version__

    parser = argparse.ArgumentParser(
        prog="rlaif-gym",
        description="RLAIF as Gymnasium environments: envs, AI feedback, reward models, agents.",
    )
    parser.add_argument("--version", action="version", version=f"rlaif-gym {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return int(func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
