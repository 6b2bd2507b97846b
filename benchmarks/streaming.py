"""Datasets at scale: prep's peak memory at 6,000 vs 60,000 images, and training speed when the
train split is streamed from its shards (cache "none") vs held in memory.

Prep: `prepare()` of the CIFAR-10 JPEG folder (train/<class>/*.jpg, test/<class>/*.jpg) and of a
6,000-image subset of it (hard links in a scratch directory), each in a fresh subprocess; peak memory
is the child's maximum resident set size. Training: ResNet20 v1 (components.models) on the prepared
60,000-image dataset, batch 128, shifts and flips, one compiled model fed by three pipelines that
take turns (A/B/C/A/B/C ...) so that a shared CPU's changing load hits them alike:
    arrays   the in-memory path used before shards: from_tensor_slices over uint8 arrays,
             shuffle(all), batch, augment;
    memory   make_train_dataset(cache="memory");
    none     make_train_dataset(cache="none"), reading the shards every pass.
Each turn times `--steps` steps after `--warmup` untimed ones; a path's figure is the median of its
turns. ratio = streaming (none) / arrays.

    python benchmarks/streaming.py --folder /work/data/cifar10
    python benchmarks/streaming.py --tiny      # a generated folder and LeNet5, seconds
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

BATCH_SIZE = 128
MODEL_NAME = "resnet20_v1"
TINY_MODEL_NAME = "lenet5"  # --tiny only proves the script still runs: the cheapest model to train
SUBSET_PER_CLASS = (500, 100)  # train, test images per class of the 6,000-image subset


def add_arguments(parser) -> None:
    parser.add_argument("--folder", default="/work/data/cifar10", help="the CIFAR-10 JPEG image folder")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per turn")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of a turn")


def make_subset(folder: str, destination: str, per_class: tuple[int, int]) -> None:
    """The first per_class[0] train and per_class[1] test images of every class, as hard links
    (prep refuses symbolic links that lead out of the folder), or copies across file systems."""
    for split, count in zip(("train", "test"), per_class):
        for class_name in sorted(os.listdir(os.path.join(folder, split))):
            source_dir = os.path.join(folder, split, class_name)
            target_dir = os.path.join(destination, split, class_name)
            os.makedirs(target_dir)
            for name in sorted(os.listdir(source_dir))[:count]:
                try:
                    os.link(os.path.join(source_dir, name), os.path.join(target_dir, name))
                except OSError:
                    shutil.copyfile(os.path.join(source_dir, name), os.path.join(target_dir, name))


def measure_prepare(source: str, output_dir: str) -> dict:
    """Runs prepare(source, output_dir) in a fresh Python; its seconds and peak resident memory."""
    script = (
        "import resource, sys; sys.path.insert(0, %r)\n"
        "from components.data_prep import prepare\n"
        "prepare(%r, %r)\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    ) % (common.REPOSITORY_ROOT, source, output_dir)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak_kilobytes = int(result.stdout.split("PEAK_KB")[-1])
    with open(os.path.join(output_dir, "manifest.json")) as manifest_file:
        images = sum(json.load(manifest_file)["splits"].values())
    return {"images": images, "seconds": seconds, "peak_memory_mb": peak_kilobytes / 1024}


def arrays_pipeline(images, labels, num_classes: int, seed: int, tf):
    """The in-memory pipeline used before shards, for comparison (uint8 batches, augmented in the step)."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.batch(BATCH_SIZE, drop_remainder=True)
    return dataset.map(lambda batch_images, batch_labels: (batch_images, tf.one_hot(batch_labels, num_classes))).prefetch(tf.data.AUTOTUNE)


def time_steps(model, dataset, warmup: int, steps: int, keras) -> float:
    """Images per second over `steps` train steps that follow `warmup` untimed ones."""
    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (warmup, warmup + steps):
                marks[batch + 1] = time.perf_counter()

    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[Clock()])
    return steps * BATCH_SIZE / (marks[warmup + steps] - marks[warmup])


def main() -> None:
    arguments = common.parse_arguments("streaming", __doc__.splitlines()[0], add_arguments)
    scratch = tempfile.mkdtemp(prefix="cnnpipe-streaming-")
    load_at_start = os.getloadavg()[0]
    folder = arguments.folder
    if arguments.tiny:
        sys.path.insert(0, os.path.join(common.REPOSITORY_ROOT, "tests"))
        from datagen import make_image_folder

        folder = os.path.join(scratch, "generated")
        make_image_folder(folder, classes=tuple("abcdefghij"), per_class=(50, 10), size=(32, 32), image_format="jpg")
        arguments.steps, arguments.warmup = 3, 2
    subset_per_class = (5, 1) if arguments.tiny else SUBSET_PER_CLASS

    common.progress("prepare: subset")
    make_subset(folder, os.path.join(scratch, "subset"), subset_per_class)
    small = measure_prepare(os.path.join(scratch, "subset"), os.path.join(scratch, "subset_dataset"))
    common.progress(f"prepare: subset {small}")
    full_dataset = os.path.join(scratch, "full_dataset")
    full = measure_prepare(folder, full_dataset)
    common.progress(f"prepare: full {full}")

    from components import input_pipeline, models
    from components.augmentation import training_model
    from components.dataset import open_dataset
    from components.keras_setup import keras, tf

    reader = open_dataset(full_dataset)
    images, labels = reader.arrays("train")
    pipelines = {
        "arrays": arrays_pipeline(images, labels, reader.num_classes, 0, tf),
        "memory": input_pipeline.make_train_dataset(reader, BATCH_SIZE, 0, cache="memory"),
        "none": input_pipeline.make_train_dataset(reader, BATCH_SIZE, 0, cache="none"),
    }
    model_name = TINY_MODEL_NAME if arguments.tiny else MODEL_NAME
    model = training_model(models.build_model(model_name, reader.image_shape, reader.num_classes), (3, 3), flip=True, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    rates = {name: [] for name in pipelines}
    for turn in range(arguments.repeats):
        for name, dataset in pipelines.items():
            rates[name].append(time_steps(model, dataset, arguments.warmup, arguments.steps, keras))
            common.progress(f"turn {turn + 1}: {name} {rates[name][-1]:.0f} images/s")
    medians = {name: common.median(values) for name, values in rates.items()}
    common.write_result(arguments.output, {
        "benchmark": "streaming",
        "tiny": arguments.tiny,
        "folder": folder,
        "prepare": {"subset": small, "full": full, "peak_memory_ratio": full["peak_memory_mb"] / small["peak_memory_mb"]},
        "train": {"model": model_name, "batch_size": BATCH_SIZE, "steps_per_turn": arguments.steps,
                  "images_per_second": rates, "median_images_per_second": medians},
        "ratio": medians["none"] / medians["arrays"],
        "machine": common.machine_description(load_at_start),
    })


if __name__ == "__main__":
    main()
