"""Runs a compiled KFP pipeline spec on this machine, each step in a container of the pipeline image,
the way open-source KFP v2's driver and launcher run it (kubeflow/pipelines backend/src/v2):

- the pipeline root is the run's (root_dag.go: the run's runtime config, as `submit` sets it), an
  object-store URI; the artifacts live in an S3 API server on loopback (pipeline/kubeflow/object_store.py);
- steps run in dependency order, each with the spec's own command and arguments, the `{{$}}`
  placeholder replaced by the step's ExecutorInput, whose URIs stay remote;
- output artifact URIs are <pipeline root>/<pipeline>/<run id>/<task>/<uuid>/<output> (driver
  provisionOutputs), and the executor output file is LocalPathForURI(task root)/output_metadata.json
  (driver.go, KFP 2.15+);
- the launcher's part runs here, around each container (launcher_v2.go, pipeline/kubeflow/launcher.py):
  downloadArtifacts copies every object under each input's prefix to its LocalPathForURI in a folder
  of the step's own, mounted at /minio (or /s3, /gcs) and nothing else of the run; prepareOutputFolders
  makes each output's parent folder; after the step, mergeRuntimeArtifacts takes the URI and metadata
  the executor output reports, and uploadOutputArtifacts uploads each output's local folder, files
  only; an input or output URI without a known scheme is skipped with the launcher's warning;
- input artifacts are the upstream steps' outputs as the driver reads them back from ML Metadata:
  the URI, the metadata merged from the executor output with every number a double, the id as name,
  and the type the v2 backend gives them: a `system.*` title, or an empty instance schema;
- parameters come from the run's values, else the spec's defaults, else the task's constants;
- a trigger condition is evaluated with CEL (the `common-expression-language` package) against the
  step's ExecutorInput, as the driver does; a false one skips the step;
- the volume of the spec's Kubernetes platform spec is a host folder, bind-mounted at its mount path:
  the state that outlives a run (images, serving/, baselines, checkpoints), never an artifact.

kfp.local is not used: it rebuilds downstream inputs as `system.Artifact` only, and it evaluates no
condition on artifact metadata (it warns and treats it as false), so a Pusher would be skipped silently.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from typing import Any, Dict, List

from pipeline.kubeflow import launcher
from pipeline.kubeflow.compile import KFP_RUN_ID
# The titles the v2 backend gives TFX's types once they have been through ML Metadata. Distinct TFX
# types share one: only the step's input definitions tell them apart (pipeline/kubeflow/entrypoint.py).
SYSTEM_TITLES = {"tfx.Examples": "system.Dataset", "tfx.Model": "system.Model"}
INPUT_TYPE_MODES = ("system", "empty")


class StepFailed(RuntimeError):
    """A step's container exited non-zero, or the driver could not prepare it."""


def task_order(spec: Dict[str, Any]) -> List[str]:
    """The root DAG's tasks, each after every task it depends on (ties by name)."""
    tasks = spec["root"]["dag"]["tasks"]
    done, order = set(), []
    while len(order) < len(tasks):
        ready = sorted(name for name, task in tasks.items()
                       if name not in done and set(task.get("dependentTasks", [])) <= done)
        if not ready:
            raise StepFailed(f"the tasks {sorted(set(tasks) - done)} depend on each other in a cycle")
        order.append(ready[0])
        done.add(ready[0])
    return order


def _title(artifact_type: Dict[str, Any]) -> str:
    from pipeline.kubeflow.entrypoint import type_title
    return type_title(artifact_type)


def as_read_back(artifact: Dict[str, Any], artifact_id: int, mode: str) -> Dict[str, Any]:
    """An upstream output as the driver hands it to a downstream step (metadata.toRuntimeArtifact)."""
    metadata = {key: float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
                for key, value in (artifact.get("metadata") or {}).items()}
    metadata.setdefault("display_name", artifact["name"])
    declared = _title(artifact.get("type") or {})
    artifact_type = ({"schemaTitle": SYSTEM_TITLES.get(declared, "system.Artifact")} if mode == "system"
                     else {"instanceSchema": ""})
    return {"name": str(artifact_id), "uri": artifact["uri"], "type": artifact_type, "metadata": metadata}


def parameter_values(task: Dict[str, Any], run_parameters: Dict[str, Any], run_id: str = "") -> Dict[str, Any]:
    """The task's parameters as the driver resolves them (resolve.go): the run's values, constants, and
    the run's id for a constant that is exactly {{$.pipeline_job_uuid}}."""
    values = {}
    for name, source in task.get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in source:
            values[name] = run_parameters[source["componentInputParameter"]]
        elif "runtimeValue" in source:
            constant = source["runtimeValue"]["constant"]
            values[name] = run_id if constant == KFP_RUN_ID else constant
        else:
            raise StepFailed(f"parameter {name!r}: only pipeline parameters and constants are supported, got {source}")
    return values


def executor_input(task_name: str, spec: Dict[str, Any], run_root: str, run_parameters: Dict[str, Any],
                   read_back: Dict[str, Dict[str, Dict[str, Any]]], run_id: str = "") -> Dict[str, Any]:
    """The ExecutorInput the driver builds for one task of the run run_id."""
    task = spec["root"]["dag"]["tasks"][task_name]
    component = spec["components"][task["componentRef"]["name"]]
    artifacts = {}
    for name, source in task.get("inputs", {}).get("artifacts", {}).items():
        upstream = source["taskOutputArtifact"]
        artifacts[name] = {"artifacts": [read_back[upstream["producerTask"]][upstream["outputArtifactKey"]]]}
    task_root = f"{run_root}/{task_name}/{uuid.uuid4()}"
    outputs = {name: {"artifacts": [{"name": name, "uri": f"{task_root}/{name}", "type": output["artifactType"],
                                     **({"metadata": output["metadata"]} if "metadata" in output else {})}]}
               for name, output in component.get("outputDefinitions", {}).get("artifacts", {}).items()}
    return {"inputs": {"parameterValues": parameter_values(task, run_parameters, run_id), "artifacts": artifacts},
            "outputs": {"artifacts": outputs, "outputFile": launcher.task_output_file(task_root)}}


def condition_holds(condition: str, executor_input_: Dict[str, Any]) -> bool:
    """The driver's expression.Condition: CEL over the ExecutorInput's fields. A missing key or a
    non-boolean result is an error, as in the driver, not a silent false."""
    import cel
    try:
        result = cel.evaluate(condition, {"inputs": executor_input_["inputs"], "outputs": executor_input_["outputs"]})
    except Exception as error:  # pylint: disable=broad-except  (the CEL library raises plain errors)
        raise StepFailed(f"condition {condition!r}: evaluation error: {type(error).__name__}: {error}") from error
    if not isinstance(result, bool):
        raise StepFailed(f"condition {condition!r}: return type is not bool, got {result!r}")
    return result


def substitute(args: List[str], executor_input_: Dict[str, Any]) -> List[str]:
    """The launcher's placeholders: `{{$}}`, and the inputs' parameter values and artifact URIs."""
    placeholders = {"{{$}}": json.dumps(executor_input_)}
    for name, value in executor_input_["inputs"]["parameterValues"].items():
        placeholders[f"{{{{$.inputs.parameters['{name}']}}}}"] = value if isinstance(value, str) else json.dumps(value)
    for side in ("inputs", "outputs"):
        for name, artifact_list in executor_input_[side]["artifacts"].items():
            placeholders[f"{{{{$.{side}.artifacts['{name}'].uri}}}}"] = artifact_list["artifacts"][0]["uri"]
    substituted = []
    for arg in args:
        for key, value in placeholders.items():
            arg = arg.replace(key, value)
        substituted.append(arg)
    return substituted


def volume_mounts(platform: Dict[str, Any], executor_label: str, volumes: Dict[str, str]) -> Dict[str, str]:
    """mount path -> host folder, for the executor's pvcMount entries: each claim is a host folder."""
    config = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    mounts = {}
    for mount in config.get(executor_label, {}).get("pvcMount", []):
        claim = mount.get("constant") or mount.get("taskOutputParameter") or mount.get("componentInputParameter")
        if claim not in volumes:
            raise StepFailed(f"{executor_label} mounts the volume claim {claim!r}, which has no host folder")
        mounts[mount["mountPath"]] = volumes[claim]
    return mounts


class Run:
    """One run of a compiled spec; run() executes it and returns the per-step record."""

    def __init__(self, spec: Dict[str, Any], platform: Dict[str, Any], volumes: Dict[str, str],
                 parameters: Dict[str, Any], log_root: str, pipeline_root: str, store=None,
                 input_types: str = "system", docker: str = "docker"):
        """pipeline_root: the run's, an object-store URI (the spec's defaultPipelineRoot is only the
        UI's suggestion, as in KFP); store: the object store's client (object_store.Store)."""
        if input_types not in INPUT_TYPE_MODES:
            raise ValueError(f"input types must be one of {INPUT_TYPE_MODES}, got {input_types!r}")
        self.spec, self.platform, self.volumes, self.docker, self.store = spec, platform, volumes, docker, store
        self.input_types = input_types
        root_parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(parameters) - set(root_parameters)
        if unknown:
            raise ValueError(f"the pipeline has no parameter(s) {sorted(unknown)}; it has {sorted(root_parameters)}")
        self.parameters = {name: parameters.get(name, definition.get("defaultValue"))
                           for name, definition in root_parameters.items()}
        self.run_id = str(uuid.uuid4())
        self.log_dir = os.path.join(log_root, self.run_id)  # each step's log and output file, run.json
        pipeline_root = launcher.check_pipeline_root(pipeline_root)
        self.run_root = f"{pipeline_root}/{spec['pipelineInfo']['name']}/{self.run_id}"
        self._next_id = 1
        self.record: List[Dict[str, Any]] = []  # one entry per step, as far as the run got

    def _container_command(self, task_name: str, executor_input_: Dict[str, Any], staging: str) -> List[str]:
        """docker run for the step: the state volume and the step's own local artifact folders
        (/minio, /s3, /gcs: what the launcher downloaded and will upload), nothing else."""
        task = self.spec["root"]["dag"]["tasks"][task_name]
        label = self.spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = self.spec["deploymentSpec"]["executors"][label]["container"]
        command = container.get("command", [])
        mounts = volume_mounts(self.platform, label, self.volumes)
        for root in launcher.LOCAL_ROOTS.values():
            os.makedirs(launcher.in_staging(staging, root), exist_ok=True)
            mounts[root.rstrip("/")] = launcher.in_staging(staging, root)
        volumes = [arg for mount, host in mounts.items() for arg in ("-v", f"{host}:{mount}")]
        return [self.docker, "run", "--rm", "--network", "none", "--name", f"kfp-{self.run_id[:8]}-{task_name}",
                *volumes, *(["--entrypoint", command[0]] if command else []), container["image"],
                *command[1:], *substitute(container.get("args", []), executor_input_)]

    def _read_back(self, outputs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
        read_back = {}
        for name, artifact in outputs.items():
            read_back[name] = as_read_back(artifact, self._next_id, self.input_types)
            self._next_id += 1
        return read_back

    def run(self, say=print, parallel: int = 0) -> List[Dict[str, Any]]:
        """Every step once its upstream steps are done, as KFP's DAG driver does: independent steps
        at the same time, up to parallel of them (default: one per CPU core). After a failed step,
        no step starts; those running are waited for; then StepFailed says which one failed."""
        os.makedirs(self.log_dir, exist_ok=True)
        self._started, self._say = time.time(), say
        tasks, read_back = self.spec["root"]["dag"]["tasks"], {}
        pending, done, running, failure = task_order(self.spec), set(), {}, ""
        while pending or running:
            for task_name in [name for name in pending if set(tasks[name].get("dependentTasks", [])) <= done]:
                if failure or len(running) >= (parallel or os.cpu_count() or 1):
                    break
                pending.remove(task_name)
                started = self._start(task_name, read_back)
                if started is None:
                    done.add(task_name)  # not triggered: what depends on it is not triggered either
                else:
                    running[task_name] = started
            if not running:
                if failure or not pending:
                    break
                continue  # a step just marked not triggered may have made others ready
            finished = self._wait_for_one(running)
            failure = self._finish(finished, *running.pop(finished), read_back) or failure
            done.add(finished)
        if failure:
            raise StepFailed(failure)
        return self.record

    def _log(self, text: str) -> None:
        self._say(f"[{time.time() - self._started:7.1f}s] {text}")

    def _start(self, task_name: str, read_back: Dict[str, Any]):
        """Starts the step's container, or records why it does not run (then returns None)."""
        step = {"step": task_name}
        self.record.append(step)
        upstream = self.spec["root"]["dag"]["tasks"][task_name].get("dependentTasks", [])
        not_run = [name for name in upstream if name not in read_back]
        if not_run:  # a step after one its condition skipped does not run either
            step.update(status="not_triggered", condition=f"upstream {not_run} did not run")
            self._log(f"{task_name} not triggered: {not_run} did not run")
            return None
        inputs = executor_input(task_name, self.spec, self.run_root, self.parameters, read_back, self.run_id)
        condition = self.spec["root"]["dag"]["tasks"][task_name].get("triggerPolicy", {}).get("condition")
        if condition and not condition_holds(condition, inputs):
            step.update(status="not_triggered", condition=condition)
            self._log(f"{task_name} not triggered: {condition} is false")
            return None
        step["input_types"] = {name: _title(lst["artifacts"][0]["type"]) or "(empty instance schema)"
                               for name, lst in inputs["inputs"]["artifacts"].items()}
        outputs_dir = os.path.join(self.log_dir, task_name)
        os.makedirs(outputs_dir, exist_ok=True)
        with open(os.path.join(outputs_dir, "executor_input.json"), "w") as f:
            json.dump(inputs, f, indent=1)  # what the step was handed, to replay or read
        step["log"] = os.path.join(self.log_dir, f"{task_name}.log")
        staging = os.path.join(outputs_dir, "local")  # the step's /minio: its inputs, then its outputs
        step_started = time.time()
        step["downloaded_files"] = launcher.download_artifacts(inputs, self.store, staging, self._log)
        try:
            launcher.prepare_output_folders(inputs, staging)
        except ValueError as error:
            raise StepFailed(f"{task_name}: {error}") from error
        self._log(f"{task_name} started in a container (log: {step['log']})")
        with open(step["log"], "w") as log:
            process = subprocess.Popen(self._container_command(task_name, inputs, staging), stdout=log,
                                       stderr=subprocess.STDOUT)
        return process, step, inputs, outputs_dir, step_started

    @staticmethod
    def _wait_for_one(running: Dict[str, Any]) -> str:
        """A finished step, a failed one first: steps that ended within one poll must not let a success
        start the next steps before the failure beside it is seen."""
        while True:
            finished = [name for name, (process, *_) in running.items() if process.poll() is not None]
            if finished:
                return min(finished, key=lambda name: running[name][0].returncode == 0)
            time.sleep(0.2)

    def _finish(self, task_name: str, process, step: Dict[str, Any], inputs: Dict[str, Any], outputs_dir: str,
                step_started: float, read_back: Dict[str, Any]) -> str:
        """Records a finished step and its outputs; returns why it failed, or ''."""
        step["seconds"] = round(time.time() - step_started, 1)
        if process.returncode != 0:
            step["status"] = "failed"
            with open(step["log"]) as f:
                tail = f.read()[-2000:]
            self._log(f"{task_name} failed after {step['seconds']:.1f}s")
            return f"step {task_name} exited with code {process.returncode}; the end of {step['log']}:\n{tail}"
        staging = os.path.join(outputs_dir, "local")
        output_file = launcher.in_staging(staging, inputs["outputs"]["outputFile"])
        if os.path.exists(output_file):
            shutil.copy(output_file, os.path.join(outputs_dir, launcher.OUTPUT_METADATA_FILENAME))
        outputs = launcher.merge_outputs(inputs["outputs"]["artifacts"], output_file)
        step["uploaded_files"] = launcher.upload_output_artifacts(outputs, self.store, staging, self._log)
        shutil.rmtree(staging)  # the pod's disk: gone with the pod
        step["seconds"] = round(time.time() - step_started, 1)  # with the launcher's copies, as in a pod
        step["status"] = "succeeded"
        step["inputs"] = {name: lst["artifacts"][0]["uri"] for name, lst in inputs["inputs"]["artifacts"].items()}
        step["outputs"] = {name: artifact["uri"] for name, artifact in outputs.items()}
        step["metadata"] = {name: artifact.get("metadata") or {} for name, artifact in outputs.items()}
        read_back[task_name] = self._read_back(outputs)
        self._log(f"{task_name} finished in {step['seconds']:.1f}s")
        return ""


def outcome(record: List[Dict[str, Any]], error: str = "") -> Dict[str, str]:
    """The run's status as a local run names it, and why, from what its steps reported."""
    steps = {step["step"]: step for step in record}
    decision = (steps.get("RetrainGate", {}).get("metadata") or {}).get("decision") or {}
    if error:
        return {"status": "failed", "reason": error.splitlines()[0]}
    if decision.get("retrain") == 0:
        return {"status": "unchanged", "reason": decision.get("reason", "")}
    pushed = (steps.get("Pusher", {}).get("metadata") or {}).get("pushed_model") or {}
    if pushed.get("pushed") == 1:
        return {"status": "pushed", "reason": f"version {int(pushed['pushed_version'])} is the champion"}
    if pushed.get("superseded") == 1:
        from components.model_pusher import superseded_line  # pylint: disable=import-outside-toplevel
        return {"status": "superseded", "reason": superseded_line(int(pushed.get("champion_version_seen", 0)),
                                                                  int(pushed["pushed_version"]))}
    if pushed.get("already_serving") == 1 or pushed.get("held") == 1:
        status = "already_serving" if pushed.get("already_serving") == 1 else "held"
        return {"status": status, "reason": f"version {int(pushed['pushed_version'])} stays the champion"}
    return {"status": "not_blessed", "reason": "the Evaluator did not bless the model; the Pusher did not run"}


def check_engine(docker: str = "docker") -> None:
    """A clear error when no container engine answers."""
    try:
        result = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    except FileNotFoundError as error:
        raise StepFailed(f"no container engine: {docker!r} is not installed (bin/in-env bash bin/docker-up "
                         f"installs and starts one)") from error
    if result.returncode != 0:
        raise StepFailed(f"no container engine answers ({result.stderr.strip()[:300]}); start one with "
                         f"bin/in-env bash bin/docker-up")


if __name__ == "__main__":
    sys.exit("run it with: python -m pipeline.kubeflow_runner run-local --image IMAGE --volume DIR")
