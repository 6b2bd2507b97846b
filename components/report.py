"""Report step: turn the evaluated models of one run into report.html, report.md and summary.json.

Each input directory is one evaluate output (``result.json`` + ``history.csv``). The HTML page is
self-contained (inline CSS, PNG plots embedded as base64 data URIs) so it can be opened from an
artifact store or mailed around; the Markdown file is the KFP Markdown artifact; summary.json is
the machine-readable comparison that nightly promotion and scripts read.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Callable

from components.artifacts import (
    HISTORY_FILE,
    MISTAKES_FILE,
    REPORT_HTML_FILE,
    REPORT_MARKDOWN_FILE,
    RESULT_FILE,
    SUMMARY_FILE,
)
from components.errors import UserError

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
# Beyond this many classes, per-cell counts in the confusion matrix become unreadable.
MAX_ANNOTATED_CLASSES = 20
# Beyond this many classes, tick labels overlap even at the smallest font.
MAX_LABELLED_CLASSES = 60
MISSING = "—"
# How many confused (true, predicted) class pairs each model section lists.
CONFUSED_PAIRS_SHOWN = 5
# The zoo's reference (paper) and seed-document accuracies are CIFAR-10 test accuracies (components/models),
# so they compare with a run only on that dataset (the Keras download and the binary archive alike).
REFERENCE_DATASET = "cifar10"

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f6f8fa; } td.text, th.text { text-align: left; }
tr.best td { background: #e6ffec; font-weight: 600; }
.positive { color: #1a7f37; } .negative { color: #cf222e; }
.muted { color: #656d76; font-size: 0.9rem; }
img { max-width: 100%; height: auto; } .plots { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
pre { background: #f6f8fa; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
td:not(.text) { white-space: nowrap; } .wide { overflow-x: auto; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8rem; }
figure.mistake { margin: 0; width: 8rem; font-size: 0.8rem; }
img.thumb { width: 96px; height: auto; image-rendering: pixelated; border: 1px solid #d0d7de; }
"""


@dataclass(frozen=True)
class ModelResult:
    """One evaluated model: its result.json and its per-epoch history (column name -> values)."""

    result_dir: str
    result: dict
    history: dict

    @property
    def name(self) -> str:
        """The model's name in the zoo (`cnnpipe models`)."""
        return str(self.result["name"])


def write_report(result_dirs: list[str], output_dir: str, manifest: dict, run_config: dict) -> dict:
    """Write report.html, report.md and summary.json for one run into output_dir.

    Args:
        result_dirs: evaluate output directories, each holding result.json and history.csv.
        output_dir: directory for the three report files (created if missing).
        manifest: the dataset manifest (data_prep.read_manifest) the models were trained on.
        run_config: the resolved run settings; at least {"preset", "dataset"}, optionally
            "promotion": [{"model", "decision", "champion_accuracy", "challenger_accuracy", "reason"}].
            Without it, the registry decisions that the publish step stored in each result.json
            (its "promotion" field) are shown.

    Returns:
        The summary dict written to summary.json.
    """
    if isinstance(result_dirs, (str, bytes, os.PathLike)):
        raise UserError(
            f"result_dirs must be a list of directories, got the single path {result_dirs!r}; wrap it in a list"
        )
    if not result_dirs:
        raise UserError("result_dirs is empty; pass at least one evaluate output directory (with result.json)")
    results = sort_by_accuracy([read_result(result_dir) for result_dir in result_dirs])
    if "promotion" not in run_config:
        promotion = [item.result["promotion"] for item in results if item.result.get("promotion")]
        run_config = {**run_config, "promotion": promotion} if promotion else run_config
    summary = build_summary(results, manifest, run_config)
    files = {
        SUMMARY_FILE: json.dumps(summary, indent=2, allow_nan=False) + "\n",
        REPORT_MARKDOWN_FILE: render_markdown(summary, manifest, run_config),
        REPORT_HTML_FILE: render_html(results, summary, manifest, run_config),
    }
    write_files_atomically(files, output_dir)
    return summary


def read_result(result_dir: str) -> ModelResult:
    """Read and check one evaluate output directory."""
    result_path = os.path.join(result_dir, RESULT_FILE)
    if not os.path.isfile(result_path):
        raise UserError(f"no result.json in {result_dir!r}; pass directories written by the evaluate step")
    try:
        with open(result_path, encoding="utf-8") as file:
            result = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"invalid result.json in {result_dir!r} ({error}); rerun the evaluate step for this model"
        ) from error
    if not isinstance(result, dict):
        raise UserError(
            f"result.json in {result_dir!r} holds a {type(result).__name__}, not an object; rerun the evaluate step"
        )
    missing = [field for field in ("name", *REQUIRED_NUMBER_FIELDS) if field not in result]
    if missing:
        raise UserError(
            f"result.json in {result_dir!r} lacks {', '.join(missing)}; rerun the evaluate step for this model"
        )
    not_numbers = [field for field in REQUIRED_NUMBER_FIELDS if not is_number(result[field])]
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
    return sorted(results, key=lambda model: (-float(model.result["test_accuracy"]), model.name))


def build_summary(results: list[ModelResult], manifest: dict, run_config: dict) -> dict:
    """The summary.json document (field names fixed by DESIGN.md; extra fields after them)."""
    dataset = manifest.get("name") or run_config.get("dataset")
    compared, _ = reference_applies(dataset)
    models = []
    for model in results:
        result = model.result
        entry = {field: finite_or_none(result[field]) for field in ("name", *REQUIRED_NUMBER_FIELDS)}
        entry["reference_accuracy"] = finite_or_none(result.get("reference_accuracy"))
        entry["seed_accuracy"] = finite_or_none(result.get("seed_accuracy"))
        entry["family"] = result.get("family")
        entry["best_validation_accuracy"] = finite_or_none(result.get("best_validation_accuracy"))
        # The work done, as counted by the optimizer: epochs x ceil(train images / batch) steps.
        entry["optimizer_steps"] = result.get("optimizer_steps")
        entry["images_seen"] = result.get("images_seen")
        entry["reference_gap"] = reference_gap(result, "reference_accuracy", compared)
        entry["seed_gap"] = reference_gap(result, "seed_accuracy", compared)
        models.append(entry)
    summary = {
        "dataset": dataset,
        "preset": run_config.get("preset"),
        "num_classes": manifest.get("num_classes", len(manifest.get("class_names", []))),
        "models": models,
        "best_model": models[0]["name"],
        "class_names": list(manifest.get("class_names", [])),
        "image_shape": manifest.get("image_shape"),
        "splits": manifest.get("splits"),
        # Whether reference_accuracy / seed_accuracy compare with this run (see reference_applies).
        "reference_dataset": REFERENCE_DATASET,
        "reference_compared": compared,
    }
    if run_config.get("promotion"):
        summary["promotion"] = run_config["promotion"]
    return summary


def reference_applies(dataset) -> tuple[bool, str]:
    """(whether the paper and seed-document figures compare with a run on `dataset`, why not if they don't)."""
    if dataset == REFERENCE_DATASET:
        return True, ""
    return False, f"the paper figures are CIFAR-10 test accuracies and this run is on {dataset}"


def reference_gap(result: dict, field: str, compared: bool) -> float | None:
    """Test accuracy minus the figure in `field`, when the figure exists and compares."""
    figure = result.get(field)
    if not compared or not is_number(figure) or not math.isfinite(figure):
        return None
    return finite_or_none(float(result["test_accuracy"]) - figure)


def reference_note(summary: dict) -> str:
    """One sentence under the comparison table saying what the reference columns mean here."""
    if summary["reference_compared"]:
        return ("Reference is the paper's CIFAR-10 test accuracy, seed doc. the seed documents' own run; "
                "gaps are meaningful with a full training budget.")
    _, reason = reference_applies(summary["dataset"])
    return f"Reference and seed-document columns show {MISSING} because {reason}."


# ---------------------------------------------------------------------------------------------
# Markdown


def render_markdown(summary: dict, manifest: dict, run_config: dict) -> str:
    """report.md: the comparison table and key numbers, no images."""
    best = summary["models"][0]
    lines = [
        f"# cnnpipe report: {markdown_cell(summary['dataset'])}",
        "",
        f"- Dataset: **{markdown_cell(summary['dataset'])}**, images {format_shape(manifest.get('image_shape'))}, "
        f"{summary['num_classes']} classes, splits {format_splits(manifest.get('splits'))}",
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
    promotion = run_config.get("promotion") or []
    if promotion:
        lines += ["", "## Model registry", ""]
        lines.append("| " + " | ".join(name for name, _ in promotion_columns()) + " |")
        lines.append("|" + "|".join("---" for _ in promotion_columns()) + "|")
        for decision in promotion:
            lines.append("| " + " | ".join(markdown_cell(cell(decision)) for _, cell in promotion_columns()) + " |")
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


# ---------------------------------------------------------------------------------------------
# Tables shared by the HTML and Markdown renderings


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


# ---------------------------------------------------------------------------------------------
# HTML


def render_html(results: list[ModelResult], summary: dict, manifest: dict, run_config: dict) -> str:
    """report.html: one self-contained page with tables and embedded PNG plots."""
    escape = html.escape
    title = f"cnnpipe report: {summary['dataset']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(str(title))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(str(title))}</h1>",
        f'<p class="muted">Best model: <strong>{escape(summary["best_model"])}</strong> '
        f"({format_percent(summary['models'][0]['test_accuracy'])} test accuracy)</p>",
        "<h2>Dataset and settings</h2>",
        html_key_value_table(dataset_rows(manifest)),
        html_key_value_table(config_rows(run_config)),
        html_settings_tables(run_config),
        "<h2>Comparison</h2>",
        f'<p class="muted">Sorted by test accuracy. {html.escape(reference_note(summary))}</p>',
        f'<div class="wide">{html_comparison_table(summary["models"], summary["reference_compared"])}</div>',
        "<h2>Accuracy against training time</h2>",
        html_image(plot_accuracy_against_time(summary["models"]), "test accuracy against training time"),
        "<h2>Validation accuracy over epochs</h2>",
        html_image(plot_validation_overview(results), "validation accuracy of every model over epochs"),
    ]
    promotion = run_config.get("promotion") or []
    if promotion:
        parts += ["<h2>Model registry</h2>", html_promotion_table(promotion)]
    for index, model in enumerate(results):
        parts.append(html_model_section(index, model, manifest))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def dataset_rows(manifest: dict) -> list[tuple[str, str]]:
    """Key facts about the dataset for the header."""
    return [
        ("Dataset", str(manifest.get("name", MISSING))),
        ("Source", str(manifest.get("source", MISSING))),
        ("Image shape", format_shape(manifest.get("image_shape"))),
        ("Classes", str(manifest.get("num_classes", len(manifest.get("class_names", []))))),
        ("Splits", format_splits(manifest.get("splits"))),
        *([("Test split", f"{manifest['test_held_out_fraction']:.0%} of each class, held out by prep")]
          if manifest.get("test_held_out_fraction") else []),
        *([("Resized images", format_count(manifest["resized_images"]))] if manifest.get("resized_images") else []),
    ]


def config_rows(run_config: dict) -> list[tuple[str, str]]:
    """The run's own settings as text rows; nested settings (the training recipe) and promotion
    decisions get tables of their own."""
    return [
        (str(key), format_setting(value))
        for key, value in run_config.items()
        if key != "promotion" and not isinstance(value, dict)
    ]


def html_settings_tables(run_config: dict) -> str:
    """One titled table per nested group of settings, e.g. the training recipe under "train"."""
    titles = {"train": "Training recipe"}
    return "\n".join(
        f"<h3>{html.escape(titles.get(key, str(key)))}</h3>" + html_key_value_table(setting_rows(value))
        for key, value in run_config.items()
        if isinstance(value, dict)
    )


def setting_rows(settings: dict) -> list[tuple[str, str]]:
    """A flat mapping of settings as sorted (name, readable value) rows."""
    return [(str(key), format_setting(value)) for key, value in sorted(settings.items())]


def html_key_value_table(rows: list[tuple[str, str]]) -> str:
    """Two-column table of escaped header/value pairs."""
    body = "".join(
        f'<tr><th class="text">{html.escape(key)}</th><td class="text">{html.escape(value)}</td></tr>'
        for key, value in rows
    )
    return f"<table>{body}</table>"


def html_comparison_table(entries: list[dict], compared: bool) -> str:
    """The model comparison table, best model highlighted, gaps coloured by sign."""
    columns = comparison_columns(compared)
    header = "".join(
        f'<th class="text">{html.escape(name)}</th>' if name == "Model" else f"<th>{html.escape(name)}</th>"
        for name, _ in columns
    )
    rows = []
    for index, entry in enumerate(entries):
        cells = []
        for name, cell in columns:
            text = html.escape(str(cell(entry)))
            if name == "Model":
                cells.append(f'<td class="text"><a href="#model-{index}">{text}</a></td>')
            elif name.startswith("Gap"):
                css_class = gap_class(text)
                cells.append(f'<td class="{css_class}">{text}</td>' if css_class else f"<td>{text}</td>")
            else:
                cells.append(f"<td>{text}</td>")
        row_class = ' class="best"' if index == 0 else ""
        rows.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def gap_class(text: str) -> str:
    """CSS class for a formatted gap: green when above the reference, red when below."""
    if text.startswith("+"):
        return "positive"
    if text.startswith("-"):
        return "negative"
    return ""


def html_promotion_table(promotion: list[dict]) -> str:
    """The champion/challenger decisions of the model registry."""
    columns = promotion_columns()
    header = "".join(f'<th class="text">{html.escape(name)}</th>' for name, _ in columns)
    rows = "".join(
        "<tr>" + "".join(f'<td class="text">{html.escape(str(cell(decision)))}</td>' for _, cell in columns) + "</tr>"
        for decision in promotion
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"


def html_model_section(index: int, model: ModelResult, manifest: dict) -> str:
    """Per-model section: training curves, confusion matrix, per-class table, training config."""
    result = model.result
    escape = html.escape
    class_names = [str(name) for name in result.get("class_names") or manifest.get("class_names", [])]
    parts = [
        f'<h2 id="model-{index}">{escape(model.name)}</h2>',
        f'<p class="muted">Family: {escape(str(result.get("family", MISSING)))} · '
        f"test accuracy {format_percent(result['test_accuracy'])} · "
        f"best validation accuracy {format_percent(result.get('best_validation_accuracy'))} · "
        f"{format_count(result['epochs'])} epochs in {format_duration(result['train_seconds'])} "
        f"({format_count(result.get('optimizer_steps'))} optimizer steps, "
        f"{format_count(result.get('images_seen'))} training images seen)</p>",
        '<div class="plots">',
        html_image(plot_training_curves(model), f"training curves of {model.name}"),
    ]
    confusion = result.get("confusion_matrix")
    if confusion:
        heatmap = plot_confusion_matrix(confusion, class_names, model.name)
        parts.append(html_image(heatmap, f"confusion matrix of {model.name}"))
    parts.append("</div>")
    if confusion:
        parts += ["<h3>Most confused classes</h3>", html_confused_pairs(confused_pairs(confusion, class_names))]
    if "mistakes" in result:
        parts += ["<h3>Most confidently wrong test images</h3>", html_mistakes(model, class_names)]
    per_class = result.get("per_class") or []
    if per_class:
        opened = " open" if len(per_class) <= MAX_ANNOTATED_CLASSES else ""
        parts.append(
            f"<details{opened}><summary>Per-class precision and recall</summary>"
            f"{html_per_class_table(per_class)}</details>"
        )
    if isinstance(result.get("config"), dict):
        parts.append(
            "<details><summary>Training configuration</summary>"
            f"{html_key_value_table(setting_rows(result['config']))}</details>"
        )
    return "\n".join(parts)


def confused_pairs(confusion: list[list[int]], class_names: list[str], count: int = CONFUSED_PAIRS_SHOWN) -> list[dict]:
    """The `count` largest off-diagonal cells of the confusion matrix: which true class is taken
    for which other class, how many times, and what share of the true class that is."""
    cells = []
    for true_index, row in enumerate(confusion):
        total = sum(row)
        for predicted_index, images in enumerate(row):
            if predicted_index != true_index and images > 0:
                cells.append({
                    "true": class_label(class_names, true_index),
                    "predicted": class_label(class_names, predicted_index),
                    "images": int(images),
                    "share": images / total,
                })
    return sorted(cells, key=lambda cell: (-cell["images"], -cell["share"]))[:count]


def html_confused_pairs(pairs: list[dict]) -> str:
    """The confused class pairs as a table, or a sentence when there are none."""
    if not pairs:
        return '<p class="muted">No test image was classified as another class.</p>'
    rows = "".join(
        f'<tr><td class="text">{html.escape(pair["true"])}</td><td class="text">{html.escape(pair["predicted"])}</td>'
        f"<td>{format_count(pair['images'])}</td><td>{format_percent(pair['share'])}</td></tr>"
        for pair in pairs
    )
    header = (
        '<th class="text">True class</th><th class="text">Predicted as</th>'
        "<th>Images</th><th>Share of true class</th>"
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"


def html_mistakes(model: ModelResult, class_names: list[str]) -> str:
    """A gallery of the test images the model gets most confidently wrong (evaluate's mistakes.npy),
    each with its true and predicted class and the predicted probability."""
    mistakes = model.result["mistakes"]
    if not mistakes:
        return '<p class="muted">The model classified every test image correctly.</p>'
    thumbnails = read_thumbnails(model.result_dir, len(mistakes))
    if thumbnails is None:
        return f'<p class="muted">{len(mistakes)} mistakes listed but no thumbnails saved ({MISTAKES_FILE}).</p>'
    figures = []
    for mistake, picture in zip(mistakes, thumbnails):
        true_name = class_label(class_names, mistake["true_class"])
        predicted_name = class_label(class_names, mistake["predicted_class"])
        description = f"test image {mistake['index']}: a {true_name} taken for a {predicted_name}"
        figures.append(
            f'<figure class="mistake">{html_image(thumbnail_png(picture), description, css_class="thumb")}'
            f"<figcaption>true <strong>{html.escape(true_name)}</strong><br>"
            f"predicted <strong>{html.escape(predicted_name)}</strong> ({format_percent(mistake['confidence'])})"
            "</figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(figures)}</div>'


def read_thumbnails(result_dir: str, expected: int):
    """The uint8 thumbnails evaluate saved, or None when the file is missing or does not match."""
    import numpy

    path = os.path.join(result_dir, MISTAKES_FILE)
    if not os.path.isfile(path):
        return None
    thumbnails = numpy.load(path, allow_pickle=False)
    return thumbnails if len(thumbnails) == expected and thumbnails.ndim == 4 else None


def thumbnail_png(picture) -> bytes:
    """One uint8 [H, W, C] image as PNG bytes (grey for one channel)."""
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    if picture.shape[-1] == 1:
        imsave(buffer, picture[..., 0], cmap="gray", vmin=0, vmax=255, format="png")
    else:
        imsave(buffer, picture, format="png")
    return buffer.getvalue()


def class_label(class_names: list[str], index: int) -> str:
    """The class's name, or its index when the names do not cover it."""
    return str(class_names[index]) if 0 <= index < len(class_names) else str(index)


def html_per_class_table(per_class: list[dict]) -> str:
    """Precision, recall and support of each class."""
    rows = "".join(
        f'<tr><td class="text">{html.escape(str(row.get("class", MISSING)))}</td>'
        f"<td>{format_percent(row.get('precision'))}</td><td>{row.get('note') or format_percent(row.get('recall'))}</td>"
        f"<td>{format_count(row.get('support'))}</td></tr>"
        for row in per_class
    )
    header = '<th class="text">Class</th><th>Precision</th><th>Recall</th><th>Support</th>'
    return f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"


def html_image(png: bytes, description: str, css_class: str = "") -> str:
    """An <img> carrying the PNG inline as a base64 data URI."""
    encoded = base64.b64encode(png).decode("ascii")
    class_attribute = f' class="{css_class}"' if css_class else ""
    return f'<img{class_attribute} src="data:image/png;base64,{encoded}" alt="{html.escape(description)}">'


# ---------------------------------------------------------------------------------------------
# Plots. Figures are built with matplotlib.figure.Figure and rendered by the Agg canvas directly,
# so no pyplot global state or backend switch leaks into whoever imports this module, and each
# figure is freed as soon as its PNG bytes are taken.


def new_figure(width: float, height: float):
    """A figure (inches) attached to the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure) -> bytes:
    """Render a figure to PNG bytes (100 dpi keeps the embedded page small)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    figure.clear()
    return buffer.getvalue()


def plot_training_curves(model: ModelResult) -> bytes:
    """Train/validation accuracy and loss, and the learning rate, over epochs for one model."""
    figure = new_figure(12, 3.4)
    accuracy_axes, loss_axes, rate_axes = figure.subplots(1, 3)
    history = model.history
    epochs = history.get("epoch") or list(range(1, 1 + max((len(values) for values in history.values()), default=0)))
    panels = ((accuracy_axes, "accuracy", "Accuracy (%)", 100), (loss_axes, "loss", "Loss", 1))
    for axes, metric, label, scale in panels:
        for column, line_label, style in ((metric, "train", "-o"), (f"val_{metric}", "validation", "--s")):
            values = history.get(column)
            if values:
                scaled = [value * scale for value in values]
                axes.plot(epochs[: len(values)], scaled, style, markersize=3, label=line_label)
        axes.set_title(label)
        finish_epoch_axes(axes, legend=True)
    plot_learning_rate(rate_axes, epochs, history.get("learning_rate"))
    figure.suptitle(model.name, parse_math=False)
    return figure_png(figure)


def plot_learning_rate(axes, epochs: list, rates: list | None) -> None:
    """The learning rate at the end of each epoch; log scale when it spans a decade or more."""
    if rates:
        axes.plot(epochs[: len(rates)], rates, "-o", markersize=3, color="#8250df")
        positive = [rate for rate in rates if rate > 0]
        if positive and max(positive) / min(positive) >= 10:
            axes.set_yscale("log")
    axes.set_title("Learning rate (end of epoch)")
    finish_epoch_axes(axes, legend=False)


def finish_epoch_axes(axes, legend: bool) -> None:
    """Epoch x-axis with whole-number ticks, a grid, and a note when nothing was plotted."""
    from matplotlib.ticker import MaxNLocator

    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    if not axes.lines:
        axes.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=axes.transAxes)
    elif legend:
        axes.legend(fontsize="small")


def plot_validation_overview(results: list[ModelResult]) -> bytes:
    """Validation accuracy over epochs of every model in one plot, for a side-by-side view."""
    figure = new_figure(7, 3.8)
    axes = figure.subplots()
    for model in results:
        values = model.history.get("val_accuracy")
        if values:
            epochs = model.history.get("epoch") or list(range(1, len(values) + 1))
            axes.plot(epochs[: len(values)], [value * 100 for value in values], "-o", markersize=3, label=model.name)
    axes.set_ylabel("validation accuracy (%)")
    finish_epoch_axes(axes, legend=True)
    return figure_png(figure)


def plot_accuracy_against_time(entries: list[dict]) -> bytes:
    """Scatter of test accuracy (%) against training time (s), each point labelled with its model."""
    figure = new_figure(7, 4.2)
    axes = figure.subplots()
    seconds = [max(float(entry["train_seconds"] or 0.0), 1e-3) for entry in entries]
    accuracies = [float(entry["test_accuracy"] or 0.0) * 100 for entry in entries]
    axes.scatter(seconds, accuracies, s=36, color="#0969da", zorder=3)
    for entry, x, y in zip(entries, seconds, accuracies):
        axes.annotate(entry["name"], (x, y), xytext=(5, 4), textcoords="offset points", fontsize=9, parse_math=False)
    # Training times of the zoo span orders of magnitude (LeNet seconds, VGG minutes).
    if max(seconds) / min(seconds) > 20:
        axes.set_xscale("log")
    axes.set_xlabel("training time (s)")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.margins(x=0.15, y=0.15)
    return figure_png(figure)


def plot_confusion_matrix(confusion: list[list[int]], class_names: list[str], model_name: str) -> bytes:
    """Heatmap of the confusion matrix, coloured by row share (recall) and annotated with counts."""
    import numpy

    counts = numpy.asarray(confusion, dtype=float)
    class_count = counts.shape[0]
    names = class_names if len(class_names) == class_count else [str(index) for index in range(class_count)]
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = numpy.divide(counts, row_totals, out=numpy.zeros_like(counts), where=row_totals > 0)
    size = min(max(4.0, 0.45 * class_count + 2.0), 14.0)
    figure = new_figure(size + 1.0, size)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of true class")
    if class_count <= MAX_LABELLED_CLASSES:
        # Class names come from users' folder names: parse_math=False keeps a '$' from becoming TeX.
        short_names = [name if len(name) <= 18 else name[:17] + "…" for name in names]
        font_size = 9 if class_count <= MAX_ANNOTATED_CLASSES else 7
        axes.set_xticks(range(class_count), short_names, rotation=45, ha="right", fontsize=font_size, parse_math=False)
        axes.set_yticks(range(class_count), short_names, fontsize=font_size, parse_math=False)
    if class_count <= MAX_ANNOTATED_CLASSES:
        for row in range(class_count):
            for column in range(class_count):
                color = "white" if shares[row, column] > 0.6 else "black"
                axes.text(column, row, f"{int(counts[row, column])}", ha="center", va="center", fontsize=8, color=color)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(f"Confusion matrix: {model_name}", parse_math=False)
    return figure_png(figure)


# ---------------------------------------------------------------------------------------------
# Formatting and small helpers


def is_number(value) -> bool:
    """True for int/float values (bool excluded: JSON true is not a count)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def format_percent(fraction) -> str:
    """0.9125 -> '91.25%'."""
    if not is_number(fraction) or not math.isfinite(fraction):
        return MISSING
    return f"{fraction * 100:.2f}%"


def format_points(difference) -> str:
    """A signed difference of fractions in percentage points, e.g. 0.012 -> '+1.20 pp'."""
    if not is_number(difference) or not math.isfinite(difference):
        return MISSING
    return f"{difference * 100:+.2f} pp"


def format_setting(value) -> str:
    """A setting as people write it: whole numbers without '.0' (KFP passes every number of a
    dict parameter as a float, so batch_size arrives as 64.0), lists comma-separated."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_setting(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={format_setting(item)}" for key, item in sorted(value.items()))
    return str(value)


def format_number(value, digits: int = 2) -> str:
    """A float with a fixed number of decimals."""
    if not is_number(value) or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


def format_count(value) -> str:
    """A whole number with thousands separators: 272474 -> '272,474'."""
    if not is_number(value) or not math.isfinite(value):
        return MISSING
    return f"{round(value):,}"


def format_duration(seconds) -> str:
    """Seconds as '12.4 s', '3 min 05 s' or '1 h 02 min'."""
    if not is_number(seconds) or not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def format_shape(shape) -> str:
    """[32, 32, 3] -> '32×32×3'."""
    if not shape:
        return MISSING
    return "×".join(str(size) for size in shape)


def format_splits(splits) -> str:
    """{'train': 1000, 'test': 200} -> 'train 1,000 · test 200'."""
    if not splits:
        return MISSING
    return " · ".join(f"{name} {format_count(count)}" for name, count in splits.items())


def write_files_atomically(files: dict[str, str], output_dir: str) -> None:
    """Write every file to a temp name in output_dir first, then rename them into place.

    All content is rendered before this is called, so a failure while plotting or rendering
    leaves no report file behind; the renames are atomic on one filesystem.
    """
    os.makedirs(output_dir, exist_ok=True)
    temporary_paths = {}
    try:
        for name, text in files.items():
            descriptor, temporary_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=output_dir)
            temporary_paths[name] = temporary_path
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
        for name, temporary_path in temporary_paths.items():
            os.replace(temporary_path, os.path.join(output_dir, name))
    finally:
        for temporary_path in temporary_paths.values():
            if os.path.exists(temporary_path):
                os.remove(temporary_path)
