"""Every subcommand's --help renders as a user reads it."""

from __future__ import annotations

import pytest

from rlaif_gym.cli import build_parser


def _subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_help_shows_no_doubled_percent_signs(name: str) -> None:
    # argparse %-formats argument help but prints description and epilog verbatim,
    # so "95%%" there reaches the user as "95%%".
    text = _subcommands()[name].format_help()
    assert "%%" not in text, f"`rlaif-gym {name} --help` prints '%%'"
    assert len(text) > 50
