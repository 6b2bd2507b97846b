"""Progress events: how a step tells whoever runs it how far it has come.

A step prints one line per event to stdout, `cnnpipe-progress ` followed by a JSON object, and
goes on. Whoever reads the task's output (the `cnnpipe run` console, a test) picks these lines
out with `parse`; everybody else sees a readable line of JSON in the task log.

Fields every event has: "task" (e.g. "train"), "phase" (e.g. "step", "epoch", "done").
Training adds: "model", "epoch" (1-based), "epochs", "step" (within the epoch), "steps",
"loss", "accuracy", "val_accuracy" (epoch events), "images_per_second", "eta_seconds".
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

PREFIX = "cnnpipe-progress "


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
