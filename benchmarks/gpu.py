"""GPU: ResNet20 v1 training images/s with mixed precision + XLA, and the fast preset's time to accuracy.

ours:     train.py's path with its GPU settings resolved by 'auto' (bfloat16 on compute
          capability >= 8, else float16 with loss scaling; XLA on; steps_per_execution for small
          models) at a large batch (default 1024), on random uint8 data of CIFAR-10's shape
          (50,000 x 32x32x3) held in memory, augmentation on.
baseline: plain Keras as in seed document 004: float32, no XLA, batch 32, `model.fit` on float arrays.
figure:   ours images/s (target >= 100k on an H100) and ours ÷ baseline.
accuracy: with `--cifar10 PATH` (the CIFAR-10 binary archive; it cannot be downloaded on
          machines without internet), the fast preset's epochs and seconds to 92 % test accuracy
          for resnet20_v1 and to 94 % for `--best-model`; without it those are "not measured".

Without a GPU the script prints "no GPU" and exits 0; `--tiny` runs the same code on the CPU
with lenet5, a few hundred images and the digits dataset, so it keeps working.
"""

from __future__ import annotations

import os
import tempfile

import common
import throughput
from common import median
from recipes import read_history, time_to_accuracy

NAME = "gpu"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20_v1", help="zoo name for the speed figure (default resnet20_v1)")
    parser.add_argument("--batch-size", type=int, default=1024, help="ours' batch size (default 1024)")
    parser.add_argument("--images", type=int, default=50_000, help="random CIFAR-shaped images per epoch (default 50000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per speed measurement; the first is not counted")
    parser.add_argument("--cifar10", metavar="PATH", help="CIFAR-10 binary archive for the time-to-accuracy figures")
    parser.add_argument("--best-model", default="resnet56_v1", help="zoo model for the 94 %% figure (default resnet56_v1)")


def speed(arguments, images, labels) -> dict:
    """Ours and the seed document 004 baseline, alternating, `--repeats` times; medians and their ratio."""
    from components.recipe import TrainConfig

    config = TrainConfig(batch_size=arguments.batch_size, horizontal_flip=True)
    ours, baseline = [], []
    for _ in range(arguments.repeats):
        ours.append(throughput.train_path_images_per_second(arguments.model, images, labels, 10, config, epochs=arguments.epochs))
        baseline.append(throughput.plain_fit_images_per_second(arguments.model, images, labels, 10, 32, epochs=arguments.epochs))
    ours_speed = median([run["images_per_second"] for run in ours])
    baseline_speed = median([run["images_per_second"] for run in baseline])
    return {
        "ours_images_per_second": ours_speed,
        "baseline_images_per_second": baseline_speed,
        "ratio": ours_speed / baseline_speed,
        "ours_settings": {key: ours[-1][key] for key in ("batch_size", "steps_per_execution", "jit_compile", "mixed_precision")},
        "ours_per_repeat": [run["images_per_second"] for run in ours],
        "baseline_per_repeat": [run["images_per_second"] for run in baseline],
    }


def time_to_target(dataset_dir: str, model_name: str, target: float, train_fields: dict, work_dir: str) -> dict:
    """Trains with the fast preset's fields; epochs and summed epoch seconds to `target` test accuracy."""
    from components.recipe import TrainConfig
    from components.train import train

    output_dir = os.path.join(work_dir, model_name)
    train(dataset_dir, model_name, output_dir, TrainConfig.from_dict(dict(train_fields)))
    history = read_history(output_dir)
    reached = time_to_accuracy(history, target)
    return {
        "model": model_name,
        "target_accuracy": target,
        "best_accuracy": max(row["val_accuracy"] for row in history),
        "epochs_run": len(history),
        "to_target": reached if reached else "not reached",
    }


def accuracy_figures(arguments, work_dir: str) -> list[dict] | str:
    """Fast preset's time to 92 % (resnet20_v1) and 94 % (--best-model) on real data, if given."""
    from components.data_prep import prepare
    from pipeline.config import get_preset

    fast_fields = dict(get_preset("fast").train)
    if arguments.tiny:
        source, goals = "digits", [(arguments.model, 0.5)]
        fast_fields["epochs"] = 1
    elif arguments.cifar10:
        source, goals = arguments.cifar10, [("resnet20_v1", 0.92), (arguments.best_model, 0.94)]
    else:
        return "not measured: no CIFAR-10 data (pass --cifar10 PATH to the binary archive)"
    dataset_dir = os.path.join(work_dir, "dataset")
    prepare(source, dataset_dir)
    return [time_to_target(dataset_dir, model_name, target, fast_fields, work_dir) for model_name, target in goals]


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    if not common.has_gpu() and not arguments.tiny:
        print("no GPU: nothing measured (run with --tiny to exercise the code on the CPU)")
        return 0
    if arguments.tiny:
        arguments.model, arguments.batch_size, arguments.images, arguments.epochs = "lenet5", 32, 128, 2
    machine = common.machine_description()
    images, labels = throughput.random_cifar_like(arguments.images)
    result = {"benchmark": NAME, "tiny": arguments.tiny, "model": arguments.model, "images_per_epoch": arguments.images,
              "repeats": arguments.repeats, **speed(arguments, images, labels),
              "target": "ours_images_per_second >= 100000 on an H100"}
    with tempfile.TemporaryDirectory(prefix="cnnpipe-gpu-") as work_dir:
        result["time_to_accuracy"] = accuracy_figures(arguments, work_dir)
    result["machine"] = machine
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
