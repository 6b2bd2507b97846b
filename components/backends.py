"""Which Keras backend a process computes with: "tensorflow" (the default) or "jax".

Keras reads its backend once, from the KERAS_BACKEND environment variable, when it is first
imported, so the choice is made before that, by whoever starts the work: the command line's
`--backend`, a pipeline step's `backend` input, a benchmark. Child processes inherit it.
This module imports nothing heavy; components/keras_setup.py imports Keras on the chosen backend.

    tensorflow  tf.data input pipelines, multi-worker training (MultiWorkerMirroredStrategy);
    jax         one process; the data is read into memory without TensorFlow, which need not be
                installed (the GPU machines carry JAX alone).
"""

from __future__ import annotations

import os
import sys

from components import checks
from components.errors import UserError

BACKENDS = ("tensorflow", "jax")
DEFAULT_BACKEND = "tensorflow"
ENVIRONMENT_VARIABLE = "KERAS_BACKEND"  # Keras' own


def select_backend(name: str) -> None:
    """Makes `name` this process's Keras backend (and that of the processes it starts).

    Call it before Keras is imported; choosing another backend once Keras runs is a bug.
    """
    checks.choice("backend", name, BACKENDS)
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != name:
        raise RuntimeError(f"Keras was imported with the {keras.backend.backend()} backend before {name} was selected")
    os.environ[ENVIRONMENT_VARIABLE] = name


def check_workers(backend: str, workers: int) -> None:
    """Several workers are TensorFlow's (its multi-worker strategy): refused under JAX in one line."""
    if backend == "jax" and workers > 1:
        raise UserError(f"--workers {workers} needs --backend tensorflow: the jax backend trains in one process")


def selected_backend() -> str:
    """The backend Keras runs (or will run) on in this process."""
    return os.environ.get(ENVIRONMENT_VARIABLE) or DEFAULT_BACKEND
