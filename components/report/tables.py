"""The report's tables as (header, cell function) columns, shared by its HTML and Markdown pages."""

from __future__ import annotations

from typing import Callable

from components.formatting import MISSING, format_count, format_duration, format_number, format_percent, format_points

def comparison_columns(compared: bool) -> list[tuple[str, Callable[[dict], object]]]:
    """(header, cell function over a summary entry) for the comparison table; the paper and seed-document
    figures only when `compared` (the run's dataset is theirs)."""

    def figure(field: str) -> Callable[[dict], str]:
        return lambda entry: format_percent(entry[field]) if compared else MISSING

    return [
        ("Model", lambda entry: entry["name"]),
        ("Test accuracy", lambda entry: format_percent(entry["test_accuracy"])),
        ("Reference (paper)", figure("reference_accuracy")),
        ("Gap to reference", lambda entry: format_points(entry["reference_gap"])),
        ("Seed doc. accuracy", figure("seed_accuracy")),
        ("Gap to seed doc.", lambda entry: format_points(entry["seed_gap"])),
        ("Test loss", lambda entry: format_number(entry["test_loss"], digits=4)),
        ("Training time", lambda entry: format_duration(entry["train_seconds"])),
        ("Parameters", lambda entry: format_count(entry["params"])),
        ("Epochs", lambda entry: format_count(entry["epochs"])),
        ("Train images/s", lambda entry: format_count(entry["train_images_per_second"])),
        ("Inference images/s", lambda entry: format_count(entry["inference_images_per_second"])),
    ]


def promotion_columns() -> list[tuple[str, Callable[[dict], object]]]:
    """(header, cell function over a promotion decision) for the model registry table."""
    return [
        ("Model", lambda decision: decision.get("model", MISSING)),
        ("Decision", lambda decision: decision.get("decision", MISSING)),
        ("Champion accuracy", lambda decision: format_percent(decision.get("champion_accuracy"))),
        ("Challenger accuracy", lambda decision: format_percent(decision.get("challenger_accuracy"))),
        ("Reason", lambda decision: decision.get("reason", "")),
    ]
