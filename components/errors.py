"""What counts as a user mistake, and how a step reports it.

Steps raise ``ValueError`` (or ``FileNotFoundError``) with a one-line message that names the
problem and the fix. Entry points turn those into that line and a non-zero exit, without a
traceback; anything else is a bug and keeps its traceback.
"""

import contextlib
import logging

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


@contextlib.contextmanager
def pipeline_step():
    """How a step runs as a pipeline task: its INFO log lines (the decisions it made, such as
    precision, XLA or a resumed epoch) go to the task log, and a user mistake leaves as
    ``SystemExit("error: ...")``: one line, exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        yield
    except USER_ERRORS as error:
        raise SystemExit(f"error: {one_line(error)}") from None


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (file errors carry the path in ``filename``)."""
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.strerror}: {error.filename}"
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
