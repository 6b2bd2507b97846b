"""Shared pytest fixtures: small generated datasets (see datagen.py)."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of test output

from datagen import make_cifar_binary_archive, make_image_folder  # noqa: E402  (after the env var on purpose)


@pytest.fixture
def image_folder(tmp_path):
    """A small RGB PNG image folder `pets/` (2 classes, 4 train + 2 test images each): (root, arrays written)."""
    root = tmp_path / "pets"
    return str(root), make_image_folder(root)


@pytest.fixture
def cifar_archive(tmp_path):
    """A small CIFAR-10 binary archive (5 x 3 train, 4 test records): (path, arrays written)."""
    path = tmp_path / "cifar-10-binary.tar.gz"
    return str(path), make_cifar_binary_archive(path)
