"""The `cnnpipe` command as a user meets it: help, listings, and one-line errors for mistakes."""

import subprocess
import sys

import pytest

from datagen import make_image_folder


def cnnpipe(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_every_command():
    result = cnnpipe("--help")
    assert result.returncode == 0
    for command in ("run", "models", "presets", "component"):
        assert command in result.stdout


@pytest.mark.parametrize("command", [["run"], ["component", "train"], ["component", "prepare"]])
def test_each_command_explains_its_options(command):
    result = cnnpipe(*command, "--help")
    assert result.returncode == 0
    assert "--" in result.stdout and "usage:" in result.stdout


def test_presets_lists_the_three_recipes():
    result = cnnpipe("presets")
    assert result.returncode == 0
    for name in ("smoke:", "seed:", "fast:"):
        assert name in result.stdout


def test_unknown_model_is_one_line_error():
    assert_one_line_error(cnnpipe("run", "--models", "lenet5,resnet21"), "resnet21", "cnnpipe models")


def test_missing_dataset_path_is_one_line_error(tmp_path):
    assert_one_line_error(cnnpipe("run", "--dataset", str(tmp_path / "nowhere")), "nowhere")


def test_empty_dataset_is_one_line_error(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    assert_one_line_error(cnnpipe("run", "--dataset", str(tmp_path / "empty"), "--output", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_epochs_below_one_is_one_line_error(epochs):
    assert_one_line_error(cnnpipe("run", "--epochs", epochs), "epochs")


def test_unknown_preset_is_one_line_error():
    assert_one_line_error(cnnpipe("run", "--preset", "turbo"), "turbo")


def test_corrupt_image_fails_in_prep_with_one_line(tmp_path):
    """A broken file is found by the prep step inside the pipeline: the run stops with one line."""
    make_image_folder(tmp_path / "data", per_class=(3, 2), size=(8, 8))
    (tmp_path / "data" / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    result = cnnpipe("run", "--dataset", str(tmp_path / "data"), "--models", "lenet5", "--epochs", "1",
                     "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "broken.png" in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "out" / "report.html").exists()
