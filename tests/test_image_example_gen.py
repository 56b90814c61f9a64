"""ImageFolderExampleGen at three levels: the PTransform, Executor.Do, and the component."""
import json
import logging
import os
import tempfile

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
import pytest
import tensorflow as tf
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import executor, folder_layout
from components.image_example_gen.component import ImageFolderExampleGen, hash_split_config
from models import features, progress
from pipeline import configs
from tests.helpers import make_class_folder
from tests.odd_files import INGESTED, make_messy_folder

# The pipeline's own engine and flags: Beam's DirectRunner would try Prism first, and TFX would build
# (and leave in the temp folder) an sdist of itself for workers that never start.
BEAM_ARGS = list(configs.BEAM_PIPELINE_ARGS)


def _summary(example: tf.train.Example):
    f = example.features.feature
    return (f[features.FILENAME_KEY].bytes_list.value[0].decode(), f[features.LABEL_KEY].int64_list.value[0],
            f[features.CLASS_NAME_KEY].bytes_list.value[0].decode())


def test_ptransform_turns_each_file_into_a_labelled_example(image_folder, tmp_path):
    (tmp_path / "images" / "red" / "notes.txt").write_text("not an image")
    (tmp_path / "images" / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    exec_properties = {standard_component_specs.INPUT_BASE_KEY: image_folder,
                       executor.CLASS_NAMES_PROPERTY: ["blue", "green", "red"],
                       executor.REPORT_DIR_PROPERTY: str(tmp_path / "report")}
    expected = [(f"{name}/img_{i:03d}{'.jpg' if i % 3 == 0 else '.png'}", label, name)
                for label, name in enumerate(["blue", "green", "red"]) for i in range(6)]
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(BEAM_ARGS)) as pipeline:
        examples = pipeline | executor.ImageFolderToExample(exec_properties, json.dumps(["all", ""]))
        assert_that(examples | beam.Map(_summary), equal_to(expected))
    layout = folder_layout.discover(image_folder)
    summary = executor.summarize_ingest(str(tmp_path / "report"), layout, known_classes=[])
    assert summary["accepted"] == {"all": {"blue": 6, "green": 6, "red": 6}}
    rejected = {r["file"]: r["reason"] for r in summary["rejected"]}
    assert set(rejected) == {"red/notes.txt", "green/broken.png"}
    assert rejected["red/notes.txt"].startswith("not an image")
    assert rejected["green/broken.png"] == "unreadable image header: Truncated File Read"
    assert summary["counts"] == {"seen": 20, "ingested": 18, "rejected": 2, "ignored": 0}


def _run_executor(data_root: str, output_dir: str, known_classes=()):
    examples = standard_artifacts.Examples()
    examples.uri = output_dir
    exec_properties = {
        standard_component_specs.INPUT_BASE_KEY: data_root,
        standard_component_specs.INPUT_CONFIG_KEY: "{}",
        standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(hash_split_config(20)),
        standard_component_specs.OUTPUT_DATA_FORMAT_KEY: 6,  # FORMAT_TF_EXAMPLE
        executor.KNOWN_CLASSES_KEY: json.dumps(list(known_classes)),
    }
    context = executor.Executor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=os.path.join(output_dir, ".tmp"))
    executor.Executor(context).Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    return examples


def _count_records(split_dir: str) -> int:
    files = tf.io.gfile.glob(os.path.join(split_dir, "*"))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def test_executor_writes_presplit_folders_as_train_and_eval(tmp_path, caplog, monkeypatch):
    make_class_folder(str(tmp_path / "data" / "train"), per_class=4)
    make_class_folder(str(tmp_path / "data" / "test"), per_class=2, seed=1)
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    with caplog.at_level(logging.INFO, logger=progress.LOGGER_NAME):
        examples = _run_executor(str(tmp_path / "data"), str(tmp_path / "out"))
    # Without the pipeline's sdist flag, TFX builds a package of itself in a temp folder it
    # never removes, at every Beam stage of every run.
    left = [root for root, dirs, _ in os.walk(tmp_path / "temp") if "tfx" in dirs]
    assert not left, f"a TFX package was built and left in the temp folder: {left}"
    assert caplog.messages[-1] == "18 images (eval 6, train 12) in 3 classes; 0 rejected, 0 ignored"
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
    assert _count_records(features.split_dir(str(tmp_path / "out"), "train")) == 12
    assert _count_records(features.split_dir(str(tmp_path / "out"), "eval")) == 6
    assert (tmp_path / "out" / "labels.txt").read_text() == "blue\ngreen\nred\n"
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report["layout"] == "pre-split" and report["rejected"] == []


def test_executor_hash_splits_a_flat_folder_deterministically(tmp_path, caplog):
    make_class_folder(str(tmp_path / "data"), per_class=20)
    with caplog.at_level(logging.INFO, logger=progress.LOGGER_NAME):
        first = _run_executor(str(tmp_path / "data"), str(tmp_path / "out1"))
    assert caplog.messages[-1].startswith(
        "60 images (all 60, split by a hash of each file's path: train 80 %, eval 20 %) in 3 classes; ")
    _run_executor(str(tmp_path / "data"), str(tmp_path / "out2"))
    assert artifact_utils.decode_split_names(first.split_names) == ["train", "eval"]
    counts = [_count_records(features.split_dir(str(tmp_path / "out1"), s)) for s in ("train", "eval")]
    assert sum(counts) == 60 and 0 < counts[1] < counts[0]

    def eval_files(out):
        files = tf.io.gfile.glob(os.path.join(features.split_dir(str(tmp_path / out), "eval"), "*"))
        return sorted(tf.train.Example.FromString(r.numpy()).features.feature[features.FILENAME_KEY]
                      .bytes_list.value[0] for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    assert eval_files("out1") == eval_files("out2")


def test_executor_accounts_for_every_file_of_a_messy_folder(tmp_path):
    expected = make_messy_folder(str(tmp_path / "data"), per_class=8)
    _run_executor(str(tmp_path / "data"), str(tmp_path / "out"))
    report = features.read_ingest_report(str(tmp_path / "out"))
    listed = {e["file"]: (outcome, e["reason"]) for outcome in ("rejected", "ignored") for e in report[outcome]}
    for path, (outcome, reason) in expected.items():
        if outcome == INGESTED:
            assert path not in listed, f"{path} should be ingested, got {listed.get(path)}"
        else:
            assert listed[path][0] == outcome and reason in listed[path][1], (path, listed[path])
    assert set(listed) == {p for p, (outcome, _) in expected.items() if outcome != INGESTED}
    ingested = 3 * 8 + sum(outcome == INGESTED for outcome, _ in expected.values())
    assert report["counts"] == {"seen": ingested + len(listed), "ingested": ingested,
                                "rejected": len(report["rejected"]), "ignored": len(report["ignored"])}
    assert sum(sum(c.values()) for c in report["accepted"].values()) == ingested
    examples = sum(_count_records(features.split_dir(str(tmp_path / "out"), s)) for s in ("train", "eval"))
    assert examples == ingested
    assert report["converted"] == [{"file": "blue/phone.JPG", "note": "EXIF orientation 6 applied, stored as PNG"},
                                   {"file": "red/phone_cmyk.jpg", "note": "EXIF orientation 6 applied, stored as PNG"}]


def test_executor_numbers_classes_as_the_schema_does_even_a_missing_one_and_writes_an_empty_split(tmp_path):
    make_class_folder(str(tmp_path / "data" / "train"), per_class=2)
    for name in ("blue", "green", "red"):
        os.makedirs(tmp_path / "data" / "test" / name)
        (tmp_path / "data" / "test" / name / "x.png").write_bytes(b"")
    _run_executor(str(tmp_path / "data"), str(tmp_path / "out"), known_classes=["red", "violet", "blue", "green"])
    assert (tmp_path / "out" / "labels.txt").read_text() == "red\nviolet\nblue\ngreen\n"
    assert _count_records(features.split_dir(str(tmp_path / "out"), "eval")) == 0
    report = features.read_ingest_report(str(tmp_path / "out"))
    assert report["accepted"]["train"] == {"red": 2, "violet": 0, "blue": 2, "green": 2}
    assert report["accepted"]["eval"] == {"red": 0, "violet": 0, "blue": 0, "green": 0}
    assert [r["reason"] for r in report["rejected"]] == ["empty file (0 bytes)"] * 3


def test_component_declares_examples_output_and_hash_split():
    component = ImageFolderExampleGen(input_base="/data/images", eval_percent=10)
    assert component.outputs["examples"].type == standard_artifacts.Examples
    assert component.exec_properties[standard_component_specs.INPUT_BASE_KEY] == "/data/images"
    output_config = proto_utils.json_to_proto(
        component.exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], example_gen_pb2.Output())
    assert [(s.name, s.hash_buckets) for s in output_config.split_config.splits] == [("train", 90), ("eval", 10)]
    assert output_config.split_config.partition_feature_name == features.FILENAME_KEY
    assert component.EXECUTOR_SPEC.executor_class is executor.Executor
    assert component.exec_properties[executor.KNOWN_CLASSES_KEY] == "[]"


@pytest.mark.parametrize("bad", [0, 51, 2.5])
def test_component_rejects_bad_eval_percent(bad):
    with pytest.raises(ValueError, match="eval_percent"):
        ImageFolderExampleGen(input_base="/data", eval_percent=bad)


def test_a_file_that_cannot_be_read_is_rejected_with_the_reason_and_the_rest_is_batched(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x" * 10)
    (tmp_path / "b.png").write_bytes(b"y" * 10)
    entries = [folder_layout.Entry(str(tmp_path / name), folder_layout.FILE) for name in ("a.png", "gone.png", "b.png")]
    unreadable = []
    batches = list(executor._readable_batches(entries, unreadable, str(tmp_path)))  # pylint: disable=protected-access
    assert [[(os.path.basename(e.path), data) for e, data in batch] for batch in batches] == [
        [("a.png", b"x" * 10), ("b.png", b"y" * 10)]]
    assert unreadable == [{"file": "gone.png", "reason": "cannot read file: No such file or directory"}]


def test_the_data_fingerprint_covers_every_ingested_file_path_and_contents(tmp_path):
    files = make_class_folder(str(tmp_path / "data"), per_class=3)
    (tmp_path / "data" / "red" / "broken.png").write_bytes(b"not an image")  # rejected: not part of the data
    first = features.read_ingest_report(_run_executor(str(tmp_path / "data"), str(tmp_path / "out1")).uri)
    by_hand = executor.combine_fingerprints(
        executor.file_fingerprint(os.path.relpath(path, tmp_path / "data"), open(path, "rb").read())
        for paths in files.values() for path in paths)
    assert first["data_fingerprint"] == f"{by_hand:064x}"
    assert features.read_ingest_report(_run_executor(str(tmp_path / "data"), str(tmp_path / "out2")).uri)[
        "data_fingerprint"] == first["data_fingerprint"], "same files, same fingerprint"
    moved = files["red"][0]
    os.rename(moved, os.path.join(tmp_path / "data" / "blue", "moved.png"))
    assert features.read_ingest_report(_run_executor(str(tmp_path / "data"), str(tmp_path / "out3")).uri)[
        "data_fingerprint"] != first["data_fingerprint"], "a file in another class is other data"


def test_the_driver_keys_reuse_on_every_file_of_the_tree_not_the_root_folder_alone(image_folder):
    component = ImageFolderExampleGen(input_base=image_folder)
    exec_properties = {name: proto_utils.proto_to_json(value) if hasattr(value, "DESCRIPTOR") else value
                       for name, value in component.exec_properties.items()}
    driver = component.driver_class(metadata_handle=None)

    def fingerprint():
        return driver.resolve_exec_properties(dict(exec_properties), None, None)["input_fingerprint"]
    before = fingerprint()
    assert before == folder_layout.tree_fingerprint(image_folder)
    make_class_folder(os.path.join(image_folder, "red", "more"), per_class=1)   # a nested folder inside a class
    assert fingerprint() != before


def test_a_file_reached_twice_through_symlinks_is_one_example_and_copies_across_splits_are_counted(tmp_path):
    """The same file through a symlinked file, and through a symlink in another class folder, is
    read once; the same bytes in two files of different splits is a leak, counted and listed."""
    data = tmp_path / "data"
    make_class_folder(str(data / "train"), per_class=4)
    make_class_folder(str(data / "test"), per_class=2, seed=1)
    original = data / "train" / "red" / "img_001.png"
    os.symlink(original, data / "train" / "red" / "again.png")    # a second path in the same class
    os.symlink(original, data / "train" / "blue" / "red_one.png")  # and in another class
    leaked = data / "test" / "green" / "copy_of_train.png"
    leaked.write_bytes((data / "train" / "green" / "img_002.png").read_bytes())  # a copy, not a link
    examples = _run_executor(str(data), str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())

    def split_files(split):
        files = tf.io.gfile.glob(os.path.join(features.split_dir(str(tmp_path / "out"), split), "*"))
        return [tf.train.Example.FromString(r.numpy()).features.feature[features.FILENAME_KEY].bytes_list.value[0]
                .decode() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    train, evaluation = split_files("train"), split_files("eval")
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
    assert "train/red/img_001.png" in train and len(train) == 12 and len(evaluation) == 7
    assert not {"train/red/again.png", "train/blue/red_one.png"} & set(train + evaluation)
    reason = "the same file as train/red/img_001.png (reached through a symlink)"
    assert sorted((r["file"], r["reason"]) for r in report["ignored"]) == [
        ("train/blue/red_one.png", reason), ("train/red/again.png", reason)]
    assert report["split_leaks"] == 1
    assert {"files": ["test/green/copy_of_train.png", "train/green/img_002.png"], "splits": ["eval", "train"]} \
        in report["identical_files"]
