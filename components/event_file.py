"""TensorBoard event files of scalars, written without TensorFlow (and without tensorboard).

The training step writes its per-epoch curves the same way under both Keras backends; under JAX
it runs where neither TensorFlow nor tensorboard is installed. An event file is a TFRecord file
(components/tfrecord.py: the framing) of serialized `Event` messages (TensorBoard's event.proto):

    Event    wall_time = 1 (double, seconds), step = 2 (int64), file_version = 3 (string),
             summary = 5 (Summary)
    Summary  value = 1 (repeated Value)
    Value    tag = 1 (string), simple_value = 2 (float)

TensorBoard shows `simple_value` scalars under the Scalars tab, as it does those of tf.summary.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from components.tfrecord import _length_delimited, _varint, record_bytes

FILE_VERSION = b"brain.Event:2"


def _double(field_number: int, value: float) -> bytes:
    return _varint(field_number << 3 | 1) + struct.pack("<d", value)


def _float(field_number: int, value: float) -> bytes:
    return _varint(field_number << 3 | 5) + struct.pack("<f", value)


def _integer(field_number: int, value: int) -> bytes:
    return _varint(field_number << 3) + _varint(value)


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """A serialized Event holding one scalar."""
    summary_value = _length_delimited(1, tag.encode("utf-8")) + _float(2, value)
    return _double(1, wall_time) + _integer(2, step) + _length_delimited(5, _length_delimited(1, summary_value))


class ScalarWriter:
    """Appends scalars to a new event file in `directory` (one file per writer, as tf.summary
    does: a resumed run adds a file, and TensorBoard joins the files of a directory)."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.v2"
        self.path = os.path.join(directory, name)
        self._file = open(self.path, "ab")
        self._file.write(record_bytes(_double(1, time.time()) + _length_delimited(3, FILE_VERSION)))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._file.write(record_bytes(scalar_event(tag, float(value), int(step), time.time())))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
