"""The pipeline with every path on gs://, against the real GCS emulator process.

Dataset, checkpoints and the model registry live in the emulator's bucket; the steps run in the
real KFP local runner's subprocesses, which inherit ``STORAGE_EMULATOR_HOST``.
"""

import json

import pytest

from components import registry, storage
from components.checkpoints import load as load_checkpoint
from components.train import train
from datagen import make_image_folder
from pipeline.cli import main
from test_train import StopBeforeEpoch, quick_config, write_dataset

pytestmark = pytest.mark.slow


def run(*args):
    return main(["run", "--models", "lenet5", "--batch-size", "8", *args])


def test_gcs_dataset_checkpoints_and_registry_end_to_end(gcs_emulator, tmp_path, capsys):
    make_image_folder(tmp_path / "shapes", classes=("circle", "square", "star"), per_class=(6, 3), size=(12, 12))
    storage.upload_tree(str(tmp_path / "shapes"), gcs_emulator.url("data/shapes"))
    locations = [
        "--dataset", gcs_emulator.url("data/shapes"),
        "--checkpoint-root", gcs_emulator.url("checkpoints"),
        "--registry", gcs_emulator.url("registry"),
        "--output", str(tmp_path / "run"),
    ]

    assert run("--epochs", "1", *locations) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["dataset"] == "shapes" and summary["num_classes"] == 3
    assert storage.read_json(gcs_emulator.url("checkpoints/local/lenet5/state.json"))["epoch"] == 1
    (lineage,) = registry.list_registry(gcs_emulator.url("registry"))
    champion = lineage["models"]["lenet5"]["champion"]
    assert lineage["reference"].startswith("shapes/") and registry.is_complete(champion["uri"])
    published = set(storage.list_files(champion["uri"]))
    assert {"model.keras", "history.csv", "result.json", "manifest.json", "correctness.json",
            "saved_model/saved_model.pb"} <= published
    assert summary["models"][0]["promotion"]["decision"] == "first"
    assert "first model on this test set" in (tmp_path / "run" / "report.html").read_text()

    # The same command again (a rerun after a kill that came once the model was published): the
    # registry holds this data and recipe, so nothing trains, and the report says where it stands.
    assert run("--epochs", "1", *locations) == 0
    again = json.loads((tmp_path / "run" / "summary.json").read_text())["models"][0]
    assert again["unchanged_since"] == champion["run_id"] and again["promotion"]["decision"] == "not-compared"
    assert again["promotion"]["reason"].endswith("; it is its architecture's champion")

    # One more epoch: training resumes from the gs:// checkpoint and publishes a second version,
    # which the registry promotes only on a significant win over the first on the same 9 test images.
    assert run("--epochs", "2", *locations) == 0
    history = (tmp_path / "run" / "models" / "lenet5" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2
    assert "resuming lenet5 from gs://" in (tmp_path / "run" / "logs" / "train-model-lenet5.log").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    decision = summary["models"][0]["promotion"]
    assert decision["champion_run"] == f"lenet5/{champion['run_id']}" and decision["wins"] + decision["losses"] <= 9
    significant_win = decision["p_value"] <= 0.05 and decision["wins"] > decision["losses"]
    assert decision["decision"] == ("promoted" if significant_win else "kept")
    assert len(registry.list_registry(gcs_emulator.url("registry"))[0]["models"]["lenet5"]["versions"]) == 2

    # Another recipe under the same checkpoint location is refused, not silently resumed.
    assert run("--epochs", "2", "--learning-rate", "0.05", *locations) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: the pipeline step 'train-model-lenet5' failed")
    assert "different configuration" in last_line and "train-model-lenet5.log" in last_line


def test_interrupted_training_resumes_from_gcs_checkpoint(gcs_emulator, tmp_path):
    dataset = write_dataset(tmp_path / "dataset")
    checkpoint_uri = gcs_emulator.url("checkpoints/run/lenet5")
    config = quick_config(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(dataset, "lenet5", str(tmp_path / "first"), config, checkpoint_uri, callbacks=[StopBeforeEpoch(1)])
    state = storage.read_json(storage.join(checkpoint_uri, "state.json"))
    assert state["epoch"] == 1
    assert set(storage.list_files(checkpoint_uri)) == {"state.json", state["checkpoint"], state["best_checkpoint"]}

    result = train(dataset, "lenet5", str(tmp_path / "second"), config, checkpoint_uri)
    assert result.resumed_from_epoch == 1 and result.epochs == 2
    assert storage.read_json(storage.join(checkpoint_uri, "state.json"))["epoch"] == 2
    assert load_checkpoint(str(tmp_path / "second")) is None  # the local mirror is scratch, not output
