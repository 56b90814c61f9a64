"""Runs the pipeline on this machine:  python -m pipeline.local_runner [--data-root DIR] [--output-dir DIR] ...

Outputs under --output-dir: serving/<model>/<version>/ (pushed models), last_run.json,
runs/<run id>.json, pipeline/ (every stage's artifacts) and metadata.sqlite (ML Metadata).
"""
import argparse
import contextlib
import datetime
import fcntl
import json
import logging
import os
import sys
import time
from typing import List, Optional

from pipeline import paths
from pipeline.quiet import library_output_to, quiet_logs


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from pipeline import flags
    parser = argparse.ArgumentParser(prog="python -m pipeline.local_runner", description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=paths.EMBEDDED_DATA,
                        help="image folder: <root>/<class>/* or <root>/train/<class>/* + <root>/test/<class>/*")
    parser.add_argument("--output-dir", default=paths.DEFAULT_OUTPUT_DIR)
    parser.add_argument("--schema", help="curated schema to validate against; default: schemas/mnist-sample.pbtxt "
                                         "for the embedded data, else <output-dir>/schema.pbtxt, created by "
                                         "the first run from the folder's classes")
    flags.add_pipeline_flags(parser)
    parser.add_argument("--no-cache", action="store_true",
                        help="run every stage again, even those whose data, settings and code are unchanged")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow, Beam and TFX logs")
    args = flags.with_preset(parser.parse_args(argv))
    args.data_root = os.path.abspath(args.data_root)
    args.output_dir = os.path.abspath(args.output_dir)
    if args.schema is None:
        embedded = args.data_root == paths.EMBEDDED_DATA
        args.schema = paths.EMBEDDED_SCHEMA if embedded else paths.user_schema(args.output_dir)
    args.schema = os.path.abspath(args.schema)
    return args


class StageProgress(logging.Handler):
    """Turns the orchestrator's 'Component X is running/finished' logs into one line per stage, ending
    with the key figure the stage reported (models/progress.py); a stage its condition skipped
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
        from models import progress
        logging.getLogger("absl").addHandler(self)
        figures = logging.getLogger(progress.LOGGER_NAME)
        figures.setLevel(logging.INFO)
        figures.propagate = False
        figures.addHandler(self)

    def detach(self) -> None:
        from models import progress
        logging.getLogger("absl").removeHandler(self)
        logging.getLogger(progress.LOGGER_NAME).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        from models import progress
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


def write_summary(summary: dict, output_dir: str) -> str:
    from models import files
    text = json.dumps(summary, indent=2, sort_keys=False)
    files.write_atomically(paths.run_summary(output_dir, summary["run_id"]), text)
    last = paths.last_run(output_dir)
    files.write_atomically(last, text)
    return last


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    quiet_logs(args.verbose)
    if not os.path.isdir(args.data_root):
        print(f"error: data root {args.data_root!r} does not exist or is not a folder", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    with one_run_at_a_time(args.output_dir), \
            library_output_to(None if args.verbose else paths.library_log(args.output_dir)):
        return _run(args)


@contextlib.contextmanager
def one_run_at_a_time(output_dir: str):
    """Holds the output dir's run lock (flock) for the whole run. ML Metadata's SQLite file, stage
    reuse, the class-balance baseline, the checkpoints, last_run.json and schema.pbtxt belong to one
    run at a time: a second run on the same output dir waits, naming the run it waits for, and then
    runs against what the first one left. The lock goes with the process, even when it is killed."""
    path = paths.run_lock(output_dir)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another run"
            print(f"waiting: {holder} is using {output_dir}; this run starts when it ends", flush=True)
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"the run started {datetime.datetime.now().isoformat(timespec='seconds')} by process "
                   f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def preset_note(preset: Optional[str], precision: str, cpuinfo: str = "/proc/cpuinfo") -> Optional[str]:
    """A line for a preset sized for bfloat16 run on a CPU without it (or with --precision float32)."""
    from pipeline import configs
    from models.precision import cpu_has_bfloat16
    if preset not in configs.PRESETS_FOR_BFLOAT16:
        return None
    if precision == "auto" and cpu_has_bfloat16(cpuinfo):
        return None
    why = "this CPU has no bfloat16" if precision == "auto" else "--precision float32"
    return (f"note: --preset {preset} is sized for 45 minutes on a CPU with bfloat16; {why}, so it trains in "
            f"float32, about twice as long (--preset photos fits 45 minutes on every CPU kind)")


def download_imagenet_weights(settings) -> None:
    """--backbone-weights imagenet: fetched now (Keras keeps it in ~/.keras/models for the Trainer), so
    that without a network the run stops before its first stage, with the download command."""
    if settings.training.backbone_weights == "imagenet":
        from models.applications import imagenet_application
        imagenet_application(settings.model.backbone, settings.image.shape)


def _run(args: argparse.Namespace) -> int:
    from tfx import v1 as tfx
    from components import caching
    from components.image_example_gen import folder_layout
    from pipeline import configs, flags, pipeline, run_summary, schema

    metadata_path = paths.metadata_path(args.output_dir)
    try:  # validate flags, layout and schema before anything runs
        folder_layout.discover(args.data_root)
        settings = flags.pipeline_settings(args)  # first: a refused flag leaves no schema behind
        download_imagenet_weights(settings)
        if not os.path.exists(args.schema):
            added, _ = schema.accept_classes(args.schema, args.data_root)
            print(f"schema: created {args.schema} with this folder's classes {added}; later runs with it stop "
                  f"if the class set changes", flush=True)
        code_fingerprint = caching.project_fingerprint(args.schema)
        note = preset_note(args.preset, settings.training.precision)
        if note:
            print(note, flush=True)
        image_cnn_pipeline = pipeline.create_pipeline(
            pipeline_name=configs.PIPELINE_NAME,
            pipeline_root=paths.pipeline_root(args.output_dir),
            data_root=args.data_root, schema_file=args.schema,
            serving_dir=paths.serving_dir(args.output_dir),
            settings=settings, code_fingerprint=code_fingerprint, beam_pipeline_args=configs.BEAM_PIPELINE_ARGS, enable_cache=not args.no_cache,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    started = time.time()
    run_id = datetime.datetime.fromtimestamp(started).isoformat()  # TFX's run id, as LocalDagRunner makes it
    progress = StageProgress(started)
    progress.attach()
    print(f"Pipeline {configs.PIPELINE_NAME}: data {args.data_root} -> outputs {args.output_dir}", flush=True)
    error = None
    try:
        with caching.conditions_outside_cache_keys(), caching.conditions_in_nesting_order():
            tfx.orchestration.LocalDagRunner().run_with_ir(
                caching.compile_for_local_run(image_cnn_pipeline, code_fingerprint, run_id))
    except Exception as caught:  # reported in last_run.json and below, then the exit code says failed
        error = caught
    finally:
        progress.detach()  # a caller running the pipeline again gets one line per stage, not two
    nodes = run_summary.run_nodes(metadata_path, configs.PIPELINE_NAME, run_id)
    summary = run_summary.summarize(nodes, run_id=run_id,
                                    data_root=args.data_root, output_dir=args.output_dir,
                                    schema_file=args.schema, started=started, error=error,
                                    thresholds=settings.thresholds.as_dict())
    summary["wall_seconds"] = round(time.time() - started, 1)
    if not args.verbose:
        summary["library_log"] = paths.library_log(args.output_dir)
    last = write_summary(summary, args.output_dir)
    print_outcome(summary, last)
    write_report(summary, args.output_dir)
    return 1 if error else 0


def write_report(summary: dict, output_dir: str) -> None:
    """The run's HTML report; a failure to render it is said in one line, its traceback goes where
    the library logs go (last_run.log, or the terminal with --verbose), and it changes nothing else."""
    import traceback
    from pipeline import report
    try:
        path = report.render(summary, paths.run_report_dir(output_dir, summary["run_id"]))
    except Exception as caught:  # pylint: disable=broad-except
        os.write(2, f"report failed:\n{traceback.format_exc()}".encode())  # fd 2: the library log when quiet
        where = f"; traceback in {summary['library_log']}" if summary.get("library_log") else ""
        print(f"report: not written: {type(caught).__name__}: {caught}{where}", file=sys.stderr)
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
    if evaluation.get("champion_skipped"):
        print(f"  {evaluation['champion_skipped']}")
    for failure in evaluation.get("validation_failures", []):
        print(f"  threshold not met: {failure}")
    if summary["status"] == "unchanged":
        print(f"unchanged: {summary['retrain']['reason']}")
    elif summary["status"] == "superseded":
        print(summary["superseded"])
    elif summary["status"] == "pushed":
        print(f"pushed: {summary['pushed_paths']['saved_model']}")
    elif summary["status"] == "already_serving":
        print(f"already serving this model: {summary['pushed_paths']['saved_model']}")
    elif summary["status"] == "held":
        print(f"held: the champion {summary['pushed_paths']['saved_model']} is pinned by a rollback; this model "
              f"was not pushed (python -m pipeline.promote unpin lets runs replace it)")
    if summary["error"]:
        print(f"error: {summary['error']}", file=sys.stderr)
    print(f"status: {summary['status']} in {summary['wall_seconds']:.0f}s; summary: {last_run_path}")


if __name__ == "__main__":
    sys.exit(main())
