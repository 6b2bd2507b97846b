"""summary.json: the evaluated models of one run read back, checked, sorted and summarised.

Each evaluate output directory holds result.json and history.csv; `read_result` is the one
place that reads and checks result.json. `build_summary` makes the machine-readable comparison
that nightly promotion and scripts read (field names fixed by DESIGN.md)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

from components.artifacts import HISTORY_FILE
from components.errors import UserError
from components.formatting import MISSING, is_number
from components.manifest import DatasetManifest
from components.report.decisions import epoch_choice, epoch_chosen_by, promotion_block
from components.results import EvaluationResult, read_evaluation_result

# Fields every result.json must carry; they make up the comparison table and summary.json.
REQUIRED_NUMBER_FIELDS = (
    "params",
    "epochs",
    "test_accuracy",
    "test_loss",
    "train_seconds",
    "train_images_per_second",
    "inference_images_per_second",
)


# The zoo's reference (paper) and seed-document accuracies are CIFAR-10 test accuracies (components/models),
# so they compare with a run only on that dataset (the Keras download and the binary archive alike).
REFERENCE_DATASET = "cifar10"


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model: its result.json and its per-epoch history (column name -> values)."""

    result_dir: str
    result: EvaluationResult
    history: dict

    @property
    def name(self) -> str:
        """The model's name in the zoo (`cnnpipe models`)."""
        return self.result.name


def read_result(result_dir: str) -> ModelResult:
    """Read and check one evaluate output directory (its record: components/results.py)."""
    result = read_evaluation_result(str(result_dir))
    not_numbers = [field for field in REQUIRED_NUMBER_FIELDS if not is_number(getattr(result, field))]
    if not_numbers:
        raise UserError(
            f"result.json in {result_dir!r} has non-numeric {', '.join(not_numbers)}; rerun the evaluate step"
        )
    return ModelResult(result_dir=str(result_dir), result=result, history=read_history(result_dir))


def read_history(result_dir: str) -> dict:
    """Read history.csv into column -> list of floats (NaN for empty cells); {} when the file is absent."""
    history_path = os.path.join(result_dir, HISTORY_FILE)
    if not os.path.isfile(history_path):
        return {}
    columns: dict[str, list[float]] = {}
    with open(history_path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            for column, cell in row.items():
                if column is None:
                    continue
                columns.setdefault(column, []).append(to_float(cell))
    return columns


def sort_by_accuracy(results: list[ModelResult]) -> list[ModelResult]:
    """Best test accuracy first; ties by name so the order is stable."""
    return sorted(results, key=lambda model: (-float(model.result.test_accuracy), model.name))


def build_summary(results: list[ModelResult], manifest: DatasetManifest, run_config: dict) -> dict:
    """The summary.json document (field names fixed by DESIGN.md; extra fields after them)."""
    dataset = manifest.name
    compared, _ = reference_applies(dataset)
    models = []
    for model in results:
        result = model.result
        entry = {field: finite_or_none(getattr(result, field)) for field in ("name", *REQUIRED_NUMBER_FIELDS)}
        entry["reference_accuracy"] = finite_or_none(result.reference_accuracy)
        entry["seed_accuracy"] = finite_or_none(result.seed_accuracy)
        entry["family"] = result.family
        entry["backend"] = result.backend  # the Keras backend it trained and was evaluated on
        entry["best_validation_accuracy"] = finite_or_none(result.best_validation_accuracy)
        # The work done, as counted by the optimizer: epochs x ceil(train images / batch) steps.
        entry["optimizer_steps"] = result.optimizer_steps
        entry["images_seen"] = result.images_seen
        entry["reference_gap"] = reference_gap(result, "reference_accuracy", compared)
        entry["seed_gap"] = reference_gap(result, "seed_accuracy", compared)
        entry["epoch_chosen_by"] = epoch_chosen_by(result)
        entry["epoch_choice"] = epoch_choice(result, manifest)
        entry["unchanged_since"] = (result.reused_from or {}).get("run_id")
        entry["promotion"] = promotion_block(result)
        models.append(entry)
    summary = {
        "dataset": dataset,
        "preset": run_config.get("preset"),
        "num_classes": manifest.num_classes,
        "models": models,
        "best_model": models[0]["name"],
        "class_names": list(manifest.class_names),
        "image_shape": manifest.image_shape,
        "splits": manifest.splits,
        # Whether reference_accuracy / seed_accuracy compare with this run (see reference_applies).
        "reference_dataset": REFERENCE_DATASET,
        "reference_compared": compared,
    }
    return summary


def reference_applies(dataset) -> tuple[bool, str]:
    """(whether the paper and seed-document figures compare with a run on `dataset`, why not if they don't)."""
    if dataset == REFERENCE_DATASET:
        return True, ""
    return False, f"the paper figures are CIFAR-10 test accuracies and this run is on {dataset}"


def reference_gap(result: EvaluationResult, field: str, compared: bool) -> float | None:
    """Test accuracy minus the figure in `field`, when the figure exists and compares."""
    figure = getattr(result, field)
    if not compared or not is_number(figure) or not math.isfinite(figure):
        return None
    return finite_or_none(float(result.test_accuracy) - figure)


def reference_note(summary: dict) -> str:
    """One sentence under the comparison table saying what the reference columns mean here."""
    if summary["reference_compared"]:
        return ("Reference is the paper's CIFAR-10 test accuracy, seed doc. the seed documents' own run; "
                "gaps are meaningful with a full training budget.")
    _, reason = reference_applies(summary["dataset"])
    return f"Reference and seed-document columns show {MISSING} because {reason}."


def to_float(cell) -> float:
    """A CSV cell as float; empty or malformed cells become NaN so plots leave a gap."""
    try:
        return float(cell)
    except (TypeError, ValueError):
        return math.nan


def finite_or_none(value):
    """Non-finite floats become None so summary.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
