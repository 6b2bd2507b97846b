"""What counts as a user mistake, and how a step reports it.

A mistake the user can fix (an unknown model, a missing path, an empty dataset, a bad flag)
raises `UserError` with a one-line message that names the problem and the fix. Entry points
turn it into that line and a non-zero exit, without a traceback. Every other exception is a
bug (or an outage) and keeps its traceback. `UserError` is a `ValueError`, so code that
validates arguments reads as usual.
"""

import contextlib
import logging
import sys

# The exit code of a pipeline step that stopped on a user mistake; the cluster does not retry
# it (pipeline/placement.py), since the same inputs fail the same way.
USER_ERROR_EXIT_CODE = 2
# How a step's output marks its one-line user mistake and its warnings; the pipeline's console,
# the worker launcher and the JobSet launcher read these lines back (`reported_user_error`).
ERROR_LINE_PREFIX = "error: "
WARNING_LINE_PREFIX = "warning: "


class UserError(ValueError):
    """A mistake in what the user asked for; its message is one line: the problem and the fix."""


class StepLogFormat(logging.Formatter):
    """A step's warnings as ``warning: ...`` lines (which `cnnpipe run` also shows in the terminal);
    its other records with their level and logger."""

    def __init__(self):
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.WARNING:
            return WARNING_LINE_PREFIX + record.getMessage()
        return super().format(record)


@contextlib.contextmanager
def pipeline_step():
    """How a step runs as a pipeline task: its log lines (the decisions it made, such as
    precision, XLA or a resumed epoch) go to the task log on stdout, warnings as ``warning: ...``
    lines, and a user mistake leaves as one ``error: ...`` line and exit code USER_ERROR_EXIT_CODE."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(StepLogFormat())
    project_logger = logging.getLogger("components")
    saved = project_logger.level, project_logger.propagate
    project_logger.addHandler(handler)
    project_logger.setLevel(logging.INFO)
    project_logger.propagate = False  # the runner's own root handler would log each line twice
    try:
        yield
    except UserError as error:
        print(ERROR_LINE_PREFIX + one_line(error), flush=True)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
    finally:
        project_logger.removeHandler(handler)
        project_logger.level, project_logger.propagate = saved


def reported_user_error(line: str) -> str | None:
    """The user mistake a step's output line reports (its ``error: ...`` line, without the prefix), else None."""
    return line[len(ERROR_LINE_PREFIX):] if line.startswith(ERROR_LINE_PREFIX) else None


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (file errors carry the path in ``filename``)."""
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.strerror}: {error.filename}"
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# Storage failures (components/storage): one line naming the URI.
class StorageError(UserError):
    """A storage operation failed for good; the message is one line naming the URI."""


class StorageUnavailableError(RuntimeError):
    """The storage service kept failing for the whole retry budget: an outage, not a mistake in
    the request, so a later retry (the cluster's, or the user's) may succeed."""


class PreconditionFailedError(StorageError):
    """A conditional write found another generation than the one it was given."""
