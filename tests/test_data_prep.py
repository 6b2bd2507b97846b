"""Data prep on generated image folders, CIFAR-10 binary archives and scikit-learn's digits."""

import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from datagen import make_cifar_binary_archive, make_image_folder, save_image

from components import atomic, data_prep, progress, storage
from components.data_prep import check_source, file_sha256, prepare
from components.dataset import load_split
from components.errors import UserError
from components.manifest import FORMAT_VERSION
from components.manifest import read as read_manifest

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def leftovers(parent) -> list[str]:
    """Names in ``parent`` that a prep could have left behind (output or staging directories)."""
    return sorted(name for name in os.listdir(parent) if "dataset" in name)


# --------------------------------------------------------------------------- round trips


def test_image_folder_round_trips_pixels_and_labels_exactly(image_folder, tmp_path):
    root, written = image_folder
    manifest = prepare(root, str(tmp_path / "dataset"))

    for split in ("train", "test"):
        images, labels = load_split(str(tmp_path / "dataset"), split)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
        assert images.dtype == np.uint8 and labels.dtype == np.int32
    assert manifest.name == "pets"
    assert manifest.source == os.path.abspath(root)
    assert manifest.class_names == ["cat", "dog"]
    assert manifest.num_classes == 2
    assert manifest.image_shape == [12, 10, 3]
    assert manifest.splits == {"train": 8, "test": 4, "validation": 0}
    assert manifest.allow_horizontal_flip is True
    assert manifest.resized_images == 0
    assert manifest.test_held_out_fraction == 0.0


def test_grayscale_folder_gives_one_channel(tmp_path):
    written = make_image_folder(tmp_path / "gray", classes=("a", "b", "c"), per_class=2, size=(9, 9), mode="L")
    manifest = prepare(str(tmp_path / "gray"), str(tmp_path / "dataset"))
    images, _ = load_split(str(tmp_path / "dataset"), "train")
    assert manifest.image_shape == [9, 9, 1]
    np.testing.assert_array_equal(images, written["train"][0])


def test_mixed_grayscale_and_rgb_become_rgb(image_folder, tmp_path):
    root, written = image_folder
    gray_pixels = np.arange(120, dtype=np.uint8).reshape(12, 10, 1)
    save_image(gray_pixels, os.path.join(root, "train", "cat", "image_000.png"), mode="L")

    manifest = prepare(root, str(tmp_path / "dataset"))
    images, _ = load_split(str(tmp_path / "dataset"), "train")
    assert manifest.image_shape == [12, 10, 3]
    np.testing.assert_array_equal(images[0], np.repeat(gray_pixels, 3, axis=-1))
    np.testing.assert_array_equal(images[1:], written["train"][0][1:])


def test_odd_sized_images_are_resized_to_the_most_common_size(image_folder, tmp_path):
    root, _ = image_folder
    save_image(np.zeros((20, 30, 3), np.uint8), os.path.join(root, "test", "dog", "image_001.png"))

    manifest = prepare(root, str(tmp_path / "dataset"))
    images, _ = load_split(str(tmp_path / "dataset"), "test")
    assert manifest.image_shape == [12, 10, 3]
    assert manifest.resized_images == 1
    assert images.shape == (4, 12, 10, 3)


def test_jpeg_folder_loads_with_its_shape_and_labels(tmp_path):
    written = make_image_folder(tmp_path / "photos", per_class=(3, 1), size=(16, 16), image_format="jpg")
    manifest = prepare(str(tmp_path / "photos"), str(tmp_path / "dataset"))
    images, labels = load_split(str(tmp_path / "dataset"), "train")
    assert manifest.image_shape == [16, 16, 3]
    np.testing.assert_array_equal(labels, written["train"][1])


def test_cifar_binary_archive_round_trips_exactly(cifar_archive, tmp_path):
    path, written = cifar_archive
    manifest = prepare(path, str(tmp_path / "dataset"))

    for split in ("train", "test"):
        images, labels = load_split(str(tmp_path / "dataset"), split)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
    assert manifest.name == "cifar10"
    assert manifest.class_names == written["class_names"]
    assert manifest.image_shape == [32, 32, 3]
    assert manifest.splits == {"train": 15, "test": 4, "validation": 0}
    assert manifest.allow_horizontal_flip is True


def test_digits_are_8x8x1_with_ten_classes_and_a_stratified_split(tmp_path):
    manifest = prepare("digits", str(tmp_path / "dataset"), seed=3)
    train_images, train_labels = load_split(str(tmp_path / "dataset"), "train")
    test_images, test_labels = load_split(str(tmp_path / "dataset"), "test")

    assert manifest.name == "digits" and manifest.source == "digits"
    assert manifest.image_shape == [8, 8, 1]
    assert manifest.class_names == [str(digit) for digit in range(10)]
    assert manifest.allow_horizontal_flip is False
    assert len(train_labels) + len(test_labels) == 1797
    assert train_images.max() == 255 and train_images.min() == 0
    test_share = np.bincount(test_labels) / (np.bincount(train_labels) + np.bincount(test_labels))
    assert np.all(np.abs(test_share - 0.2) < 0.01)
    assert manifest.test_held_out_fraction == 0.2


def test_digits_split_follows_the_seed(tmp_path):
    prepare("digits", str(tmp_path / "a"), seed=0)
    prepare("digits", str(tmp_path / "b"), seed=0)
    prepare("digits", str(tmp_path / "c"), seed=1)
    same_a, same_b, other = (load_split(str(tmp_path / name), "test")[0] for name in "abc")
    np.testing.assert_array_equal(same_a, same_b)
    assert not np.array_equal(same_a, other)


# --------------------------------------------------------------------------- validation split


def test_validation_split_is_stratified_disjoint_and_seeded(tmp_path):
    root = tmp_path / "shapes"
    written = make_image_folder(root, classes=("a", "b", "c"), per_class=(10, 2), size=(4, 4))
    manifest = prepare(str(root), str(tmp_path / "dataset"), validation_fraction=0.2, seed=7)

    train_images, train_labels = load_split(str(tmp_path / "dataset"), "train")
    validation_images, validation_labels = load_split(str(tmp_path / "dataset"), "validation")
    assert manifest.splits == {"train": 24, "test": 6, "validation": 6}
    assert np.bincount(validation_labels).tolist() == [2, 2, 2]
    assert np.bincount(train_labels).tolist() == [8, 8, 8]

    # Every original training image lands in exactly one of the two splits, with its label.
    original = {image.tobytes(): label for image, label in zip(*written["train"])}
    carved = {image.tobytes(): label for image, label in zip(np.concatenate([train_images, validation_images]),
                                                             np.concatenate([train_labels, validation_labels]))}
    assert carved == original

    prepare(str(root), str(tmp_path / "again"), validation_fraction=0.2, seed=7)
    np.testing.assert_array_equal(load_split(str(tmp_path / "again"), "validation")[0], validation_images)


def test_stratified_split_keeps_one_image_of_every_class():
    labels = np.array([0, 0, 0, 0, 1])
    kept, held_out = data_prep.stratified_split(labels, 0.5, seed=0)
    assert sorted(labels[kept].tolist()) == [0, 0, 1]
    assert labels[held_out].tolist() == [0, 0]


def test_load_split_without_validation_names_the_fix(image_folder, tmp_path):
    root, _ = image_folder
    prepare(root, str(tmp_path / "dataset"))
    with pytest.raises(ValueError, match="no validation split.*validation_fraction"):
        load_split(str(tmp_path / "dataset"), "validation")
    with pytest.raises(ValueError, match="'valid'.*train, test, validation"):
        load_split(str(tmp_path / "dataset"), "valid")


# --------------------------------------------------------------------------- manifest and files


def test_manifest_hashes_match_the_files_and_statistics_match_train(cifar_archive, tmp_path):
    path, _ = cifar_archive
    dataset_dir = str(tmp_path / "dataset")
    manifest = prepare(path, dataset_dir, validation_fraction=0.3)

    assert manifest == read_manifest(dataset_dir)
    assert manifest.format_version == FORMAT_VERSION
    data_files = sorted(name for name in os.listdir(dataset_dir) if name != "manifest.json")
    assert sorted(manifest.sha256) == data_files
    assert data_files == ["pixel_mean.npy", "test-00000-of-00001.tfrecord", "train-00000-of-00001.tfrecord",
                          "validation-00000-of-00001.tfrecord"]
    for name, digest in manifest.sha256.items():
        assert file_sha256(os.path.join(dataset_dir, name)) == digest
    assert {split: [shard["images"] for shard in shards] for split, shards in manifest.shards.items()} == {
        "train": [manifest.splits["train"]], "test": [4], "validation": [manifest.splits["validation"]],
    }

    train_images, train_labels = load_split(dataset_dir, "train")
    scaled = train_images / 255.0
    np.testing.assert_allclose(manifest.mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(manifest.std, scaled.std(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(np.load(os.path.join(dataset_dir, "pixel_mean.npy")), scaled.mean(axis=0), rtol=1e-12)
    assert manifest.class_counts["train"] == np.bincount(train_labels, minlength=10).tolist()


def test_existing_output_dir_is_replaced_as_a_whole(image_folder, tmp_path):
    root, _ = image_folder
    dataset_dir = str(tmp_path / "dataset")
    prepare(root, dataset_dir, validation_fraction=0.5)
    prepare(root, dataset_dir)
    assert not [name for name in os.listdir(dataset_dir) if name.startswith("validation")]
    assert read_manifest(dataset_dir).splits["validation"] == 0
    assert leftovers(tmp_path) == ["dataset"]


def test_empty_output_dir_is_filled(image_folder, tmp_path):
    root, _ = image_folder
    os.makedirs(tmp_path / "dataset")
    prepare(root, str(tmp_path / "dataset"))
    assert read_manifest(str(tmp_path / "dataset")).name == "pets"


def test_failed_prepare_leaves_nothing_behind(image_folder, tmp_path):
    root, _ = image_folder
    with open(os.path.join(root, "train", "dog", "image_002.png"), "wb") as broken:
        broken.write(b"not a png at all")
    with pytest.raises(ValueError):
        prepare(root, str(tmp_path / "dataset"))
    assert leftovers(tmp_path) == []


def test_failed_write_removes_staging_and_keeps_the_previous_dataset(image_folder, tmp_path, monkeypatch):
    root, _ = image_folder
    dataset_dir = str(tmp_path / "dataset")
    prepare(root, dataset_dir)
    before = read_manifest(dataset_dir)

    def fail_after_writing(staging_dir, output_dir, last=None):
        assert os.path.isfile(os.path.join(staging_dir, "manifest.json"))
        raise OSError("disk full")

    monkeypatch.setattr(atomic, "replace_directory", fail_after_writing)
    with pytest.raises(OSError, match="disk full"):
        prepare(root, dataset_dir, validation_fraction=0.5)
    assert leftovers(tmp_path) == ["dataset"]
    assert read_manifest(dataset_dir) == before


def test_a_killed_prep_leaves_no_dataset_and_the_next_prep_removes_its_staging(tmp_path):
    """SIGKILL while shards are written: no dataset directory appears; the rerun publishes one and
    deletes the dead prep's staging directory (a live prep's is left alone)."""
    import signal
    import time

    make_image_folder(tmp_path / "big", per_class=(600, 10), size=(64, 64))
    dataset_dir = tmp_path / "dataset"
    code = f"from components.data_prep import prepare; prepare({str(tmp_path / 'big')!r}, {str(dataset_dir)!r})"
    prep = subprocess.Popen([sys.executable, "-c", code], cwd=REPOSITORY_ROOT)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".dataset.staging-*/train-*")):
        assert prep.poll() is None and time.monotonic() < deadline, "prep ended before writing a shard"
        time.sleep(0.01)
    prep.send_signal(signal.SIGKILL)
    prep.wait()
    assert not dataset_dir.exists()
    [abandoned] = tmp_path.glob(".dataset.staging-*")
    assert abandoned.name.startswith(f".dataset.staging-{prep.pid}-")
    live = tmp_path / f".dataset.staging-{os.getpid()}-another"
    live.mkdir()

    manifest = prepare(str(tmp_path / "big"), str(dataset_dir))
    assert manifest.splits["train"] == 1200 and read_manifest(str(dataset_dir)) == manifest
    assert sorted(path.name for path in tmp_path.glob(".dataset*")) == [live.name]


# --------------------------------------------------------------------------- user errors


def test_corrupt_image_is_named(image_folder, tmp_path):
    root, _ = image_folder
    corrupt = os.path.join(root, "test", "cat", "image_001.png")
    with open(corrupt, "wb") as broken:
        broken.write(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=f"cannot read image {corrupt}.*remove or replace"):
        prepare(root, str(tmp_path / "dataset"))


def test_truncated_image_is_named(image_folder, tmp_path):
    root, _ = image_folder
    truncated = os.path.join(root, "train", "cat", "image_003.png")
    save_image(np.full((64, 64, 3), 7, np.uint8), truncated)
    with open(truncated, "rb") as complete:
        data = complete.read()
    with open(truncated, "wb") as cut:
        cut.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"image {truncated}"):
        prepare(root, str(tmp_path / "dataset"))


def test_empty_class_folder_is_named(image_folder, tmp_path):
    root, _ = image_folder
    empty = os.path.join(root, "train", "bird")
    os.makedirs(empty)
    with pytest.raises(ValueError, match=f"class folder {empty} has no images"):
        check_source(root)
    with pytest.raises(ValueError, match="bird"):
        prepare(root, str(tmp_path / "dataset"))


def test_missing_path_is_named(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    with pytest.raises(ValueError, match=f"{missing} does not exist"):
        prepare(missing, str(tmp_path / "dataset"))
    assert leftovers(tmp_path) == []


def test_folder_without_test_split_is_named(image_folder):
    root, _ = image_folder
    os.rename(os.path.join(root, "test"), os.path.join(root, "testing"))
    with pytest.raises(ValueError, match="has no test/ subfolder.*<class>/\\*.jpg, or as .*train/<class>/"):
        check_source(root)


def test_folder_without_any_images_is_reported(tmp_path):
    for split in ("train", "test"):
        os.makedirs(tmp_path / "nothing" / split)
    with pytest.raises(ValueError, match="no images found"):
        check_source(str(tmp_path / "nothing"))


def test_images_outside_class_folders_are_named(image_folder):
    root, _ = image_folder
    stray = os.path.join(root, "train", "loose.png")
    save_image(np.zeros((12, 10, 3), np.uint8), stray)
    with pytest.raises(ValueError, match=f"{stray} is not inside a class folder"):
        check_source(root)


def test_files_that_are_not_images_are_skipped_with_one_warning(image_folder, tmp_path, caplog):
    root, _ = image_folder
    for path in (os.path.join(root, "train", "cat", "notes.txt"), os.path.join(root, "test", "Thumbs.db"),
                 os.path.join(root, "README")):
        with open(path, "w") as other:
            other.write("not an image")
    manifest = prepare(root, str(tmp_path / "dataset"))
    assert manifest.splits == {"train": 8, "test": 4, "validation": 0}
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert [message for message in warnings if "skipped 2 file(s) that are not" in message and "notes.txt" in message]


def test_hidden_files_are_ignored(image_folder, tmp_path):
    root, _ = image_folder
    with open(os.path.join(root, "train", "cat", ".DS_Store"), "wb") as hidden:
        hidden.write(b"\0\0")
    assert prepare(root, str(tmp_path / "dataset")).splits["train"] == 8


def test_test_class_without_training_images_is_named(image_folder):
    root, _ = image_folder
    make_image_folder(os.path.join(root, "extra"), classes=("fox",), per_class=1)
    os.rename(os.path.join(root, "extra", "test", "fox"), os.path.join(root, "test", "fox"))
    with pytest.raises(ValueError, match="class 'fox' has test images but no folder"):
        check_source(root)


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, float("nan"), "0.1", True])
def test_bad_validation_fraction_is_named(image_folder, tmp_path, fraction):
    root, _ = image_folder
    with pytest.raises(ValueError, match=re.escape(f"validation_fraction must be a fraction in [0, 1), got {fraction!r}")):
        prepare(root, str(tmp_path / "dataset"), validation_fraction=fraction)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_is_named(image_folder, tmp_path, seed):
    root, _ = image_folder
    with pytest.raises(ValueError, match=re.escape(f"seed must be an integer >= 0, got {seed!r}; pass e.g. seed=0")):
        prepare(root, str(tmp_path / "dataset"), seed=seed)
    assert leftovers(tmp_path) == []


def test_a_small_validation_fraction_holds_out_one_image_of_each_class(image_folder, tmp_path):
    root, _ = image_folder
    manifest = prepare(root, str(tmp_path / "dataset"), validation_fraction=0.01)
    assert manifest.class_counts["validation"] == [1, 1] and manifest.class_counts["train"] == [3, 3]


def test_validation_fraction_too_small_for_the_data_is_named(tmp_path):
    make_image_folder(tmp_path / "single", per_class=(1, 1))  # a class keeps its only training image
    with pytest.raises(ValueError, match="validation_fraction=0.01 holds out no image"):
        prepare(str(tmp_path / "single"), str(tmp_path / "dataset"), validation_fraction=0.01)


def test_unknown_keyword_lists_the_keywords(tmp_path):
    with pytest.raises(ValueError, match="unknown source 'cifar'.*digits, cifar10, fashion_mnist, mnist"):
        prepare("cifar", str(tmp_path / "dataset"))


def test_archive_without_expected_members_names_them(tmp_path):
    path = tmp_path / "partial.tar.gz"
    make_cifar_binary_archive(path, omit=("test_batch.bin", "batches.meta.txt"))
    with pytest.raises(ValueError, match="lacks test_batch.bin, batches.meta.txt"):
        prepare(str(path), str(tmp_path / "dataset"))
    assert leftovers(tmp_path) == []


def test_python_pickle_archive_is_recognised(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(__file__, arcname="cifar-10-batches-py/data_batch_1")
    with pytest.raises(ValueError, match="Python \\(pickle\\) version.*cifar-10-binary.tar.gz"):
        prepare(str(path), str(tmp_path / "dataset"))


def test_damaged_archive_record_size_is_named(tmp_path):
    path = tmp_path / "cifar-10-binary.tar.gz"
    make_cifar_binary_archive(path)
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(path) as source, tarfile.open(damaged, "w:gz") as target:
        for member in source:
            data = source.extractfile(member).read()
            if member.name.endswith("data_batch_2.bin"):
                data = data[:-5]
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    with pytest.raises(ValueError, match="data_batch_2.bin in .* not a whole number of 3073-byte"):
        prepare(str(damaged), str(tmp_path / "dataset"))


def test_flipped_bit_in_a_gzip_archive_is_named(tmp_path):
    import gzip

    path = tmp_path / "cifar-10-binary.tar.gz"
    make_cifar_binary_archive(path)
    # Stored (uncompressed) deflate blocks: the flipped bit changes a pixel and nothing else, so
    # only the gzip CRC can tell.
    damaged = bytearray(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=0))
    damaged[len(damaged) // 2] ^= 0x01
    (tmp_path / "damaged.tar.gz").write_bytes(damaged)
    with pytest.raises(ValueError, match="cannot read archive .*damaged.tar.gz .*CRC check failed.*download"):
        prepare(str(tmp_path / "damaged.tar.gz"), str(tmp_path / "dataset"))
    assert leftovers(tmp_path) == []


def test_file_that_is_not_an_archive_is_named(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n")
    with pytest.raises(ValueError, match=f"{path} is not a tar archive"):
        check_source(str(path))


def test_output_path_that_is_a_file_is_named(image_folder, tmp_path):
    root, _ = image_folder
    (tmp_path / "taken").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        prepare(root, str(tmp_path / "taken"))


def test_read_manifest_of_a_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="no manifest.json.*run data prep"):
        read_manifest(str(tmp_path))


def test_check_source_accepts_keywords_folders_and_archives(image_folder, cifar_archive):
    for source in ("digits", "cifar10", "fashion_mnist", "mnist", image_folder[0], cifar_archive[0]):
        check_source(source)


# --------------------------------------------------------------------------- Keras download


def unused_local_port() -> int:
    """A loopback port nobody listens on, so a connection to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_keras_download_failure_is_one_clean_line(tmp_path):
    """Runs the real Keras loader in a subprocess with an empty cache and a dead proxy, so it fails fast."""
    dead_proxy = f"http://127.0.0.1:{unused_local_port()}"
    environment = dict(
        os.environ,
        KERAS_HOME=str(tmp_path / "keras_home"),
        HTTPS_PROXY=dead_proxy, https_proxy=dead_proxy, HTTP_PROXY=dead_proxy, http_proxy=dead_proxy,
        NO_PROXY="", no_proxy="", TF_CPP_MIN_LOG_LEVEL="3",
    )
    output_dir = str(tmp_path / "dataset")
    script = (
        "import json\n"
        "from components.data_prep import prepare\n"
        "try:\n"
        f"    prepare('fashion_mnist', {output_dir!r})\n"
        "except ValueError as error:\n"
        "    print('ERROR=' + json.dumps(str(error)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, cwd=REPOSITORY_ROOT,
        capture_output=True, text=True, timeout=300,
    )
    error_lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR=")]
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(error_lines) == 1, result.stdout
    message = json.loads(error_lines[0][len("ERROR="):])
    assert "\n" not in message
    assert "could not download the fashion_mnist dataset" in message
    assert "local image folder" in message and "cifar-10-binary.tar.gz" in message
    assert not os.path.exists(output_dir)


# --------------------------------------------------------------------------- gs:// sources (real GCS emulator)


def test_gcs_image_folder_round_trips(gcs_emulator, image_folder, tmp_path):
    root, written = image_folder
    storage.upload_tree(root, gcs_emulator.url("datasets/pets"))

    manifest = prepare(gcs_emulator.url("datasets/pets/"), str(tmp_path / "dataset"))
    images, labels = load_split(str(tmp_path / "dataset"), "train")
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])
    assert manifest.name == "pets"
    assert manifest.source == gcs_emulator.url("datasets/pets/")


def test_gcs_archive_round_trips(gcs_emulator, cifar_archive, tmp_path):
    path, written = cifar_archive
    storage.upload(path, gcs_emulator.url("cifar-10-binary.tar.gz"))
    manifest = prepare(gcs_emulator.url("cifar-10-binary.tar.gz"), str(tmp_path / "dataset"))
    np.testing.assert_array_equal(load_split(str(tmp_path / "dataset"), "test")[0], written["test"][0])
    assert manifest.name == "cifar10"


def test_gcs_errors_name_the_gcs_location(gcs_emulator, image_folder, tmp_path):
    root, _ = image_folder
    with open(os.path.join(root, "train", "dog", "image_000.png"), "wb") as broken:
        broken.write(b"not an image")
    storage.upload_tree(root, gcs_emulator.url("pets"))
    with pytest.raises(ValueError, match=f"cannot read image {gcs_emulator.url('pets')}/train/dog/image_000.png"):
        prepare(gcs_emulator.url("pets"), str(tmp_path / "dataset"))
    with pytest.raises(FileNotFoundError, match=gcs_emulator.url("missing")):
        prepare(gcs_emulator.url("missing"), str(tmp_path / "dataset"))
    assert leftovers(tmp_path) == []


def test_gcs_source_without_bucket_is_named():
    with pytest.raises(ValueError, match="names no bucket"):
        check_source("gs:///pets")


# --------------------------------------------------------------------------- shards, sizes, progress


def test_image_size_resizes_every_image(image_folder, cifar_archive, tmp_path):
    root, _ = image_folder
    manifest = prepare(root, str(tmp_path / "folder"), image_size=(6, 5))
    assert manifest.image_shape == [6, 5, 3] and manifest.resized_images == 12
    assert load_split(str(tmp_path / "folder"), "train")[0].shape == (8, 6, 5, 3)

    manifest = prepare(cifar_archive[0], str(tmp_path / "archive"), image_size=16)
    assert manifest.image_shape == [16, 16, 3] and manifest.resized_images == 19
    with pytest.raises(ValueError, match="image_size must be a positive integer or \\(height, width\\), got 0"):
        prepare(root, str(tmp_path / "bad"), image_size=0)


def test_class_without_test_images_is_warned_about_and_recorded(image_folder, tmp_path, caplog):
    root, _ = image_folder
    make_image_folder(os.path.join(root, "extra"), classes=("fox",), per_class=1)
    os.rename(os.path.join(root, "extra", "train", "fox"), os.path.join(root, "train", "fox"))
    manifest = prepare(root, str(tmp_path / "dataset"))
    assert manifest.classes_without_test_images == ["fox"]
    assert manifest.class_counts["test"] == [2, 2, 0]
    assert any("fox" in record.getMessage() and record.levelname == "WARNING" for record in caplog.records)


def test_shards_split_large_data_and_stay_single_for_small(monkeypatch):
    assert data_prep.shard_count_for(1797, 64) == 1  # digits: 115 KB
    assert data_prep.shard_count_for(50_000, 3072) == 8  # CIFAR-10 train: 154 MB, 8 shards for parallel reads
    assert data_prep.shard_count_for(1_281_167, 150_528) == 1437  # ImageNet at 224x224: 128 MiB shards
    assert data_prep.shard_count_for(3, 10 * 1024 * 1024) == 3  # never more shards than images


def test_progress_events_report_images_and_rate(image_folder, tmp_path, capsys, monkeypatch):
    root, _ = image_folder
    monkeypatch.setattr(data_prep, "PROGRESS_INTERVAL_SECONDS", 0.0)
    prepare(root, str(tmp_path / "dataset"))
    events = [event for event in map(progress.parse, capsys.readouterr().out.splitlines()) if event]
    # An event per decoded chunk (here each split's images are one chunk): 8 train, then 12.
    assert [event["images"] for event in events if event["phase"] == "images"] == [8, 12]
    done = events[-1]
    assert done["task"] == "prepare" and done["phase"] == "done" and done["total"] == 12
    assert done["images_per_second"] > 0 and done["eta_seconds"] == 0


def test_failed_prepare_removes_the_shards_it_wrote(image_folder, tmp_path):
    root, _ = image_folder
    # A readable header with cut-off pixels fails only while streaming, after the train shards.
    truncated = os.path.join(root, "test", "dog", "image_001.png")
    save_image(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8), truncated)
    with open(truncated, "rb") as complete:
        data = complete.read()
    with open(truncated, "wb") as cut:
        cut.write(data[: len(data) // 2])
    os.makedirs(tmp_path / "bulk")
    with pytest.raises(ValueError, match=f"image {truncated}"):
        prepare(root, str(tmp_path / "dataset"), shards_location=str(tmp_path / "bulk"))
    assert os.listdir(tmp_path / "bulk") == [] and leftovers(tmp_path) == []


def test_a_format_added_to_the_table_is_prepared(tmp_path, monkeypatch):
    """docs/development.md's recipe: a module-like trio in FORMATS makes a new format preparable."""
    import numpy as np

    from components import sources
    from components.dataset import open_dataset
    from components.sources.keyword import array_stream

    def read(path, *, name=None, seed=0):
        arrays = np.load(path)
        return array_stream(name or "npz", ("a", "b"), arrays["train_images"], arrays["train_labels"],
                            arrays["test_images"], arrays["test_labels"], allow_horizontal_flip=True)

    def check(path):
        if not os.path.isfile(path):
            raise UserError(f"no file {path}")

    npz = sources.SourceFormat(lambda path: path.endswith(".npz"), check, read)
    monkeypatch.setattr(sources, "FORMATS", {"npz": npz, **sources.FORMATS})  # before the catch-all archive format
    generator = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=generator.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
             train_labels=np.array([0, 1] * 3, dtype=np.int32),
             test_images=generator.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8),
             test_labels=np.array([0, 1], dtype=np.int32))
    manifest = prepare(str(path), str(tmp_path / "dataset"))
    assert manifest.splits == {"train": 6, "test": 2, "validation": 0} and manifest.class_names == ["a", "b"]
    images, labels = open_dataset(str(tmp_path / "dataset")).arrays("test")
    np.testing.assert_array_equal(images, np.load(path)["test_images"])
    np.testing.assert_array_equal(labels, [0, 1])


# --------------------------------------------------------------------------- photo collections


def test_folder_of_class_folders_holds_out_a_seeded_fifth_of_each_class_as_test(tmp_path):
    root = tmp_path / "flowers"
    make_image_folder(tmp_path / "made", classes=("daisy", "rose", "tulip"), per_class=(10, 0), size=(8, 8))
    os.rename(tmp_path / "made" / "train", root)
    original = labelled_pixels_under(root)

    manifest = prepare(str(root), str(tmp_path / "dataset"), seed=3)
    assert manifest.name == "flowers"
    assert manifest.class_counts["train"] == [8, 8, 8]
    assert manifest.class_counts["test"] == [2, 2, 2]
    assert manifest.test_held_out_fraction == 0.2
    train_images, train_labels = load_split(str(tmp_path / "dataset"), "train")
    test_images, test_labels = load_split(str(tmp_path / "dataset"), "test")
    # Every image lands in exactly one split, with its class.
    images, labels = np.concatenate([train_images, test_images]), np.concatenate([train_labels, test_labels])
    assert len(images) == 30
    assert {(image.tobytes(), label) for image, label in zip(images, labels)} == original

    again = prepare(str(root), str(tmp_path / "again"), seed=3)
    other = prepare(str(root), str(tmp_path / "other"), seed=4)
    np.testing.assert_array_equal(load_split(str(tmp_path / "again"), "test")[0], test_images)
    assert again.sha256 == manifest.sha256
    assert not np.array_equal(load_split(str(tmp_path / "other"), "test")[0], test_images)
    assert other.class_counts == manifest.class_counts


def test_class_folders_too_small_to_hold_out_a_test_split_are_named(tmp_path):
    make_image_folder(tmp_path / "made", classes=("a", "b"), per_class=(2, 0))
    with pytest.raises(ValueError, match="too few images to hold out a test split.*train/<class>/"):
        prepare(str(tmp_path / "made" / "train"), str(tmp_path / "dataset"))
    assert leftovers(tmp_path) == []


def labelled_pixels_under(root) -> set:
    """{(pixel bytes, label)} of every image under root/<class>/ (labels by sorted class name)."""
    from PIL import Image

    return {
        (np.asarray(Image.open(path).convert("RGB")).tobytes(), label)
        for label, name in enumerate(sorted(os.listdir(root)))
        for path in (root / name).iterdir()
    }


def test_sub_folders_of_a_class_and_more_image_formats_are_read(image_folder, tmp_path):
    root, _ = image_folder
    album = os.path.join(root, "train", "dog", "2019", "summer")
    os.makedirs(album)
    extra = {name: np.full((12, 10, 3), 20 * index, np.uint8) for index, name in enumerate(("a.webp", "b.tif", "c.gif"), 1)}
    for name, pixels in extra.items():
        save_losslessly(pixels, os.path.join(album, name))
    hidden_album = os.path.join(root, "train", "dog", ".thumbnails")
    os.makedirs(hidden_album)
    save_image(np.zeros((12, 10, 3), np.uint8), os.path.join(hidden_album, "x.png"))

    manifest = prepare(root, str(tmp_path / "dataset"))
    assert manifest.class_counts["train"] == [4, 4 + 3]
    images, labels = load_split(str(tmp_path / "dataset"), "train")
    for pixels in extra.values():
        assert any(np.array_equal(image, pixels) and label == 1 for image, label in zip(images, labels))


def save_losslessly(pixels, path):
    """Saves an RGB image in the format its extension names, without loss (webp too)."""
    from PIL import Image

    options = {"lossless": True} if path.endswith(".webp") else {}
    Image.fromarray(pixels).save(path, **options)


def test_sixteen_bit_grayscale_keeps_its_top_eight_bits(tmp_path):
    from PIL import Image

    deep = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256 + 255)
    for split in ("train", "test"):
        os.makedirs(tmp_path / "scans" / split / "x")
        Image.fromarray(deep).save(tmp_path / "scans" / split / "x" / "scan.png")
    assert Image.open(tmp_path / "scans" / "train" / "x" / "scan.png").mode.startswith("I;16")
    manifest = prepare(str(tmp_path / "scans"), str(tmp_path / "dataset"))
    images, _ = load_split(str(tmp_path / "dataset"), "train")
    assert manifest.image_shape == [16, 16, 1]
    np.testing.assert_array_equal(images[0, ..., 0], (deep >> 8).astype(np.uint8))


def test_large_photos_are_scaled_to_the_default_longer_side_unless_image_size_is_given(tmp_path):
    make_image_folder(tmp_path / "camera", per_class=(2, 1), size=(200, 300), image_format="jpg")
    manifest = prepare(str(tmp_path / "camera"), str(tmp_path / "dataset"))
    assert manifest.image_shape == [85, 128, 3]  # 300x200 scaled to a longer side of 128
    assert manifest.resized_images == 6
    assert load_split(str(tmp_path / "dataset"), "train")[0].shape == (4, 85, 128, 3)
    kept = prepare(str(tmp_path / "camera"), str(tmp_path / "kept"), image_size=(200, 300))
    assert kept.image_shape == [200, 300, 3] and kept.resized_images == 0


def test_a_camera_rotated_photo_is_read_upright(tmp_path):
    """EXIF orientation 6 (stored sideways, shown turned by 90 degrees), at full size and when the
    JPEG decoder scales a large photo down while decoding."""
    from PIL import Image

    rows, columns = np.mgrid[0:300, 0:400]
    landscape = np.stack([rows * 255 // 300, columns * 255 // 400, np.full_like(rows, 128)], -1).astype(np.uint8)
    for split in ("train", "test"):
        os.makedirs(tmp_path / "trip" / split / "beach")
        Image.fromarray(landscape).save(tmp_path / "trip" / split / "beach" / "a.png")
        sideways = Image.fromarray(np.ascontiguousarray(np.rot90(landscape, k=1)))  # stored 300 wide, 400 high
        exif = sideways.getexif()
        exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the landscape again
        sideways.save(tmp_path / "trip" / split / "beach" / "b.png", exif=exif)
        sideways.save(tmp_path / "trip" / split / "beach" / "c.jpg", exif=exif, quality=95)

    full = prepare(str(tmp_path / "trip"), str(tmp_path / "full"), image_size=(300, 400))
    images, _ = load_split(str(tmp_path / "full"), "train")
    assert full.resized_images == 0
    np.testing.assert_array_equal(images[1], landscape)  # b.png, lossless
    assert np.abs(images[2].astype(int) - landscape).mean() < 3  # c.jpg

    scaled = prepare(str(tmp_path / "trip"), str(tmp_path / "scaled"))
    images, _ = load_split(str(tmp_path / "scaled"), "train")
    assert scaled.image_shape == [96, 128, 3]
    assert np.abs(images[2].astype(int) - images[0]).mean() < 3


@pytest.mark.parametrize("change, named", [
    (lambda fields: fields.pop("class_names"), "lacks class_names"),
    (lambda fields: fields.update(colour_space="sRGB"), "has unknown colour_space"),
])
def test_a_manifest_with_a_field_missing_or_unknown_names_the_file(image_folder, tmp_path, change, named):
    root, _ = image_folder
    dataset_dir = str(tmp_path / "dataset")
    prepare(root, dataset_dir)
    path = os.path.join(dataset_dir, "manifest.json")
    with open(path) as manifest_file:
        fields = json.load(manifest_file)
    change(fields)
    with open(path, "w") as manifest_file:
        json.dump(fields, manifest_file)
    with pytest.raises(UserError, match=f"^{path} {named}; prepare the dataset again"):
        read_manifest(dataset_dir)


def test_a_prepared_dataset_is_readable_by_whom_the_umask_lets_read(tmp_path):
    """Its folder is made by tempfile (0700) and published by a rename: it gets os.makedirs' mode."""
    previous = os.umask(0o022)
    try:
        prepare("digits", str(tmp_path / "dataset"))
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "dataset").st_mode & 0o777 == 0o755
    assert {os.stat(path).st_mode & 0o777 for path in (tmp_path / "dataset").rglob("*") if path.is_file()} == {0o644}
