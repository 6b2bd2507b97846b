"""The dataset manifest: what data prep wrote and every later step reads (manifest.json).

This module owns the file's format: data prep (components/data_prep.py) builds a
`DatasetManifest` and `write`s it; the dataset reader (components/dataset.py), the report and the
registry get theirs from `read`. A file of another format version, or with a field missing or
unknown, is refused in one line that names the file and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from components.artifacts import MANIFEST_FILE
from components.errors import UserError
from components.records import from_fields

FORMAT_VERSION = 2
SPLITS = ("train", "test", "validation")


@dataclass(frozen=True)
class DatasetManifest:
    """A prepared dataset's facts; `sha256` names every data file (the dataset's identity for checkpoints)."""

    format_version: int
    name: str
    source: str  # the keyword, gs:// URI or absolute path it was prepared from
    class_names: list[str]
    num_classes: int
    image_shape: list[int]  # [height, width, channels]
    splits: dict[str, int]  # images per split, every name of SPLITS
    class_counts: dict[str, list[int]]  # per split, images per class
    classes_without_test_images: list[str]
    mean: list[float]  # per channel, of the train split in 0..1 units
    std: list[float]
    pixel_mean: str  # file name of the train split's mean image, beside the manifest
    allow_horizontal_flip: bool
    resized_images: int
    test_held_out_fraction: float | None
    record_format: dict[str, str]
    shards_location: str | None  # where the shards are when not beside the manifest
    shards: dict[str, list[dict[str, Any]]]  # per split: {"file", "images"} of each shard
    sha256: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """The manifest as its JSON object (what `write` stores)."""
        return dataclasses.asdict(self)

    @property
    def test_identity(self) -> str:
        """The identity of the test set: sha256 over the test shards' sha256 in file order (so the
        images, their labels and their order count) and the ordered class names (so a renamed or
        reordered class list counts too). Accuracies are comparable only under one identity."""
        shard_digests = [self.sha256[shard["file"]] for shard in self.shards["test"]]
        encoded = json.dumps({"test_shards": shard_digests, "class_names": list(self.class_names)})
        return hashlib.sha256(encoded.encode()).hexdigest()


def manifest_path(location: str) -> str:
    from components import storage

    return storage.join(location, MANIFEST_FILE)


def write(location: str, manifest: DatasetManifest) -> None:
    """Writes manifest.json into the dataset directory (or gs:// prefix) `location`."""
    from components import storage

    storage.write_json(manifest_path(location), manifest.to_dict())


def read(location: str) -> DatasetManifest:
    """The manifest of the prepared dataset at `location` (a directory or a gs:// prefix)."""
    from components import storage

    path = manifest_path(location)
    if not storage.exists(path):
        raise UserError(f"no {MANIFEST_FILE} in {location}; run data prep (prepare) to create the dataset")
    fields = storage.read_json(path)
    if not isinstance(fields, dict) or fields.get("format_version") != FORMAT_VERSION:
        found = fields.get("format_version") if isinstance(fields, dict) else None
        raise UserError(f"dataset {location} has format_version {found!r}, expected {FORMAT_VERSION}; "
                        f"prepare the dataset again with this version")
    return from_fields(DatasetManifest, fields, path, "prepare the dataset again with this version")
