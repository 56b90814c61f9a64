import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils, standard_artifacts

from components import validation_gate


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


def test_gate_raises_on_anomalies_and_passes_clean_data(tmp_path):
    bad = anomalies_pb2.Anomalies()
    bad.anomaly_info["label"].short_description = "Out-of-range values"
    _write(str(tmp_path / "bad"), "train", bad)
    _write(str(tmp_path / "good"), "train", anomalies_pb2.Anomalies())
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.split_names = artifact_utils.encode_split_names(["train"])
    gate = validation_gate.AnomaliesGate.EXECUTOR_SPEC.executor_class()
    for name, fails in (("good", False), ("bad", True)):
        artifact.uri = str(tmp_path / name)
        if fails:
            with pytest.raises(validation_gate.DataAnomaliesError, match="label: Out-of-range values"):
                gate.Do({"anomalies": [artifact]}, {}, {})
        else:
            gate.Do({"anomalies": [artifact]}, {}, {})
