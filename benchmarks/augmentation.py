"""Augmentation inside the compiled step vs in tf.data on the CPU: steady training images/s.

in_step:  uint8 batches out of tf.data (shuffled gathers from memory, nothing else), random shift
          and flip as components.augmentation.RandomShiftAndFlip at the head of the training
          model, the cast to float32 after it (what the training step runs).
tf_data:  the same shift and flip ops (components.augmentation.shift_and_flip, on stateless
          per-batch seeds) mapped over the batches in tf.data on the CPU, float32 batches handed
          to the model (what the training step ran before).
Both: the zoo model with the project's preprocessing (assemble_model), Adam, batch 128,
steps_per_execution as the recipe resolves it, CIFAR-shaped random uint8 images in memory, the
TensorFlow backend; the two alternate `--repeats` times and the medians are compared.
figure:   in_step images/s ÷ tf_data images/s (>= 1: moving augmentation into the step costs nothing).
"""

from __future__ import annotations


import common
import throughput
from common import median, progress

NAME = "augmentation"


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20_v1", help="zoo name (default resnet20_v1)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--images", type=int, default=5_000, help="random CIFAR-shaped images per epoch (default 5000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first is not counted")


def batches(images, labels, batch_size: int, seed: int, augment_on_cpu: bool):
    """Endless shuffled (images, one-hot labels) batches: uint8, or float32 augmented in tf.data."""
    from components.augmentation import shift_and_flip
    from components.keras_setup import tf

    images_tensor, one_hot = tf.constant(images), tf.one_hot(labels, 10)
    indices = tf.data.Dataset.range(len(images)).shuffle(len(images), seed=seed).repeat().batch(batch_size, drop_remainder=True)
    dataset = indices.map(lambda batch: (tf.gather(images_tensor, batch), tf.gather(one_hot, batch)))
    if augment_on_cpu:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)

        def augment(batch, batch_seed):
            batch_images, batch_labels = batch
            count = tf.shape(batch_images)[0]
            draws = tf.random.experimental.stateless_split(batch_seed, num=3)
            rows = tf.random.stateless_uniform([count], draws[0], -3, 4, dtype=tf.int32)
            columns = tf.random.stateless_uniform([count], draws[1], -3, 4, dtype=tf.int32)
            flips = tf.random.stateless_uniform([count], draws[2]) < 0.5
            return tf.cast(shift_and_flip(batch_images, rows, columns, flips), tf.float32), batch_labels

        dataset = tf.data.Dataset.zip(dataset, seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def images_per_second(arguments, images, labels, in_step: bool) -> float:
    from components import model_assembly as training
    from components.augmentation import training_model
    from components.input_pipeline import steps_per_epoch_for
    from components.keras_setup import keras
    from components.recipe import TrainConfig
    from components.schedules import make_learning_rate

    config = TrainConfig(batch_size=arguments.batch_size)
    keras.utils.set_random_seed(0)
    model = training.assemble_model(arguments.model, images.shape[1:], 10)
    steps_per_epoch = steps_per_epoch_for(len(images), config.batch_size)
    if in_step:
        model = training_model(model, (3, 3), flip=True, seed=0)
    steps_per_execution = training.resolve_steps_per_execution(config.steps_per_execution, model.count_params(), steps_per_epoch)
    training.compile_model(model, config, False, steps_per_execution, make_learning_rate(config, steps_per_epoch))
    timer = throughput.EpochTimer()
    dataset = batches(images, labels, config.batch_size, 0, augment_on_cpu=not in_step)
    model.fit(dataset, steps_per_epoch=steps_per_epoch, epochs=arguments.epochs, callbacks=[timer], verbose=0)
    speed = common.steady_rate(steps_per_epoch * config.batch_size, timer.seconds)
    progress(f"{arguments.model} augmentation {'in the step' if in_step else 'in tf.data'}: {speed:.1f} images/s")
    return speed


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    if arguments.tiny:
        arguments.model, arguments.images, arguments.epochs, arguments.batch_size = "lenet5", 256, 2, 32
    images, labels = throughput.random_cifar_like(arguments.images)
    runs = {"in_step": [], "tf_data": []}
    for _ in range(arguments.repeats):
        runs["tf_data"].append(images_per_second(arguments, images, labels, in_step=False))
        runs["in_step"].append(images_per_second(arguments, images, labels, in_step=True))
    in_step, tf_data = median(runs["in_step"]), median(runs["tf_data"])
    result = {
        "benchmark": NAME, "tiny": arguments.tiny, "model": arguments.model, "batch_size": arguments.batch_size,
        "images_per_epoch": arguments.images, "repeats": arguments.repeats,
        "in_step_images_per_second": in_step, "tf_data_images_per_second": tf_data, "ratio": in_step / tf_data,
        "per_repeat": runs, "machine": common.machine_description(),
    }
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
