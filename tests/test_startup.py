"""Start-up costs that every step and command pays: what gets imported, and what does not."""

import json
import os
import subprocess
import sys

import pytest

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY_MODULES = ("tensorflow", "keras", "sklearn", "matplotlib", "kfp")

# One fresh interpreter runs these steps in order and reports after each which heavy modules are
# imported: one TensorFlow import for the whole module instead of one per test. Each step only
# adds imports, so what is absent after a step was not imported by any step before it either.
STAGES = {
    "recipe and model names": (
        "from pipeline.config import resolve\n"
        "from components.models import MODELS, get_spec\n"
        "resolve('fast', models=['resnet20_v1', 'vgg16'], epochs=2)\n"
        "get_spec('alexnet8')"
    ),
    "model build": (
        "from components.models import build_model\n"
        "assert build_model('lenet5', (32, 32, 1), 10).count_params() == 61706"
    ),
    "keras setup": "from components.keras_setup import keras, tf\nassert keras.Model and tf.constant",
    "scikit-learn and matplotlib": (
        "import sklearn.datasets, matplotlib.figure\n"
        "assert sklearn.datasets.load_digits().images.shape == (1797, 8, 8)"
    ),
}


@pytest.fixture(scope="module")
def loaded_after():
    """stage name -> {heavy module: imported?} after that stage of STAGES."""
    probe = "import json, sys\n"
    for stage, code in STAGES.items():
        probe += code + f"\nprint(json.dumps([{stage!r}, {{name: name in sys.modules for name in {HEAVY_MODULES!r}}}]))\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('["')]
    assert [stage for stage, _ in reports] == list(STAGES), result.stdout
    return dict(reports)


def test_checking_a_recipe_and_the_model_names_imports_no_tensorflow(loaded_after):
    loaded = loaded_after["recipe and model names"]
    assert not loaded["tensorflow"] and not loaded["keras"]


def test_building_a_model_imports_its_family_on_demand(loaded_after):
    loaded = loaded_after["model build"]
    assert loaded["keras"] and not loaded["sklearn"]


def test_keras_is_imported_without_scikit_learn_and_matplotlib_which_still_import_afterwards(loaded_after):
    loaded = loaded_after["keras setup"]
    assert loaded["tensorflow"] and loaded["keras"]
    assert not loaded["sklearn"] and not loaded["matplotlib"]
    afterwards = loaded_after["scikit-learn and matplotlib"]
    assert afterwards["sklearn"] and afterwards["matplotlib"]
