"""Benchmark: judging a group of k = 4 summaries of one post (all 6 pairs, both orders: 12
prompts) with the group's shared prefix run once, versus the same prompts judged without
group sharing.

Contenders, side by side in one process on the same judge object and the same posts:

* ``group``: :func:`rewards.pairwise.judge_pairs` (``share_prefix=True``), what the
  ``"pairwise"`` reward does: the 12 prompts share the chat header, preamble and post
  (everything up to the first summary), which runs ONCE through the judge's prefix cache
  (the part shared with the previous post comes from its memo); the 12 tails (two summaries
  and the ending) run from that cache in one batch.
* ``full``: the same 12 prompts scored whole (``share_prefix=False``,
  :meth:`TransformersJudge.next_token_logprobs`: left-padded batches of ``--batch-size``,
  sorted by length), i.e. without group sharing: every prompt runs its post again.
* ``per-pair`` (reported, not the target): the 6 pairs one after the other, each with its
  two orders from a prefix of its own (what labeling pair by pair with
  :func:`rewards.preference.label_pairs` does; the judge's memo still gives it the shared
  part of the previous pair's prefix).

Posts: TL;DR comparison posts that have exactly 4 distinct summaries (the OpenAI
comparisons of ``--data-dir``, split valid2). Per post the contenders run in an order that
alternates between posts; one post first, untimed, warms every path up. Reported: pairs/s
of each (6 pairs per post), the speed-ups group/full and group/per-pair (ratio of total
times, and the median of per-post ratios), tokens per prompt and in the shared prefix, and
the max abs difference of the soft labels (``p_ab``, ``p_ba``) between contenders: the same
token ids run on each path, so only float rounding differs.

Example (the issue's setting: Qwen 0.5B float32)::

    PYTHONPATH=. python benchmarks/bench_group_judge.py --judge qwen2.5-coder-0.5b-instruct \\
        --dtype float32 --posts 6 --threads 1 --out reports/group_judge.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _report import command_line, write_json  # benchmarks/ is first on sys.path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONTENDERS = ("group", "full", "per-pair")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--prompt", default="base", help="preamble variant")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--posts", type=int, default=6, help="timed posts (k = 4 summaries each)")
    p.add_argument("--batch-size", type=int, default=12,
                   help="judge sequences per forward (12: a group's prompts in one batch)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--skip-per-pair", action="store_true", help="time group and full only")
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA",
                                                        str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def groups_of_four(data_dir: str, n: int) -> list[tuple[str, list[str]]]:
    """``n + 1`` (post, 4 distinct summaries) from the TL;DR comparisons (first one: warm-up)."""
    from rlaif_gym.data import format_tldr_post, load_tldr_comparisons

    found: dict[str, list[str]] = {}
    post_text: dict[str, str] = {}
    for c in load_tldr_comparisons(split="valid2", data_dir=data_dir):
        key = c.post_id or c.post
        post_text[key] = format_tldr_post(c.subreddit, c.title, c.post)
        for s in c.summaries:
            if s.strip() and s not in found.setdefault(key, []):
                found[key].append(s)
    groups = [(post_text[k], v) for k, v in found.items() if len(v) == 4]
    if len(groups) < n + 1:
        raise SystemExit(f"only {len(groups)} posts with 4 summaries; lower --posts")
    return groups[: n + 1]


def per_pair(judge, template, context, items, pairs, prompt, shots):
    """The pairs one by one, each with its own shared prefix (label_pairs' path)."""
    from rewards.pairwise import GroupPreferences, judge_pairs

    parts = [judge_pairs(judge, template, context, items, [pair], prompt=prompt, shots=shots)
             for pair in pairs]
    return GroupPreferences(np.concatenate([p.pairs for p in parts]),
                            np.concatenate([p.p_ab for p in parts]),
                            np.concatenate([p.p_ba for p in parts]),
                            sum(p.judge_prompts for p in parts))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from rewards.judges.transformers_judge import TransformersJudge
    from rewards.pairwise import _chats, judge_pairs, pair_schedule
    from rewards.preference import shared_rendered_prefix
    from rewards.prompts import load_template

    torch.set_num_threads(args.threads)
    judge = TransformersJudge(args.judge, dtype=args.dtype, num_threads=args.threads,
                              batch_size=args.batch_size)
    template = load_template("tldr")
    groups = groups_of_four(args.data_dir, args.posts)
    pairs = pair_schedule(4)
    contenders = [c for c in CONTENDERS if not (args.skip_per_pair and c == "per-pair")]

    def run(name: str, context: str, items: list[str]):
        if name == "per-pair":
            return per_pair(judge, template, context, items, pairs, args.prompt, args.shots)
        return judge_pairs(judge, template, context, items, pairs, prompt=args.prompt,
                           shots=args.shots, share_prefix=name == "group")

    seconds: dict[str, list[float]] = {c: [] for c in contenders}
    labels: dict[str, list[np.ndarray]] = {c: [] for c in contenders}
    prompt_tokens, prefix_tokens = [], []
    for g, (context, items) in enumerate(groups):
        chats = _chats(template, context, items, pairs, args.prompt, False, args.shots)
        full = [judge.render_chat(c) for c in chats]
        prompt_tokens.append(float(np.mean([len(judge.encode(t)) for t in full])))
        prefix_tokens.append(len(judge.encode(shared_rendered_prefix(judge, chats, full))))
        order = contenders if g % 2 == 0 else contenders[::-1]
        for name in order:
            t0 = time.perf_counter()
            prefs = run(name, context, items)
            elapsed = time.perf_counter() - t0
            if g == 0:
                continue  # warm-up post
            seconds[name].append(elapsed)
            labels[name].append(np.stack([prefs.p_ab, prefs.p_ba]))
            assert prefs.judge_prompts == 12
        if g:
            print(f"post {g}: " + "  ".join(f"{c} {seconds[c][-1]:6.2f} s" for c in contenders)
                  + f"   ({prompt_tokens[-1]:.0f} tokens/prompt, shared prefix "
                  f"{prefix_tokens[-1]} tokens)", flush=True)

    n_pairs = len(pairs) * args.posts
    result: dict = {"command": command_line(__file__, argv), "judge": judge.name,
                    "dtype": judge.weights_dtype, "threads": torch.get_num_threads(),
                    "posts": args.posts, "k": 4, "pairs_per_post": len(pairs),
                    "prompts_per_post": 2 * len(pairs), "batch_size": args.batch_size,
                    "mean_tokens_per_prompt": float(np.mean(prompt_tokens[1:])),
                    "mean_shared_prefix_tokens": float(np.mean(prefix_tokens[1:])),
                    "seconds_per_post": seconds, "pairs_per_s": {}, "speedup": {},
                    "max_abs_label_diff": {}}
    for name in contenders:
        result["pairs_per_s"][name] = n_pairs / sum(seconds[name])
    reference = np.concatenate(labels["group"], axis=1)
    for name in contenders:
        if name == "group":
            continue
        result["speedup"][f"group/{name}"] = {
            "ratio_of_totals": sum(seconds[name]) / sum(seconds["group"]),
            "median_per_post": statistics.median(
                o / s for o, s in zip(seconds[name], seconds["group"], strict=True))}
        result["max_abs_label_diff"][f"group-{name}"] = float(
            np.abs(np.concatenate(labels[name], axis=1) - reference).max())
    print(f"{judge.name} {judge.weights_dtype}, {torch.get_num_threads()} thread(s), "
          f"{args.posts} posts x 6 pairs x 2 orders, batch {args.batch_size}")
    for name in contenders:
        print(f"  {name:9s} {result['pairs_per_s'][name]:6.3f} pairs/s")
    for key, value in result["speedup"].items():
        print(f"  speed-up {key}: {value['ratio_of_totals']:.2f}x (median per post "
              f"{value['median_per_post']:.2f}x)")
    for key, value in result["max_abs_label_diff"].items():
        print(f"  max |soft label {key}|: {value:.2e}")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
