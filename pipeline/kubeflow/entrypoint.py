"""The pipeline image's entrypoint on Kubeflow: every step's command. It makes TFX's executors work
under KFP's launcher contract (pipeline/kubeflow/launcher.py), then runs TFX's own entrypoint
(kubeflow_v2_run_executor):

1. each input artifact gets back its TFX type (below);
2. each artifact URI (minio://, s3://, gs://) is replaced by the local path the launcher downloads
   the input to, or uploads the output from (LocalPathForURI): TensorFlow 2.21 and Beam cannot open
   minio:// or s3:// themselves, and the objects are on the local path anyway. An input with no
   objects (an empty artifact: the launcher uploads files only) gets an empty folder, as it had;
3. after TFX's executor, the executor output's URIs are made remote again, so that the launcher
   uploads each output from its local folder to the URI it provisioned (mergeRuntimeArtifacts would
   otherwise record the local path, which is not uploaded and which no later step can read).

Open-source KFP's v2 driver hands a step its upstream artifacts typed by a `system.*` title
(`system.Dataset`, `system.Model`, `system.Artifact`, ...) or by an empty instance schema. TFX's
entrypoint imports the class the title names, so it fails on both (ImportError on `system`, or an
error on the empty schema). The title cannot be mapped back, because distinct TFX types collapse
into one (Examples and Dataset both become `system.Dataset`). So the type comes from the step's own
input definitions, which TFX compiles into the step's arguments (--json_serialized_inputs_spec_args),
and failing that from the artifact's metadata (`split_names`: Examples).

This module imports no TFX: it rewrites the ExecutorInput argument, runs TFX's entrypoint as a child
process, and rewrites its output file.
"""
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

from models import files
from pipeline.kubeflow import launcher

TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
INVOCATION_FLAG = "--json_serialized_invocation_args"
INPUTS_SPEC_FLAG = "--json_serialized_inputs_spec_args"
# What an artifact's metadata says of its type when nothing else does: key -> TFX title.
METADATA_HINTS = (("split_names", "tfx.Examples"),)


class UntypedInputError(ValueError):
    """An input whose TFX type neither the step's definitions nor its metadata give."""


def _flag(argv: List[str], flag: str) -> Optional[Tuple[int, str]]:
    """(index of the value, value) of `flag VALUE` or `flag=VALUE` in argv."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith(flag + "="):
            return i, arg[len(flag) + 1:]
    return None


def type_title(artifact_type: Optional[Dict[str, Any]]) -> str:
    """The title a type schema carries: '' when it has none (unset, or an empty instance schema)."""
    artifact_type = artifact_type or {}
    title = artifact_type.get("schemaTitle") or artifact_type.get("schema_title")
    if title:
        return title
    schema = artifact_type.get("instanceSchema") or artifact_type.get("instance_schema") or ""
    for line in schema.splitlines():  # TFX's instance schemas are YAML with a top-level `title:`
        if line.startswith("title:"):
            return line.split(":", 1)[1].strip()
    return ""


def is_tfx_type(artifact_type: Optional[Dict[str, Any]]) -> bool:
    title = type_title(artifact_type)
    return bool(title) and not title.startswith("system.")


def _from_metadata(artifact: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    metadata = artifact.get("metadata") or {}
    for key, title in METADATA_HINTS:
        if key in metadata:
            return {"instanceSchema": f"title: {title}\ntype: object\n"}
    return None


def restore_input_types(executor_input: Dict[str, Any], declared: Dict[str, Dict[str, Any]]) -> List[str]:
    """Gives every input artifact its TFX type, in place; returns one line per input saying how it
    arrived and what it became."""
    lines = []
    for name, artifact_list in sorted((executor_input.get("inputs") or {}).get("artifacts", {}).items()):
        for artifact in artifact_list.get("artifacts", []):
            arrived = type_title(artifact.get("type")) or "an empty type schema"
            if name in declared and is_tfx_type(declared[name]):
                wanted, source = declared[name], "the step's input definitions"
            elif is_tfx_type(artifact.get("type")):
                wanted, source = artifact["type"], None
            else:
                wanted, source = _from_metadata(artifact), "its metadata"
                if wanted is None:
                    raise UntypedInputError(
                        f"input {name!r} arrived typed {arrived}, and neither the step's input definitions nor "
                        f"the artifact's metadata say which TFX type it is")
            if type_title(wanted) == arrived:
                lines.append(f"input {name!r} arrived as {arrived}")
                continue
            artifact["type"] = dict(wanted)
            lines.append(f"input {name!r} arrived as {arrived}; restored {type_title(wanted)} from {source}")
    return lines


def declared_input_types(inputs_spec: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """name -> artifactType, from a ComponentInputsSpec (JSON)."""
    return {name: spec.get("artifactType") or spec.get("artifact_type") or {}
            for name, spec in (inputs_spec.get("artifacts") or {}).items()}


def localize_uris(executor_input: Dict[str, Any]) -> Tuple[Dict[str, str], List[str]]:
    """Every artifact URI with an object-store scheme replaced by its local path, in place; returns
    local path -> remote URI, and one line per input that arrived with no objects."""
    remote_of, lines = {}, []
    for side in ("inputs", "outputs"):
        for name, artifact_list in sorted((executor_input.get(side) or {}).get("artifacts", {}).items()):
            for artifact in artifact_list.get("artifacts", []):
                local = launcher.local_path_for_uri(artifact.get("uri", ""))
                if local is None:
                    lines.append(f"{side[:-1]} {name!r} at {artifact.get('uri')!r} has no object-store scheme; "
                                 f"left as it is (the launcher neither downloads nor uploads it)")
                    continue
                remote_of[local] = artifact["uri"]
                artifact["uri"] = local
                if side == "inputs" and not os.path.exists(local):
                    os.makedirs(local)
                    lines.append(f"input {name!r}: no objects under {remote_of[local]} (an empty artifact); "
                                 f"made its folder {local}")
    return remote_of, lines


def rewrite_arguments(argv: List[str]) -> Tuple[List[str], List[str], Dict[str, Any], Dict[str, str]]:
    """TFX entrypoint arguments with every input typed and every URI local; the lines saying what
    changed; the ExecutorInput as rewritten; and local path -> remote URI."""
    found = _flag(argv, INVOCATION_FLAG)
    if found is None:
        raise UntypedInputError(f"no {INVOCATION_FLAG} argument: this is TFX's step entrypoint, run by Kubeflow")
    index, value = found
    executor_input = json.loads(value)
    spec = _flag(argv, INPUTS_SPEC_FLAG)
    declared = declared_input_types(json.loads(spec[1])) if spec else {}
    lines = restore_input_types(executor_input, declared)
    remote_of, localized = localize_uris(executor_input)
    argv = list(argv)
    rewritten = json.dumps(executor_input)
    argv[index] = rewritten if argv[index] == value else f"{INVOCATION_FLAG}={rewritten}"
    return argv, lines + localized, executor_input, remote_of


def empty_folders(path: str) -> List[str]:
    """Folders under path (itself included) that hold no file at any depth: the launcher uploads files
    only, so they do not reach the store."""
    if not os.path.isdir(path):
        return []
    empty = []
    for folder, _, names in os.walk(path, topdown=False):
        if not names and all(os.path.join(folder, sub) in empty for sub in os.listdir(folder)
                             if os.path.isdir(os.path.join(folder, sub))):
            empty.append(folder)
    return sorted(empty)


def restore_remote_uris(output_file: str, remote_of: Dict[str, str]) -> List[str]:
    """The executor output file with every output's local path replaced by its remote URI (rewritten
    atomically); returns a line per output, and per empty folder that will not be uploaded."""
    lines = []
    output = files.read_json(output_file)
    for name, artifact_list in sorted(output.get("artifacts", {}).items()):
        for artifact in artifact_list.get("artifacts", []):
            local = artifact.get("uri", "")
            remote = remote_of.get(local) or launcher.remote_uri_for_local_path(local)
            if remote:
                artifact["uri"] = remote
                lines.append(f"output {name!r} written to {local}; reported as {remote}")
            lost = empty_folders(local)
            if lost:
                lines.append(f"output {name!r}: {len(lost)} empty folder(s) will not reach the store (the launcher "
                             f"uploads files only): {', '.join(os.path.relpath(p, local) for p in lost)}")
    files.write_json(output_file, output)
    return lines


def _say(lines: List[str]) -> None:
    for line in lines:
        print(f"kfp_entrypoint: {line}", file=sys.stderr, flush=True)


def main(argv: List[str]) -> None:
    try:
        arguments, lines, executor_input, remote_of = rewrite_arguments(argv)
    except (UntypedInputError, json.JSONDecodeError) as error:
        print(f"kfp_entrypoint: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    _say(lines)
    code = subprocess.call([sys.executable, "-m", TFX_ENTRYPOINT, *arguments])
    if code != 0:
        sys.exit(code)
    output_file = (executor_input.get("outputs") or {}).get("outputFile")
    if output_file and os.path.exists(output_file):
        _say(restore_remote_uris(output_file, remote_of))


if __name__ == "__main__":
    main(sys.argv[1:])
