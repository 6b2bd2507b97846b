"""The training step on Keras' JAX backend beside TensorFlow's, on the CPU: steady images/s.

Both:     components.train.train, the whole step (model assembly, augmentation in the step, the
          recipe's optimizer and schedule, validation, a checkpoint and TensorBoard scalars every
          epoch), each backend in a process of its own, on the same prepared dataset (random
          CIFAR-shaped images, --images of them), resnet20_v1, batch 128, the default recipe,
          precision and XLA as the step resolves them for the CPU (TensorFlow without XLA, JAX
          with it: JAX has no other compiled mode).
tensorflow: tf.data feeds uint8 batches from the shards.
jax:      the splits are read into memory without TensorFlow and fed from NumPy.
figure:   images/s of epochs 2.. from each run's history.csv (epoch 1 holds tracing and
          compilation), and jax ÷ tensorflow; the runs alternate `--repeats` times.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile

import common
from common import median, progress

NAME = "backends"
BACKENDS = ("tensorflow", "jax")
TRAIN_SCRIPT = """
import json, sys
from components.recipe import TrainConfig
from components.train import train
dataset, model, output, fields = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
train(dataset, model, output, TrainConfig.from_dict(fields))
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20_v1", help="zoo name (default resnet20_v1)")
    parser.add_argument("--images", type=int, default=5_000, help="random CIFAR-shaped train images (default 5000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not counted (default 3)")


def steady_images_per_second(history_path: str) -> float:
    with open(history_path) as history_file:
        rows = list(csv.DictReader(history_file))[1:]
    return sum(float(row["images"]) for row in rows) / sum(float(row["seconds"]) for row in rows)


def run_step(backend: str, dataset: str, model: str, fields: dict, output: str) -> dict:
    import json

    environment = dict(os.environ, KERAS_BACKEND=backend)
    command = [sys.executable, "-c", TRAIN_SCRIPT, dataset, model, output, json.dumps(fields)]
    done = subprocess.run(command, cwd=common.REPOSITORY_ROOT, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{backend} run failed:\n{done.stderr[-3000:]}")
    speed = steady_images_per_second(os.path.join(output, "history.csv"))
    progress(f"{model} on {backend}: {speed:.1f} images/s")
    return {"images_per_second": speed, "tensorflow_imported": "tensorflow imported: True" in done.stdout}


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    if arguments.tiny:
        arguments.model, arguments.images, arguments.epochs = "lenet5", 128, 2
    from throughput import prepared_dataset, random_cifar_like

    fields = {"epochs": arguments.epochs, "batch_size": 32 if arguments.tiny else 128, "schedule": "cosine"}
    runs = {backend: [] for backend in BACKENDS}
    with tempfile.TemporaryDirectory(prefix="cnnpipe-backends-") as work_dir:
        dataset = prepared_dataset(*random_cifar_like(arguments.images), work_dir)
        for repeat in range(arguments.repeats):
            for backend in BACKENDS:
                output = os.path.join(work_dir, f"{backend}-{repeat}")
                runs[backend].append(run_step(backend, dataset, arguments.model, fields, output))
    speeds = {backend: median([run["images_per_second"] for run in backend_runs]) for backend, backend_runs in runs.items()}
    result = {
        "benchmark": NAME, "tiny": arguments.tiny, "model": arguments.model, "images_per_epoch": arguments.images,
        "train_config": fields, "repeats": arguments.repeats,
        "images_per_second": speeds, "ratio": speeds["jax"] / speeds["tensorflow"], "runs": runs,
        "machine": common.machine_description(),
    }
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
