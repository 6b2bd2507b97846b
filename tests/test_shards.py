"""Reading the dataset's shards without TensorFlow: the same arrays tf.data reads, damage refused."""

import os

import numpy as np
import pytest
from datagen import make_image_folder

from components import shards, tfrecord
from components.data_prep import prepare
from components.dataset import open_dataset
from components.errors import UserError


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    make_image_folder(root / "images", classes=("a", "b", "c"), per_class=(7, 3), size=(5, 4))
    prepare(str(root / "images"), str(root / "dataset"))
    return open_dataset(str(root / "dataset"))


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_reads_as_tf_data_reads_it(reader, split):
    images, labels = shards.read_arrays(reader.shard_paths(split), reader.image_shape, reader.count(split))
    expected_images, expected_labels = reader.arrays(split)
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)


def test_examples_decode_with_multi_byte_labels_and_in_any_feature_order():
    image, label = shards.parse_example(tfrecord.encode_example(b"\x01\x02\x03", 300))
    assert bytes(image) == b"\x01\x02\x03" and label == 300
    # The same Example with its map entries the other way round, as another writer may order them.
    image_feature = tfrecord._length_delimited(1, tfrecord._length_delimited(1, b"\x07"))
    label_feature = tfrecord._length_delimited(3, tfrecord._length_delimited(1, tfrecord._varint(2)))
    features = tfrecord._map_entry(tfrecord.LABEL_FEATURE, label_feature) + tfrecord._map_entry(tfrecord.IMAGE_FEATURE, image_feature)
    image, label = shards.parse_example(tfrecord._length_delimited(1, features))
    assert bytes(image) == b"\x07" and label == 2


def test_a_damaged_shard_is_refused_with_the_fix(reader, tmp_path):
    path = reader.shard_paths("train")[0]
    damaged = bytearray(open(path, "rb").read())
    damaged[len(damaged) // 2] ^= 0xFF
    copy = tmp_path / os.path.basename(path)
    copy.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match="damaged record.*prepare the dataset again"):
        shards.read_arrays([str(copy)], reader.image_shape, reader.count("train"))


def test_a_count_that_does_not_match_the_manifest_is_refused(reader):
    with pytest.raises(UserError, match="manifest"):
        shards.read_arrays(reader.shard_paths("test"), reader.image_shape, reader.count("test") + 1)
