"""CPU efficiency: training FLOP/s of ResNet20 v1 as a share of this machine's matmul FLOP/s.

FLOP convention (stated because conventions differ by 2x):
- forward FLOPs per image = 2 x multiply-accumulates of every Conv2D and Dense layer
  (H_out x W_out x C_out x kh x kw x C_in / groups for a convolution, inputs x units for a
  dense layer); batch norm, activations, pooling, additions and the optimizer update are not
  counted (a few percent);
- training FLOPs per image = 3 x forward (the backward pass computes gradients with respect to
  the activations and to the weights, each about one forward's work).
- peak = float32 2048x2048 matmul (2 x 2048^3 FLOPs each) timed in the same process.

ours:     train.py's path (tf.data uint8 input, augmentation, preprocessing layers, the
          resolved steps_per_execution, oneDNN on as components/keras_setup.py sets it) at
          the given batch size (default 128, the seed documents').
baseline: plain Keras (`model.fit` on pre-made float arrays, Adam, batch 128, Keras defaults)
          with oneDNN off, TensorFlow's default on this CPU; since that is fixed when
          TensorFlow starts, the baseline runs in a child process (`--worker`), alternating
          with ours.
figure:   ours training FLOP/s ÷ matmul FLOP/s (plain Keras ≈ 0.37; target >= 0.45).

`--explore` also measures each setting that might raise it (batch size, steps_per_execution,
XLA, thread pools, oneDNN on/off, channels-first), `--repeats` times in turn, reporting medians;
settings that must be fixed before TensorFlow starts run in a child process of this script
(`--worker`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common
import throughput
from common import median
from components.keras_setup import keras, tf

NAME = "cpu_efficiency"
MATMUL_SIZE = 2048


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="resnet20_v1", help="zoo name (default resnet20_v1)")
    parser.add_argument("--images", type=int, default=2048, help="random CIFAR-shaped training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128, help="ours' batch size (default 128)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement; the first is not counted")
    parser.add_argument("--matmul-size", type=int, default=MATMUL_SIZE, help=f"square matmul side of the peak (default {MATMUL_SIZE})")
    parser.add_argument("--explore", action="store_true", help="also measure the settings that might raise the ratio")
    parser.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # internal: one child measurement


def forward_flops_per_image(model) -> int:
    """2 x multiply-accumulates of the Conv2D and Dense layers of `model` (nested models included)."""
    multiply_accumulates = 0
    for layer in iterate_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            output_height, output_width, output_channels = layer.output.shape[1:]
            kernel_height, kernel_width, input_channels_per_group, _ = layer.kernel.shape
            multiply_accumulates += output_height * output_width * output_channels * kernel_height * kernel_width * input_channels_per_group
        elif isinstance(layer, keras.layers.Dense):
            input_units, units = layer.kernel.shape
            multiply_accumulates += input_units * units
    return 2 * int(multiply_accumulates)


def iterate_layers(model):
    """Every leaf layer of `model`, descending into nested models."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from iterate_layers(layer)
        else:
            yield layer


def training_flops_per_image(model_name: str, input_shape=(32, 32, 3), num_classes: int = 10) -> int:
    """3 x forward FLOPs (see the module docstring for the convention)."""
    from components import models

    return 3 * forward_flops_per_image(models.build_model(model_name, input_shape, num_classes))


def matmul_flops_per_second(size: int = MATMUL_SIZE, calls: int = 10) -> float:
    """float32 size x size matmul FLOP/s: 2 x size^3 per call, median of `calls` timed calls."""
    left = tf.random.uniform((size, size))
    right = tf.random.uniform((size, size))

    @tf.function
    def multiply(a, b):
        return tf.reduce_sum(tf.matmul(a, b))

    for _ in range(2):
        multiply(left, right).numpy()
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        multiply(left, right).numpy()
        durations.append(time.perf_counter() - started)
    return 2 * size**3 / median(durations)


def measure_ours(arguments, images, labels, **config_overrides) -> float:
    """Training images/s of train.py's path with TrainConfig(batch_size, augment on, **overrides)."""
    from components.recipe import TrainConfig

    config = TrainConfig(batch_size=arguments.batch_size, horizontal_flip=True, **config_overrides)
    return throughput.train_path_images_per_second(arguments.model, images, labels, 10, config, epochs=arguments.epochs)["images_per_second"]


def measure_baseline(arguments, images, labels) -> float:
    return throughput.plain_fit_images_per_second(arguments.model, images, labels, 10, 128, epochs=arguments.epochs)["images_per_second"]


def run_worker(arguments) -> int:
    """Child process: apply thread / data-format settings, measure ours (or the baseline) and the
    matmul, print JSON."""
    settings = json.loads(arguments.worker)
    if "intra_op_threads" in settings:
        tf.config.threading.set_intra_op_parallelism_threads(settings["intra_op_threads"])
    if "inter_op_threads" in settings:
        tf.config.threading.set_inter_op_parallelism_threads(settings["inter_op_threads"])
    if settings.get("image_data_format"):
        keras.config.set_image_data_format(settings["image_data_format"])
    images, labels = throughput.random_cifar_like(arguments.images)
    result = {"settings": settings}
    try:
        measure = measure_baseline if settings.get("baseline") else measure_ours
        result["images_per_second"] = measure(arguments, images, labels)
        result["matmul_flops_per_second"] = matmul_flops_per_second(arguments.matmul_size)
    except Exception as error:  # a setting the CPU kernels refuse is a finding, not a crash
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    print("WORKER_RESULT " + json.dumps(result))
    return 0


def run_in_child(arguments, settings: dict, environment: dict | None = None) -> dict:
    """Runs this script with --worker in a fresh process (thread pools and oneDNN are fixed at start-up)."""
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", json.dumps(settings), "--model", arguments.model,
        "--images", str(arguments.images), "--batch-size", str(arguments.batch_size), "--epochs", str(arguments.epochs),
        "--matmul-size", str(arguments.matmul_size),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(environment or {})})
    for line in completed.stdout.splitlines():
        if line.startswith("WORKER_RESULT "):
            return json.loads(line[len("WORKER_RESULT "):])
    return {"settings": settings, "error": f"exit {completed.returncode}: {completed.stderr.strip().splitlines()[-1:]}"}


def explore(arguments, images, labels, flops_per_image: float) -> list[dict]:
    """Each candidate setting measured `arguments.repeats` times, the settings taking turns so that
    a slow spell of the machine hits all of them; each row has the median images/s and ratio."""
    samples: dict[str, list[dict]] = {}

    def record(name: str, images_per_second: float | None, matmul: float | None, error: str | None = None) -> None:
        sample = {"images_per_second": images_per_second, "matmul_flops_per_second": matmul, "error": error}
        if images_per_second and matmul:
            sample["ratio"] = images_per_second * flops_per_image / matmul
        samples.setdefault(name, []).append(sample)
        print(f"explore: {name}: {sample.get('ratio', error)}", file=sys.stderr)

    in_process = [(f"batch_size={size}", {"batch_size": size}, {}) for size in (64, 256, 512)] + [
        ("jit_compile=True", {}, {"jit_compile": True}),
        ("steps_per_execution=1", {}, {"steps_per_execution": 1}),
    ]
    children = [
        ("intra_op_threads=2,inter_op_threads=1", {"intra_op_threads": 2, "inter_op_threads": 1}, None),
        ("intra_op_threads=1,inter_op_threads=2", {"intra_op_threads": 1, "inter_op_threads": 2}, None),
        ("TF_ENABLE_ONEDNN_OPTS=0", {}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
        ("TF_ENABLE_ONEDNN_OPTS=1", {}, {"TF_ENABLE_ONEDNN_OPTS": "1"}),
        ("image_data_format=channels_first", {"image_data_format": "channels_first"}, None),
    ]
    if arguments.tiny:  # one of each kind keeps both code paths exercised
        in_process, children = in_process[-1:], children[:1]
    for _ in range(arguments.repeats):
        for name, argument_overrides, config_overrides in in_process:
            matmul = matmul_flops_per_second(arguments.matmul_size)
            setting_arguments = argparse.Namespace(**{**vars(arguments), **argument_overrides})
            record(name, measure_ours(setting_arguments, images, labels, **config_overrides), matmul)
        for name, settings, environment in children:
            child = run_in_child(arguments, settings, environment)
            record(name, child.get("images_per_second"), child.get("matmul_flops_per_second"), child.get("error"))
    return [summarize(name, runs) for name, runs in samples.items()]


def summarize(name: str, runs: list[dict]) -> dict:
    """Median images/s, matmul and ratio of a setting's runs (the failed ones only if all failed)."""
    measured = [run for run in runs if "ratio" in run]
    if not measured:
        return {"setting": name, "error": runs[0]["error"]}
    row = {key: median([run[key] for run in measured]) for key in ("images_per_second", "matmul_flops_per_second", "ratio")}
    return {"setting": name, **row, "ratio_per_repeat": [run["ratio"] for run in measured]}


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    if arguments.tiny:
        arguments.model, arguments.images, arguments.batch_size, arguments.epochs = "lenet5", 64, 16, 2
        arguments.matmul_size = 256
    if arguments.worker:
        return run_worker(arguments)
    machine = common.machine_description()
    flops_per_image = training_flops_per_image(arguments.model)
    images, labels = throughput.random_cifar_like(arguments.images)
    ours, baseline, matmul = [], [], []
    for _ in range(arguments.repeats):
        matmul.append(matmul_flops_per_second(arguments.matmul_size))
        ours.append(measure_ours(arguments, images, labels))
        baseline_run = run_in_child(arguments, {"baseline": True}, {"TF_ENABLE_ONEDNN_OPTS": "0"})
        if "error" in baseline_run:
            raise RuntimeError(f"baseline run failed: {baseline_run['error']}")
        baseline.append(baseline_run["images_per_second"])
    peak = median(matmul)
    result = {
        "benchmark": NAME,
        "tiny": arguments.tiny,
        "model": arguments.model,
        "flop_convention": "training = 3 x forward; forward = 2 x MACs of Conv2D and Dense layers",
        "training_flops_per_image": flops_per_image,
        "matmul_size": arguments.matmul_size,
        "matmul_flops_per_second": peak,
        "batch_size": arguments.batch_size,
        "repeats": arguments.repeats,
        "ours_images_per_second": median(ours),
        "baseline_images_per_second": median(baseline),
        "ours_ratio": median(ours) * flops_per_image / peak,
        "baseline_ratio": median(baseline) * flops_per_image / peak,
        "ours_per_repeat": ours,
        "baseline_per_repeat": baseline,
        "matmul_per_repeat": matmul,
        "target": "ours_ratio >= 0.45",
        "machine": machine,
    }
    result["ratio"] = result["ours_ratio"]
    if arguments.explore:
        result["explore"] = explore(arguments, images, labels, flops_per_image)
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
