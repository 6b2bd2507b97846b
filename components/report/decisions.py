"""The two decisions a report must account for, per model, in words a reviewer accepts:
which split chose the saved epoch, and what the model registry decided and why."""

from __future__ import annotations

from components.formatting import format_count, format_percent
from components.manifest import DatasetManifest
from components.results import EvaluationResult

# train_result.json's epoch_chosen_by (components/train.py); "test" marks results of runs made
# before training stopped validating on the test split.
CHOSEN_BY_VALIDATION, CHOSEN_AS_LAST, CHOSEN_ON_TEST = "validation", "last", "test"
NOT_PUBLISHED = "no --registry given: the model was not published or compared with a champion"


def epoch_chosen_by(result: EvaluationResult) -> str:
    """Which split chose the saved epoch: "validation", "last" (none did) or "test" (an old result)."""
    if result.epoch_chosen_by:
        return result.epoch_chosen_by
    return CHOSEN_ON_TEST if result.validation_split == "test" else CHOSEN_BY_VALIDATION


def epoch_choice(result: EvaluationResult, manifest: DatasetManifest) -> str:
    """The saved epoch and what chose it, as a sentence."""
    chosen_by = epoch_chosen_by(result)
    epochs = result.epochs
    if chosen_by == CHOSEN_AS_LAST:
        return (f"the last epoch ({epochs}): without a validation split (--validation-fraction 0) no epoch is "
                "chosen and nothing during training looked at the test split (reduce-on-plateau watched the "
                "training loss)")
    if chosen_by == CHOSEN_ON_TEST:
        return (f"epoch {result.best_epoch} of {epochs}, chosen on the test split by an older version: "
                "its test accuracy is optimistically biased")
    held_out = manifest.splits.get("validation")
    return (f"epoch {result.best_epoch} of {epochs}, the best by validation accuracy "
            f"({format_percent(result.best_validation_accuracy)}) on {format_count(held_out)} training "
            "images held out as the validation split; the test split was not looked at during training")


def promotion_block(result: EvaluationResult) -> dict:
    """The result's promotion block; a model that was not published is `not-compared`, saying why."""
    block = result.promotion
    if block and "decision" in block:
        return block
    return {"decision": "not-compared", "champion_run": None, "wins": None, "losses": None, "p_value": None,
            "reason": NOT_PUBLISHED, "task": None}


def any_published(entries: list[dict]) -> bool:
    """Whether the run used a registry at all (else the report says so in one line, not a table)."""
    return any(entry.get("promotion") and entry["promotion"]["reason"] != NOT_PUBLISHED for entry in entries)


def promotion_sentences(name: str, block: dict) -> list[str]:
    """The architecture's and the task's decision about model `name`, one sentence each."""
    sentences = [f"{name}: {block['decision']} — {block['reason']}"]
    task = block.get("task")
    if task:
        sentences.append(f"{name} as the task's champion across architectures: {task['decision']} — {task['reason']}")
    return sentences
