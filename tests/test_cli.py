"""The `cnnpipe` command as a user meets it: help, listings, and one-line errors for mistakes."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from datagen import make_image_folder


def cnnpipe(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_every_command():
    result = cnnpipe("--help")
    assert result.returncode == 0
    for command in ("run", "models", "presets", "component"):
        assert command in result.stdout


@pytest.mark.parametrize("command", [["run"], ["component", "train"], ["component", "prepare"]])
def test_each_command_explains_its_options(command):
    result = cnnpipe(*command, "--help")
    assert result.returncode == 0
    assert "--" in result.stdout and "usage:" in result.stdout


def test_presets_lists_the_three_recipes():
    result = cnnpipe("presets")
    assert result.returncode == 0
    for name in ("smoke:", "seed:", "fast:"):
        assert name in result.stdout


def test_unknown_model_is_one_line_error():
    assert_one_line_error(cnnpipe("run", "--models", "lenet5,resnet21"), "resnet21", "cnnpipe models")


def test_missing_dataset_path_is_one_line_error(tmp_path):
    assert_one_line_error(cnnpipe("run", "--dataset", str(tmp_path / "nowhere")), "nowhere")


def test_empty_dataset_is_one_line_error(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    assert_one_line_error(cnnpipe("run", "--dataset", str(tmp_path / "empty"), "--output", str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_epochs_below_one_is_one_line_error(epochs):
    assert_one_line_error(cnnpipe("run", "--epochs", epochs), "epochs")


def test_unknown_preset_is_one_line_error():
    assert_one_line_error(cnnpipe("run", "--preset", "turbo"), "turbo")


def test_corrupt_image_fails_in_prep_with_one_line(tmp_path):
    """A broken file is found by the prep step inside the pipeline: the run stops with one line."""
    make_image_folder(tmp_path / "data", per_class=(3, 2), size=(8, 8))
    (tmp_path / "data" / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    result = cnnpipe("run", "--dataset", str(tmp_path / "data"), "--models", "lenet5", "--epochs", "1",
                     "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "broken.png" in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "out" / "report.html").exists()


def test_docker_runner_without_engine_is_one_line_error(tmp_path):
    """No Docker engine runs here: the run stops before any step, naming the fix."""
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--runner", "docker", "--image", "cnnpipe:test",
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:9"},  # a closed port: nothing answers
    )
    assert_one_line_error(result, "no Docker engine answers", "--runner subprocess")
    assert not (tmp_path / "out").exists()


def test_docker_runner_passes_gpus_through():
    from kfp import local

    from pipeline.local_run import docker_run_arguments

    arguments = docker_run_arguments(gpus=True)
    [request] = arguments["device_requests"]
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    assert "device_requests" not in docker_run_arguments(gpus=False)
    local.DockerRunner(**arguments)  # the runner accepts them as `docker run` arguments


def test_image_and_gpus_need_the_docker_runner():
    assert_one_line_error(cnnpipe("run", "--gpus"), "--runner docker")


def test_compile_sets_placement_and_preset_defaults(tmp_path):
    package = tmp_path / "pipeline.yaml"
    result = cnnpipe(
        "compile", "--output", str(package), "--image", "registry.example/cnnpipe:1", "--gpu-type", "nvidia-tesla-t4",
        "--spot", "--preset", "seed", "--models", "resnet20_v1,resnet56_v1", "--registry", "gs://bucket/models",
    )
    assert result.returncode == 0, result.stderr
    assert "nvidia-tesla-t4" in result.stdout
    spec, platform = list(yaml.safe_load_all(package.read_text()))
    defaults = {name: value.get("defaultValue") for name, value in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["models"] == ["resnet20_v1", "resnet56_v1"]
    assert defaults["train_config"]["epochs"] == 200 and defaults["train_config"]["schedule"] == "step"
    assert defaults["registry"] == "gs://bucket/models" and defaults["preset"] == "seed"
    images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/cnnpipe:1"}
    assert "nvidia-tesla-t4" in yaml.safe_dump(platform)


def test_submit_refuses_unknown_parameter_before_connecting(tmp_path):
    package = tmp_path / "pipeline.yaml"
    assert cnnpipe("compile", "--output", str(package)).returncode == 0
    result = cnnpipe("submit", "--host", "http://127.0.0.1:9", "--package", str(package), "--param", "epochs=3")
    assert_one_line_error(result, "unknown pipeline parameter 'epochs'", "train_config")


def test_schedule_refuses_five_field_cron():
    result = cnnpipe("schedule", "--host", "http://127.0.0.1:9", "--name", "nightly", "--cron", "0 2 * * *")
    assert_one_line_error(result, "6 fields")


def test_compile_pins_an_image_given_by_digest_and_names_the_workers_namespace(tmp_path):
    package = tmp_path / "pipeline.yaml"
    image = "registry.example/cnnpipe@sha256:" + "ab" * 32
    result = cnnpipe("compile", "--output", str(package), "--image", image, "--worker-namespace", "ml-workers")
    assert result.returncode == 0, result.stderr
    spec, _ = list(yaml.safe_load_all(package.read_text()))
    assert {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()} == {image}
    tasks = [task for component in spec["components"].values() for task in component.get("dag", {}).get("tasks", {}).values()]
    worker_settings = [json.loads(task["inputs"]["parameters"]["cluster_placement"]["runtimeValue"]["constant"])
                       for task in tasks if "cluster_placement" in task.get("inputs", {}).get("parameters", {})]
    assert worker_settings and {(settings["namespace"], settings["image"]) for settings in worker_settings} == {
        ("ml-workers", image)}


def test_compile_refuses_a_digest_that_is_not_sha256():
    assert_one_line_error(cnnpipe("compile", "--image", "registry.example/cnnpipe@sha256:abc"),
                          "names a digest that is not sha256:<64 hex digits>")
