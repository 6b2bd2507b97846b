"""Shared parts of the benchmark scripts: arguments, machine description, timing, results.

Every script takes `--tiny` (a few seconds of the same code path, so the scripts cannot rot
unnoticed), `--repeats` (measurements are repeated and the median reported, because the
machine may be shared) and `--output` (the JSON file; default `benchmarks/results/<name>.json`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPOSITORY_ROOT, "benchmarks", "results")

# The scripts run as `python benchmarks/<name>.py` from a checkout that may not be installed.
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported anywhere

import numpy as np  # noqa: E402

from components.keras_setup import keras, tf  # noqa: E402  (after the environment variable on purpose)


def parse_arguments(name: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The common flags plus the script's own; `--repeats` defaults to 3 (1 with --tiny)."""
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    parser.add_argument("--tiny", action="store_true", help="seconds-long run of the same code path (for the test that keeps scripts working)")
    parser.add_argument("--repeats", type=int, help="measurements to take; the median is reported (default 3, 1 with --tiny)")
    parser.add_argument("--output", metavar="FILE", help=f"JSON result file (default benchmarks/results/{name}.json)")
    if add_arguments:
        add_arguments(parser)
    arguments = parser.parse_args()
    if arguments.repeats is None:
        arguments.repeats = 1 if arguments.tiny else 3
    if arguments.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {arguments.repeats}")
    if arguments.output is None:
        arguments.output = os.path.join(RESULTS_DIR, f"{name}{'_tiny' if arguments.tiny else ''}.json")
    return arguments


def cpu_model_name() -> str:
    """lscpu's 'Model name', or the platform's processor string where lscpu is missing."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in listing.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def machine_description() -> dict[str, Any]:
    """Where and with what a figure was measured: CPU, cores, GPUs, load, versions, date."""
    gpus = tf.config.list_physical_devices("GPU")
    gpu_names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model_name(),
        "cpu_cores": os.cpu_count(),
        "gpus": gpu_names,
        "load_average_1min_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
    }


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def progress(message: str) -> None:
    """One line on stderr per measurement, so a long run shows where it is."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_result(path: str, result: dict[str, Any]) -> None:
    """Prints the result as JSON and writes it to `path` (atomically)."""
    text = json.dumps(result, indent=2, default=float)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(text + "\n")
    os.replace(temporary, path)


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
    (augmentation as `config` says) -> assemble_model (scaling and mean subtraction inside) ->
    compile_model with the resolved device settings -> fit.

    The first epoch (tracing, autotuning) is not counted: images/s = images per epoch / mean
    seconds of epochs 2.. . Returns that and the settings used.
    """
    from components import train as training

    keras.utils.set_random_seed(config.seed)
    device = training.resolve_device_settings(config)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(device.mixed_precision)
    try:
        pixel_mean = images.mean(axis=0, dtype=np.float64) / 255.0 if config.subtract_pixel_mean else None
        model = training.assemble_model(model_name, images.shape[1:], num_classes, pixel_mean)
        steps_per_epoch = training.steps_per_epoch_for(len(images), config.batch_size)
        steps_per_execution = training.resolve_steps_per_execution(config.steps_per_execution, model.count_params(), steps_per_epoch)
        training.compile_model(model, config, device.jit_compile, steps_per_execution)
        shift_pixels = training.shift_pixels_for(images.shape[1:], config.shift_fraction) if augment else (0, 0)
        dataset = training.make_train_dataset(images, labels, num_classes, config.batch_size, config.seed, shift_pixels, flip=augment)
        timer = EpochTimer()
        model.fit(dataset, epochs=epochs, callbacks=[timer], verbose=0)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
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
    """Training images/s of the seed notebooks' way: float32 arrays scaled and mean-subtracted
    beforehand, one-hot labels, the registry model, Adam, `model.fit(x, y)`; no augmentation.

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
