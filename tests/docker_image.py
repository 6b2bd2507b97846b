"""The project image for the tests: whether it can be built here, and its build.

Built with `docker/build-local.sh`, the same script as `make image-local`: a Debian base made with
debootstrap (once per machine), then docker/Dockerfile on it (layers cached between runs). The
`local_image` fixture in conftest.py builds it once per test run.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

IMAGE = "cnnpipe:local"
REPOSITORY = Path(__file__).resolve().parent.parent


def missing_requirement() -> str:
    """Why the image cannot be built and run here, or '' when it can."""
    import docker

    try:
        docker.from_env(timeout=5).ping()
    except Exception as error:  # the SDK raises several types for "no engine"
        return f"no Docker engine answers ({type(error).__name__}); start dockerd to run the docker tests"
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        return "building the image's Debian base needs root and debootstrap"
    return ""


def build() -> str:
    """Builds IMAGE from this working tree; the build's last output lines if it fails, else ''."""
    result = subprocess.run(
        [str(REPOSITORY / "docker" / "build-local.sh"), IMAGE], cwd=REPOSITORY,
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
    )
    return "" if result.returncode == 0 else (result.stdout + result.stderr)[-4000:]
