"""Training throughput measurements shared by the benchmark scripts: our train.py path and plain Keras."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from common import progress, steady_rate  # first: common puts the repository on sys.path and sets TensorFlow's log level
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


class Trainer:
    """A compiled model with its training data, trained one epoch per `epoch()` call, so that
    several trainers can take turns epoch by epoch in one process (a burst of other work on the
    machine then hits each of them alike). `settings` says how it was set up."""

    def __init__(self, model, fit_data: dict[str, Any], images_per_epoch: int, settings: dict[str, Any], cleanup=None):
        self.model, self.fit_data, self.images_per_epoch, self.settings = model, fit_data, images_per_epoch, settings
        self.seconds: list[float] = []  # every epoch's, the first (tracing, autotuning) included
        self._cleanup = cleanup

    def epoch(self) -> float:
        timer = EpochTimer()
        self.model.fit(**self.fit_data, epochs=1, callbacks=[timer], verbose=0)
        self.seconds.append(timer.seconds[0])
        return self.seconds[-1]

    def close(self) -> None:
        if self._cleanup:
            self._cleanup()

    def images_per_second(self, epochs: int) -> dict[str, Any]:
        """Trains `epochs` epochs; the steady speed (common.steady_rate) and the settings."""
        for _ in range(epochs):
            self.epoch()
        return {
            "images_per_second": steady_rate(self.images_per_epoch, self.seconds),
            "fastest_epoch_images_per_second": self.images_per_epoch / min(self.seconds[1:]),
            **self.settings,
            "epoch_seconds": self.seconds,
        }


def train_path_trainer(model_name: str, images, labels, num_classes: int, config, augment: bool = True) -> Trainer:
    """train.py's own path: uint8 arrays prepared as a dataset -> make_train_dataset ->
    assemble_model (scaling and mean subtraction inside) -> training_model (augmentation in the
    step, as `config` says) -> compile_model with the resolved device settings -> fit.
    Close it when done (it holds a scratch folder)."""
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
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    settings = {
        "batch_size": config.batch_size,
        "steps_per_execution": steps_per_execution,
        "jit_compile": device.jit_compile,
        "mixed_precision": device.mixed_precision,
        "augmentation": {"shift_pixels": list(shift_pixels), "flip": augment},
    }
    fit_data = {"x": dataset, "steps_per_epoch": steps_per_epoch, "shuffle": False}  # the dataset shuffles
    return Trainer(model, fit_data, steps_per_epoch * config.batch_size, settings, scratch.cleanup)


def plain_fit_trainer(model_name: str, images, labels, num_classes: int, batch_size: int, steps_per_execution: int = 1,
                      jit_compile: bool = False, seed: int = 0) -> Trainer:
    """The seed documents' way: float32 arrays scaled and mean-subtracted beforehand, one-hot
    labels, the zoo model, Adam, `model.fit(x, y)` shuffling every epoch; no augmentation."""
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
    settings = {"batch_size": batch_size, "steps_per_execution": steps_per_execution, "jit_compile": jit_compile}
    return Trainer(model, {"x": floats, "y": one_hot, "batch_size": batch_size, "shuffle": True}, len(images), settings)


def train_path_images_per_second(model_name: str, images, labels, num_classes: int, config, epochs: int = 2,
                                 augment: bool = True) -> dict[str, Any]:
    """Steady training images/s through train.py's path (train_path_trainer) over `epochs` epochs,
    the first not counted, with the settings used."""
    trainer = train_path_trainer(model_name, images, labels, num_classes, config, augment)
    try:
        result = trainer.images_per_second(epochs)
    finally:
        trainer.close()
    progress(f"{model_name} train.py path, batch {config.batch_size}: {result['images_per_second']:.1f} images/s")
    return result


def plain_fit_images_per_second(model_name: str, images, labels, num_classes: int, batch_size: int, epochs: int = 2,
                                steps_per_execution: int = 1, jit_compile: bool = False, seed: int = 0) -> dict[str, Any]:
    """Steady training images/s of plain `fit` (plain_fit_trainer) over `epochs` epochs, the first
    not counted, with the settings used."""
    trainer = plain_fit_trainer(model_name, images, labels, num_classes, batch_size, steps_per_execution, jit_compile, seed)
    result = trainer.images_per_second(epochs)
    progress(f"{model_name} plain fit, batch {batch_size}, steps_per_execution {steps_per_execution}: "
             f"{result['images_per_second']:.1f} images/s")
    return result
