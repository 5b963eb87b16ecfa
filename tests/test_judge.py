"""TransformersJudge on the tiny random model: padding, shared prefix, two-step, errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from rewards.judges import Judge, JudgeError, load_judge
from rewards.judges.transformers_judge import TransformersJudge

PREFIX = "<|im_start|>user\nYou are an expert rater.\n\nText - a post about cats and dogs\n"
SUFFIXES = [
    "Summary 1 - cats\nSummary 2 - dogs and more dogs<|im_end|>\n<|im_start|>assistant\nP=",
    "Summary 1 - dogs and more dogs\nSummary 2 - cats<|im_end|>\n<|im_start|>assistant\nP=",
    "Summary 1 - x\nSummary 2 - y<|im_end|>\n<|im_start|>assistant\nP=",
]
CANDIDATES = ["1", "2", "7"]


@pytest.fixture(scope="module")
def judge(tiny_model, tiny_tokenizer):
    return TransformersJudge(tiny_model, tiny_tokenizer, batch_size=8)


@pytest.fixture(scope="module")
def gpt2_judge(tiny_tokenizer):
    """A tiny GPT-2: absolute position embeddings, so wrong position ids change the output
    (RoPE models are blind to a constant position shift)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=259, n_positions=1024, n_embd=32, n_layer=2, n_head=4,
                        eos_token_id=258, pad_token_id=256, bos_token_id=None)
    return TransformersJudge(GPT2LMHeadModel(config).eval(), tiny_tokenizer)


def _reference_logprobs(judge: TransformersJudge, text: str, candidates: list[str]) -> np.ndarray:
    """Unpadded single forward pass, full-vocabulary log-softmax of the last position."""
    ids = torch.tensor([judge.encode(text)])
    with torch.no_grad():
        logits = judge.model(input_ids=ids).logits[0, -1].float()
    cand = judge.candidate_ids(candidates)
    return logits.log_softmax(-1)[cand].double().numpy()


def test_next_token_logprobs_are_full_vocabulary_log_softmax(judge):
    text = PREFIX + SUFFIXES[0]
    got = judge.next_token_logprobs([text], CANDIDATES)
    assert got.shape == (1, 3) and got.dtype == np.float64
    np.testing.assert_allclose(got[0], _reference_logprobs(judge, text, CANDIDATES), atol=1e-6)
    assert np.all(got <= 0)


@pytest.mark.parametrize("which", ["judge", "gpt2_judge"])
def test_left_padded_batch_equals_unbatched(which, request):
    judge = request.getfixturevalue(which)
    prompts = [PREFIX + s for s in SUFFIXES] + ["short prompt", PREFIX]
    batched = judge.next_token_logprobs(prompts, CANDIDATES)
    single = np.stack([judge.next_token_logprobs([p], CANDIDATES)[0] for p in prompts])
    assert np.abs(batched - single).max() < 1e-5


@pytest.mark.parametrize("which", ["judge", "gpt2_judge"])
@pytest.mark.parametrize("batch_size", [8, 2])  # 2: several suffix chunks from cache copies
def test_shared_prefix_path_equals_plain_path(which, batch_size, request):
    base = request.getfixturevalue(which)
    judge = TransformersJudge(base.model, base.tokenizer, batch_size=batch_size)
    shared = judge.next_token_logprobs_shared_prefix(PREFIX, SUFFIXES, CANDIDATES)
    plain = judge.next_token_logprobs([(PREFIX, s) for s in SUFFIXES], CANDIDATES)
    assert shared.shape == (3, 3)
    assert np.abs(shared - plain).max() < 1e-4


@contextlib.contextmanager
def _forward_shapes(model: torch.nn.Module) -> Iterator[list[tuple[int, int]]]:
    """The ``input_ids`` shape ``(rows, tokens)`` of every forward of ``model`` inside the
    block, in order."""
    shapes: list[tuple[int, int]] = []

    def record(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None:
            shapes.append(tuple(ids.shape))

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield shapes
    finally:
        hook.remove()


def _prefix_tokens_run(judge: TransformersJudge, prefix: str) -> int:
    """Tokens the prefix forward of one shared-prefix call runs (batch 1)."""
    with _forward_shapes(judge.model) as shapes:
        judge.next_token_logprobs_shared_prefix(prefix, SUFFIXES[:2], CANDIDATES)
    return next(n for rows, n in shapes if rows == 1)


@pytest.mark.parametrize("which", ["judge", "gpt2_judge"])
def test_next_prefix_runs_only_past_the_tokens_it_shares_with_the_last_one(which, request):
    base = request.getfixturevalue(which)
    judge = TransformersJudge(base.model, base.tokenizer)
    first = PREFIX
    second = PREFIX.replace("cats and dogs", "a long walk in the rain")
    common = 0
    for a, b in zip(judge.encode(first), judge.encode(second), strict=False):
        if a != b:
            break
        common += 1
    assert 10 < common < len(judge.encode(second))
    assert _prefix_tokens_run(judge, first) == len(judge.encode(first))
    assert _prefix_tokens_run(judge, second) == len(judge.encode(second)) - common
    assert _prefix_tokens_run(judge, second) == 1  # the same prefix again: one token runs
    for prefix in (first, second, "Other header\n" + first):  # memo, diverging, no overlap
        shared = judge.next_token_logprobs_shared_prefix(prefix, SUFFIXES, CANDIDATES)
        plain = judge.next_token_logprobs([(prefix, s) for s in SUFFIXES], CANDIDATES)
        assert np.abs(shared - plain).max() < 1e-4


def test_prefix_reuse_can_be_switched_off_or_cleared(judge):
    off = TransformersJudge(judge.model, judge.tokenizer, reuse_prefix=False)
    n = len(off.encode(PREFIX))
    assert _prefix_tokens_run(off, PREFIX) == n == _prefix_tokens_run(off, PREFIX)
    on = TransformersJudge(judge.model, judge.tokenizer)
    assert _prefix_tokens_run(on, PREFIX) == n
    on.clear_prefix_cache()
    assert _prefix_tokens_run(on, PREFIX) == n


def test_segments_are_tokenized_separately_and_concatenated(judge):
    assert judge.encode(("ab", "c")) == judge.encode("ab") + judge.encode("c")


def test_two_step_reads_both_positions_of_one_forward(judge):
    prompts = [PREFIX + s for s in SUFFIXES[:2]]
    first, second = judge.next_token_logprobs_two_step(prompts, CANDIDATES, "1", ["0", "5"])
    np.testing.assert_allclose(first, judge.next_token_logprobs(prompts, CANDIDATES), atol=1e-5)
    expected_second = judge.next_token_logprobs([(p, "1") for p in prompts], ["0", "5"])
    np.testing.assert_allclose(second, expected_second, atol=1e-5)
    assert second.shape == (2, 2)


def test_multi_token_candidate_raises(judge):
    assert not judge.is_single_token("10")  # byte tokenizer: "1", "0"
    assert judge.is_single_token("1")
    with pytest.raises(JudgeError, match="'10' is 2 tokens"):
        judge.next_token_logprobs([PREFIX], ["1", "10"])


def test_empty_prompt_raises(judge):
    with pytest.raises(JudgeError, match="empty prompt"):
        judge.next_token_logprobs([""], ["1"])
    with pytest.raises(TypeError):
        judge.next_token_logprobs([42], ["1"])


def test_render_uses_chat_template_and_prefix(judge):
    text = judge.render([{"role": "user", "content": "hi"}], "Answer=")
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nAnswer="


def test_render_without_chat_template_is_plain_text(tiny_model):
    from rlaif_gym.testing import make_tiny_tokenizer

    judge = TransformersJudge(tiny_model, make_tiny_tokenizer(chat_template=False))
    assert judge.render([{"role": "user", "content": "hi"}], "Answer=") == "hi\nAnswer="


def test_greedy_generation_is_deterministic_and_batch_independent(judge):
    prompts = [PREFIX + SUFFIXES[0], "hello"]
    batched = judge.generate(prompts, max_new_tokens=5)
    assert batched == [judge.generate([p], max_new_tokens=5)[0] for p in prompts]
    assert all(isinstance(t, str) for t in batched)
    with pytest.raises(ValueError, match="max_new_tokens"):
        judge.generate(prompts, max_new_tokens=0)


def _follow(i: int, generated: str) -> str:
    """A continuation that depends on the index and on the generated text."""
    return f"{generated[:7]}\nP{i}="


@pytest.mark.parametrize("which", ["judge", "gpt2_judge"])
@pytest.mark.parametrize("batch_size", [8, 2])
def test_generate_and_score_from_the_decoding_cache_equals_the_two_call_path(
        which, batch_size, request, monkeypatch):
    base = request.getfixturevalue(which)
    judge = TransformersJudge(base.model, base.tokenizer, batch_size=batch_size)
    prompts = [PREFIX + s for s in SUFFIXES] + ["hello"]  # different lengths: left padding
    ref_texts, ref = Judge.generate_and_score(judge, prompts, 6, _follow, CANDIDATES)

    def no_full_forward(*args, **kwargs):
        raise AssertionError("the prompts were run again instead of using the cache")

    monkeypatch.setattr(judge, "_last_logprobs", no_full_forward)
    texts, cached = judge.generate_and_score(prompts, 6, _follow, CANDIDATES)
    monkeypatch.undo()
    assert texts == ref_texts == judge.generate(prompts, 6)
    assert cached.shape == (4, 3)
    assert np.abs(cached - ref).max() < 1e-4


@pytest.mark.parametrize("which", ["judge", "gpt2_judge"])
@pytest.mark.parametrize("batch_size", [8, 3])
@pytest.mark.parametrize("reuse_prefix", [False, True])
def test_generation_prompts_sharing_a_prefix_run_it_once_with_the_same_results(
        which, batch_size, reuse_prefix, request):
    base = request.getfixturevalue(which)
    judge = TransformersJudge(base.model, base.tokenizer, batch_size=batch_size,
                              reuse_prefix=reuse_prefix)
    other = PREFIX.replace("cats and dogs", "the weather in a small town")
    # two "pairs" (both orders each) and a prompt sharing nothing: groups of 2, 2 and 1
    prompts = [PREFIX + SUFFIXES[0], PREFIX + SUFFIXES[1], other + SUFFIXES[1],
               other + SUFFIXES[2], "hello there"]
    ref_texts, ref = Judge.generate_and_score(judge, prompts, 6, _follow, CANDIDATES)
    with _forward_shapes(judge.model) as shapes:
        texts, got = judge.generate_and_score(prompts, 6, _follow, CANDIDATES)
    prefix_runs = [n for rows, n in shapes if rows == 1 and n > 1]
    assert texts == ref_texts == judge.generate(prompts, 6)
    assert np.abs(got - ref).max() < 1e-4
    first, second = judge.encode(PREFIX), judge.encode(other)
    assert len(prefix_runs) == 3  # one prefix run per group, not per prompt
    assert prefix_runs[0] >= len(first)
    if reuse_prefix:  # the template part the two groups share ran once
        from rewards.judges.transformers_judge import _common_prefix_len, _shared_prefix_groups

        groups = _shared_prefix_groups([judge.encode(p) for p in prompts], 16)
        assert prefix_runs[1] == groups[1][0] - _common_prefix_len(first, second)
    else:
        assert prefix_runs[1] >= len(second)


@pytest.mark.parametrize("which", ["judge", "gpt2_judge"])
@pytest.mark.parametrize("buckets", [True, False])
def test_generation_suffixes_run_in_length_buckets_not_padded_to_the_longest(which, buckets,
                                                                             request):
    """Prompts whose own suffixes differ a lot in length: the suffix forward runs far fewer
    tokens than rows x longest suffix, with the texts and scores of the plain path."""
    base = request.getfixturevalue(which)
    judge = TransformersJudge(base.model, base.tokenizer)
    judge.suffix_buckets = buckets
    short, long = "Summary 1 - a\nSummary 2 - b\nP=", "Summary 1 - " + "words " * 60 + "\nP="
    prompts = [PREFIX + short, PREFIX + long, PREFIX + short.replace("a", "c"),
               PREFIX + long.replace("words", "other")]
    ref_texts, ref = Judge.generate_and_score(judge, prompts, 5, _follow, CANDIDATES)
    with _forward_shapes(judge.model) as shapes:
        texts, got = judge.generate_and_score(prompts, 5, _follow, CANDIDATES)
    batches = [(rows, n) for rows, n in shapes if rows > 1 and n > 1]
    assert texts == ref_texts == judge.generate(prompts, 5)
    assert np.abs(got - ref).max() < 1e-4
    rows, width = batches[0]  # the first suffix forward: the short suffixes only (buckets)
    if buckets:
        assert rows == 2 and width < len(judge.encode(long)) / 4
    else:
        assert rows == 4 and width > len(judge.encode(long)) / 2


def test_length_buckets_cap_padding_and_cover_every_row():
    from rewards.judges.transformers_judge import _length_buckets

    assert _length_buckets([]) == []
    assert _length_buckets([3, 5, 10, 18]) == [(0, 4)]  # short ones: slack keeps one run
    lengths = [10, 20, 40, 45, 50, 100, 120, 400]
    buckets = _length_buckets(lengths)
    assert buckets == [(0, 2), (2, 5), (5, 7), (7, 8)]
    assert [b[0] for b in buckets[1:]] == [b[1] for b in buckets[:-1]]
    with pytest.raises(ValueError, match="sorted"):
        _length_buckets([5, 3])


def test_shared_prefix_groups_keep_pairs_together_and_a_token_after_each_prefix():
    from rewards.judges.transformers_judge import _shared_prefix_groups

    a = list(range(40))
    pairs = [a + [100], a + [101], a[:20] + [7] * 30, a[:20] + [7] * 30 + [5], [9, 9]]
    assert _shared_prefix_groups(pairs, 16) == [(40, [0, 1]), (49, [2, 3]), (1, [4])]
    assert _shared_prefix_groups([a, a], 16) == [(39, [0, 1])]  # identical: one token each
    assert _shared_prefix_groups([a, a[:10] + [1]], 16) == [(39, [0]), (10, [1])]


def test_generate_and_score_without_a_croppable_cache_runs_the_prompts_again(judge,
                                                                             monkeypatch):
    prompts = [PREFIX + SUFFIXES[0], "hello"]
    ref_texts, ref = Judge.generate_and_score(judge, prompts, 4, _follow, CANDIDATES)
    greedy = judge._greedy
    monkeypatch.setattr(judge, "_greedy", lambda inputs, n, keep_cache: (
        greedy(inputs, n, keep_cache=False)[0], object(), greedy(inputs, n, False)[2]))
    texts, got = judge.generate_and_score(prompts, 4, _follow, CANDIDATES)
    assert texts == ref_texts and np.abs(got - ref).max() < 1e-4
    with pytest.raises(ValueError, match="max_new_tokens"):
        judge.generate_and_score(prompts, 0, _follow, CANDIDATES)


def test_load_judge_backends():
    judge = load_judge("tiny-random", batch_size=2)
    assert isinstance(judge, Judge) and judge.name == "tiny-random"
    assert load_judge(judge) is judge
    with pytest.raises(TypeError, match="base_urls"):
        load_judge("tiny-random", backend="openai")
    with pytest.raises(ValueError, match="transformers"):
        load_judge("tiny-random", backend="onnx")


def test_model_object_requires_tokenizer(tiny_model):
    with pytest.raises(TypeError, match="tokenizer"):
        TransformersJudge(tiny_model)


@pytest.fixture(scope="module")
def bf16_model():
    from rlaif_gym.testing import make_tiny_causal_lm

    return make_tiny_causal_lm(seed=1).to(torch.bfloat16)


def test_bf16_candidate_logits_are_recomputed_in_float32(bf16_model, tiny_tokenizer):
    judge = TransformersJudge(bf16_model, tiny_tokenizer)
    assert judge._exact_head
    text = PREFIX + SUFFIXES[0]
    got = judge.next_token_logprobs([text], CANDIDATES)[0]
    ids = torch.tensor([judge.encode(text)])
    cand = judge.candidate_ids(CANDIDATES)
    with torch.no_grad():
        hidden = bf16_model.model(input_ids=ids).last_hidden_state[0, -1]
        logits = bf16_model(input_ids=ids).logits[0, -1].float()
        exact = hidden.float() @ bf16_model.lm_head.weight[cand].float().T
    logits[cand] = exact
    np.testing.assert_allclose(got, (exact - logits.logsumexp(-1)).numpy(), atol=1e-6)
    rounded = TransformersJudge(bf16_model, tiny_tokenizer, exact_logits=False)
    assert not rounded._exact_head
    assert np.abs(rounded.next_token_logprobs([text], CANDIDATES)[0] - got).max() < 0.05
    # shared-prefix and two-step paths use the same float32 head
    shared = judge.next_token_logprobs_shared_prefix(PREFIX, SUFFIXES[:1], CANDIDATES)[0]
    assert np.abs(shared - got).max() < 0.05


def test_exact_logits_fall_back_when_the_model_rescales_its_logits(tiny_tokenizer):
    from transformers import LlamaForCausalLM

    from rlaif_gym.testing import make_tiny_causal_lm

    class ScaledLogits(LlamaForCausalLM):
        def forward(self, *args, **kwargs):  # like soft-capping: logits != lm_head(hidden)
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 3.0
            return out

    base = make_tiny_causal_lm(seed=2)
    model = ScaledLogits(base.config)
    model.load_state_dict(base.state_dict())
    model = model.to(torch.bfloat16).eval()
    judge = TransformersJudge(model, tiny_tokenizer, exact_logits=True)
    text = PREFIX + SUFFIXES[1]
    got = judge.next_token_logprobs([text], CANDIDATES)[0]
    assert not judge._exact_head  # detected the mismatch and switched off
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([judge.encode(text)])).logits[0, -1].float()
    expected = (ref.log_softmax(-1)[judge.candidate_ids(CANDIDATES)]).double().numpy()
    assert np.abs(judge.next_token_logprobs([text], CANDIDATES)[0] - expected).max() < 1e-5
    assert np.isfinite(got).all()


def test_scoring_after_generation_keeps_the_generated_tokens_and_runs_only_the_rest(judge):
    """A rationale that re-tokenizes to the generated tokens stays in the decoding's cache:
    only the ending runs, with the scores of the two-call path."""
    import copy

    model = copy.deepcopy(judge.model)  # a head that emits ASCII bytes only, so the decoded
    with torch.no_grad():  # text re-tokenizes to the same ids (byte-level tokenizer)
        model.lm_head.weight[94:] = 0.0  # ids 0-93: the printable ASCII bytes
    judge = TransformersJudge(model, judge.tokenizer)
    prompts = [PREFIX + SUFFIXES[0], PREFIX + SUFFIXES[1], "hello"]

    def whole(i: int, generated: str) -> str:  # the rationale, then the ending
        return f"{generated}\nP="

    ref_texts, ref = Judge.generate_and_score(judge, prompts, 8, whole, CANDIDATES)
    widths: dict[bool, list[int]] = {True: [], False: []}
    for reuse in (True, False):
        judge.reuse_generated = reuse
        judge.clear_prefix_cache()
        with _forward_shapes(judge.model) as shapes:
            texts, got = judge.generate_and_score(prompts, 8, whole, CANDIDATES)
        widths[reuse] = [n for _, n in shapes]
        assert texts == ref_texts
        assert np.abs(got - ref).max() < 1e-4
    longest = max(len(judge.encode(whole(0, t))) for t in ref_texts)
    assert widths[False][-1] >= longest > 4  # the scoring forward: whole continuations
    assert widths[True][-1] <= len(judge.encode("\nP=")) + 1  # only the ending ran


def test_growing_cache_layer_appends_in_place_like_torch_cat():
    from rewards.judges.transformers_judge import _growing_layer_class

    torch.manual_seed(0)
    k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    layer = _growing_layer_class()(k, v, room=4)
    buffer = layer.keys.data_ptr()
    step = [torch.randn(3, 2, 1, 4) for _ in range(2)]
    keys, values = layer.update(step[0], step[1])
    assert keys.data_ptr() == buffer  # written in place, no new tensor
    assert torch.equal(keys, torch.cat([k, step[0]], dim=-2))
    assert torch.equal(values, torch.cat([v, step[1]], dim=-2))
    layer.crop(-2)  # back to 4 positions: the next update overwrites the cut ones
    keys, _ = layer.update(step[1], step[0])
    assert keys.data_ptr() == buffer and torch.equal(keys, torch.cat([k[:, :, :4], step[1]], -2))
    more = torch.randn(3, 2, 6, 4)  # beyond the room: falls back to torch.cat, same contents
    keys, _ = layer.update(more, more)
    assert keys.data_ptr() != buffer and keys.shape[-2] == 11
    assert torch.equal(keys[:, :, 5:], more)
    layer.batch_select_indices(torch.tensor([2, 0]))  # a new tensor: appends by cat from now
    keys, _ = layer.update(step[0][:2], step[0][:2])
    assert keys.shape == (2, 2, 12, 4) and torch.equal(keys[:, :, -1:], step[0][:2])
    parts = _growing_layer_class()([k[:1], k[1:]], [v[:1], v[1:]], room=1)  # along the batch
    assert torch.equal(parts.keys, k) and torch.equal(parts.values, v) and parts.room() == 1


def test_decoding_into_preallocated_cache_gives_the_same_texts_and_scores(judge):
    prompts = [PREFIX + SUFFIXES[0], PREFIX + SUFFIXES[1], PREFIX + SUFFIXES[2]]
    results = {}
    for preallocate in (True, False):
        judge.preallocate = preallocate
        judge.clear_prefix_cache()
        results[preallocate] = judge.generate_and_score(prompts, 7, _follow, CANDIDATES)
    judge.preallocate = True
    assert results[True][0] == results[False][0] == judge.generate(prompts, 7)
    assert np.abs(results[True][1] - results[False][1]).max() < 1e-5


def _reference_continuation_logprob(judge: TransformersJudge, prefix: str, cont: str) -> float:
    """One unpadded forward over prefix + continuation: the continuation tokens' summed
    full-vocabulary log-probabilities."""
    head, tail = judge.encode(prefix), judge.encode(cont)
    with torch.no_grad():
        logits = judge.model(input_ids=torch.tensor([head + tail])).logits[0].float()
    logp = logits.log_softmax(-1)[len(head) - 1:-1]
    return float(logp.gather(-1, torch.tensor(tail)[:, None]).sum())


@pytest.mark.parametrize("which", ["judge", "gpt2_judge"])
@pytest.mark.parametrize("batch_size", [8, 2])  # 2: several chunks from copies of the cache
def test_continuation_logprobs_equal_one_unpadded_forward_per_continuation(which, batch_size,
                                                                          request):
    base = request.getfixturevalue(which)
    judge = TransformersJudge(base.model, base.tokenizer, batch_size=batch_size)
    conts = [" cats\n", " dogs and more dogs, all of them\n", " x", " a b c d e f g\n"]
    for prefix in (PREFIX, PREFIX + "again "):  # the second call starts from the memo
        got = judge.continuation_logprobs(prefix, conts)
        want = [_reference_continuation_logprob(judge, prefix, c) for c in conts]
        assert got.shape == (4,) and got.dtype == np.float64 and np.all(got <= 0)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_continuation_after_a_one_token_prefix_runs_without_a_cache(judge):
    got = judge.continuation_logprobs("T", [" cats\n", " dogs and more\n"])
    want = [_reference_continuation_logprob(judge, "T", c) for c in (" cats\n", " dogs and more\n")]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_continuation_logprobs_reject_an_empty_continuation(judge):
    assert judge.continuation_logprobs(PREFIX, []).shape == (0,)
    with pytest.raises(JudgeError, match="empty prompt"):
        judge.continuation_logprobs(PREFIX, ["fine", ""])
