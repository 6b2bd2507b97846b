"""Image folders as input from elsewhere, through the real prep and the CLI: symbolic links that
lead out of the folder, images over the pixel cap, decoding in worker processes sized to the
machine, and the channel choice when only a sample of headers is read before decoding."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from datagen import make_image_folder, save_image
from test_cli import assert_one_line_error, cnnpipe

from components import resources
from components.data_prep import prepare
from components.dataset import open_dataset
from components.errors import UserError
from components.sources import image_folder as folder_source
from components.sources.base import DEFAULT_MAX_IMAGE_PIXELS

# A folder with more images than this is decoded by worker processes.
POOL_FOLDER_PER_CLASS = (50, 6)  # x 10 classes = 560 images


def pool_sized_folder(root, **options) -> dict:
    written = make_image_folder(root, classes=tuple("abcdefghij"), per_class=POOL_FOLDER_PER_CLASS, size=(8, 8), **options)
    assert sum(len(written[split][1]) for split in ("train", "test")) > folder_source.IN_PROCESS_IMAGES
    return written


@pytest.mark.parametrize("link", ["train/cat/stolen.png", "train/bird", "train/cat/album"])
def test_a_link_leading_out_of_the_folder_is_refused_by_name(image_folder, tmp_path, link):
    root, _ = image_folder
    outside = tmp_path / "elsewhere"
    make_image_folder(outside, classes=("x",), per_class=(1, 1))
    target = outside / "train" / "x" / ("image_000.png" if link.endswith(".png") else "")
    os.symlink(target, os.path.join(root, link))
    with pytest.raises(UserError, match=rf"{link} is a symbolic link to .*elsewhere.*, outside the image folder") as raised:
        prepare(root, str(tmp_path / "dataset"))
    assert "\n" not in str(raised.value)
    assert not os.path.exists(tmp_path / "dataset")


def test_a_link_inside_the_folder_is_read_as_the_file_it_points_to(image_folder, tmp_path):
    root, written = image_folder
    os.symlink("image_000.png", os.path.join(root, "train", "cat", "image_009.png"))
    prepare(root, str(tmp_path / "dataset"))
    images, labels = open_dataset(str(tmp_path / "dataset")).arrays("train")
    np.testing.assert_array_equal(images[:5], np.concatenate([written["train"][0][:4], written["train"][0][:1]]))
    assert len(labels) == len(written["train"][1]) + 1


def test_the_cli_refuses_a_link_leading_out_in_one_line(image_folder, tmp_path):
    root, _ = image_folder
    os.symlink("/etc/hostname", os.path.join(root, "test", "dog", "hostname.png"))
    result = cnnpipe("component", "prepare", "--source", root, "--output", str(tmp_path / "dataset"))
    assert_one_line_error(result, "test/dog/hostname.png is a symbolic link to /etc/hostname")


def test_an_image_over_the_pixel_cap_is_refused_naming_it_and_the_setting(image_folder, tmp_path):
    root, _ = image_folder  # 12 x 10 = 120 pixels each
    with pytest.raises(UserError, match=r"image .*image_000.png \(10x12 = 120 pixels\) is over the decoding cap of 119 pixels "
                                        r"\(max_image_pixels \(--max-image-pixels\)\)"):
        prepare(root, str(tmp_path / "dataset"), max_image_pixels=119)
    assert not os.path.exists(tmp_path / "dataset")
    assert prepare(root, str(tmp_path / "dataset"), max_image_pixels=120).image_shape == [12, 10, 3]


def test_the_cli_takes_the_pixel_cap_and_refuses_in_one_line(image_folder, tmp_path):
    root, _ = image_folder
    result = cnnpipe("component", "prepare", "--source", root, "--output", str(tmp_path / "dataset"), "--max-image-pixels", "100")
    assert_one_line_error(result, "image_000.png", "over the decoding cap of 100 pixels", "--max-image-pixels")
    result = cnnpipe("component", "prepare", "--source", root, "--output", str(tmp_path / "dataset"), "--max-image-pixels", "0")
    assert_one_line_error(result, "max_image_pixels (--max-image-pixels) must be an integer >= 1, got 0")


def test_a_run_takes_the_pixel_cap_to_its_prep_step_and_stops_in_one_line(image_folder, tmp_path):
    """`cnnpipe run --max-image-pixels` reaches the prep step inside the pipeline (kfp.local); a bad
    value stops the run before any step starts."""
    root, _ = image_folder
    result = cnnpipe("run", "--dataset", root, "--models", "lenet5", "--epochs", "1", "--max-image-pixels", "100",
                     "--output", str(tmp_path / "out"))
    assert_one_line_error(result, "image_000.png", "over the decoding cap of 100 pixels", "--max-image-pixels")
    assert not (tmp_path / "out" / "report.html").exists()
    result = cnnpipe("run", "--dataset", root, "--max-image-pixels", "-1", "--output", str(tmp_path / "refused"))
    assert_one_line_error(result, "--max-image-pixels must be an integer >= 0", "got -1")
    assert not (tmp_path / "refused").exists()


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that declares width x height grayscale pixels and holds none (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as png:
        png.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [9000, 60000])  # over the default cap, and over twice it (where Pillow itself refuses)
def test_a_decompression_bomb_is_refused_from_its_header_under_the_default_cap(image_folder, tmp_path, side):
    root, _ = image_folder
    png_header_only(os.path.join(root, "train", "cat", "huge.png"), side, side)
    with pytest.raises(UserError, match=rf"huge.png .* is over the decoding cap of {DEFAULT_MAX_IMAGE_PIXELS:,} pixels"):
        prepare(root, str(tmp_path / "dataset"))


def test_worker_processes_decode_a_larger_folder_exactly(tmp_path):
    written = pool_sized_folder(tmp_path / "folder")
    prepare(str(tmp_path / "folder"), str(tmp_path / "dataset"))
    reader = open_dataset(str(tmp_path / "dataset"))
    for split in ("train", "test"):
        images, labels = reader.arrays(split)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])


@pytest.mark.parametrize("problem", ["corrupt", "over the cap"])
def test_a_bad_image_found_by_a_worker_process_is_one_line_naming_it(tmp_path, problem):
    pool_sized_folder(tmp_path / "folder")
    bad = tmp_path / "folder" / "train" / "j" / "image_049.png"
    if problem == "corrupt":
        bad.write_bytes(b"not an image")
    else:
        save_image(np.zeros((9, 8, 3), dtype=np.uint8), bad)  # 72 pixels, the others 64
    with pytest.raises(UserError, match=rf"image {bad} .*(remove or replace the file|over the decoding cap of 64)") as raised:
        prepare(str(tmp_path / "folder"), str(tmp_path / "dataset"), max_image_pixels=64)
    assert "\n" not in str(raised.value)
    assert not os.path.exists(tmp_path / "dataset")


def test_one_colour_image_outside_the_sampled_headers_still_makes_the_folder_rgb(tmp_path):
    root = tmp_path / "folder"
    count = folder_source.SIZE_SAMPLE_IMAGES + 100
    for split, split_count in (("train", count), ("test", 10)):
        os.makedirs(root / split / "digit")
        for index in range(split_count):
            save_image(np.full((4, 4, 1), index % 256, dtype=np.uint8), root / split / "digit" / f"{index:05d}.png", mode="L")
    sampled = set(folder_source.sampled(list(range(count + 10)), folder_source.SIZE_SAMPLE_IMAGES))
    unsampled = next(index for index in range(count) if index not in sampled)
    save_image(np.full((4, 4, 3), (255, 0, 0), dtype=np.uint8), root / "train" / "digit" / f"{unsampled:05d}.png")
    manifest = prepare(str(root), str(tmp_path / "dataset"))
    assert manifest.image_shape == [4, 4, 3]
    images, _ = open_dataset(str(tmp_path / "dataset")).arrays("train")
    assert images[unsampled].tolist() == [[[255, 0, 0]] * 4] * 4
    assert images[0].tolist() == [[[0, 0, 0]] * 4] * 4  # grayscale replicated into three channels


def test_decoder_processes_fit_the_cores_and_the_memory():
    assert folder_source.decoder_count(folder_source.IN_PROCESS_IMAGES, DEFAULT_MAX_IMAGE_PIXELS) == 0
    assert 1 <= folder_source.decoder_count(10_000, DEFAULT_MAX_IMAGE_PIXELS) <= resources.available_cores()
    # A cap at which one image's decoding needs more than the memory share still gets one process.
    too_large = resources.available_memory_bytes()
    assert folder_source.decoder_count(10_000, too_large) == 1


def test_a_file_in_another_format_than_its_listed_ones_is_refused(image_folder, tmp_path):
    root, _ = image_folder
    disguised = os.path.join(root, "train", "cat", "image_000.png")
    Image.new("RGB", (10, 12)).save(disguised, format="PPM")  # a format Pillow reads, but not one of the folder's
    with pytest.raises(UserError, match=rf"cannot read image {disguised} \(not a BMP, .* or WEBP image\); remove or replace"):
        prepare(root, str(tmp_path / "dataset"))


def test_a_sample_that_chose_another_size_than_the_whole_folder_is_reported(tmp_path, caplog):
    root = tmp_path / "folder"
    train_count, test_count = folder_source.SIZE_SAMPLE_IMAGES + 100, 10
    sampled = set(folder_source.sampled(list(range(train_count + test_count)), folder_source.SIZE_SAMPLE_IMAGES))
    # Every image the sample skips is 4x5 (height x width), and fewer than half of the sampled ones.
    wide = {index for index in range(train_count + test_count) if index not in sampled}
    wide |= set(sorted(sampled)[:len(sampled) // 2 - 20])
    for split, first, count in (("train", 0, train_count), ("test", train_count, test_count)):
        os.makedirs(root / split / "a")
        for index in range(first, first + count):
            shape = (4, 5, 3) if index in wide else (4, 4, 3)
            save_image(np.zeros(shape, dtype=np.uint8), root / split / "a" / f"{index:05d}.png")
    manifest = prepare(str(root), str(tmp_path / "dataset"))
    assert manifest.image_shape == [4, 4, 3] and manifest.resized_images == len(wide)
    assert "the sampled headers chose 4x4, but the folder's most common size is 5x4; pass image_size" in caplog.text
