"""The `cnnpipe run` console, fed by the real KFP local runner running small stand-in tasks.

The stand-in tasks are real lightweight components run by ``kfp.local.SubprocessRunner``: they
print what the train step prints (progress events, an `error:` line, a traceback) without
training anything, so the console sees exactly the stream kfp produces.
"""

import io
import os
import re

import pytest
from kfp import dsl, local

from components.errors import UserError
from pipeline.console import Console, describe_step, model_from_executor_input
from pipeline.local_run import PipelineFailed, failure


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def prepare_data(note: str) -> str:
    import logging

    from components.errors import pipeline_step

    with pipeline_step():  # as the real steps log
        print("preparing", note)
        logging.getLogger("components.sources").warning("skipped 2 files that are not images, e.g. notes.txt")
        logging.getLogger("components.sources").info("a decision only the log keeps")
    return note


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def train_model(model_name: str, fail: str) -> str:
    import json
    import sys

    def emit(phase, **fields):
        print("cnnpipe-progress " + json.dumps({"task": "train", "phase": phase, "model": model_name, **fields}),
              flush=True)

    print("TensorFlow chatter that only the log should keep", flush=True)
    for epoch in (1, 2):
        for step in (1, 2, 3):
            emit("step", epoch=epoch, epochs=2, step=step, steps=3, loss=1.0 / step, accuracy=0.2 * step,
                 images_per_second=500.0, eta_seconds=9.0 - 3 * step)
        emit("epoch", epoch=epoch, epochs=2, step=3, steps=3, loss=0.5 / epoch, accuracy=0.4 * epoch,
             val_accuracy=0.35 * epoch, images_per_second=480.0, eta_seconds=6.0 * (2 - epoch))
        if fail == model_name + ":user":
            print("error: dataset has 0 images; pass a folder with train/<class>/ images", flush=True)
            sys.exit(2)
        if fail == model_name + ":crash":
            raise ZeroDivisionError("the stand-in step divided by zero")
    emit("done", epoch=2, epochs=2)
    return model_name


@dsl.pipeline(name="console-test")
def fake_pipeline(models: list, fail: str = ""):
    prep = prepare_data(note="hello")
    with dsl.ParallelFor(models, parallelism=1) as model_name:
        train_model(model_name=model_name, fail=fail).after(prep)


def run_fake(tmp_path, models, fail="", **console_options):
    """Runs the stand-in pipeline under a console writing to a StringIO: (console, output, error)."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    out = io.StringIO()
    console = Console(str(tmp_path / "logs"), out=out, **console_options)
    error = None
    try:
        with console.capture():
            fake_pipeline(models=models, fail=fail)
    except RuntimeError as raised:
        error = failure(console, str(raised))
    return console, out.getvalue(), error


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return run_fake(tmp_path_factory.mktemp("console"), ["lenet5", "resnet20_v1"], live=False)


def test_terminal_shows_task_lines_and_epochs_but_no_task_chatter(finished):
    console, output, error = finished
    assert error is None
    lines = output.splitlines()
    names = ["prepare-data", "train-model-lenet5", "train-model-resnet20_v1"]
    for name in names:
        assert sum(re.fullmatch(rf"\d\d:\d\d:\d\d  {name} started", line) is not None for line in lines) == 1
        assert sum(re.fullmatch(rf"\d\d:\d\d:\d\d  {name} done in \d+\.\d s", line) is not None for line in lines) == 1
    assert "    lenet5  epoch 1/2  loss 0.500  accuracy 40.0%  val_accuracy 35.0%  480 img/s  ETA 6.0 s" in lines
    assert "    resnet20_v1  epoch 2/2  loss 0.250  accuracy 80.0%  val_accuracy 70.0%  480 img/s  ETA 0.0 s" in lines
    # A step's warning, with its task.
    assert sum(re.fullmatch(r"\d\d:\d\d:\d\d  prepare-data warning: skipped 2 files .*notes.txt", line) is not None
               for line in lines) == 1
    # 3 tasks x (start + end) + the warning + 2 models x 2 epochs; nothing else of kfp's or the tasks' output.
    assert len(lines) == 11, output
    assert "chatter" not in output and "executor_input" not in output and "decision" not in output and "\r" not in output


def test_every_task_log_holds_its_full_output(finished):
    console, _, _ = finished
    logs_dir = console.logs_dir
    assert sorted(os.listdir(logs_dir)) == [
        "pipeline.log", "prepare-data.log", "train-model-lenet5.log", "train-model-resnet20_v1.log",
    ]
    lenet_log = open(os.path.join(logs_dir, "train-model-lenet5.log")).read()
    assert "TensorFlow chatter" in lenet_log and '"model_name": "lenet5"' in lenet_log
    assert lenet_log.count("cnnpipe-progress ") == 2 * 4 + 1
    assert "resnet20_v1" not in lenet_log.replace("train-model-resnet20_v1", "")
    prepare_log = open(os.path.join(logs_dir, "prepare-data.log")).read()
    assert "preparing hello" in prepare_log
    assert prepare_log.count("skipped 2 files") == 1 and prepare_log.count("INFO components.sources: a decision") == 1
    assert "Running pipeline" in open(os.path.join(logs_dir, "pipeline.log")).read()
    assert [task.status for task in console.tasks] == ["SUCCESS"] * 3


def test_a_user_mistake_in_a_task_names_step_cause_and_log(tmp_path):
    console, output, error = run_fake(tmp_path, ["lenet5"], fail="lenet5:user", live=False)
    log_path = str(tmp_path / "logs" / "train-model-lenet5.log")
    assert isinstance(error, UserError)
    assert str(error) == (
        "the pipeline step 'train-model-lenet5' failed: dataset has 0 images; pass a folder with "
        f"train/<class>/ images; log: {log_path}"
    )
    lines = output.splitlines()
    failed = next(number for number, line in enumerate(lines) if "train-model-lenet5 FAILED after" in line)
    assert lines[failed].endswith("; last lines of its log:")
    # The task's own output only: kfp's preamble and the executor's input JSON end before it.
    assert lines[failed + 1] == "    | TensorFlow chatter that only the log should keep"
    assert "    | error: dataset has 0 images" in output
    assert f"    log: {log_path}" in output
    assert "error: dataset has 0 images" in open(log_path).read()


def test_a_crashed_task_is_not_a_user_error_and_shows_its_exception(tmp_path):
    _, output, error = run_fake(tmp_path, ["lenet5"], fail="lenet5:crash", live=False)
    assert isinstance(error, PipelineFailed) and not isinstance(error, ValueError)
    cause = "ZeroDivisionError: the stand-in step divided by zero"
    assert f"the pipeline step 'train-model-lenet5' failed: {cause}" in str(error)
    assert "    | ZeroDivisionError: the stand-in step divided by zero" in output
    assert "    |   File " in output
    assert "finished with status" not in output  # kfp's own line is not the task's output


def test_live_terminal_draws_and_clears_a_progress_bar_and_verbose_streams_logs(tmp_path):
    _, output, _ = run_fake(tmp_path, ["lenet5"], live=True, verbose=True)
    assert "\r\x1b[2K    lenet5  epoch 1/2 [################........] 2/3" in output
    assert "epoch" not in output.rsplit("\n", 1)[-1]  # no bar left behind once the run ends
    assert "[train-model-lenet5] TensorFlow chatter that only the log should keep" in output
    assert "[prepare-data] preparing hello" in output


def test_model_comes_from_the_train_parameter_or_the_model_artifact():
    assert model_from_executor_input({"inputs": {"parameterValues": {"model_name": "vgg16"}}}) == "vgg16"
    evaluate_input = {"inputs": {"artifacts": {"model": {"artifacts": [{"metadata": {"name": "lenet5"}}]}}}}
    assert model_from_executor_input(evaluate_input) == "lenet5"
    assert model_from_executor_input({"inputs": {"parameterValues": {"source": "digits"}}}) is None


def test_bar_reads_well():
    event = {"model": "lenet5", "epoch": 1, "epochs": 3, "step": 6, "steps": 24, "loss": 1.5, "eta_seconds": 185}
    assert describe_step(event) == "lenet5  epoch 1/3 [######..................] 6/24  loss 1.500  ETA 3:05"


def test_progress_events_keep_fractions_and_integers(capsys):
    import numpy as np

    from components import progress

    progress.emit("train", "epoch", loss=0.25, accuracy=np.float32(0.5), epoch=np.int64(2), eta_seconds=float("inf"))
    event = progress.parse(capsys.readouterr().out)
    assert event == {"task": "train", "phase": "epoch", "loss": 0.25, "accuracy": 0.5, "epoch": 2, "eta_seconds": None}
    assert isinstance(event["epoch"], int)


def test_interleaved_chunks_of_two_tasks_land_in_their_own_logs(tmp_path):
    """Two tasks running side by side, their output arriving in pieces (as Docker's log stream
    delivers it): each line reaches the log of the task whose thread wrote it."""
    out = io.StringIO()
    console = Console(str(tmp_path / "logs"), out=out, live=False)
    first, second = 1, 2  # thread ids
    executor_input = '    Got executor_input:\n    {"inputs": {"parameterValues": {"model_name": "%s"}}}\n'
    with console.capture():
        console.write("INFO - Executing task \x1b[96m'train-model'\x1b[0m\n", first)
        console.write("INFO - Executing task 'train-model'\n", second)
        console.write(executor_input % "vgg16", first)
        console.write(executor_input % "lenet5", second)
        console.write("    from the first ta", first)
        console.write("    from the second task\n    error: no images; add some\n", second)
        console.write("sk\n", first)
        console.write("ERROR - Task 'train-model' finished with status FAILURE\n", second)
        console.write("INFO - Task 'train-model' finished with status SUCCESS\n", first)
    first_log = (tmp_path / "logs" / "train-model-vgg16.log").read_text()
    second_log = (tmp_path / "logs" / "train-model-lenet5.log").read_text()
    assert "from the first task\n" in first_log and "second" not in first_log
    assert "from the second task\n" in second_log and "first" not in second_log
    failed = console.failed_task()
    assert (failed.name, failed.cause) == ("train-model-lenet5", "no images; add some")
    assert [task.status for task in console.tasks] == ["SUCCESS", "FAILURE"]
