"""The pipeline image's entrypoint on Kubeflow: gives each input artifact back its TFX type, then runs
TFX's own entrypoint (kubeflow_v2_run_executor) with the same arguments.

Open-source KFP's v2 driver hands a step its upstream artifacts typed by a `system.*` title
(`system.Dataset`, `system.Model`, `system.Artifact`, ...) or by an empty instance schema. TFX's
entrypoint imports the class the title names, so it fails on both (ImportError on `system`, or an
error on the empty schema). The title cannot be mapped back, because distinct TFX types collapse
into one (Examples and Dataset both become `system.Dataset`). So the type comes from the step's own
input definitions, which TFX compiles into the step's arguments (--json_serialized_inputs_spec_args),
and failing that from the artifact's metadata (`split_names`: Examples).

This module imports no TFX: it rewrites the ExecutorInput argument and replaces itself with TFX's
entrypoint, so a step costs one Python start-up, as before.
"""
import json
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

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


def rewrite_arguments(argv: List[str]) -> Tuple[List[str], List[str]]:
    """TFX entrypoint arguments with every input typed; and the lines saying what changed."""
    found = _flag(argv, INVOCATION_FLAG)
    if found is None:
        raise UntypedInputError(f"no {INVOCATION_FLAG} argument: this is TFX's step entrypoint, run by Kubeflow")
    index, value = found
    executor_input = json.loads(value)
    spec = _flag(argv, INPUTS_SPEC_FLAG)
    declared = declared_input_types(json.loads(spec[1])) if spec else {}
    lines = restore_input_types(executor_input, declared)
    argv = list(argv)
    rewritten = json.dumps(executor_input)
    argv[index] = rewritten if argv[index] == value else f"{INVOCATION_FLAG}={rewritten}"
    return argv, lines


def main(argv: List[str]) -> None:
    try:
        arguments, lines = rewrite_arguments(argv)
    except (UntypedInputError, json.JSONDecodeError) as error:
        print(f"kfp_entrypoint: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    for line in lines:
        print(f"kfp_entrypoint: {line}", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", TFX_ENTRYPOINT, *arguments])


if __name__ == "__main__":
    main(sys.argv[1:])
