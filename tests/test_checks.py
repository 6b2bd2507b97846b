"""components.checks: each check returns the accepted value or one UserError line naming the argument,
what it accepts and the value received."""

import math

import numpy as np
import pytest

from components import checks
from components.errors import UserError


def refusal(check, *arguments, **keywords) -> str:
    """The message of the UserError that `check` raises; fails the test if it raises none."""
    with pytest.raises(UserError) as raised:
        check(*arguments, **keywords)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value, expected", [(0, 0), (7, 7), (np.int64(3), 3), (np.uint8(2), 2), (-5, -5)])
def test_integer_accepts_python_and_numpy_integers_as_int(value, expected):
    accepted = checks.integer("count", value)
    assert accepted == expected and type(accepted) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, 1.5, "1", None, [1]])
def test_integer_refuses_bools_floats_and_text(value):
    assert refusal(checks.integer, "count", value) == f"count must be an integer, got {value!r}"


def test_integer_names_the_minimum_alternative_reason_and_hint():
    assert checks.integer("batch_size", 1, minimum=1) == 1
    assert refusal(checks.integer, "batch_size", 0, minimum=1) == "batch_size must be an integer >= 1, got 0"
    assert refusal(checks.integer, "reference_batch_size", 0, minimum=1, alternative="null") == (
        "reference_batch_size must be an integer >= 1 or null, got 0")
    assert refusal(checks.integer, "--workers", -1, minimum=1, why="1 = one process") == (
        "--workers must be an integer >= 1 (1 = one process), got -1")
    assert refusal(checks.integer, "seed", "x", minimum=0, hint="pass e.g. seed=0") == (
        "seed must be an integer >= 0, got 'x'; pass e.g. seed=0")


@pytest.mark.parametrize("value", [0, 0.25, 1e-9, np.float32(0.5), np.int32(0)])
def test_number_accepts_finite_ints_and_floats_as_float(value):
    accepted = checks.number("rate", value)
    assert accepted == float(value) and type(accepted) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "0.1", None])
def test_number_refuses_non_finite_values_bools_and_text(value):
    assert refusal(checks.number, "rate", value) == f"rate must be a finite number, got {value!r}"


@pytest.mark.parametrize("bounds, inside, outside, accepted", [
    ({"above": 0}, 1e-9, 0, "a number > 0"),
    ({"at_least": 0}, 0, -1e-9, "a number >= 0"),
    ({"below": 1}, 0.999, 1, "a number < 1"),
    ({"at_most": 1}, 1, 1.001, "a number <= 1"),
    ({"at_least": 0, "below": 0.5}, 0, 0.5, "a number in [0, 0.5)"),
    ({"above": 0, "at_most": 1}, 1, 0, "a number in (0, 1]"),
])
def test_number_bounds_are_kept_and_written_as_an_interval(bounds, inside, outside, accepted):
    assert checks.number("value", inside, **bounds) == inside
    assert refusal(checks.number, "value", outside, **bounds) == f"value must be {accepted}, got {outside!r}"


def test_number_out_of_bounds_with_a_hint():
    assert refusal(checks.number, "learning_rate", -0.1, above=0, hint="e.g. 0.1") == (
        "learning_rate must be a number > 0, got -0.1; e.g. 0.1")


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_fraction_accepts_zero_up_to_one_exclusive(value):
    assert checks.fraction("validation_fraction", value) == value


@pytest.mark.parametrize("value", [1, 1.0, -0.1, math.nan, True, "0.1"])
def test_fraction_refuses_one_negatives_and_non_numbers(value):
    assert refusal(checks.fraction, "margin", value, hint="e.g. 0.005") == (
        f"margin must be a fraction in [0, 1), got {value!r}; e.g. 0.005")


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (np.bool_(True), True)])
def test_boolean_accepts_python_and_numpy_bools_as_bool(value, expected):
    accepted = checks.boolean("augment", value)
    assert accepted is expected


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_boolean_refuses_numbers_and_text(value):
    assert refusal(checks.boolean, "augment", value) == f"augment must be true or false, got {value!r}"
    assert refusal(checks.boolean, "jit_compile", value, alternative="'auto'") == (
        f"jit_compile must be true, false or 'auto', got {value!r}")


def test_choice_returns_the_value_or_lists_the_choices():
    assert checks.choice("cache", "memory", ("auto", "memory", "none")) == "memory"
    assert refusal(checks.choice, "cache", "disk", ("auto", "memory", "none")) == (
        "cache must be one of auto, memory, none, got 'disk'")


def test_choice_never_takes_a_bool_for_a_number():
    assert checks.choice("workers", 1, (1, 2)) == 1
    assert refusal(checks.choice, "workers", True, (1, 2)) == "workers must be one of 1, 2, got True"


def test_a_value_whose_repr_has_several_lines_is_shown_on_one():
    assert "\n" in repr(np.zeros((2, 2)))
    assert refusal(checks.integer, "epochs", np.zeros((2, 2))) == (
        "epochs must be an integer, got array([[0., 0.], [0., 0.]])")
    assert refusal(checks.integer, "epochs", "3\n4") == r"epochs must be an integer, got '3\n4'"


@pytest.mark.parametrize("value, integer, number", [
    (3, True, True), (np.int16(3), True, True), (3.0, False, True), (True, False, False),
    (math.nan, False, False), ("3", False, False), (None, False, False),
])
def test_predicates_for_compound_checks(value, integer, number):
    assert checks.is_integer(value) is integer
    assert checks.is_number(value) is number


@pytest.mark.parametrize("name, problem", [
    ("train/cat/../../../../x.png", "a '..' segment"),
    ("..", "a '..' segment"),
    ("/etc/passwd", "a leading /"),
    ("train\\..\\..\\x.png", "a backslash"),
    ("train/./cat.png", "a '.' segment"),
    ("train//cat.png", "an empty segment (//)"),
])
def test_object_names_that_are_not_plain_relative_paths_are_refused(name, problem):
    message = refusal(checks.relative_object_name, "gs://bucket/images/", name)
    assert message.startswith(f"object gs://bucket/images/{name} has {problem} in its name; ")
    assert "rename or delete that object" in message and "\n" not in message


@pytest.mark.parametrize("name", ["train/cat/1.png", "a..b/c..png", ".hidden/x", "x"])
def test_plain_relative_object_names_pass(name):
    assert checks.relative_object_name("gs://bucket/images", name) == name
