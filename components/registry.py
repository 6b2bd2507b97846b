"""Model registry on storage (local directory or ``gs://``) with champion promotion.

Layout under a registry root::

    <root>/<dataset>/<model>/<run id>/    one immutable version: the model directory's files
                                          (model.keras, a SavedModel export, history ...),
                                          result.json, manifest.json (the version record), and _COMPLETE last
    <root>/<dataset>/<model>/champion.json   the pointer serving reads:
        {"run_id", "uri", "test_accuracy", "promoted_at", "previous": {...} | null}

A challenger replaces the champion only when its test accuracy is strictly greater than the
champion's plus ``margin`` (ties keep the champion). The pointer is written only after the
version's ``_COMPLETE`` marker, so it never names an incomplete version, and with a generation
precondition, so that of two racing runs neither update is lost: the loser re-reads and decides
again. Where a store ignores the precondition (the GCS emulator does), every pointer write is
followed by a re-read and a check of all complete versions; whoever writes last has seen every
version completed before that check, and a version completed after it is judged against the
final pointer by its own publisher, so the best model still ends up as the champion.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata

from components import checks, storage
from components.artifacts import CHAMPION_FILE, RESULT_FILE, VERSION_RECORD_FILE
from components.errors import UserError

COMPLETE_MARKER = "_COMPLETE"
# Pointer rounds before giving up: each round is a write that a concurrent run overtook.
MAX_PROMOTION_ROUNDS = 10
_RESERVED_NAMES = (COMPLETE_MARKER, RESULT_FILE, VERSION_RECORD_FILE)
_RECORDED_PACKAGES = ("cnnpipe", "tensorflow", "keras", "numpy")


def model_uri(registry_root: str, dataset: str, model_name: str) -> str:
    """Where the versions and the champion pointer of one model on one dataset live."""
    for label, value in (("dataset", dataset), ("model name", model_name)):
        _check_path_segment(label, value)
    return storage.join(registry_root, dataset, model_name)


def version_uri(registry_root: str, dataset: str, model_name: str, run_id: str) -> str:
    """Where one published version lives."""
    _check_path_segment("run id", run_id)
    return storage.join(model_uri(registry_root, dataset, model_name), run_id)


def read_champion(registry_root: str, dataset: str, model_name: str) -> dict | None:
    """The champion pointer of a model on a dataset, or None when nothing was promoted yet."""
    record, _ = _read_pointer(storage.join(model_uri(registry_root, dataset, model_name), CHAMPION_FILE))
    return record


def is_complete(uri: str) -> bool:
    """Whether a version directory was fully published (its ``_COMPLETE`` marker exists)."""
    return storage.exists(storage.join(uri, COMPLETE_MARKER))


def publish_model(
    model_dir: str,
    registry_root: str,
    dataset: str,
    model_name: str,
    run_id: str,
    result: dict,
    dataset_manifest: dict,
    margin: float = 0.0,
) -> dict:
    """Publish a trained model as a new version, then promote it if it beats the champion.

    Args:
        model_dir: directory (local or ``gs://``) with the model files (model.keras, an export dir, ...).
        registry_root: local directory or ``gs://bucket/prefix`` of the registry.
        dataset: dataset name (a path segment, e.g. ``digits``).
        model_name: model registry key (e.g. ``resnet20_v1``).
        run_id: unique id of this run; a version is never overwritten.
        result: evaluation result with ``test_accuracy`` (a fraction); saved as result.json.
        dataset_manifest: the dataset manifest's fields (its ``sha256`` identifies the data).
        margin: how much (fraction) a challenger must beat the champion by; 0 means strictly better.

    Returns:
        {"model", "run_id", "decision": "promoted" | "kept", "champion_accuracy",
         "challenger_accuracy", "reason", "champion_uri", "champion_run_id", "version_uri", "margin"}.
        ``champion_accuracy`` is the champion this run was measured against: the previous one
        when promoted (None for the first model), the one that stays when kept.
    """
    margin = checks.fraction("margin", margin, hint="e.g. 0.005 for half a point")
    accuracy = _test_accuracy(result)
    if not storage.is_directory(model_dir):
        raise UserError(f"no model directory at {model_dir}; pass the train step's output directory")
    root = model_uri(registry_root, dataset, model_name)
    version = version_uri(registry_root, dataset, model_name, run_id)
    if is_complete(version):
        raise UserError(f"run id {run_id!r} is already published at {version}; publish under a new run id")
    record = _version_record(dataset, model_name, run_id, result, dataset_manifest)
    _upload_version(model_dir, version, run_id, accuracy, result, record)
    challenger = {"run_id": run_id, "uri": version, "test_accuracy": accuracy}
    return _decision(model_name, challenger, _promote(root, challenger, margin), margin)


def _check_path_segment(label: str, value: str) -> None:
    """Dataset, model and run names become path segments: no slashes, not empty, not reserved."""
    reserved = (".", "..", CHAMPION_FILE, *_RESERVED_NAMES)
    if not isinstance(value, str) or not value or "/" in value or value in reserved:
        raise UserError(f"{label} {value!r} cannot be a registry path segment; use a plain name without '/'")


def _test_accuracy(result: dict) -> float:
    """The result's test accuracy as a fraction in [0, 1]."""
    value = result.get("test_accuracy") if isinstance(result, dict) else None
    if not (checks.is_number(value) and 0 <= value <= 1):
        raise UserError(
            f"result needs a test_accuracy fraction in [0, 1], got {value!r}; pass the evaluate step's result.json"
        )
    return float(value)


def _now() -> str:
    """UTC time, ISO 8601 with seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _package_versions() -> dict:
    """Installed versions of the packages that decide how a saved model loads (None when absent)."""
    versions = {"python": platform.python_version()}
    for package in _RECORDED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _version_record(dataset: str, model_name: str, run_id: str, result: dict, dataset_manifest: dict) -> dict:
    """What a version was made from: data fingerprint, config, package versions, container image."""
    image = os.environ.get("CNNPIPE_IMAGE") or "local"  # set by the compiled pipeline
    return {
        "format_version": 1,
        "dataset": dataset,
        "model": model_name,
        "run_id": run_id,
        "published_at": _now(),
        "test_accuracy": result["test_accuracy"],
        "dataset_sha256": dict(dataset_manifest.get("sha256") or {}),
        "dataset_manifest": dataset_manifest,
        "config": result.get("config"),
        "versions": _package_versions(),
        "image": image,
        # The build itself when the image was given by digest ("sha256:..."; a tag may move since).
        "image_digest": image.partition("@")[2] or None,
    }


def _upload_version(model_dir: str, version: str, run_id: str, accuracy: float, result: dict, record: dict) -> None:
    """Upload the model files, result.json and the version record (manifest.json), then the ``_COMPLETE`` marker last."""
    names = [name for name in storage.list_files(model_dir) if name not in _RESERVED_NAMES]
    if not names:
        raise UserError(f"no model files in {model_dir}; pass the train step's output directory")
    # Leftovers of an interrupted publish of this run id must not mix into the new version.
    for stale_name in set(storage.list_files(version)) - set(names):
        storage.delete(storage.join(version, stale_name))
    for name in names:
        storage.copy(storage.join(model_dir, *name.split("/")), storage.join(version, name))
    storage.write_json(storage.join(version, RESULT_FILE), result)
    storage.write_json(storage.join(version, VERSION_RECORD_FILE), record)
    marker = {"run_id": run_id, "test_accuracy": accuracy, "completed_at": _now(),
              "files": sorted(names + [RESULT_FILE, VERSION_RECORD_FILE])}
    storage.write_json(storage.join(version, COMPLETE_MARKER), marker)


def _read_pointer(pointer_uri: str) -> tuple[dict | None, int]:
    """The champion record and its generation; (None, 0) when there is no champion yet."""
    try:
        data, generation = storage.read_with_generation(pointer_uri)
    except FileNotFoundError:
        return None, 0
    try:
        record = json.loads(data)
    except json.JSONDecodeError:
        raise UserError(f"{pointer_uri} is not valid JSON; restore it or delete it to start over") from None
    return record, generation


def _beats(contender: dict, champion: dict | None, margin: float) -> bool:
    """Whether ``contender`` should replace ``champion``: strictly better by more than ``margin``."""
    return champion is None or contender["test_accuracy"] > champion["test_accuracy"] + margin


def _pointer_record(contender: dict, champion: dict | None) -> dict:
    """The champion.json content that promotes ``contender`` over ``champion``."""
    previous = None if champion is None else {key: value for key, value in champion.items() if key != "previous"}
    return {
        "run_id": contender["run_id"],
        "uri": contender["uri"],
        "test_accuracy": contender["test_accuracy"],
        "promoted_at": _now(),
        "previous": previous,
    }


def _best_complete_version(root: str) -> dict | None:
    """The complete version with the highest test accuracy (earliest completed among equals)."""
    candidates = []
    for name in storage.list_files(root):
        run_id, _, file_name = name.partition("/")
        if file_name != COMPLETE_MARKER:
            continue
        marker = storage.read_json(storage.join(root, name))
        candidates.append((-marker["test_accuracy"], marker.get("completed_at", ""), run_id))
    if not candidates:
        return None
    negative_accuracy, _, run_id = min(candidates)
    return {"run_id": run_id, "uri": storage.join(root, run_id), "test_accuracy": -negative_accuracy}


def _promote(root: str, challenger: dict, margin: float) -> dict:
    """Move the pointer to ``challenger`` if it beats the champion; returns the champion record after."""
    pointer_uri = storage.join(root, CHAMPION_FILE)
    champion, generation = _read_pointer(pointer_uri)
    contender = challenger
    for _ in range(MAX_PROMOTION_ROUNDS):
        if contender is None or not _beats(contender, champion, margin):
            return champion
        try:
            storage.write_json(pointer_uri, _pointer_record(contender, champion), if_generation_match=generation)
        except storage.PreconditionFailedError:
            pass  # another run moved the pointer since we read it: read again and decide again
        champion, generation = _read_pointer(pointer_uri)
        # Judge every complete version against what the pointer says now; on a store that ignored
        # the precondition this restores a better champion that a racing write replaced.
        contender = _best_complete_version(root)
    raise storage.StorageError(
        f"{pointer_uri} kept changing under concurrent publishes for {MAX_PROMOTION_ROUNDS} rounds; publish again"
    )


def _decision(model_name: str, challenger: dict, final: dict, margin: float) -> dict:
    """The publish outcome for the report: who is champion now and why."""
    promoted = final["run_id"] == challenger["run_id"]
    # A promoted run was measured against the champion it replaced, a kept one against the one that stays.
    measured_against = final.get("previous") if promoted else final
    accuracy = challenger["test_accuracy"]
    if promoted and measured_against is None:
        reason = "first model published: promoted to champion"
    elif promoted:
        reason = (
            f"test accuracy {accuracy:.4f} beats champion {measured_against['run_id']} "
            f"({measured_against['test_accuracy']:.4f}) by more than margin {margin:.4f}"
        )
    else:
        reason = (
            f"test accuracy {accuracy:.4f} does not beat champion {final['run_id']} "
            f"({final['test_accuracy']:.4f}) by more than margin {margin:.4f}; the champion stays"
        )
    return {
        "model": model_name,
        "run_id": challenger["run_id"],
        "decision": "promoted" if promoted else "kept",
        "champion_accuracy": None if measured_against is None else measured_against["test_accuracy"],
        "challenger_accuracy": accuracy,
        "reason": reason,
        "champion_uri": final["uri"],
        "champion_run_id": final["run_id"],
        "version_uri": challenger["uri"],
        "margin": margin,
    }
