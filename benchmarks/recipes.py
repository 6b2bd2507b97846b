"""Seed preset vs fast preset: epochs and wall time to reach the same test accuracy on the same data.

Data: scikit-learn's bundled digits through `data_prep.prepare('digits', ...)` (real 8x8
handwritten digits, the CPU stand-in for CIFAR-10), validated on its test split.
Recipes: the `seed` and `fast` presets' training fields (pipeline/config.py) as they are, on the
same model (default resnet20_v1) and random seed, through `train.train()`. `--fast-batch-size` runs the
fast recipe at another batch size, its learning rate scaled with it as the preset defines (its
512 is 3 steps per epoch on the 1,438 digits).

Definition of "the same accuracy": the fast preset runs its full schedule first; the seed preset
then runs until its test accuracy reaches the fast run's best (or its own epochs run out). The
target is the lower of the two runs' best accuracies, so both reach it; each run's time to
target is the sum of its per-epoch seconds (training plus the epoch's validation, as train.py's
history.csv records them) up to the first epoch at or above the target.
figure: seed-preset seconds to target ÷ fast-preset seconds to target (target >= 5).
"""

from __future__ import annotations

import csv
import os
import tempfile
import time

import common
from common import median
from components.keras_setup import keras

NAME = "recipes"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20_v1", help="zoo name (default resnet20_v1)")
    parser.add_argument("--dataset", default="digits", help="data_prep source (default digits, bundled)")
    parser.add_argument("--fast-batch-size", type=int, help="batch size of the fast recipe (default: the preset's)")


class StopAtAccuracy(keras.callbacks.Callback):
    """Stops training after the first epoch whose validation accuracy reaches `target`."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        if logs and logs.get("val_accuracy", 0.0) >= self.target:
            self.model.stop_training = True


def read_history(output_dir: str) -> list[dict[str, float]]:
    with open(os.path.join(output_dir, "history.csv")) as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def time_to_accuracy(history: list[dict[str, float]], target: float) -> dict | None:
    """Epochs and summed epoch seconds until the first epoch with val_accuracy >= target (None if never)."""
    seconds = 0.0
    for row in history:
        seconds += row["seconds"]
        if row["val_accuracy"] >= target:
            return {"epochs": int(row["epoch"]), "seconds": seconds}
    return None


def run_recipe(dataset_dir: str, model_name: str, train_fields: dict, work_dir: str, label: str, callbacks=()) -> dict:
    """Trains with the given TrainConfig fields; returns its history, best accuracy and wall seconds."""
    from components.recipe import TrainConfig
    from components.train import train

    output_dir = os.path.join(work_dir, label)
    started = time.perf_counter()
    result = train(dataset_dir, model_name, output_dir, TrainConfig.from_dict(dict(train_fields)), callbacks=list(callbacks))
    wall_seconds = time.perf_counter() - started
    history = read_history(output_dir)
    return {
        "config": result.config,
        "epochs_run": len(history),
        "best_accuracy": max(row["val_accuracy"] for row in history),
        "wall_seconds": wall_seconds,
        "history": history,
    }


def compare_once(dataset_dir: str, model_name: str, fast_fields: dict, seed_fields: dict, work_dir: str) -> dict:
    """One fast-preset run, then one seed-preset run stopped at the fast run's best accuracy; the comparison."""
    fast = run_recipe(dataset_dir, model_name, fast_fields, work_dir, "fast")
    seed = run_recipe(dataset_dir, model_name, seed_fields, work_dir, "seed", [StopAtAccuracy(fast["best_accuracy"])])
    target = min(fast["best_accuracy"], seed["best_accuracy"])
    fast_to_target = time_to_accuracy(fast["history"], target)
    seed_to_target = time_to_accuracy(seed["history"], target)
    return {
        "target_accuracy": target,
        "fast": {**fast, "to_target": fast_to_target},
        "seed": {**seed, "to_target": seed_to_target},
        "time_ratio": seed_to_target["seconds"] / fast_to_target["seconds"],
        "epoch_ratio": seed_to_target["epochs"] / fast_to_target["epochs"],
    }


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    from components.data_prep import prepare
    from pipeline.config import get_preset

    fast_fields, seed_fields = dict(get_preset("fast").train), dict(get_preset("seed").train)
    if arguments.fast_batch_size:
        fast_fields["batch_size"] = arguments.fast_batch_size
    if arguments.tiny:
        arguments.model = "lenet5"
        fast_fields["epochs"], seed_fields["epochs"] = 1, 2
    machine = common.machine_description()
    comparisons = []
    with tempfile.TemporaryDirectory(prefix="cnnpipe-recipes-") as work_dir:
        dataset_dir = os.path.join(work_dir, "dataset")
        # The presets' validation share: the accuracy both recipes race to is a validation figure.
        manifest = prepare(arguments.dataset, dataset_dir, validation_fraction=get_preset("fast").validation_fraction)
        for repeat in range(arguments.repeats):
            comparisons.append(compare_once(dataset_dir, arguments.model, fast_fields, seed_fields, os.path.join(work_dir, f"run{repeat}")))
    summary = {
        key: median([comparison[key] for comparison in comparisons])
        for key in ("time_ratio", "epoch_ratio", "target_accuracy")
    }
    result = {
        "benchmark": NAME,
        "tiny": arguments.tiny,
        "model": arguments.model,
        "dataset": {"name": manifest.name, "image_shape": manifest.image_shape, "splits": manifest.splits},
        "repeats": arguments.repeats,
        "fast_batch_size": fast_fields["batch_size"],
        "ratio": summary["time_ratio"],
        "epoch_ratio": summary["epoch_ratio"],
        "target_accuracy": summary["target_accuracy"],
        "fast_seconds_to_target": median([c["fast"]["to_target"]["seconds"] for c in comparisons]),
        "seed_seconds_to_target": median([c["seed"]["to_target"]["seconds"] for c in comparisons]),
        "fast_epochs_to_target": median([c["fast"]["to_target"]["epochs"] for c in comparisons]),
        "seed_epochs_to_target": median([c["seed"]["to_target"]["epochs"] for c in comparisons]),
        "target": "ratio >= 5 (seed-preset seconds to target / fast-preset seconds to target)",
        "comparisons": comparisons,
        "machine": machine,
    }
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
