"""One worker of a multi-worker train step, as a process of its own.

    python -m components.train_worker --dataset D --model M --output O --config JSON \
        [--checkpoint-dir C] [--tensorboard-dir T]

The same command runs as each local worker process (components/workers.py starts N of them) and
in each pod of a JobSet (wrapped by `python3 -m components.workers`, which sets TF_CONFIG from the
pod's place in the JobSet). `--config` is the complete TrainConfig as JSON: the launcher resolved
the preset already. A user mistake leaves as one `error: ...` line and exit code
USER_ERROR_EXIT_CODE, which the launchers read back. On the cluster the worker also watches its
launcher's heartbeat (components/heartbeat.py) and stops when the launcher is gone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from components import heartbeat
from components.errors import ERROR_LINE_PREFIX, USER_ERROR_EXIT_CODE, StorageUnavailableError, UserError, one_line


def worker_arguments(dataset: str, model_name: str, output: str, config: dict, *,
                     checkpoint_dir: str | None = None, tensorboard_dir: str | None = None) -> list[str]:
    """The arguments of this module that train one model as one worker."""
    arguments = ["--dataset", dataset, "--model", model_name, "--output", output, "--config", json.dumps(config)]
    if checkpoint_dir:
        arguments += ["--checkpoint-dir", checkpoint_dir]
    if tensorboard_dir:
        arguments += ["--tensorboard-dir", tensorboard_dir]
    return arguments


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m components.train_worker",
                                     description="Train one model as one worker of a multi-worker cluster.")
    parser.add_argument("--dataset", required=True, help="dataset directory or gs:// location")
    parser.add_argument("--model", required=True, help="zoo name")
    parser.add_argument("--output", required=True, help="where the chief writes the model and its records")
    parser.add_argument("--config", required=True, help="the complete TrainConfig as JSON")
    parser.add_argument("--checkpoint-dir", help="resumable checkpoints shared by the workers (local dir or gs://)")
    parser.add_argument("--tensorboard-dir", help="TensorBoard event files (local dir or gs://)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # TensorFlow's C++ logging: level 3 also mutes the "failed call to cuInit" error on a machine without a GPU.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        heartbeat.watch_launcher()  # before TensorFlow's import, which alone takes seconds
        from components.recipe import TrainConfig
        from components.train import train

        train(args.dataset, args.model, args.output, TrainConfig.from_dict(json.loads(args.config)),
              args.checkpoint_dir, tensorboard_dir=args.tensorboard_dir)
    except UserError as error:
        print(ERROR_LINE_PREFIX + one_line(error), file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except StorageUnavailableError as error:  # an outage, not a bug: already one line
        print(ERROR_LINE_PREFIX + one_line(error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
