"""Tests for components/formatting.py: how numbers read in the report, the console and the CLI."""

import math

from components.formatting import (
    MISSING,
    format_clock_duration,
    format_count,
    format_duration,
    format_percent,
    format_points,
    format_table,
)


def test_percentages_and_points_with_a_dash_for_what_is_missing():
    assert format_percent(0.9125) == "91.25%"
    assert format_percent(0.7134, digits=1) == "71.3%"
    assert [format_percent(value) for value in (None, math.nan, True, "0.5")] == [MISSING] * 4
    assert format_percent(None, missing="-") == "-"
    assert [format_points(value) for value in (0.012, -0.5, None)] == ["+1.20 pp", "-50.00 pp", MISSING]


def test_durations_read_as_the_report_and_the_console_write_them():
    assert [format_duration(value) for value in (12.44, 185, 3725)] == ["12.4 s", "3 min 05 s", "1 h 02 min"]
    assert [format_clock_duration(value) for value in (4.24, 185, 3725)] == ["4.2 s", "3:05", "1:02:05"]
    assert format_clock_duration(None) == MISSING


def test_counts_have_thousands_separators():
    assert [format_count(value) for value in (272474, 1899.6, None)] == ["272,474", "1,900", MISSING]


def test_text_table_aligns_numbers_right_and_text_left():
    table = format_table(["model", "params"], [["lenet5", "61,706"], ["vgg16", "14,990,922"]], right_aligned=[1])
    assert table.splitlines() == [
        "model       params",
        "------  ----------",
        "lenet5      61,706",
        "vgg16   14,990,922",
    ]
    assert format_table(["a", "b"], [["long", "x"]]).splitlines() == ["a     b", "----  -", "long  x"]
