"""Train with TRL's ``GRPOTrainer`` on TL;DR with an rlaif-gym reward (``"direct"`` or
``"pairwise"``).

The pieces::

    dataset = trl_prompt_dataset("tldr", split, tokenizer=...)     # the envs' prompts, plus
                                                                    # task_input / reference
    reward  = as_trl_reward("pairwise", task="tldr", judge=...)     # TRL reward_funcs signature
    GRPOTrainer(model, reward_funcs=reward, train_dataset=dataset,
                args=GRPOConfig(num_generations=k, ...)).train()

With ``--reward pairwise`` each call gets TRL's whole generation batch, so the k
``num_generations`` completions of a prompt are judged together (all pairs, both orders; a
group's scores sum to 0, and GRPO's group normalization then uses their spread). With
``--anchor reference`` each completion is judged against the dataset's reference summary
instead. ``--reward direct`` is d-RLAIF (a 1-10 rating per completion).

Needs the ``trl`` extra (``pip install 'rlaif-gym[trl]'``). Run from the repository root::

    python examples/trl_grpo.py --reward pairwise --steps 20        # SmolLM2 + Qwen 0.5B judge
    python examples/trl_grpo.py --policy tiny-random --judge tiny-random --steps 2   # seconds

Outputs go to ``--out`` (TRL's ``log_history`` as ``log_history.json``; no checkpoint unless
``--save``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reward", default="pairwise", choices=["direct", "pairwise"])
    p.add_argument("--anchor", default="group", choices=["group", "reference"],
                   help="pairwise: compare within the group or with the reference")
    p.add_argument("--policy", default="smollm2-135m-instruct")
    p.add_argument("--judge", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--judge-dtype", default="float32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--num-generations", type=int, default=4, help="k completions per prompt")
    p.add_argument("--prompts-per-step", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-prompt-tokens", type=int, default=384)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.05, help="KL coefficient")
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="first N prompts of the split")
    p.add_argument("--data-dir", default=os.environ.get("RLAIF_GYM_DATA"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/trl-grpo")
    p.add_argument("--save", action="store_true", help="save the final model to --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from rlaif_gym.data import trl_prompt_dataset
    from rlaif_gym.models import load_causal_lm, load_tokenizer, resolve_model_path
    from rlaif_gym.trl_reward import as_trl_reward

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.policy)
    dataset = trl_prompt_dataset("tldr", args.split, data_dir=args.data_dir, tokenizer=tokenizer,
                                 max_prompt_tokens=args.max_prompt_tokens, limit=args.limit)
    options = {"judge": args.judge, "num_threads": args.threads}
    if args.judge != "tiny-random":
        options["dtype"] = args.judge_dtype
    if args.reward == "pairwise":
        options["anchor"] = args.anchor
    reward = as_trl_reward(args.reward, task="tldr", num_generations=args.num_generations,
                           **options)
    # TRL loads the policy and its frozen reference (beta > 0) from a checkpoint folder
    if args.policy == "tiny-random":  # no files: save it once
        model_path = Path(args.out) / "tiny-random-policy"
        load_causal_lm("tiny-random").save_pretrained(model_path)
        tokenizer.save_pretrained(model_path)
    else:
        model_path = resolve_model_path(args.policy)
    config = GRPOConfig(
        output_dir=args.out,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations, max_completion_length=args.max_new_tokens,
        max_steps=args.steps, learning_rate=args.lr, beta=args.beta,
        temperature=args.temperature, top_p=1.0, top_k=0,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=False,
        activation_checkpointing=False, seed=args.seed, dataloader_num_workers=0,
        model_init_kwargs={"dtype": "float32"},
    )
    trainer = GRPOTrainer(model=str(model_path), reward_funcs=reward, args=config,
                          train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1),
                                          encoding="utf-8")
    if args.save:
        trainer.save_model(str(out))
    key = f"rewards/{reward.__name__}/mean"
    curve = [h[key] for h in trainer.state.log_history if key in h]
    print(f"{reward.__name__}: mean reward per step {[round(x, 3) for x in curve]}")
    return {"rewards": curve, "log_history": trainer.state.log_history}


if __name__ == "__main__":
    main()
