"""Builds last_run.json from what the run recorded in ML Metadata and wrote in its artifacts."""
import datetime
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow_data_validation as tfdv
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.evaluation import CHAMPION_SKIPPED_PROPERTY, read_evaluation
from components.artifacts import serving_model_path
from components.lite_models import read_quality
from components.model_pusher import (ALREADY_SERVING_PROPERTY, DESTINATION_PROPERTY, HELD_PROPERTY, PUSHED_PROPERTY,
                                     SUPERSEDED_PROPERTY, TFLITE_DIR, superseded_line)
from components.evaluation import COMPARED_WITH_PROPERTY
from components.retrain_gate import REASON_PROPERTY, RETRAIN_PROPERTY
from components.data_gate import read_anomalies
from models import features, files
from models.labels import read_labels
from models.model import read_facts

OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def _node_outputs(store: metadata_store.MetadataStore, execution_id: int) -> Dict[str, List[Any]]:
    """{output key: [artifact]} of one execution."""
    events = [e for e in store.get_events_by_execution_ids([execution_id]) if e.type in OUTPUT_EVENTS]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    outputs: Dict[str, List[Any]] = {}
    for event in events:
        key = event.path.steps[0].key if event.path.steps else ""
        outputs.setdefault(key, []).append(artifacts[event.artifact_id])
    return outputs


def run_nodes(metadata_path: str, pipeline_name: str, run_id: str) -> Dict[str, Dict[str, Any]]:
    """{node id: {'seconds', 'state', 'outputs'}} of the pipeline run with this TFX run id (the one
    the runner gave it), or {} when the run recorded nothing: never another run's."""
    store = metadata_store.MetadataStore(metadata_store_pb2.ConnectionConfig(
        sqlite=metadata_store_pb2.SqliteMetadataSourceConfig(filename_uri=metadata_path)))
    run = store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is None:
        return {}
    run_execution_ids = {e.id for e in store.get_executions_by_context(run.id)}
    nodes = {}
    prefix = f"{pipeline_name}."
    for node in store.get_contexts_by_type("node"):
        if not node.name.startswith(prefix):
            continue
        executions = [e for e in store.get_executions_by_context(node.id) if e.id in run_execution_ids]
        if not executions:
            continue
        execution = max(executions, key=lambda e: e.id)
        nodes[node.name[len(prefix):]] = {
            "seconds": round((execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000, 1),
            "state": metadata_store_pb2.Execution.State.Name(execution.last_known_state),
            "outputs": _node_outputs(store, execution.id),
        }
    return nodes


def _single(node: Optional[Dict[str, Any]], key: str):
    artifacts = (node or {}).get("outputs", {}).get(key)
    return artifacts[0] if artifacts else None


def _split_counts(statistics) -> Dict[str, int]:
    counts = {}
    for split in json.loads(statistics.properties["split_names"].string_value):
        stats = tfdv.load_stats_binary(os.path.join(features.split_dir(statistics.uri, split), "FeatureStats.pb"))
        counts[split] = int(stats.datasets[0].num_examples)
    return counts


def _read_examples(summary: Dict[str, Any], examples) -> None:
    summary["artifacts"]["examples"] = examples.uri
    report = files.read_json_if_exists(os.path.join(examples.uri, features.INGEST_REPORT_FILENAME))
    if report:
        summary.update(classes=report["classes"], layout=report["layout"],
                       data_fingerprint=report["data_fingerprint"], file_counts=report["counts"],
                       ingested_per_class=report["accepted"], rejected_files=report["rejected"],
                       ignored_files=report["ignored"], converted_files=report["converted"],
                       identical_files=report.get("identical_files", []), split_leaks=report.get("split_leaks", 0))


def _read_statistics(summary: Dict[str, Any], statistics) -> None:
    summary["artifacts"]["statistics"] = statistics.uri
    summary["examples_per_split"] = _split_counts(statistics)


def _read_anomalies(summary: Dict[str, Any], anomalies) -> None:
    summary["anomalies"] = read_anomalies(anomalies.uri, json.loads(anomalies.properties["split_names"].string_value))


def _read_class_balance(summary: Dict[str, Any], class_balance) -> None:
    summary["class_balance"] = files.read_json(class_balance.uri)  # a value artifact: the uri is the file


def _read_model(summary: Dict[str, Any], model) -> None:
    summary["trained_model"] = serving_model_path(model.uri)  # what `pipeline.promote force` publishes


def _read_model_run(summary: Dict[str, Any], model_run) -> None:
    summary["artifacts"]["model_run"] = model_run.uri  # TensorBoard logs, throughput.json
    facts = read_facts(model_run.uri)
    if facts and "started_from" in facts:  # --warm-start: the champion version, or why not
        summary["started_from"] = facts["started_from"]


def _read_lite_models(summary: Dict[str, Any], lite_models) -> None:
    summary["tflite"] = read_quality(lite_models.uri)


def _read_evaluation(summary: Dict[str, Any], evaluation) -> None:
    labels = read_labels(os.path.join(summary["artifacts"]["examples"], features.LABELS_FILENAME))
    summary["evaluation"] = read_evaluation(evaluation.uri, labels)
    if CHAMPION_SKIPPED_PROPERTY in evaluation.custom_properties:
        summary["evaluation"]["champion_skipped"] = evaluation.custom_properties[CHAMPION_SKIPPED_PROPERTY].string_value


def _read_blessing(summary: Dict[str, Any], blessing) -> None:
    summary["blessed"] = blessing.custom_properties["blessed"].int_value == 1


# What the summary takes from each stage's output, in the pipeline's order: (stage, output key, reader).
# A stage that did not run, or an output it did not write, is left out.
STAGE_READERS = (
    ("ImageFolderExampleGen", "examples", _read_examples),
    ("StatisticsGen", "statistics", _read_statistics),
    ("ExampleValidator", "anomalies", _read_anomalies),
    ("DataGate", "class_balance", _read_class_balance),
    ("Trainer", "model", _read_model),
    ("Trainer", "model_run", _read_model_run),
    ("LiteModels", "lite_models", _read_lite_models),
    ("Evaluator", "evaluation", _read_evaluation),
    ("Evaluator", "blessing", _read_blessing),
)


def summarize(nodes: Dict[str, Dict[str, Any]], *, run_id: str, data_root: str, output_dir: str,
              schema_file: str, started: float, error: Optional[BaseException] = None,
              thresholds: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """last_run.json's content: the run's facts, then what each stage wrote (STAGE_READERS), then its outcome."""
    summary: Dict[str, Any] = {
        "run_id": run_id, "status": "failed" if error else "not_blessed",
        "started_at": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "data_root": data_root, "output_dir": output_dir, "schema": schema_file,
        "error": f"{type(error).__name__}: {error}" if error else None,
        "stage_seconds": {name: node["seconds"] for name, node in nodes.items()},
        "cached_stages": [name for name, node in nodes.items() if node["state"] == "CACHED"],
        "blessed": False, "pushed": False, "pushed_paths": {}, "thresholds": thresholds or {},
        "artifacts": {},  # where the run report finds its inputs
    }
    for stage, key, read in STAGE_READERS:
        artifact = _single(nodes.get(stage), key)
        if artifact is not None:
            read(summary, artifact)
    _add_outcome(summary, nodes, error)
    return summary


def _is_set(artifact, name: str) -> bool:
    """The artifact's integer custom property `name` is 1 (False when either is missing)."""
    return artifact is not None and name in artifact.custom_properties and \
        artifact.custom_properties[name].int_value == 1


def _add_outcome(summary: Dict[str, Any], nodes: Dict[str, Dict[str, Any]], error: Optional[BaseException]) -> None:
    """The RetrainGate's decision, what the Pusher did, and the run's status from them."""
    decision = _single(nodes.get("RetrainGate"), "decision")
    unchanged = decision is not None and decision.custom_properties[RETRAIN_PROPERTY].int_value == 0
    if decision is not None:
        summary["retrain"] = {"retrain": not unchanged,
                              "reason": decision.custom_properties[REASON_PROPERTY].string_value}
    pushed = _single(nodes.get("Pusher"), "pushed_model")
    already_serving, held, superseded = (_is_set(pushed, name) for name in
                                         (ALREADY_SERVING_PROPERTY, HELD_PROPERTY, SUPERSEDED_PROPERTY))
    if superseded:
        champion_version = int(os.path.basename(pushed.custom_properties[DESTINATION_PROPERTY].string_value))
        summary["superseded"] = superseded_line(pushed.custom_properties[COMPARED_WITH_PROPERTY].int_value,
                                                champion_version)
    if pushed is not None and (pushed.custom_properties[PUSHED_PROPERTY].int_value == 1 or already_serving or held):
        version_dir = pushed.custom_properties[DESTINATION_PROPERTY].string_value
        summary["pushed"] = not (already_serving or held)
        summary["pushed_paths"] = {"saved_model": version_dir, "tflite": os.path.join(version_dir, TFLITE_DIR),
                                   "labels": os.path.join(version_dir, features.LABELS_FILENAME)}
    if not error:
        summary["status"] = ("unchanged" if unchanged else "superseded" if superseded else
                             "pushed" if summary["pushed"] else "already_serving" if already_serving
                             else "held" if held else "not_blessed")
