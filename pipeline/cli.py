"""`cnnpipe`: run the pipeline locally, list the model zoo, run one step, compile, submit, schedule.

Every command is a thin function over the modules that do the work; heavy imports
(TensorFlow, KFP) happen inside the commands so that `cnnpipe --help` answers at once.
A user mistake ends as one `error: ...` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Sequence

from components import storage
from components.artifacts import REPORT_HTML_FILE, RUN_CONFIG_FILE, SUMMARY_FILE
from components.backends import BACKENDS, check_workers, select_backend
from components.errors import ERROR_LINE_PREFIX, USER_ERROR_EXIT_CODE, UserError, one_line
from components.recipe import CACHE_CHOICES, SCHEDULES
from pipeline.cluster import WORKER_NAMESPACE
from pipeline.registry_cli import add_registry_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # TensorFlow's C++ logging, for this process and the steps it starts: level 3 also mutes the
    # "failed call to cuInit" error every process logs on a machine without a GPU.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return args.handler(args) or 0
    except UserError as error:
        print(ERROR_LINE_PREFIX + one_line(error), file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except RuntimeError as error:
        # A failed cluster run, an API error or a storage outage: not a bug, already one line.
        if type(error).__name__ not in ("ClusterError", "StorageUnavailableError"):
            raise
        print(ERROR_LINE_PREFIX + one_line(error), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# Argument parsing


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnpipe",
        description="Train and compare classic CNNs with a Kubeflow pipeline, locally or on a cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the whole pipeline locally with kfp.local and write a report",
        description="Run prepare -> train/evaluate per model -> report with the KFP local runner. "
        "The preset sets every default; flags override single fields.",
    )
    add_run_config_arguments(run)
    run.add_argument("--output", metavar="DIR", help="where the report and models go (default: runs/<timestamp>)")
    run.add_argument(
        "--checkpoint-root",
        metavar="DIR",
        help="durable checkpoints; running the same command again resumes (default: <output>/checkpoints)",
    )
    run.add_argument("--run-name", default="local", help="names the checkpoints of this run (default: local)")
    add_registry_arguments(run)
    run.add_argument(
        "--retrain", action="store_true",
        help="train even when the registry holds a version of the same data and recipe (default: reuse it)",
    )
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: this Python, no Docker (default); docker: each step in the project image",
    )
    run.add_argument("--image", help="image for --runner docker (default: cnnpipe:latest, see `make image`)")
    run.add_argument("--gpus", action="store_true", help="with --runner docker: pass the host's GPUs through")
    run.add_argument(
        "--verbose", action="store_true",
        help="also stream every task's full log (always written to <output>/logs/<task>.log)",
    )
    run.set_defaults(handler=command_run)

    models = commands.add_parser("models", help="list the model zoo: name, family, parameters, reference accuracy")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.set_defaults(handler=command_models)

    presets = commands.add_parser("presets", help="list the presets and their training recipes")
    presets.set_defaults(handler=command_presets)

    add_cluster_commands(commands)
    add_registry_commands(commands)

    bench = commands.add_parser(
        "bench",
        help="time forward and forward+backward passes of a zoo model over batch sizes",
        description="Per-batch time (mean and std after warm-up) and images/s of one model on random "
        "images, printed as a table and saved as bench.txt, bench.png and bench.json.",
    )
    bench.add_argument("--model", required=True, help="zoo name (see `cnnpipe models`)")
    bench.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128", help="comma-separated (default: 1,2,4,...,128)")
    bench.add_argument("--steps", type=int, default=20, help="timed steps per batch size (default: 20)")
    bench.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before them (default: 5)")
    bench.add_argument("--input-shape", default="32,32,3", help="height,width,channels (default: 32,32,3)")
    bench.add_argument("--xla", action="store_true", help="compile the steps with XLA")
    bench.add_argument("--output", metavar="DIR", help="where the table, plot and JSON go (default: runs/bench-<model>)")
    bench.set_defaults(handler=command_bench)

    component = commands.add_parser(
        "component",
        help="run a single step on local paths (what each pipeline task runs, handy for debugging)",
        description="Run one step of the pipeline by itself, over local directories.",
    )
    add_component_commands(component)
    return parser


def add_run_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that refine a preset; shared by `run` and `compile`."""
    parser.add_argument("--preset", default="smoke", help="smoke (default), seed (the seed documents' recipe) or fast: see `cnnpipe presets`")
    parser.add_argument(
        "--dataset",
        help="digits, cifar10, fashion_mnist, mnist, an image folder (<class>/*, or train/<class>/* and test/<class>/*) "
        "or a cifar-10-binary.tar.gz; default: the preset's",
    )
    parser.add_argument("--models", type=comma_list, help="comma-separated zoo names (see `cnnpipe models`)")
    parser.add_argument("--epochs", type=int, help="training epochs per model")
    parser.add_argument("--batch-size", type=int, help="images per training step")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), help="adam, or sgd with nesterov momentum")
    parser.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    parser.add_argument("--label-smoothing", type=float, help="label smoothing, 0 to 1")
    parser.add_argument("--validation-fraction", type=float, help="train share held out for validation (0: use test)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of splits, shuffling and augmentation")
    parser.add_argument(
        "--image-size", type=int,
        help="resize every image to this square side in prep (default: keep; large photos: 128 on the longer side)",
    )
    parser.add_argument("--max-image-pixels", type=int, metavar="N",
                        help="refuse an image larger than N pixels (width x height) before decoding it (default: 64 Mi = 67,108,864)")
    add_training_execution_arguments(parser)


def add_training_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """How training runs, not what it learns: the Keras backend, worker processes and the dataset cache."""
    add_backend_argument(parser)
    parser.add_argument("--workers", type=int, default=1,
                        help="train each model data-parallel on N worker processes (default: 1; tensorflow only)")
    parser.add_argument("--cache", choices=CACHE_CHOICES,
                        help="keep the decoded dataset in memory (memory), stream it from its shards (none), "
                        "or memory when it fits (auto, the default)")


def add_backend_argument(parser: argparse.ArgumentParser, default: str | None = BACKENDS[0]) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default=default,
                        help="Keras backend of training and evaluation: tensorflow (default; tf.data, several "
                        "workers) or jax (one process; the data in memory; no TensorFlow needed)")


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", default="",
        help="model registry (dir or gs://...): publish every model, promote it when it beats the champion",
    )
    parser.add_argument(
        "--promotion-margin", type=float, default=0.0,
        help="how much higher (a fraction, e.g. 0.005) the test accuracy must be to replace the champion",
    )
    parser.add_argument(
        "--promotion-alpha", type=float, default=0.05,
        help="significance level of the paired test (McNemar, one-sided) a challenger must pass (default: 0.05)",
    )


def check_promotion_arguments(args: argparse.Namespace) -> None:
    """--promotion-margin and --promotion-alpha, checked before any step starts."""
    from components.registry import PromotionRule

    PromotionRule(margin=args.promotion_margin, alpha=args.promotion_alpha)


def resolve_run_config(args: argparse.Namespace):
    from pipeline.config import resolve

    return resolve(
        preset=args.preset,
        dataset=args.dataset,
        models=args.models,
        validation_fraction=args.validation_fraction,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        cache=args.cache,
        workers=args.workers,
        image_size=args.image_size,
        max_image_pixels=args.max_image_pixels,
        backend=args.backend,
    )


# ---------------------------------------------------------------------------------------------
# cnnpipe run


def command_run(args: argparse.Namespace) -> int:
    from components.data_prep import check_source

    config = resolve_run_config(args)
    check_promotion_arguments(args)
    check_source(config.dataset)
    output_dir = os.path.abspath(args.output or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S")))
    checkpoint_root = args.checkpoint_root or os.path.join(output_dir, "checkpoints")
    if args.runner == "subprocess" and (args.image or args.gpus):
        raise UserError("--image and --gpus need --runner docker; drop them or add --runner docker")
    from components.report.tables import comparison_text_table
    from pipeline.console import Console
    from pipeline.local_run import (
        PipelineFailed, collect_outputs, init_local_runner, run_pipeline, stopping_tasks_on_exit,
    )

    tensorboard_root = os.path.join(output_dir, "tensorboard")
    init_local_runner(args.runner, os.path.join(output_dir, "pipeline"), gpus=args.gpus,
                      inputs=(config.dataset,), outputs=(checkpoint_root, args.registry, tensorboard_root))
    os.makedirs(output_dir, exist_ok=True)
    storage.write_json(os.path.join(output_dir, RUN_CONFIG_FILE), {**config.to_dict(), "checkpoint_root": checkpoint_root})
    print(f"cnnpipe run: {config.dataset}, models {', '.join(config.models)}; logs in {os.path.join(output_dir, 'logs')}")
    console = Console(os.path.join(output_dir, "logs"), verbose=args.verbose)
    try:
        with stopping_tasks_on_exit():
            run_dir = run_pipeline(
                config,
                checkpoint_root=checkpoint_root,
                run_name=args.run_name,
                console=console,
                image=args.image,
                registry=args.registry,
                promotion_margin=args.promotion_margin,
                tensorboard_root=tensorboard_root,
                promotion_alpha=args.promotion_alpha,
                retrain=args.retrain,
            )
    except PipelineFailed as error:
        # Not a user mistake (exit 2), but the task's own traceback is in its log: one line here.
        print(f"{ERROR_LINE_PREFIX}{error}", file=sys.stderr)
        return 1
    report = collect_outputs(run_dir, output_dir)
    with open(os.path.join(output_dir, SUMMARY_FILE), encoding="utf-8") as handle:
        print("\n" + comparison_text_table(json.load(handle)))
    print(f"\nreport: {report}")
    return 0


# ---------------------------------------------------------------------------------------------
# cnnpipe models / presets


def command_models(args: argparse.Namespace) -> int:
    from components.formatting import format_percent, format_table
    from components.models import model_table

    rows = model_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(
        ["name", "family", "parameters", "reference acc.", "seed doc. acc.", "min size"],
        [
            [
                row["name"],
                row["family"],
                f"{row['params']:,}",
                format_percent(row["reference_accuracy"], missing="-"),
                format_percent(row["seed_document_accuracy"], missing="-"),
                str(row["min_input_size"]),
            ]
            for row in rows
        ],
    ))
    print("\nAccuracies are CIFAR-10 test accuracy: reference = the paper, seed doc. = the seed documents' own run.")
    return 0


def command_presets(args: argparse.Namespace) -> int:
    from pipeline.config import PRESETS

    for preset in PRESETS.values():
        print(f"{preset.name}: {preset.description}")
        print(f"  dataset={preset.dataset} models={','.join(preset.models)}")
        print("  " + " ".join(f"{key}={value}" for key, value in preset.train.items()))
    return 0


def command_bench(args: argparse.Namespace) -> int:
    from components.bench import benchmark_model, parse_batch_sizes, parse_input_shape, write_bench_outputs

    rows = benchmark_model(
        args.model,
        parse_batch_sizes(args.batch_sizes),
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        input_shape=parse_input_shape(args.input_shape),
        jit_compile=args.xla,
    )
    output_dir = args.output or os.path.join("runs", f"bench-{args.model}")
    print(write_bench_outputs(rows, output_dir))
    print(f"\nplot: {os.path.join(output_dir, 'bench.png')}")
    return 0


# ---------------------------------------------------------------------------------------------
# cnnpipe compile / submit / schedule


def add_cluster_commands(commands) -> None:
    compile_ = commands.add_parser(
        "compile",
        help="compile the pipeline to YAML for a KFP cluster, train/evaluate on the GPU node pool",
        description="Compile the pipeline. The run flags set the compiled defaults of the pipeline's "
        "parameters; `submit --param` overrides them per run.",
    )
    compile_.add_argument("--output", default="pipeline.yaml", metavar="PATH", help="default: pipeline.yaml")
    compile_.add_argument("--image", default="cnnpipe:latest", help="image every step runs in (see `make image`)")
    compile_.add_argument("--gpu-type", default="nvidia-l4", help="GKE accelerator of the GPU node pool (default: nvidia-l4)")
    compile_.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per train/evaluate task (0: CPU nodes)")
    compile_.add_argument(
        "--node-selector", action="append", metavar="KEY=VALUE",
        help="node label the GPU tasks require (repeatable; default: cloud.google.com/gke-accelerator=<gpu type>)",
    )
    compile_.add_argument("--spot", action="store_true", help="run GPU tasks on Spot VMs")
    compile_.add_argument("--evaluate-on-gpu", action="store_true",
                          help="evaluate on the GPU pool too (default: CPU nodes; worth it for large test splits)")
    compile_.add_argument("--worker-deadline", type=int, default=24 * 3600, metavar="SECONDS",
                          help="with workers > 1: how long one attempt of the JobSet may run (default: 86400)")
    compile_.add_argument("--queue", default="", metavar="NAME",
                          help="Kueue LocalQueue the JobSet of workers is submitted to (default: none)")
    compile_.add_argument("--worker-namespace", default=WORKER_NAMESPACE,
                          help=f"namespace of the worker pods of --workers > 1, as k8s/workers/ made it "
                               f"(default: {WORKER_NAMESPACE})")
    compile_.add_argument("--checkpoint-root", default="", help="default durable checkpoint prefix, e.g. gs://bucket/checkpoints")
    add_registry_arguments(compile_)
    add_run_config_arguments(compile_)
    compile_.set_defaults(handler=command_compile)

    submit = commands.add_parser("submit", help="submit a compiled pipeline as a run on a KFP cluster")
    add_cluster_connection_arguments(submit)
    submit.add_argument("--experiment", default="cnnpipe", help="KFP experiment (default: cnnpipe)")
    submit.add_argument("--run-name", help="display name of the run (default: cnnpipe <UTC time>)")
    submit.add_argument("--wait", action="store_true", help="follow the run; exit non-zero naming the failed task")
    submit.add_argument("--poll-seconds", type=float, default=15.0, help="with --wait: seconds between status checks (default: 15)")
    submit.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="with --wait: stop following after this long, exit 1 (the run keeps going; default: no limit)")
    submit.add_argument("--workers", type=int, help="train each model on N worker pods (a JobSet); same as --param workers=N")
    add_backend_argument(submit, default=None)
    submit.set_defaults(handler=command_submit)

    schedule = commands.add_parser(
        "schedule",
        help="create, update, list or delete a recurring (e.g. nightly) run",
        description="Schedule the compiled pipeline. Running it again with the same --name updates that "
        "schedule. Times are UTC; at most one run at a time; missed runs are not caught up.",
    )
    add_cluster_connection_arguments(schedule)
    schedule.add_argument("--name", help="schedule name, also the uploaded pipeline's name")
    schedule.add_argument("--cron", help="6-field KFP cron, seconds first: '0 0 2 * * *' = 02:00 UTC daily")
    schedule.add_argument("--experiment", default="cnnpipe", help="KFP experiment (default: cnnpipe)")
    schedule.add_argument("--list", action="store_true", help="list the schedules")
    schedule.add_argument("--delete", metavar="NAME", help="delete the schedule NAME")
    schedule.set_defaults(handler=command_schedule)


def add_cluster_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8080")
    parser.add_argument("--package", default="pipeline.yaml", metavar="PATH", help="compiled pipeline (default: pipeline.yaml)")
    parser.add_argument("--param", action="append", metavar="KEY=VALUE", help="pipeline parameter (repeatable)")
    parser.add_argument("--pipeline-root", help="where artifacts go, e.g. gs://bucket/pipeline-root")
    parser.add_argument("--token", help="bearer token (default: $KFP_TOKEN); never printed")
    parser.add_argument("--namespace", help="your Kubeflow profile's namespace on a multi-user KFP (default: none)")


def command_compile(args: argparse.Namespace) -> int:
    from kfp import compiler

    from pipeline.pipeline import build_pipeline
    from pipeline.placement import Placement, parse_node_selector

    config = resolve_run_config(args)
    check_promotion_arguments(args)
    placement = Placement(
        image=args.image,
        gpu_type=args.gpu_type or None,
        gpus_per_task=args.gpus_per_task,
        node_selector=parse_node_selector(args.node_selector or []),
        spot=args.spot,
        evaluate_on_gpu=args.evaluate_on_gpu,
        worker_deadline_seconds=args.worker_deadline,
        queue_name=args.queue,
        worker_namespace=args.worker_namespace,
    )
    pipeline_function = build_pipeline(
        placement,
        defaults=config,
        checkpoint_root=args.checkpoint_root,
        registry=args.registry,
        promotion_margin=args.promotion_margin,
        promotion_alpha=args.promotion_alpha,
    )
    compiler.Compiler().compile(pipeline_function, args.output)
    print(f"compiled {args.output}: image {args.image}, {describe_placement(placement)}")
    return 0


def describe_placement(placement) -> str:
    if not placement.uses_gpu:
        return "all steps on CPU nodes"
    where = ", ".join(f"{key}={value}" for key, value in placement.gpu_node_selector().items())
    steps = "train/evaluate" if placement.evaluate_on_gpu else "train"
    return f"{steps} on {placement.gpus_per_task} GPU(s) per task ({where}){', spot' if placement.spot else ''}"


def command_submit(args: argparse.Namespace) -> int:
    from pipeline import cluster

    params = cluster.parse_params(args.param)
    if args.workers is not None:
        params["workers"] = str(args.workers)
    if args.backend is not None:
        params["backend"] = args.backend
    run = cluster.submit(
        args.host,
        args.package,
        params=params,
        experiment=args.experiment,
        pipeline_root=args.pipeline_root,
        wait=args.wait,
        poll_seconds=args.poll_seconds,
        timeout_seconds=args.timeout,
        existing_token=args.token,
        run_name=args.run_name,
        namespace=args.namespace,
    )
    return 0 if not args.wait or run.state == "SUCCEEDED" else 1


def command_schedule(args: argparse.Namespace) -> int:
    from pipeline import cluster

    if args.list:
        cluster.list_schedules(args.host, existing_token=args.token, namespace=args.namespace)  # prints the table
        return 0
    if args.delete:
        cluster.delete_schedule(args.host, args.delete, existing_token=args.token, namespace=args.namespace)
        return 0
    if not args.name or not args.cron:
        raise UserError("schedule needs --name and --cron (or --list / --delete NAME)")
    cluster.schedule(
        args.host,
        args.name,
        args.cron,
        args.package,
        params=cluster.parse_params(args.param),
        experiment=args.experiment,
        pipeline_root=args.pipeline_root,
        existing_token=args.token,
        namespace=args.namespace,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# cnnpipe component <step>


def add_component_commands(parser: argparse.ArgumentParser) -> None:
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    prepare = steps.add_parser("prepare", help="load a source, validate, split, write the dataset directory")
    prepare.add_argument("--source", required=True, help="digits, cifar10, ..., an image folder or a CIFAR binary archive")
    prepare.add_argument("--output", required=True, metavar="DIR", help="dataset directory to write")
    prepare.add_argument("--validation-fraction", type=float, default=0.0,
                         help="train share held out for validation (default: 0, none)")
    prepare.add_argument("--seed", type=int, default=0, help="random seed of the splits (default: 0)")
    prepare.add_argument("--max-image-pixels", type=int, metavar="N",
                         help="refuse an image larger than N pixels (width x height) before decoding it (default: 64 Mi = 67,108,864)")
    prepare.set_defaults(handler=component_prepare)

    train = steps.add_parser("train", help="train one model on a prepared dataset directory")
    train.add_argument("--dataset", required=True, metavar="DIR", help="output of `component prepare`")
    train.add_argument("--model", required=True, help="zoo name (see `cnnpipe models`)")
    train.add_argument("--output", required=True, metavar="DIR", help="where model.keras and history.csv go")
    train.add_argument("--config", default="{}", help="TrainConfig fields as JSON, over the preset's")
    train.add_argument("--preset", default="smoke", help="preset whose recipe --config refines (default: smoke)")
    train.add_argument("--checkpoint-dir", help="resumable checkpoints (local dir or gs://)")
    add_training_execution_arguments(train)
    train.add_argument("--tensorboard-dir", help="TensorBoard event files (local dir or gs://)")
    train.set_defaults(handler=component_train)

    evaluate = steps.add_parser("evaluate", help="evaluate a trained model on the dataset's test split")
    evaluate.add_argument("--dataset", required=True, metavar="DIR")
    evaluate.add_argument("--model-dir", required=True, metavar="DIR", help="output of `component train`")
    evaluate.add_argument("--output", required=True, metavar="DIR")
    add_backend_argument(evaluate)
    evaluate.set_defaults(handler=component_evaluate)

    report = steps.add_parser("report", help="write report.html, report.md and summary.json")
    report.add_argument("--dataset", required=True, metavar="DIR")
    report.add_argument("--results", required=True, nargs="+", metavar="DIR", help="outputs of `component evaluate`")
    report.add_argument("--output", required=True, metavar="DIR")
    report.add_argument("--preset", default="smoke")
    report.set_defaults(handler=component_report)


def component_prepare(args: argparse.Namespace) -> int:
    from components.data_prep import prepare

    manifest = prepare(args.source, args.output, validation_fraction=args.validation_fraction, seed=args.seed,
                       max_image_pixels=args.max_image_pixels)
    print(json.dumps({"name": manifest.name, "num_classes": manifest.num_classes, "image_shape": manifest.image_shape,
                      "splits": manifest.splits}))
    return 0


def component_train(args: argparse.Namespace) -> int:
    select_backend(args.backend)  # before anything imports Keras
    check_workers(args.backend, args.workers)
    from components.recipe import TrainConfig
    from pipeline.config import get_preset
    from pipeline.launch import train_on_workers

    try:
        overrides = json.loads(args.config)
    except json.JSONDecodeError as error:
        raise UserError(f"--config is not valid JSON ({error.msg}); pass e.g. '{{\"epochs\": 2}}'") from None
    if not isinstance(overrides, dict):
        raise UserError(f"--config must be a JSON object, got {args.config}")
    if args.cache:
        overrides["cache"] = args.cache
    config = TrainConfig.from_dict({**get_preset(args.preset).train, **overrides})
    # A process started as one of several workers (TF_CONFIG set) trains as that worker.
    workers = 1 if "TF_CONFIG" in os.environ else args.workers
    result = train_on_workers(workers, args.dataset, args.model, args.output, config,
                              checkpoint_dir=args.checkpoint_dir, tensorboard_dir=args.tensorboard_dir)
    print(json.dumps({"name": result.name, "epochs": result.epochs, "train_seconds": result.train_seconds,
                      "train_images_per_second": result.train_images_per_second}))
    return 0


def component_evaluate(args: argparse.Namespace) -> int:
    select_backend(args.backend)  # before anything imports Keras
    from components.evaluate import evaluate

    result = evaluate(args.dataset, args.model_dir, args.output)
    print(json.dumps({"name": result.name, "test_accuracy": result.test_accuracy, "test_loss": result.test_loss}))
    return 0


def component_report(args: argparse.Namespace) -> int:
    from components import manifest as dataset_manifest
    from components.report import write_report_files

    manifest = dataset_manifest.read(args.dataset)
    write_report_files(args.results, args.output, manifest, {"preset": args.preset, "dataset": manifest.name})
    print(os.path.join(args.output, REPORT_HTML_FILE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
