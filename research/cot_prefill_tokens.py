"""Prompt tokens a chain-of-thought labeling run prefills, before and after the two prompt-side
savings of ``TransformersJudge.generate_and_score`` (tokenizer only, no model, seconds).

Per labeling step (``--batch-size`` pairs = 2 x that many prompts, as ``rlaif-gym label``
hands them to the judge), the prompts are grouped by shared prefix (both orders of a pair) as
the judge does, then counted:

* prefix tokens: each group's shared prefix in full, vs only the part after what it shares
  with the previous group's prefix (the prefix memo: chat header and preamble run once);
* suffix tokens: every prompt's own suffix (the two responses in its order and the ending)
  padded to the longest in the step (one forward), vs padded within length buckets
  (:func:`rewards.judges.transformers_judge._length_buckets`), next to the real count.

The third saving, keeping the rationale in the decoding's cache for scoring, depends on what
the model generates and is measured by ``bench_judge_batch.py --compare prefill`` instead.

Example::

    PYTHONPATH=. python research/cot_prefill_tokens.py --data-dir ../shared/data \\
        --out research/results/cot_prefill_tokens.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks._report import command_line, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def count_tokens(encoded: list[list[int]], pairs_per_step: int, min_shared: int = 16) -> dict:
    """Prefill token counts of ``encoded`` prompts (both orders of each pair, in order)."""
    from rewards.judges.transformers_judge import (
        _common_prefix_len,
        _length_buckets,
        _shared_prefix_groups,
    )

    prefix_full = prefix_memo = suffix_padded = suffix_buckets = suffix_real = 0
    last: list[int] | None = None
    for start in range(0, len(encoded), 2 * pairs_per_step):
        step = encoded[start:start + 2 * pairs_per_step]
        groups = _shared_prefix_groups(step, min_shared)
        for p, members in groups:
            ids = step[members[0]][:p]
            prefix_full += p
            prefix_memo += p - (min(_common_prefix_len(last, ids), p - 1) if last else 0)
            last = ids
        own = sorted(len(step[i]) - p for p, members in groups for i in members)
        suffix_real += sum(own)
        suffix_padded += len(own) * own[-1]
        suffix_buckets += sum((hi - lo) * own[hi - 1] for lo, hi in _length_buckets(own))
    before, after = prefix_full + suffix_padded, prefix_memo + suffix_buckets
    return {"prefix_tokens": prefix_full, "prefix_tokens_memo": prefix_memo,
            "suffix_tokens_padded": suffix_padded, "suffix_tokens_buckets": suffix_buckets,
            "suffix_tokens_real": suffix_real, "total_before": before, "total_after": after,
            "fewer_x": before / after}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--judge", default="qwen2.5-coder-1.5b-instruct", help="its tokenizer")
    p.add_argument("--tasks", nargs="+", default=["helpful", "harmless"])
    p.add_argument("--prompts", nargs="+", default=["base", "detailed"])
    p.add_argument("--limit", type=int, default=210, help="first N pairs (default 210)")
    p.add_argument("--batch-size", type=int, default=20, help="pairs per labeling step")
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA",
                                                        str(REPO.parent / "shared" / "data")))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    from rewards.preference import pair_problem
    from rewards.prompts import load_template, render_preference_messages
    from rlaif_gym.data import load_preference_pairs
    from rlaif_gym.models import load_tokenizer

    tok = load_tokenizer(args.judge)

    def encode(chat) -> list[int]:  # as TransformersJudge.render_chat + encode
        text = tok.apply_chat_template([dict(m) for m in chat.messages], tokenize=False,
                                       add_generation_prompt=True) + chat.assistant_prefix
        return tok(text, add_special_tokens=False)["input_ids"]

    rows = []
    for task in args.tasks:
        pairs = load_preference_pairs(task, data_dir=args.data_dir, limit=args.limit)
        pairs = [pair for pair in pairs if pair_problem(pair) is None]
        template = load_template(task)
        for prompt in args.prompts:
            encoded = [encode(render_preference_messages(template, pair.context, x, y,
                                                         prompt=prompt, cot=True, shots=0))
                       for pair in pairs for x, y in (pair.responses, pair.responses[::-1])]
            row = {"task": task, "prompt": prompt, "pairs": len(pairs),
                   "pairs_per_step": args.batch_size,
                   **count_tokens(encoded, args.batch_size)}
            rows.append(row)
            print(f"{task} {prompt}: {row['pairs']} pairs; prefix {row['prefix_tokens']} -> "
                  f"{row['prefix_tokens_memo']} (memo); own suffixes "
                  f"{row['suffix_tokens_padded']} padded to the longest -> "
                  f"{row['suffix_tokens_buckets']} in buckets (real "
                  f"{row['suffix_tokens_real']}); {row['fewer_x']:.2f}x fewer prompt tokens")
    if args.out:
        result = {"judge": args.judge, "rows": rows,
                  "command": command_line(__file__, argv)}
        write_json(args.out, result)
    return rows


if __name__ == "__main__":
    main()
