"""DataGate: stops the run before Transform on data that must not reach training.

It fails on a class without usable training images (ExampleGen's ingest report) and on any
anomaly ExampleValidator found against the schema, listing every one.
"""
import os
from typing import Dict, List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from components.image_example_gen import executor


class DataAnomaliesError(RuntimeError):
    """The data does not match the schema; the message lists every anomaly."""


def read_anomalies(anomalies_uri: str, split_names: List[str]) -> Dict[str, List[str]]:
    """{split: ['feature: description', ...]} for the splits that have anomalies."""
    found = {}
    for split in split_names:
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb"), "rb") as f:
            anomalies.ParseFromString(f.read())
        messages = [f"{feature}: {info.description or info.short_description}"
                    for feature, info in sorted(anomalies.anomaly_info.items())]
        if anomalies.HasField("dataset_anomaly_info"):
            messages.append(f"dataset: {anomalies.dataset_anomaly_info.description}")
        if messages:
            found[split] = messages
    return found


def format_anomalies(found: Dict[str, List[str]]) -> str:
    lines = [f"  [{split}] {message}" for split, messages in found.items() for message in messages]
    return "data validation found anomalies against the schema:\n" + "\n".join(lines)


@tfx.dsl.components.component
def DataGate(examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
             anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]):
    executor.check_classes_have_training_images(executor.read_ingest_report(examples.uri))
    found = read_anomalies(anomalies.uri, artifact_utils.decode_split_names(anomalies.split_names))
    if found:
        raise DataAnomaliesError(format_anomalies(found))
