import json
import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from components import validation_gate
from components.image_example_gen import folder_layout


def _write(uri, split, anomalies):
    os.makedirs(os.path.join(uri, f"Split-{split}"))
    with open(os.path.join(uri, f"Split-{split}", "SchemaDiff.pb"), "wb") as f:
        f.write(anomalies.SerializeToString())


def test_anomalies_are_read_per_split_and_listed_in_one_message(tmp_path):
    bad = anomalies_pb2.Anomalies()
    bad.anomaly_info["class_name"].description = "Examples contain values missing from the schema: cat (~4%)."
    _write(str(tmp_path), "train", anomalies_pb2.Anomalies())
    _write(str(tmp_path), "eval", bad)
    found = validation_gate.read_anomalies(str(tmp_path), ["train", "eval"])
    assert found == {"eval": ["class_name: Examples contain values missing from the schema: cat (~4%)."]}
    assert "[eval] class_name: Examples contain values missing" in validation_gate.format_anomalies(found)


def _artifacts(tmp_path, name, anomalies, training_counts):
    anomalies_artifact = standard_artifacts.ExampleAnomalies()
    anomalies_artifact.uri = str(tmp_path / name / "anomalies")
    anomalies_artifact.split_names = artifact_utils.encode_split_names(["train"])
    _write(anomalies_artifact.uri, "train", anomalies)
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / name / "examples")
    os.makedirs(examples.uri)
    with open(os.path.join(examples.uri, "ingest_report.json"), "w") as f:
        json.dump({"accepted": {"train": training_counts}, "rejected": []}, f)
    return {"examples": [examples], "anomalies": [anomalies_artifact]}


def test_gate_passes_clean_data_and_stops_on_anomalies_or_classes_without_images(tmp_path):
    bad = anomalies_pb2.Anomalies()
    bad.anomaly_info["label"].short_description = "Out-of-range values"
    gate = validation_gate.DataGate.EXECUTOR_SPEC.executor_class()
    gate.Do(_artifacts(tmp_path, "good", anomalies_pb2.Anomalies(), {"a": 3, "b": 2}), {}, {})
    with pytest.raises(validation_gate.DataAnomaliesError, match="label: Out-of-range values"):
        gate.Do(_artifacts(tmp_path, "anomalous", bad, {"a": 3, "b": 2}), {}, {})
    with pytest.raises(folder_layout.ImageFolderError, match=r"\['b'\] have no usable training images"):
        gate.Do(_artifacts(tmp_path, "empty_class", anomalies_pb2.Anomalies(), {"a": 3, "b": 0}), {}, {})
