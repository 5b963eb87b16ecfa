"""d-RLAIF vs SFT on 200 held-out TL;DR prompts: the reproduction's three d-RLAIF seeds
against their SFT start, and each of them against the human reference summaries, on prompts
that neither SFT nor any d-RLAIF run trained on.

The reproduction (``reports/reproduce``) evaluates on the 48 prompts its data stage set aside
(the first ``eval_n`` of them); issue #21's goal asks for at least 200. The other prompts of
the 500 TL;DR posts went to SFT and RL, but only some were used: SFT trained on its
``split.json`` ``train_ids``, and each RL run drew the first ``steps * batch_size`` episodes
of its :class:`agents.train.PromptSchedule` (stateless, so replayed here exactly). The
held-out set is the data stage's evaluation prompts, then the unused train prompts in a
seeded order, the first ``--n`` of them.

Then :func:`rlaif_gym.pipelines.evaluate.evaluate_policies` with the reproduction's
evaluation settings (judge, sampling, seed). Writes ``OUT/ids.json``, ``OUT/eval/`` (the
evaluation; its completions hold the posts, so they stay out of git) and
``OUT/summary.json`` (each seed's win rate and length-controlled win rate, their mean and
spread across seeds).

    PYTHONPATH=. python research/drlaif_200/run.py --reproduction reports/reproduce \\
        --data-dir ../shared/data --n 200 --threads 2 --out research/drlaif_200
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from agents.train import PromptSchedule
from rlaif_gym.files import read_json, write_json
from rlaif_gym.pipelines.evaluate import evaluate_policies
from rlaif_gym.pipelines.reproduce_plan import sft_dir


def rl_prompt_ids(run: Path, train_ids: list[str]) -> set[str]:
    """The train prompts an RL run drew (its schedule replayed for its finished steps)."""
    config = read_json(run / "config.json")
    # the run's prompt list is the data stage's train_ids, in order (stage_rl)
    assert [str(p["id"]) for p in config["env_options"]["prompts"]] == train_ids, run
    state = read_json(run / "checkpoint" / "state.json")
    schedule = PromptSchedule(len(train_ids), config["seed"])
    used: set[str] = set()
    for step in range(state["step"]):
        used.update(train_ids[i] for i in schedule.indices(
            step, config["batch_size"], config.get("samples_per_prompt", 1)))
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reproduction", type=Path, default=Path("reports/reproduce"))
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("research/drlaif_200"))
    args = parser.parse_args()

    rep = args.reproduction
    state = read_json(rep / "state.json")["config"]
    eval_ids = read_json(rep / "data" / "tldr" / "eval_ids.json")
    train_ids = read_json(rep / "data" / "tldr" / "train_ids.json")
    sft = sft_dir(rep, "sft", "tldr")
    sft_split = read_json(sft / "split.json")
    seeds = state["seeds"]
    runs = {s: rep / "work" / "runs" / "tldr" / f"d-rlaif-s{s}" for s in seeds}
    trained = set(sft_split["train_ids"])
    for run in runs.values():
        trained |= rl_prompt_ids(run, train_ids)
    assert not trained & set(eval_ids)
    rest = [i for i in train_ids if i not in trained]
    order = np.random.default_rng(0).permutation(len(rest))
    ids = (eval_ids + [rest[int(i)] for i in order])[:args.n]
    if len(ids) < args.n:
        raise SystemExit(f"only {len(ids)} prompts unused by SFT and d-RLAIF")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "ids.json",
               {"ids": ids, "from_eval_ids": min(len(eval_ids), args.n),
                "excluded_sft_train": len(sft_split["train_ids"]),
                "excluded_trained_total": len(trained)})

    names = [f"d-RLAIF s{s}" for s in seeds]
    policies = [f"SFT={sft / 'policy'}"]
    policies += [f"{name}={runs[s]}" for name, s in zip(names, seeds, strict=True)]
    policies += ["REF=reference"]  # the posts' human TL;DRs
    summary = evaluate_policies(
        task="tldr", policies=policies, out_dir=args.out / "eval", judge=state["judge"],
        pairs=[f"{n}:SFT" for n in names] + [f"{n}:REF" for n in [*names, "SFT"]],
        ids=ids, n=len(ids), split="test",
        data_dir=args.data_dir, source=state["source"],
        max_new_tokens=state["max_new_tokens"], max_prompt_tokens=state["max_prompt_tokens"],
        temperature=state["temperature"], seed=state["seed"],
        batch_size=state["eval_batch_size"], n_bootstrap=state["bootstrap"],
        threads=args.threads, progress=True, log=print)
    rows = {c["a"]: c for c in summary["comparisons"] if c["b"] == "SFT"}
    vs_ref = {c["a"]: c["win_rate"] for c in summary["comparisons"] if c["b"] == "REF"}
    rates = [rows[n]["win_rate"]["rate"] for n in names]
    lc = [rows[n]["length_controlled"]["rate"] for n in names]
    result = {
        "n_prompts": len(ids), "judge": state["judge"],
        "seeds": {n: {"win_rate": rows[n]["win_rate"],
                      "length_controlled": {k: rows[n]["length_controlled"][k]
                                            for k in ("rate", "ci_low", "ci_high")}}
                  for n in names},
        "against_reference": vs_ref,
        "mean_win_rate": statistics.mean(rates), "sd_win_rate": statistics.stdev(rates),
        "mean_length_controlled": statistics.mean(lc), "sd_length_controlled": statistics.stdev(lc),
        "policies": {name: {k: p.get(k) for k in ("lengths", "rouge_l", "copy_overlap")}
                     for name, p in summary["policies"].items()},
        "wall_time_s": summary["wall_time_s"], "work_done": summary["work_done"],
    }
    write_json(args.out / "summary.json", result)
    print(json.dumps({k: result[k] for k in ("mean_win_rate", "sd_win_rate",
                                             "mean_length_controlled")}, indent=1))


if __name__ == "__main__":
    main()
