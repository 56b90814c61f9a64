"""Runs the pipeline on this machine:  python -m pipeline.local_runner [--data-root DIR] [--output-dir DIR] ...

Outputs under --output-dir: serving/<model>/<version>/ (pushed models), last_run.json,
runs/<run id>.json, pipeline/ (every stage's artifacts) and metadata.sqlite (ML Metadata).
"""
import argparse
import datetime
import json
import logging
import os
import sys
import time
from typing import List, Optional

from pipeline.quiet import library_output_to, quiet_logs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, "outputs")
LIBRARY_LOG = "last_run.log"  # in --output-dir: what the libraries wrote to stderr, unless --verbose


def serving_dir_of(output_dir: str) -> str:
    """The pushed model's folder: versions, champion.json, promotions.jsonl."""
    from pipeline import configs
    return os.path.join(output_dir, "serving", configs.MODEL_NAME)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from pipeline import configs
    parser = argparse.ArgumentParser(prog="python -m pipeline.local_runner", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.path.join(REPO_ROOT, "data", "mnist-sample"),
                        help="image folder: <root>/<class>/* or <root>/train/<class>/* + <root>/test/<class>/*")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR)
    parser.add_argument("--schema", help="curated schema to validate against; default: schemas/mnist-sample.pbtxt "
                                         "for the embedded data, else <output-dir>/schema.pbtxt, created by "
                                         "the first run from the folder's classes")
    parser.add_argument("--strict", action="store_true", help="fail the run if any file is rejected")
    parser.add_argument("--max-class-drift", type=float, default=configs.MAX_CLASS_DRIFT,
                        help="largest change of a class's share of the images since the last accepted run")
    parser.add_argument("--max-image-pixels", type=int,
                        help="images with more pixels are rejected without being decoded (default 25000000)")
    # Left unset, training and image settings take the defaults of TrainingConfig and ImageSpec.
    parser.add_argument("--epochs", type=int, help="default: TrainingConfig.epochs (15)")
    parser.add_argument("--batch-size", type=int, help="per replica; default: TrainingConfig.batch_size (32)")
    parser.add_argument("--profile", action="store_true", default=None,
                        help="trace 10 training steps of the second epoch into the Trainer's TensorBoard logs")
    parser.add_argument("--learning-rate", type=float,
                        help="peak, for one replica (x replicas when several); default: TrainingConfig.learning_rate")
    parser.add_argument("--min-accuracy", type=float, default=configs.MIN_ACCURACY,
                        help="eval accuracy a model needs to be blessed and pushed")
    parser.add_argument("--max-accuracy-drop", type=float, default=configs.MAX_ACCURACY_DROP,
                        help="how far below the champion's accuracy (on this run's eval split) a model may be")
    parser.add_argument("--min-class-accuracy", type=float, default=0.0,
                        help="accuracy every class needs (0: no per-class floor)")
    parser.add_argument("--max-tflite-accuracy-drop", type=float, default=configs.MAX_TFLITE_ACCURACY_DROP,
                        help="a TFLite variant this far below the SavedModel's eval accuracy is not pushed")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="default: ImageSpec's (28 28)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="default: ImageSpec.channels (1)")
    parser.add_argument("--architecture", choices=("residual", "classic"),
                        help="residual: depthwise-separable residual blocks (default); classic: Conv-BN-ReLU-Pool")
    parser.add_argument("--attention", choices=("se", "cbam", "none"),
                        help="attention in residual blocks: squeeze-excite (default), CBAM or none")
    parser.add_argument("--weight-decay", type=float, help="default 0 (off)")
    parser.add_argument("--weight-decay-mode", choices=("decoupled", "l2"), help="AdamW (default) or L2 in the loss")
    parser.add_argument("--eval-percent", type=int, default=configs.EVAL_PERCENT,
                        help="eval share of a folder without train/ and test/ sub-folders")
    parser.add_argument("--no-cache", action="store_true",
                        help="run every stage again, even those whose data, settings and code are unchanged")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow, Beam and TFX logs")
    args = parser.parse_args(argv)
    args.data_root = os.path.abspath(args.data_root)
    args.output_dir = os.path.abspath(args.output_dir)
    if args.schema is None:
        from pipeline import schema
        embedded = args.data_root == os.path.join(REPO_ROOT, "data", "mnist-sample")
        args.schema = schema.EMBEDDED_SCHEMA if embedded else os.path.join(args.output_dir, "schema.pbtxt")
    args.schema = os.path.abspath(args.schema)
    return args


def beam_pipeline_args() -> List[str]:
    """The local runner. Without a dependency flag, TFX builds an sdist of itself before every Beam
    stage (1.7 s each here) and Beam stages it, for workers the DirectRunner never starts. Naming
    an SDK container image counts as one; the in-process runner ignores it."""
    from pipeline import configs
    return [*configs.BEAM_PIPELINE_ARGS, "--sdk_container_image=unused-by-the-in-process-direct-runner"]


def _given(**values):
    """The flags the user set; the rest keep the library's defaults."""
    return {key: value for key, value in values.items() if value is not None}


class StageProgress(logging.Handler):
    """Turns the orchestrator's 'Component X is running/finished' logs into one line per stage, ending
    with the key figure the stage reported (components/progress.py); a stage its condition skipped
    (the Pusher of an unblessed model) or whose earlier outputs were reused says so."""

    def __init__(self, run_started: float):
        super().__init__(logging.INFO)
        self._run_started = run_started
        self._stage_started = {}
        self._skipped = set()
        self._cached = set()
        self._running = None
        self._figure = None

    def attach(self) -> None:
        """Listens to the orchestrator (absl) and to the stages' key figures, until detach()."""
        from components import progress
        logging.getLogger("absl").addHandler(self)
        figures = logging.getLogger(progress.LOGGER_NAME)
        figures.setLevel(logging.INFO)
        figures.propagate = False
        figures.addHandler(self)

    def detach(self) -> None:
        from components import progress
        logging.getLogger("absl").removeHandler(self)
        logging.getLogger(progress.LOGGER_NAME).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        from components import progress
        if record.name == progress.LOGGER_NAME:
            self._figure = record.getMessage()
            return
        if record.msg == "Skipping execution for %s":
            self._skipped.add(record.args[0])
            return
        if record.msg == "A cached execution %d is used." and self._running:
            self._cached.add(self._running)
            return
        if record.msg not in ("Component %s is running.", "Component %s is finished."):
            return
        stage, now = record.args[0], time.time()
        if record.msg.endswith("running."):
            self._stage_started[stage], self._running = now, stage
            self._figure = None
            print(f"[{now - self._run_started:7.1f}s] {stage} started", flush=True)
            return
        self._running = None
        took = now - self._stage_started.get(stage, now)
        if stage in self._skipped:
            line = "skipped (its condition was not met)"
        elif stage in self._cached:
            line = f"reused in {took:.1f}s: inputs, settings and code unchanged since an earlier run (--no-cache runs it)"
        else:
            figure, self._figure = self._figure, None
            line = f"finished in {took:.1f}s" + (f": {figure}" if figure else "")
        print(f"[{now - self._run_started:7.1f}s] {stage} {line}", flush=True)


def run_filename(run_id: str) -> str:
    """runs/<this>: the run id without the colons of its time of day."""
    return run_id.replace(":", "") + ".json"


def write_summary(summary: dict, output_dir: str) -> str:
    runs_dir = os.path.join(output_dir, "runs")
    os.makedirs(runs_dir, exist_ok=True)
    text = json.dumps(summary, indent=2, sort_keys=False)
    with open(os.path.join(runs_dir, run_filename(summary["run_id"])), "w") as f:
        f.write(text)
    last = os.path.join(output_dir, "last_run.json")
    with open(last + ".tmp", "w") as f:
        f.write(text)
    os.replace(last + ".tmp", last)
    return last


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    quiet_logs(args.verbose)
    if not os.path.isdir(args.data_root):
        print(f"error: data root {args.data_root!r} does not exist or is not a folder", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    with library_output_to(None if args.verbose else os.path.join(args.output_dir, LIBRARY_LOG)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from tfx import v1 as tfx
    from components import caching
    from components.image_example_gen import folder_layout
    from models.preprocessing import ImageSpec
    from models.model import ModelConfig
    from models.trainer import TrainingConfig
    from pipeline import configs, pipeline, run_summary, schema

    metadata_path = os.path.join(args.output_dir, "metadata.sqlite")
    try:  # validate flags, layout and schema before anything runs
        height, width = args.image_size or (None, None)
        folder_layout.discover(args.data_root)
        if not os.path.exists(args.schema):
            added, _ = schema.accept_classes(args.schema, args.data_root)
            print(f"schema: created {args.schema} with this folder's classes {added}; later runs with it stop "
                  f"if the class set changes", flush=True)
        image_cnn_pipeline = pipeline.create_pipeline(
            pipeline_name=configs.PIPELINE_NAME,
            pipeline_root=os.path.join(args.output_dir, "pipeline"),
            data_root=args.data_root, schema_file=args.schema,
            serving_dir=serving_dir_of(args.output_dir),
            image_spec=ImageSpec(**_given(height=height, width=width, channels=args.channels)),
            training=TrainingConfig(**_given(epochs=args.epochs, batch_size=args.batch_size,
                                             learning_rate=args.learning_rate, profile=args.profile)),
            model=ModelConfig(**_given(architecture=args.architecture, attention=args.attention,
                                       weight_decay=args.weight_decay, weight_decay_mode=args.weight_decay_mode)),
            min_accuracy=args.min_accuracy, max_accuracy_drop=args.max_accuracy_drop,
            min_class_accuracy=args.min_class_accuracy, max_tflite_accuracy_drop=args.max_tflite_accuracy_drop,
            eval_percent=args.eval_percent,
            max_class_drift=args.max_class_drift, strict=args.strict,
            **_given(max_image_pixels=args.max_image_pixels),
            beam_pipeline_args=beam_pipeline_args(), enable_cache=not args.no_cache,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    started = time.time()
    progress = StageProgress(started)
    progress.attach()
    print(f"Pipeline {configs.PIPELINE_NAME}: data {args.data_root} -> outputs {args.output_dir}", flush=True)
    error = None
    try:
        tfx.orchestration.LocalDagRunner().run_with_ir(
            caching.compile_for_local_run(image_cnn_pipeline, caching.project_fingerprint(args.schema)))
    except Exception as caught:  # reported in last_run.json and below, then the exit code says failed
        error = caught
    finally:
        progress.detach()  # a caller running the pipeline again gets one line per stage, not two
    run_id, nodes = run_summary.latest_run(metadata_path, configs.PIPELINE_NAME, since=started)
    summary = run_summary.summarize(nodes, run_id=run_id or datetime.datetime.fromtimestamp(started).isoformat(),
                                    data_root=args.data_root, output_dir=args.output_dir,
                                    schema_file=args.schema, started=started, error=error,
                                    thresholds={"min_accuracy": args.min_accuracy,
                                                "max_accuracy_drop": args.max_accuracy_drop,
                                                "min_class_accuracy": args.min_class_accuracy})
    summary["wall_seconds"] = round(time.time() - started, 1)
    if not args.verbose:
        summary["library_log"] = os.path.join(args.output_dir, LIBRARY_LOG)
    last = write_summary(summary, args.output_dir)
    print_outcome(summary, last)
    write_report(summary, args.output_dir)
    return 1 if error else 0


def write_report(summary: dict, output_dir: str) -> None:
    """The run's HTML report; a failure to render it is said, and changes nothing else."""
    from pipeline import report
    try:
        path = report.render(summary, report.run_dir_of(output_dir, run_filename(summary["run_id"])))
    except Exception as caught:  # pylint: disable=broad-except
        print(f"report: not written: {type(caught).__name__}: {caught}", file=sys.stderr)
        return
    print(f"report: {path}")


def print_outcome(summary: dict, last_run_path: str) -> None:
    evaluation = summary.get("evaluation") or {}
    counts = summary.get("file_counts")
    if counts:
        print(f"files: {counts['seen']} seen = {counts['ingested']} ingested + {counts['rejected']} rejected + "
              f"{counts['ignored']} ignored (rejected and ignored files are listed with reasons in {last_run_path})")
    if evaluation.get("accuracy") is not None:
        print(f"eval accuracy {evaluation['accuracy']:.4f}; blessed: {summary['blessed']}")
    for failure in evaluation.get("validation_failures", []):
        print(f"  threshold not met: {failure}")
    if summary["status"] == "pushed":
        print(f"pushed: {summary['pushed_paths']['saved_model']}")
    elif summary["status"] == "already_serving":
        print(f"already serving this model: {summary['pushed_paths']['saved_model']}")
    if summary["error"]:
        print(f"error: {summary['error']}", file=sys.stderr)
    print(f"status: {summary['status']} in {summary['wall_seconds']:.0f}s; summary: {last_run_path}")


if __name__ == "__main__":
    sys.exit(main())
