"""Reading the dataset's TFRecord shards into NumPy without TensorFlow.

The JAX training step runs where TensorFlow is not installed (a GPU machine with JAX alone), so
it reads the shards data prep wrote (components/tfrecord.py: the format) with this module:
each record's framing and CRCs are checked, its tf.train.Example is decoded by the few lines of
protocol-buffer wire format it needs, and a whole split lands in one uint8 array.

Where TensorFlow is installed, components/dataset.py reads the same files with tf.data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import numpy as np

from components import storage, tfrecord
from components.errors import UserError

_LENGTH_BYTES, _CRC_BYTES = 8, 4


def records(data: bytes, name: str) -> Iterator[bytes]:
    """The records of one TFRecord file's bytes, each checked against its two CRCs."""
    view, position = memoryview(data), 0
    while position < len(view):
        header_end = position + _LENGTH_BYTES + _CRC_BYTES
        if header_end > len(view):
            raise UserError(f"shard {name} ends inside a record header; prepare the dataset again")
        length_bytes = bytes(view[position:position + _LENGTH_BYTES])
        if tfrecord.masked_crc32c(length_bytes) != view[position + _LENGTH_BYTES:header_end]:
            raise UserError(f"shard {name} has a damaged record length at byte {position}; prepare the dataset again")
        (length,) = struct.unpack("<Q", length_bytes)
        data_end = header_end + length
        record = bytes(view[header_end:data_end])
        if data_end + _CRC_BYTES > len(view) or tfrecord.masked_crc32c(record) != view[data_end:data_end + _CRC_BYTES]:
            raise UserError(f"shard {name} has a damaged record at byte {position}; prepare the dataset again")
        yield record
        position = data_end + _CRC_BYTES


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    """A protocol-buffer base-128 varint at `position`: (value, position after it)."""
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _fields(buffer: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, payload) of a message: varints as int, length-delimited as bytes."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        field_number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
            yield field_number, wire_type, value
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            yield field_number, wire_type, buffer[position:position + length]
            position += length
        elif wire_type in (1, 5):  # fixed 64 / 32 bits: no field of ours, skipped
            position += 8 if wire_type == 1 else 4
        else:
            raise ValueError(f"unsupported protocol-buffer wire type {wire_type}")


def _only(message: memoryview, field_number: int) -> memoryview:
    """The (last) length-delimited field `field_number` of a message, as protocol buffers merge it."""
    found = None
    for number, wire_type, payload in _fields(message):
        if number == field_number and wire_type == 2:
            found = payload
    if found is None:
        raise ValueError(f"field {field_number} missing")
    return found


def parse_example(record: bytes) -> tuple[memoryview, int]:
    """(image bytes, label) of one serialized tf.train.Example as tfrecord.encode_example writes it."""
    features = {}
    for number, _, entry in _fields(_only(memoryview(record), 1)):  # Example.features
        if number == 1:  # Features.feature: map entries of (key, Feature)
            features[bytes(_only(entry, 1)).decode()] = _only(entry, 2)
    image = _only(_only(features[tfrecord.IMAGE_FEATURE], 1), 1)  # Feature.bytes_list.value[0]
    int64_list = _only(features[tfrecord.LABEL_FEATURE], 3)  # Feature.int64_list
    for number, wire_type, payload in _fields(int64_list):
        if number == 1:
            return image, (_varint(payload, 0)[0] if wire_type == 2 else payload)  # packed or not
    raise ValueError("label missing")


def read_arrays(paths: Sequence[str], image_shape: Sequence[int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The `count` images of the shards at `paths` (local or gs://), in file order: uint8 images
    [count, H, W, C] and int32 labels [count]."""
    images = np.empty((count, *image_shape), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int32)
    image_bytes = images[0].nbytes if count else 0
    position = 0
    for path in paths:
        for record in records(_read(path), path):
            try:
                image, label = parse_example(record)
            except (ValueError, KeyError, IndexError, UnicodeDecodeError) as error:
                raise UserError(f"shard {path} holds a record that is not a cnnpipe example ({error}); prepare the dataset again") from None
            if position >= count or len(image) != image_bytes:
                raise UserError(f"shard {path} does not match its manifest (image count or size); prepare the dataset again")
            images[position] = np.frombuffer(image, dtype=np.uint8).reshape(image_shape)
            labels[position] = label
            position += 1
    if position != count:
        raise UserError(f"shards {paths[0]}... hold {position} images, their manifest lists {count}; prepare the dataset again")
    return images, labels


def _read(path: str) -> bytes:
    if storage.is_gcs(path):
        return storage.read_bytes(path)
    with open(path, "rb") as shard:
        return shard.read()

