"""The pipeline compiled for Kubeflow Pipelines: the same create_pipeline wiring as a local run, through
TFX's KubeflowV2DagRunner, made fit for open-source KFP v2.

For open-source KFP (target kfp) the output is the pipeline spec itself (not Vertex's PipelineJob
wrapper), and one ReadWriteMany volume is mounted in every step for the state that outlives a run:
the images, serving/ (the champion, the promotion log; publishing needs an atomic rename and a lock),
the class-balance baseline and the checkpoints. The artifacts that flow from step to step live under
the pipeline root, an object store, as KFP's launcher has them (pipeline/kubeflow/launcher.py). There
is no Resolver node: the champion lookup is the pipeline's own ChampionModel step.
"""
import argparse
import json
import os
import re
import sys
from typing import Any, Dict, List

from pipeline import configs, paths

IMAGE_SCHEMAS_DIR = "/opt/image-cnn/schemas"  # where pipeline/kubeflow/Dockerfile puts schemas/
TARGETS = ("kfp", "vertex")
BEAM_TARGETS = ("direct", "dataflow", "flink", "spark")
# Run-time parameters, settable per run: name -> type. Their defaults are the compile flags of the same name.
RUN_PARAMETERS = {"data_root": str, "min_accuracy": float, "epochs": int, "retrain_always": int}
TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
PROJECT_ENTRYPOINT = "pipeline.kubeflow.entrypoint"  # pipeline/kubeflow/Dockerfile's ENTRYPOINT too
# A parameter whose constant is this is given the KFP run's id by the driver (driver/resolve.go).
KFP_RUN_ID = "{{$.pipeline_job_uuid}}"


class UsageError(ValueError):
    """A bad flag or combination of flags: one line, exit code 2."""


def beam_args(args: argparse.Namespace) -> List[str]:
    """Beam arguments of every Beam step, for --beam-target. Each target is refused, naming what is
    missing, unless it can work as compiled (docs/kubeflow.md: Scale-out hooks)."""
    target, extra = args.beam_target, list(args.beam_arg)
    if target == "direct":  # in the step's pod, on the engine the tests run (configs.BEAM_PIPELINE_ARGS)
        return [configs.BEAM_RUNNER, "--direct_running_mode=multi_processing", "--direct_num_workers=0",
                configs.BEAM_NO_TFX_SDIST, *extra]
    if target == "dataflow":
        if not args.pipeline_root.startswith("gs://"):
            raise UsageError(f"--beam-target dataflow needs a gs:// --pipeline-root (Dataflow's workers read and write "
                             f"the artifacts there), got {args.pipeline_root!r}")
        if not args.beam_sdk_image:
            raise UsageError("--beam-target dataflow needs --beam-sdk-image: Dataflow's workers start the Beam SDK "
                             "boot binary (/opt/apache/beam/boot), which the pipeline image does not have; give an "
                             "image built FROM apache/beam_python3.13_sdk:2.77.0 with this project installed")
        return ["--runner=DataflowRunner", f"--sdk_container_image={args.beam_sdk_image}",
                f"--temp_location={args.pipeline_root}/beam-tmp", *extra]
    if target in ("flink", "spark"):
        missing = [flag for flag, value in (("--beam-master", args.beam_master),
                                            ("--beam-worker-pool", args.beam_worker_pool)) if not value]
        if missing:
            raise UsageError(f"--beam-target {target} needs {' and '.join(missing)}: the Beam job server for "
                             f"{target} (host:port), and a Beam worker pool running the pipeline image "
                             f"(python -m apache_beam.runners.worker.worker_pool_main --service_port=50000). "
                             f"Without a job server, Beam would download a {target} job-server jar from Maven "
                             f"and need Java in the pod; without a worker pool, Docker inside the {target} workers")
        return ["--runner=PortableRunner", f"--job_endpoint={args.beam_master}", "--environment_type=EXTERNAL",
                f"--environment_config={args.beam_worker_pool}", *extra]
    raise UsageError(f"--beam-target must be one of {BEAM_TARGETS}, got {target!r}")


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
    if os.path.dirname(os.path.abspath(schema_file)) != paths.SCHEMAS_DIR:
        raise UsageError(f"--schema {schema_file}: the pipeline image holds only the files of {paths.SCHEMAS_DIR}; "
                         f"copy the schema there and rebuild the image, or pass --schema-in-pipeline PATH "
                         f"(a path the steps can read, e.g. on the volume)")
    return os.path.join(IMAGE_SCHEMAS_DIR, os.path.basename(schema_file))


def run_parameter_defaults(args: argparse.Namespace) -> Dict[str, Any]:
    """The run-time parameters' defaults: the compile flags of the same name (args.settings: the
    PipelineSettings parse_args built)."""
    return {"data_root": args.data_root, "min_accuracy": args.settings.thresholds.min_accuracy,
            "epochs": args.settings.training.epochs, "retrain_always": int(args.settings.retrain_always)}


def build_pipeline(args: argparse.Namespace):
    """create_pipeline with the run-time parameters and the Trainer's resources."""
    from tfx import v1 as tfx
    from components import caching
    from pipeline import pipeline as wiring
    defaults = run_parameter_defaults(args)
    parameters = {name: tfx.dsl.experimental.RuntimeParameter(name=name, ptype=ptype, default=defaults[name])
                  for name, ptype in RUN_PARAMETERS.items()}
    pipeline = wiring.create_pipeline(
        pipeline_name=configs.PIPELINE_NAME, pipeline_root=args.pipeline_root, state_root=args.state_root,
        data_root=parameters["data_root"], epochs=parameters["epochs"], retrain_always=parameters["retrain_always"],
        min_accuracy=parameters["min_accuracy"], settings=args.settings,
        code_fingerprint=caching.project_fingerprint(args.schema), run_id=KFP_RUN_ID,
        serving_dir=os.path.join(args.serving_root, configs.MODEL_NAME), schema_file=args.schema,
        schema_file_in_pipeline=args.schema_in_pipeline or schema_path_in_image(args.schema),
        beam_pipeline_args=beam_args(args))
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
              f"with --trainer-image (pipeline/kubeflow/Dockerfile, VARIANT=gpu)", file=sys.stderr)
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
    # KFP's backend never reads this (the run's pipeline_root, which submit and schedule pass, or the
    # kfp-launcher ConfigMap's, decides); the UI pre-fills its run form with it, so both agree.
    spec["defaultPipelineRoot"] = args.pipeline_root
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
