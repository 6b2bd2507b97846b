"""Argument checks shared by the steps, the presets and the command line.

Each check returns the value it accepted (an ``int``, ``float`` or ``bool`` for the typed ones,
so NumPy scalars and JSON doubles leave as plain Python values) or raises `UserError` with one
line: the argument's name, what it accepts and the value received, e.g.
``batch_size must be an integer >= 1, got 0``. ``bool`` is a subclass of ``int`` in Python; these
checks never take ``True`` for a count or a number.

No TensorFlow here, so the CLI checks its flags without TensorFlow's start-up.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from components.errors import UserError


def is_integer(value: Any) -> bool:
    """True for Python and NumPy integers; False for bools, floats and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for finite Python and NumPy integers and floats; False for bools, NaN and infinities."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(name: str, value: Any, *, minimum: int | None = None, alternative: str | None = None,
            why: str | None = None, hint: str | None = None) -> int:
    """``value`` as an int if it is an integer >= ``minimum``, else a UserError.

    Args:
        name: the argument as the user wrote it (``batch_size``, ``--workers``).
        minimum: the smallest accepted value; None for no bound.
        alternative: what else the caller accepts in its place, named in the message ("null").
        why: the meaning of the bound, shown in parentheses after it ("1 = one process").
        hint: what to pass instead, after the received value ("pass e.g. seed=0").
    """
    accepted = "an integer" if minimum is None else f"an integer >= {minimum}"
    if not is_integer(value) or (minimum is not None and value < minimum):
        _refuse(name, _with(accepted, alternative, why), value, hint)
    return int(value)


def number(name: str, value: Any, *, at_least: float | None = None, above: float | None = None,
           below: float | None = None, at_most: float | None = None, hint: str | None = None) -> float:
    """``value`` as a float if it is a finite number within the given bounds, else a UserError.

    ``at_least`` and ``at_most`` are inclusive bounds, ``above`` and ``below`` exclusive ones; the
    message writes them as an interval, e.g. ``a number in [0, 1)``.
    """
    within = (
        (at_least is None or value >= at_least) and (above is None or value > above)
        and (below is None or value < below) and (at_most is None or value <= at_most)
    ) if is_number(value) else False
    if not within:
        _refuse(name, _number_range(at_least, above, below, at_most), value, hint)
    return float(value)


def fraction(name: str, value: Any, *, hint: str | None = None) -> float:
    """``value`` as a float if it is a number in [0, 1), else a UserError."""
    if not (is_number(value) and 0 <= value < 1):
        _refuse(name, "a fraction in [0, 1)", value, hint)
    return float(value)


def boolean(name: str, value: Any, *, alternative: str | None = None) -> bool:
    """``value`` as a bool if it is one (Python or NumPy), else a UserError.

    ``alternative`` names what else the caller accepts in its place ("'auto'").
    """
    if not _is_bool(value):
        _refuse(name, f"true, false or {alternative}" if alternative else "true or false", value)
    return bool(value)


def choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a UserError listing them."""
    choices = tuple(choices)
    if _is_bool(value) or value not in choices:  # True == 1: a bool never stands for a choice
        _refuse(name, f"one of {', '.join(str(each) for each in choices)}", value)
    return value


def relative_object_name(prefix: str, name: str) -> str:
    """``name`` if it is a plain relative path of an object under ``prefix``, else a UserError.

    Object stores allow any name, and a listed name becomes a local path when it is fetched:
    a ``..`` segment would land outside the download folder, a leading ``/`` (an empty first
    segment) would be absolute, a backslash is a separator on Windows, and ``.`` or empty
    segments would make two objects one file. The message names the whole object.
    """
    segments = name.split("/")
    problem = ("a backslash" if "\\" in name
               else "a leading /" if not segments[0]
               else "a '..' segment" if ".." in segments
               else "a '.' segment" if "." in segments
               else "an empty segment (//)" if "" in segments
               else None)
    if problem:
        separator = "" if prefix.endswith("/") else "/"
        raise UserError(f"object {prefix}{separator}{name} has {problem} in its name; names under a prefix "
                        f"must be plain relative paths: rename or delete that object (nothing under the prefix "
                        f"was fetched)")
    return name


def _is_bool(value: Any) -> bool:
    """True for Python and NumPy bools."""
    return isinstance(value, (bool, np.bool_))


def _with(accepted: str, alternative: str | None, why: str | None) -> str:
    """The accepted values, followed by the alternative and the reason, as the message shows them."""
    text = f"{accepted} or {alternative}" if alternative else accepted
    return f"{text} ({why})" if why else text


def _number_range(at_least, above, below, at_most) -> str:
    """'a finite number', 'a number > 0', 'a number in [0, 1)' and the like."""
    lower = ("[", at_least) if at_least is not None else ("(", above) if above is not None else None
    upper = (at_most, "]") if at_most is not None else (below, ")") if below is not None else None
    if lower and upper:
        return f"a number in {lower[0]}{lower[1]}, {upper[0]}{upper[1]}"
    if lower:
        return f"a number {'>=' if lower[0] == '[' else '>'} {lower[1]}"
    if upper:
        return f"a number {'<=' if upper[1] == ']' else '<'} {upper[0]}"
    return "a finite number"


def _refuse(name: str, accepted: str, value: Any, hint: str | None = None) -> None:
    """Raises the one-line UserError: the name, what is accepted, the value received, the hint."""
    text = f"{name} must be {accepted}, got {_shown(value)}"
    raise UserError(f"{text}; {hint}" if hint else text)


def _shown(value: Any) -> str:
    """The received value as the user would write it, on one line."""
    return " ".join(repr(value).split())
