"""DataGate: stops the run before Transform on data that must not reach training.

It collects every problem, then fails once with one message listing them:
- anomalies ExampleValidator found against the curated schema (a class the schema does not know,
  a label out of range, ...);
- a split without usable images, classes of the schema with no images, and classes without usable
  training images;
- class-balance drift against the previous accepted run over a bound;
- with strict, any rejected file.
When the data passes, its class counts become the baseline of the next run's drift check.
"""
import collections
import datetime
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components.image_example_gen import folder_layout
from models.progress import key_figure
from models import features, files

_LISTED_FILES = 20  # a message names at most this many files; last_run.json has them all
GENERIC_ACCEPT_COMMAND = "python -m pipeline.schema --schema <schema file> --data-root <data root>"


def accept_command(schema_file: str, data_root: str) -> str:
    """The one command that accepts the data root's classes into the schema."""
    if not schema_file or not data_root:
        return GENERIC_ACCEPT_COMMAND
    return f"bin/in-env python -m pipeline.schema --schema {schema_file} --data-root {data_root}"


class DataValidationError(RuntimeError):
    """The data must not reach training; the message lists every reason."""


def read_anomalies(anomalies_uri: str, split_names: List[str]) -> Dict[str, List[str]]:
    """{split: ['feature: description', ...]} for the splits that have anomalies."""
    found = {}
    for split in split_names:
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(os.path.join(features.split_dir(anomalies_uri, split), "SchemaDiff.pb"), "rb") as f:
            anomalies.ParseFromString(f.read())
        messages = [f"{feature}: {info.description or info.short_description}"
                    for feature, info in sorted(anomalies.anomaly_info.items())]
        if anomalies.HasField("dataset_anomaly_info"):
            messages.append(f"dataset: {anomalies.dataset_anomaly_info.description}")
        if messages:
            found[split] = messages
    return found


def common_reasons(report: Dict[str, Any]) -> List[str]:
    """The three most frequent reasons files were rejected, in ExampleGen's ingest report."""
    return [reason for reason, _ in collections.Counter(r["reason"] for r in report["rejected"]).most_common(3)]


def training_split(report: Dict[str, Any]) -> str:
    return folder_layout.TRAIN_SPLIT if folder_layout.TRAIN_SPLIT in report["accepted"] else folder_layout.UNSPLIT


def class_counts(report: Dict[str, Any]) -> Dict[str, int]:
    """Usable images per class over all splits."""
    return {c: sum(counts.get(c, 0) for counts in report["accepted"].values()) for c in report["classes"]}


def class_balance(previous: Optional[Dict[str, int]], current: Dict[str, int]) -> Dict[str, Any]:
    """Largest change of a class's share (L-infinity, as TFDV's drift comparator), over the classes
    both runs have: new and missing classes are the schema check's business."""
    if not previous:
        return {"drift": None, "shares": {}}
    shared = sorted(c for c in set(previous) & set(current) if previous[c] and current[c])
    totals = (sum(previous[c] for c in shared) or 1, sum(current[c] for c in shared) or 1)
    shares = {c: [round(previous[c] / totals[0], 4), round(current[c] / totals[1], 4)] for c in shared}
    drift = max((abs(after - before) for before, after in shares.values()), default=0.0)
    return {"drift": round(drift, 4), "shares": shares}


def problems(report: Dict[str, Any], anomalies: Dict[str, List[str]], balance: Dict[str, Any],
             max_class_drift: float, strict: bool,
             accept_command: str = GENERIC_ACCEPT_COMMAND) -> List[str]:
    found = [f"split {split!r} has no usable images ({len(report['rejected'])} file(s) rejected; most common "
             f"reasons: {common_reasons(report)})"
             for split, split_counts in report["accepted"].items() if not sum(split_counts.values())]
    counts = class_counts(report)
    retired = set(report.get("retired_classes", []))  # removed on purpose; they keep their ids
    missing = [c for c in report.get("schema_classes", []) if counts.get(c, 0) == 0 and c not in retired]
    if missing:
        found.append(f"class(es) {missing} are in the schema but have no usable images in the data root; "
                     f"if intended, retire them (they keep their ids) with: {accept_command}")
    training = report["accepted"][training_split(report)]
    empty = [c for c in report["classes"] if training.get(c, 0) == 0 and c not in missing and c not in retired]
    if empty:
        found.append(f"class(es) {empty} have no usable training images; most common rejection reasons: "
                     f"{common_reasons(report)}")
    found += [f"[{split}] {message}" for split, messages in anomalies.items() for message in messages]
    if report.get("new_classes"):
        found.append(f"class folder(s) {report['new_classes']} are not in the schema; if intended, accept them "
                     f"with: {accept_command}")
    if balance["drift"] is not None and balance["drift"] > max_class_drift:
        worst = max(balance["shares"].items(), key=lambda item: abs(item[1][1] - item[1][0]))
        found.append(f"class balance drifted by {balance['drift']:.3f} (bound {max_class_drift}): class "
                     f"{worst[0]!r} went from {worst[1][0]:.1%} to {worst[1][1]:.1%} of the images since the "
                     f"previous accepted run")
    if strict and report["rejected"]:
        names = [f"{r['file']} ({r['reason']})" for r in report["rejected"][:_LISTED_FILES]]
        more = len(report["rejected"]) - len(names)
        found.append(f"strict mode: {len(report['rejected'])} file(s) rejected: " + "; ".join(names)
                     + (f"; and {more} more" if more > 0 else ""))
    return found


def _read_baseline(path: str) -> Optional[Dict[str, int]]:
    baseline = files.read_json_if_exists(path) if path else None
    return baseline and baseline["class_counts"]


def _write_baseline(path: str, counts: Dict[str, int]) -> None:
    files.write_json(path, {"class_counts": counts,
                            "accepted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})


@tfx.dsl.components.component
def DataGate(examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
             anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
             baseline_path: tfx.dsl.components.Parameter[str] = "",
             max_class_drift: tfx.dsl.components.Parameter[float] = 1.0,
             strict: tfx.dsl.components.Parameter[int] = 0,
             schema_file: tfx.dsl.components.Parameter[str] = "",
             data_root: tfx.dsl.components.Parameter[str] = "",
             ) -> tfx.dsl.components.OutputDict(class_balance=str):
    report = features.read_ingest_report(examples.uri)
    found_anomalies = read_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
    counts = class_counts(report)
    balance = class_balance(_read_baseline(baseline_path), counts)
    found = problems(report, found_anomalies, balance, max_class_drift, bool(strict),
                     accept_command(schema_file, data_root))
    if found:
        raise DataValidationError("data validation stopped the run before Transform:\n"
                                  + "\n".join(f"  - {line}" for line in found))
    if baseline_path:
        _write_baseline(baseline_path, counts)
    drift = balance.get("drift")
    key_figure(f"{sum(len(lines) for lines in found_anomalies.values())} anomalies; class-balance drift "
               + (f"{drift:.3f} (bound {max_class_drift})" if drift is not None else "not measured (first accepted run)"))
    return {"class_balance": json.dumps({**balance, "bound": max_class_drift})}
