"""TensorFlow and Keras, imported once for the whole process: quietly, and without the extras
Keras would load for nothing.

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

Modules that need TensorFlow or Keras import them from here: `from components.keras_setup import keras, tf`.
"""

import os
import sys

HIDDEN_WHILE_IMPORTING = ("sklearn", "matplotlib")


def _import_quietly():
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # read once, when TensorFlow loads
    hidden = [name for name in HIDDEN_WHILE_IMPORTING if name not in sys.modules]
    saved_stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        for name in hidden:
            sys.modules[name] = None  # `import name` now raises ImportError
        os.dup2(devnull, 2)
        import keras
        import tensorflow
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]
    return keras, tensorflow


keras, tf = _import_quietly()
