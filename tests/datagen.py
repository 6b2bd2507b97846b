"""Tiny real datasets for tests: an image folder of PNG/JPEG files and a CIFAR-10 binary archive.

Both return the arrays they wrote, in the order data prep reads them back (classes sorted by
name, files sorted by name), so a test can compare a round trip exactly.
"""

import io
import itertools
import os
import tarfile

import numpy as np
from PIL import Image

CIFAR_SIDE = 32
CIFAR_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_MEMBER_FOLDER = "cifar-10-batches-bin"


def random_images(generator: np.random.Generator, count: int, size: tuple[int, int], channels: int) -> np.ndarray:
    """Random uint8 images [count, height, width, channels]."""
    return generator.integers(0, 256, size=(count, *size, channels), dtype=np.uint8)


def make_image_folder(
    root,
    classes=("cat", "dog"),
    per_class=(4, 2),
    size=(12, 10),
    mode="RGB",
    image_format="png",
    seed=0,
) -> dict:
    """Write ``root/{train,test}/<class>/image_NNN.<format>`` with Pillow and return what was written.

    Args:
        root: folder to create.
        classes: class folder names.
        per_class: images per class as (train, test), or one int for both.
        size: (height, width) in pixels.
        mode: Pillow mode, "L" (grayscale) or "RGB".
        image_format: "png" (lossless, exact round trip), "jpg" or "bmp".
        seed: seed of the random pixel values.

    Returns:
        {"train": (images uint8 [N, H, W, C], labels int32 [N]), "test": (...), "class_names": [...]}
        with labels indexing the sorted class names.
    """
    channels = 1 if mode == "L" else 3
    generator = np.random.default_rng(seed)
    return write_folder(root, classes, per_class, lambda count: random_images(generator, count, size, channels),
                        image_format, mode)


def write_folder(root, classes, per_class, make_images, image_format="png", mode="RGB") -> dict:
    """Writes ``root/{train,test}/<class>/image_NNN.<format>`` from ``make_images(count)`` (uint8
    [count, H, W, C], called per split and class in reading order); returns what was written."""
    train_count, test_count = (per_class, per_class) if isinstance(per_class, int) else per_class
    class_names = sorted(classes)
    written = {"class_names": class_names}
    for split, count in (("train", train_count), ("test", test_count)):
        images, labels = [], []
        for label, class_name in enumerate(class_names):
            class_dir = os.path.join(root, split, class_name)
            os.makedirs(class_dir, exist_ok=True)
            class_images = make_images(count)
            for index, pixels in enumerate(class_images):
                save_image(pixels, os.path.join(class_dir, f"image_{index:03d}.{image_format}"), mode)
            images.append(class_images)
            labels.append(np.full(count, label, dtype=np.int32))
        written[split] = (np.concatenate(images), np.concatenate(labels))
    return written


def save_image(pixels: np.ndarray, path, mode: str = "RGB") -> None:
    """Save uint8 [H, W, C] pixels with Pillow in ``mode``; the format follows the file extension."""
    array = pixels[..., 0] if mode == "L" else pixels
    Image.fromarray(array, mode=mode).save(path)


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 binary records: per image 1 label byte then the R, G and B 32x32 planes."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, np.newaxis], planes], axis=1).tobytes()


def make_cifar_binary_archive(path, n_train_per_batch=3, n_test=4, omit=(), seed=0) -> dict:
    """Write a real ``.tar.gz`` with the CIFAR-10 binary layout and return what it holds.

    Args:
        path: archive file to write.
        n_train_per_batch: records in each of data_batch_1.bin ... data_batch_5.bin.
        n_test: records in test_batch.bin.
        omit: member base names to leave out (to test an incomplete archive).
        seed: seed of the random pixels and labels.

    Returns:
        {"train": (images uint8 [N, 32, 32, 3], labels int32 [N]), "test": (...), "class_names": [...]}
    """
    generator = np.random.default_rng(seed)
    num_classes = len(CIFAR_CLASS_NAMES)
    batches = {}
    for number in range(1, 6):
        batches[f"data_batch_{number}.bin"] = (
            random_images(generator, n_train_per_batch, (CIFAR_SIDE, CIFAR_SIDE), 3),
            generator.integers(0, num_classes, n_train_per_batch).astype(np.int32),
        )
    batches["test_batch.bin"] = (
        random_images(generator, n_test, (CIFAR_SIDE, CIFAR_SIDE), 3),
        generator.integers(0, num_classes, n_test).astype(np.int32),
    )
    members = {name: cifar_records(*arrays) for name, arrays in batches.items()}
    members["batches.meta.txt"] = ("\n".join(CIFAR_CLASS_NAMES) + "\n\n").encode()

    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            if name in omit:
                continue
            info = tarfile.TarInfo(f"{CIFAR_MEMBER_FOLDER}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

    train = [batches[f"data_batch_{number}.bin"] for number in range(1, 6)]
    return {
        "train": (np.concatenate([images for images, _ in train]), np.concatenate([labels for _, labels in train])),
        "test": batches["test_batch.bin"],
        "class_names": list(CIFAR_CLASS_NAMES),
    }


def make_numbered_folder(root, classes=("a", "b", "c"), per_class=(6, 2), size=(4, 4)) -> dict:
    """An RGB PNG image folder whose image number n (over train then test, in reading order) has
    every pixel equal to n, so a pipeline's output can be traced back to its source image.

    Returns {"train": (images, labels), "test": (...)} like make_image_folder.
    """
    numbers = itertools.count()

    def numbered_images(count: int) -> np.ndarray:
        images = np.empty((count, *size, 3), dtype=np.uint8)
        for image in images:
            image[...] = next(numbers)
        return images

    return write_folder(root, classes, per_class, numbered_images)


def make_digits_folder(root, test_per_class=30) -> None:
    """scikit-learn's bundled handwritten digits (real, learnable, 10 classes of 8x8 grayscale
    images) as ``root/{train,test}/digit<d>/NNNN.png``: the first ``test_per_class`` images of each
    digit are its test images, so the test set stays the same whatever seed a run uses."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)[..., np.newaxis]  # 0..16 -> 0..255
    seen = dict.fromkeys(range(10), 0)
    for index, (image, label) in enumerate(zip(images, digits.target)):
        seen[label] += 1
        directory = os.path.join(root, "test" if seen[label] <= test_per_class else "train", f"digit{label}")
        os.makedirs(directory, exist_ok=True)
        save_image(image, os.path.join(directory, f"{index:04d}.png"), mode="L")
