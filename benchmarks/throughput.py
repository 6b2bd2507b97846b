"""Training throughput measurements shared by the benchmark scripts: our train.py path and plain Keras."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from common import progress  # first: common puts the repository on sys.path and sets TensorFlow's log level
from components.keras_setup import keras


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall seconds (the first one includes tracing and autotuning)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def prepared_dataset(images, labels, directory: str) -> str:
    """The arrays as a prepared dataset, made as a user's data is: an image folder, then data prep."""
    from PIL import Image

    from components.data_prep import prepare

    folder = os.path.join(directory, "folder")
    for split, indices in (("train", range(len(images))), ("test", range(min(len(images), 100)))):
        for index in indices:
            class_dir = os.path.join(folder, split, f"class{labels[index]:02d}")
            os.makedirs(class_dir, exist_ok=True)
            Image.fromarray(images[index].squeeze()).save(os.path.join(class_dir, f"{index:06d}.png"))
    dataset = os.path.join(directory, "dataset")
    prepare(folder, dataset)
    return dataset


def random_cifar_like(count: int, num_classes: int = 10, shape: Sequence[int] = (32, 32, 3), seed: int = 0):
    """uint8 images of `shape` and int32 labels, uniformly random (speed only; nothing to learn)."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    labels = generator.integers(0, num_classes, size=count).astype(np.int32)
    return images, labels


def train_path_images_per_second(
    model_name: str,
    images,
    labels,
    num_classes: int,
    config,
    epochs: int = 2,
    augment: bool = True,
) -> dict[str, Any]:
    """Training images/s through train.py's own path: uint8 arrays in memory -> make_train_dataset
    -> assemble_model (scaling and mean subtraction inside) -> training_model (augmentation in the
    step, as `config` says) -> compile_model with the resolved device settings -> fit.

    The first epoch (tracing, autotuning) is not counted: images/s = images per epoch / mean
    seconds of epochs 2.. . Returns that and the settings used.
    """
    from components import model_assembly as training
    from components.dataset import open_dataset
    from components.augmentation import shift_pixels_for, training_model
    from components.input_pipeline import make_train_dataset, steps_per_epoch_for
    from components.schedules import make_learning_rate

    scratch = tempfile.TemporaryDirectory(prefix="cnnpipe-throughput-")
    reader = open_dataset(prepared_dataset(images, labels, scratch.name))
    keras.utils.set_random_seed(config.seed)
    device = training.resolve_device_settings(config)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(device.mixed_precision)
    try:
        pixel_mean = reader.pixel_mean() if config.subtract_pixel_mean else None
        shift_pixels = shift_pixels_for(images.shape[1:], config.shift_fraction) if augment else (0, 0)
        model = training_model(training.assemble_model(model_name, images.shape[1:], num_classes, pixel_mean),
                               shift_pixels, flip=augment, seed=config.seed)
        steps_per_epoch = steps_per_epoch_for(len(images), config.batch_size)
        steps_per_execution = training.resolve_steps_per_execution(config.steps_per_execution, model.count_params(), steps_per_epoch)
        learning_rate = make_learning_rate(config, steps_per_epoch)
        training.compile_model(model, config, device.jit_compile, steps_per_execution, learning_rate)
        dataset = make_train_dataset(reader, config.batch_size, config.seed, cache=config.cache)
        timer = EpochTimer()
        model.fit(dataset.take(steps_per_epoch), epochs=epochs, callbacks=[timer], verbose=0, shuffle=False)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        scratch.cleanup()
    images_per_second = steps_per_epoch * config.batch_size / statistics.fmean(timer.seconds[1:])
    progress(f"{model_name} train.py path, batch {config.batch_size}: {images_per_second:.1f} images/s")
    return {
        "images_per_second": images_per_second,
        "batch_size": config.batch_size,
        "steps_per_execution": steps_per_execution,
        "jit_compile": device.jit_compile,
        "mixed_precision": device.mixed_precision,
        "augmentation": {"shift_pixels": list(shift_pixels), "flip": augment},
        "epoch_seconds": timer.seconds,
    }


def plain_fit_images_per_second(
    model_name: str,
    images,
    labels,
    num_classes: int,
    batch_size: int,
    epochs: int = 2,
    steps_per_execution: int = 1,
    jit_compile: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Training images/s of the seed documents' way: float32 arrays scaled and mean-subtracted
    beforehand, one-hot labels, the zoo model, Adam, `model.fit(x, y)`; no augmentation.

    Like `train_path_images_per_second`, the first epoch is not counted.
    """
    from components import models

    keras.utils.set_random_seed(seed)
    floats = images.astype(np.float32) / 255.0
    floats -= floats.mean(axis=0)
    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    model = models.build_model(model_name, images.shape[1:], num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    timer = EpochTimer()
    model.fit(floats, one_hot, batch_size=batch_size, epochs=epochs, shuffle=True, callbacks=[timer], verbose=0)
    images_per_second = len(images) / statistics.fmean(timer.seconds[1:])
    progress(f"{model_name} plain fit, batch {batch_size}, steps_per_execution {steps_per_execution}: {images_per_second:.1f} images/s")
    return {
        "images_per_second": images_per_second,
        "batch_size": batch_size,
        "steps_per_execution": steps_per_execution,
        "jit_compile": jit_compile,
        "epoch_seconds": timer.seconds,
    }
