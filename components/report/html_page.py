"""report.html: one self-contained page (inline CSS, PNG plots embedded as base64 data URIs), so it
can be opened from an artifact store or mailed around."""

from __future__ import annotations

import base64
import html
import io
import os

from components.artifacts import MISTAKES_FILE
from components.formatting import (
    MISSING,
    format_count,
    format_duration,
    format_percent,
    format_setting,
    format_shape,
    format_splits,
)
from components.manifest import DatasetManifest
from components.report.plots import (
    MAX_ANNOTATED_CLASSES,
    plot_accuracy_against_time,
    plot_confusion_matrix,
    plot_training_curves,
    plot_validation_overview,
)
from components.report.decisions import NOT_PUBLISHED, any_published, promotion_sentences
from components.report.summary import ModelResult, reference_note
from components.report.tables import comparison_columns, promotion_columns

# How many confused (true, predicted) class pairs each model section lists.
CONFUSED_PAIRS_SHOWN = 5


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


def render_html(results: list[ModelResult], summary: dict, manifest: DatasetManifest, run_config: dict) -> str:
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
    parts += ["<h2>Which epoch each model is</h2>",
              html_sentences([f"{entry['name']}: {entry['epoch_choice']}" for entry in summary["models"]])]
    parts.append("<h2>Model registry</h2>")
    if any_published(summary["models"]):
        parts += [html_promotion_table(summary["models"]), html_sentences(
            [sentence for entry in summary["models"]
             for sentence in promotion_sentences(entry["name"], entry["promotion"])])]
    else:
        parts.append(f'<p class="muted">{html.escape(NOT_PUBLISHED)}</p>')
    for index, model in enumerate(results):
        parts.append(html_model_section(index, model, manifest))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def dataset_rows(manifest: DatasetManifest) -> list[tuple[str, str]]:
    """Key facts about the dataset for the header."""
    return [
        ("Dataset", manifest.name),
        ("Source", manifest.source),
        ("Image shape", format_shape(manifest.image_shape)),
        ("Classes", str(manifest.num_classes)),
        ("Splits", format_splits(manifest.splits)),
        *([("Test split", f"{manifest.test_held_out_fraction:.0%} of each class, held out by prep")]
          if manifest.test_held_out_fraction else []),
        *([("Resized images", format_count(manifest.resized_images))] if manifest.resized_images else []),
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


def html_promotion_table(entries: list[dict]) -> str:
    """The champion/challenger decisions of the model registry, a row per model."""
    columns = promotion_columns()
    header = "".join(f'<th class="text">{html.escape(name)}</th>' for name, _ in columns)
    rows = "".join(
        "<tr>" + "".join(f'<td class="text">{html.escape(str(cell(entry)))}</td>' for _, cell in columns) + "</tr>"
        for entry in entries
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>"


def html_sentences(sentences: list[str]) -> str:
    """Sentences as an escaped bullet list."""
    return "<ul>" + "".join(f"<li>{html.escape(sentence)}</li>" for sentence in sentences) + "</ul>"


def html_model_section(index: int, model: ModelResult, manifest: DatasetManifest) -> str:
    """Per-model section: training curves, confusion matrix, per-class table, training config."""
    result = model.result
    escape = html.escape
    class_names = [str(name) for name in result.class_names or manifest.class_names]
    parts = [
        f'<h2 id="model-{index}">{escape(model.name)}</h2>',
        f'<p class="muted">Family: {escape(result.family)} · '
        f"test accuracy {format_percent(result.test_accuracy)} · "
        f"best validation accuracy {format_percent(result.best_validation_accuracy)} · "
        f"{format_count(result.epochs)} epochs in {format_duration(result.train_seconds)} "
        f"({format_count(result.optimizer_steps)} optimizer steps, "
        f"{format_count(result.images_seen)} training images seen)</p>",
        '<div class="plots">',
        html_image(plot_training_curves(model), f"training curves of {model.name}"),
    ]
    confusion = result.confusion_matrix
    if confusion:
        heatmap = plot_confusion_matrix(confusion, class_names, model.name)
        parts.append(html_image(heatmap, f"confusion matrix of {model.name}"))
    parts.append("</div>")
    if confusion:
        parts += ["<h3>Most confused classes</h3>", html_confused_pairs(confused_pairs(confusion, class_names))]
    parts += ["<h3>Most confidently wrong test images</h3>", html_mistakes(model, class_names)]
    per_class = result.per_class
    if per_class:
        opened = " open" if len(per_class) <= MAX_ANNOTATED_CLASSES else ""
        parts.append(
            f"<details{opened}><summary>Per-class precision and recall</summary>"
            f"{html_per_class_table(per_class)}</details>"
        )
    if result.config:
        parts.append(
            "<details><summary>Training configuration</summary>"
            f"{html_key_value_table(setting_rows(result.config))}</details>"
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
    mistakes = model.result.mistakes
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
