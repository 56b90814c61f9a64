import json
import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from components import data_gate
from models import features


def _write(uri, split, anomalies):
    os.makedirs(features.split_dir(uri, split))
    with open(os.path.join(features.split_dir(uri, split), "SchemaDiff.pb"), "wb") as f:
        f.write(anomalies.SerializeToString())


def _report(train, schema_classes=("a", "b"), new_classes=(), rejected=()):
    return {"classes": list(schema_classes) + list(new_classes), "schema_classes": list(schema_classes),
            "new_classes": list(new_classes), "accepted": {"train": train},
            "rejected": [{"split": "train", "file": f, "reason": "empty file (0 bytes)"} for f in rejected]}



def test_anomalies_are_read_per_split_with_their_descriptions(tmp_path):
    bad = anomalies_pb2.Anomalies()
    bad.anomaly_info["class_name"].description = "Examples contain values missing from the schema: cat (~4%)."
    _write(str(tmp_path), "train", anomalies_pb2.Anomalies())
    _write(str(tmp_path), "eval", bad)
    assert data_gate.read_anomalies(str(tmp_path), ["train", "eval"]) == {
        "eval": ["class_name: Examples contain values missing from the schema: cat (~4%)."]}


def test_class_balance_drift_is_the_largest_share_change_over_shared_classes():
    balance = data_gate.class_balance({"a": 50, "b": 50, "gone": 10, "c": 5},
                                            {"a": 70, "b": 30, "new": 99, "gone": 0})
    assert balance == {"drift": 0.2, "shares": {"a": [0.5, 0.7], "b": [0.5, 0.3]}}
    assert data_gate.class_balance(None, {"a": 1})["drift"] is None


@pytest.mark.parametrize("report,anomalies,previous,strict,expected", [
    (_report({"a": 5, "b": 5}), {}, {"a": 5, "b": 5}, True, []),
    (_report({"a": 5, "b": 0}), {}, None, False, ["class(es) ['b'] are in the schema but have no usable images"]),
    (_report({"a": 5, "b": 5, "c": 0}, schema_classes=("a", "b", "c"), new_classes=()), {}, None, False,
     ["class(es) ['c'] are in the schema"]),
    (_report({"a": 5, "b": 5, "cat": 3}, new_classes=("cat",)),
     {"train": ["class_name: Examples contain values missing from the schema: cat (~23%)."]}, None, False,
     ["[train] class_name: Examples contain values missing from the schema: cat",
      "class folder(s) ['cat'] are not in the schema; if intended, accept them with: python -m pipeline.schema"]),
    (_report({"a": 9, "b": 1}), {}, {"a": 5, "b": 5}, False,
     ["class balance drifted by 0.400 (bound 0.05): class 'a' went from 50.0% to 90.0%"]),
    (_report({"a": 5, "b": 5}, rejected=["a/x.png"]), {}, None, True,
     ["strict mode: 1 file(s) rejected: a/x.png (empty file (0 bytes))"]),
    (_report({"a": 5, "b": 5}, rejected=["a/x.png"]), {}, None, False, []),
    (dict(_report({"a": 5, "b": 5}), accepted={"train": {"a": 5, "b": 5}, "eval": {"a": 0, "b": 0}}), {}, None,
     False, ["split 'eval' has no usable images (0 file(s) rejected"]),
])
def test_problems_name_each_cause(report, anomalies, previous, strict, expected):
    found = data_gate.problems(report, anomalies, data_gate.class_balance(previous, {
        c: n for c, n in report["accepted"]["train"].items()}), max_class_drift=0.05, strict=strict)
    assert len(found) == len(expected)
    for line, start in zip(found, expected):
        assert line.startswith(start), line


def _artifacts(tmp_path, name, anomalies, report):
    anomalies_artifact = standard_artifacts.ExampleAnomalies()
    anomalies_artifact.uri = str(tmp_path / name / "anomalies")
    anomalies_artifact.split_names = artifact_utils.encode_split_names(["train"])
    _write(anomalies_artifact.uri, "train", anomalies)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / name / "examples")
    os.makedirs(examples.uri)
    with open(os.path.join(examples.uri, "ingest_report.json"), "w") as f:
        json.dump(report, f)
    return {"examples": [examples], "anomalies": [anomalies_artifact]}


def test_gate_stops_with_one_message_and_keeps_the_last_accepted_counts_as_baseline(tmp_path):
    gate = data_gate.DataGate.EXECUTOR_SPEC.executor_class()
    baseline = str(tmp_path / "baseline.json")
    params = {"baseline_path": baseline, "max_class_drift": 0.1, "strict": 0}
    outputs = {"class_balance": [standard_artifacts.String()]}
    outputs["class_balance"][0].uri = str(tmp_path / "balance")
    gate.Do(_artifacts(tmp_path, "first", anomalies_pb2.Anomalies(), _report({"a": 5, "b": 5})), outputs, params)
    assert json.load(open(baseline))["class_counts"] == {"a": 5, "b": 5}
    bad = anomalies_pb2.Anomalies()
    bad.anomaly_info["label"].short_description = "Out-of-range values"
    with pytest.raises(data_gate.DataValidationError) as stopped:
        gate.Do(_artifacts(tmp_path, "second", bad, _report({"a": 9, "b": 1})), outputs, params)
    assert str(stopped.value).splitlines() == [
        "data validation stopped the run before Transform:",
        "  - [train] label: Out-of-range values",
        "  - class balance drifted by 0.400 (bound 0.1): class 'a' went from 50.0% to 90.0% of the images since "
        "the previous accepted run"]
    assert json.load(open(baseline))["class_counts"] == {"a": 5, "b": 5}, "a stopped run is not a baseline"
    gate.Do(_artifacts(tmp_path, "third", anomalies_pb2.Anomalies(), _report({"a": 6, "b": 5})), outputs, params)
    assert json.load(open(baseline))["class_counts"] == {"a": 6, "b": 5}


def test_a_retired_class_without_images_is_no_problem_and_an_unretired_one_is():
    balance = {"drift": None, "shares": {}}
    report = _report({"a": 5, "b": 0})
    (missing,) = data_gate.problems(report, {}, balance, max_class_drift=0.05, strict=False)
    assert missing.startswith("class(es) ['b'] are in the schema but have no usable images") and "retire" in missing
    assert data_gate.problems({**report, "retired_classes": ["b"]}, {}, balance, max_class_drift=0.05,
                                    strict=False) == []


def test_split_folders_follow_tfxs_own_rule():
    """features.split_dir is TFX's artifact_utils.get_split_uri for URIs passed without their artifact."""
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = "/somewhere/ExampleValidator/anomalies/7"
    anomalies.split_names = artifact_utils.encode_split_names(["train", "eval"])
    for split in ("train", "eval"):
        assert features.split_dir(anomalies.uri, split) == artifact_utils.get_split_uri([anomalies], split)
        assert features.split_of(features.split_dir(anomalies.uri, split)) == split
