"""Writing TFRecord files of tf.train.Example records without importing TensorFlow.

Data prep writes the dataset's shards; importing TensorFlow there would cost seconds of start-up
and hundreds of MB for two small encoders. TensorFlow reads the files back (components/dataset.py).

A TFRecord file is a sequence of records, each:
    uint64 length (little-endian), uint32 masked CRC32C of the length bytes,
    the data, uint32 masked CRC32C of the data.
Each record's data here is a serialized tf.train.Example with two features:
    "image": bytes, the uint8 pixels in [H, W, C] order (raw, so reading needs no image decoder);
    "label": int64, the class index.
"""

from __future__ import annotations

import functools
import struct

import google_crc32c

IMAGE_FEATURE = "image"
LABEL_FEATURE = "label"

# TFRecord masks its CRCs so that a CRC of data that itself holds CRCs stays well distributed.
_CRC_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> bytes:
    """The 4 little-endian bytes of TFRecord's masked CRC32C of ``data``."""
    crc = google_crc32c.value(data)
    masked = (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF
    return struct.pack("<I", masked)


def record_bytes(data: bytes) -> bytes:
    """``data`` framed as one TFRecord record."""
    length = struct.pack("<Q", len(data))
    return length + masked_crc32c(length) + data + masked_crc32c(data)


def _varint(value: int) -> bytes:
    """Protocol-buffer base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        low_bits = value & 0x7F
        value >>= 7
        if value:
            out.append(low_bits | 0x80)
        else:
            out.append(low_bits)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    """A protocol-buffer field of wire type 2 (bytes, string or nested message)."""
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _map_entry(key: str, feature: bytes) -> bytes:
    """One entry of Features.feature (map<string, Feature>): field 1 of Features."""
    entry = _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, feature)
    return _length_delimited(1, entry)


def encode_example(image: bytes, label: int) -> bytes:
    """A serialized tf.train.Example {"image": BytesList[image], "label": Int64List[label]}."""
    features = _image_entry_prefix(len(image)) + image + _label_entry(label)
    return _varint(1 << 3 | 2) + _varint(len(features)) + features  # Example.features


# Every image of a dataset has one length and there are few labels, so the encodings around the
# pixels are made once each: a record costs a few concatenations rather than a dozen encoder calls.
@functools.lru_cache(maxsize=16)
def _image_entry_prefix(image_length: int) -> bytes:
    """The "image" entry of Features.feature up to its pixel bytes, which follow it."""
    placeholder = b"\0" * image_length
    entry = _map_entry(IMAGE_FEATURE, _length_delimited(1, _length_delimited(1, placeholder)))  # Feature.bytes_list.value
    return entry[:-image_length]


@functools.lru_cache(maxsize=4096)
def _label_entry(label: int) -> bytes:
    """The "label" entry of Features.feature."""
    return _map_entry(LABEL_FEATURE, _length_delimited(3, _length_delimited(1, _varint(label))))  # Feature.int64_list.value (packed)
