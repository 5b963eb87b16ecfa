"""Supervised fine-tuning: data, sampling parity with evaluation, training runs (tiny models)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from agents.sampling import sample_completions  # noqa: E402
from agents.sft import SFTConfig, completion_nll, train_sft  # noqa: E402
from agents.sft_data import (  # noqa: E402
    build_examples,
    seeded_eval_ids,
    sft_stop_token_id,
    split_records,
)
from rlaif_gym.models import load_causal_lm, load_tokenizer  # noqa: E402
from rlaif_gym.tasks import get_task  # noqa: E402

TINY = "tiny-random"


@pytest.fixture(scope="module")
def tldr_records():
    return get_task("tldr").load_prompts(split="sample")


def tiny_config(out_dir, **overrides) -> SFTConfig:
    settings = dict(out_dir=str(out_dir), task="tldr", policy=TINY, split="sample",
                    heldout_n=4, epochs=2, lr=1e-2, batch_size=4, grad_accum=1,
                    max_prompt_tokens=128, max_completion_tokens=48, eval_max_new_tokens=(6, 12),
                    sample_batch_size=4, bf16=False, progress=False, threads=1)
    settings.update(overrides)
    return SFTConfig(**settings)


# =========================================================================== data


def test_an_example_is_the_env_prompt_then_the_reference_then_the_stop_token(tldr_records,
                                                                              tiny_tokenizer):
    record = tldr_records[0]
    (ex,) = build_examples("tldr", [record], tiny_tokenizer, max_prompt_tokens=128,
                           max_completion_tokens=10_000)
    prompt = get_task("tldr").render_prompt(record, tiny_tokenizer, 128)
    assert ex.input_ids[:ex.prompt_len] == list(prompt)
    completion = ex.input_ids[ex.prompt_len:]
    assert completion[-1] == sft_stop_token_id(tiny_tokenizer) == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(completion[:-1]) == record.reference.strip()
    assert ex.prompt_truncated and not ex.completion_truncated
    row = ex.to_row()
    assert row["completion_mask"] == [0] * ex.prompt_len + [1] * ex.completion_len


def test_the_stop_token_is_the_chat_templates_end_of_turn():
    from rlaif_gym.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    tok.eos_token = "<|endoftext|>"  # EOS differs from the template's <|im_end|>
    assert sft_stop_token_id(tok) == tok.convert_tokens_to_ids("<|im_end|>")
    plain = make_tiny_tokenizer(chat_template=False)
    assert sft_stop_token_id(plain) == plain.eos_token_id


def test_hh_examples_complete_the_dialogue_with_the_chosen_final_turn(tiny_tokenizer):
    from rlaif_gym.data import load_hh

    records = get_task("helpful").load_prompts(split="sample")
    pairs = load_hh("helpful", split="sample")
    (ex,) = build_examples("helpful", records[:1], tiny_tokenizer, max_prompt_tokens=4096,
                           max_completion_tokens=10_000)
    body = ex.input_ids[ex.prompt_len:-1]
    assert tiny_tokenizer.decode(body) == pairs[0].chosen.strip()
    assert "Human" not in tiny_tokenizer.decode(body)[:10]


def test_references_too_long_are_cut_without_a_stop_token(tldr_records, tiny_tokenizer):
    (ex,) = build_examples("tldr", tldr_records[:1], tiny_tokenizer, max_prompt_tokens=128,
                           max_completion_tokens=5)
    assert ex.completion_len == 5 and ex.completion_truncated
    assert sft_stop_token_id(tiny_tokenizer) not in ex.input_ids[ex.prompt_len:]


def test_split_never_uses_excluded_ids_and_is_seeded(tldr_records):
    excluded = seeded_eval_ids(tldr_records, 10, seed=0)
    split = split_records(tldr_records, exclude_ids=excluded, heldout_n=5, seed=1)
    train = {r.id for r in split.train}
    held = {r.id for r in split.heldout}
    assert len(train) == 15 and len(held) == 5
    assert not (train & held) and not (train & set(excluded)) and not (held & set(excluded))
    again = split_records(tldr_records, exclude_ids=excluded, heldout_n=5, seed=1)
    assert [r.id for r in again.heldout] == [r.id for r in split.heldout]
    assert split_records(tldr_records, exclude_ids=excluded, heldout_n=5,
                         max_train=3).to_json()["train_ids"].__len__() == 3


def test_seeded_eval_ids_are_the_prompts_evaluate_samples(tldr_records):
    from rlaif_gym.pipelines.evaluate import load_eval_prompts

    prompts, _ = load_eval_prompts("tldr", n=7, split="sample", seed=3)
    assert seeded_eval_ids(tldr_records, 7, seed=3) == [p.id for p in prompts]


@pytest.mark.parametrize("kwargs, match", [
    ({"heldout_ids": ["nope"]}, "not in the data"),
    ({"heldout_ids": ["EXCLUDED"]}, "also excluded"),
    ({"heldout_n": -1}, "heldout_n"),
    ({"heldout_n": 30}, "no training records left"),
])
def test_split_rejects_bad_held_out_choices(tldr_records, kwargs, match):
    excluded = [tldr_records[0].id]
    if kwargs.get("heldout_ids") == ["EXCLUDED"]:
        kwargs = {"heldout_ids": excluded}
    with pytest.raises(ValueError, match=match):
        split_records(tldr_records, exclude_ids=excluded, **kwargs)


# =========================================================================== sampling


def test_sampling_matches_rlaif_gym_evaluate_completions(tldr_records):
    from rlaif_gym.pipelines.evaluate import PolicyRef, generate_completions

    prompts = list(tldr_records[:5])
    rows = generate_completions(PolicyRef("p", TINY, TINY), "tldr", prompts, max_new_tokens=12,
                                max_prompt_tokens=128, temperature=0.9, seed=4, batch_size=3)
    model = load_causal_lm(TINY)
    samples, _ = sample_completions(model, load_tokenizer(TINY), "tldr", prompts,
                                    max_new_tokens=12, max_prompt_tokens=128, temperature=0.9,
                                    seed=4, batch_size=3)
    assert [s.text for s in samples] == [r["completion"] for r in rows]
    assert [s.body_ids.size for s in samples] == [r["tokens"] for r in rows]
    assert [not s.stopped for s in samples] == [r["length_limit"] for r in rows]


def test_a_view_at_a_smaller_limit_equals_a_run_at_that_limit_within_a_batch(tldr_records):
    model = load_causal_lm(TINY)
    with torch.no_grad():  # make stopping likely so that both kinds of ending occur
        model.lm_head.weight[258] += 0.6
    tok = load_tokenizer(TINY)
    prompts = list(tldr_records[:8])
    kwargs = dict(max_prompt_tokens=128, temperature=1.0, seed=0, batch_size=8)
    long, decode = sample_completions(model, tok, "tldr", prompts, max_new_tokens=16, **kwargs)
    short, _ = sample_completions(model, tok, "tldr", prompts, max_new_tokens=6, **kwargs)
    views = [s.at_limit(6, decode) for s in long]
    assert [v.stopped for v in views] == [s.stopped for s in short]
    assert any(v.stopped for v in views) and not all(v.stopped for v in views)
    assert [v.text for v in views] == [s.text for s in short]
    assert [v.body_ids.tolist() for v in views] == [s.body_ids.tolist() for s in short]
    with pytest.raises(ValueError):
        long[0].at_limit(17, decode)


# =========================================================================== training runs


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tldr_records):
    out = tmp_path_factory.mktemp("sft") / "run"
    excluded = seeded_eval_ids(tldr_records, 6, seed=0)
    result = train_sft(tiny_config(out, exclude_ids=excluded))
    return result, excluded


def test_train_sft_saves_a_policy_that_load_causal_lm_loads(sft_run, tldr_records):
    result, _ = sft_run
    assert result.policy_dir == result.out_dir / "policy"
    policy = load_causal_lm(result.policy_dir)
    start = load_causal_lm(TINY)
    assert not torch.equal(policy.lm_head.weight, start.lm_head.weight)
    tok = load_tokenizer(result.policy_dir)
    task = get_task("tldr")
    assert task.render_prompt(tldr_records[0], tok, 128) == \
        task.render_prompt(tldr_records[0], load_tokenizer(TINY), 128)
    samples, _ = sample_completions(policy, tok, "tldr", tldr_records[:2], max_new_tokens=4,
                                    max_prompt_tokens=128)
    assert len(samples) == 2


def test_train_sft_lowers_the_heldout_loss(sft_run):
    result, _ = sft_run
    assert result.heldout_loss_after < result.heldout_loss_before
    assert result.metrics["training"]["updates"] == 2 * 5  # 20 prompts / 4 per update


def test_train_sft_never_trains_on_excluded_ids(sft_run):
    result, excluded = sft_run
    split = json.loads((result.out_dir / "split.json").read_text())
    assert not set(split["train_ids"]) & set(excluded)
    assert not set(split["heldout_ids"]) & set(excluded)
    assert sorted(split["excluded_ids"]) == sorted(excluded)
    assert len(split["train_ids"]) == 30 - 6 - 4
    assert result.metrics["data"]["train"] == 20 and result.metrics["data"]["excluded"] == 6


def test_train_sft_reports_stop_rates_lengths_rouge_and_references(sft_run):
    result, _ = sft_run
    m = json.loads((result.out_dir / "metrics.json").read_text())
    assert m == result.metrics and m["finished"]
    for phase in ("before", "after"):
        for limit in (6, 12):
            entry = m["samples"][phase][f"max_new_tokens={limit}"]
            assert 0.0 <= entry["stop_rate"]["rate"] <= 1.0 and entry["stop_rate"]["n"] == 4
            assert 0 <= entry["length"]["mean_tokens"] <= limit
            assert {"fmeasure", "ci_low", "ci_high"} <= set(entry["rouge_l"])
            assert "mean_lcs_ratio" in entry["copy_overlap"]
    assert m["references"]["length"]["mean_tokens"] > 0
    assert m["samples"]["settings"]["temperature"] == 0.9
    held = [e for e in m["log_history"] if "heldout_loss" in e]
    assert [e["step"] for e in held] == [0, 5, 10]
    rows = [json.loads(line) for line in (result.out_dir / "samples.jsonl").open()]
    assert [r["phase"] for r in rows].count("after") == 4
    assert (result.out_dir / "loss.png").stat().st_size > 0
    assert not (result.out_dir / "checkpoints").exists()


def test_train_sft_refuses_to_overwrite_an_existing_folder(sft_run, tmp_path):
    result, _ = sft_run
    with pytest.raises(FileExistsError, match="resume"):
        train_sft(tiny_config(result.out_dir))
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        train_sft(tiny_config(user))
    with pytest.raises(FileExistsError, match="no SFT run"):
        train_sft(tiny_config(user, resume=True))
    assert [p.name for p in user.iterdir()] == ["notes.txt"]


def test_resuming_a_finished_run_returns_its_metrics_without_training(sft_run, monkeypatch):
    result, excluded = sft_run
    import rlaif_gym.models

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run must not load a model")

    monkeypatch.setattr(rlaif_gym.models, "load_causal_lm", no_model)
    again = train_sft(tiny_config(result.out_dir, exclude_ids=excluded, resume=True))
    assert again.metrics == result.metrics


def interrupt_at(step: int):
    """A trainer callback that raises KeyboardInterrupt at the end of update ``step``."""
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt
            return control

    return Interrupt()


def test_an_interrupted_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(
        tmp_path):
    settings = dict(heldout_n=0, eval_before=False, save_every=2, epochs=1, max_train=12,
                    batch_size=2)
    full = train_sft(tiny_config(tmp_path / "full", **settings))
    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny_config(tmp_path / "cut", **settings), callbacks=[interrupt_at(3)])
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "cut" / "policy").exists()
    with pytest.raises(ValueError, match="lr"):
        train_sft(tiny_config(tmp_path / "cut", resume=True, **{**settings, "lr": 1e-3}))
    resumed = train_sft(tiny_config(tmp_path / "cut", resume=True, **settings))
    assert resumed.metrics["training"]["updates"] == full.metrics["training"]["updates"] == 6
    a, b = load_causal_lm(full.policy_dir), load_causal_lm(resumed.policy_dir)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6, msg=name)
    steps = [e["step"] for e in resumed.metrics["log_history"] if "loss" in e]
    assert steps[-1] == 6


# =========================================================================== bad input


@pytest.mark.parametrize("overrides, match", [
    ({"task": "poems"}, "unknown task"),
    ({"epochs": 0}, "epochs"),
    ({"lr": -1.0}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"eval_max_new_tokens": ()}, "eval_max_new_tokens"),
    ({"warmup_ratio": 1.0}, "warmup_ratio"),
    ({"device": "tpu"}, "device"),
])
def test_bad_settings_are_refused_when_the_config_is_built(tmp_path, overrides, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        tiny_config(tmp_path / "x", **overrides)


@pytest.mark.parametrize("overrides, match", [
    ({"heldout_ids": ["not-an-id"]}, "not in the data"),
    ({"max_prompt_tokens": 3}, "max_prompt_tokens"),
    ({"policy": "no-such-model"}, "no-such-model"),
])
def test_bad_data_or_policy_fail_before_a_model_is_loaded(tmp_path, monkeypatch, overrides,
                                                          match):
    import rlaif_gym.models

    def no_model(*args, **kwargs):
        raise AssertionError("loaded a model before checking the input")

    monkeypatch.setattr(rlaif_gym.models, "load_causal_lm", no_model)
    with pytest.raises(ValueError, match=match):
        train_sft(tiny_config(tmp_path / "x", **overrides))


def test_excluding_every_prompt_fails_before_training(tmp_path, tldr_records):
    with pytest.raises(ValueError, match="no training records left"):
        train_sft(tiny_config(tmp_path / "x", exclude_ids=[r.id for r in tldr_records]))


def test_missing_trl_names_the_trl_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)
    with pytest.raises(ImportError, match=r"rlaif-gym\[trl\]"):
        train_sft(tiny_config(tmp_path / "x"))


def test_completion_nll_is_the_mean_over_completion_tokens(tldr_records, tiny_tokenizer):
    model = load_causal_lm(TINY)
    examples = build_examples("tldr", tldr_records[:3], tiny_tokenizer, max_prompt_tokens=100,
                              max_completion_tokens=8)
    loss, n = completion_nll(model, examples)
    assert n == sum(e.completion_len for e in examples)
    total = 0.0
    with torch.no_grad():
        for e in examples:
            ids = torch.tensor([e.input_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            targets = ids[0, e.prompt_len:]
            total -= float(logp[e.prompt_len - 1:-1].gather(1, targets[:, None]).sum())
    assert loss == pytest.approx(total / n, rel=1e-5)
    assert np.isfinite(loss)


def test_train_last_layers_trains_only_the_top_blocks(tmp_path):
    result = train_sft(tiny_config(tmp_path / "top", train_last_layers=1, heldout_n=0,
                                   epochs=1, max_train=8))
    start, tuned = load_causal_lm(TINY), load_causal_lm(result.policy_dir)
    changed = {name for (name, a), b in zip(start.named_parameters(), tuned.parameters(),
                                            strict=True) if not torch.equal(a, b)}
    assert changed and all(n.startswith(("model.layers.1.", "model.norm.")) for n in changed)
    assert result.metrics["training"]["trainable_parameters"] < \
        result.metrics["training"]["parameters"]


def test_train_last_layers_beyond_the_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="decoder blocks"):
        train_sft(tiny_config(tmp_path / "x", train_last_layers=3))


def test_a_run_stopped_after_training_resumes_without_training_again(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "r", heldout_n=2, epochs=1, max_train=4)
    first = train_sft(config)
    (first.out_dir / "metrics.json").unlink()  # as if it stopped while measuring

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    import trl

    monkeypatch.setattr(trl.SFTTrainer, "train", no_training)
    again = train_sft(tiny_config(tmp_path / "r", heldout_n=2, epochs=1, max_train=4,
                                  resume=True))
    assert again.metrics["finished"]
    assert again.metrics["heldout_loss"] == first.metrics["heldout_loss"]


def test_the_sft_command_trains_a_loadable_policy_and_never_an_evaluated_prompt(tmp_path,
                                                                                capsys):
    from agents.sft_data import seeded_eval_ids
    from rlaif_gym.cli import main
    from rlaif_gym.models import load_causal_lm
    from rlaif_gym.tasks import get_task

    out = tmp_path / "sft"
    code = main(["sft", "--task", "tldr", "--policy", "tiny-random", "--source", "sample",
                 "--exclude-eval-n", "5", "--heldout-n", "3", "--max-train", "6", "--epochs",
                 "1", "--max-prompt-tokens", "200", "--eval-max-new-tokens", "4",
                 "--threads", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    assert "held-out loss" in capsys.readouterr().out
    load_causal_lm(out / "policy")
    evaluated = set(seeded_eval_ids(get_task("tldr").load_prompts(split="sample"), 5, seed=0))
    split = json.loads((out / "split.json").read_text())
    assert not evaluated & set(split["train_ids"] + split["heldout_ids"])
    assert main(["sft", "--task", "tldr", "--policy", "tiny-random", "--source", "sample",
                 "--out", str(out)]) == 2  # never overwritten
