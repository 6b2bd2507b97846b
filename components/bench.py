"""Speed of one zoo model: forward and forward+backward time per batch over batch sizes.

This is seed document 003's benchmark for any zoo model. Each batch size gets a compiled forward
step and a compiled training step (GradientTape, cross-entropy, optimizer update) on a random
batch that stays in device memory, so only the model's own compute is timed. The first
`warmup_steps` calls (tracing, kernel selection, memory pools) are not counted; the rest give
the mean and standard deviation of seconds per batch and images per second.

`write_bench_outputs` turns the rows into a text table, a PNG plot of time per batch over batch
size (forward and forward+backward) and a JSON file.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from components import checks, storage
from components.errors import UserError

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
PLOT_FILE = "bench.png"
JSON_FILE = "bench.json"
TABLE_FILE = "bench.txt"


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); ValueError naming the bad item otherwise."""
    sizes = []
    for item in (part.strip() for part in text.split(",")):
        if not item.isdigit() or int(item) < 1:
            raise UserError(f"batch size {item!r} in {text!r} is not an integer >= 1; pass e.g. --batch-sizes 1,2,4")
        sizes.append(int(item))
    return tuple(sizes)


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'32,32,3' -> (32, 32, 3); ValueError unless it is three integers >= 1."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise UserError(f"input shape {text!r} is not height,width,channels; pass e.g. --input-shape 32,32,3")
    height, width, channels = (int(part) for part in parts)
    return height, width, channels


def benchmark_model(
    model_name: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    steps: int = 20,
    warmup_steps: int = 5,
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    jit_compile: bool = False,
    seed: int = 0,
    progress_to: TextIO | None = sys.stderr,
) -> list[dict[str, Any]]:
    """Times forward and forward+backward passes of `model_name`, one row per batch size.

    Images smaller than the architecture's minimum input size are measured at that size (what
    training does after its resize layer); the row's `input_shape` says which size was timed.

    Args:
        model_name: Zoo name (see `cnnpipe models`).
        batch_sizes: Images per batch to measure, each >= 1.
        steps: Timed calls per batch size and pass, >= 2 so a standard deviation exists.
        warmup_steps: Untimed calls before those, >= 1 (the first call traces and compiles).
        input_shape: (height, width, channels) of the random images.
        num_classes: Width of the classifier output.
        jit_compile: Compile the steps with XLA.
        seed: Random seed of the weights and of the random batch.
        progress_to: Where a line per measured batch size goes (stderr, so the table on stdout
            stays clean); None for silence.

    Returns:
        Rows with model, params, batch_size, input_shape, device, jit_compile, steps,
        warmup_steps, forward_seconds_mean / _std, forward_images_per_second,
        forward_backward_seconds_mean / _std, forward_backward_images_per_second.
    """
    _check_arguments(batch_sizes, steps, warmup_steps, input_shape, num_classes)
    from components.keras_setup import keras, tf

    from components import models

    shape = measured_input_shape(input_shape, models.get_spec(model_name).min_input_size)
    keras.utils.set_random_seed(seed)
    model = models.build_model(model_name, shape, num_classes)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    forward, train_step = make_steps(model, jit_compile)
    rows = []
    started = time.perf_counter()
    for batch_size in batch_sizes:
        # Each new batch size retraces the steps; the warm-up calls absorb that.
        images = tf.random.uniform((batch_size, *shape), seed=seed)
        labels = tf.one_hot(tf.random.uniform((batch_size,), maxval=num_classes, dtype=tf.int32, seed=seed), num_classes)
        forward_times = time_calls(lambda: forward(images), steps, warmup_steps)
        train_times = time_calls(lambda: train_step(images, labels), steps, warmup_steps)
        rows.append({
            "model": model_name,
            "params": int(model.count_params()),
            "batch_size": int(batch_size),
            "input_shape": list(shape),
            "device": device,
            "jit_compile": bool(jit_compile),
            "steps": int(steps),
            "warmup_steps": int(warmup_steps),
            **summarize("forward", forward_times, batch_size),
            **summarize("forward_backward", train_times, batch_size),
        })
        if progress_to is not None:
            line = describe_progress(rows, batch_sizes, time.perf_counter() - started)
            print(line, file=progress_to, flush=True)
    return rows


def describe_progress(rows: Sequence[dict[str, Any]], batch_sizes: Sequence[int], elapsed: float) -> str:
    """'bench lenet5 [3/8] batch 4: forward 1.20 ms, forward+backward 3.40 ms; 6 s so far, about 40 s left'.

    The time left scales the time so far by the images still to measure: larger batches take
    longer, while the per-size tracing makes this an estimate, not a promise.
    """
    row = rows[-1]
    done, total = len(rows), len(batch_sizes)
    text = (
        f"bench {row['model']} [{done}/{total}] batch {row['batch_size']}: "
        f"forward {1e3 * row['forward_seconds_mean']:.2f} ms, "
        f"forward+backward {1e3 * row['forward_backward_seconds_mean']:.2f} ms; {elapsed:.0f} s so far"
    )
    remaining = sum(batch_sizes[done:])
    if remaining:
        text += f", about {elapsed * remaining / sum(batch_sizes[:done]):.0f} s left"
    return text


def _check_arguments(batch_sizes, steps, warmup_steps, input_shape, num_classes) -> None:
    if not batch_sizes:
        raise UserError("batch sizes must list at least one integer >= 1, got none; pass e.g. --batch-sizes 1,2,4")
    for size in batch_sizes:
        checks.integer("batch size", size, minimum=1, hint="pass e.g. --batch-sizes 1,2,4")
    checks.integer("steps", steps, minimum=2, why="a standard deviation needs two")
    checks.integer("warmup_steps", warmup_steps, minimum=1, why="the first call compiles")
    if len(input_shape) != 3 or not all(checks.is_integer(size) and size >= 1 for size in input_shape):
        raise UserError(f"input_shape must be (height, width, channels) of positive sizes, got {tuple(input_shape)}")
    checks.integer("num_classes", num_classes, minimum=2)


def measured_input_shape(input_shape: Sequence[int], min_input_size: int) -> tuple[int, int, int]:
    """`input_shape` with height and width raised to the architecture's minimum, as training does."""
    height, width, channels = (int(size) for size in input_shape)
    return max(height, min_input_size), max(width, min_input_size), channels


def make_steps(model, jit_compile: bool) -> tuple[Callable, Callable]:
    """A compiled forward step and a compiled training step for `model`.

    Both return a scalar; reading it back to the host is what waits for the device, so the
    timer measures finished work. The training step is seed document 003's forward-backward pass plus
    the optimizer update a real step pays for (SGD: the cheapest update, to time the model).
    """
    from components.keras_setup import keras, tf

    optimizer = keras.optimizers.SGD(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)
    loss_function = keras.losses.CategoricalCrossentropy()

    @tf.function(jit_compile=jit_compile)
    def forward(images):
        return tf.reduce_sum(model(images, training=False))

    @tf.function(jit_compile=jit_compile)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(images, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return forward, train_step


def time_calls(call: Callable[[], Any], steps: int, warmup_steps: int) -> list[float]:
    """Seconds of each of `steps` calls after `warmup_steps` untimed ones (wall clock, host sync)."""
    for _ in range(warmup_steps):
        _to_host(call())
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        _to_host(call())
        durations.append(time.perf_counter() - started)
    return durations


def _to_host(value) -> float:
    return float(value.numpy())


def summarize(prefix: str, durations: Sequence[float], batch_size: int) -> dict[str, float]:
    """Mean and sample standard deviation of seconds per batch, and images per second of the mean."""
    mean = statistics.fmean(durations)
    std = statistics.stdev(durations) if len(durations) > 1 else 0.0
    return {
        f"{prefix}_seconds_mean": mean,
        f"{prefix}_seconds_std": std,
        f"{prefix}_images_per_second": batch_size / mean if mean > 0 else math.inf,
    }


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned text table: times in milliseconds per batch (mean ± std)."""
    header = ["model", "batch", "forward ms", "forward img/s", "fwd+bwd ms", "fwd+bwd img/s"]
    body = [
        [
            row["model"],
            str(row["batch_size"]),
            f"{1e3 * row['forward_seconds_mean']:.2f} ± {1e3 * row['forward_seconds_std']:.2f}",
            f"{row['forward_images_per_second']:,.0f}",
            f"{1e3 * row['forward_backward_seconds_mean']:.2f} ± {1e3 * row['forward_backward_seconds_std']:.2f}",
            f"{row['forward_backward_images_per_second']:,.0f}",
        ]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]
    lines = [header, ["-" * width for width in widths], *body]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def plot_times(rows: Sequence[dict[str, Any]], path: str) -> None:
    """PNG of milliseconds per batch over batch size: forward and forward+backward per model, ± std."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
    for model_name in dict.fromkeys(row["model"] for row in rows):
        model_rows = sorted((row for row in rows if row["model"] == model_name), key=lambda row: row["batch_size"])
        batch_sizes = [row["batch_size"] for row in model_rows]
        for prefix, label, marker in (("forward", "forward", "o"), ("forward_backward", "forward+backward", "s")):
            axes.errorbar(
                batch_sizes,
                [1e3 * row[f"{prefix}_seconds_mean"] for row in model_rows],
                yerr=[1e3 * row[f"{prefix}_seconds_std"] for row in model_rows],
                marker=marker,
                capsize=3,
                label=f"{model_name} {label}",
            )
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size (images)")
    axes.set_ylabel("time per batch (ms)")
    device = rows[0]["device"] if rows else "?"
    axes.set_title(f"Time per batch on {device}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_bench_outputs(rows: Sequence[dict[str, Any]], output_dir: str) -> str:
    """Writes bench.txt (the table), bench.png (the plot) and bench.json (the rows) into
    `output_dir` and returns the table."""
    if not rows:
        raise UserError("no benchmark rows to write; run benchmark_model with at least one batch size")
    os.makedirs(output_dir, exist_ok=True)
    table = format_table(rows)
    storage.write_text(os.path.join(output_dir, TABLE_FILE), table + "\n")
    plot_times(rows, os.path.join(output_dir, PLOT_FILE))
    storage.write_json(os.path.join(output_dir, JSON_FILE), {"rows": list(rows)})
    return table


