"""Containers: image build time (cold, cached), image sizes, container start-up cost per step, and
the smoke pipeline's wall time with --runner docker beside --runner subprocess, in one run.

    python benchmarks/containers.py              # all figures; needs root, debootstrap, a Docker engine
    python benchmarks/containers.py --tiny       # start-up only, if cnnpipe:local exists (else says why)

The cold build removes cnnpipe:local, the Debian base and the engine's build cache first, so it
counts the debootstrap base, downloading every wheel and exporting the layers. Runs of the two
runners alternate, so a busy moment of a shared machine does not favour one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

NAME = "containers"
IMAGE = "cnnpipe:local"
BASE = "cnnpipe-base:bookworm"
BUILD = [os.path.join(common.REPOSITORY_ROOT, "docker", "build-local.sh"), IMAGE]
CNNPIPE = os.path.join(os.path.dirname(sys.executable), "cnnpipe")


def timed(command: list[str], **options) -> float:
    """Seconds one command takes; its output is kept out of the way unless it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, **options)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return seconds


def image_megabytes(*images: str) -> dict[str, float]:
    """Size of each image that exists here, in MB (10^6 bytes, as `docker images` counts)."""
    sizes = {}
    for image in images:
        found = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True)
        if found.returncode == 0:
            sizes[image] = int(found.stdout) / 1e6
    return sizes


def build_times() -> dict:
    """Cold (the debootstrap base included) and cached (nothing changed: every layer reused)."""
    subprocess.run(["docker", "rmi", "-f", IMAGE, BASE], capture_output=True)
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True)
    environment = {**os.environ, "PYTHON": sys.executable}
    common.progress("cold build (base + image)")
    cold = timed(BUILD, cwd=common.REPOSITORY_ROOT, env=environment)
    common.progress("cached build")
    cached = timed(BUILD, cwd=common.REPOSITORY_ROOT, env=environment)
    return {"cold_build_seconds": cold, "cached_build_seconds": cached}


def startup_costs(repeats: int) -> dict:
    """docker run of a no-op, and of a step's imports in a container beside the same imports here."""
    run = ["docker", "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}", IMAGE]
    imports = ["python", "-c", "import components.keras_setup"]
    empty, inside, here = [], [], []
    for repeat in range(repeats):
        common.progress(f"start-up, repeat {repeat + 1}/{repeats}")
        empty.append(timed([*run, "true"]))
        inside.append(timed([*run, *imports]))
        here.append(timed([sys.executable, *imports[1:]], cwd=common.REPOSITORY_ROOT))
    return {
        "empty_container_seconds": common.median(empty),
        "step_imports_in_container_seconds": common.median(inside),
        "step_imports_on_host_seconds": common.median(here),
        "container_cost_per_step_seconds": common.median(inside) - common.median(here),
    }


def pipeline_times(repeats: int) -> dict:
    """Wall time of `cnnpipe run` (smoke preset) with each runner, the two taking turns."""
    seconds: dict[str, list[float]] = {"subprocess": [], "docker": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            for runner in ("docker", "subprocess"):
                common.progress(f"smoke pipeline, --runner {runner}, repeat {repeat + 1}/{repeats}")
                extra = ["--image", IMAGE] if runner == "docker" else []
                output = os.path.join(scratch, f"{runner}-{repeat}")
                seconds[runner].append(timed([CNNPIPE, "run", "--runner", runner, *extra, "--output", output],
                                             cwd=common.REPOSITORY_ROOT))
                shutil.rmtree(output)
    return {f"smoke_pipeline_{runner}_seconds": common.median(values) for runner, values in seconds.items()} | {
        f"smoke_pipeline_{runner}_each": values for runner, values in seconds.items()
    }


def missing_requirement() -> str:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers"
    return ""


def main() -> None:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0])
    load_average_at_start = os.getloadavg()[0]
    result: dict = {"benchmark": NAME, "tiny": arguments.tiny, "repeats": arguments.repeats}
    reason = missing_requirement()
    if not reason and arguments.tiny and subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        reason = f"{IMAGE} is not built (make image-local)"
    if reason:
        result |= {"skipped": reason, "ratio": float("nan")}
    else:
        if not arguments.tiny:
            result |= build_times()
        result |= {"image_megabytes": image_megabytes(IMAGE, BASE),
                   "gpu_base": "tensorflow/tensorflow:2.21.0-gpu cannot be pulled here (no container registry reachable)"}
        result |= startup_costs(arguments.repeats)
        result["ratio"] = result["step_imports_in_container_seconds"] / result["step_imports_on_host_seconds"]
        if not arguments.tiny:
            result |= pipeline_times(arguments.repeats)
    result["machine"] = common.machine_description(load_average_at_start)
    common.write_result(arguments.output, result)


if __name__ == "__main__":
    main()
