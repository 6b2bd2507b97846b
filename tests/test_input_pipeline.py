"""Training and evaluation pipelines over prepared shards, streamed and cached in memory."""

import collections

import numpy as np
import pytest
from datagen import make_numbered_folder

from components import data_prep, input_pipeline
from components.data_prep import prepare
from components.dataset import open_dataset
from components.errors import UserError
from components.input_pipeline import (
    ArrayBatches,
    make_eval_dataset,
    make_train_dataset,
    resolve_cache,
    split_arrays,
    steps_per_epoch_for,
)


@pytest.fixture
def reader(tmp_path, monkeypatch):
    """A numbered folder (3 classes x 6 train + 2 test, 4x4) prepared into 4 train shards."""
    monkeypatch.setattr(data_prep, "MIN_SHARD_BYTES", 1)
    monkeypatch.setattr(data_prep, "MIN_SHARDS_PER_SPLIT", 4)
    make_numbered_folder(tmp_path / "numbers")
    prepare(str(tmp_path / "numbers"), str(tmp_path / "dataset"))
    return open_dataset(str(tmp_path / "dataset"))


def image_numbers(images) -> list[int]:
    """The number every pixel of each (unaugmented) numbered image holds."""
    return [int(image[0, 0, 0]) for image in np.asarray(images)]


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_train_batches_are_full_labelled_and_cover_every_image(reader, cache):
    batch_size = 4
    steps = steps_per_epoch_for(reader.count("train"), batch_size)
    dataset = make_train_dataset(reader, batch_size, seed=1, cache=cache)
    seen = collections.Counter()
    for images, labels in dataset.take(3 * steps).as_numpy_iterator():
        assert images.shape == (batch_size, 4, 4, 3) and images.dtype == np.uint8  # augmented in the step
        assert labels.shape == (batch_size, 3)
        numbers = image_numbers(images)
        # Numbers 0..5 are class a, 6..11 class b, 12..17 class c: each image keeps its label.
        assert [number // 6 for number in numbers] == labels.argmax(axis=1).tolist()
        seen.update(numbers)
    assert set(seen) == set(range(18))
    assert sum(seen.values()) == 3 * steps * batch_size  # 60 images: a little over three passes
    if cache == "memory":  # whole passes are permutations, so each image came 3 or 4 times
        assert set(seen.values()) <= {3, 4}


def test_memory_cache_shuffles_every_pass_and_follows_the_seed(reader):
    def first_passes(seed):
        dataset = make_train_dataset(reader, 6, seed=seed, cache="memory")
        return [image_numbers(images) for images, _ in dataset.take(6).as_numpy_iterator()]

    passes = first_passes(3)
    assert sorted(sum(passes[:3], [])) == list(range(18))  # a pass is a permutation of the split
    assert sum(passes[:3], []) != sum(passes[3:], [])  # the next pass is shuffled anew
    assert first_passes(3) == passes
    assert first_passes(4) != passes


def test_worker_share_trains_on_its_own_images(reader):
    dataset = make_train_dataset(reader, 2, seed=0, cache="none", shard_index=0, shard_count=2)
    numbers = {number for images, _ in dataset.take(20).as_numpy_iterator() for number in image_numbers(images)}
    other = {number for images, _ in make_train_dataset(reader, 2, seed=0, cache="memory", shard_index=1, shard_count=2)
             .take(20).as_numpy_iterator() for number in image_numbers(images)}
    assert numbers and other and not numbers & other and numbers | other == set(range(18))


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_eval_dataset_is_every_image_in_file_order(reader, cache):
    dataset = make_eval_dataset(reader, "test", batch_size=4, cache=cache)
    for _ in range(2):  # a second pass (the next epoch's validation) gives the same
        batches = list(dataset.as_numpy_iterator())
        assert [len(labels) for _, labels in batches] == [4, 2]
        numbers = image_numbers(np.concatenate([images for images, _ in batches]))
        assert numbers == list(range(18, 24)) and batches[0][0].dtype == np.uint8
        assert np.concatenate([labels for _, labels in batches]).argmax(axis=1).tolist() == [0, 0, 1, 1, 2, 2]


def test_auto_cache_follows_available_memory(monkeypatch):
    monkeypatch.setattr(input_pipeline, "available_memory_bytes", lambda: 4_000)
    assert resolve_cache("auto", 1_000) == "memory"
    assert resolve_cache("auto", 1_001) == "none"
    assert resolve_cache("none", 1) == "none" and resolve_cache("memory", 10**15) == "memory"
    with pytest.raises(ValueError, match="cache must be one of auto, memory, none, got 'disk'"):
        resolve_cache("disk", 1)


def test_available_memory_is_plausible():
    assert 0 < input_pipeline.available_memory_bytes() < 1 << 50


# --- the NumPy feeder (JAX) ----------------------------------------------------------------------


def batch_numbers(batches, epochs, first_epoch=0):
    """The image numbers of every batch of fit's epochs first_epoch .. first_epoch + epochs - 1."""
    taken = []
    for epoch in range(first_epoch, first_epoch + epochs):
        batches.start_epoch(epoch)
        taken += [image_numbers(batches[index][0]) for index in range(len(batches))]
    return taken


def test_array_batches_are_full_passes_run_into_each_other_and_follow_the_seed(reader):
    images, labels = split_arrays(reader, "train")
    np.testing.assert_array_equal(images, reader.arrays("train")[0])  # read without TensorFlow, the same
    batches = ArrayBatches(images, labels, 3, batch_size=4, seed=2, steps_per_epoch=steps_per_epoch_for(18, 4))
    assert len(batches) == 5
    first_images, first_labels = batches[0]
    assert first_images.shape == (4, 4, 4, 3) and first_images.dtype == np.uint8 and first_labels.shape == (4, 3)
    assert [number // 6 for number in image_numbers(first_images)] == first_labels.argmax(axis=1).tolist()
    numbers = sum(batch_numbers(batches, 4), [])  # 80 images: four passes of 18, and 8 of the fifth
    passes = [numbers[start:start + 18] for start in range(0, 72, 18)]
    assert all(sorted(one_pass) == list(range(18)) for one_pass in passes) and passes[0] != passes[1]
    again = ArrayBatches(images, labels, 3, 4, seed=2, steps_per_epoch=5)
    assert batch_numbers(again, 1)[0] == numbers[:4]
    assert batch_numbers(ArrayBatches(images, labels, 3, 4, seed=3, steps_per_epoch=5), 1)[0] != numbers[:4]


def test_array_batches_resume_exactly_where_a_run_stopped(reader):
    images, labels = split_arrays(reader, "train")
    uninterrupted = batch_numbers(ArrayBatches(images, labels, 3, batch_size=5, seed=1, steps_per_epoch=4), 3)
    resumed = batch_numbers(ArrayBatches(images, labels, 3, batch_size=5, seed=1, steps_per_epoch=4), 1, first_epoch=2)
    assert resumed == uninterrupted[8:]


def test_a_split_the_numpy_feeder_cannot_hold_is_refused_with_the_fix(reader, monkeypatch):
    monkeypatch.setattr(input_pipeline, "available_memory_bytes", lambda: 100)
    with pytest.raises(UserError, match="jax backend holds the train split in memory.*--backend tensorflow"):
        split_arrays(reader, "train")
    with pytest.raises(UserError, match="cache none"):
        split_arrays(reader, "train", cache="none")
