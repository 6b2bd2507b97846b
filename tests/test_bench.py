"""`components.bench`: per-batch forward and forward+backward timing of a zoo model, and its outputs."""

import json
import math
import re

import pytest

from components.bench import (
    JSON_FILE,
    PLOT_FILE,
    TABLE_FILE,
    benchmark_model,
    measured_input_shape,
    parse_batch_sizes,
    parse_input_shape,
    summarize,
    write_bench_outputs,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lenet_rows():
    return benchmark_model("lenet5", batch_sizes=(1, 2), steps=2, warmup_steps=1)


def test_one_row_per_batch_size_with_positive_times(lenet_rows):
    assert [row["batch_size"] for row in lenet_rows] == [1, 2]
    for row in lenet_rows:
        assert row["model"] == "lenet5"
        assert row["params"] > 0
        assert row["device"] in ("CPU", "GPU")
        assert row["steps"] == 2 and row["warmup_steps"] == 1
        for prefix in ("forward", "forward_backward"):
            mean = row[f"{prefix}_seconds_mean"]
            assert mean > 0
            assert row[f"{prefix}_seconds_std"] >= 0
            assert row[f"{prefix}_images_per_second"] == pytest.approx(row["batch_size"] / mean)


def test_small_images_are_measured_at_the_model_minimum(lenet_rows):
    # lenet5 needs 16x16; 32x32 is kept as it is, 8x8 would be raised.
    assert lenet_rows[0]["input_shape"] == [32, 32, 3]
    assert measured_input_shape((8, 8, 1), 16) == (16, 16, 1)


def test_summary_is_mean_and_sample_std():
    summary = summarize("forward", [0.1, 0.3], batch_size=4)
    assert summary["forward_seconds_mean"] == pytest.approx(0.2)
    assert summary["forward_seconds_std"] == pytest.approx(math.sqrt(0.02))
    assert summary["forward_images_per_second"] == pytest.approx(20.0)


def test_outputs_are_table_png_and_json(lenet_rows, tmp_path):
    table = write_bench_outputs(lenet_rows, str(tmp_path))
    lines = table.splitlines()
    assert "forward ms" in lines[0] and "fwd+bwd img/s" in lines[0]
    assert len(lines) == 2 + len(lenet_rows)
    assert (tmp_path / PLOT_FILE).read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((tmp_path / JSON_FILE).read_text())["rows"] == lenet_rows
    assert (tmp_path / TABLE_FILE).read_text().strip() == table.strip()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"batch_sizes": ()}, "batch sizes must list at least one integer >= 1, got none"),
        ({"batch_sizes": (1, 0)}, "batch size must be an integer >= 1, got 0; pass e.g. --batch-sizes 1,2,4"),
        ({"batch_sizes": (True,)}, "batch size must be an integer >= 1, got True"),
        ({"steps": 1}, "steps must be an integer >= 2 (a standard deviation needs two), got 1"),
        ({"warmup_steps": 0}, "warmup_steps must be an integer >= 1 (the first call compiles), got 0"),
        ({"input_shape": (32, 32)}, "input_shape must be (height, width, channels) of positive sizes, got (32, 32)"),
        ({"input_shape": (32, 32.5, 3)}, "input_shape must be (height, width, channels) of positive sizes"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2, got 1"),
    ],
)
def test_bad_arguments_name_the_value(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        benchmark_model("lenet5", **arguments)


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model.*resnet20_v1"):
        benchmark_model("no_such_net", batch_sizes=(1,), steps=2, warmup_steps=1)


def test_no_rows_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no benchmark rows"):
        write_bench_outputs([], str(tmp_path))


def test_command_line_values_are_parsed():
    assert parse_batch_sizes("1, 2,4") == (1, 2, 4)
    assert parse_input_shape("28,28,1") == (28, 28, 1)


@pytest.mark.parametrize("text", ["1,,2", "0", "two", "-1"])
def test_bad_batch_sizes_are_refused(text):
    with pytest.raises(ValueError, match="--batch-sizes"):
        parse_batch_sizes(text)


@pytest.mark.parametrize("text", ["32,32", "32,x,3", "0,32,3"])
def test_bad_input_shapes_are_refused(text):
    with pytest.raises(ValueError, match="--input-shape"):
        parse_input_shape(text)
