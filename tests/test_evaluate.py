"""Evaluation step: metrics helpers, and a real evaluation of a briefly trained lenet5."""

import json
import math
import os

import numpy as np
import pytest

from components.dataset import load_split
from components.evaluate import (
    confident_mistakes,
    confusion_matrix,
    cross_entropy,
    evaluate,
    per_class_metrics,
    thumbnail,
)
from components.errors import UserError
from components.keras_setup import keras
from components.artifacts import MISTAKES_FILE
from components.models import MODELS
from components.train import train
from test_train import TINY_CLASSES, quick_config, write_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset_dir, model_dir) of a one-epoch lenet5 run on the tiny dataset."""
    root = tmp_path_factory.mktemp("evaluate")
    dataset_dir = write_dataset(root / "dataset")
    model_dir = str(root / "model")
    train(dataset_dir, "lenet5", model_dir, quick_config(epochs=1))
    return dataset_dir, model_dir


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    matrix = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


def test_per_class_metrics_and_never_predicted_class():
    metrics = per_class_metrics(np.array([[2, 0], [1, 0]]), ["a", "b"])
    assert metrics == [
        {"class": "a", "precision": pytest.approx(2 / 3), "recall": 1.0, "support": 2},
        {"class": "b", "precision": 0.0, "recall": 0.0, "support": 1},
    ]


def test_cross_entropy_is_the_mean_negative_log_of_the_true_class_and_finite_for_zero():
    probabilities = np.array([[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]])
    expected = -(math.log(0.5) + math.log(0.1) + math.log(1e-7)) / 3
    assert cross_entropy(probabilities, np.array([0, 1, 1])) == pytest.approx(expected)


def test_evaluate_writes_result_with_metrics_consistent_with_the_model(trained, tmp_path):
    dataset_dir, model_dir = trained
    output_dir = str(tmp_path / "evaluation")
    result = evaluate(dataset_dir, model_dir, output_dir, batch_size=5)
    with open(os.path.join(output_dir, "result.json")) as result_file:
        assert json.load(result_file) == result.to_dict()
    with open(os.path.join(model_dir, "history.csv")) as original, open(os.path.join(output_dir, "history.csv")) as copied:
        assert copied.read() == original.read()
    with open(os.path.join(model_dir, "train_result.json")) as train_result_file:
        train_result = json.load(train_result_file)
    assert {key: result.to_dict()[key] for key in train_result} == train_result

    images, labels = load_split(dataset_dir, "test")
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    probabilities = model.predict(images.astype(np.float32), verbose=0)
    assert 0 <= result.test_accuracy <= 1
    assert result.test_accuracy == pytest.approx(np.mean(probabilities.argmax(axis=1) == labels))
    expected_loss = keras.losses.CategoricalCrossentropy()(keras.utils.to_categorical(labels, TINY_CLASSES), probabilities)
    assert result.test_loss == pytest.approx(float(expected_loss), rel=1e-4)

    confusion = np.array(result.confusion_matrix)
    assert confusion.shape == (TINY_CLASSES, TINY_CLASSES) and confusion.sum() == len(labels) == result.test_images
    assert np.trace(confusion) / confusion.sum() == pytest.approx(result.test_accuracy)
    assert [row["support"] for row in result.per_class] == np.bincount(labels).tolist()
    assert [row["class"] for row in result.per_class] == result.class_names == ["class0", "class1", "class2"]
    assert result.inference_images_per_second > 0
    spec = MODELS["lenet5"]
    assert (result.reference_accuracy, result.seed_accuracy) == (spec.reference_accuracy, spec.seed_accuracy)

    predictions = probabilities.argmax(axis=1)
    wrong = int(np.sum(predictions != labels))
    assert len(result.mistakes) == min(wrong, 12)
    for mistake in result.mistakes:
        assert mistake["true_class"] == labels[mistake["index"]] != mistake["predicted_class"]
        assert mistake["confidence"] == pytest.approx(float(probabilities[mistake["index"]].max()), rel=1e-4)
    thumbnails = np.load(os.path.join(output_dir, MISTAKES_FILE))
    assert thumbnails.dtype == np.uint8 and len(thumbnails) == len(result.mistakes)
    for mistake, picture in zip(result.mistakes, thumbnails):
        np.testing.assert_array_equal(picture, images[mistake["index"]])


def test_confident_mistakes_are_the_wrong_predictions_most_confident_first():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    mistakes = confident_mistakes(probabilities, np.array([1, 1, 0, 0, 0]), count=2)
    assert [(item["index"], item["true_class"], item["predicted_class"]) for item in mistakes] == [(0, 1, 0), (4, 0, 1)]
    assert mistakes[0]["confidence"] == 0.9 and mistakes[0]["true_class_probability"] == pytest.approx(0.1)
    assert confident_mistakes(probabilities, probabilities.argmax(axis=1), count=5) == []


def test_thumbnails_keep_small_images_and_shrink_large_ones():
    large = np.arange(200 * 130 * 3, dtype=np.uint8).reshape(200, 130, 3)
    assert thumbnail(large, max_size=64).shape == (50, 33, 3)
    np.testing.assert_array_equal(thumbnail(large, max_size=64), large[::4, ::4])
    assert thumbnail(np.zeros((8, 8, 1)), max_size=64).shape == (8, 8, 1)


def test_evaluate_refuses_a_directory_without_a_trained_model(trained, tmp_path):
    dataset_dir, _ = trained
    with pytest.raises(UserError, match="no model.keras in .*; pass the training step's output directory"):
        evaluate(dataset_dir, str(tmp_path), str(tmp_path / "evaluation"))
    assert not os.path.exists(tmp_path / "evaluation")


def test_evaluate_rejects_a_bad_batch_size(trained, tmp_path):
    dataset_dir, model_dir = trained
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        evaluate(dataset_dir, model_dir, str(tmp_path / "evaluation"), batch_size=0)


def test_a_class_without_test_images_has_no_recall_and_says_so(caplog):
    import numpy as np

    from components.evaluate import per_class_metrics

    confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # nothing of class "c" in the test split
    rows = per_class_metrics(confusion, ["a", "b", "c"])
    assert rows[2] == {"class": "c", "precision": 0.0, "recall": None, "support": 0, "note": "no test images"}
    assert rows[0]["recall"] == 0.75 and "note" not in rows[0]
    assert "class c has no test images" in caplog.text


def test_images_at_picks_streamed_images_in_the_order_asked(tmp_path):
    import numpy as np

    from components.dataset import open_dataset
    from components.evaluate import images_at

    dataset = write_dataset(tmp_path / "dataset", test_count=12)
    images, _ = load_split(dataset, "test")
    picked = images_at(open_dataset(dataset), "test", [11, 0, 5])
    np.testing.assert_array_equal(picked, images[[11, 0, 5]])
    assert images_at(open_dataset(dataset), "test", []).shape == (0, *images.shape[1:])
