"""Runs the pipeline on Kubeflow Pipelines: compiles it, submits a run, schedules nightly retraining.

  python -m pipeline.kubeflow_runner compile --output pipeline.yaml [--image IMAGE] [--target kfp|vertex]
  python -m pipeline.kubeflow_runner submit --host URL [--data-root DIR] [--min-accuracy X] [--epochs N]
  python -m pipeline.kubeflow_runner schedule --host URL --cron "0 3 * * *" [run parameters]
  python -m pipeline.kubeflow_runner unschedule --host URL

The same create_pipeline wiring as the local runner, compiled with TFX's KubeflowV2DagRunner. For
open-source KFP (--target kfp) the output is the pipeline spec itself (not Vertex's PipelineJob
wrapper), and one ReadWriteMany volume (--volume) is mounted in every step at --mount-path. It holds
the pipeline root, the images and serving/: the champion, the promotion log, the class-balance
baseline and checkpoints outlive a run, and publishing a version needs an atomic rename. There is no
Resolver node: the champion lookup is the pipeline's own ChampionModel step.

Credentials for submit/schedule come from the environment or the kfp defaults (kfp.Client), never
from pipeline parameters, which are recorded in metadata.
"""
import argparse
import json
import os
import re
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from pipeline import configs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS_DIR = os.path.join(REPO_ROOT, "schemas")
IMAGE_SCHEMAS_DIR = "/opt/image-cnn/schemas"  # where kubeflow/Dockerfile puts schemas/
DEFAULT_IMAGE = "image-cnn:0.1.0"
DEFAULT_MOUNT_PATH = "/mnt/image-cnn"
DEFAULT_VOLUME = "image-cnn"
TARGETS = ("kfp", "vertex")
BEAM_TARGETS = ("direct", "dataflow", "flink", "spark")
# Run-time parameters, settable per run: name -> type. Their defaults are the compile flags of the same name.
RUN_PARAMETERS = {"data_root": str, "min_accuracy": float, "epochs": int}
SCHEDULE_NAME = f"{configs.PIPELINE_NAME}-nightly"
TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
PROJECT_ENTRYPOINT = "components.kfp_entrypoint"  # kubeflow/Dockerfile's ENTRYPOINT too


class UsageError(ValueError):
    """A bad flag or combination of flags: one line, exit code 2."""


def beam_args(target: str, image: str, master: Optional[str], extra: Sequence[str]) -> List[str]:
    """Beam arguments of every Beam step. Workers of distributed runners run the pipeline image, so
    they have the project's package."""
    if target == "direct":
        args = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=0"]
    elif target == "dataflow":  # with --beam-arg=--project=P --beam-arg=--region=R --beam-arg=--temp_location=gs://…
        args = ["--runner=DataflowRunner", f"--sdk_container_image={image}"]
    elif target in ("flink", "spark"):
        if not master:
            raise UsageError(f"--beam-target {target} needs --beam-master (the {target} job server, host:port)")
        endpoint = [f"--flink_master={master}"] if target == "flink" else [f"--job_endpoint={master}"]
        args = ["--runner=FlinkRunner" if target == "flink" else "--runner=PortableRunner", *endpoint,
                "--environment_type=DOCKER", f"--environment_config={image}"]
    else:
        raise UsageError(f"--beam-target must be one of {BEAM_TARGETS}, got {target!r}")
    return args + list(extra)


def trainer_resources(gpus: int, memory_gb: float, cpus: float, gpu_type: str):
    """The Trainer step's resource request (the other steps ask for none)."""
    from kfp.pipeline_spec import pipeline_spec_pb2
    resources = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
        cpu_limit=cpus, memory_limit=memory_gb)
    if gpus:
        resources.accelerator.type = gpu_type
        resources.accelerator.count = gpus
    return resources


def schema_path_in_image(schema_file: str) -> str:
    """Where the steps find the schema: schemas/ is copied into the image."""
    if os.path.dirname(os.path.abspath(schema_file)) != SCHEMAS_DIR:
        raise UsageError(f"--schema {schema_file}: the pipeline image holds only the files of {SCHEMAS_DIR}; "
                         f"copy the schema there and rebuild the image, or pass --schema-in-pipeline PATH "
                         f"(a path the steps can read, e.g. on the volume)")
    return os.path.join(IMAGE_SCHEMAS_DIR, os.path.basename(schema_file))


def run_parameter_defaults(args: argparse.Namespace) -> Dict[str, Any]:
    from pipeline import flags
    return {"data_root": args.data_root, "min_accuracy": args.min_accuracy,
            "epochs": flags.pipeline_settings(args)["training"].epochs}


def build_pipeline(args: argparse.Namespace):
    """create_pipeline with the run-time parameters and the Trainer's resources."""
    from tfx import v1 as tfx
    from pipeline import flags
    from pipeline import pipeline as wiring
    defaults = run_parameter_defaults(args)
    parameters = {name: tfx.dsl.experimental.RuntimeParameter(name=name, ptype=ptype, default=defaults[name])
                  for name, ptype in RUN_PARAMETERS.items()}
    settings = {**flags.pipeline_settings(args), "min_accuracy": parameters["min_accuracy"]}
    pipeline = wiring.create_pipeline(
        pipeline_name=configs.PIPELINE_NAME, pipeline_root=args.pipeline_root,
        data_root=parameters["data_root"], epochs=parameters["epochs"],
        serving_dir=os.path.join(args.serving_root, configs.MODEL_NAME), schema_file=args.schema,
        schema_file_in_pipeline=args.schema_in_pipeline or schema_path_in_image(args.schema), **settings,
        beam_pipeline_args=beam_args(args.beam_target, args.image, args.beam_master, args.beam_arg))
    trainer = next(c for c in pipeline.components if c.id == "Trainer")
    trainer.with_platform_config(trainer_resources(args.gpus, args.trainer_memory_gb, args.trainer_cpus, args.gpu_type))
    return pipeline


def _fix_condition_keys(pipeline_spec: Dict[str, Any]) -> None:
    """TFX names a Cond's channel by its implicit key ('_Evaluator.blessing') even when the step takes
    that channel as a declared input ('model_blessing'); KFP evaluates the condition over the step's
    declared inputs, so the implicit key is rewritten to the declared one."""
    for task in pipeline_spec["root"]["dag"]["tasks"].values():
        condition = task.get("triggerPolicy", {}).get("condition")
        if not condition:
            continue
        inputs = task.get("inputs", {}).get("artifacts", {})
        declared = {f"_{spec['taskOutputArtifact']['producerTask']}.{spec['taskOutputArtifact']['outputArtifactKey']}":
                    name for name, spec in inputs.items() if "taskOutputArtifact" in spec}
        for implicit in set(re.findall(r"inputs\.artifacts\['([^']+)'\]", condition)) - set(inputs):
            if implicit not in declared:
                raise RuntimeError(f"condition {condition!r} names {implicit!r}, which the step does not take")
            condition = condition.replace(f"['{implicit}']", f"['{declared[implicit]}']")
        task["triggerPolicy"]["condition"] = condition


def use_project_entrypoint(pipeline_spec: Dict[str, Any]) -> None:
    """Every step runs the project's entrypoint, which restores the TFX type of each input artifact
    (open-source KFP hands them over as system.* or untyped) before running TFX's own."""
    for executor in pipeline_spec["deploymentSpec"]["executors"].values():
        command = executor["container"].get("command", [])
        if command[-1:] != [TFX_ENTRYPOINT]:
            raise RuntimeError(f"a step's command is {command}, not TFX's entrypoint {TFX_ENTRYPOINT}")
        executor["container"]["command"] = [*command[:-1], PROJECT_ENTRYPOINT]


def named_classes(pipeline_spec: Dict[str, Any]) -> List[str]:
    """Every class a step imports by name at run time: executors, and artifact types other than TFX's
    (whose schema title is the import path). The image must hold them all."""
    import yaml
    named = set()
    for executor in pipeline_spec["deploymentSpec"]["executors"].values():
        args = executor["container"].get("args", [])
        named.add(args[args.index("--executor_class_path") + 1])
    for component in pipeline_spec["components"].values():
        for side in ("inputDefinitions", "outputDefinitions"):
            for artifact in component.get(side, {}).get("artifacts", {}).values():
                title = yaml.safe_load(artifact["artifactType"]["instanceSchema"])["title"]
                if not title.startswith("tfx."):
                    named.add(title)
    return sorted(named)


def platform_spec(pipeline_spec: Dict[str, Any], volume: str, mount_path: str) -> Dict[str, Any]:
    """The Kubernetes platform spec that mounts the volume in every step."""
    executors = pipeline_spec["deploymentSpec"]["executors"]
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {
        label: {"pvcMount": [{"constant": volume, "mountPath": mount_path}]} for label in sorted(executors)}}}}}


def compile_pipeline(args: argparse.Namespace) -> Dict[str, Any]:
    """{"pipeline_spec": …, "platform_spec": … (kfp only)} or, for vertex, {"pipeline_job": …}."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
    if args.gpus and not args.trainer_image:
        print(f"note: the Trainer requests {args.gpus} GPU(s) but runs --image; give it the GPU variant "
              f"with --trainer-image (kubeflow/Dockerfile, VARIANT=gpu)", file=sys.stderr)
    images = {"default_image_path": args.image, "Trainer": args.trainer_image or args.image}  # TFX: default, by id
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
        default_image=images, display_name=configs.PIPELINE_NAME, use_pipeline_spec_2_1=True))
    job = runner.run(build_pipeline(args), parameter_values=run_parameter_defaults(args), write_out=False)
    if args.target == "vertex":
        return {"pipeline_job": job}
    spec = job["pipelineSpec"]
    # The defaults live in the job's runtimeConfig, which KFP does not take: the spec carries them.
    for name, value in job["runtimeConfig"]["parameterValues"].items():
        spec["root"]["inputDefinitions"]["parameters"][name]["defaultValue"] = value
    _fix_condition_keys(spec)
    use_project_entrypoint(spec)
    spec["defaultPipelineRoot"] = args.pipeline_root  # else KFP puts artifacts in its own object store
    resolvers = [label for label, executor in spec["deploymentSpec"]["executors"].items() if "resolver" in executor]
    if resolvers:
        raise RuntimeError(f"open-source KFP cannot run Resolver steps, and the pipeline has {resolvers}")
    return {"pipeline_spec": spec, "platform_spec": platform_spec(spec, args.volume, args.mount_path)}


def write_compiled(compiled: Dict[str, Any], output: str) -> List[str]:
    """Writes the compiled pipeline; returns notes for the user. A .json file holds one document: the
    pipeline spec (or Vertex's job). The volume mount is a second document, so it needs YAML."""
    import yaml
    notes = []
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    yaml_output = output.endswith((".yaml", ".yml"))
    with open(output, "w") as f:
        if "pipeline_job" in compiled:
            json.dump(compiled["pipeline_job"], f, indent=1, sort_keys=True)
        elif yaml_output:
            yaml.safe_dump_all([compiled["pipeline_spec"], compiled["platform_spec"]], f, sort_keys=True)
        else:
            json.dump(compiled["pipeline_spec"], f, indent=1, sort_keys=True)
            notes.append(f"{output} holds the pipeline spec alone, without the volume mount (a second YAML "
                         f"document): compile to a .yaml file to submit it")
    return notes


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
            run_name=args.run_name, enable_caching=False)
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
            pipeline_package_path=_compiled_package(args, directory), enable_caching=False)
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
    """Compiles the pipeline and runs it in containers of --image (pipeline/kfp_local.py)."""
    from pipeline import kfp_local
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
    run = kfp_local.Run(compiled["pipeline_spec"], compiled["platform_spec"],
                        volumes={DEFAULT_VOLUME: os.path.abspath(args.host_volume)}, parameters=run_arguments(args),
                        log_root=os.path.join(os.path.abspath(args.host_volume), "kfp-local"),
                        input_types=args.input_types)
    os.makedirs(run.log_dir)
    write_compiled(compiled, os.path.join(run.log_dir, "pipeline.yaml"))
    print(f"run {run.run_id}: {len(kfp_local.task_order(compiled['pipeline_spec']))} steps in containers of "
          f"{args.image}; logs in {run.log_dir}", flush=True)
    record, error = [], None
    try:
        record = run.run(say=lambda line: print(line, flush=True))
    except kfp_local.StepFailed as caught:
        error, record = caught, run.record
    with open(os.path.join(run.log_dir, "run.json"), "w") as f:
        json.dump({"run_id": run.run_id, "image": args.image, "parameters": run.parameters, "steps": record,
                   "error": str(error) if error else None}, f, indent=1)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    ran = sum(step["status"] == "succeeded" for step in record)
    print(f"run {run.run_id}: {ran} steps succeeded, "
          f"{sum(step['status'] == 'not_triggered' for step in record)} not triggered; "
          f"record: {os.path.join(run.log_dir, 'run.json')}")
    return 0


def _check_cron(cron: str) -> str:
    fields = cron.split()
    if len(fields) not in (5, 6):  # KFP also takes a leading seconds field
        raise argparse.ArgumentTypeError(f"a cron expression has 5 fields (or 6 with seconds), got {cron!r}")
    return cron


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from pipeline import flags, kfp_local
    parser = argparse.ArgumentParser(prog="python -m pipeline.kubeflow_runner", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add_compile_flags(p, claim_flag=True):
        p.add_argument("--target", choices=TARGETS, default="kfp",
                       help="kfp: open-source Kubeflow Pipelines; vertex: Vertex AI Pipelines' PipelineJob")
        p.add_argument("--image", default=DEFAULT_IMAGE, help="pipeline image (kubeflow/Dockerfile)")
        p.add_argument("--trainer-image", help="image of the Trainer step, e.g. the GPU variant (default: --image)")
        if claim_flag:  # run-local's --volume is the host folder that stands for this claim
            p.add_argument("--volume", default=DEFAULT_VOLUME,
                           help="ReadWriteMany PersistentVolumeClaim mounted in every step")
        p.add_argument("--mount-path", default=DEFAULT_MOUNT_PATH)
        p.add_argument("--pipeline-root", help="default: <mount-path>/pipeline")
        p.add_argument("--serving-root", help="where serving/<model>/<version> is published; default: <mount-path>/serving")
        p.add_argument("--data-root", help="default of the data_root run-time parameter; default: <mount-path>/data")
        p.add_argument("--schema", default=os.path.join(SCHEMAS_DIR, "mnist-sample.pbtxt"),
                       help="curated schema (read now for the class list; the steps read the image's copy)")
        p.add_argument("--schema-in-pipeline", help="where the steps read the schema, if not in the image's schemas/")
        flags.add_pipeline_flags(p)  # the local runner's flags: the same definitions
        p.add_argument("--gpus", type=int, default=1, help="GPUs the Trainer step requests (0: none)")
        p.add_argument("--gpu-type", default="nvidia.com/gpu", help="the accelerator's resource name")
        p.add_argument("--trainer-memory-gb", type=float, default=16.0)
        p.add_argument("--trainer-cpus", type=float, default=4.0)
        p.add_argument("--beam-target", choices=BEAM_TARGETS, default="direct",
                       help="where Beam steps run: in the step's pod, Dataflow, Flink or Spark")
        p.add_argument("--beam-master", help="flink: the Flink master host:port; spark: the job server host:port")
        p.add_argument("--beam-arg", action="append", default=[], help="one more Beam argument (repeatable)")

    def add_client_flags(p):
        p.add_argument("--host", required=True, help="the KFP API endpoint, e.g. http://localhost:8080")
        p.add_argument("--experiment", default=configs.PIPELINE_NAME)
        p.add_argument("--package", help="a compiled .yaml to use instead of compiling now")

    def add_run_parameters(p):
        p.add_argument("--run-data-root", dest="run_data_root", help="data_root for this run (default: compiled)")
        p.add_argument("--run-min-accuracy", dest="run_min_accuracy", type=float)
        p.add_argument("--run-epochs", dest="run_epochs", type=flags.at_least(1))

    compile_parser = commands.add_parser("compile", help="write the compiled pipeline")
    compile_parser.add_argument("--output", required=True, help=".yaml (spec + volume mount) or .json (spec)")
    add_compile_flags(compile_parser)
    submit_parser = commands.add_parser("submit", help="start one run now")
    submit_parser.add_argument("--run-name")
    schedule_parser = commands.add_parser("schedule", help="create or replace the recurring run")
    schedule_parser.add_argument("--cron", required=True, type=_check_cron, help='e.g. "0 3 * * *" (03:00 daily)')
    unschedule_parser = commands.add_parser("unschedule", help="delete the recurring run")
    for p in (submit_parser, schedule_parser, unschedule_parser):
        add_client_flags(p)
        p.add_argument("--schedule-name", default=SCHEDULE_NAME)
    for p in (submit_parser, schedule_parser):
        add_compile_flags(p)
        add_run_parameters(p)
    local_parser = commands.add_parser(
        "run-local", help="run the compiled pipeline here, each step in a container of --image, as open-source "
                          "KFP v2 runs it")
    local_parser.add_argument("--volume", dest="host_volume", required=True,
                              help="host folder that stands for the volume claim: the images go in DIR/data")
    local_parser.add_argument("--input-types", choices=kfp_local.INPUT_TYPE_MODES, default="system",
                              help="how input artifacts arrive: system.* titles (default) or empty instance schemas")
    add_compile_flags(local_parser, claim_flag=False)
    add_run_parameters(local_parser)
    args = parser.parse_args(argv)
    if hasattr(args, "preset"):  # the commands that build the pipeline
        args = flags.with_preset(args)
    if args.command == "run-local":
        args.volume = DEFAULT_VOLUME
        if args.image == DEFAULT_IMAGE:
            parser.error("run-local needs --image: the tag `make image` printed")
    if hasattr(args, "mount_path"):
        args.pipeline_root = args.pipeline_root or os.path.join(args.mount_path, "pipeline")
        args.serving_root = args.serving_root or os.path.join(args.mount_path, "serving")
        args.data_root = args.data_root or os.path.join(args.mount_path, "data")
        if args.target == "vertex" and not args.pipeline_root.startswith("gs://"):
            parser.error("--target vertex needs --pipeline-root gs://BUCKET/PATH")
        if args.gpus < 0:
            parser.error(f"--gpus must be >= 0, got {args.gpus}")
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
