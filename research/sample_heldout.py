"""Sample one completion per held-out TL;DR post from several policies (for win rates).

The prompts are TL;DR posts ``--skip``, ``--skip + 1``, ... of ``--split`` (a training run
with ``--train-prompts K`` never sees posts ``K...``), or, with ``--split-file``, the posts
of the OpenAI comparison pairs on the TEST side of a reward-model split file
(``rlaif-gym train-rm`` writes ``split.json``), or with ``--comparison-posts`` every post of
the comparisons (none of them is a DOVE post, so none was an RL prompt). Each policy samples
with the same seed, temperature, lengths and prompt order, so policies differ only by their
weights.

Writes one JSON line per (policy, post): ``policy, prompt_id, context, completion,
n_tokens``. ``rlaif-gym``'s judges then compare the policies on the same posts.

    PYTHONPATH=. python research/sample_heldout.py --skip 400 --limit 100 \\
        --policy sft=smollm2-135m-instruct --policy rl=runs/x/checkpoint/policy \\
        --data-dir ../shared/data --out completions.jsonl --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from rewards.reward_model import PairSplit  # noqa: E402
from rlaif_gym.data import (
    format_tldr_post,  # noqa: E402
    load_tldr_comparisons,  # noqa: E402
)
from rlaif_gym.data.records import PromptRecord  # noqa: E402
from rlaif_gym.models import load_causal_lm, load_tokenizer  # noqa: E402
from rlaif_gym.tasks import get_task  # noqa: E402


def heldout_prompts(split: str, skip: int, split_file: str | None, data_dir: str | None,
                    limit: int | None, comparison_posts: bool = False) -> list[PromptRecord]:
    """The held-out prompts (see the module docstring), at most ``limit``."""
    if split_file is None and not comparison_posts:
        records = list(get_task("tldr").load_prompts(split, data_dir=data_dir, source="local"))
        if skip >= len(records):
            raise SystemExit(f"--skip {skip} leaves no prompt of the {len(records)} in {split!r}")
        records = records[skip:]
        return records[:limit] if limit else records
    test_ids = PairSplit.load(split_file).side("test") if split_file else None
    seen: dict[str, PromptRecord] = {}
    for c in load_tldr_comparisons(data_dir=data_dir, source="local"):
        if test_ids is not None and str(c.id) not in test_ids:
            continue
        text = format_tldr_post(c.subreddit, c.title, c.post)
        key = c.post_id or text
        seen.setdefault(key, PromptRecord(id=key, task="tldr", text=text))
    records = sorted(seen.values(), key=lambda r: r.id)
    return records[:limit] if limit else records


@torch.inference_mode()
def sample(spec: str, records: list[PromptRecord], *, device: str, max_prompt_tokens: int,
           max_new_tokens: int, temperature: float, seed: int, batch_size: int
           ) -> list[tuple[str, int]]:
    """(completion text, completion tokens) per record, sampled from the model ``spec``."""
    model = load_causal_lm(spec, device=device)
    tokenizer = load_tokenizer(spec)
    task = get_task("tldr")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[tuple[str, int]] = []
    torch.manual_seed(seed)
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        ids = [task.render_prompt(r, tokenizer, max_prompt_tokens) for r in chunk]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, row in enumerate(ids):
            input_ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        gen = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                             do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                             max_new_tokens=max_new_tokens, pad_token_id=pad)
        for row in gen[:, width:].tolist():
            stop = len(row)
            for j, t in enumerate(row):
                if t == tokenizer.eos_token_id:
                    stop = j
                    break
            out.append((tokenizer.decode(row[:stop], skip_special_tokens=True).strip(), stop))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="test", help="TL;DR post split (%(default)s)")
    p.add_argument("--skip", type=int, default=400, help="first held-out post (%(default)s)")
    p.add_argument("--split-file", default=None,
                   help="use the comparison posts on the test side of this RM split instead")
    p.add_argument("--comparison-posts", action="store_true",
                   help="use every distinct post of the OpenAI comparisons instead (disjoint "
                        "from the DOVE TL;DR posts that RL trains on)")
    p.add_argument("--policy", action="append", required=True, metavar="NAME=SPEC")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="at most this many posts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-prompt-tokens", type=int, default=384)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    records = heldout_prompts(args.split, args.skip, args.split_file, args.data_dir, args.limit,
                              args.comparison_posts)
    with open(args.out, "w", encoding="utf-8") as f:
        for item in args.policy:
            name, _, spec = item.partition("=")
            t0 = time.perf_counter()
            results = sample(spec, records, device=args.device,
                             max_prompt_tokens=args.max_prompt_tokens,
                             max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, seed=args.seed,
                             batch_size=args.batch_size)
            for r, (text, n) in zip(records, results, strict=True):
                f.write(json.dumps({"policy": name, "prompt_id": r.id, "context": r.text,
                                    "completion": text, "n_tokens": n}) + "\n")
            mean_len = sum(n for _, n in results) / len(results)
            print(f"{name}: {len(results)} completions, mean {mean_len:.1f} tokens, "
                  f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
