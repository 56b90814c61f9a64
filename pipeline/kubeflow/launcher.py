"""What open-source KFP v2's launcher does with artifact URIs, ported from its Go source
(kubeflow/pipelines, backend/src/v2/component/launcher_v2.go and backend/src/v2/objectstore/), each
function named after the one it follows. Both sides use it: the step entrypoint in the pipeline image
(pipeline/kubeflow/entrypoint.py) and run-local's launcher on this machine (pipeline/kubeflow/local_run.py).

The contract a step works under:
- the pipeline root is an object-store URI; every artifact's URI is under it;
- before the command, every input artifact's objects are copied to LocalPathForURI(uri)
  (downloadArtifacts), and the parent folder of every output's local path is made
  (prepareOutputFolders);
- the ExecutorInput the command receives (`{{$}}`) keeps the remote URIs;
- after the command, a URI the executor output reports replaces the provisioned one
  (mergeRuntimeArtifacts), and each output's local folder is uploaded, files only
  (uploadOutputArtifacts): an empty folder is lost; a URI without a known scheme is not uploaded,
  only logged, and still recorded in ML Metadata.
"""
import os
from typing import Any, Dict, Optional

from models import files

# objectstore/config.go ParseBucketPathToConfig: the schemes a pipeline root may have (mem:// is
# parsed, then refused as a provider).
OBJECT_STORE_SCHEMES = ("gs://", "s3://", "minio://")
# LocalPathForURI: where each scheme's objects are, inside the step's container.
LOCAL_ROOTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
# driver.go: the executor output file when the task root has no known scheme (before KFP 2.15, always).
LEGACY_OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"
OUTPUT_METADATA_FILENAME = "output_metadata.json"


def local_path_for_uri(uri: str) -> Optional[str]:
    """LocalPathForURI: the local path of an artifact URI, or None for a scheme it does not know
    (oci:// is KFP's too, for model cars; no TFX artifact is one)."""
    for scheme, root in LOCAL_ROOTS.items():
        if uri.startswith(scheme):
            return root + uri[len(scheme):]
    return None


def remote_uri_for_local_path(path: str) -> Optional[str]:
    """The inverse of local_path_for_uri, or None for a path under no scheme's root."""
    for scheme, root in LOCAL_ROOTS.items():
        if path.startswith(root):
            return scheme + path[len(root):]
    return None


def check_pipeline_root(root: str) -> str:
    """ParseBucketPathToConfig's checks, with the reason in words: KFP refuses any other root before
    a step runs ("unrecognized pipeline root format", "unsupported Cloud bucket")."""
    scheme, sep, rest = root.partition("://")
    if not sep:
        raise ValueError(f"pipeline root {root!r} is a path; Kubeflow Pipelines keeps artifacts in an object "
                         f"store and refuses a path ('unrecognized pipeline root format'): give "
                         f"minio://BUCKET/PATH, s3://BUCKET/PATH or gs://BUCKET/PATH")
    if f"{scheme}://" not in OBJECT_STORE_SCHEMES:
        raise ValueError(f"pipeline root {root!r}: Kubeflow Pipelines' launcher knows {', '.join(OBJECT_STORE_SCHEMES)} "
                         f"and refuses {scheme}:// ('unsupported Cloud bucket')")
    if not rest.split("/", 1)[0]:
        raise ValueError(f"pipeline root {root!r} names no bucket")
    return root.rstrip("/")


def task_output_file(task_root_uri: str) -> str:
    """driver.go: the executor output file is LocalPathForURI(task root)/output_metadata.json (KFP 2.15+)."""
    local = local_path_for_uri(task_root_uri)
    return f"{local}/{OUTPUT_METADATA_FILENAME}" if local else LEGACY_OUTPUT_FILE


# The launcher's copies, as run-local performs them around each container: the step's local paths
# are below its staging folder on this machine (in_staging), the store is object_store.Store.

def merge_outputs(provisioned: Dict[str, Any], output_file: str) -> Dict[str, Dict[str, Any]]:
    """The step's output artifacts: the provisioned ones, with the URI and metadata the executor
    reported merged in (launcher mergeRuntimeArtifacts)."""
    reported = files.read_json_if_exists(output_file, {}).get("artifacts", {})
    merged = {}
    for name, artifact_list in provisioned.items():
        artifact = dict(artifact_list["artifacts"][0])
        for update in (reported.get(name) or {}).get("artifacts", [])[:1]:
            artifact["uri"] = update.get("uri") or artifact["uri"]
            artifact["metadata"] = {**(artifact.get("metadata") or {}), **(update.get("metadata") or {})}
        merged[name] = artifact
    return merged


def in_staging(staging: str, local_path: str) -> str:
    """Where a container's local path (/minio/…) is on this machine: below the step's staging folder."""
    return os.path.join(staging, local_path.lstrip("/"))


def download_artifacts(executor_input_: Dict[str, Any], store, staging: str, say) -> Dict[str, int]:
    """downloadArtifacts: every input's objects to its local path; returns files per input."""
    copied = {}
    for name, artifact_list in executor_input_["inputs"]["artifacts"].items():
        for artifact in artifact_list["artifacts"]:
            local = local_path_for_uri(artifact["uri"])
            if local is None:
                say(f'Input Artifact "{name}" does not have a recognized storage URI "{artifact["uri"]}". '
                    f"Skipping downloading to local path.")
                continue
            copied[name] = store.download_blob(artifact["uri"], in_staging(staging, local))
    return copied


def prepare_output_folders(executor_input_: Dict[str, Any], staging: str) -> None:
    """prepareOutputFolders: the parent folder of every output's local path (TFX's value artifacts,
    e.g. DataGate's, are written without making it), and of the executor output file."""
    for name, artifact_list in executor_input_["outputs"]["artifacts"].items():
        local = local_path_for_uri(artifact_list["artifacts"][0]["uri"])
        if local is None:
            raise ValueError(f"failed to generate local storage path for output artifact {name!r}")
        os.makedirs(os.path.dirname(in_staging(staging, local)), exist_ok=True)
    os.makedirs(os.path.dirname(in_staging(staging, executor_input_["outputs"]["outputFile"])), exist_ok=True)


def upload_output_artifacts(outputs: Dict[str, Dict[str, Any]], store, staging: str, say) -> Dict[str, int]:
    """uploadOutputArtifacts, after mergeRuntimeArtifacts: each output's local folder (of its URI as
    merged) to that URI, files only; a URI without a known scheme is skipped and still recorded.
    Returns files per output."""
    uploaded = {}
    for name, artifact in outputs.items():
        local = local_path_for_uri(artifact["uri"])
        if local is None:
            say(f'Output Artifact "{name}" does not have a recognized storage URI "{artifact["uri"]}". '
                f"Skipping uploading to remote storage.")
            uploaded[name] = 0
            continue
        try:
            uploaded[name] = store.upload_blob(in_staging(staging, local), artifact["uri"])
        except FileNotFoundError:  # "We allow components to not produce output files"
            say(f'Local filepath "{local}" does not exist')
            uploaded[name] = 0
    return uploaded
