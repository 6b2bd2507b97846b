"""A preset's accuracy beside a baseline revision's: test accuracy of the same recipe over seeds.

ours:     this checkout's prepare -> train -> evaluate (augmentation inside the compiled step).
baseline: the same three functions of another revision (default: the one before augmentation
          moved into the step, when tf.data shifted and flipped on the CPU), extracted with
          `git archive`.
Both run the preset's models and training fields as pipeline/config.py has them (the recipes are
the same in both revisions) on one data source, which each revision prepares itself with the
preset's validation fraction, so both choose the epoch on the validation split and the test split
chooses nothing. Seeds 0..N-1; one fresh Python process per revision and model, taking turns.
Figures per model: mean ± sample standard deviation of the test accuracy for each, the difference
of the means and Welch's t (|t| < 2: no difference shows beside the run-to-run spread).

The fast preset trains on CIFAR-10, which needs the internet; `--dataset digits` runs its recipe
on the bundled digits instead (its batch of 512 is then three steps per epoch).

    python benchmarks/preset_accuracy.py --preset smoke --seeds 8
    python benchmarks/preset_accuracy.py --preset fast --dataset digits --seeds 8
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import common

NAME = "preset_accuracy"
# The revision before augmentation moved into the compiled step (tf.data shifted and flipped).
BASELINE_REVISION = "1bbd7ec"

# Runs in a fresh Python with one revision's components/ first on the path; prints one JSON line.
CHILD = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import components
assert os.path.dirname(components.__file__) == os.path.join(sys.argv[1], "components"), components.__file__
from components.data_prep import prepare
from components.evaluate import evaluate
from components.recipe import TrainConfig
from components.train import train

arguments = json.loads(sys.argv[2])
dataset = os.path.join(arguments["scratch"], "dataset")
if not os.path.exists(dataset):
    prepare(arguments["source"], dataset, validation_fraction=arguments["validation_fraction"])
accuracies = []
for seed in arguments["seeds"]:
    run = os.path.join(arguments["scratch"], f"{arguments['model']}-{seed}")
    train(dataset, arguments["model"], os.path.join(run, "model"), TrainConfig.from_dict({**arguments["train"], "seed": seed}))
    evaluate(dataset, os.path.join(run, "model"), os.path.join(run, "evaluation"))
    with open(os.path.join(run, "evaluation", "result.json")) as result:
        accuracies.append(json.load(result)["test_accuracy"])
print("ACCURACIES", json.dumps(accuracies))
"""


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="smoke", help="preset whose models and recipe run (default smoke)")
    parser.add_argument("--dataset", help="data source instead of the preset's (e.g. digits)")
    parser.add_argument("--models", help="comma-separated zoo names instead of the preset's")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 per model and revision (default 8)")
    parser.add_argument("--baseline-revision", default=BASELINE_REVISION, help=f"git revision to compare with (default {BASELINE_REVISION})")


def accuracies_of(code_root: str, scratch: str, source: str, model: str, train: dict, validation_fraction: float,
                  seeds: list[int]) -> list[float]:
    """Test accuracies of `model` for each seed, trained and evaluated by the code under `code_root`."""
    arguments = {"scratch": scratch, "source": source, "model": model, "train": train,
                 "validation_fraction": validation_fraction, "seeds": seeds}
    finished = subprocess.run([sys.executable, "-c", CHILD, code_root, json.dumps(arguments)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if finished.returncode:
        raise RuntimeError(f"training under {code_root} failed:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.split("ACCURACIES", 1)[1])


def spread(ours: list[float], baseline: list[float]) -> dict:
    """Means, sample standard deviations, the difference of the means and Welch's t."""
    mean_ours, mean_baseline = statistics.fmean(ours), statistics.fmean(baseline)
    sd_ours = statistics.stdev(ours) if len(ours) > 1 else 0.0
    sd_baseline = statistics.stdev(baseline) if len(baseline) > 1 else 0.0
    standard_error = math.sqrt(sd_ours ** 2 / len(ours) + sd_baseline ** 2 / len(baseline))
    difference = mean_ours - mean_baseline
    return {"ours_mean": mean_ours, "ours_sd": sd_ours, "baseline_mean": mean_baseline, "baseline_sd": sd_baseline,
            "difference": difference, "welch_t": difference / standard_error if standard_error else 0.0}


def main() -> int:
    arguments = common.parse_arguments(NAME, __doc__.splitlines()[0], add_arguments)
    from pipeline.config import get_preset

    preset = get_preset(arguments.preset)
    source = arguments.dataset or preset.dataset
    models = arguments.models.split(",") if arguments.models else list(preset.models)
    train = dict(preset.train)
    seeds = list(range(arguments.seeds))
    if arguments.tiny:
        source, models, seeds = "digits", ["lenet5"], [0, 1]
        train.update(epochs=1)
    scratch = tempfile.mkdtemp(prefix="cnnpipe-preset-accuracy-")
    try:
        code = {"baseline": common.extract_revision(arguments.baseline_revision, os.path.join(scratch, "code")),
                "ours": common.REPOSITORY_ROOT}
        accuracies = {model: {} for model in models}
        for model in models:
            for variant, code_root in code.items():
                work = os.path.join(scratch, variant)
                os.makedirs(work, exist_ok=True)
                accuracies[model][variant] = accuracies_of(code_root, work, source, model, train, preset.validation_fraction, seeds)
                common.progress(f"{model} {variant}: {accuracies[model][variant]}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    per_model = {model: {**spread(runs["ours"], runs["baseline"]), "ours": runs["ours"], "baseline": runs["baseline"]}
                 for model, runs in accuracies.items()}
    result = {
        "benchmark": NAME, "tiny": arguments.tiny, "preset": preset.name, "dataset": source, "train": train,
        "validation_fraction": preset.validation_fraction, "seeds": seeds, "baseline_revision": arguments.baseline_revision,
        # ours' mean test accuracy ÷ the baseline's, the median over the models
        "ratio": common.median([figures["ours_mean"] / figures["baseline_mean"] for figures in per_model.values()]),
        "models": per_model,
        "machine": common.cpu_machine_description(),
    }
    common.write_result(arguments.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
