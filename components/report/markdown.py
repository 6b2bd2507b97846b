"""report.md: the comparison table and key numbers, no images (the KFP Markdown artifact)."""

from __future__ import annotations

from components.formatting import format_duration, format_percent, format_setting, format_shape, format_splits
from components.manifest import DatasetManifest
from components.report.decisions import NOT_PUBLISHED, any_published, promotion_sentences
from components.report.summary import reference_note
from components.report.tables import comparison_columns, promotion_columns


def render_markdown(summary: dict, manifest: DatasetManifest, run_config: dict) -> str:
    """report.md: the comparison table and key numbers, no images."""
    best = summary["models"][0]
    lines = [
        f"# cnnpipe report: {markdown_cell(summary['dataset'])}",
        "",
        f"- Dataset: **{markdown_cell(summary['dataset'])}**, images {format_shape(manifest.image_shape)}, "
        f"{summary['num_classes']} classes, splits {format_splits(manifest.splits)}",
        f"- Preset: **{markdown_cell(summary['preset'])}**",
        *([f"- Recipe: {markdown_cell(recipe_line(run_config['train']))}"] if isinstance(run_config.get("train"), dict) else []),
        f"- Best model: **{markdown_cell(best['name'])}** with test accuracy {format_percent(best['test_accuracy'])} "
        f"in {format_duration(best['train_seconds'])} of training",
        "",
        "## Comparison (sorted by test accuracy)",
        "",
        reference_note(summary),
        "",
    ]
    columns = comparison_columns(summary["reference_compared"])
    header = [name for name, _ in columns]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for entry in summary["models"]:
        lines.append("| " + " | ".join(markdown_cell(cell(entry)) for _, cell in columns) + " |")
    lines += ["", "## Which epoch each model is", ""]
    lines += [f"- {markdown_cell(entry['name'])}: {markdown_cell(entry['epoch_choice'])}" for entry in summary["models"]]
    lines += ["", "## Model registry", ""]
    if not any_published(summary["models"]):
        return "\n".join([*lines, NOT_PUBLISHED]) + "\n"
    lines.append("| " + " | ".join(name for name, _ in promotion_columns()) + " |")
    lines.append("|" + "|".join("---" for _ in promotion_columns()) + "|")
    for entry in summary["models"]:
        lines.append("| " + " | ".join(markdown_cell(cell(entry)) for _, cell in promotion_columns()) + " |")
    lines.append("")
    for entry in summary["models"]:
        lines += [f"- {markdown_cell(sentence)}" for sentence in promotion_sentences(entry["name"], entry["promotion"])]
    return "\n".join(lines) + "\n"


def recipe_line(train: dict) -> str:
    """The training recipe in one line, e.g. "sgd, peak learning rate 0.4 (linear schedule, 1
    warmup epoch), batch 512, 10 epochs, label smoothing 0.2, weight decay 0.0005 on kernels only,
    shifts up to 6.25 % of a side, flip-averaged predictions"."""
    parts = [str(train.get("optimizer", "?"))]
    rate = f"peak learning rate {format_setting(train.get('learning_rate'))}"
    if train.get("reference_batch_size"):
        rate += f" per {train['reference_batch_size']} images"
    schedule = f"{train.get('schedule', '?')} schedule"
    if train.get("warmup_epochs"):
        schedule += f", {format_setting(train['warmup_epochs'])} warmup epoch{'s' if train['warmup_epochs'] != 1 else ''}"
    parts.append(f"{rate} ({schedule})")
    parts.append(f"batch {train.get('batch_size', '?')}, {train.get('epochs', '?')} epochs")
    if train.get("label_smoothing"):
        parts.append(f"label smoothing {format_setting(train['label_smoothing'])}")
    if train.get("weight_decay"):
        where = "" if train.get("weight_decay_on_norm_and_bias", True) else " on kernels only"
        parts.append(f"weight decay {format_setting(train['weight_decay'])}{where}")
    if train.get("augment", True):
        parts.append(f"shifts up to {100 * train.get('shift_fraction', 0):g} % of a side")
    if train.get("weight_average_momentum"):
        parts.append(f"weights averaged with momentum {format_setting(train['weight_average_momentum'])}")
    if train.get("test_time_flip"):
        parts.append("flip-averaged predictions")
    return ", ".join(parts)


def markdown_cell(value) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
