"""Tests for the components.report package on evaluate-style result directories written by the tests."""

import base64
import csv
import dataclasses
import json
import os
import re

import numpy as np
import pytest

from components.artifacts import MISTAKES_FILE
from components.formatting import format_setting
from components.manifest import DatasetManifest
from components.report import write_report_files
from components.report.html_page import confused_pairs, dataset_rows
from components.report.tables import comparison_text_table

CLASS_NAMES = ["<b>cat", "dog & wolf", "$bird$"]

MANIFEST = DatasetManifest(
    format_version=1, name="pets", source="/data/pets", class_names=CLASS_NAMES, num_classes=3,
    image_shape=[32, 32, 3], splits={"train": 120, "test": 30, "validation": 0}, class_counts={},
    classes_without_test_images=[], mean=[0.5] * 3, std=[0.25] * 3, pixel_mean="pixel_mean.npy",
    allow_horizontal_flip=True, resized_images=0, test_held_out_fraction=None, record_format={},
    shards_location=None, shards={}, sha256={},
)

# As the pipeline passes it: KFP hands every number of a dict parameter over as a float.
RUN_CONFIG = {
    "preset": "smoke",
    "dataset": "/data/pets",
    "models": ["lenet5", "resnet20_v1", "vgg16"],
    "train": {"batch_size": 64.0, "epochs": 3.0, "learning_rate": 0.002, "augment": True, "warmup_epochs": 0.5},
}
# The two most confidently wrong test images of every model: (index, true, predicted, confidence).
MISTAKES = [(7, 2, 1, 0.97), (3, 0, 2, 0.81)]

# name -> values written to result.json; accuracies differ so the sort order is known.
MODEL_VALUES = {
    "lenet5": dict(family="lenet", params=61706, test_accuracy=0.6, test_loss=0.91, train_seconds=4.2,
                   train_images_per_second=900.0, inference_images_per_second=5200.0,
                   reference_accuracy=None, seed_accuracy=None),
    "resnet20_v1": dict(family="resnet", params=272474, test_accuracy=0.8, test_loss=0.55, train_seconds=95.0,
                        train_images_per_second=310.0, inference_images_per_second=2100.0,
                        reference_accuracy=0.9125, seed_accuracy=0.9216),
    "vgg16": dict(family="vgg", params=14_990_922, test_accuracy=0.7, test_loss=0.7, train_seconds=4000.0,
                  train_images_per_second=40.0, inference_images_per_second=300.0,
                  reference_accuracy=0.93, seed_accuracy=0.78),
}


def write_result_dir(directory, name, values, epochs=2):
    """An evaluate output directory: result.json plus history.csv."""
    os.makedirs(directory)
    result = {
        "format_version": 1,
        "name": name,
        "epochs": epochs,
        "best_validation_accuracy": values["test_accuracy"],
        "best_epoch": epochs,
        "resumed_from_epoch": 0,
        "optimizer_steps": 4 * epochs,
        "steps_per_epoch": 4,
        "images_seen": 64 * epochs,
        "validation_split": "test",
        "dataset": "shapes",
        "workers": 1,
        "test_images": 30,
        "inference_batch_size": 256,
        "config": {"epochs": epochs, "batch_size": 16.0, "optimizer": "adam"},
        "mistakes": [
            {"index": index, "true_class": true, "predicted_class": predicted, "confidence": confidence,
             "true_class_probability": 0.01}
            for index, true, predicted, confidence in MISTAKES
        ],
        "class_names": CLASS_NAMES,
        "confusion_matrix": [[8, 1, 1], [2, 7, 1], [0, 3, 7]],
        "per_class": [
            {"class": class_name, "precision": 0.8, "recall": 0.7, "support": 10} for class_name in CLASS_NAMES
        ],
        **values,
    }
    with open(os.path.join(directory, "result.json"), "w", encoding="utf-8") as file:
        json.dump(result, file)
    # A grey and a white 8x8 RGB thumbnail, in the order of "mistakes".
    thumbnails = np.stack([np.full((8, 8, 3), 128, np.uint8), np.full((8, 8, 3), 255, np.uint8)])
    np.save(os.path.join(directory, MISTAKES_FILE), thumbnails)
    with open(os.path.join(directory, "history.csv"), "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"])
        # Accuracy climbs towards the model's final test accuracy, training a little above validation.
        for epoch in range(1, epochs + 1):
            validation_accuracy = values["test_accuracy"] * epoch / epochs
            writer.writerow([epoch, 2.0 / epoch, min(validation_accuracy + 0.05, 1.0), 2.2 / epoch,
                             validation_accuracy, 0.001 / epoch, 1.5])
    return str(directory)


def write_three_model_report(tmp_path, manifest):
    """Write three result dirs and their report: (summary, output_dir)."""
    result_dirs = [write_result_dir(tmp_path / name, name, values) for name, values in MODEL_VALUES.items()]
    output_dir = tmp_path / "report"
    summary = write_report_files(result_dirs, str(output_dir), manifest, RUN_CONFIG)
    return summary, output_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of three models on a user's own dataset, "pets"."""
    return write_three_model_report(tmp_path_factory.mktemp("report"), MANIFEST)


@pytest.fixture(scope="module")
def cifar_report(tmp_path_factory):
    """The same three models as if trained on CIFAR-10, the dataset of the paper figures."""
    return write_three_model_report(tmp_path_factory.mktemp("cifar"), dataclasses.replace(MANIFEST, name="cifar10"))


def test_writes_the_three_files_and_nothing_temporary(report):
    _, output_dir = report
    assert sorted(os.listdir(output_dir)) == ["report.html", "report.md", "summary.json"]


def test_summary_json_follows_the_design_schema(report):
    summary, output_dir = report
    on_disk = json.loads((output_dir / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["dataset"] == "pets"
    assert on_disk["preset"] == "smoke"
    assert on_disk["num_classes"] == 3
    assert [entry["name"] for entry in on_disk["models"]] == ["resnet20_v1", "vgg16", "lenet5"]
    assert on_disk["best_model"] == "resnet20_v1"
    fixed_fields = ["name", "params", "epochs", "test_accuracy", "test_loss", "train_seconds",
                    "train_images_per_second", "inference_images_per_second", "reference_accuracy"]
    for entry in on_disk["models"]:
        assert set(fixed_fields) <= set(entry)
        values = MODEL_VALUES[entry["name"]]
        for field in fixed_fields[1:]:
            expected = 2 if field == "epochs" else values[field]
            assert entry[field] == expected, (entry["name"], field)
        assert entry["seed_accuracy"] == values["seed_accuracy"]
        assert entry["family"] == values["family"]
        assert entry["reference_gap"] is None and entry["seed_gap"] is None  # pets is not CIFAR-10
    assert on_disk["reference_dataset"] == "cifar10" and on_disk["reference_compared"] is False


def test_html_is_self_contained_with_every_model_and_embedded_plots(report):
    _, output_dir = report
    page = (output_dir / "report.html").read_text()
    for name in MODEL_VALUES:
        assert name in page
    images = re.findall(r'<img (?:class="thumb" )?src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # accuracy/time scatter + validation overview + per model (curves + confusion matrix + 2 thumbnails)
    assert len(images) == 2 + 4 * len(MODEL_VALUES)
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*https?:', page, flags=re.IGNORECASE)
    assert not re.search(r"https?://|url\(|<script|<link", page, flags=re.IGNORECASE)


def comparison_section(output_dir):
    page = (output_dir / "report.html").read_text()
    return page[page.index("<h2>Comparison</h2>"):page.index("<h2>Accuracy against training time</h2>")]


def test_html_shows_comparison_numbers_sorted_by_accuracy(report):
    _, output_dir = report
    comparison = comparison_section(output_dir)
    order = [comparison.index(f'">{name}</a>') for name in ("resnet20_v1", "vgg16", "lenet5")]
    assert order == sorted(order)
    assert "272,474" in comparison and "1 h 06 min" in comparison and "1 min 35 s" in comparison
    assert "32×32×3" in (output_dir / "report.html").read_text()


def test_paper_figures_and_gaps_only_on_the_dataset_they_were_measured_on(report, cifar_report):
    pets = comparison_section(report[1])
    assert "91.25%" not in pets and " pp" not in pets and 'class="negative"' not in pets
    assert "because the paper figures are CIFAR-10 test accuracies and this run is on pets" in pets
    assert "the paper figures are CIFAR-10" in (report[1] / "report.md").read_text()
    summary, output_dir = cifar_report
    cifar = comparison_section(output_dir)
    assert "91.25%" in cifar and "92.16%" in cifar  # resnet20_v1 reference and seed
    assert '<td class="negative">-11.25 pp</td>' in cifar  # 80% against the 91.25% reference
    assert summary["reference_compared"] is True
    assert summary["models"][0]["reference_gap"] == pytest.approx(0.8 - 0.9125)
    assert summary["models"][-1]["reference_gap"] is None  # lenet5 has no paper figure


def test_settings_read_as_a_table_with_whole_numbers(report):
    page = (report[1] / "report.html").read_text()
    assert "<h3>Training recipe</h3>" in page
    for key, shown in (("batch_size", "64"), ("epochs", "3"), ("learning_rate", "0.002"), ("warmup_epochs", "0.5")):
        assert f'<th class="text">{key}</th><td class="text">{shown}</td>' in page
    assert "64.0" not in page and "16.0" not in page and "<pre>" not in page
    assert [format_setting(value) for value in (64.0, 0.5, 5e-05, True, None, [1.0, "a"])] == [
        "64", "0.5", "5e-05", "true", "—", "1, a"]


def test_dataset_facts_name_a_test_split_held_out_by_prep_and_resized_images():
    rows = dict(dataset_rows(dataclasses.replace(MANIFEST, test_held_out_fraction=0.2, resized_images=1234)))
    assert rows["Test split"] == "20% of each class, held out by prep"
    assert rows["Resized images"] == "1,234"
    given = dict(dataset_rows(dataclasses.replace(MANIFEST, test_held_out_fraction=0.0, resized_images=0)))
    assert "Test split" not in given and "Resized images" not in given


def test_each_model_shows_its_most_confident_mistakes_and_confused_pairs(report):
    page = (report[1] / "report.html").read_text()
    galleries = re.findall(r'<div class="gallery">(.*?)</div>', page)
    assert len(galleries) == len(MODEL_VALUES)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", galleries[0])
    assert captions == [
        "true <strong>$bird$</strong><br>predicted <strong>dog &amp; wolf</strong> (97.00%)",
        "true <strong>&lt;b&gt;cat</strong><br>predicted <strong>$bird$</strong> (81.00%)",
    ]
    assert page.count("<h3>Most confused classes</h3>") == len(MODEL_VALUES)
    assert confused_pairs([[8, 1, 1], [2, 7, 1], [0, 3, 7]], ["a", "b", "c"], count=2) == [
        {"true": "c", "predicted": "b", "images": 3, "share": 0.3},
        {"true": "b", "predicted": "a", "images": 2, "share": 0.2},
    ]
    assert confused_pairs([[2, 0], [0, 3]], ["a", "b"]) == []


def test_html_escapes_class_names_from_user_folders(report):
    _, output_dir = report
    page = (output_dir / "report.html").read_text()
    assert "<b>cat" not in page
    assert "&lt;b&gt;cat" in page
    assert "dog &amp; wolf" in page


def test_markdown_has_one_table_row_per_model(report):
    _, output_dir = report
    markdown = (output_dir / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Model")]
    assert [row.split("|")[1].strip() for row in rows] == ["resnet20_v1", "vgg16", "lenet5"]
    assert "80.00%" in rows[0] and "91.25%" not in rows[0]
    assert "data:image" not in markdown
    assert "Best model: **resnet20_v1**" in markdown


def test_each_model_states_its_registry_decision_and_which_split_chose_its_epoch(tmp_path):
    kept = write_result_dir(tmp_path / "lenet5", "lenet5", MODEL_VALUES["lenet5"])
    promotion = {"decision": "kept", "champion_run": "lenet5/nightly-1", "champion_accuracy": 0.62, "wins": 12,
                 "losses": 8, "p_value": 0.2517, "reason": "kept lenet5/nightly-1: <not significant>",
                 "task": {"decision": "not-compared", "champion_run": None, "wins": None, "losses": None,
                          "p_value": None, "reason": "not its architecture's champion"}}
    unpublished = write_result_dir(tmp_path / "resnet20_v1", "resnet20_v1", MODEL_VALUES["resnet20_v1"])
    for directory, fields in ((kept, dict(promotion=promotion, epoch_chosen_by="last", validation_split=None)),
                              (unpublished, dict(epoch_chosen_by="validation", validation_split="validation"))):
        with open(os.path.join(directory, "result.json"), encoding="utf-8") as file:
            result = json.load(file)
        with open(os.path.join(directory, "result.json"), "w", encoding="utf-8") as file:
            json.dump({**result, **fields}, file)
    manifest = dataclasses.replace(MANIFEST, splits={"train": 108, "test": 30, "validation": 12})
    summary = write_report_files([kept, unpublished], str(tmp_path / "out"), manifest, RUN_CONFIG)
    by_name = {entry["name"]: entry for entry in summary["models"]}
    assert by_name["lenet5"]["promotion"] == promotion and by_name["lenet5"]["epoch_chosen_by"] == "last"
    assert "without a validation split" in by_name["lenet5"]["epoch_choice"]
    assert by_name["resnet20_v1"]["promotion"]["decision"] == "not-compared"
    assert "no --registry given" in by_name["resnet20_v1"]["promotion"]["reason"]
    assert by_name["resnet20_v1"]["epoch_chosen_by"] == "validation"
    assert "on 12 training images held out as the validation split" in by_name["resnet20_v1"]["epoch_choice"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<h2>Model registry</h2>" in page and "kept lenet5/nightly-1: &lt;not significant&gt;" in page
    assert "12 / 8" in page and "0.252" in page and "62.00%" in page
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Which epoch each model is" in markdown and "the test split was not looked at" in markdown


def test_empty_result_dirs_raise(tmp_path):
    with pytest.raises(ValueError, match="result_dirs is empty"):
        write_report_files([], str(tmp_path / "out"), MANIFEST, RUN_CONFIG)
    assert not (tmp_path / "out").exists()


def test_missing_result_json_names_the_directory_and_writes_nothing(tmp_path):
    good = write_result_dir(tmp_path / "lenet5", "lenet5", MODEL_VALUES["lenet5"])
    empty = tmp_path / "broken_model"
    empty.mkdir()
    with pytest.raises(ValueError, match="broken_model"):
        write_report_files([good, str(empty)], str(tmp_path / "out"), MANIFEST, RUN_CONFIG)
    assert not (tmp_path / "out" / "report.html").exists()


def test_invalid_result_json_names_the_directory(tmp_path):
    broken = tmp_path / "half_written"
    broken.mkdir()
    (broken / "result.json").write_text('{"name": "lenet5", "test_acc')
    with pytest.raises(ValueError, match="half_written/result.json is not valid JSON"):
        write_report_files([str(broken)], str(tmp_path / "out"), MANIFEST, RUN_CONFIG)


def test_result_json_without_required_fields_is_rejected(tmp_path):
    result_dir = tmp_path / "lenet5"
    result_dir.mkdir()
    (result_dir / "result.json").write_text(json.dumps({"name": "lenet5", "test_accuracy": 0.5}))
    with pytest.raises(ValueError, match="result.json lacks .*params"):
        write_report_files([str(result_dir)], str(tmp_path / "out"), MANIFEST, RUN_CONFIG)


def test_a_single_path_instead_of_a_list_is_rejected(tmp_path):
    result_dir = write_result_dir(tmp_path / "lenet5", "lenet5", MODEL_VALUES["lenet5"])
    with pytest.raises(ValueError, match="wrap it in a list"):
        write_report_files(result_dir, str(tmp_path / "out"), MANIFEST, RUN_CONFIG)


def summary_for(dataset):
    return {"dataset": dataset, "models": [
        {"name": "resnet20_v1", "test_accuracy": 0.9, "reference_accuracy": 0.9125, "params": 272474,
         "train_seconds": 75.0, "train_images_per_second": 310.4},
        {"name": "lenet5", "test_accuracy": 0.5, "reference_accuracy": None, "params": 61706,
         "train_seconds": 4.2, "train_images_per_second": 1900.0},
    ]}


def test_terminal_table_shows_the_paper_figure_only_on_its_dataset():
    cifar = comparison_text_table(summary_for("cifar10")).splitlines()
    assert cifar[0].split() == [
        "model", "test", "acc.", "paper", "ref.", "parameters", "train", "time", "train", "img/s"]
    assert cifar[2].split() == ["resnet20_v1", "90.00%", "91.25%", "272,474", "1:15", "310"]
    assert cifar[3].split() == ["lenet5", "50.00%", "—", "61,706", "4.2", "s", "1,900"]
    digits = comparison_text_table(summary_for("digits")).splitlines()
    assert digits[2].split()[:3] == ["resnet20_v1", "90.00%", "—"]
    assert digits[-1] == (
        "paper ref.: — because the paper figures are CIFAR-10 test accuracies and this run is on digits")
