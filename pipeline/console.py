"""What `cnnpipe run` shows in the terminal, and where every task's full log goes.

``kfp.local`` (2.17) writes everything to ``sys.stdout`` of this process, from one worker thread
per running task: its own log records ("Executing task 'train-model'", "Task 'train-model'
finished with status SUCCESS") through a ``logging.StreamHandler(sys.stdout)`` it creates per
task, and the task's streamed output (the executor's input JSON, TensorFlow's chatter, our
progress events) through ``print``, for the subprocess and the Docker runner alike. The console
stands in for ``sys.stdout`` while the pipeline runs (``contextlib.redirect_stdout``: no kfp
function is replaced) and sorts lines by the thread that wrote them, so tasks that run side by
side keep separate logs.

Every task's lines go to ``<logs>/<task>.log`` (train and evaluate tasks carry their model:
``train-model-resnet20_v1.log``); lines outside any task go to ``<logs>/pipeline.log``. The
terminal gets one line when a task starts and one when it ends, each training epoch, and on a
terminal a live bar of the current epoch; ``verbose`` also streams every log line. A failed
task's last lines are shown with the path of its log.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, TextIO

from components import progress
from components.errors import WARNING_LINE_PREFIX, reported_user_error
from components.formatting import format_clock_duration, format_count, format_percent

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TASK_STARTED = re.compile(r"Executing task '([^']+)'")
TASK_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
# kfp prints a full-width line of dashes after each task's outputs.
SEPARATOR = re.compile(r"^-{20,}$")
EXECUTOR_INPUT = "Got executor_input:"
# The last exception line of a Python traceback: the cause when a task printed no `error:` line.
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
# kfp's subprocess runner indents a task's lines by four spaces.
KFP_INDENT = "    "
TAIL_LINES = 12
MAX_EXECUTOR_INPUT_LINES = 2000
BAR_WIDTH = 24


@dataclass
class Task:
    """One pipeline task as the console follows it."""

    kfp_name: str
    started: float
    name: str = ""
    log_path: str = ""
    status: str = ""
    seconds: float = 0.0
    error: str = ""
    pending: list[str] = field(default_factory=list)
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    executor_input: list[str] | None = None
    log: TextIO | None = None

    @property
    def cause(self) -> str:
        """Why the task failed: its `error:` line, else the exception its traceback ended with."""
        if self.error:
            return self.error
        for line in reversed(self.tail):
            if EXCEPTION_LINE.match(line.strip()):
                return line.strip()
        return "it exited with a non-zero status"


class Console:
    """Follows a pipeline run: per-task log files, task lines and training progress on `out`."""

    def __init__(self, logs_dir: str, out: TextIO | None = None, verbose: bool = False, live: bool | None = None):
        self.logs_dir = logs_dir
        self.out = out or sys.stdout
        self.verbose = verbose
        self.live = self.out.isatty() if live is None else live
        self.tasks: list[Task] = []
        self._lock = threading.RLock()
        self._current: dict[int, Task | None] = {}
        self._partial: dict[int, str] = {}
        self._pipeline_log: TextIO | None = None
        self._bar = ""
        self._used_names: set[str] = set()

    # -- capture -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Everything printed to sys.stdout inside the block is read by the console."""
        os.makedirs(self.logs_dir, exist_ok=True)
        self._pipeline_log = open(os.path.join(self.logs_dir, "pipeline.log"), "a", encoding="utf-8")
        stream = _ThreadLines(self)
        try:
            with contextlib.redirect_stdout(stream), _root_logging_to(stream):
                yield
        finally:
            self.close()

    def close(self) -> None:
        """Reads what is left of unfinished lines, closes the log files and clears the live bar."""
        with self._lock:
            for thread, text in list(self._partial.items()):
                if text:
                    self.read_line(text, thread)
            self._partial.clear()
            for task in self.tasks:
                self._resolve_name(task)
                if task.log:
                    task.log.close()
                    task.log = None
            if self._pipeline_log:
                self._pipeline_log.close()
                self._pipeline_log = None
            self._draw_bar("")

    def write(self, text: str, thread: int) -> None:
        """Text one thread printed; complete lines are read, the rest waits for its newline."""
        with self._lock:
            lines = (self._partial.pop(thread, "") + text).split("\n")
            self._partial[thread] = lines.pop()
            for line in lines:
                self.read_line(line, thread)

    # -- reading lines ---------------------------------------------------------------------------

    def read_line(self, raw: str, thread: int) -> None:
        """One complete line from one thread: route it to its task's log and update the view."""
        line = ANSI_ESCAPE.sub("", raw).rstrip("\r")
        with self._lock:
            started = TASK_STARTED.search(line)
            if started:
                task = Task(kfp_name=started.group(1), started=time.monotonic())
                self.tasks.append(task)
                self._current[thread] = task
            task = self._current.get(thread)
            if task is None:
                self._pipeline_line(line)
                return
            text = line[len(KFP_INDENT):] if line.startswith(KFP_INDENT) else line
            finished = TASK_FINISHED.search(line)
            ends_task = bool(finished and finished.group(1) == task.kfp_name and not task.status)
            self._task_line(task, text, kfp_status=ends_task)
            if ends_task:
                self._finish(task, finished.group(2))
            elif task.status and SEPARATOR.match(line):
                self._current[thread] = None

    def _pipeline_line(self, line: str) -> None:
        if self._pipeline_log:
            self._pipeline_log.write(line + "\n")
            self._pipeline_log.flush()
        if self.verbose and line.strip():
            self._print(line)

    def _task_line(self, task: Task, text: str, kfp_status: bool = False) -> None:
        """One line of a task (`kfp_status`: kfp's own line saying how the task ended)."""
        if task.log:
            task.log.write(text + "\n")
            task.log.flush()
        else:
            task.pending.append(text)
        if self.verbose and task.name:
            self._print(f"[{task.name}] {text}")
        if text.strip() and not kfp_status:
            task.tail.append(text)
        self._follow_executor_input(task, text)
        mistake = reported_user_error(text)
        if mistake is not None:
            task.error = mistake.strip()
        if text.startswith(WARNING_LINE_PREFIX):  # shown in the terminal too
            self._print(f"{clock()}  {task.name or task.kfp_name} {text}")
        event = progress.parse(text)
        if event:
            self._resolve_name(task, event.get("model"))
            self._show_progress(task, event)

    def _follow_executor_input(self, task: Task, text: str) -> None:
        """The executor's input JSON names the task's model; the task's name waits for it."""
        if task.name:
            return
        if task.executor_input is None:
            if text.rstrip().endswith(EXECUTOR_INPUT):
                task.executor_input = []
            return
        task.executor_input.append(text)
        if len(task.executor_input) > MAX_EXECUTOR_INPUT_LINES:  # not the JSON we know: name it without a model
            self._resolve_name(task)
            return
        try:
            document = json.loads("\n".join(task.executor_input))
        except ValueError:
            return  # not complete yet
        self._resolve_name(task, model_from_executor_input(document))
        task.tail.clear()  # kfp's preamble and the JSON say nothing about why a task failed

    def _resolve_name(self, task: Task, model: str | None = None) -> None:
        """Names the task (with its model if known), opens its log and announces its start."""
        if task.name:
            return
        name = f"{task.kfp_name}-{model}" if model else task.kfp_name
        unique, number = name, 2
        while unique in self._used_names:  # a retried or repeated task keeps its earlier log
            unique, number = f"{name}-{number}", number + 1
        self._used_names.add(unique)
        task.name = unique
        task.log_path = os.path.join(self.logs_dir, f"{unique}.log")
        task.log = open(task.log_path, "w", encoding="utf-8")
        for text in task.pending:
            task.log.write(text + "\n")
            if self.verbose:
                self._print(f"[{task.name}] {text}")
        task.log.flush()
        task.pending.clear()
        self._print(f"{clock()}  {task.name} started")

    def _finish(self, task: Task, status: str) -> None:
        self._resolve_name(task)
        task.status = status
        task.seconds = time.monotonic() - task.started
        self._draw_bar("")
        if status == "SUCCESS":
            self._print(f"{clock()}  {task.name} done in {format_clock_duration(task.seconds)}")
            return
        self._print(f"{clock()}  {task.name} FAILED after {format_clock_duration(task.seconds)}; last lines of its log:")
        for text in task.tail:
            self._print(f"    | {text}")
        self._print(f"    log: {task.log_path}")

    # -- progress --------------------------------------------------------------------------------

    def _show_progress(self, task: Task, event: dict) -> None:
        if event.get("phase") == "epoch":
            self._draw_bar("")
            self._print("    " + describe_epoch(event))
        elif event.get("phase") == "step" and self.live:
            self._draw_bar("    " + describe_step(event))

    def _draw_bar(self, text: str) -> None:
        """Replaces the live bar (the terminal's last line) with `text`; '' removes it."""
        if not self.live or (not text and not self._bar):
            return
        # A bar wider than the terminal would wrap, and only its last row would be redrawn.
        text = text[: shutil.get_terminal_size().columns - 1]
        self.out.write("\r\x1b[2K" + text)
        self.out.flush()
        self._bar = text

    def _print(self, text: str) -> None:
        """A permanent line; on a terminal the live bar is redrawn below it."""
        bar = self._bar
        if bar:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        if bar:
            self.out.write(bar)
        self.out.flush()

    # -- results ---------------------------------------------------------------------------------

    def failed_task(self) -> Task | None:
        """The first task that finished with a failure, if any."""
        return next((task for task in self.tasks if task.status and task.status != "SUCCESS"), None)


@contextlib.contextmanager
def _root_logging_to(stream: TextIO) -> Iterator[None]:
    """Log records of the root logger go to `stream` meanwhile: kfp logs its own messages between
    tasks ("Skipping task ...", "Cleaned up workspace ...") through whatever handlers it finds."""
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


class _ThreadLines(io.TextIOBase):
    """sys.stdout while the console captures: hands each write to the console with its thread."""

    def __init__(self, console: Console):
        self._console = console

    def write(self, text: str) -> int:
        self._console.write(text, threading.get_ident())
        return len(text)

    def writable(self) -> bool:
        return True


def model_from_executor_input(document: dict) -> str | None:
    """The model a task works on: the train step's `model_name` parameter, or the name the
    train step put in its model artifact's metadata (what evaluate receives)."""
    inputs = document.get("inputs") or {}
    name = (inputs.get("parameterValues") or {}).get("model_name")
    if isinstance(name, str) and name:
        return name
    for artifact in ((inputs.get("artifacts") or {}).get("model") or {}).get("artifacts") or []:
        name = (artifact.get("metadata") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    return None


def describe_epoch(event: dict) -> str:
    """'lenet5  epoch 2/3  loss 0.912  accuracy 71.3%  val_accuracy 74.0%  1,210 img/s  ETA 4 s'."""
    parts = [f"{event.get('model', '?')}  epoch {event.get('epoch', '?')}/{event.get('epochs', '?')}"]
    parts += metric_parts(event, ("loss", "accuracy", "val_accuracy"))
    return "  ".join(parts)


def describe_step(event: dict) -> str:
    """The live bar: model, epoch, a bar of the epoch's steps, metrics so far and ETA."""
    steps, step = event.get("steps") or 0, event.get("step") or 0
    bar = progress.bar(step, steps, BAR_WIDTH) + f" {step}/{steps or '?'}"
    head = f"{event.get('model', '?')}  epoch {event.get('epoch', '?')}/{event.get('epochs', '?')} {bar}"
    return "  ".join([head, *metric_parts(event, ("loss", "accuracy"))])


def metric_parts(event: dict, metrics: tuple[str, ...]) -> list[str]:
    """The event's metrics, images/s and ETA as short texts (missing ones left out)."""
    parts = []
    for metric in metrics:
        value = event.get(metric)
        if isinstance(value, (int, float)):
            parts.append(f"{metric} {value:.3f}" if metric == "loss" else f"{metric} {format_percent(value, digits=1)}")
    speed = event.get("images_per_second")
    if isinstance(speed, (int, float)):
        parts.append(f"{format_count(speed)} img/s")
    eta = event.get("eta_seconds")
    if isinstance(eta, (int, float)):
        parts.append(f"ETA {format_clock_duration(eta)}")
    return parts


def clock() -> str:
    return time.strftime("%H:%M:%S")
