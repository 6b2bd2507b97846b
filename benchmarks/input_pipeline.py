"""Input pipeline overhead: is the augmented input pipeline of train.py hidden behind the model?

ours:     train.py's path — uint8 images in memory, shuffled and batched by tf.data and handed
          over as uint8, random shifts and flips per image inside the compiled step
          (components/augmentation.py), scaling and mean subtraction as layers inside the model —
          at the seed preset's recipe (Adam 1e-3, batch 128).
baseline: plain `model.fit` on float32 arrays that were scaled and mean-subtracted beforehand,
          no augmentation, same model, optimizer, batch size and steps_per_execution.
Ours, the baseline and the baseline with Keras' defaults are built in this process and warmed up
by one epoch each (tracing, autotuning); then they take turns one epoch at a time for `--repeats`
rounds (default 15), each round starting with another, so a burst of other work on a shared
machine, which can double an epoch's time, falls on all of them alike rather than on whichever
happened to run then.
figure:   the median over rounds of baseline epoch seconds ÷ ours in the same round, i.e. ours'
          speed ÷ the baseline's (target >= 1); beside it the ratio of the median epochs, that of
          the fastest epochs (the least disturbed), and the paired ratio against plain `fit` with
          Keras' defaults (steps_per_execution=1), the seed documents' way.
step_ratio: the compiled steps alone, ours (augmentation included) against the baseline's, on one
          batch already in memory, 10 steps at a time, taking turns: what the step itself costs.
"""

from __future__ import annotations

import time

import common
import throughput
from common import median, progress

NAME = "input_pipeline"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20_v1", help="zoo name (default resnet20_v1)")
    parser.add_argument("--images", type=int, default=2048, help="random CIFAR-shaped training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128, the seed documents')")
    parser.set_defaults(repeats=15)  # rounds, each one epoch of every trainer


def compare_steps(ours, baseline, images, labels, rounds: int, steps: int = 10) -> dict[str, list[float]]:
    """Seconds per training step of each model on one fixed batch (uint8 for ours, float32
    normalized for the baseline), `steps` at a time, taking turns for `rounds` rounds."""
    import numpy as np

    one_hot = np.eye(10, dtype=np.float32)[labels]
    floats = images.astype(np.float32) / 255.0
    batches = {"ours": (ours, images), "baseline": (baseline, floats)}
    for model, batch in batches.values():
        model.train_on_batch(batch, one_hot)  # traces the one-batch step
    seconds = {name: [] for name in batches}
    for round_index in range(rounds):
        for name in sorted(batches, reverse=bool(round_index % 2)):
            model, batch = batches[name]
            started = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(batch, one_hot)
            seconds[name].append((time.perf_counter() - started) / steps)
    return seconds


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    if arguments.tiny:
        arguments.model, arguments.images, arguments.batch_size, arguments.repeats = "lenet5", 64, 16, 2
    from components.recipe import TrainConfig

    machine = common.machine_description()
    images, labels = throughput.random_cifar_like(arguments.images)
    config = TrainConfig(batch_size=arguments.batch_size, augment=True, horizontal_flip=True)
    ours = throughput.train_path_trainer(arguments.model, images, labels, 10, config)
    try:
        arrays = (arguments.model, images, labels, 10, arguments.batch_size)
        trainers = {
            "ours": ours,
            "baseline": throughput.plain_fit_trainer(*arrays, ours.settings["steps_per_execution"], ours.settings["jit_compile"]),
            "keras_defaults": throughput.plain_fit_trainer(*arrays),
        }
        for trainer in trainers.values():
            trainer.epoch()  # tracing and autotuning: not counted
        names = list(trainers)
        for round_index in range(arguments.repeats):
            # One epoch each per round, starting with a different one every round.
            for name in names[round_index % len(names):] + names[:round_index % len(names)]:
                trainers[name].epoch()
            progress(f"round {round_index + 1}: " + ", ".join(f"{name} {trainer.seconds[-1]:.2f} s" for name, trainer in trainers.items()))
        step_seconds = compare_steps(ours.model, trainers["baseline"].model, images[:arguments.batch_size],
                                     labels[:arguments.batch_size], arguments.repeats)
    finally:
        ours.close()
    seconds = {name: trainer.seconds[1:] for name, trainer in trainers.items()}
    speed = {name: common.steady_rate(trainer.images_per_epoch, trainer.seconds) for name, trainer in trainers.items()}

    def paired_ratio(other: str) -> float:
        """Median over rounds of (other's epoch seconds ÷ ours) in the same round."""
        return median([theirs / own for own, theirs in zip(seconds["ours"], seconds[other])])

    result = {
        "benchmark": NAME,
        "tiny": arguments.tiny,
        "model": arguments.model,
        "images_per_epoch": arguments.images,
        "batch_size": arguments.batch_size,
        "rounds": arguments.repeats,
        "ours_images_per_second": speed["ours"],
        "baseline_images_per_second": speed["baseline"],
        "keras_defaults_images_per_second": speed["keras_defaults"],
        "ratio": paired_ratio("baseline"),
        "ratio_of_medians": speed["ours"] / speed["baseline"],
        "ratio_fastest_epoch": min(seconds["baseline"]) / min(seconds["ours"]),
        "ratio_vs_keras_defaults": paired_ratio("keras_defaults"),
        # the compiled steps alone on one batch already in memory (no input pipeline)
        "step_ratio": median([theirs / own for own, theirs in zip(step_seconds["ours"], step_seconds["baseline"])]),
        "step_milliseconds": {name: 1000 * median(values) for name, values in step_seconds.items()},
        "target": ">= 1 (steady speed at least that of plain fit)",
        "settings": {name: trainer.settings for name, trainer in trainers.items()},
        "epoch_seconds": {name: trainer.seconds for name, trainer in trainers.items()},
        "machine": machine,
    }
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
