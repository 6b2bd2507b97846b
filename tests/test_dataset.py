"""The dataset reader over local shards and over gs:// shards in a real GCS emulator."""

import os

import numpy as np
import pytest
from datagen import make_numbered_folder

from components import data_prep, dataset, storage
from components.data_prep import prepare
from components.dataset import open_dataset


@pytest.fixture
def many_shards(monkeypatch):
    """Tiny shards, so that a few dozen images make several files per split."""
    monkeypatch.setattr(data_prep, "MIN_SHARD_BYTES", 1)
    monkeypatch.setattr(data_prep, "MIN_SHARDS_PER_SPLIT", 4)


@pytest.fixture
def numbered(tmp_path, many_shards):
    """A prepared numbered folder (3 classes x 6 train + 2 test, 4x4 RGB): (dataset dir, arrays written)."""
    written = make_numbered_folder(tmp_path / "numbers")
    prepare(str(tmp_path / "numbers"), str(tmp_path / "dataset"))
    return str(tmp_path / "dataset"), written


def test_reader_facts_and_pixel_mean(numbered):
    location, written = numbered
    reader = open_dataset(location)
    assert reader.name == "numbers"
    assert reader.class_names == ["a", "b", "c"] and reader.num_classes == 3
    assert reader.image_shape == (4, 4, 3)
    assert (reader.count("train"), reader.count("test"), reader.count("validation")) == (18, 6, 0)
    assert reader.validation_split is None  # no validation split: nothing validates, never the test split
    assert len(reader.manifest.shards["train"]) == 4
    np.testing.assert_allclose(reader.pixel_mean(), written["train"][0].mean(axis=0) / 255.0)
    with pytest.raises(ValueError, match="no validation split"):
        reader.examples("validation")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        reader.count("valid")


def test_examples_give_every_image_once_with_its_label(numbered):
    location, written = numbered
    reader = open_dataset(location)
    pairs = [(int(image[0, 0, 0]), int(label)) for image, label in reader.examples("train").as_numpy_iterator()]
    expected = [(int(image[0, 0, 0]), int(label)) for image, label in zip(*written["train"])]
    assert sorted(pairs) == expected
    ordered = [(int(image[0, 0, 0]), int(label)) for image, label in reader.examples("train", ordered=True).as_numpy_iterator()]
    assert ordered == expected
    image, label = next(iter(reader.examples("test")))
    assert image.dtype.name == "uint8" and image.shape == (4, 4, 3) and label.dtype.name == "int32"


@pytest.mark.parametrize("shard_count", [2, 3, 7])
def test_worker_shares_are_disjoint_and_cover_the_split(numbered, shard_count):
    location, _ = numbered
    reader = open_dataset(location)
    shares = [
        [int(image[0, 0, 0]) for image, _ in reader.examples("train", shard_index=index, shard_count=shard_count)]
        for index in range(shard_count)
    ]
    assert sorted(number for share in shares for number in share) == list(range(18))
    assert [len(share) for share in shares] == [reader.share_count("train", index, shard_count) for index in range(shard_count)]


def test_gcs_dataset_streams_through_a_bounded_cache_and_cleans_up(numbered, gcs_emulator, tmp_path, monkeypatch):
    location, written = numbered
    storage.upload_tree(location, gcs_emulator.url("datasets/numbers"))
    cache_root = tmp_path / "shard-cache"
    cache_root.mkdir()
    monkeypatch.setenv(dataset.SHARD_CACHE_ENVIRONMENT_VARIABLE, str(cache_root))
    monkeypatch.setattr(dataset, "SHARD_LOOKAHEAD", 1)

    reader = open_dataset(gcs_emulator.url("datasets/numbers"))
    np.testing.assert_allclose(reader.pixel_mean(), written["train"][0].mean(axis=0) / 255.0)
    most_files_cached = 0
    records = 0
    for _ in reader.records("train", ordered=True).as_numpy_iterator():
        records += 1
        cached = [name for _, _, files in os.walk(cache_root) for name in files]
        most_files_cached = max(most_files_cached, len(cached))
    assert records == 18
    # Read one shard at a time with one downloaded ahead: never more than two on disk, and none left.
    assert 1 <= most_files_cached <= 2
    assert [name for _, _, files in os.walk(cache_root) for name in files] == []
    # A worker's share over gs:// is the same as over the local copy.
    remote = [int(image[0, 0, 0]) for image, _ in reader.examples("train", shard_index=1, shard_count=2)]
    local = [int(image[0, 0, 0]) for image, _ in open_dataset(location).examples("train", shard_index=1, shard_count=2)]
    assert sorted(remote) == sorted(local) and len(local) == reader.share_count("train", 1, 2) < 18
    np.testing.assert_array_equal(reader.arrays("test")[0], written["test"][0])


def test_shards_location_keeps_the_artifact_small(tmp_path, gcs_emulator, many_shards):
    written = make_numbered_folder(tmp_path / "numbers")
    manifest = prepare(str(tmp_path / "numbers"), str(tmp_path / "artifact"), shards_location=gcs_emulator.url("shards"))

    assert sorted(os.listdir(tmp_path / "artifact")) == ["manifest.json", "pixel_mean.npy"]
    assert manifest.shards_location.startswith(gcs_emulator.url("shards/numbers-"))
    uploaded = storage.list_files(manifest.shards_location)
    assert uploaded == sorted(shard["file"] for shards in manifest.shards.values() for shard in shards)
    reader = open_dataset(str(tmp_path / "artifact"))
    images, labels = reader.arrays("train")
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])

    # A second prep goes to its own sub-folder: the first dataset stays readable.
    second = prepare(str(tmp_path / "numbers"), str(tmp_path / "again"), shards_location=gcs_emulator.url("shards"))
    assert second.shards_location != manifest.shards_location
    np.testing.assert_array_equal(reader.arrays("test")[1], written["test"][1])


def test_local_shards_location(tmp_path, many_shards):
    written = make_numbered_folder(tmp_path / "numbers")
    manifest = prepare(str(tmp_path / "numbers"), str(tmp_path / "artifact"), shards_location=str(tmp_path / "bulk"))
    assert os.path.dirname(manifest.shards_location) == str(tmp_path / "bulk")
    assert not [name for name in os.listdir(tmp_path / "artifact") if name.endswith(".tfrecord")]
    np.testing.assert_array_equal(dataset.load_split(str(tmp_path / "artifact"), "test")[0], written["test"][0])
