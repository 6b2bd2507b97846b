"""The registry's rules through `cnnpipe run` and `cnnpipe registry`: real pipelines (kfp.local),
real Keras training, a local registry and one on the GCS emulator.

A nightly on unchanged data retrains nothing; the champion's recipe trained again is not promoted;
a clearly better model is; a pin survives a better run; two folders with one basename never share a
champion.
"""

import json

import pytest

from components import registry, storage
from datagen import make_digits_folder, make_image_folder
from pipeline.cli import main

pytestmark = pytest.mark.slow

# Weak: one epoch of large batches at the default learning rate. Strong: ten epochs at five times
# that rate.
WEAK = ("--epochs", "1", "--batch-size", "64")
STRONG = ("--epochs", "10", "--batch-size", "32", "--learning-rate", "0.01")
ALPHA = 0.05  # `cnnpipe run --promotion-alpha`'s default


def run(output, registry_root, dataset, *flags, model="inception10"):
    """`cnnpipe run` of one model; returns its summary entry."""
    code = main(["run", "--dataset", str(dataset), "--models", model, "--registry", registry_root,
                 "--output", str(output), *flags])
    assert code == 0
    return json.loads((output / "summary.json").read_text())["models"][0]


def test_pins_significance_and_reuse_through_the_cli_and_the_pipeline(tmp_path, capsys):
    make_digits_folder(tmp_path / "digits")
    root = str(tmp_path / "models")

    weak = run(tmp_path / "weak", root, tmp_path / "digits", *WEAK)
    assert weak["promotion"]["decision"] == "first" and weak["epoch_chosen_by"] == "validation"
    (lineage,) = registry.list_registry(root)
    weak_version = lineage["models"]["inception10"]["versions"][0]["reference"]

    assert main(["registry", "pin", "--registry", root, weak_version, "--note", "rollback"]) == 0
    pinned = run(tmp_path / "pinned", root, tmp_path / "digits", *STRONG)
    assert pinned["promotion"]["decision"] == "kept" and "pinned" in pinned["promotion"]["reason"]
    assert pinned["promotion"]["p_value"] < 0.001  # a clear win, and still the pin holds
    assert main(["registry", "unpin", "--registry", root, weak_version]) == 0

    better = run(tmp_path / "better", root, tmp_path / "digits", *STRONG, "--seed", "1")
    assert better["promotion"]["decision"] == "promoted" and better["promotion"]["p_value"] < 0.001
    assert better["promotion"]["task"]["decision"] == "promoted"
    assert "inception10: promoted — against inception10/" in (tmp_path / "better" / "report.md").read_text()

    # The nightly on unchanged data and recipe: nothing is trained, evaluated or published.
    unchanged = run(tmp_path / "unchanged", root, tmp_path / "digits", *STRONG)
    pinned_run = pinned["promotion"]["version_uri"].rsplit("/", 1)[-1]
    assert unchanged["promotion"]["decision"] == "not-compared" and unchanged["unchanged_since"] == pinned_run
    assert unchanged["test_accuracy"] == pinned["test_accuracy"]
    assert f"unchanged since {pinned_run}" in (tmp_path / "unchanged" / "report.md").read_text()
    better_version = "inception10/" + better["promotion"]["version_uri"].rsplit("/", 1)[-1]
    assert unchanged["promotion"]["reason"].endswith(f"; its architecture's champion is {better_version}")
    assert not (tmp_path / "unchanged" / "checkpoints").exists()  # no epoch ran
    assert len(registry.list_registry(root)[0]["models"]["inception10"]["versions"]) == 3

    # The champion's own data, recipe and seed trained again: no significant win, so the champion
    # stays. (Whether a run that differs only in its seed wins depends on how far that seed's model
    # gets, which differs between CPUs; McNemar judges the two models, not the seeds.)
    retrained = run(tmp_path / "retrained", root, tmp_path / "digits", *STRONG, "--seed", "1", "--retrain")
    promotion = retrained["promotion"]
    assert promotion["decision"] == "kept" and promotion["p_value"] > ALPHA, promotion
    champion = registry.read_champion(root, registry.Task(**{
        key: value for key, value in lineage["lineage"].items() if key != "created_at"}))
    assert champion["uri"] == better["promotion"]["version_uri"]
    printed = capsys.readouterr().out
    assert f"pinned {weak_version}" in printed and f"unpinned {weak_version}" in printed
    assert "Against champion" in printed  # `cnnpipe run` prints the registry's decisions under its table


def test_two_folders_with_one_basename_never_share_a_champion(gcs_emulator, tmp_path):
    root = gcs_emulator.url("registry")
    for bucket_folder, seed in (("a", 0), ("b", 1)):
        make_image_folder(tmp_path / bucket_folder / "images", per_class=(4, 3), size=(8, 8), seed=seed)
        storage.upload_tree(str(tmp_path / bucket_folder / "images"), gcs_emulator.url(f"{bucket_folder}/images"))
    entries = [
        run(tmp_path / f"run-{folder}", root, gcs_emulator.url(f"{folder}/images"), "--epochs", "1",
            "--validation-fraction", "0", model="lenet5")
        for folder in ("a", "b")
    ]
    assert [entry["promotion"]["decision"] for entry in entries] == ["first", "first"]
    assert all(entry["epoch_chosen_by"] == "last" for entry in entries)
    lineages = registry.list_registry(root)
    assert [entry["lineage"]["dataset"] for entry in lineages] == ["images", "images"]
    assert len({entry["reference"] for entry in lineages}) == 2
    assert {entry["champion"]["uri"] for entry in lineages} == {entry["promotion"]["version_uri"] for entry in entries}
    report = (tmp_path / "run-b" / "report.md").read_text()
    assert "first model on this test set" in report and "without a validation split" in report
    assert f"images has versions on 1 other test set ({lineages[0]['reference'].split('/')[1]}" in report \
        or f"images has versions on 1 other test set ({lineages[1]['reference'].split('/')[1]}" in report
