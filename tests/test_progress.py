"""Tests for the progress lines and bars of components/progress.py (events are tested with the console)."""

from components import progress


def test_a_progress_line_in_a_log_prints_once_per_tenth(capsys):
    line = progress.ProgressLine(1000, lambda done, total: f"copy {done:.0f}/{total:.0f}")
    for done in range(0, 1001, 25):
        line.update(done)
    line.finish()
    printed = capsys.readouterr().err.splitlines()
    assert printed[0] == "copy 0/1000" and printed[-1] == "copy 1000/1000"
    assert len(printed) == 11 and "\r" not in "".join(printed)


def test_an_empty_total_still_divides(capsys):
    line = progress.ProgressLine(0, lambda done, total: f"{done}/{total}")
    line.update(0)
    assert capsys.readouterr().err == "0/1\n"


def test_bar_fills_in_proportion():
    assert progress.bar(6, 24, 24) == "[######..................]"
    assert progress.bar(1, 3, 4) == "[#...]"
    assert progress.bar(5, 0, 3) == "[...]"
