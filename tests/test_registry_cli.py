"""`cnnpipe registry list|show|promote|pin|unpin` on a local registry and on the GCS emulator."""

import json

import pytest

from components import registry
from pipeline.cli import main
from test_registry import BASE_CORRECT, MODEL, OTHER_TASK, TASK, changed, publish


def populate(root, tmp_path):
    """Two versions of one architecture on one test set and one on another test set."""
    publish(root, tmp_path, "run-1", BASE_CORRECT)
    publish(root, tmp_path, "run-2", changed(BASE_CORRECT, wins=60))
    publish(root, tmp_path, "run-1", BASE_CORRECT, task=OTHER_TASK)
    return root


@pytest.fixture(params=["gcs", "local"])
def populated(request, tmp_path):
    """A populated registry in the emulator's bucket or in a local directory."""
    if request.param == "gcs":
        return populate(request.getfixturevalue("gcs_emulator").url("cli-models"), tmp_path)
    return populate(str(tmp_path / "models"), tmp_path)


def cnnpipe(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_names_each_test_set_its_champions_and_versions(populated, capsys):
    code, out, _ = cnnpipe(capsys, "registry", "list", "--registry", populated)
    assert code == 0
    assert f"digits/{TASK.lineage}: 1,000 test images, 10 classes (0, 1, 2, 3, 4, ...)" in out
    assert f"digits/{OTHER_TASK.lineage}:" in out
    assert f"task champion (serving): {MODEL}/run-2 (86.00%, promoted)" in out
    assert f"digits/{TASK.lineage}/{MODEL}/run-2  86.00%" in out
    code, out, _ = cnnpipe(capsys, "registry", "list", "--registry", populated, "--json")
    listed = json.loads(out)
    assert [entry["models"][MODEL]["champion"]["run_id"] for entry in listed] == ["run-2", "run-1"]


def test_show_prints_a_version_and_a_lineage(populated, capsys):
    code, out, _ = cnnpipe(capsys, "registry", "show", "--registry", populated, f"digits/{TASK.lineage}/{MODEL}/run-1")
    shown = json.loads(out)
    assert code == 0 and shown["result"]["test_accuracy"] == 0.8 and shown["record"]["test_identity"] == TASK.test_identity
    code, out, _ = cnnpipe(capsys, "registry", "show", "--registry", populated, f"digits/{TASK.lineage}")
    assert json.loads(out)["champion"]["run_id"] == "run-2"


def test_a_pinned_rollback_survives_a_better_run_until_unpinned(populated, tmp_path, capsys):
    old = f"digits/{TASK.lineage}/{MODEL}/run-1"
    code, out, _ = cnnpipe(capsys, "registry", "pin", "--registry", populated, old, "--note", "rollback")
    assert code == 0 and out.startswith(f"pinned {old}")
    better = publish(populated, tmp_path, "run-3", changed(BASE_CORRECT, wins=120))
    assert better["decision"] == "kept" and "pinned" in better["reason"]
    assert registry.read_champion(populated, TASK)["run_id"] == "run-1"
    code, out, _ = cnnpipe(capsys, "registry", "list", "--registry", populated)
    assert f"{MODEL}/run-1 (80.00%, pinned), pinned since" in out and ": rollback" in out

    code, _, err = cnnpipe(capsys, "registry", "promote", "--registry", populated, f"digits/{TASK.lineage}/{MODEL}/run-3")
    assert code == 2 and err.strip() == (
        f"error: {populated}/digits/{TASK.lineage}/{MODEL}/champion.json is pinned to {MODEL}/run-1; "
        "`cnnpipe registry unpin` it first")
    assert cnnpipe(capsys, "registry", "unpin", "--registry", populated, old)[0] == 0
    assert publish(populated, tmp_path, "run-4", changed(BASE_CORRECT, wins=120))["decision"] == "promoted"
    assert registry.read_champion(populated, TASK)["run_id"] == "run-4"


def test_promote_by_hand_moves_both_pointers(populated, capsys):
    code, _, _ = cnnpipe(capsys, "registry", "promote", "--registry", populated, f"digits/{TASK.lineage}/{MODEL}/run-1")
    assert code == 0
    for champion in (registry.read_champion(populated, TASK, MODEL), registry.read_champion(populated, TASK)):
        assert champion["run_id"] == "run-1" and champion["how"] == "manual" and not champion["pinned"]
        assert champion["previous"]["run_id"] == "run-2"


@pytest.mark.parametrize("arguments, message", [
    (("pin", "digits/run-1"), "version 'digits/run-1' is not <dataset>/<lineage>/<model>/<run id>"),
    (("pin", "digits/0000000000000000/lenet5/run-9"), "no complete version digits/0000000000000000/lenet5/run-9"),
    (("unpin", f"digits/{TASK.lineage}/{MODEL}/run-1"), f"no pointer is pinned to digits/{TASK.lineage}/{MODEL}/run-1"),
    (("show", "digits/0000000000000000"), "no lineage digits/0000000000000000"),
])
def test_mistakes_are_one_line_errors(tmp_path, capsys, arguments, message):
    action, reference = arguments
    root = populate(str(tmp_path / "models"), tmp_path)
    code, out, err = cnnpipe(capsys, "registry", action, "--registry", root, reference)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1 and message in err
