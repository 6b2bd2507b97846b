"""The comparison of one run's models as (header, cell function) columns: the full table of report.html
and report.md, and the short one `cnnpipe run` prints when a run ends. Both read summary.json's
model entries through the same cell functions, so a figure reads the same everywhere."""

from __future__ import annotations

from typing import Callable

from components.formatting import (
    MISSING,
    format_clock_duration,
    format_count,
    format_duration,
    format_number,
    format_percent,
    format_points,
    format_table,
)
from components.report.decisions import any_published
from components.report.summary import reference_applies

Column = tuple[str, Callable[[dict], str]]
# The registry columns `cnnpipe run` prints under its table when the run published its models.
TERMINAL_PROMOTION_HEADERS = ("Model", "Decision", "Against champion", "Wins / losses", "p (McNemar, one-sided)",
                              "Task champion")


def name_cell(entry: dict) -> str:
    return str(entry["name"])


def accuracy_cell(entry: dict) -> str:
    return format_percent(entry.get("test_accuracy"))


def published_figure_cell(field: str, compared: bool) -> Callable[[dict], str]:
    """The paper's or the seed documents' accuracy (`field`), shown only when `compared`: the run's
    dataset is the one the figure was measured on."""
    return lambda entry: format_percent(entry.get(field)) if compared else MISSING


def parameters_cell(entry: dict) -> str:
    return format_count(entry["params"])


def train_speed_cell(entry: dict) -> str:
    return format_count(entry["train_images_per_second"])


def comparison_columns(compared: bool) -> list[Column]:
    """(header, cell function over a summary entry) for the report's comparison table; the paper and
    seed-document figures only when `compared` (the run's dataset is theirs)."""
    return [
        ("Model", name_cell),
        ("Test accuracy", accuracy_cell),
        ("Reference (paper)", published_figure_cell("reference_accuracy", compared)),
        ("Gap to reference", lambda entry: format_points(entry["reference_gap"])),
        ("Seed doc. accuracy", published_figure_cell("seed_accuracy", compared)),
        ("Gap to seed doc.", lambda entry: format_points(entry["seed_gap"])),
        ("Test loss", lambda entry: format_number(entry["test_loss"], digits=4)),
        ("Training time", lambda entry: format_duration(entry["train_seconds"])),
        ("Parameters", parameters_cell),
        ("Epochs", lambda entry: format_count(entry["epochs"])),
        ("Train images/s", train_speed_cell),
        ("Inference images/s", lambda entry: format_count(entry["inference_images_per_second"])),
    ]


def terminal_columns(compared: bool) -> list[Column]:
    """The columns `cnnpipe run` prints: short headers, and durations counted like the console's
    other lines (3:05)."""
    return [
        ("model", name_cell),
        ("test acc.", accuracy_cell),
        ("paper ref.", published_figure_cell("reference_accuracy", compared)),
        ("parameters", parameters_cell),
        ("train time", lambda entry: format_clock_duration(entry["train_seconds"])),
        ("train img/s", train_speed_cell),
    ]


def comparison_text_table(summary: dict) -> str:
    """summary.json's models as an aligned text table, best first, with the paper's figure only
    where the run's dataset is the one that figure was measured on (a line under it says why not)."""
    compared, reason = reference_applies(summary.get("dataset"))
    columns = terminal_columns(compared)
    rows = [[cell(entry) for _, cell in columns] for entry in summary["models"]]
    table = format_table([header for header, _ in columns], rows, right_aligned=range(1, len(columns)))
    table = table if compared else f"{table}\npaper ref.: {MISSING} because {reason}"
    if not any_published(summary["models"]):
        return table
    registry_columns = [column for column in promotion_columns() if column[0] in TERMINAL_PROMOTION_HEADERS]
    rows = [[cell(entry) for _, cell in registry_columns] for entry in summary["models"]]
    return f"{table}\n\n" + format_table([header for header, _ in registry_columns], rows)


def promotion_columns() -> list[Column]:
    """(header, cell function over a summary entry) for the model registry table: the paired test
    against the architecture's champion, and the decision about the task's champion."""
    return [
        ("Model", name_cell),
        ("Decision", lambda entry: entry["promotion"]["decision"]),
        ("Against champion", lambda entry: entry["promotion"].get("champion_run") or MISSING),
        ("Champion accuracy", lambda entry: format_percent(entry["promotion"].get("champion_accuracy"))),
        ("Test accuracy", accuracy_cell),
        ("Wins / losses", wins_and_losses_cell),
        ("p (McNemar, one-sided)", p_value_cell),
        ("Task champion", lambda entry: (entry["promotion"].get("task") or {}).get("decision", MISSING)),
    ]


def wins_and_losses_cell(entry: dict) -> str:
    promotion = entry["promotion"]
    return MISSING if promotion.get("wins") is None else f"{promotion['wins']} / {promotion['losses']}"


def p_value_cell(entry: dict) -> str:
    value = entry["promotion"].get("p_value")
    return MISSING if value is None else f"{value:.3g}"
