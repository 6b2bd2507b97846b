"""Model registry on storage (local directory or ``gs://``): versions, champions, pins.

A registry files every model under the test set it was measured on, never under a bare name:
a *lineage* is one dataset name plus one test-set identity (the sha256 of the prepared test
split's shards and the ordered class names, see data_prep.test_identity). Re-preparing a folder
whose test images, labels or classes changed, or a second folder with the same basename, starts
a new lineage, so accuracies measured on different test sets are never compared.

Layout under a registry root::

    <root>/<dataset>/<lineage>/lineage.json    the test set: dataset, test_identity, class_names, test_images
    <root>/<dataset>/<lineage>/champion.json   the task's champion across architectures (what serving reads)
    <root>/<dataset>/<lineage>/<model>/champion.json   the architecture's champion
    <root>/<dataset>/<lineage>/<model>/<run id>/       one immutable version: the model files,
        result.json, manifest.json (the version record: what it was made from), correctness.json
        (per-image correct/wrong bits), and _COMPLETE last

``<lineage>`` is the first LINEAGE_DIGITS hex digits of the test identity; lineage.json holds
the whole identity and a publish checks it.

The rules (docs/storage.md has a worked example):

- ``first``: a version on a test set with no champion yet becomes its champion without a test.
- ``promoted``: a challenger replaces a champion only when, on the same test images, it is
  right on significantly more of the images where the two disagree (McNemar's exact one-sided
  test, p <= alpha) *and* its accuracy is higher by more than ``margin``. Both must hold: alpha
  bounds how often noise (a lucky seed) is promoted, margin is the smallest gain worth a change.
- ``kept``: compared, and the champion stays (not significant, not above the margin, or pinned).
- ``not-compared``: nothing was decided (no registry, or the run reused an unchanged version).

Each architecture's pointer takes the architecture's versions; the task pointer takes
architecture champions, by the same rule. A pinned pointer (``pin``) is left alone by automatic
promotion until ``unpin``; ``promote`` moves pointers by hand.

Pointers are written only after the version's ``_COMPLETE`` marker, so they never name an
incomplete version, and with a generation precondition, so of two racing runs neither update is
lost: the loser re-reads and decides again. Where a store ignores the precondition (the GCS
emulator does), each winner leaves a claim in its version (``claim-*.json``: the champion it
beat) before writing, and after every write the publisher re-reads the pointer and judges the
claims made against the champion the current one replaced, so a racing winner that was
overwritten is judged against the pointer that landed instead of being lost.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from importlib import metadata

from components import checks, storage
from components.artifacts import (
    CHAMPION_FILE,
    CORRECTNESS_FILE,
    LINEAGE_FILE,
    VERSION_RECORD_FILE,
    RESULT_FILE,
)
from components.errors import UserError
from components.significance import Correctness, PairedComparison, mcnemar_one_sided

COMPLETE_MARKER = "_COMPLETE"
# Hex digits of the test identity that name a lineage's folder: 64 bits, no collision in practice
# (and lineage.json's whole identity is checked on every publish).
LINEAGE_DIGITS = 16
# Pointer rounds before giving up: each round is a write that a concurrent run overtook.
MAX_PROMOTION_ROUNDS = 10
MODEL_CLAIM_FILE = "claim-model.json"
TASK_CLAIM_FILE = "claim-task.json"
_RESERVED_NAMES = (COMPLETE_MARKER, RESULT_FILE, VERSION_RECORD_FILE, CORRECTNESS_FILE, LINEAGE_FILE, CHAMPION_FILE,
                   MODEL_CLAIM_FILE, TASK_CLAIM_FILE)
_RECORDED_PACKAGES = ("cnnpipe", "tensorflow", "keras", "numpy")

FIRST, PROMOTED, KEPT, NOT_COMPARED = "first", "promoted", "kept", "not-compared"
DEFAULT_ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Task:
    """One test set: what a lineage's versions were all measured on."""

    dataset: str
    test_identity: str  # sha256 hex of the test shards and the ordered class names
    class_names: tuple[str, ...]
    test_images: int

    @property
    def lineage(self) -> str:
        return self.test_identity[:LINEAGE_DIGITS]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "test_identity": self.test_identity,
                "class_names": list(self.class_names), "test_images": self.test_images}


@dataclasses.dataclass(frozen=True)
class PromotionRule:
    """When a challenger replaces a champion: a significant win (p <= alpha) above the margin."""

    margin: float = 0.0  # accuracy (a fraction) the challenger must gain beyond the champion's
    alpha: float = DEFAULT_ALPHA  # McNemar one-sided significance level

    def __post_init__(self):
        checks.fraction("promotion_margin", self.margin, hint="e.g. 0.005 for half a point")
        checks.number("promotion_alpha", self.alpha, above=0, at_most=1, hint="e.g. 0.05")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A challenger judged against a champion (``comparison`` None when there was none to judge)."""

    promote: bool
    reason: str
    comparison: PairedComparison | None = None


# ---------------------------------------------------------------------------------------------
# Where things live
# ---------------------------------------------------------------------------------------------


def lineage_uri(registry_root: str, task: Task) -> str:
    """Where one test set's versions and champions live."""
    _check_path_segment("dataset", task.dataset)
    return storage.join(registry_root, task.dataset, task.lineage)


def model_uri(registry_root: str, task: Task, model_name: str) -> str:
    """Where the versions and the champion pointer of one architecture on one test set live."""
    _check_path_segment("model name", model_name)
    return storage.join(lineage_uri(registry_root, task), model_name)


def version_uri(registry_root: str, task: Task, model_name: str, run_id: str) -> str:
    """Where one published version lives."""
    _check_path_segment("run id", run_id)
    return storage.join(model_uri(registry_root, task, model_name), run_id)


def read_champion(registry_root: str, task: Task, model_name: str | None = None) -> dict | None:
    """The champion pointer of an architecture (or, without ``model_name``, of the task); None before any."""
    root = lineage_uri(registry_root, task) if model_name is None else model_uri(registry_root, task, model_name)
    record, _ = _read_pointer(storage.join(root, CHAMPION_FILE))
    return record


def is_complete(uri: str) -> bool:
    """Whether a version directory was fully published (its ``_COMPLETE`` marker exists)."""
    return storage.exists(storage.join(uri, COMPLETE_MARKER))


# ---------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------


def publish_model(
    model_dir: str,
    registry_root: str,
    task: Task,
    model_name: str,
    run_id: str,
    result: dict,
    correctness: Correctness,
    dataset_manifest: dict,
    rule: PromotionRule = PromotionRule(),
    training_key: str = "",
) -> dict:
    """Publish a trained model as a new version, then let it contend for its champions.

    Args:
        model_dir: directory (local or ``gs://``) with the model files (model.keras, an export dir, ...).
        registry_root: local directory or ``gs://bucket/prefix`` of the registry.
        task: the test set the model was evaluated on.
        model_name: model registry key (e.g. ``resnet20_v1``).
        run_id: id of this run. Publishing the same run id again with the same result (a retried
            step) completes or confirms the version; with another result it is refused.
        result: evaluation result with ``test_accuracy`` (a fraction); saved as result.json.
        correctness: the model's per-image correctness on ``task``'s test set.
        dataset_manifest: the dataset manifest's fields, recorded in the version record.
        rule: margin and significance level of promotion.
        training_key: what the model was trained from (data and recipe); a later run with the same
            key can reuse this version instead of training (``find_reusable``).

    Returns:
        The promotion block (``decision``: first | promoted | kept, ``champion_run``, ``wins``,
        ``losses``, ``p_value``, ``reason`` ...) with a ``task`` block of the same shape for the
        task's champion across architectures.
    """
    accuracy = _test_accuracy(result)
    if correctness.test_identity != task.test_identity or len(correctness.correct) != task.test_images:
        raise UserError(
            f"the per-image correctness of {model_name} was measured on another test set than "
            f"{task.dataset}'s ({len(correctness.correct)} images, identity {correctness.test_identity[:12]}); "
            "evaluate the model on this dataset again"
        )
    if not storage.is_directory(model_dir):
        raise UserError(f"no model directory at {model_dir}; pass the train step's output directory")
    version = version_uri(registry_root, task, model_name, run_id)
    _ensure_lineage(registry_root, task)
    if is_complete(version):
        _check_same_result(version, run_id, accuracy)
    else:
        record = _version_record(task, model_name, run_id, result, dataset_manifest, training_key)
        _upload_version(model_dir, version, run_id, accuracy, result, correctness, record, training_key)
    challenger = {"model": model_name, "run_id": run_id, "uri": version, "test_accuracy": accuracy}
    promotion = _contend(model_uri(registry_root, task, model_name), challenger, rule, MODEL_CLAIM_FILE, task)
    others = _other_lineages(registry_root, task) if promotion["decision"] == FIRST else []
    if others:
        promotion["reason"] += (
            f"; {task.dataset} has versions on {len(others)} other test set{'s' if len(others) > 1 else ''} "
            f"({', '.join(others)}), measured on other images, labels or classes: not compared"
        )
    if promotion["decision"] in (FIRST, PROMOTED):
        task_promotion = _contend(lineage_uri(registry_root, task), challenger, rule, TASK_CLAIM_FILE, task)
    else:
        task_promotion = _not_compared("not its architecture's champion, so it does not contend for the task's")
    return {**promotion, "task": task_promotion, "version_uri": version, "test_identity": task.test_identity,
            "margin": rule.margin, "alpha": rule.alpha}


def not_compared(reason: str, champion_run: str | None = None) -> dict:
    """The promotion block of a model that was not judged (no registry, or an unchanged version reused)."""
    return {**_not_compared(reason, champion_run), "task": _not_compared(reason)}


def find_reusable(registry_root: str, task: Task, model_name: str, training_key: str) -> dict | None:
    """The earliest complete version trained from ``training_key`` (same data, same recipe), or None."""
    if not training_key:
        return None
    root = model_uri(registry_root, task, model_name)
    matches = []
    for name in storage.list_files(root):
        run_id, _, file_name = name.partition("/")
        if file_name != COMPLETE_MARKER:
            continue
        marker = storage.read_json(storage.join(root, name))
        if marker.get("training_key") == training_key:
            matches.append((marker.get("completed_at", ""), run_id, marker))
    if not matches:
        return None
    completed_at, run_id, marker = min(matches)
    return {"model": model_name, "run_id": run_id, "uri": storage.join(root, run_id),
            "test_accuracy": marker["test_accuracy"], "completed_at": completed_at}


def load_correctness(version: str) -> Correctness:
    """The per-image correctness a version was published with."""
    uri = storage.join(version, CORRECTNESS_FILE)
    try:
        record = storage.read_json(uri)
    except FileNotFoundError:
        raise UserError(f"{version} has no {CORRECTNESS_FILE}; publish that model again to compare it") from None
    return Correctness.from_dict(record, where=uri)


def judge(challenger: Correctness, champion: Correctness, rule: PromotionRule, champion_name: str) -> Verdict:
    """Whether ``challenger`` replaces ``champion`` (both measured on one test set), and why, in words."""
    if challenger.test_identity != champion.test_identity or len(challenger.correct) != len(champion.correct):
        return Verdict(False, f"champion {champion_name} was measured on another test set; not compared")
    comparison = mcnemar_one_sided(challenger.correct, champion.correct)
    images = len(challenger.correct)
    gain = (comparison.wins - comparison.losses) / images  # = challenger accuracy - champion accuracy
    evidence = (
        f"on the same {images:,} test images it is right on {comparison.wins} where champion {champion_name} "
        f"is wrong and wrong on {comparison.losses} where the champion is right "
        f"(McNemar exact one-sided p = {comparison.p_value:.3g}, alpha {rule.alpha:g}); "
        f"accuracy {challenger.accuracy:.4f} against {champion.accuracy:.4f} ({100 * gain:+.2f} points, "
        f"margin {100 * rule.margin:.2f})"
    )
    if not comparison.significant(rule.alpha):
        verdict = "not a significant win: chance alone (a new random seed, say) gives a difference this size too often"
        return Verdict(False, f"against {champion_name}: {evidence}; {verdict}", comparison)
    if gain <= rule.margin:
        return Verdict(False, f"against {champion_name}: {evidence}; significant, but not above the margin", comparison)
    return Verdict(True, f"against {champion_name}: {evidence}; a significant win above the margin", comparison)


# ---------------------------------------------------------------------------------------------
# Pointers: automatic contention
# ---------------------------------------------------------------------------------------------


def _contend(root: str, challenger: dict, rule: PromotionRule, claim_file: str, task: Task) -> dict:
    """Let ``challenger`` contend for the pointer under ``root``; returns its promotion block."""
    pointer_uri = storage.join(root, CHAMPION_FILE)
    champion, generation = _read_pointer(pointer_uri)
    if champion is not None and _same_version(champion, challenger):  # a retried publish that already won
        return _block(PROMOTED if champion.get("previous") else FIRST, champion.get("previous"),
                      champion.get("comparison"), champion.get("reason", "already champion"))
    verdict = _verdict(challenger, champion, rule, task)
    if not verdict.promote:
        return _block(KEPT, champion, verdict.comparison, verdict.reason)
    storage.write_json(storage.join(challenger["uri"], claim_file), {"against": _key(champion)})
    contender, contender_verdict, replaced = challenger, verdict, champion
    for _ in range(MAX_PROMOTION_ROUNDS):
        try:
            record = _pointer_record(contender, replaced, contender_verdict, how=FIRST if replaced is None else PROMOTED)
            storage.write_json(pointer_uri, record, if_generation_match=generation)
        except storage.PreconditionFailedError:
            pass  # another run moved the pointer since we read it: read again and decide again
        champion, generation = _read_pointer(pointer_uri)
        contender, contender_verdict = _racing_claimant(root, champion, rule, claim_file, task)
        if contender is None:
            break
        replaced = champion
    else:
        raise storage.StorageError(
            f"{pointer_uri} kept changing under concurrent publishes for {MAX_PROMOTION_ROUNDS} rounds; publish again"
        )
    if _same_version(champion, challenger):
        return _block(champion["how"], champion.get("previous"), verdict.comparison, champion["reason"])
    final = _verdict(challenger, champion, rule, task)  # overtaken: judged against what stays
    return _block(KEPT, champion, final.comparison, final.reason)


def _verdict(challenger: dict, champion: dict | None, rule: PromotionRule, task: Task) -> Verdict:
    if champion is None:
        return Verdict(True, (
            f"first model on this test set ({task.test_images:,} images, {len(task.class_names)} classes, "
            f"identity {task.test_identity[:12]}): champion without a comparison"))
    name = _describe(champion)
    if champion.get("pinned"):
        pin = champion["pinned"]
        base = judge(load_correctness(challenger["uri"]), load_correctness(champion["uri"]), rule, name)
        return Verdict(False, (
            f"{name} is pinned since {pin.get('at')} (`cnnpipe registry unpin` lets runs replace it); "
            f"had it not been, {base.reason}"), base.comparison)
    return judge(load_correctness(challenger["uri"]), load_correctness(champion["uri"]), rule, name)


def _racing_claimant(root: str, champion: dict, rule: PromotionRule, claim_file: str, task: Task):
    """A version that won against the champion the current one replaced, and wins against the
    current one too: its pointer write was lost to a racing run on a store without preconditions."""
    replaced_key = _key(champion.get("previous"))
    suffix = "/" + claim_file
    for name in sorted(storage.list_files(root)):
        if not name.endswith(suffix):
            continue
        version = storage.join(root, name[: -len(suffix)])
        if version == champion["uri"] or storage.read_json(storage.join(root, name)).get("against") != replaced_key:
            continue
        contender = _version_summary(version)
        verdict = _verdict(contender, champion, rule, task)
        if verdict.promote:
            return contender, verdict
    return None, None


# ---------------------------------------------------------------------------------------------
# Pointers: by hand
# ---------------------------------------------------------------------------------------------


def promote_by_hand(registry_root: str, reference: str, pin: bool = False, note: str = "") -> dict:
    """Point the version's architecture and task pointers at it (``pin``: and pin both).

    ``reference`` is ``<dataset>/<lineage>/<model>/<run id>`` as ``cnnpipe registry list`` prints it.
    A pointer pinned to another version is refused: unpin it first.
    """
    version = _version_reference(registry_root, reference)
    record = _version_summary(version)
    lineage = storage.join(registry_root, *reference.split("/")[:2])
    pointers = [storage.join(lineage, record["model"], CHAMPION_FILE), storage.join(lineage, CHAMPION_FILE)]
    current = [_read_pointer(pointer) for pointer in pointers]
    for pointer, (champion, _) in zip(pointers, current):
        if champion and champion.get("pinned") and not _same_version(champion, record):
            raise UserError(f"{pointer} is pinned to {_describe(champion)}; `cnnpipe registry unpin` it first")
    how = "pinned" if pin else "manual"
    reason = f"{'pinned' if pin else 'promoted'} by hand" + (f": {note}" if note else "")
    pinned = {"at": _now(), "note": note} if pin else None
    for pointer, (champion, generation) in zip(pointers, current):
        replaced = champion if champion is None or not _same_version(champion, record) else champion.get("previous")
        verdict = Verdict(True, reason)
        new = _pointer_record(record, replaced, verdict, how=how)
        new["pinned"] = pinned
        storage.write_json(pointer, new, if_generation_match=generation)
    return {"version": version, "pinned": pin, "pointers": pointers}


def unpin(registry_root: str, reference: str) -> list[str]:
    """Unpin the pointers that pin the version ``reference``; returns the pointers changed."""
    version = _version_reference(registry_root, reference)
    record = _version_summary(version)
    lineage = storage.join(registry_root, *reference.split("/")[:2])
    changed = []
    for pointer in (storage.join(lineage, record["model"], CHAMPION_FILE), storage.join(lineage, CHAMPION_FILE)):
        champion, generation = _read_pointer(pointer)
        if champion and champion.get("pinned") and _same_version(champion, record):
            storage.write_json(pointer, {**champion, "pinned": None}, if_generation_match=generation)
            changed.append(pointer)
    if not changed:
        raise UserError(f"no pointer is pinned to {reference}; `cnnpipe registry list` shows the pins")
    return changed


# ---------------------------------------------------------------------------------------------
# Reading the registry
# ---------------------------------------------------------------------------------------------


def list_registry(registry_root: str) -> list[dict]:
    """Every lineage with its task champion, and per architecture its champion and versions."""
    files = storage.list_files(registry_root)
    lineages = []
    for name in sorted(name for name in files if name.count("/") == 2 and name.endswith("/" + LINEAGE_FILE)):
        dataset, lineage, _ = name.split("/")
        prefix = f"{dataset}/{lineage}/"
        models = {}
        for file_name in files:
            parts = file_name[len(prefix):].split("/") if file_name.startswith(prefix) else []
            if len(parts) == 3 and parts[2] == COMPLETE_MARKER:
                marker = storage.read_json(storage.join(registry_root, file_name))
                models.setdefault(parts[0], []).append(
                    {"reference": f"{prefix}{parts[0]}/{parts[1]}", "run_id": parts[1],
                     "test_accuracy": marker["test_accuracy"], "completed_at": marker.get("completed_at")})
        lineage_root = storage.join(registry_root, dataset, lineage)
        lineages.append({
            "reference": f"{dataset}/{lineage}",
            "lineage": storage.read_json(storage.join(registry_root, name)),
            "champion": _read_pointer(storage.join(lineage_root, CHAMPION_FILE))[0],
            "models": {
                model: {"champion": _read_pointer(storage.join(lineage_root, model, CHAMPION_FILE))[0],
                        "versions": sorted(versions, key=lambda version: version["completed_at"] or "")}
                for model, versions in sorted(models.items())
            },
        })
    return lineages


def show(registry_root: str, reference: str) -> dict:
    """A version's records (result figures, version record, its marker), or a lineage's listing."""
    parts = reference.strip("/").split("/")
    if len(parts) == 2:
        matches = [entry for entry in list_registry(registry_root) if entry["reference"] == "/".join(parts)]
        if not matches:
            raise UserError(f"no lineage {reference} in {registry_root}; `cnnpipe registry list` shows them")
        return matches[0]
    version = _version_reference(registry_root, reference)
    result = storage.read_json(storage.join(version, RESULT_FILE))
    shown = ("name", "test_accuracy", "test_loss", "test_images", "epochs", "best_epoch", "epoch_chosen_by", "params")
    return {
        "reference": reference,
        "uri": version,
        "complete": storage.read_json(storage.join(version, COMPLETE_MARKER)),
        "result": {key: result.get(key) for key in shown if key in result},
        "record": storage.read_json(storage.join(version, VERSION_RECORD_FILE)),
    }


# ---------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------


def _check_path_segment(label: str, value: str) -> None:
    """Dataset, model and run names become path segments: no slashes, not empty, not reserved."""
    if not isinstance(value, str) or not value or "/" in value or value in (".", "..", *_RESERVED_NAMES):
        raise UserError(f"{label} {value!r} cannot be a registry path segment; use a plain name without '/'")


def _version_reference(registry_root: str, reference: str) -> str:
    """The complete version a ``<dataset>/<lineage>/<model>/<run id>`` reference names."""
    parts = reference.strip("/").split("/") if isinstance(reference, str) else []
    if len(parts) != 4 or not all(parts):
        raise UserError(
            f"version {reference!r} is not <dataset>/<lineage>/<model>/<run id>; `cnnpipe registry list` prints them"
        )
    version = storage.join(registry_root, *parts)
    if not is_complete(version):
        raise UserError(f"no complete version {reference} in {registry_root}; `cnnpipe registry list` shows them")
    return version


def _test_accuracy(result: dict) -> float:
    """The result's test accuracy as a fraction in [0, 1]."""
    value = result.get("test_accuracy") if isinstance(result, dict) else None
    if not (checks.is_number(value) and 0 <= value <= 1):
        raise UserError(
            f"result needs a test_accuracy fraction in [0, 1], got {value!r}; pass the evaluate step's result.json"
        )
    return float(value)


def _now() -> str:
    """UTC time, ISO 8601 with microseconds (orders versions completed within one second)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def _package_versions() -> dict:
    """Installed versions of the packages that decide how a saved model loads (None when absent)."""
    versions = {"python": platform.python_version()}
    for package in _RECORDED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _ensure_lineage(registry_root: str, task: Task) -> None:
    """Write lineage.json on a lineage's first publish; refuse a different test set under its folder."""
    uri = storage.join(lineage_uri(registry_root, task), LINEAGE_FILE)
    try:
        recorded = storage.read_json(uri)
    except FileNotFoundError:
        storage.write_json(uri, {**task.to_dict(), "created_at": _now()})
        return
    if recorded.get("test_identity") != task.test_identity:
        raise UserError(
            f"{uri} names another test set ({recorded.get('test_identity')}) than this one "
            f"({task.test_identity}); use another registry root"
        )


def _other_lineages(registry_root: str, task: Task) -> list[str]:
    """The other test sets' lineages filed under the same dataset name."""
    names = storage.list_files(storage.join(registry_root, task.dataset))
    return sorted(name.split("/")[0] for name in names
                  if name.count("/") == 1 and name.endswith("/" + LINEAGE_FILE) and not name.startswith(task.lineage + "/"))


def _check_same_result(version: str, run_id: str, accuracy: float) -> None:
    """A retried publish of a complete version must carry the same result."""
    marker = storage.read_json(storage.join(version, COMPLETE_MARKER))
    if marker.get("test_accuracy") != accuracy:
        raise UserError(
            f"run id {run_id!r} is already published at {version} with test accuracy {marker.get('test_accuracy')} "
            f"(this result: {accuracy}); publish a different result under a new run id"
        )


def _version_record(
    task: Task, model_name: str, run_id: str, result: dict, dataset_manifest: dict, training_key: str
) -> dict:
    """What a version was made from: test set, data fingerprint, config, package versions, container image."""
    image = os.environ.get("CNNPIPE_IMAGE") or "local"  # set by the compiled pipeline
    return {
        "format_version": 2,
        **task.to_dict(),
        "model": model_name,
        "run_id": run_id,
        "published_at": _now(),
        "test_accuracy": result["test_accuracy"],
        "training_key": training_key,
        "dataset_sha256": dict(dataset_manifest.get("sha256") or {}),
        "dataset_manifest": dataset_manifest,
        "config": result.get("config"),
        "versions": _package_versions(),
        "image": image,
        # The build itself when the image was given by digest ("sha256:..."; a tag may move since).
        "image_digest": image.partition("@")[2] or None,
    }


def _upload_version(
    model_dir: str, version: str, run_id: str, accuracy: float, result: dict, correctness: Correctness,
    record: dict, training_key: str,
) -> None:
    """Upload the model files and records, then the ``_COMPLETE`` marker last."""
    names = [name for name in storage.list_files(model_dir) if name not in _RESERVED_NAMES]
    if not names:
        raise UserError(f"no model files in {model_dir}; pass the train step's output directory")
    # Leftovers of an interrupted publish of this run id must not mix into the new version.
    for stale_name in set(storage.list_files(version)) - set(names):
        storage.delete(storage.join(version, stale_name))
    for name in names:
        storage.copy(storage.join(model_dir, *name.split("/")), storage.join(version, name))
    storage.write_json(storage.join(version, RESULT_FILE), result)
    storage.write_json(storage.join(version, CORRECTNESS_FILE), correctness.to_dict())
    storage.write_json(storage.join(version, VERSION_RECORD_FILE), record)
    marker = {"run_id": run_id, "test_accuracy": accuracy, "completed_at": _now(), "training_key": training_key,
              "files": sorted(names + [RESULT_FILE, CORRECTNESS_FILE, VERSION_RECORD_FILE])}
    storage.write_json(storage.join(version, COMPLETE_MARKER), marker)


def _version_summary(version: str) -> dict:
    """The pointer-sized description of a complete version: model, run id, uri, test accuracy."""
    model, run_id = version.rstrip("/").split("/")[-2:]
    marker = storage.read_json(storage.join(version, COMPLETE_MARKER))
    return {"model": model, "run_id": run_id, "uri": version, "test_accuracy": marker["test_accuracy"]}


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


def _key(record: dict | None) -> str | None:
    return None if record is None else record["uri"]


def _same_version(first: dict, second: dict) -> bool:
    return first["uri"] == second["uri"]


def _describe(record: dict) -> str:
    return f"{record['model']}/{record['run_id']}"


def _comparison_dict(comparison: PairedComparison | dict | None) -> dict | None:
    if comparison is None or isinstance(comparison, dict):
        return comparison
    return dataclasses.asdict(comparison)


def _pointer_record(contender: dict, replaced: dict | None, verdict: Verdict, how: str) -> dict:
    """The champion.json content that makes ``contender`` the champion in place of ``replaced``."""
    previous = None if replaced is None else {key: value for key, value in replaced.items() if key != "previous"}
    return {
        "model": contender["model"],
        "run_id": contender["run_id"],
        "uri": contender["uri"],
        "test_accuracy": contender["test_accuracy"],
        "promoted_at": _now(),
        "how": how,
        "reason": verdict.reason,
        "comparison": _comparison_dict(verdict.comparison),
        "pinned": None,
        "previous": previous,
    }


def _block(decision: str, champion: dict | None, comparison, reason: str) -> dict:
    """A promotion block: the decision, the champion it was measured against, the test's figures."""
    comparison = _comparison_dict(comparison) or {}
    return {
        "decision": decision,
        "champion_run": None if champion is None else _describe(champion),
        "champion_accuracy": None if champion is None else champion.get("test_accuracy"),
        "wins": comparison.get("wins"),
        "losses": comparison.get("losses"),
        "p_value": comparison.get("p_value"),
        "reason": reason,
    }


def _not_compared(reason: str, champion_run: str | None = None) -> dict:
    return {"decision": NOT_COMPARED, "champion_run": champion_run, "champion_accuracy": None,
            "wins": None, "losses": None, "p_value": None, "reason": reason}
