"""`cnnpipe bench` tells how far it has come: one line per measured batch size, on stderr."""

import io
import re

from components.bench import benchmark_model, describe_progress


def test_each_measured_batch_size_prints_a_progress_line():
    lines = io.StringIO()
    rows = benchmark_model("lenet5", batch_sizes=(1, 2), steps=2, warmup_steps=1, progress_to=lines)
    printed = lines.getvalue().splitlines()
    assert len(printed) == len(rows) == 2
    assert re.fullmatch(r"bench lenet5 \[1/2\] batch 1: forward \d+\.\d\d ms, forward\+backward \d+\.\d\d ms; "
                        r"\d+ s so far, about \d+ s left", printed[0])
    assert re.fullmatch(r"bench lenet5 \[2/2\] batch 2: .* s so far", printed[1])  # nothing left to estimate


def test_time_left_scales_the_time_so_far_by_the_images_still_to_measure():
    row = {"model": "vgg16", "batch_size": 2, "forward_seconds_mean": 0.004, "forward_backward_seconds_mean": 0.0105}
    line = describe_progress([row, row], batch_sizes=(1, 2, 4, 8), elapsed=6.0)
    assert line == ("bench vgg16 [2/4] batch 2: forward 4.00 ms, forward+backward 10.50 ms; "
                    "6 s so far, about 24 s left")


def test_silent_when_asked(capsys):
    benchmark_model("lenet5", batch_sizes=(4,), steps=2, warmup_steps=1, progress_to=None)
    assert capsys.readouterr().err == ""
