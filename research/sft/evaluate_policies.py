"""Judge-free evaluation of policies on the held-out evaluation prompts.

For every ``--policy NAME=SPEC``: one completion per evaluation prompt, sampled exactly as
``rlaif-gym evaluate`` samples (:func:`agents.sampling.sample_completions`; temperature
0.9, seed, batch size), at the largest ``--limits`` value; then, at every limit, the share
ending at the stop token within the limit, mean lengths, ROUGE-L against the references
and the copy overlap with the post (:func:`agents.sft.completion_metrics`); optionally
(``--nll``) the mean NLL of the reference completions. ROUGE-L of each policy minus that of
the first one is reported per prompt-paired bootstrap.

The evaluation prompts are the first ``--eval-n`` of the ``--seed`` permutation of the
split (:func:`agents.sft_data.seeded_eval_ids`): the prompts ``train_sft`` excluded with
``--exclude-eval-n``, and a superset of ``rlaif-gym reproduce``'s with the same seed.

Completions are cached per policy in ``OUT/completions-NAME.jsonl`` (generated ids and
text, no data text), so policies can be sampled in separate calls and summarised together::

    PYTHONPATH=. python research/sft/evaluate_policies.py --data-dir ../shared/data \\
        --policy base=smollm2-135m-instruct --threads 1 --out research/sft/eval
    PYTHONPATH=. python research/sft/evaluate_policies.py --data-dir ../shared/data \\
        --policy base=smollm2-135m-instruct --policy sft=runs/sft/X/policy --threads 1 \\
        --out research/sft/eval
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace, spec: str) -> dict[str, Any]:
    return {"spec": spec, "task": args.task, "split": args.split, "eval_n": args.eval_n,
            "seed": args.seed, "max_new_tokens": max(args.limits),
            "max_prompt_tokens": args.max_prompt_tokens, "temperature": args.temperature,
            "batch_size": args.batch_size}


def _load_cache(path: Path, settings: dict[str, Any]) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    head = json.loads(lines[0])
    if head.get("settings") != settings:
        return None
    return [json.loads(line) for line in lines[1:]]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="tldr", choices=("tldr", "helpful", "harmless"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--eval-n", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", action="append", required=True, metavar="NAME=SPEC")
    p.add_argument("--limits", type=int, nargs="+", default=[48, 64])
    p.add_argument("--max-prompt-tokens", type=int, default=384)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--nll", action="store_true", help="also the references' NLL per token")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    import numpy as np
    import torch

    from agents.sampling import SampledCompletion, sample_completions
    from agents.sft import completion_metrics, completion_nll, reference_metrics
    from agents.sft_data import build_examples, seeded_eval_ids
    from rewards.evaluation import bootstrap_mean_ci, rouge_l
    from rlaif_gym.envs.text_env import completion_decoder
    from rlaif_gym.models import load_causal_lm, load_tokenizer
    from rlaif_gym.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = get_task(args.task).load_prompts(split=args.split, data_dir=args.data_dir)
    ids = seeded_eval_ids(records, args.eval_n, seed=args.seed)
    by_id = {r.id: r for r in records}
    prompts = [by_id[i] for i in ids]
    limits = sorted(set(args.limits))
    summary: dict[str, Any] = {"task": args.task, "eval_n": len(prompts), "seed": args.seed,
                               "limits": limits, "temperature": args.temperature,
                               "batch_size": args.batch_size,
                               "max_prompt_tokens": args.max_prompt_tokens,
                               "threads": torch.get_num_threads(), "policies": {}}
    per_item_rouge: dict[str, dict[int, np.ndarray]] = {}
    for text in args.policy:
        name, _, spec = text.partition("=")
        tokenizer = load_tokenizer(spec)
        settings = _settings(args, spec)
        cache = out / f"completions-{name}.jsonl"
        rows = _load_cache(cache, settings)
        model = None
        entry: dict[str, Any] = {"spec": spec}
        if rows is None:
            model = load_causal_lm(spec, dtype="float32")
            t0 = time.perf_counter()
            samples, _ = sample_completions(
                model, tokenizer, args.task, prompts, max_new_tokens=max(limits),
                max_prompt_tokens=args.max_prompt_tokens, temperature=args.temperature,
                seed=args.seed, batch_size=args.batch_size, progress=True, desc=name)
            wall = time.perf_counter() - t0
            rows = [{"prompt_id": s.prompt_id, "generated_ids": s.generated_ids.tolist(),
                     "stopped": s.stopped, "completion": s.text} for s in samples]
            with open(cache, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"settings": settings, "sampling_wall_s": wall}) + "\n")
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        head = json.loads(cache.read_text(encoding="utf-8").splitlines()[0])
        entry["sampling_wall_s"] = head.get("sampling_wall_s")
        samples = [SampledCompletion(prompt_id=r["prompt_id"], index=k,
                                     generated_ids=np.asarray(r["generated_ids"], dtype=np.int64),
                                     stopped=r["stopped"], text=r["completion"],
                                     max_new_tokens=max(limits)) for k, r in enumerate(rows)]
        assert [s.prompt_id for s in samples] == ids, "cached completions of other prompts"
        vocab = int(load_causal_lm(spec).config.vocab_size) if model is None else \
            int(model.config.vocab_size)
        decode = completion_decoder(tokenizer, vocab)
        entry["metrics"] = completion_metrics(samples, decode, prompts, limits, seed=args.seed,
                                              n_bootstrap=args.bootstrap)
        per_item_rouge[name] = {}
        for limit in limits:
            texts = [s.at_limit(limit, decode).text for s in samples]
            per_item_rouge[name][limit] = rouge_l(
                texts, [r.reference.strip() for r in prompts], n_bootstrap=0).fmeasure
        if args.nll:
            model = model or load_causal_lm(spec, dtype="float32")
            examples = build_examples(args.task, prompts, tokenizer,
                                      max_prompt_tokens=args.max_prompt_tokens,
                                      max_completion_tokens=128)
            t0 = time.perf_counter()
            loss, n_tokens = completion_nll(model, examples, bf16=False)
            entry["reference_nll"] = {"nats_per_token": loss, "tokens": n_tokens,
                                      "precision": "float32",
                                      "wall_s": time.perf_counter() - t0}
        if "references" not in summary:
            summary["references"] = reference_metrics(prompts, tokenizer)
        summary["policies"][name] = entry
        del model
        logging.info("%s done", name)
    names = list(per_item_rouge)
    summary["rouge_l_paired_difference"] = {
        f"{name} - {names[0]}": {f"max_new_tokens={limit}": bootstrap_mean_ci(
            per_item_rouge[name][limit] - per_item_rouge[names[0]][limit],
            n_bootstrap=args.bootstrap, seed=args.seed).to_dict() for limit in limits}
        for name in names[1:]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for name, entry in summary["policies"].items():
        for key, m in entry["metrics"].items():
            print(f"{name:10s} {key}: stop {m['stop_rate']['rate']:.3f} "
                  f"[{m['stop_rate']['ci_low']:.3f}, {m['stop_rate']['ci_high']:.3f}] tokens "
                  f"{m['length']['mean_tokens']:.1f} words {m['length']['mean_words']:.1f} "
                  f"ROUGE-L {m['rouge_l']['fmeasure']:.4f} [{m['rouge_l']['ci_low']:.4f}, "
                  f"{m['rouge_l']['ci_high']:.4f}] copy-3gram "
                  f"{m['copy_overlap']['mean_ngram_share']}")
        if "reference_nll" in entry:
            print(f"{name:10s} reference NLL {entry['reference_nll']['nats_per_token']:.4f}")
    print("references:", summary["references"]["length"])
    print("paired ROUGE-L differences:", json.dumps(summary["rouge_l_paired_difference"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
