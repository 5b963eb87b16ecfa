"""Reward model: soft-label loss, training on a toy set, checkpoints, resume, split."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from rewards.preference import PreferenceLabel
from rewards.reward_model import (
    RM_META_FILE,
    TRAINER_STATE_FILE,
    RewardModel,
    RMExample,
    evaluate_pairwise,
    examples_from_human,
    examples_from_labels,
    soft_preference_loss,
    split_pairs,
    train_reward_model,
)
from rlaif_gym.data.records import PreferencePair

WORDS = ["cat", "dog", "tree", "house", "river", "car", "sun", "moon", "book", "lamp"]


def toy_pairs(n: int, seed: int = 0, start: int = 0) -> list[PreferencePair]:
    """Separable pairs: the preferred response ends with "good", the other with "bad";
    the preferred one is first on even ids."""
    rng = random.Random(seed)
    pairs = []
    for i in range(start, start + n):
        context = f"post {i}: " + " ".join(rng.choice(WORDS) for _ in range(6))
        good = " ".join(rng.choice(WORDS) for _ in range(3)) + " good"
        bad = " ".join(rng.choice(WORDS) for _ in range(3)) + " bad"
        choice = i % 2
        responses = (good, bad) if choice == 0 else (bad, good)
        pairs.append(PreferencePair(id=f"p{i}", task="tldr", context=context,
                                    responses=responses, human_choice=choice))
    return pairs


TRAIN_KW = dict(base="tiny-random", lr=3e-3, batch_size=8, max_length=192, seed=0,
                progress=False)


@pytest.fixture(scope="module")
def tiny_rm() -> RewardModel:
    return RewardModel.from_base("tiny-random", task="tldr", max_length=192, seed=0)


def state_of(rm: RewardModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in rm.model.state_dict().items()}


# -- loss ---------------------------------------------------------------------------------------


def test_soft_label_loss_equals_the_hand_computed_cross_entropy():
    r1, r2, p = [2.0, -1.0], [0.5, 1.0], [0.7, 0.2]

    def sig(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    by_hand = [-(pi * math.log(sig(a - b)) + (1 - pi) * math.log(sig(b - a)))
               for a, b, pi in zip(r1, r2, p, strict=True)]
    loss = soft_preference_loss(torch.tensor(r1, dtype=torch.float64),
                                torch.tensor(r2, dtype=torch.float64),
                                torch.tensor(p, dtype=torch.float64), reduction="none")
    assert loss.tolist() == pytest.approx(by_hand, rel=1e-12)
    # the same as cross-entropy between (p, 1-p) and softmax(r1, r2)
    logits = torch.tensor([r1, r2], dtype=torch.float64).T
    target = torch.tensor([p, [1 - x for x in p]], dtype=torch.float64).T
    ce = -(target * torch.log_softmax(logits, dim=-1)).sum(-1)
    assert loss.tolist() == pytest.approx(ce.tolist(), rel=1e-12)
    mean = soft_preference_loss(torch.tensor(r1), torch.tensor(r2), torch.tensor(p))
    assert float(mean) == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_hard_labels_reduce_to_the_bradley_terry_loss():
    r1 = torch.tensor([1.5, -0.3, 4.0], dtype=torch.float64)
    r2 = torch.tensor([0.2, 0.9, -2.0], dtype=torch.float64)
    first = soft_preference_loss(r1, r2, torch.ones(3, dtype=torch.float64), reduction="none")
    second = soft_preference_loss(r1, r2, torch.zeros(3, dtype=torch.float64), reduction="none")
    assert torch.allclose(first, -torch.nn.functional.logsigmoid(r1 - r2))
    assert torch.allclose(second, -torch.nn.functional.logsigmoid(r2 - r1))


def test_soft_label_loss_is_minimal_where_the_score_gap_matches_the_label():
    p = 0.8
    gaps = torch.linspace(-4, 4, 801, dtype=torch.float64)
    losses = soft_preference_loss(gaps, torch.zeros_like(gaps), torch.full_like(gaps, p),
                                  reduction="none")
    best = float(gaps[int(torch.argmin(losses))])
    assert best == pytest.approx(math.log(p / (1 - p)), abs=0.01)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_soft_label_loss_rejects_targets_outside_the_unit_interval(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soft_preference_loss(torch.zeros(1), torch.zeros(1), torch.tensor([bad]))


def test_examples_reject_targets_that_are_not_probabilities():
    with pytest.raises(ValueError, match="probability"):
        RMExample("x", "tldr", "c", ("a", "b"), target=float("nan"))


# -- encoding and scoring -----------------------------------------------------------------------


def test_sequence_is_the_chat_rendering_of_instruction_context_and_response(tiny_rm):
    ids = tiny_rm.token_ids("POST: hello", "a summary")
    text = tiny_rm.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user\nWrite a one-sentence TL;DR summary")
    assert text.endswith("POST: hello<|im_end|>\n<|im_start|>assistant\na summary<|im_end|>\n")


def test_long_context_is_cut_but_the_response_and_end_of_turn_are_kept(tiny_rm):
    ids = tiny_rm.token_ids("POST: " + "word " * 500, "the response")
    assert len(ids) <= tiny_rm.max_length
    assert tiny_rm.tokenizer.decode(ids).endswith("assistant\nthe response<|im_end|>\n")


def test_score_does_not_depend_on_padding_or_batch_companions(tiny_rm):
    alone = tiny_rm.score(["POST: short"], ["yes"])
    batched = tiny_rm.score(["POST: short", "POST: " + "long text " * 20],
                            ["yes", "a much longer response " * 2])
    assert alone.dtype == np.float64 and alone.shape == (1,)
    assert batched[0] == pytest.approx(alone[0], abs=1e-5)


def test_score_in_chunks_equals_one_forward_pass(tiny_rm):
    contexts = [f"POST: item {i}" for i in range(5)]
    responses = [f"response {i}" for i in range(5)]
    assert tiny_rm.score(contexts, responses, batch_size=2) == pytest.approx(
        tiny_rm.score(contexts, responses), abs=1e-5)


# -- training -----------------------------------------------------------------------------------


def test_training_on_a_separable_toy_set_raises_held_out_accuracy():
    train, test = toy_pairs(64), toy_pairs(32, seed=1, start=1000)
    untrained = RewardModel.from_base("tiny-random", task="tldr", max_length=192, seed=0)
    assert evaluate_pairwise(untrained, test).accuracy < 0.7  # the same init, before training
    result = train_reward_model(examples_from_human(train), epochs=3, eval_pairs=test,
                                **TRAIN_KW)
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    assert result.history[-1]["eval_accuracy"] >= 0.85
    assert result.history[-1]["eval_n"] == 32
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert evaluate_pairwise(result.model, test).accuracy == result.history[-1]["eval_accuracy"]


def test_training_is_deterministic_under_a_seed():
    examples = examples_from_human(toy_pairs(16))
    a = train_reward_model(examples, epochs=1, **TRAIN_KW)
    b = train_reward_model(examples, epochs=1, **TRAIN_KW)
    assert a.losses == b.losses
    sa, sb = state_of(a.model), state_of(b.model)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_gradient_accumulation_gives_the_gradient_of_one_large_batch():
    from rewards.reward_model import _train_step

    examples = examples_from_human(toy_pairs(8))
    grads = []
    for batches in ([examples], [examples[:4], examples[4:]], [examples[:3], examples[3:]]):
        rm = RewardModel.from_base("tiny-random", task="tldr", max_length=192, seed=0)
        optimizer = torch.optim.AdamW(rm.parameters(), lr=0.0)  # keep the weights
        loss = _train_step(rm, optimizer, batches, 0.0, 0, 0, None)
        grads.append(([p.grad.clone() for p in rm.parameters()], loss))
    (g_full, loss_full), *accumulated = grads
    for g, loss in accumulated:
        assert loss == pytest.approx(loss_full, rel=1e-5)  # the mean pair loss, not a sum
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(g, g_full,
                                                                              strict=True))
    result = train_reward_model(examples_from_human(toy_pairs(16)), epochs=1,
                                **{**TRAIN_KW, "batch_size": 4, "grad_accum": 2})
    assert result.step == 2


def test_save_and_load_round_trip_gives_identical_scores(tiny_rm, tmp_path):
    tiny_rm.meta["label_source"] = "ai"
    tiny_rm.save_pretrained(tmp_path / "rm")
    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    contexts = ["POST: one", "POST: two two"]
    responses = ["first", "second answer"]
    assert np.array_equal(loaded.score(contexts, responses), tiny_rm.score(contexts, responses))
    assert loaded.task.name == "tldr" and loaded.max_length == 192
    assert loaded.label_source == "ai" and loaded.meta["base"] == "tiny-random"


def test_checkpoint_metadata_records_base_task_source_progress_and_metrics(tmp_path):
    test = toy_pairs(8, seed=3, start=500)
    train_reward_model(examples_from_human(toy_pairs(16)), epochs=1, eval_pairs=test,
                       out_dir=tmp_path / "rm", label_source="human", **TRAIN_KW)
    meta = json.loads((tmp_path / "rm" / RM_META_FILE).read_text())
    assert meta["base"] == "tiny-random" and meta["task"] == "tldr"
    assert meta["label_source"] == "human" and meta["max_length"] == 192
    assert meta["epoch"] == 1 and meta["step"] == 2 and meta["complete"] is True
    assert meta["metrics"]["eval_n"] == 8 and 0 <= meta["metrics"]["eval_accuracy"] <= 1
    assert (tmp_path / "rm" / TRAINER_STATE_FILE).is_file()
    assert not (tmp_path / "rm" / ".next").exists()


def test_resume_after_an_interruption_mid_epoch_matches_an_uninterrupted_run(tmp_path):
    examples = examples_from_human(toy_pairs(32))  # 4 steps per epoch
    full = train_reward_model(examples, epochs=2, out_dir=tmp_path / "full", **TRAIN_KW)
    part = train_reward_model(examples, epochs=2, out_dir=tmp_path / "part", max_steps=3,
                              **TRAIN_KW)
    assert part.step == 3 and part.epochs_completed == 0
    assert json.loads((tmp_path / "part" / RM_META_FILE).read_text())["step"] == 3
    resumed = train_reward_model(examples, epochs=2, out_dir=tmp_path / "part", **TRAIN_KW)
    assert resumed.resumed_from_step == 3
    assert resumed.step == full.step == 8
    assert resumed.losses == full.losses
    sa, sb = state_of(full.model), state_of(resumed.model)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_with_more_epochs_continues_from_the_saved_epoch(tmp_path):
    examples = examples_from_human(toy_pairs(16))
    full = train_reward_model(examples, epochs=2, out_dir=tmp_path / "full", **TRAIN_KW)
    train_reward_model(examples, epochs=1, out_dir=tmp_path / "grow", **TRAIN_KW)
    grown = train_reward_model(examples, epochs=2, out_dir=tmp_path / "grow", **TRAIN_KW)
    assert grown.resumed_from_step == 2 and grown.losses == full.losses
    assert [m["epoch"] for m in grown.history] == [1, 2]
    sa, sb = state_of(full.model), state_of(grown.model)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_refuses_other_hyperparameters_or_data(tmp_path):
    examples = examples_from_human(toy_pairs(16))
    train_reward_model(examples, epochs=1, out_dir=tmp_path / "rm", **TRAIN_KW)
    with pytest.raises(ValueError, match="lr"):
        train_reward_model(examples, epochs=2, out_dir=tmp_path / "rm",
                           **{**TRAIN_KW, "lr": 1e-4})
    with pytest.raises(ValueError, match="examples differ"):
        train_reward_model(examples[:8], epochs=2, out_dir=tmp_path / "rm", **TRAIN_KW)


def test_a_finished_model_saved_without_training_state_keeps_its_weights_only(tmp_path):
    examples = examples_from_human(toy_pairs(16))
    result = train_reward_model(examples, epochs=1, out_dir=tmp_path / "rm",
                                keep_training_state=False, **TRAIN_KW)
    assert not (tmp_path / "rm" / TRAINER_STATE_FILE).exists()
    assert json.loads((tmp_path / "rm" / RM_META_FILE).read_text())["complete"] is True
    loaded = RewardModel.from_pretrained(tmp_path / "rm")
    contexts, responses = ["POST: a b c"], ["a summary"]
    assert np.array_equal(loaded.score(contexts, responses),
                          result.model.score(contexts, responses))
    with pytest.raises(FileExistsError, match="keep_training_state=False"):
        train_reward_model(examples, epochs=2, out_dir=tmp_path / "rm", **TRAIN_KW)


def test_a_run_stopped_before_the_end_keeps_its_training_state_either_way(tmp_path):
    examples = examples_from_human(toy_pairs(32))  # 4 steps per epoch
    train_reward_model(examples, epochs=1, out_dir=tmp_path / "rm", max_steps=2,
                       keep_training_state=False, **TRAIN_KW)
    assert (tmp_path / "rm" / TRAINER_STATE_FILE).is_file()
    resumed = train_reward_model(examples, epochs=1, out_dir=tmp_path / "rm",
                                 keep_training_state=False, **TRAIN_KW)
    assert resumed.resumed_from_step == 2 and resumed.step == 4
    assert not (tmp_path / "rm" / TRAINER_STATE_FILE).exists()


def test_existing_checkpoint_without_resume_is_not_overwritten(tmp_path):
    examples = examples_from_human(toy_pairs(8))
    train_reward_model(examples, epochs=1, out_dir=tmp_path / "rm", **TRAIN_KW)
    with pytest.raises(FileExistsError, match="resume"):
        train_reward_model(examples, epochs=1, out_dir=tmp_path / "rm", resume=False,
                           **TRAIN_KW)


def test_an_incomplete_save_is_discarded_and_a_complete_one_is_finished(tiny_rm, tmp_path):
    out = tiny_rm.save_pretrained(tmp_path / "rm")
    before = tiny_rm.score(["POST: x"], ["y"])
    staging = out / ".next"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"garbage")  # a crash before COMPLETE
    loaded = RewardModel.from_pretrained(out)
    assert not staging.exists() and np.array_equal(loaded.score(["POST: x"], ["y"]), before)

    other = RewardModel.from_base("tiny-random", task="tldr", max_length=192, seed=7)
    other.save_pretrained(tmp_path / "other")
    staging.mkdir()
    names = sorted(p.name for p in (tmp_path / "other").iterdir())
    for name in names:
        (staging / name).write_bytes((tmp_path / "other" / name).read_bytes())
    (staging / "COMPLETE").write_text(json.dumps(names))  # a crash after COMPLETE
    loaded = RewardModel.from_pretrained(out)
    assert not staging.exists()
    assert np.array_equal(loaded.score(["POST: x"], ["y"]), other.score(["POST: x"], ["y"]))


def test_loading_a_folder_without_metadata_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a reward model directory"):
        RewardModel.from_pretrained(tmp_path)


# -- labels and split ---------------------------------------------------------------------------


def make_label(pair: PreferencePair, p: float, task: str = "tldr") -> PreferenceLabel:
    return PreferenceLabel(id=pair.id, task=task, p_first=p, p_order_ab=p, p_order_ba=p,
                           human_choice=pair.human_choice, confidence=None, prompt="base",
                           cot=False, shots=0, judge="tiny-random")


def test_labels_are_joined_to_pairs_by_id_with_p_first_as_target():
    pairs = toy_pairs(4)
    labels = [make_label(pairs[2], 0.25), make_label(pairs[0], 0.9).to_dict(),
              make_label(PreferencePair("zz", "tldr", "c", ("a", "b")), 0.5)]
    joined = examples_from_labels(pairs, labels)
    assert [(e.id, e.target) for e in joined.examples] == [("p0", 0.9), ("p2", 0.25)]
    assert joined.pairs_without_label == 2 and joined.labels_without_pair == 1


def test_labels_of_another_task_are_refused():
    pairs = toy_pairs(2)
    with pytest.raises(ValueError, match="task"):
        examples_from_labels(pairs, [make_label(pairs[0], 0.5, task="helpful")])


def test_human_examples_have_hard_targets_from_the_human_choice():
    examples = examples_from_human(toy_pairs(4) + [PreferencePair("u", "tldr", "c", ("a", "b"))])
    assert [e.target for e in examples] == [1.0, 0.0, 1.0, 0.0]


def test_split_keeps_each_context_on_one_side_and_ignores_pair_order():
    pairs = [PreferencePair(f"q{i}", "tldr", f"post {i % 7}", ("a", "b"), 0) for i in range(40)]
    split = split_pairs(pairs, test_fraction=0.3, seed=5)
    side = {i: "test" for i in split.test} | {i: "train" for i in split.train}
    by_context: dict[str, set[str]] = {}
    for p in pairs:
        by_context.setdefault(p.context, set()).add(side[p.id])
    assert all(len(sides) == 1 for sides in by_context.values())
    assert sum("test" in s for s in by_context.values()) == round(0.3 * 7)
    shuffled = pairs[::-1]
    again = split_pairs(shuffled, test_fraction=0.3, seed=5)
    assert set(again.test) == set(split.test)


def test_split_file_round_trip(tmp_path):
    split = split_pairs(toy_pairs(10), test_fraction=0.2, seed=1)
    split.save(tmp_path / "split.json")
    from rewards.reward_model import PairSplit

    assert PairSplit.load(tmp_path / "split.json") == split


def test_split_on_the_real_tldr_comparisons_keeps_every_post_on_one_side(shared_data_dir):
    from rlaif_gym.data import load_preference_pairs, load_tldr_comparisons

    comparisons = load_tldr_comparisons(data_dir=shared_data_dir, source="local")
    pairs = load_preference_pairs("tldr", data_dir=shared_data_dir, source="local")
    split = split_pairs(pairs, test_fraction=0.2, seed=0)
    post_of = {c.id: c.post_id for c in comparisons}
    test_posts = {post_of[i] for i in split.test}
    train_posts = {post_of[i] for i in split.train}
    assert test_posts and train_posts and not test_posts & train_posts
    assert len(split.test) + len(split.train) == len(pairs)
