"""How numbers read in the report, the `cnnpipe run` console and the CLI: percentages, percentage
points, durations, counts and settings. Every formatter takes what a JSON file may hold and answers
MISSING ("—") for a missing or non-finite value, so a table cell is never blank or "nan"."""

from __future__ import annotations

import math
from typing import Collection

MISSING = "—"


def is_number(value) -> bool:
    """True for int/float values (bool excluded: JSON true is not a count)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    """A number every formatter below can show: not missing, not NaN or infinite."""
    return is_number(value) and math.isfinite(value)


def format_percent(fraction, digits: int = 2, missing: str = MISSING) -> str:
    """0.9125 -> '91.25%' (`digits` decimals); `missing` for anything that is not a finite number."""
    if not _is_finite(fraction):
        return missing
    return f"{fraction * 100:.{digits}f}%"


def format_points(difference) -> str:
    """A signed difference of fractions in percentage points, e.g. 0.012 -> '+1.20 pp'."""
    if not _is_finite(difference):
        return MISSING
    return f"{difference * 100:+.2f} pp"


def format_number(value, digits: int = 2) -> str:
    """A float with a fixed number of decimals."""
    if not _is_finite(value):
        return MISSING
    return f"{value:.{digits}f}"


def format_count(value) -> str:
    """A whole number with thousands separators: 272474 -> '272,474'."""
    if not _is_finite(value):
        return MISSING
    return f"{round(value):,}"


# How a duration of a minute or more reads, under an hour and from an hour on (the report writes
# words, the console counts like a clock); below a minute both write '12.4 s'.
REPORT_DURATION_FORMS = ("{minutes} min {seconds:02d} s", "{hours} h {minutes:02d} min")
CLOCK_DURATION_FORMS = ("{minutes}:{seconds:02d}", "{hours}:{minutes:02d}:{seconds:02d}")


def format_duration(seconds) -> str:
    """Seconds as '12.4 s', '3 min 05 s' or '1 h 02 min'."""
    return _format_duration(seconds, REPORT_DURATION_FORMS)


def format_clock_duration(seconds) -> str:
    """Seconds as the console counts them: 4.2 -> '4.2 s', 185 -> '3:05', 3725 -> '1:02:05'."""
    return _format_duration(seconds, CLOCK_DURATION_FORMS)


def _format_duration(seconds, forms: tuple[str, str]) -> str:
    """Seconds in one of the forms above (whole seconds from a minute on)."""
    if not _is_finite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    under_an_hour, from_an_hour = forms
    return (under_an_hour if whole < 3600 else from_an_hour).format(
        hours=whole // 3600, minutes=whole % 3600 // 60, seconds=whole % 60)


def format_setting(value) -> str:
    """A setting as people write it: whole numbers without '.0' (KFP passes every number of a
    dict parameter as a float, so batch_size arrives as 64.0), lists comma-separated."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_setting(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={format_setting(item)}" for key, item in sorted(value.items()))
    return str(value)


def format_shape(shape) -> str:
    """[32, 32, 3] -> '32×32×3'."""
    if not shape:
        return MISSING
    return "×".join(str(size) for size in shape)


def format_splits(splits) -> str:
    """{'train': 1000, 'test': 200} -> 'train 1,000 · test 200'."""
    if not splits:
        return MISSING
    return " · ".join(f"{name} {format_count(count)}" for name, count in splits.items())


def format_table(header: list[str], rows: list[list[str]], right_aligned: Collection[int] = ()) -> str:
    """An aligned plain-text table for a terminal: the header, a line of dashes, the rows; columns two
    spaces apart, left-aligned except those whose index is in `right_aligned` (numbers)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: list) -> str:
        return "  ".join(
            str(cell).rjust(width) if index in right_aligned else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * width for width in widths), *(line(row) for row in rows)])
