"""Runs the pipeline on Kubeflow Pipelines: compiles it, submits a run, schedules nightly retraining,
or runs the compiled pipeline here, each step in a container (run-local).

  python -m pipeline.kubeflow_runner compile --output pipeline.yaml [--image IMAGE] [--target kfp|vertex]
  python -m pipeline.kubeflow_runner submit --host URL [--run-data-root DIR] [--run-epochs N] [...]
  python -m pipeline.kubeflow_runner schedule --host URL --cron "0 0 3 * * *" [run parameters]
  python -m pipeline.kubeflow_runner unschedule --host URL
  python -m pipeline.kubeflow_runner run-local --image IMAGE --volume DIR [run parameters]

The command line only: the compiled pipeline is pipeline/kubeflow/compile.py, and everything else
Kubeflow needs lives beside it in pipeline/kubeflow/. Credentials for submit/schedule come from the
environment or the kfp defaults (kfp.Client), never from pipeline parameters, which are recorded in
metadata.
"""
import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional

from pipeline import configs, paths
from pipeline.kubeflow.compile import (BEAM_TARGETS, RUN_PARAMETERS, TARGETS, UsageError,
                                       compile_pipeline, run_parameter_defaults, write_compiled)

DEFAULT_IMAGE = "image-cnn:0.1.0"
DEFAULT_MOUNT_PATH = "/mnt/image-cnn"
DEFAULT_VOLUME = "image-cnn"
# KFP's own default root is minio://mlpipeline/v2/artifacts (backend/src/v2/config/env.go); the
# pipeline's artifacts go below it, in the store every KFP install has.
DEFAULT_PIPELINE_ROOT = f"minio://mlpipeline/v2/artifacts/{configs.PIPELINE_NAME}"
SCHEDULE_NAME = f"{configs.PIPELINE_NAME}-nightly"


def run_arguments(args: argparse.Namespace) -> Dict[str, Any]:
    """The run-time parameters given on the command line (the others keep their compiled defaults)."""
    return {name: getattr(args, f"run_{name}") for name in RUN_PARAMETERS
            if getattr(args, f"run_{name}", None) is not None}


def _client(host: str):
    import kfp
    return kfp.Client(host=host)


def _compiled_package(args: argparse.Namespace, directory: str) -> str:
    if args.package:
        return args.package
    path = os.path.join(directory, "pipeline.yaml")
    write_compiled(compile_pipeline(args), path)
    return path


def submit(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as directory:
        result = _client(args.host).create_run_from_pipeline_package(
            _compiled_package(args, directory), arguments=run_arguments(args), experiment_name=args.experiment,
            run_name=args.run_name, enable_caching=False, pipeline_root=args.pipeline_root)
    return result.run_id


def _recurring_runs_named(client, experiment_id: str, name: str) -> List[Any]:
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id)
        found += [run for run in page.recurring_runs or [] if run.display_name == name]
        token = page.next_page_token
        if not token:
            return found


def unschedule(args: argparse.Namespace) -> List[str]:
    """Deletes the pipeline's recurring runs (KFP cannot update one in place); returns their ids."""
    client = _client(args.host)
    experiment = client.create_experiment(args.experiment)  # returns the existing one
    deleted = []
    for run in _recurring_runs_named(client, experiment.experiment_id, args.schedule_name):
        client.delete_recurring_run(run.recurring_run_id)
        deleted.append(run.recurring_run_id)
    return deleted


def schedule(args: argparse.Namespace) -> str:
    """Replaces the pipeline's recurring run by one with this cron and these parameters, at most one
    run at a time."""
    replaced = unschedule(args)
    client = _client(args.host)
    experiment = client.create_experiment(args.experiment)
    with tempfile.TemporaryDirectory() as directory:
        created = client.create_recurring_run(
            experiment.experiment_id, args.schedule_name, description=f"{configs.PIPELINE_NAME} retraining",
            cron_expression=args.cron, max_concurrency=1, no_catchup=True, params=run_arguments(args),
            pipeline_package_path=_compiled_package(args, directory), enable_caching=False,
            pipeline_root=args.pipeline_root)
    if replaced:
        print(f"replaced recurring run(s) {replaced}")
    return created.recurring_run_id


def _host_path(args: argparse.Namespace, path: str) -> str:
    """Where a path of the steps (under --mount-path) is in the --volume folder."""
    relative = os.path.relpath(path, args.mount_path)
    if relative.startswith(os.pardir):
        raise UsageError(f"{path} is not on the volume (mounted at {args.mount_path}); run-local mounts only --volume")
    return os.path.join(os.path.abspath(args.host_volume), relative)


def run_local(args: argparse.Namespace) -> int:
    """Compiles the pipeline and runs it in containers of --image (pipeline/kubeflow/local_run.py), its
    artifacts in an S3 server on loopback for as long as the run lasts."""
    from pipeline.kubeflow import local_run as kfp_local
    from pipeline.kubeflow import object_store
    if not args.pipeline_root.startswith(("minio://", "s3://")):
        raise UsageError(f"run-local keeps the artifacts in an S3 server of its own: --pipeline-root must be "
                         f"minio://BUCKET/PATH or s3://BUCKET/PATH, got {args.pipeline_root!r}")
    if not os.path.isdir(args.host_volume):
        raise UsageError(f"--volume {args.host_volume!r} does not exist or is not a folder")
    parameters = {**run_parameter_defaults(args), **run_arguments(args)}
    data_root = _host_path(args, parameters["data_root"])
    if not os.path.isdir(data_root):
        raise UsageError(f"data_root {parameters['data_root']} is {data_root} here, which is not a folder: "
                         f"put the images there, or pass --run-data-root")
    try:
        kfp_local.check_engine()
    except kfp_local.StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    compiled = compile_pipeline(args)
    with object_store.S3Server(buckets=[object_store.key_from_uri(args.pipeline_root)[0]]) as server:
        return _run_in_containers(args, compiled, kfp_local.Run(
            compiled["pipeline_spec"], compiled["platform_spec"],
            volumes={DEFAULT_VOLUME: os.path.abspath(args.host_volume)}, parameters=run_arguments(args),
            log_root=os.path.join(os.path.abspath(args.host_volume), "kfp-local"), pipeline_root=args.pipeline_root,
            store=object_store.Store(server.client()), input_types=args.input_types), server.endpoint)


def _run_in_containers(args: argparse.Namespace, compiled: Dict[str, Any], run, endpoint: str) -> int:
    from pipeline.kubeflow import local_run as kfp_local
    os.makedirs(run.log_dir)
    write_compiled(compiled, os.path.join(run.log_dir, "pipeline.yaml"))
    print(f"run {run.run_id}: {len(kfp_local.task_order(compiled['pipeline_spec']))} steps in containers of "
          f"{args.image}; artifacts under {run.run_root} (an S3 server at {endpoint}, for this run); logs in "
          f"{run.log_dir}", flush=True)
    record, error = [], None
    try:
        record = run.run(say=lambda line: print(line, flush=True))
    except kfp_local.StepFailed as caught:
        error, record = caught, run.record
    result = kfp_local.outcome(record, str(error) if error else "")
    with open(os.path.join(run.log_dir, "run.json"), "w") as f:
        json.dump({"run_id": run.run_id, "image": args.image, "pipeline_root": args.pipeline_root,
                   "parameters": run.parameters, **result, "steps": record, "error": str(error) if error else None},
                  f, indent=1)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    ran = sum(step["status"] == "succeeded" for step in record)
    print(f"run {run.run_id}: {ran} steps succeeded, "
          f"{sum(step['status'] == 'not_triggered' for step in record)} not triggered; "
          f"record: {os.path.join(run.log_dir, 'run.json')}")
    print(f"status: {result['status']}: {result['reason']}")
    return 0


def _check_cron(expression: str) -> str:
    from pipeline.kubeflow import cron
    try:
        return cron.check(expression)
    except cron.CronError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def print_next_runs(expression: str) -> None:
    """The next three runs, as KFP's controller computes them (in UTC unless it sets CRON_SCHEDULE_TIMEZONE)."""
    from pipeline.kubeflow import cron
    for when in cron.next_runs(expression):
        print(f"  next run: {when.strftime('%Y-%m-%d %H:%M:%S')} UTC")


def _add_compile_flags(p: argparse.ArgumentParser, claim_flag: bool = True) -> None:
    """What the pipeline is compiled with: target, images, roots, the shared pipeline flags, resources."""
    from pipeline import flags
    p.add_argument("--target", choices=TARGETS, default="kfp",
                   help="kfp: open-source Kubeflow Pipelines; vertex: Vertex AI Pipelines' PipelineJob")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="pipeline image (pipeline/kubeflow/Dockerfile)")
    p.add_argument("--trainer-image", help="image of the Trainer step, e.g. the GPU variant (default: --image)")
    _add_root_flags(p, claim_flag)
    flags.add_pipeline_flags(p)  # the local runner's flags: the same definitions
    p.add_argument("--gpus", type=int, default=1, help="GPUs the Trainer step requests (0: none)")
    p.add_argument("--gpu-type", default="nvidia.com/gpu", help="the accelerator's resource name")
    p.add_argument("--trainer-memory-gb", type=float, default=16.0)
    p.add_argument("--trainer-cpus", type=float, default=4.0)
    _add_beam_flags(p)


def _add_root_flags(p: argparse.ArgumentParser, claim_flag: bool) -> None:
    """The object-store pipeline root, and the volume with what outlives a run."""
    if claim_flag:  # run-local's --volume is the host folder that stands for this claim
        p.add_argument("--volume", default=DEFAULT_VOLUME, help="ReadWriteMany PersistentVolumeClaim mounted in every step")
    p.add_argument("--mount-path", default=DEFAULT_MOUNT_PATH)
    p.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT,
                   help="where the artifacts go: an object-store URI, minio://, s3:// or gs:// (KFP's "
                        f"launcher refuses paths); default {DEFAULT_PIPELINE_ROOT}")
    p.add_argument("--state-root", help="what outlives a run besides serving/ (class-balance baseline, "
                                        "checkpoints), on the volume; default: <mount-path>/state")
    p.add_argument("--serving-root", help="where serving/<model>/<version> is published; default: <mount-path>/serving")
    p.add_argument("--data-root", help="default of the data_root run-time parameter; default: <mount-path>/data")
    p.add_argument("--schema", default=paths.EMBEDDED_SCHEMA,
                   help="curated schema (read now for the class list; the steps read the image's copy)")
    p.add_argument("--schema-in-pipeline", help="where the steps read the schema, if not in the image's schemas/")


def _add_beam_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam-target", choices=BEAM_TARGETS, default="direct",
                   help="where Beam steps run: in the step's pod, Dataflow, Flink or Spark")
    p.add_argument("--beam-master", help="flink, spark: the Beam job server for that runner, host:port")
    p.add_argument("--beam-worker-pool", help="flink, spark: the Beam SDK worker pool the runner sends work to, "
                                              "host:port (the pipeline image, running its worker_pool_main)")
    p.add_argument("--beam-sdk-image", help="dataflow: a worker image with the Beam SDK boot binary "
                                            "(/opt/apache/beam/boot) and this project installed")
    p.add_argument("--beam-arg", action="append", default=[], help="one more Beam argument (repeatable)")


def _add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="the KFP API endpoint, e.g. http://localhost:8080")
    p.add_argument("--experiment", default=configs.PIPELINE_NAME)
    p.add_argument("--package", help="a compiled .yaml to use instead of compiling now")
    p.add_argument("--schedule-name", default=SCHEDULE_NAME)


def _add_run_parameters(p: argparse.ArgumentParser) -> None:
    from pipeline import flags
    p.add_argument("--run-data-root", dest="run_data_root", help="data_root for this run (default: compiled)")
    p.add_argument("--run-min-accuracy", dest="run_min_accuracy", type=float)
    p.add_argument("--run-epochs", dest="run_epochs", type=flags.at_least(1))
    p.add_argument("--run-retrain-always", dest="run_retrain_always", type=int, choices=(0, 1),
                   help="1: train even if nothing changed since the champion (default: --retrain-always)")


def _parser() -> argparse.ArgumentParser:
    from pipeline.kubeflow import local_run as kfp_local
    parser = argparse.ArgumentParser(prog="python -m pipeline.kubeflow_runner", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_parser = commands.add_parser("compile", help="write the compiled pipeline")
    compile_parser.add_argument("--output", required=True, help=".yaml (spec + volume mount) or .json (spec)")
    _add_compile_flags(compile_parser)
    submit_parser = commands.add_parser("submit", help="start one run now")
    submit_parser.add_argument("--run-name")
    schedule_parser = commands.add_parser("schedule", help="create or replace the recurring run")
    schedule_parser.add_argument("--cron", required=True, type=_check_cron,
                                 help='six fields, seconds first, as KFP reads them: "0 0 3 * * *" is 03:00 UTC daily')
    _add_client_flags(commands.add_parser("unschedule", help="delete the recurring run"))
    for p in (submit_parser, schedule_parser):
        _add_client_flags(p)
        _add_compile_flags(p)
        _add_run_parameters(p)
    local_parser = commands.add_parser(
        "run-local", help="run the compiled pipeline here, each step in a container of --image, as open-source "
                          "KFP v2 runs it")
    local_parser.add_argument("--volume", dest="host_volume", required=True,
                              help="host folder that stands for the volume claim: the images go in DIR/data")
    local_parser.add_argument("--input-types", choices=kfp_local.INPUT_TYPE_MODES, default="system",
                              help="how input artifacts arrive: system.* titles (default) or empty instance schemas")
    _add_compile_flags(local_parser, claim_flag=False)
    _add_run_parameters(local_parser)
    return parser


def _resolve_roots(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The roots under the mount path, and the refusals KFP would otherwise make later."""
    from pipeline.kubeflow import launcher
    args.state_root = args.state_root or os.path.join(args.mount_path, "state")
    args.serving_root = args.serving_root or os.path.join(args.mount_path, "serving")
    args.data_root = args.data_root or os.path.join(args.mount_path, "data")
    if args.target == "vertex" and not args.pipeline_root.startswith("gs://"):
        parser.error("--target vertex needs --pipeline-root gs://BUCKET/PATH")
    try:
        args.pipeline_root = launcher.check_pipeline_root(args.pipeline_root)
    except ValueError as error:
        parser.error(f"--pipeline-root: {error}")
    if args.gpus < 0:
        parser.error(f"--gpus must be >= 0, got {args.gpus}")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from pipeline import flags
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "preset"):  # the commands that build the pipeline: their settings, built once
        args = flags.with_preset(args)
        try:
            args.settings = flags.pipeline_settings(args)
        except ValueError as error:
            parser.exit(2, f"error: {error}\n")
    if args.command == "run-local":
        args.volume = DEFAULT_VOLUME
        if args.image == DEFAULT_IMAGE:
            parser.error("run-local needs --image: the tag `make image` printed")
    if hasattr(args, "mount_path"):
        _resolve_roots(args, parser)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "compile":
            for note in write_compiled(compile_pipeline(args), args.output):
                print(f"note: {note}", file=sys.stderr)
            print(f"compiled ({args.target}): {args.output}")
        elif args.command == "submit":
            print(f"run started: {submit(args)}")
        elif args.command == "run-local":
            return run_local(args)
        elif args.command == "schedule":
            print(f"recurring run {args.schedule_name!r} ({args.cron}, at most one at a time): {schedule(args)}")
            print_next_runs(args.cron)
        else:
            deleted = unschedule(args)
            print(f"deleted recurring run(s) {deleted}" if deleted else f"no recurring run named {args.schedule_name!r}")
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # pylint: disable=broad-except
        if args.command in ("compile", "run-local"):
            raise
        # the KFP API's answer (or the lack of one), in one line
        print(f"error: Kubeflow Pipelines at {args.host}: {type(error).__name__}: "
              f"{' '.join(str(error).split())[:500]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from pipeline.quiet import run_quietly
    run_quietly(main)
