"""ImageFolderExampleGen executor: image files -> tf.Example, streamed through Beam.

The layout (pre-split or hash-split) is resolved when the executor runs, so the data root can be
a run-time parameter. Splitting, hashing and writing are inherited from BaseExampleGenExecutor.
"""
import collections
import json
import os
from typing import Any, Dict, Iterable, List

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import folder_layout, image_check
from models import features
from models.labels import write_labels

# Private exec properties set by Executor.Do for the PTransform.
CLASS_NAMES_PROPERTY = "_class_names"
REPORT_DIR_PROPERTY = "_ingest_report_dir"
# Public parameters of ImageFolderExampleGen.
KNOWN_CLASSES_KEY = "known_classes"         # JSON list: the schema's classes, in label order
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"
ACCEPTED = "accepted"
REJECTED, IGNORED = folder_layout.REJECTED, folder_layout.IGNORED


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def image_example(image_bytes: bytes, label: int, class_name: str, relative_path: str) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes_feature(image_bytes),
        features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        features.CLASS_NAME_KEY: _bytes_feature(class_name.encode()),
        features.FILENAME_KEY: _bytes_feature(relative_path.encode()),
    }))


def _class_entries(class_dir: Dict[str, Any], root: str) -> Iterable[Dict[str, Any]]:
    for entry in folder_layout.walk(class_dir["path"], root):
        yield dict(class_dir, path=entry.path, kind=entry.kind, reason=entry.reason)


def _to_record(item: Dict[str, Any], root: str, max_pixels: int) -> Dict[str, Any]:
    """An entry -> {'status': accepted, 'example': ...} or {'status': rejected|ignored, 'reason': ...}."""
    relative = os.path.relpath(item["path"], root)
    if item["kind"] != folder_layout.FILE:
        return {"status": item["kind"], "split": item["split"], "file": relative, "reason": item["reason"]}
    with tf.io.gfile.GFile(item["path"], "rb") as f:
        stored, reason, note = image_check.check_image(f.read(), max_pixels)
    if reason:
        return {"status": REJECTED, "split": item["split"], "file": relative, "reason": reason}
    return {"status": ACCEPTED, "split": item["split"], "class_name": item["class_name"], "file": relative,
            "note": note, "example": image_example(stored, item["label"], item["class_name"], relative)}


def _outcome(record: Dict[str, Any]) -> str:
    """The report line of a record: a skipped or changed file itself, or the accepted file's class."""
    if record["status"] != ACCEPTED:
        return json.dumps(record, sort_keys=True)
    line = {"status": ACCEPTED, "split": record["split"], "class_name": record["class_name"]}
    if record["note"]:
        line.update(file=record["file"], note=record["note"])
    return json.dumps(line, sort_keys=True)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def ImageFolderToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],  # pylint: disable=invalid-name
                         split_pattern: str) -> beam.pvalue.PCollection:
    """Reads <input_base>/<split_pattern>/<class>/** into tf.Examples.

    Only class folder names pass through the driver; files are listed, read and checked on the
    workers. Per-class counts and every rejected or ignored file go to the report dir.
    """
    root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    max_pixels = int(exec_properties.get(MAX_IMAGE_PIXELS_KEY) or image_check.DEFAULT_MAX_IMAGE_PIXELS)
    split_name, split_dir = json.loads(split_pattern)
    class_dirs = [{"split": split_name, "class_name": name, "label": label,
                   "path": os.path.join(root, split_dir, name)}
                  for label, name in enumerate(exec_properties[CLASS_NAMES_PROPERTY])
                  if folder_layout.has_files(os.path.join(root, split_dir, name), root)]
    records = (pipeline
               | "ClassFolders" >> beam.Create(class_dirs)
               | "ListFiles" >> beam.FlatMap(_class_entries, root)
               | "Redistribute" >> beam.Reshuffle()
               | "ReadAndCheck" >> beam.Map(_to_record, root, max_pixels))
    report_prefix = os.path.join(exec_properties[REPORT_DIR_PROPERTY], split_name)
    _ = (records
         | "Outcome" >> beam.Map(_outcome)
         | "CountOutcomes" >> beam.combiners.Count.PerElement()
         | "Format" >> beam.MapTuple(lambda line, count: json.dumps({"count": count, **json.loads(line)}))
         | "WriteReport" >> beam.io.WriteToText(report_prefix, file_name_suffix=".jsonl"))
    return (records
            | "Accepted" >> beam.Filter(lambda r: r["status"] == ACCEPTED)
            | "Examples" >> beam.Map(lambda r: r["example"]))


def input_config_for(layout: folder_layout.FolderLayout) -> example_gen_pb2.Input:
    """Split patterns carry [split name, folder] for ImageFolderToExample."""
    return example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=name, pattern=json.dumps([name, folder]))
        for name, folder in layout.splits])


def summarize_ingest(report_dir: str, layout: folder_layout.FolderLayout,
                     known_classes: List[str]) -> Dict[str, Any]:
    """Merges the report shards into one account of every file under the data root."""
    accepted: Dict[str, Dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
    listed: Dict[str, List[Dict[str, str]]] = {REJECTED: [], IGNORED: [], "converted": []}
    for entry in layout.outside_classes:
        listed[entry.kind].append({"split": "", "file": os.path.relpath(entry.path, layout.root),
                                   "reason": entry.reason})
    for path in sorted(tf.io.gfile.glob(os.path.join(report_dir, "*.jsonl"))):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                entry = json.loads(line)
                if entry["status"] == ACCEPTED:
                    accepted[entry["split"]][entry["class_name"]] += entry["count"]
                    if "note" in entry:
                        listed["converted"].append({"file": entry["file"], "note": entry["note"]})
                else:
                    listed[entry["status"]].append({k: entry[k] for k in ("split", "file", "reason")})
    ingested = sum(n for counts in accepted.values() for n in counts.values())
    return {
        "classes": list(layout.class_names),
        "schema_classes": list(known_classes),
        "new_classes": list(layout.new_classes),
        "layout": "pre-split" if layout.presplit else "hash-split",
        "counts": {"seen": ingested + len(listed[REJECTED]) + len(listed[IGNORED]), "ingested": ingested,
                   "rejected": len(listed[REJECTED]), "ignored": len(listed[IGNORED])},
        "accepted": {split: {c: accepted[split][c] for c in layout.class_names} for split, _ in layout.splits},
        "rejected": sorted(listed[REJECTED], key=lambda r: r["file"]),
        "ignored": sorted(listed[IGNORED], key=lambda r: r["file"]),
        "converted": sorted(listed["converted"], key=lambda r: r["file"]),
    }


def common_reasons(summary: Dict[str, Any]) -> List[str]:
    return [reason for reason, _ in collections.Counter(r["reason"] for r in summary["rejected"]).most_common(3)]


def training_split(summary: Dict[str, Any]) -> str:
    return folder_layout.TRAIN_SPLIT if folder_layout.TRAIN_SPLIT in summary["accepted"] else folder_layout.UNSPLIT


def read_ingest_report(examples_uri: str) -> Dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(examples_uri, features.INGEST_REPORT_FILENAME)) as f:
        return json.load(f)


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Resolves the folder layout, runs the PTransform, then writes labels.txt and the ingest report.

    A split or class without usable images is written as it is (possibly empty) and stopped by the
    data gate, so the report of every rejected file is kept."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return ImageFolderToExample

    def Do(self, input_dict, output_dict, exec_properties: Dict[str, Any]) -> None:
        known_classes = json.loads(exec_properties.get(KNOWN_CLASSES_KEY) or "[]")
        layout = folder_layout.discover(exec_properties[standard_component_specs.INPUT_BASE_KEY], known_classes)
        examples_uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.EXAMPLES_KEY])
        report_dir = os.path.join(examples_uri, "ingest_shards")
        exec_properties = dict(exec_properties)
        exec_properties[CLASS_NAMES_PROPERTY] = list(layout.class_names)
        exec_properties[REPORT_DIR_PROPERTY] = report_dir
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(
            input_config_for(layout))
        if layout.presplit:  # the folders are the splits; no hash split
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY] = proto_utils.proto_to_json(
                example_gen_pb2.Output())
        super().Do(input_dict, output_dict, exec_properties)

        summary = summarize_ingest(report_dir, layout, known_classes)
        with tf.io.gfile.GFile(os.path.join(examples_uri, features.INGEST_REPORT_FILENAME), "w") as f:
            json.dump(summary, f, indent=2)
        write_labels(os.path.join(examples_uri, features.LABELS_FILENAME), layout.class_names)
