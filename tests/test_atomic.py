"""Tests for components/atomic.py: a file appears complete under its name, or not at all."""

import os
import stat

import pytest

from components import atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")

    def fail_halfway(file):
        file.write(b"new, half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.write_file(str(path), fail_halfway)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_refused_check_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")

    def refuse(temporary_path):
        assert open(temporary_path, "rb").read() == b"new"
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError):
        atomic.write_file(str(path), lambda file: file.write(b"new"), check=refuse)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.bin"]


def test_several_files_appear_together_in_a_new_directory(tmp_path):
    directory = tmp_path / "report"
    atomic.write_files(str(directory), {"summary.json": "{}\n", "report.md": "# é\n"})
    assert sorted(os.listdir(directory)) == ["report.md", "summary.json"]
    assert (directory / "report.md").read_text(encoding="utf-8") == "# é\n"


def test_a_writer_that_needs_an_extension_gets_one(tmp_path):
    path = tmp_path / "best.keras"
    with atomic.replaced_on_success(str(path), suffix=".keras") as temporary:
        assert temporary.endswith(".keras") and os.path.dirname(temporary) == str(tmp_path)
        with open(temporary, "w") as file:
            file.write("model")
    assert path.read_text() == "model" and os.listdir(tmp_path) == ["best.keras"]


@pytest.mark.parametrize("umask, file_mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_written_file_gets_the_mode_a_plain_write_would_give(tmp_path, umask, file_mode):
    """Not mkstemp's 0600: whoever the umask lets read a plain file (a serving identity) reads these."""
    previous = os.umask(umask)
    try:
        assert atomic.plain_mode() == file_mode and atomic.plain_mode(directory=True) == 0o777 & ~umask
        atomic.write_text(str(tmp_path / "result.json"), "{}")
        with open(tmp_path / "plain.json", "w") as file:
            file.write("{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == file_mode
