"""Keras on the chosen backend, imported once for the whole process: quietly, and without the
extras Keras would load for nothing.

The backend ("tensorflow", the default, or "jax") is chosen per process before this module is
imported (components/backends.py). Under JAX, TensorFlow is never imported by this module: `tf`
is imported on first use, so code that runs under both backends must not touch it (the JAX
training step runs where TensorFlow is not installed).

Keras imports scikit-learn (for its scikit-learn wrappers) and matplotlib.pyplot (for an image
gallery helper) at start-up whenever they are installed. This project installs both, for the
digits dataset and the report, but never uses them through Keras; loading them added about 2 s
to the start of every training and evaluation step. They are hidden while Keras imports, which
Keras treats as "not installed", and importing them directly afterwards works as usual.

TensorFlow's oneDNN CPU kernels are switched on (`TF_ENABLE_ONEDNN_OPTS=1`, unless the
environment says otherwise): TensorFlow leaves them off by default on some CPUs, and on a 2-core
AVX2 EPYC, where it did, switching them on made ResNet20 training markedly faster (BENCHMARKS.md, 2).

TensorFlow's C++ start-up notices (CUDA probing on machines without a GPU, absl's banner) are
written straight to file descriptor 2; they are muted for the import alone, so a user sees
results and errors rather than driver chatter. Python exceptions from the import still surface.

Modules that need Keras import it from here: `from components.keras_setup import keras`
(and TensorFlow-only code `tf` the same way).
"""

import contextlib
import os
import sys

from components import backends

HIDDEN_WHILE_IMPORTING = ("sklearn", "matplotlib")


@contextlib.contextmanager
def _stderr_muted():
    saved_stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)


def _import_tensorflow():
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # read once, when TensorFlow loads
    with _stderr_muted():
        import tensorflow
    return tensorflow


@contextlib.contextmanager
def _hidden(names):
    """Modules `names` (those not imported yet) look uninstalled inside the block."""
    hidden = [name for name in names if name not in sys.modules]
    try:
        for name in hidden:
            sys.modules[name] = None  # `import name` now raises ImportError
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]


def _import_keras():
    backends.select_backend(backends.selected_backend())  # checked, and set for Keras to read
    with _hidden(HIDDEN_WHILE_IMPORTING):
        if backends.selected_backend() == "tensorflow":
            _import_tensorflow()
        with _stderr_muted():
            import keras
    return keras


keras = _import_keras()
backend = keras.backend.backend()


def __getattr__(name: str):
    """`tf`, imported on first use (at once under the TensorFlow backend, where Keras loaded it)."""
    if name == "tf":
        return _import_tensorflow()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def set_random_seed(seed: int) -> None:
    """keras.utils.set_random_seed (Python, NumPy, Keras and the backend), without importing
    TensorFlow under JAX: Keras seeds TensorFlow too wherever it is installed."""
    with _hidden(("tensorflow",) if backend == "jax" else ()):
        keras.utils.set_random_seed(seed)


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) CUDA compute capability of each GPU the backend sees; [] on a CPU."""
    if backend == "jax":
        import jax

        return [tuple(int(part) for part in str(device.compute_capability).split(".")[:2])
                for device in jax.devices() if device.platform == "gpu"]
    tf = _import_tensorflow()
    return [tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")]


def variable_value(variable):
    """A Keras variable's value as NumPy, read from the primary copy under a TensorFlow
    distribution strategy (whose per-replica variables NumPy cannot convert)."""
    value = variable.value
    if backend == "tensorflow":
        value = _import_tensorflow().convert_to_tensor(value)
    return keras.ops.convert_to_numpy(value)
