"""ImageFolderExampleGen executor: image files -> tf.Example, streamed through Beam.

The layout (pre-split or hash-split) is resolved when the executor runs, so the data root can be
a run-time parameter. Splitting, hashing and writing are inherited from BaseExampleGenExecutor.
"""
import collections
import hashlib
import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import folder_layout, image_check
from models.progress import key_figure
from models import features
from models.settings import DEFAULT_MAX_IMAGE_PIXELS
from models.labels import write_labels

# Private exec properties set by Executor.Do for the PTransform.
CLASS_NAMES_PROPERTY = "_class_names"
REPORT_DIR_PROPERTY = "_ingest_report_dir"
DUPLICATE_PATHS_PROPERTY = "_duplicate_paths"  # JSON: relative path -> the path of the same file that is read
# Public parameters of ImageFolderExampleGen.
KNOWN_CLASSES_KEY = "known_classes"         # JSON list: the schema's classes, in label order
RETIRED_CLASSES_KEY = "retired_classes"     # JSON list: those of them whose folders were removed on purpose
MAX_IMAGE_PIXELS_KEY = "max_image_pixels"
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


CHUNK_SIZE = 256  # files listed together: one report line
BATCH_BYTES = 64 << 20  # files decoded together (in parallel), at most this many bytes unless one is bigger


def _class_chunks(class_dir: Dict[str, Any], root: str, duplicates: Dict[str, str]) -> Iterable[Dict[str, Any]]:
    """A class folder's entries (files and skipped ones), in chunks of CHUNK_SIZE; a file that is
    another path of a file read elsewhere (duplicates: relative path -> the one read) is skipped."""
    chunk = []
    for entry in folder_layout.walk(class_dir["path"], root):
        relative = os.path.relpath(entry.path, root)
        if entry.kind == folder_layout.FILE and relative in duplicates:
            entry = folder_layout.Entry(entry.path, IGNORED,
                                        f"the same file as {duplicates[relative]} (reached through a symlink)")
        chunk.append(entry)
        if len(chunk) == CHUNK_SIZE:
            yield dict(class_dir, entries=chunk)
            chunk = []
    if chunk:
        yield dict(class_dir, entries=chunk)


def _read(path: str) -> bytes:
    """Local files through Python (several times faster per small file), others through TensorFlow."""
    if folder_layout.is_local(path):
        with open(path, "rb") as f:
            return f.read()
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _readable_batches(files: List[folder_layout.Entry], unreadable: List[Dict[str, str]],
                      root: str) -> Iterator[List[Tuple[folder_layout.Entry, bytes]]]:
    """The files read, in batches of at most BATCH_BYTES (or one file), so memory stays bounded;
    a file that cannot be read is added to unreadable with the reason instead."""
    batch, size = [], 0
    for entry in files:
        try:
            data = _read(entry.path)
        except OSError as error:
            unreadable.append({"file": os.path.relpath(entry.path, root),
                               "reason": f"cannot read file: {error.strerror or error}"})
            continue
        if batch and size + len(data) > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append((entry, data))
        size += len(data)
    if batch:
        yield batch


_FINGERPRINT_MODULUS = 1 << 256


def file_fingerprint(relative_path: str, data: bytes) -> int:
    """One ingested file's contribution to the data fingerprint: its path and contents."""
    return int.from_bytes(hashlib.sha256(relative_path.encode() + b"\0" + hashlib.sha256(data).digest()).digest(),
                          "big")


def combine_fingerprints(parts) -> int:
    """A sum modulo 2^256: the same for the same set of files, in whatever order workers saw them."""
    return sum(parts) % _FINGERPRINT_MODULUS


class _CheckChunk(beam.DoFn):
    """A chunk of entries -> a tf.Example per usable image, and one report line for the chunk."""

    def __init__(self, root: str, max_pixels: int):
        super().__init__()
        self._root, self._max_pixels = root, max_pixels

    def process(self, chunk: Dict[str, Any]):
        report = {"split": chunk["split"], "class_name": chunk["class_name"], "accepted": 0,
                  REJECTED: [], IGNORED: [], "converted": []}
        fingerprint = 0
        files = [e for e in chunk["entries"] if e.kind == folder_layout.FILE]
        for entry in chunk["entries"]:
            if entry.kind != folder_layout.FILE:
                report[entry.kind].append({"file": os.path.relpath(entry.path, self._root), "reason": entry.reason})
        for batch in _readable_batches(files, report[REJECTED], self._root):
            checked = image_check.check_images([data for _, data in batch], self._max_pixels)
            for (entry, data), (stored, reason, note) in zip(batch, checked):
                relative = os.path.relpath(entry.path, self._root)
                if reason:
                    report[REJECTED].append({"file": relative, "reason": reason})
                    continue
                report["accepted"] += 1
                fingerprint = combine_fingerprints([fingerprint, file_fingerprint(relative, data)])
                if note:
                    report["converted"].append({"file": relative, "note": note})
                yield image_example(stored, chunk["label"], chunk["class_name"], relative)
        report["fingerprint"] = f"{fingerprint:064x}"
        yield beam.pvalue.TaggedOutput(_REPORT, json.dumps(report, sort_keys=True))


_REPORT = "report"


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def ImageFolderToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],  # pylint: disable=invalid-name
                         split_pattern: str) -> beam.pvalue.PCollection:
    """Reads <input_base>/<split_pattern>/<class>/** into tf.Examples.

    Only class folder names pass through the driver; files are listed, read and checked on the
    workers, a chunk at a time. One report line per chunk (counts, rejected and ignored files)
    goes to the report dir.
    """
    root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    duplicates = json.loads(exec_properties.get(DUPLICATE_PATHS_PROPERTY) or "{}")
    max_pixels = int(exec_properties.get(MAX_IMAGE_PIXELS_KEY) or DEFAULT_MAX_IMAGE_PIXELS)
    split_name, split_dir = json.loads(split_pattern)
    class_dirs = [{"split": split_name, "class_name": name, "label": label,
                   "path": os.path.join(root, split_dir, name)}
                  for label, name in enumerate(exec_properties[CLASS_NAMES_PROPERTY])
                  if folder_layout.has_files(os.path.join(root, split_dir, name), root)]
    outputs = (pipeline
               | "ClassFolders" >> beam.Create(class_dirs)
               | "ListFiles" >> beam.FlatMap(_class_chunks, root, duplicates)
               | "Redistribute" >> beam.Reshuffle()
               | "ReadAndCheck" >> beam.ParDo(_CheckChunk(root, max_pixels)).with_outputs(_REPORT, main="examples"))
    _ = outputs[_REPORT] | "WriteReport" >> beam.io.WriteToText(
        os.path.join(exec_properties[REPORT_DIR_PROPERTY], split_name), file_name_suffix=".jsonl")
    return outputs["examples"]


def duplicate_paths(layout: folder_layout.FolderLayout) -> Dict[str, str]:
    """Files reached by more than one path (symlinks): every other path -> the one read, which is
    the file's own path when it lies in the tree (so a link in another class folder does not
    relabel it), else the first in sorted order. So one file is one example, in one split and class."""
    paths: Dict[str, List[str]] = collections.defaultdict(list)
    for _, split_dir in layout.splits:
        for class_name in layout.class_names:
            folder = os.path.join(layout.root, split_dir, class_name)
            if not (folder_layout.is_local(folder) and os.path.isdir(folder)):
                continue
            for entry in folder_layout.walk(folder, layout.root):
                if entry.kind == folder_layout.FILE:
                    paths[os.path.realpath(entry.path)].append(os.path.relpath(entry.path, layout.root))
    duplicates = {}
    for real, relatives in paths.items():
        if len(relatives) > 1:
            own = [r for r in relatives if os.path.join(os.path.realpath(layout.root), r) == real]
            kept = own[0] if own else min(relatives)
            duplicates.update({r: kept for r in relatives if r != kept})
    return duplicates


def identical_content(examples_uri: str) -> Dict[str, Any]:
    """Files whose bytes are the same, from the examples as written (after the split): each group of
    such files with its splits, and the leaks, groups found in more than one split (the same image
    trained on and evaluated on)."""
    by_digest: Dict[bytes, List[Tuple[str, str]]] = collections.defaultdict(list)
    for split_dir in sorted(tf.io.gfile.glob(features.split_dir(examples_uri, "*"))):
        split = features.split_of(split_dir)
        files = tf.io.gfile.glob(os.path.join(split_dir, "*"))
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator():
            example = tf.train.Example.FromString(record)
            feature = example.features.feature
            by_digest[hashlib.sha256(feature[features.IMAGE_KEY].bytes_list.value[0]).digest()].append(
                (split, feature[features.FILENAME_KEY].bytes_list.value[0].decode()))
    groups = [sorted(members) for members in by_digest.values() if len(members) > 1]
    groups = sorted(({"files": [f for _, f in g], "splits": sorted({s for s, _ in g})} for g in groups),
                    key=lambda group: group["files"])
    return {"identical_files": groups,
            "split_leaks": sum(len(group["splits"]) > 1 for group in groups)}


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
    fingerprints = []
    for path in sorted(tf.io.gfile.glob(os.path.join(report_dir, "*.jsonl"))):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                chunk = json.loads(line)
                fingerprints.append(int(chunk["fingerprint"], 16))
                accepted[chunk["split"]][chunk["class_name"]] += chunk["accepted"]
                listed["converted"] += chunk["converted"]
                for outcome in (REJECTED, IGNORED):
                    listed[outcome] += [dict(entry, split=chunk["split"]) for entry in chunk[outcome]]
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
        # sha256 of each ingested file's path and contents, summed modulo 2^256
        "data_fingerprint": f"{combine_fingerprints(fingerprints):064x}",
    }


def hash_split_shares(exec_properties: Dict[str, Any]) -> str:
    """'train 90 %, eval 10 %': a flat folder's split, which its progress line would otherwise not show."""
    output_config = proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                                              example_gen_pb2.Output())
    splits = output_config.split_config.splits
    total = sum(split.hash_buckets for split in splits)
    return ", ".join(f"{split.name} {100 * split.hash_buckets / total:g} %" for split in splits)


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
        exec_properties[DUPLICATE_PATHS_PROPERTY] = json.dumps(duplicate_paths(layout))
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(
            input_config_for(layout))
        if layout.presplit:  # the folders are the splits; no hash split
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY] = proto_utils.proto_to_json(
                example_gen_pb2.Output())
        super().Do(input_dict, output_dict, exec_properties)

        summary = {**summarize_ingest(report_dir, layout, known_classes), **identical_content(examples_uri),
                   "retired_classes": json.loads(exec_properties.get(RETIRED_CLASSES_KEY) or "[]")}
        with tf.io.gfile.GFile(os.path.join(examples_uri, features.INGEST_REPORT_FILENAME), "w") as f:
            json.dump(summary, f, indent=2)
        write_labels(os.path.join(examples_uri, features.LABELS_FILENAME), layout.class_names)
        counts = summary["counts"]
        per_split = ", ".join(f"{split} {sum(classes.values())}" for split, classes in sorted(summary["accepted"].items()))
        if not layout.presplit:
            per_split += f", split by a hash of each file's path: {hash_split_shares(exec_properties)}"
        leaks = f"; {summary['split_leaks']} image(s) in more than one split" if summary["split_leaks"] else ""
        key_figure(f"{counts['ingested']} images ({per_split}) in {len(layout.class_names)} classes; "
                   f"{counts['rejected']} rejected, {counts['ignored']} ignored{leaks}")
