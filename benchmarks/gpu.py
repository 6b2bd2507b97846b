"""GPU: the training step on Keras' JAX backend (no TensorFlow) beside plain PyTorch, in images/s.

ours:     the project's training step on in-memory uint8 data of CIFAR-10's shape (50,000 random
          images): model assembly (scaling and mean subtraction inside the model), the shift and
          flip inside the compiled step, the recipe's optimizer and per-step schedule, exact epochs
          of full batches from the NumPy feeder, a checkpoint after every epoch, precision and XLA
          as the step resolves them for the device (bfloat16 on compute capability >= 8), on
          Keras' JAX backend; for resnet20_v1, fastnet8_small, resnet56_v1 and vgg16 at --batch-size.
baseline: ResNet20 v1 written in plain PyTorch (torch.compile, bfloat16 autocast, channels_last),
          the same batch, data and shift + flip on the GPU, Adam; "not measured" without PyTorch.
fast:     the fast preset's recipe (its model, batch and fields) on the same data: seconds per
          epoch, checkpoint included.
figure:   images/s of the steady epochs (the first, with compilation, is not counted);
          goal: resnet20_v1 >= 100,000 images/s with augmentation on, ahead of PyTorch at the same batch.

Runs where TensorFlow is not installed (the GPU machines carry JAX and PyTorch; add the wheels of
keras, namex, optree and google-crc32c): it selects the JAX backend before Keras loads and
imports nothing of TensorFlow's (the result says so). Without a GPU it prints
"no GPU" and exits 0; `--tiny` runs the same code on the CPU with small models and a few hundred
images, so it keeps working (tests/test_benchmarks.py).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time

import common
from common import progress

from components.backends import select_backend

select_backend("jax")  # before anything imports Keras

from throughput import EpochTimer, random_cifar_like  # noqa: E402  (imports Keras, now on JAX)

NAME = "gpu"
MODELS = ("resnet20_v1", "fastnet8_small", "resnet56_v1", "vgg16")
TINY_MODELS = ("lenet5", "resnet20_v1")


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"zoo names (default {' '.join(MODELS)})")
    parser.add_argument("--batch-size", type=int, default=512, help="images per step for every model (default 512)")
    parser.add_argument("--images", type=int, default=50_000, help="random CIFAR-shaped images per epoch (default 50000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first is not counted (default 3)")


def training_step_speed(model_name: str, images, labels, fields: dict, epochs: int, work_dir: str) -> dict:
    """Trains `model_name` with the recipe `fields` through the step's own parts; images/s of the
    epochs after the first, and seconds per epoch with the checkpoint."""
    import numpy as np

    from components import keras_setup, models
    from components.augmentation import shift_pixels_for, training_model
    from components.callbacks import EpochCheckpointer, PlateauCallback
    from components.input_pipeline import ArrayBatches, steps_per_epoch_for
    from components.keras_setup import keras
    from components.recipe import PlateauState, TrainConfig
    from components.schedules import make_learning_rate
    from components.model_assembly import (
        assemble_model,
        compile_model,
        resolve_device_settings,
        resolve_steps_per_execution,
        shorten_batch_norm_momentum,
        spread_sample,
    )
    from components.train import _new_state

    config = TrainConfig.from_dict({**fields, "epochs": epochs})
    keras_setup.set_random_seed(config.seed)
    device = resolve_device_settings(config)
    keras.mixed_precision.set_global_policy(device.mixed_precision)
    steps_per_epoch = steps_per_epoch_for(len(images), config.batch_size)
    pixel_mean = images.mean(axis=0) / 255.0
    fits_stem = config.fit_stem_to_data and models.get_spec(model_name).fit_to_images
    sample = spread_sample(images) if fits_stem else None
    inference = assemble_model(model_name, images.shape[1:], 10, pixel_mean, sample)
    model = training_model(inference, shift_pixels_for(images.shape[1:], config.shift_fraction), flip=True, seed=config.seed)
    steps_per_execution = resolve_steps_per_execution(config.steps_per_execution, model.count_params(), steps_per_epoch)
    shorten_batch_norm_momentum(model, steps_per_epoch)
    compile_model(model, config, device.jit_compile, steps_per_execution, make_learning_rate(config, steps_per_epoch))
    timer = EpochTimer()  # before the checkpointer: training alone
    checkpoint_dir = os.path.join(work_dir, model_name)
    state = _new_state(model_name, "benchmark", {}, model.count_params(), "none")
    checkpointer = EpochCheckpointer(checkpoint_dir, state, PlateauCallback(PlateauState()), config.batch_size)
    batches = ArrayBatches(images, labels, 10, config.batch_size, config.seed, steps_per_epoch)
    model.fit(batches, steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=[batches.epoch_callback(), timer, checkpointer], verbose=0)
    history = checkpointer.state["history"]
    speed = common.steady_rate(steps_per_epoch * config.batch_size, timer.seconds)
    progress(f"{model_name} batch {config.batch_size}, {device.mixed_precision}, XLA {device.jit_compile}: {speed:,.0f} images/s")
    return {
        "model": model_name,
        "params": model.count_params(),
        "images_per_second": speed,
        "batch_size": config.batch_size,
        "steps_per_execution": steps_per_execution,
        "mixed_precision": device.mixed_precision,
        "jit_compile": device.jit_compile,
        "epoch_seconds_with_checkpoint": [row["seconds"] for row in history],
        "first_epoch_seconds": timer.seconds[0],
        "finite_loss": bool(np.isfinite(history[-1]["loss"])),
    }


def torch_resnet20_speed(images, labels, batch_size: int, epochs: int, compile_model: bool) -> dict | str:
    """Plain PyTorch ResNet20 v1 (the v1 block of He et al., 16/32/64 filters, 3 blocks a stage):
    Adam, bfloat16 autocast, channels_last, shift + flip on the device; images/s after epoch 1."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return "not measured: PyTorch is not installed"

    device = "cuda" if torch.cuda.is_available() else "cpu"

    class Block(nn.Module):
        def __init__(self, inputs: int, filters: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, filters, 3, stride, 1, bias=False)
            self.norm1 = nn.BatchNorm2d(filters)
            self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(filters)
            self.shortcut = nn.Sequential()
            if stride != 1 or inputs != filters:
                self.shortcut = nn.Sequential(nn.Conv2d(inputs, filters, 1, stride, bias=False), nn.BatchNorm2d(filters))

        def forward(self, x):
            y = torch.relu(self.norm1(self.conv1(x)))
            return torch.relu(self.norm2(self.conv2(y)) + self.shortcut(x))

    layers, inputs = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        for index in range(3):
            layers.append(Block(inputs, filters, stride if index == 0 else 1))
            inputs = filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    network = nn.Sequential(*layers).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    step_network = torch.compile(network) if compile_model else network
    data = torch.from_numpy(images).to(device)  # uint8 NHWC, like ours
    targets = torch.from_numpy(labels).long().to(device)
    mean = data.float().mean(dim=0) / 255.0
    generator = torch.Generator(device=device).manual_seed(0)
    rows_base = torch.arange(32, device=device)

    def augment(batch):  # per-image shift of up to 4 pixels with edge fill, and flip: one gather
        count = batch.shape[0]
        row_offsets = torch.randint(-4, 5, (count, 1), device=device, generator=generator)
        column_offsets = torch.randint(-4, 5, (count, 1), device=device, generator=generator)
        rows = (rows_base[None, :] + row_offsets).clamp(0, 31)
        columns = (rows_base[None, :] + column_offsets).clamp(0, 31)
        flips = torch.rand((count, 1), device=device, generator=generator) < 0.5
        columns = torch.where(flips, 31 - columns, columns)
        positions = (rows[:, :, None] * 32 + columns[:, None, :]).reshape(count, -1, 1).expand(-1, -1, 3)
        return batch.reshape(count, -1, 3).gather(1, positions).reshape(count, 32, 32, 3)

    steps_per_epoch = -(-len(images) // batch_size)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(images), device=device, generator=generator)
        order = torch.cat([order, order[: steps_per_epoch * batch_size - len(images)]])  # full batches
        for step in range(steps_per_epoch):
            chosen = order[step * batch_size:(step + 1) * batch_size]
            batch = (augment(data[chosen]).float() / 255.0 - mean).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(step_network(batch), targets[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    speed = common.steady_rate(steps_per_epoch * batch_size, seconds)
    progress(f"plain PyTorch ResNet20 batch {batch_size} on {device}: {speed:,.0f} images/s")
    return {"images_per_second": speed, "batch_size": batch_size, "compiled": compile_model, "torch": torch.__version__,
            "epoch_seconds": seconds}


def machine() -> dict:
    import platform

    import jax

    from components.keras_setup import keras

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": common.cpu_model_name(),
        "cpu_cores": os.cpu_count(),
        "devices": [device.device_kind for device in jax.devices()],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "keras": keras.__version__,
    }


def has_gpu() -> bool:
    import jax

    return any(device.platform == "gpu" for device in jax.devices())


def main() -> int:
    from pipeline.config import get_preset

    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    if not arguments.tiny and not has_gpu():
        print("no GPU: nothing measured (run with --tiny to exercise the code on the CPU)")
        return 0
    if arguments.tiny:
        arguments.models, arguments.batch_size, arguments.images, arguments.epochs = list(TINY_MODELS), 32, 96, 2
    images, labels = random_cifar_like(arguments.images)
    fast = dict(get_preset("fast").train)
    fast_model = get_preset("fast").models[0]
    speed_fields = {"batch_size": arguments.batch_size, "horizontal_flip": True, "shift_fraction": 0.125}
    if arguments.tiny:
        fast = {**fast, "batch_size": arguments.batch_size, "reference_batch_size": arguments.batch_size}
    with tempfile.TemporaryDirectory(prefix="cnnpipe-gpu-") as work_dir:
        ours = {name: [] for name in arguments.models}
        baseline = []
        for _ in range(arguments.repeats):
            for name in arguments.models:
                ours[name].append(training_step_speed(name, images, labels, speed_fields, arguments.epochs, work_dir))
            baseline.append(torch_resnet20_speed(images, labels, arguments.batch_size, arguments.epochs, not arguments.tiny))
        fast_run = training_step_speed(fast_model, images, labels, dict(fast, horizontal_flip=True), arguments.epochs, work_dir)
    speeds = {name: common.median([run["images_per_second"] for run in runs]) for name, runs in ours.items()}
    torch_speed = common.median([run["images_per_second"] for run in baseline]) if isinstance(baseline[0], dict) else None
    result = {
        "benchmark": NAME, "tiny": arguments.tiny, "backend": "jax", "images_per_epoch": arguments.images,
        "batch_size": arguments.batch_size, "repeats": arguments.repeats,
        "ours_images_per_second": speeds,
        "ours_runs": ours,
        "pytorch_resnet20_images_per_second": torch_speed if torch_speed is not None else baseline[0],
        "pytorch_runs": baseline if torch_speed is not None else [],
        # ours ÷ plain PyTorch for resnet20_v1 at the same batch; NaN where PyTorch is missing
        "ratio": speeds["resnet20_v1"] / torch_speed if torch_speed and "resnet20_v1" in speeds else math.nan,
        "fast_preset": {"model": fast_model, "batch_size": fast["batch_size"],
                        "seconds_per_epoch_with_checkpoint": common.median(fast_run["epoch_seconds_with_checkpoint"][1:]),
                        "images_per_second": fast_run["images_per_second"]},
        "goal": "resnet20_v1 >= 100000 images/s with augmentation on, ahead of plain PyTorch at the same batch",
        "machine": machine(),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
