"""Start-up costs that every step and command pays: what gets imported, and what does not."""

import json
import os
import subprocess
import sys

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules_after(code: str) -> dict:
    """Runs `code` in a fresh interpreter and returns which heavy modules it left imported."""
    probe = code + "\nimport json, sys\nprint(json.dumps({name: name in sys.modules for name in "
    probe += "('tensorflow', 'keras', 'sklearn', 'matplotlib', 'kfp')}))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_checking_a_recipe_and_the_model_names_imports_no_tensorflow():
    loaded = modules_after(
        "from pipeline.config import resolve\n"
        "from components.models import MODELS, get_spec\n"
        "resolve('fast', models=['resnet20_v1', 'vgg16'], epochs=2)\n"
        "get_spec('alexnet8')"
    )
    assert not loaded["tensorflow"] and not loaded["keras"]


def test_keras_is_imported_without_scikit_learn_and_matplotlib_which_still_import_afterwards():
    loaded = modules_after("from components.keras_setup import keras, tf\nassert keras.Model and tf.constant")
    assert loaded["tensorflow"] and loaded["keras"]
    assert not loaded["sklearn"] and not loaded["matplotlib"]
    afterwards = modules_after(
        "from components.keras_setup import keras\n"
        "import sklearn.datasets, matplotlib.figure\n"
        "assert sklearn.datasets.load_digits().images.shape == (1797, 8, 8)"
    )
    assert afterwards["sklearn"] and afterwards["matplotlib"]


def test_building_a_model_imports_its_family_on_demand():
    loaded = modules_after(
        "from components.models import build_model\n"
        "assert build_model('lenet5', (32, 32, 1), 10).count_params() == 61706"
    )
    assert loaded["keras"] and not loaded["sklearn"]
