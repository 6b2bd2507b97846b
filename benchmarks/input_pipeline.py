"""Input pipeline overhead: is the augmented input pipeline of train.py hidden behind the model?

ours:     train.py's path — uint8 images in memory, shuffled and batched by tf.data and handed
          over as uint8, random shifts and flips per image inside the compiled step
          (components/augmentation.py), scaling and mean subtraction as layers inside the model —
          at the seed preset's recipe (Adam 1e-3, batch 128).
baseline: plain `model.fit` on float32 arrays that were scaled and mean-subtracted beforehand,
          no augmentation, same model, optimizer, batch size and steps_per_execution.
figure:   ours images/s ÷ baseline images/s (target >= 0.95). A second ratio compares with
          Keras' defaults for the baseline (steps_per_execution=1), the seed documents' way.

Both run in this process, alternating, `--repeats` times; the medians are reported.
"""

from __future__ import annotations

import common
import throughput
from common import median

NAME = "input_pipeline"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20_v1", help="zoo name (default resnet20_v1)")
    parser.add_argument("--images", type=int, default=2048, help="random CIFAR-shaped training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128, the seed documents')")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first is not counted")


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    if arguments.tiny:
        arguments.model, arguments.images, arguments.batch_size, arguments.epochs = "lenet5", 64, 16, 2
    from components.recipe import TrainConfig

    machine = common.machine_description()
    images, labels = throughput.random_cifar_like(arguments.images)
    config = TrainConfig(batch_size=arguments.batch_size, augment=True, horizontal_flip=True)
    ours, same_settings, keras_defaults = [], [], []
    for _ in range(arguments.repeats):
        ours.append(throughput.train_path_images_per_second(arguments.model, images, labels, 10, config, epochs=arguments.epochs))
        steps_per_execution = ours[-1]["steps_per_execution"]
        same_settings.append(throughput.plain_fit_images_per_second(
            arguments.model, images, labels, 10, arguments.batch_size, epochs=arguments.epochs,
            steps_per_execution=steps_per_execution, jit_compile=ours[-1]["jit_compile"],
        ))
        keras_defaults.append(throughput.plain_fit_images_per_second(
            arguments.model, images, labels, 10, arguments.batch_size, epochs=arguments.epochs,
        ))
    ours_speed = median([run["images_per_second"] for run in ours])
    baseline_speed = median([run["images_per_second"] for run in same_settings])
    defaults_speed = median([run["images_per_second"] for run in keras_defaults])
    ratios = [a["images_per_second"] / b["images_per_second"] for a, b in zip(ours, same_settings)]
    result = {
        "benchmark": NAME,
        "tiny": arguments.tiny,
        "model": arguments.model,
        "images_per_epoch": arguments.images,
        "batch_size": arguments.batch_size,
        "repeats": arguments.repeats,
        "ours_images_per_second": ours_speed,
        "baseline_images_per_second": baseline_speed,
        "ratio": median(ratios),
        "ratio_per_repeat": ratios,
        "keras_defaults_images_per_second": defaults_speed,
        "ratio_vs_keras_defaults": ours_speed / defaults_speed,
        "target": ">= 0.95",
        "ours_runs": ours,
        "baseline_runs": same_settings,
        "keras_defaults_runs": keras_defaults,
        "machine": machine,
    }
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
