"""Progress: how a step tells whoever runs it how far it has come.

Two forms live here. Events are for programs; a progress line is for a person reading stderr.

A step prints one line per event to stdout, `cnnpipe-progress ` followed by a JSON object, and
goes on. Whoever reads the task's output (the `cnnpipe run` console, a test) picks these lines
out with `parse`; everybody else sees a readable line of JSON in the task log.

Fields every event has: "task" (e.g. "train"), "phase" (e.g. "step", "epoch", "done").
Training adds: "model", "epoch" (1-based), "epochs", "step" (within the epoch), "steps",
"loss", "accuracy", "val_accuracy" (epoch events), "images_per_second", "eta_seconds".

A `ProgressLine` shows a long job (a large transfer) on stderr: redrawn in place on a terminal,
one line per tenth done in a log; `bar` draws the `[####....]` of the console's live line.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Callable

PREFIX = "cnnpipe-progress "
# How often a progress line is redrawn on a terminal at most (seconds).
REDRAW_SECONDS = 0.2


def emit(task: str, phase: str, **fields: Any) -> None:
    """Prints one progress event line to stdout, at once (task logs are read while they grow)."""
    event = {"task": task, "phase": phase, **{key: _plain(value) for key, value in fields.items()}}
    print(PREFIX + json.dumps(event), file=sys.stdout, flush=True)


def parse(line: str) -> dict[str, Any] | None:
    """The event on a progress line, or None for any other line (also one cut off mid-way)."""
    position = line.find(PREFIX)
    if position < 0:
        return None
    try:
        event = json.loads(line[position + len(PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _plain(value: Any) -> Any:
    """Numbers (NumPy's too) as plain JSON numbers, non-finite ones as null; other values as given."""
    if isinstance(value, (str, bool, type(None), list, dict)):
        return value
    if hasattr(value, "is_integer") or hasattr(value, "dtype") or isinstance(value, int):
        number = float(value)
        if not math.isfinite(number):
            return None
        # A dtype kind of "i" or "u" is an integer; Python floats have no dtype (kind None).
        is_integer = isinstance(value, int) or getattr(getattr(value, "dtype", None), "kind", None) in ("i", "u")
        return int(number) if is_integer else number
    return value


class ProgressLine:
    """A progress line on stderr: redrawn with carriage returns on a terminal (at most every
    REDRAW_SECONDS), one line per tenth done in a log, where carriage returns would pile up.

    `describe(done, total)` is the line's text; `total` is at least 1 so it can divide."""

    def __init__(self, total: float, describe: Callable[[float, float], str]):
        self.total = max(total, 1)
        self.describe = describe
        self.on_terminal = sys.stderr.isatty()
        self.last_printed_tenth = -1
        self.last_printed_time = 0.0

    def update(self, done: float) -> None:
        """Show `done` of the total (printed only when the terminal or the log needs a new line)."""
        fraction = min(done / self.total, 1.0)
        tenth = int(fraction * 10)
        now = time.monotonic()
        if self.on_terminal and now - self.last_printed_time < REDRAW_SECONDS and fraction < 1.0:
            return
        if not self.on_terminal and tenth == self.last_printed_tenth:
            return
        self.last_printed_tenth, self.last_printed_time = tenth, now
        print(self.describe(done, self.total), end="\r" if self.on_terminal else "\n", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """End the progress line (on a terminal the cursor is still on it)."""
        if self.on_terminal:
            print(file=sys.stderr, flush=True)


def bar(done: int, total: int, width: int) -> str:
    """'[######..................]': `width` cells, filled in proportion to done/total (empty without a total)."""
    filled = round(width * done / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"
