"""ImageFolderExampleGen executor: image files -> tf.Example, streamed through Beam.

The layout (pre-split or hash-split) is resolved when the executor runs, so the data root can be
a run-time parameter. Splitting, hashing and writing are inherited from BaseExampleGenExecutor.
"""
import collections
import json
import os
import re
from typing import Any, Dict, Iterable, List

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import folder_layout
from models import features
from models.labels import write_labels

# Private exec properties set by Executor.Do for the PTransform.
CLASS_NAMES_PROPERTY = "_class_names"
REPORT_DIR_PROPERTY = "_ingest_report_dir"
ACCEPTED, REJECTED = "accepted", "rejected"


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def image_example(image_bytes: bytes, label: int, class_name: str, relative_path: str) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _bytes_feature(image_bytes),
        features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        features.CLASS_NAME_KEY: _bytes_feature(class_name.encode()),
        features.FILENAME_KEY: _bytes_feature(relative_path.encode()),
    }))


def _decoder_message(error: tf.errors.OpError) -> str:
    """The decoder's own words, without TensorFlow's function-node and op decorations."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", error.message.splitlines()[0])
    return message.strip()


def rejection_reason(path: str, image_bytes: bytes) -> str:
    """'' when the file decodes with the decoder Transform uses, else why not."""
    if not folder_layout.is_image_name(path):
        return f"unsupported file type {os.path.splitext(path)[1] or '(no extension)'!r}; " \
               f"supported: {', '.join(folder_layout.IMAGE_EXTENSIONS)}"
    if not image_bytes:
        return "empty file (0 bytes)"
    try:
        tf.io.decode_image(image_bytes, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        return f"cannot decode image: {_decoder_message(error)}"
    return ""


def _class_files(class_dir: Dict[str, Any]) -> Iterable[Dict[str, Any]]:
    for path in folder_layout.walk_files(class_dir["path"]):
        yield dict(class_dir, path=path)


def _to_record(item: Dict[str, Any], root: str) -> Dict[str, Any]:
    """A file -> {'status': accepted, 'example': ...} or {'status': rejected, 'reason': ...}."""
    relative = os.path.relpath(item["path"], root)
    with tf.io.gfile.GFile(item["path"], "rb") as f:
        image_bytes = f.read()
    reason = rejection_reason(item["path"], image_bytes)
    if reason:
        return {"status": REJECTED, "split": item["split"], "file": relative, "reason": reason}
    return {"status": ACCEPTED, "split": item["split"], "class_name": item["class_name"],
            "example": image_example(image_bytes, item["label"], item["class_name"], relative)}


def _outcome(record: Dict[str, Any]) -> str:
    """The report line of a record: the rejection itself, or the accepted file's class (to count)."""
    if record["status"] == REJECTED:
        return json.dumps(record, sort_keys=True)
    return json.dumps({"status": ACCEPTED, "split": record["split"], "class_name": record["class_name"]})


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def ImageFolderToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],  # pylint: disable=invalid-name
                         split_pattern: str) -> beam.pvalue.PCollection:
    """Reads <input_base>/<split_pattern>/<class>/** into tf.Examples.

    Only class folder names pass through the driver; files are listed and read on the workers.
    Per-class counts and rejected files are written under the report dir for Executor.Do.
    """
    root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    split_name, split_dir = json.loads(split_pattern)
    class_dirs = [{"split": split_name, "class_name": name, "label": label,
                   "path": os.path.join(root, split_dir, name)}
                  for label, name in enumerate(exec_properties[CLASS_NAMES_PROPERTY])
                  if tf.io.gfile.isdir(os.path.join(root, split_dir, name))]
    records = (pipeline
               | "ClassFolders" >> beam.Create(class_dirs)
               | "ListFiles" >> beam.FlatMap(_class_files)
               | "Redistribute" >> beam.Reshuffle()
               | "ReadAndCheck" >> beam.Map(_to_record, root))
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


def summarize_ingest(report_dir: str, layout: folder_layout.FolderLayout) -> Dict[str, Any]:
    """Merges the report shards into {'classes', 'accepted': {split: {class: n}}, 'rejected': [...]}."""
    accepted: Dict[str, Dict[str, int]] = collections.defaultdict(dict)
    rejected: List[Dict[str, str]] = [{"split": "", "file": f, "reason": "file outside any class folder"}
                                      for f in layout.stray_files]
    for path in sorted(tf.io.gfile.glob(os.path.join(report_dir, "*.jsonl"))):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                entry = json.loads(line)
                if entry["status"] == ACCEPTED:
                    accepted[entry["split"]][entry["class_name"]] = entry["count"]
                else:
                    rejected.append({k: entry[k] for k in ("split", "file", "reason")})
    return {"classes": list(layout.class_names), "layout": "pre-split" if layout.presplit else "hash-split",
            "accepted": {split: {c: accepted[split].get(c, 0) for c in layout.class_names}
                         for split, _ in layout.splits},
            "rejected": sorted(rejected, key=lambda r: r["file"])}


def _common_reasons(summary: Dict[str, Any]) -> List[str]:
    return [reason for reason, _ in collections.Counter(r["reason"] for r in summary["rejected"]).most_common(3)]


def check_splits_have_images(summary: Dict[str, Any]) -> None:
    """A split without a single usable image cannot be written or validated: stop in ExampleGen."""
    for split, counts in summary["accepted"].items():
        if not sum(counts.values()):
            raise folder_layout.ImageFolderError(
                f"split {split!r} has no usable images ({len(summary['rejected'])} files rejected; "
                f"most common reasons: {_common_reasons(summary)})")


def check_classes_have_training_images(summary: Dict[str, Any]) -> None:
    """Every class needs usable training images. Checked after ExampleGen, so its report is kept."""
    train_split = folder_layout.TRAIN_SPLIT if folder_layout.TRAIN_SPLIT in summary["accepted"] \
        else folder_layout.UNSPLIT
    empty = [c for c, n in summary["accepted"][train_split].items() if n == 0]
    if empty:
        raise folder_layout.ImageFolderError(
            f"class(es) {empty} have no usable training images; every rejected file and its reason is "
            f"listed in last_run.json; most common reasons: {_common_reasons(summary)}")


def read_ingest_report(examples_uri: str) -> Dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(examples_uri, features.INGEST_REPORT_FILENAME)) as f:
        return json.load(f)


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Resolves the folder layout, runs the PTransform, then writes labels.txt and the ingest report."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return ImageFolderToExample

    def Do(self, input_dict, output_dict, exec_properties: Dict[str, Any]) -> None:
        layout = folder_layout.discover(exec_properties[standard_component_specs.INPUT_BASE_KEY])
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

        summary = summarize_ingest(report_dir, layout)
        with tf.io.gfile.GFile(os.path.join(examples_uri, features.INGEST_REPORT_FILENAME), "w") as f:
            json.dump(summary, f, indent=2)
        write_labels(os.path.join(examples_uri, features.LABELS_FILENAME), layout.class_names)
        check_splits_have_images(summary)
