"""AI labeler alignment (z_acc) and position bias on tiny hand-computed label sets."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from rewards.alignment import (
    alignment_report,
    alignment_report_from_jsonl,
    format_table,
    read_labels_jsonl,
    wilson_interval,
)


def label(id, p_first=None, human=None, p_ab=None, p_ba=None, **extra):
    return {"id": id, "p_first": p_first, "human_choice": human, "p_order_ab": p_ab,
            "p_order_ba": p_ba, "confidence": None, **extra}


# Four pairs with a human choice: right, right, wrong, tie -> z_acc = 2.5 / 4.
ACCURACY_LABELS = [
    label("a", p_first=0.9, human=0),
    label("b", p_first=0.2, human=1),
    label("c", p_first=0.7, human=1),
    label("d", p_first=0.5, human=0),
    label("e", p_first=0.9, human=None),  # no human choice: not counted
]

# p_order_ab = P(responses[0]) shown first, p_order_ba = P(responses[0]) shown second.
POSITION_LABELS = [
    label("a", p_ab=0.8, p_ba=0.3),  # first, first -> same position (first)
    label("b", p_ab=0.3, p_ba=0.8),  # second, second -> same position (second)
    label("c", p_ab=0.8, p_ba=0.9),  # prefers responses[0] both times: consistent
    label("d", p_ab=0.6, p_ba=0.2),  # first, first -> same position (first)
    label("e", p_ab=0.5, p_ba=0.3),  # tie in one order: no position preferred
    label("f", p_ab=0.8, p_ba=None),  # only one order: not counted
]


def test_z_acc_counts_matches_and_half_credits_ties():
    report = alignment_report(ACCURACY_LABELS)
    assert report.n == 4
    assert report.n_labels == 5
    assert report.n_ties == 1
    assert report.z_acc == pytest.approx(2.5 / 4)
    assert report.ci_low < report.z_acc < report.ci_high


def test_wilson_interval_matches_published_values():
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == 1.0


def test_z_acc_interval_is_the_wilson_interval_of_the_credits():
    report = alignment_report(ACCURACY_LABELS)
    # n = 4, p = 0.625, z = 1.96: center 0.56377, half-width 0.34434 (by hand)
    assert report.ci_low == pytest.approx(0.2194, abs=1e-3)
    assert report.ci_high == pytest.approx(0.9081, abs=1e-3)


def test_position_bias_counts_pairs_preferring_the_same_position_in_both_orders():
    report = alignment_report(POSITION_LABELS)
    assert report.n_position == 5
    assert (report.same_first, report.same_second) == (2, 1)
    assert report.position_bias == pytest.approx(3 / 5)
    assert report.favoured_position == "first"
    assert report.n == 0 and report.z_acc is None and report.ci_low is None


def test_position_bias_favours_second_when_second_wins_more_often():
    report = alignment_report([label("x", p_ab=0.1, p_ba=0.9), label("y", p_ab=0.9, p_ba=0.9)])
    assert report.position_bias == 0.5
    assert report.favoured_position == "second"


def test_perfectly_consistent_labeler_has_no_position_bias():
    labels = [label(str(i), p_ab=0.9, p_ba=0.8) for i in range(3)]
    report = alignment_report(labels)
    assert report.position_bias == 0.0
    assert report.favoured_position == "none"


def test_labels_can_be_objects_with_attributes():
    objects = [SimpleNamespace(**d) for d in ACCURACY_LABELS]
    assert alignment_report(objects).z_acc == pytest.approx(0.625)


def test_repeated_ids_are_counted_once():
    labels = [label("a", p_first=0.9, human=0), label("a", p_first=0.1, human=0)]
    report = alignment_report(labels)
    assert report.n == 1 and report.z_acc == 1.0 and report.n_duplicates == 1


@pytest.mark.parametrize(
    "bad",
    [
        label("bad", p_first=1.5, human=0),
        label("bad", p_first=math.nan, human=0),
        label("bad", p_first="high", human=0),
        label("bad", p_first=0.5, human=2),
        label("bad", p_ab=-0.1, p_ba=0.5),
    ],
)
def test_invalid_label_values_raise_naming_the_label(bad):
    with pytest.raises(ValueError, match="'bad'"):
        alignment_report([bad])


def test_jsonl_reader_tolerates_only_an_incomplete_last_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    lines = [json.dumps(d) for d in ACCURACY_LABELS[:2]]
    path.write_text("\n".join(lines) + '\n{"id": "c", "p_fi')
    found = read_labels_jsonl(path)
    assert [r["id"] for r in found.records] == ["a", "b"]
    assert found.bad_tail == '{"id": "c", "p_fi'
    assert found.valid_end == len(("\n".join(lines) + "\n").encode())

    path.write_text(lines[0] + "\n{broken\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_labels_jsonl(path)


def test_jsonl_reader_reports_a_missing_final_newline(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(ACCURACY_LABELS[0]))
    found = read_labels_jsonl(path)
    assert found.missing_newline and found.bad_tail is None and len(found.records) == 1


def test_report_from_jsonl_and_table_show_the_numbers(tmp_path):
    path = tmp_path / "run.jsonl"
    both = [dict(a, p_order_ab=p["p_order_ab"], p_order_ba=p["p_order_ba"])
            for a, p in zip(ACCURACY_LABELS, POSITION_LABELS[:5], strict=True)]
    path.write_text("".join(json.dumps(d) + "\n" for d in both))
    report = alignment_report_from_jsonl(path)
    assert report.source == str(path)
    assert report.z_acc == pytest.approx(0.625)
    assert report.position_bias == pytest.approx(3 / 5)
    table = format_table([report])
    assert "62.5%" in table and "60.0%" in table and "first" in table
    assert "[21.9%, 90.8%]" in table
    assert report.format_table() == table


def test_table_shows_n_a_for_a_file_without_human_choices():
    table = format_table([alignment_report([label("a", p_first=0.7)], source="x.jsonl")])
    assert "x.jsonl" in table and "n/a" in table


def test_table_shows_the_recorded_judge_dtypes_and_how_many_labels_lack_one():
    one = alignment_report([label("a", 0.7, 0, dtype="float32"),
                            label("b", 0.2, 1, dtype="float32")])
    mixed = alignment_report([label("a", 0.7, 0, dtype="float32"),
                              label("b", 0.2, 1, dtype="bfloat16"), label("c", 0.6, 0)])
    none = alignment_report([label("a", 0.7, 0)])
    assert mixed.dtypes == {"float32": 1, "bfloat16": 1} and none.dtypes == {}
    rows = format_table([one, mixed, none]).splitlines()
    assert rows[0].split()[-1] == "dtype"
    assert rows[2].endswith("float32") and "bfloat16" not in rows[2]
    assert rows[3].endswith("bfloat16 1, float32 1, unrecorded 1")
    assert rows[4].endswith(" -")
