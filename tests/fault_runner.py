"""Run one ``rlaif-gym`` command with progress markers, for the fault-injection suite.

    python tests/fault_runner.py DELAY -- COMMAND ARGS...

Each time the command completes a unit of work (a JSON line appended: labels, judgments; a
metrics row; a reward-model checkpoint), this process prints ``MARK`` on stdout and sleeps
``DELAY`` seconds, so tests/test_faults.py can deliver SIGINT or SIGKILL after a chosen
number of units (a seeded "random point"). Nothing else is changed. Not a test module.
"""

from __future__ import annotations

import functools
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def marked(fn, delay: float):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        print("MARK", flush=True)
        time.sleep(delay)
        return result

    return wrapper


def main() -> int:
    delay = float(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1:]
    import torch

    torch.set_num_threads(1)
    import agents.train
    import rewards.reward_model
    import rlaif_gym.files
    from rlaif_gym.cli import main as cli_main

    rlaif_gym.files.JsonlAppender.write = marked(rlaif_gym.files.JsonlAppender.write, delay)
    agents.train.MetricsWriter.write = marked(agents.train.MetricsWriter.write, delay)
    rewards.reward_model._commit = marked(rewards.reward_model._commit, delay)
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
