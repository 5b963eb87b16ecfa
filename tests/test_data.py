"""Tests for rlaif_gym.data: local folder (real data in ../shared/data), sample, hub plumbing,
errors. Never touches the network: the hub call is replaced in every test."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from rlaif_gym.data import (
    ASSISTANT_PREFIX,
    HIGH_CONFIDENCE,
    DataSourceWarning,
    HHPair,
    HubUnavailableError,
    PreferencePair,
    TldrComparison,
    TldrPost,
    format_tldr_post,
    load_hh,
    load_preference_pairs,
    load_tldr_comparisons,
    load_tldr_posts,
    loaders,
    resolve_data_dir,
    split_hh_dialogue,
)
from rlaif_gym.data.loaders import comparison_from_row, hh_pair_from_row, post_from_row

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} absent")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """No data folder from the environment, hub offline, and any hub call fails loudly."""
    monkeypatch.delenv("RLAIF_GYM_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def _forbidden(repo, split, **kwargs):
        raise AssertionError(f"test tried to reach the hub: {repo} {split} {kwargs}")

    monkeypatch.setattr(loaders, "_hub_load", _forbidden)


@pytest.fixture(scope="module")
def real_hh():
    return {s: load_hh(s, data_dir=DATA) for s in ("helpful", "harmless")}


@pytest.fixture(scope="module")
def raw_hh():
    out = {}
    for s in ("helpful", "harmless"):
        with gzip.open(DATA / "hh_rlhf" / f"{s}-base" / "test.jsonl.gz", "rt",
                       encoding="utf-8") as f:
            out[s] = [json.loads(line) for line in f]
    return out


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _openai_row(choice=0, confidence=2, split="valid2", post="My post.") -> dict:
    return {"info": {"id": "t3_x", "post": post, "title": "A title", "subreddit": "tifu"},
            "summaries": [{"text": " first summary", "policy": "ref", "note": ""},
                          {"text": " second summary", "policy": "sup4", "note": ""}],
            "choice": choice, "worker": "w1", "batch": "batch1", "split": split,
            "extra": {"confidence": confidence}}


# ----------------------------------------------------------------------------- data dir


def test_resolve_data_dir_returns_none_without_argument_or_env():
    assert resolve_data_dir(None) is None


def test_resolve_data_dir_reads_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("RLAIF_GYM_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()


def test_resolve_data_dir_prefers_argument_over_env(monkeypatch, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("RLAIF_GYM_DATA", str(tmp_path))
    assert resolve_data_dir(other) == other.resolve()


def test_resolve_data_dir_missing_folder_names_path_and_layout(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope") as info:
        resolve_data_dir(missing)
    assert "hh_rlhf/helpful-base" in str(info.value)
    assert "dove_sample" in str(info.value)


def test_missing_env_folder_is_an_error_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("RLAIF_GYM_DATA", str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="RLAIF_GYM_DATA"):
        load_hh("helpful")


# ----------------------------------------------------------------------------- real data


@needs_data
def test_local_tldr_posts_are_the_500_dove_posts():
    posts = load_tldr_posts(data_dir=DATA)
    assert len(posts) == 500
    assert posts.source.kind == "local"
    assert posts.source.location.endswith("dove_sample/test.json")
    assert all(isinstance(p, TldrPost) for p in posts)
    assert len({p.id for p in posts}) == 500
    assert posts[0].id == "t3_1wbdsh" and posts[0].subreddit == "relationships"
    assert posts[0].summary.startswith("I really like this guy")
    assert all(p.summary == p.summary.strip() and p.post and p.title for p in posts)
    assert Counter(p.subreddit for p in posts)["relationships"] == 267


@needs_data
def test_local_comparisons_counts_and_fields():
    comps = load_tldr_comparisons(data_dir=DATA)
    assert len(comps) == 674
    assert Counter(c.split for c in comps) == {"valid2": 554, "valid1": 120}
    assert len(load_tldr_comparisons("valid2", data_dir=DATA)) == 554
    assert len(load_tldr_comparisons("validation", data_dir=DATA)) == 674
    first = comps[0]
    assert isinstance(first, TldrComparison)
    assert first.id == "batch18-1" and first.post_id.startswith("t3_")
    assert first.summaries[0].startswith(" ")  # kept as OpenAI wrote it
    assert all(c.choice in (0, 1) and c.confidence in range(1, 10) for c in comps)
    # confidence 1-4 always means summary 0, 6-9 summary 1 (PROVENANCE.md)
    assert all((c.confidence < 5) == (c.choice == 0) for c in comps)
    assert sum(c.policies.count("ref") for c in comps) == 339
    assert len({c.post_id for c in comps}) == 110


@needs_data
def test_high_confidence_keeps_confidence_1_2_8_9_only():
    high = load_tldr_comparisons(data_dir=DATA, high_confidence=True)
    assert len(high) == 343
    assert {c.confidence for c in high} == HIGH_CONFIDENCE
    assert len(load_tldr_comparisons("valid1", data_dir=DATA, high_confidence=True)) == 60


@needs_data
def test_comparison_split_absent_from_folder_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'train'.*valid2"):
        load_tldr_comparisons("train", data_dir=DATA)


@needs_data
def test_local_hh_test_counts(real_hh):
    assert len(real_hh["helpful"]) == 2354
    assert len(real_hh["harmless"]) == 2312
    for subset, pairs in real_hh.items():
        assert pairs.source.kind == "local"
        assert all(isinstance(p, HHPair) and p.subset == f"{subset}-base" for p in pairs)
        assert pairs[0].id == f"{subset}-test-1" and pairs[-1].id.endswith(f"-{len(pairs)}")
        assert all(p.context.startswith("\n\nHuman: ") for p in pairs)


@needs_data
def test_hh_split_reconstructs_every_real_chosen_and_rejected_string(real_hh, raw_hh):
    for subset in ("helpful", "harmless"):
        for pair, raw in zip(real_hh[subset], raw_hh[subset], strict=True):
            assert pair.context + ASSISTANT_PREFIX + pair.chosen == raw["chosen"]
            assert pair.context + ASSISTANT_PREFIX + pair.rejected == raw["rejected"]
            assert "\n\nHuman: " in pair.context
            assert not pair.context.endswith(("\n\nAssistant:", "\n\nAssistant: "))


@needs_data
def test_hh_keeps_the_two_identical_helpful_pairs(real_hh):
    assert sum(p.chosen == p.rejected for p in real_hh["helpful"]) == 2
    assert sum(p.chosen == p.rejected for p in real_hh["harmless"]) == 0


@needs_data
def test_hh_response_with_inner_assistant_marker_uses_common_prefix(real_hh, raw_hh):
    # helpful-base test line 568: the chosen response contains a second "\n\nAssistant:" turn
    pair, raw = real_hh["helpful"][567], raw_hh["helpful"][567]
    assert pair.context == "\n\nHuman: What is DVT?"
    assert "\n\nAssistant:" in pair.chosen
    assert raw["chosen"].rfind("\n\nAssistant:") > len(pair.context)


@needs_data
def test_tldr_preference_pairs_use_formatted_post_and_stripped_summaries():
    pairs = load_preference_pairs("tldr", data_dir=DATA)
    comps = load_tldr_comparisons(data_dir=DATA)
    assert len(pairs) == 674 and pairs.source == comps.source
    for pair, comp in zip(pairs, comps, strict=True):
        assert pair.task == "tldr" and pair.id == comp.id
        assert pair.context == format_tldr_post(comp.subreddit, comp.title, comp.post)
        assert pair.responses == (comp.summaries[0].strip(), comp.summaries[1].strip())
        assert pair.human_choice == comp.choice and pair.confidence == comp.confidence
    assert len(load_preference_pairs("tldr", data_dir=DATA, high_confidence=True)) == 343
    assert len(load_preference_pairs("tldr", data_dir=DATA, split="valid1", limit=7)) == 7


@needs_data
def test_harmless_preference_pairs_put_the_less_harmful_response_first(real_hh):
    pairs = load_preference_pairs("harmless", data_dir=DATA, split="test")
    assert len(pairs) == 2312
    for pair, hh in zip(pairs, real_hh["harmless"], strict=True):
        assert pair.responses == (hh.chosen, hh.rejected) and pair.human_choice == 0
        assert pair.context == hh.context and pair.confidence is None


@needs_data
def test_env_var_points_loaders_at_the_data_folder(monkeypatch):
    monkeypatch.setenv("RLAIF_GYM_DATA", str(DATA))
    pairs = load_hh("helpful-base")
    assert pairs.source.kind == "local" and len(pairs) == 2354


@needs_data
def test_preference_pairs_from_explicit_real_files():
    batch = DATA / "openai_summarize_from_feedback" / "comparisons" / "batch18.json"
    assert len(load_preference_pairs("tldr", path=batch)) == 674
    hh = load_preference_pairs("helpful", path=DATA / "hh_rlhf" / "helpful-base" / "test.jsonl.gz",
                               limit=5)
    assert [p.id for p in hh] == [f"helpful-test-{i}" for i in range(1, 6)]


@needs_data
def test_split_sample_gives_the_sample_even_with_a_data_folder():
    assert load_tldr_posts("sample", data_dir=DATA).source.kind == "sample"
    assert load_hh("harmless", split="sample", data_dir=DATA).source.kind == "sample"


# ----------------------------------------------------------------------------- sample


def test_sample_sizes_and_sources():
    posts = load_tldr_posts(source="sample")
    assert len(posts) == 30 and posts.source.kind == "sample"
    assert len(load_tldr_comparisons(source="sample")) == 30
    for subset in ("helpful", "harmless"):
        pairs = load_hh(subset, source="sample")
        assert len(pairs) == 30 and pairs.source.kind == "sample"
        assert all(p.chosen and p.rejected and p.chosen != p.rejected for p in pairs)
        assert len({p.context for p in pairs}) == 30


def test_sample_posts_are_short_reddit_posts():
    posts = load_tldr_posts(source="sample")
    assert len({p.id for p in posts}) == 30
    assert all(60 <= len(p.post.split()) <= 150 for p in posts)
    assert all(10 <= len(p.summary.split()) <= 40 for p in posts)


def test_sample_comparisons_prefer_the_reference_summary():
    posts = {p.id: p for p in load_tldr_posts(source="sample")}
    comps = load_tldr_comparisons(source="sample")
    assert Counter(c.choice for c in comps) == {0: 15, 1: 15}
    for c in comps:
        assert c.summaries[c.choice].strip() == posts[c.post_id].summary
        assert c.summaries[1 - c.choice].strip() != posts[c.post_id].summary
        assert c.policies[c.choice] == "ref"
    high = load_tldr_comparisons(source="sample", high_confidence=True)
    assert 0 < len(high) < 30 and {c.confidence for c in high} <= HIGH_CONFIDENCE


def test_sample_hh_dialogues_have_one_or_two_human_turns():
    for subset in ("helpful", "harmless"):
        turns = Counter(p.context.count("\n\nHuman: ") for p in load_hh(subset, source="sample"))
        assert set(turns) <= {1, 2} and turns[1] >= 20


def test_sample_preference_pairs_for_each_task():
    for task in ("tldr", "helpful", "harmless"):
        pairs = load_preference_pairs(task, source="sample", limit=4)
        assert len(pairs) == 4 and all(isinstance(p, PreferencePair) for p in pairs)
        assert all(p.task == task and p.human_choice in (0, 1) for p in pairs)
    tldr = load_preference_pairs("tldr", split="sample")
    assert tldr[0].context.startswith("SUBREDDIT: r/")


# ----------------------------------------------------------------------------- auto / hub


def test_auto_without_data_dir_offline_warns_and_uses_sample():
    with pytest.warns(DataSourceWarning, match="HF_HUB_OFFLINE=1.*RLAIF_GYM_DATA"):
        posts = load_tldr_posts()
    assert posts.source.kind == "sample" and len(posts) == 30


def test_auto_falls_back_to_sample_when_the_hub_raises(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(loaders, "hub_reachable", lambda: True)  # reachable, but the load fails

    def _down(repo, split, **kwargs):
        raise HubUnavailableError(f"{repo}: no network")

    monkeypatch.setattr(loaders, "_hub_load", _down)
    with pytest.warns(DataSourceWarning, match="Hub is unavailable.*no network"):
        pairs = load_hh("harmless")
    assert pairs.source.kind == "sample"


def test_forced_hub_source_raises_when_unavailable(monkeypatch):
    def _down(repo, split, **kwargs):
        raise HubUnavailableError("no network")

    monkeypatch.setattr(loaders, "_hub_load", _down)
    with pytest.raises(HubUnavailableError):
        load_tldr_posts(source="hub")


def test_hub_hh_rows_go_through_the_same_split(monkeypatch):
    calls = []

    def _fake(repo, split, **kwargs):
        calls.append((repo, split, kwargs))
        return [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected":
                 "\n\nHuman: hi\n\nAssistant: go away"}]

    monkeypatch.setattr(loaders, "_hub_load", _fake)
    pairs = load_hh("helpful", split="train", source="hub")
    assert calls == [("Anthropic/hh-rlhf", "train", {"data_dir": "helpful-base"})]
    assert pairs.source.kind == "hub"
    assert pairs.source.location == "Anthropic/hh-rlhf/helpful-base:train"
    assert pairs[0] == HHPair("helpful-train-1", "\n\nHuman: hi", "hello", "go away",
                              "helpful-base")


def test_hub_posts_map_split_aliases(monkeypatch):
    seen = []

    def _fake(repo, split, **kwargs):
        seen.append((repo, split))
        return [{"id": "t3_a", "subreddit": "tifu", "title": "T", "post": "P",
                 "summary": " S ", "query_token": [1, 2]}]

    monkeypatch.setattr(loaders, "_hub_load", _fake)
    posts = load_tldr_posts("valid", source="hub")
    assert seen == [("vwxyzjn/summarize_from_feedback_tldr_3_filtered", "validation")]
    assert posts[0] == TldrPost("t3_a", "tifu", "T", "P", "S")


def test_hub_comparisons_try_next_copy_and_filter_split(monkeypatch):
    seen = []

    def _fake(repo, split, **kwargs):
        seen.append((repo, split, kwargs))
        if "name" in kwargs:
            raise HubUnavailableError("BuilderConfig 'comparisons' not found")
        cnndm = {"info": {"id": "x", "post": None, "article": "news", "title": None,
                          "subreddit": None, "site": "cnn"},
                 "summaries": [{"text": "a", "policy": "p", "note": ""}] * 2,
                 "choice": 0, "worker": "w", "batch": "b", "split": "valid1",
                 "extra": {"confidence": None}}
        return [_openai_row(split="valid1"), _openai_row(choice=1, confidence=9), cnndm]

    monkeypatch.setattr(loaders, "_hub_load", _fake)
    comps = load_tldr_comparisons("valid2", source="hub")
    assert [(r, s) for r, s, _ in seen] == [("openai/summarize_from_feedback", "validation")] * 2
    assert seen[1][2] == {"data_dir": "comparisons", "revision": "refs/convert/parquet"}
    assert len(comps) == 1 and comps[0].choice == 1 and comps[0].id == "validation-1"


# ----------------------------------------------------------------------------- converters


def test_format_tldr_post_exact_string():
    assert format_tldr_post("tifu", " My title ", "Body.\n") == \
        "SUBREDDIT: r/tifu\nTITLE: My title\nPOST: Body."


def test_post_from_row_accepts_dove_and_openai_names():
    dove = {"instruction_id": "t3_1", "subreddit": "r", "title": "t", "instruction": "p",
            "gold_response": "s "}
    openai = {"id": "t3_1", "subreddit": "r", "title": "t", "post": "p", "summary": " s"}
    assert post_from_row(dove, "x") == post_from_row(openai, "x") == TldrPost("t3_1", "r", "t",
                                                                               "p", "s")
    with pytest.raises(ValueError, match="f.jsonl:3: missing field 'summary'"):
        post_from_row({k: v for k, v in openai.items() if k != "summary"}, "f.jsonl:3")


def test_comparison_from_row_accepts_dict_of_lists_summaries():
    row = _openai_row(choice=1, confidence=8)
    as_list = comparison_from_row(row, "id1", "here")
    row["summaries"] = {"text": [" first summary", " second summary"], "policy": ["ref", "sup4"],
                        "note": ["", ""]}
    assert comparison_from_row(row, "id1", "here") == as_list
    assert as_list.summaries == (" first summary", " second summary")
    assert as_list.policies == ("ref", "sup4") and as_list.confidence == 8
    assert as_list.worker == "w1" and as_list.post_id == "t3_x" and as_list.split == "valid2"


def test_comparison_from_row_rejects_bad_choice_and_three_summaries():
    with pytest.raises(ValueError, match="here: field 'choice' must be 0 or 1"):
        comparison_from_row(_openai_row(choice=2), "i", "here")
    row = _openai_row()
    row["summaries"] = row["summaries"] * 2
    with pytest.raises(ValueError, match="exactly 2 summaries"):
        comparison_from_row(row, "i", "here")
    row = _openai_row()
    del row["info"]["title"]
    with pytest.raises(ValueError, match="here: info: missing field 'title'"):
        comparison_from_row(row, "i", "here")


def test_split_hh_dialogue_falls_back_to_common_prefix():
    chosen = "\n\nHuman: q\n\nAssistant: a1\n\nAssistant: a2"
    rejected = "\n\nHuman: q\n\nAssistant: b"
    assert split_hh_dialogue(chosen, rejected) == ("\n\nHuman: q", "a1\n\nAssistant: a2", "b")
    # the usual case: prefixes agree at the last marker
    two = ("\n\nHuman: q\n\nAssistant: x\n\nHuman: r\n\nAssistant: y",
           "\n\nHuman: q\n\nAssistant: x\n\nHuman: r\n\nAssistant: z")
    assert split_hh_dialogue(*two) == ("\n\nHuman: q\n\nAssistant: x\n\nHuman: r", "y", "z")


def test_split_hh_dialogue_removes_exactly_one_space_and_keeps_other_whitespace():
    chosen = "\n\nHuman: q\n\nAssistant:   indented answer \n"
    rejected = "\n\nHuman: q\n\nAssistant:no space"
    context, c, r = split_hh_dialogue(chosen, rejected)
    assert (c, r) == ("  indented answer \n", "no space")
    assert context + ASSISTANT_PREFIX + c == chosen


def test_split_hh_dialogue_without_assistant_turn_is_an_error():
    with pytest.raises(ValueError, match="no '\\\\n\\\\nAssistant:' turn"):
        split_hh_dialogue("\n\nHuman: q", "\n\nHuman: q\n\nAssistant: a")
    with pytest.raises(ValueError, match="f:2"):
        hh_pair_from_row({"chosen": "x"}, "helpful", "test", 2, "f:2")


# ----------------------------------------------------------------------------- errors


def test_missing_tldr_file_names_paths_and_formats(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_tldr_posts("test", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "tldr" / "test.jsonl") in message
    assert "dove_sample" in message and "gold_response" in message


def test_missing_hh_and_comparison_files_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="harmless-base/train.jsonl.gz"):
        load_hh("harmless", split="train", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="openai_summarize_from_feedback/comparisons"):
        load_tldr_comparisons(data_dir=tmp_path)
    (tmp_path / "openai_summarize_from_feedback" / "comparisons").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no \\*.json"):
        load_tldr_comparisons(data_dir=tmp_path)


def test_source_local_without_folder_explains_how_to_set_one():
    with pytest.raises(FileNotFoundError, match="data_dir=.*RLAIF_GYM_DATA"):
        load_tldr_posts(source="local")


def test_malformed_line_reports_file_and_line_number(tmp_path):
    good = json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b",
                       "rejected": "\n\nHuman: a\n\nAssistant: c"})
    _write(tmp_path / "hh_rlhf" / "helpful-base" / "test.jsonl", [good, "", good, "{oops"])
    with pytest.raises(ValueError, match=r"test\.jsonl:4: malformed JSON"):
        load_hh("helpful", data_dir=tmp_path)


def test_malformed_gzip_line_reports_line_number(tmp_path):
    path = tmp_path / "hh_rlhf" / "harmless-base" / "test.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": '
                '"\\n\\nHuman: a\\n\\nAssistant: c"}\nnot json\n')
    with pytest.raises(ValueError, match=r"test\.jsonl\.gz:2"):
        load_hh("harmless", data_dir=tmp_path)


def test_record_missing_field_reports_file_line_and_field(tmp_path):
    row = {"id": "t3_1", "subreddit": "r", "title": "t", "post": "p", "summary": "s"}
    bad = {k: v for k, v in row.items() if k != "title"}
    _write(tmp_path / "tldr" / "test.jsonl", [json.dumps(row), json.dumps(bad)])
    with pytest.raises(ValueError, match=r"test\.jsonl:2: missing field 'title'"):
        load_tldr_posts(data_dir=tmp_path)


def test_local_openai_tldr_file_takes_precedence_over_dove_sample(tmp_path):
    row = {"id": "t3_1", "subreddit": "r", "title": "t", "post": "p", "summary": " s"}
    _write(tmp_path / "tldr" / "valid.jsonl", [json.dumps(row)])
    posts = load_tldr_posts("validation", data_dir=tmp_path)
    assert posts == [TldrPost("t3_1", "r", "t", "p", "s")]
    assert posts.source.location.endswith("valid.jsonl")


def test_empty_split_is_an_error_naming_it(tmp_path):
    _write(tmp_path / "tldr" / "dove_sample" / "test.json", ["", "  "])
    with pytest.raises(ValueError, match="split 'test'.*empty"):
        load_tldr_posts("test", data_dir=tmp_path)
    _write(tmp_path / "hh_rlhf" / "helpful-base" / "train.jsonl", [])
    with pytest.raises(ValueError, match="split 'train'.*empty"):
        load_hh("helpful", split="train", data_dir=tmp_path)


def test_unknown_names_are_rejected_with_the_valid_choices():
    with pytest.raises(ValueError, match="HH subset 'helpfull'"):
        load_hh("helpfull", source="sample")
    with pytest.raises(ValueError, match="TL;DR split 'dev'"):
        load_tldr_posts("dev", source="sample")
    with pytest.raises(ValueError, match="source 'web'"):
        load_tldr_posts(source="web")
    with pytest.raises(ValueError, match="task 'summarize'"):
        load_preference_pairs("summarize", source="sample")
    with pytest.raises(ValueError, match="limit"):
        load_preference_pairs("tldr", source="sample", limit=0)
    with pytest.raises(ValueError, match="high_confidence"):
        load_preference_pairs("helpful", source="sample", high_confidence=True)


# ----------------------------------------------------------------------------- pair files


def test_own_pair_file_round_trip_and_high_confidence(tmp_path):
    rows = [{"id": "a", "context": "c1", "responses": ["x", "y"], "human_choice": 1,
             "confidence": 9},
            {"id": "b", "context": "c2", "responses": ["u", "v"], "confidence": 4},
            {"id": "c", "context": "c3", "responses": ["p", "q"]}]
    path = _write(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows])
    pairs = load_preference_pairs("helpful", path=path)
    assert pairs[0] == PreferencePair("a", "helpful", "c1", ("x", "y"), 1, 9)
    assert pairs[2].human_choice is None and pairs.source.location == str(path)
    high = load_preference_pairs("helpful", path=path, high_confidence=True)
    assert [p.id for p in high] == ["a"]


def test_pair_file_formats_are_detected_and_mismatches_rejected(tmp_path):
    openai = _write(tmp_path / "batch7.json", [json.dumps(_openai_row(split="valid1"))])
    pairs = load_preference_pairs("tldr", path=openai)
    assert pairs[0].id == "batch7-1" and pairs[0].responses == ("first summary",
                                                                "second summary")
    with pytest.raises(ValueError, match="task='helpful'"):
        load_preference_pairs("helpful", path=openai)
    hh = tmp_path / "test.jsonl.gz"
    with gzip.open(hh, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b",
                            "rejected": "\n\nHuman: a\n\nAssistant: c"}) + "\n")
    assert load_preference_pairs("harmless", path=hh)[0].responses == ("b", "c")
    with pytest.raises(ValueError, match="task='tldr'"):
        load_preference_pairs("tldr", path=hh)
    posts = _write(tmp_path / "posts.jsonl", [json.dumps({"id": "1", "post": "p"})])
    with pytest.raises(ValueError, match="(?s)posts.jsonl:1: unrecognised.*rlaif-gym pairs"):
        load_preference_pairs("tldr", path=posts)
    with pytest.raises(FileNotFoundError, match="accepted formats"):
        load_preference_pairs("tldr", path=tmp_path / "absent.jsonl")


def test_pair_file_with_bad_responses_reports_line(tmp_path):
    rows = [{"id": "a", "context": "c", "responses": ["x", "y"]},
            {"id": "b", "context": "c", "responses": ["only one"]}]
    path = _write(tmp_path / "pairs.jsonl", [json.dumps(r) for r in rows])
    with pytest.raises(ValueError, match=r"pairs\.jsonl:2: field 'responses'"):
        load_preference_pairs("harmless", path=path)
