"""Keyword sources: scikit-learn's bundled digits and the Keras loaders (cifar10, fashion_mnist, mnist).

These arrive as whole in-memory arrays from their libraries (at most 70,000 small images), so
they are streamed out of those arrays in chunks.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import numpy as np

from components.errors import UserError
from components.sources.base import SourceStream, check_labels

KEYWORD_SOURCES = ("digits", "cifar10", "fashion_mnist", "mnist")

# Handwriting looks wrong mirrored; every other keyword source is fine with horizontal flips.
NO_HORIZONTAL_FLIP = frozenset({"digits", "mnist"})

# The bundled digits have no official test split; this share of each class becomes the test split.
DIGITS_TEST_FRACTION = 0.2
DIGITS_MAX_PIXEL_VALUE = 16

# A Keras download with no answer would otherwise wait forever (urlretrieve has no timeout).
DOWNLOAD_TIMEOUT_SECONDS = 60

CIFAR_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASS_NAMES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)

# Images per streamed chunk: large enough to amortise per-chunk work, small next to the arrays.
CHUNK_IMAGES = 1024


def recognizes(source: str) -> bool:
    return source in KEYWORD_SOURCES


def check(source: str) -> None:
    """Keywords need no check before loading."""


def read(source: str, *, seed: int = 0, name: str | None = None) -> SourceStream:
    """The keyword's arrays as a stream."""
    if source == "digits":
        stream = array_stream("digits", tuple(str(digit) for digit in range(10)), *load_digits(seed), allow_horizontal_flip=False)
        return dataclasses.replace(stream, test_held_out_fraction=DIGITS_TEST_FRACTION)
    class_names, arrays = load_keras_dataset(source)
    return array_stream(source, class_names, *arrays, allow_horizontal_flip=source not in NO_HORIZONTAL_FLIP)


def array_stream(
    name: str,
    class_names: tuple[str, ...],
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    allow_horizontal_flip: bool,
) -> SourceStream:
    """A stream over in-memory uint8 [N, H, W, C] images and int32 [N] labels per split."""
    arrays = {"train": (train_images, train_labels), "test": (test_images, test_labels)}
    for split, (images, labels) in arrays.items():
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise UserError(
                f"dataset {name} {split} split has images {images.dtype}{list(images.shape)} and "
                f"{len(labels)} labels; expected uint8 [N, H, W, C] with N labels"
            )
    labels = {split: np.asarray(split_labels, dtype=np.int32) for split, (_, split_labels) in arrays.items()}
    check_labels(name, class_names, labels)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise UserError(
            f"dataset {name} train images are {list(train_images.shape[1:])} but test images are "
            f"{list(test_images.shape[1:])}; give both splits one image size"
        )

    def chunks() -> Iterator[tuple[str, np.ndarray]]:
        for split, (images, _) in arrays.items():
            for start in range(0, len(images), CHUNK_IMAGES):
                yield split, images[start:start + CHUNK_IMAGES]

    return SourceStream(
        name=name,
        class_names=tuple(class_names),
        image_shape=tuple(int(side) for side in train_images.shape[1:]),
        labels=labels,
        allow_horizontal_flip=allow_horizontal_flip,
        chunks=chunks,
    )


def load_digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1797 images, 8x8, values 0..16) with a stratified 80/20 split."""
    from sklearn.datasets import load_digits as sklearn_digits

    from components.sources.splits import stratified_split

    digits = sklearn_digits()
    # Scale 0..16 to 0..255 so every source shares the uint8 convention the trainer expects.
    images = np.rint(digits.images * (255.0 / DIGITS_MAX_PIXEL_VALUE)).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    train_indices, test_indices = stratified_split(labels, DIGITS_TEST_FRACTION, seed)
    return images[train_indices], labels[train_indices], images[test_indices], labels[test_indices]


def load_keras_dataset(keyword: str) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """CIFAR-10, Fashion-MNIST or MNIST through ``keras.datasets`` (downloads on first use)."""
    # Imported here: TensorFlow takes seconds to import and most sources never need it.
    from components.keras_setup import keras

    loaders = {
        "cifar10": (keras.datasets.cifar10, CIFAR_CLASS_NAMES),
        "fashion_mnist": (keras.datasets.fashion_mnist, FASHION_MNIST_CLASS_NAMES),
        "mnist": (keras.datasets.mnist, tuple(str(digit) for digit in range(10))),
    }
    module, class_names = loaders[keyword]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
    try:
        (train_images, train_labels), (test_images, test_labels) = module.load_data()
    except Exception as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(
            f"could not download the {keyword} dataset ({reason}); without internet access use a local "
            "image folder (<class>/*.jpg, or train/<class>/ and test/<class>/) or a CIFAR-10 binary archive "
            "(cifar-10-binary.tar.gz) as the source"
        ) from error
    finally:
        socket.setdefaulttimeout(previous_timeout)
    arrays = (
        _with_channel_axis(train_images),
        train_labels.reshape(-1).astype(np.int32),
        _with_channel_axis(test_images),
        test_labels.reshape(-1).astype(np.int32),
    )
    return class_names, arrays


def _with_channel_axis(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C]; grayscale loaders return [N, H, W]."""
    images = np.asarray(images, dtype=np.uint8)
    return images[..., np.newaxis] if images.ndim == 3 else images
