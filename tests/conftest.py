"""Shared pytest fixtures: small generated datasets (see datagen.py), the gs:// emulator (see
gcs_emulator.py), the project image (see docker_image.py); how `make test` splits the suite
between its worker processes (pytest-xdist, `--dist loadscope`)."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of test output

import docker_image  # noqa: E402
from datagen import make_cifar_binary_archive, make_image_folder  # noqa: E402  (after the env var on purpose)

# The gs:// emulator's fixtures (`gcs_emulator`), one process per test session for every module.
pytest_plugins = ["gcs_emulator"]

# Tests of this module whose parameters name a zoo model are grouped per model, so each worker
# builds only the models it was given (once, in test_models' session cache).
ZOO_TEST_MODULE = "test_models.py"
# Modules that run containers of the project image share one work group: the image is built once,
# on the worker that runs them, and test_docker's count of leftover containers sees none of the
# benchmark's.
IMAGE_TEST_MODULES = ("test_docker.py", "test_benchmarks.py")


@pytest.fixture
def image_folder(tmp_path):
    """A small RGB PNG image folder `pets/` (2 classes, 4 train + 2 test images each): (root, arrays written)."""
    root = tmp_path / "pets"
    return str(root), make_image_folder(root)


@pytest.fixture
def cifar_archive(tmp_path):
    """A small CIFAR-10 binary archive (5 x 3 train, 4 test records): (path, arrays written)."""
    path = tmp_path / "cifar-10-binary.tar.gz"
    return str(path), make_cifar_binary_archive(path)


@pytest.fixture(scope="session")
def local_image() -> str:
    """cnnpipe:local built from this working tree, once per test run (per worker under xdist).

    Without a Docker engine (or without root and debootstrap to make the base) the tests that
    need it skip with one line; under CI=true that is a failure, since CI installs and starts the engine.
    """
    reason = docker_image.missing_requirement()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the docker tests to run: {reason}")
        pytest.skip(reason)
    failure = docker_image.build()
    assert not failure, failure
    return docker_image.IMAGE


def pytest_xdist_make_scheduler(config, log):
    """Under `--dist loadscope`: one work group per test module, as loadscope has it (its module and
    session fixtures are set up once, on one worker), with the adjustments of `work_group`."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_group(nodeid)

    return WorkGroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker: the work groups that take longest first, so the workers finish at
    about the same time (`make test` passes --no-loadscope-reorder so that this order is kept)."""
    if not hasattr(config, "workerinput"):
        return
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(work_group(item.nodeid), []).append(item)
    ordered = sorted(groups.items(), key=lambda group: expected_cost_rank(*group))
    items[:] = [item for _, members in ordered for item in members]


def work_group(nodeid: str) -> str:
    """The test module's file name; `test_models.py:<model>` for a test of one zoo model (its
    parameters name the model); `project image` for the modules that run its containers."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    if module in IMAGE_TEST_MODULES:
        return "project image"
    if module == ZOO_TEST_MODULE and nodeid.endswith("]"):
        from components.models import MODELS

        parameters = nodeid[nodeid.index("[") + 1:-1].split("-")
        model = next((name for name in parameters if name in MODELS), None)
        if model:
            return f"{module}:{model}"
    return module


def expected_cost_rank(name: str, members: list) -> tuple:
    """Sort key, longest first: groups with end-to-end tests (marked slow or docker; the more the
    longer), then the zoo models by parameter count (bigger builds take longer; the deepest are
    marked slow too, but a build is shorter than an end-to-end run), then the rest in file order
    (a stable sort keeps it)."""
    if name.startswith(ZOO_TEST_MODULE + ":"):
        from components.models import MODELS

        return (1, -MODELS[name.split(":", 1)[1]].params)
    end_to_end = sum(1 for item in members if item.get_closest_marker("slow") or item.get_closest_marker("docker"))
    if end_to_end:
        return (0, -end_to_end)
    return (2, 0)
