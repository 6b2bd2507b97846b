"""The project image for real (the `local_image` fixture: built here once per test run with
`docker/build-local.sh`, the same script as `make image-local`), then every step run in containers:
the one-step-at-a-time walkthrough of docs/containers.md as written, and `cnnpipe run --runner
docker` for the whole pipeline.

Without a Docker engine (or without root and debootstrap to make the base) these tests skip
with one line; under CI=true that is a failure, since CI installs and starts the engine.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPOSITORY = Path(__file__).resolve().parent.parent
CNNPIPE = str(Path(sys.executable).parent / "cnnpipe")
OTHER_UID = 12345  # an owner who is neither the caller nor the image's 10001


def docker(*arguments: str) -> str:
    return subprocess.run(["docker", *arguments], capture_output=True, text=True, check=True).stdout


def host_pip_values() -> list[str]:
    """The values of this machine's pip settings (paths, index URLs, hosts) that could leak."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = [line.partition("=")[2].strip().strip("'\"") for line in listing.splitlines()]
    return [value for part in values for value in part.split() if len(value) > 4 and not value.isdigit()]


def test_image_holds_no_pip_settings_or_credentials_and_runs_non_root(local_image):
    metadata = docker("history", "--no-trunc", local_image) + docker("inspect", local_image)
    for value in host_pip_values():
        assert value not in metadata, f"the image's metadata names the build machine's pip setting {value}"
    assert "BEGIN CERTIFICATE" not in metadata
    config = json.loads(docker("inspect", local_image))[0]["Config"]
    pip_environment = {line.split("=")[0] for line in config["Env"] if line.startswith("PIP_")}
    assert pip_environment == {"PIP_DISABLE_PIP_VERSION_CHECK"}, "pip settings in the image's environment"
    assert config["User"] == "10001:10001"
    # Nothing of the secrets stayed on the file system either: pip inside knows no settings.
    inside = docker("run", "--rm", "--network", "none", local_image, "bash", "-c",
                    "pip config list | grep -v disable-pip-version-check; ls -A /run/secrets 2>/dev/null; id -u")
    assert inside.split() == ["10001"]


def test_any_uid_gets_a_writable_home_and_a_working_cli(local_image):
    output = docker("run", "--rm", "--network", "none", "--user", f"{OTHER_UID}:{OTHER_UID}", local_image, "bash", "-c",
                    "touch \"$HOME/probe\" && cnnpipe models --json > /dev/null && id -u")
    assert output.split() == [str(OTHER_UID)]


def readme_walkthrough() -> str:
    guide = (REPOSITORY / "docs" / "containers.md").read_text()
    match = re.search(r"<!-- walkthrough[^\n]*-->\n```bash\n(.*?)```", guide, re.DOTALL)
    assert match, "docs/containers.md lost its walkthrough block"
    return match.group(1)


@pytest.mark.slow
def test_readme_walkthrough_runs_each_step_alone_and_training_resumes(local_image, tmp_path):
    work = tmp_path / "work"
    subprocess.run(["docker", "rm", "-f", "cnnpipe-train"], capture_output=True)  # left by an interrupted run
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_walkthrough()], cwd=tmp_path,
                            env={**os.environ, "IMAGE": local_image, "WORK": str(work)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    trained = json.loads((work / "model" / "train_result.json").read_text())
    epochs = int(re.search(r'"epochs": (\d+)', readme_walkthrough()).group(1))
    assert 1 <= trained["resumed_from_epoch"] < epochs, "the rerun did not resume from the killed run's checkpoint"
    assert len((work / "model" / "history.csv").read_text().splitlines()) == 1 + epochs  # header + every epoch once
    assert {"report.html", "report.md", "summary.json"} <= {path.name for path in (work / "report").iterdir()}
    assert {path.stat().st_uid for path in work.rglob("*")} == {os.getuid()}
    assert "cuInit" not in result.stdout + result.stderr, "CUDA probe errors on a machine without a GPU"


def run_pipeline_in_docker(output: Path, image: str) -> subprocess.CompletedProcess:
    """`cnnpipe run --runner docker` on one small model."""
    return subprocess.run(
        [CNNPIPE, "run", "--runner", "docker", "--image", image, "--models", "lenet5", "--epochs", "2",
         "--output", str(output)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=600,
    )


def assert_run_contract(output: Path) -> None:
    for name in ("report.html", "report.md", "summary.json", "models/lenet5/model.keras", "models/lenet5/history.csv"):
        assert (output / name).is_file(), f"{name} missing from a docker run"
    summary = json.loads((output / "summary.json").read_text())
    assert [model["name"] for model in summary["models"]] == ["lenet5"]
    assert summary["models"][0]["epochs"] == 2 and 0.0 <= summary["models"][0]["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_pipeline_in_containers_as_root_writes_the_contract_and_resumes(local_image, tmp_path):
    output = tmp_path / "run"
    first = run_pipeline_in_docker(output, local_image)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert_run_contract(output)
    assert (output / "checkpoints" / "local" / "lenet5" / "state.json").is_file(), "checkpoints stayed in the container"
    assert "cuInit" not in first.stdout + first.stderr + "".join(
        path.read_text(errors="replace") for path in (output / "logs").rglob("*") if path.is_file())
    # The same command again: training finds its finished checkpoint outside the containers.
    again = run_pipeline_in_docker(output, local_image)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    results = [json.loads(path.read_text()) for path in (output / "pipeline").rglob("train_result.json")]
    assert sorted(result["resumed_from_epoch"] for result in results) == [0, 2]


@pytest.mark.slow
def test_pipeline_into_an_output_directory_of_another_user(local_image, tmp_path):
    """An output directory that belongs to someone else (a shared or mounted folder): the steps
    still write into it, and what they write belongs to the caller, not to the image's user."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, OTHER_UID, OTHER_UID)
    result = run_pipeline_in_docker(shared / "run", local_image)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert_run_contract(shared / "run")
    owners = {(path.stat().st_uid, path.stat().st_gid) for path in (shared / "run").rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}


@pytest.mark.slow
def test_a_step_failing_in_its_container_fails_the_run(local_image, tmp_path):
    """A broken image in the dataset stops prep inside its container at once; the run must
    report that step as failed (with its one-line cause), not carry on as if it succeeded."""
    from datagen import make_image_folder

    make_image_folder(tmp_path / "data", per_class=(3, 2), size=(8, 8))
    (tmp_path / "data" / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    result = subprocess.run(
        [CNNPIPE, "run", "--runner", "docker", "--image", local_image, "--dataset", str(tmp_path / "data"),
         "--models", "lenet5", "--epochs", "1", "--output", str(tmp_path / "run")],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, (result.stdout + result.stderr)[-4000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "broken.png" in last_line and "prepare-data" in last_line
    assert not (tmp_path / "run" / "report.html").exists()
    assert not docker("ps", "-aq", "--filter", f"ancestor={local_image}").strip()  # no container left behind
