"""The Trainer's strategy: MirroredStrategy over several devices, the default one on a single CPU."""
import collections
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

_TWO_LOGICAL_CPUS = textwrap.dedent("""
    import numpy as np, tensorflow as tf, tf_keras as keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from models.distribution import training_strategy
    from models.model import ModelConfig, build_classifier
    strategy = training_strategy()
    assert isinstance(strategy, tf.distribute.MirroredStrategy), type(strategy)
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_classifier(ModelConfig(input_shape=(16, 16, 1), num_classes=3))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).normal(size=(16, 16, 16, 1)).astype("float32")
    history = model.fit(images, np.arange(16) % 3, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    print("mirrored ok")
    # --quantization-aware: the fake-quantized copy is made, compiled and fine-tuned under the same strategy
    import tempfile
    from models.trainer import TrainingConfig, fine_tune_quantization_aware
    batches = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 3)).batch(8).repeat()
    scratch = tempfile.mkdtemp()
    copy = fine_tune_quantization_aware(model, ModelConfig(input_shape=(16, 16, 1), num_classes=3),
                                        TrainingConfig(quantization_aware_epochs=1, batch_size=4), strategy, batches,
                                        None, 2, scratch + "/checkpoints", scratch + "/logs")
    assert any(layer.name.startswith("quant_") for layer in copy.layers)
    assert np.all(np.isfinite(copy.predict(images, verbose=0)))
    print("quantization-aware mirrored ok")
""")


def test_two_logical_cpus_train_under_mirrored_strategy():
    result = subprocess.run([sys.executable, "-c", _TWO_LOGICAL_CPUS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored ok" in result.stdout and "quantization-aware mirrored ok" in result.stdout


def test_single_cpu_uses_the_default_strategy():
    import tensorflow as tf
    from models.distribution import training_strategy
    assert [d.device_type for d in tf.config.list_logical_devices()] == ["CPU"]
    assert training_strategy() is tf.distribute.get_strategy()


_TRAINER_WORKER = textwrap.dedent("""
    import hashlib, json, sys
    from models.distribution import training_strategy
    strategy = training_strategy()  # before any other op, as run_fn does; run_fn then finds it made
    import tensorflow as tf, tf_keras as keras
    from tfx import v1 as tfx
    from components.trainer import Executor
    inputs, outputs, exec_properties, record = json.loads(sys.argv[1])
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)

    seen = []  # per training step, a digest of each image this worker trained on
    train_step = keras.Model.train_step
    def recording_train_step(self, data):
        tf.py_function(lambda images: seen.append([hashlib.sha1(i.tobytes()).hexdigest() for i in images.numpy()]),
                       [data[0]], [])
        return train_step(self, data)
    keras.Model.train_step = recording_train_step

    # Every training image once, through the same input pipeline: the data's own digests, with the
    # multiplicity of images whose pixels are identical (two files of the same picture).
    from models import trainer
    make_datasets = trainer.make_datasets
    in_data = []
    def recording_make_datasets(file_patterns, data_accessor, schema_file, transform, spec, counts, batch_size,
                                training):
        one_pass, _ = make_datasets(file_patterns, data_accessor, schema_file, transform, spec, counts, 1, training)
        in_data.extend(hashlib.sha1(image.numpy().tobytes()).hexdigest() for image, _ in one_pass.take(counts[0]))
        return make_datasets(file_patterns, data_accessor, schema_file, transform, spec, counts, batch_size, training)
    trainer.make_datasets = recording_make_datasets

    def artifact(kind, uri, split_names=None):
        made = kind()
        made.uri = uri
        if split_names:
            made.split_names = split_names
        return [made]
    input_dict = {"examples": artifact(tfx.types.standard_artifacts.Examples, *inputs["examples"]),
                  "transform_graph": artifact(tfx.types.standard_artifacts.TransformGraph, inputs["transform_graph"]),
                  "schema": artifact(tfx.types.standard_artifacts.Schema, inputs["schema"])}
    output_dict = {"model": artifact(tfx.types.standard_artifacts.Model, outputs["model"]),
                   "model_run": artifact(tfx.types.standard_artifacts.ModelRun, outputs["model_run"])}
    Executor().Do(input_dict, output_dict, exec_properties)
    with open(record, "w") as f:
        json.dump({"steps": seen, "data": in_data}, f)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _golden_trainer_inputs(output_dir: str):
    """The golden run's Trainer execution in ML Metadata: its input artifacts and its parameters."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    store = metadata_store.MetadataStore(metadata_store_pb2.ConnectionConfig(
        sqlite=metadata_store_pb2.SqliteMetadataSourceConfig(filename_uri=os.path.join(output_dir, "metadata.sqlite"))))
    (trainer,) = [c for c in store.get_contexts_by_type("node") if c.name.endswith(".Trainer")]
    execution = store.get_executions_by_context(trainer.id)[0]
    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    inputs = {}
    for event in events:
        found = artifacts[event.artifact_id]
        split_names = found.properties["split_names"].string_value if "split_names" in found.properties else None
        inputs[event.path.steps[0].key] = [found.uri, split_names] if split_names else found.uri
    exec_properties = {name: getattr(value, value.WhichOneof("value"))
                       for name, value in execution.custom_properties.items() if not name.startswith("__")}
    return inputs, exec_properties


@pytest.mark.e2e
def test_the_trainer_runs_under_two_workers_on_the_golden_examples_on_disjoint_shards(golden_session, tmp_path):
    """The project's Trainer executor and run_fn, in two processes joined by TF_CONFIG on loopback, on
    the examples and Transform graph of the golden run (augmentation off, so images can be compared):
    in the first pass over the data no image is trained on by both workers, and the chief's exported
    model serves the test digits."""
    workspace = golden_session.workspace.restore("golden")
    inputs, exec_properties = _golden_trainer_inputs(workspace.output_dir)
    custom_config = json.loads(exec_properties["custom_config"])
    custom_config["training"]["augment"] = False
    custom_config["checkpoint_root"] = str(tmp_path / "checkpoints")
    exec_properties.update(custom_config=json.dumps(custom_config), epochs=2)
    outputs = {"model": str(tmp_path / "model"), "model_run": str(tmp_path / "model_run")}
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    processes, records = [], [str(tmp_path / f"seen_{index}.json") for index in range(2)]
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        argument = json.dumps([inputs, outputs, exec_properties, records[index]])
        processes.append(subprocess.Popen([sys.executable, "-c", _TRAINER_WORKER, argument], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    recorded = []
    for record in records:
        with open(record) as f:
            recorded.append(json.load(f))
    steps = [worker["steps"] for worker in recorded]
    assert len(steps[0]) == len(steps[1]) > 0, "both workers run every step"
    from models.trainer import TrainingConfig
    per_replica = TrainingConfig(**custom_config["training"]).batch_size
    in_data = collections.Counter(recorded[0]["data"])
    first_pass = sum(in_data.values()) // (2 * per_replica)  # the whole global batches of one pass over the data
    trained = [collections.Counter(digest for step in worker[:first_pass] for digest in step) for worker in steps]
    assert [sum(t.values()) for t in trained] == [first_pass * per_replica] * 2
    too_often = trained[0] + trained[1] - in_data  # images trained on more often than the data holds them
    shared = set(trained[0]) & set(trained[1])
    assert not too_often, (f"in one pass, {sum(too_often.values())} images were trained on twice; "
                           f"{len(shared)} of them by both workers")

    serving_dirs = [d for d, _, files in os.walk(tmp_path) if "saved_model.pb" in files]
    assert serving_dirs == [os.path.join(outputs["model"], "Format-Serving")]  # the chief's, and only it
    test_dir = os.path.join(workspace.data_root, "test")
    files = [(os.path.join(test_dir, d, name), d) for d in sorted(os.listdir(test_dir))
             for name in sorted(os.listdir(os.path.join(test_dir, d)))[:5]]
    import tensorflow as tf
    serve = tf.saved_model.load(serving_dirs[0]).signatures["serve_image_bytes"]
    names = serve(image_bytes=tf.constant([open(p, "rb").read() for p, _ in files]))["class_name"].numpy()
    accuracy = sum(n.decode() == d for n, (_, d) in zip(names, files)) / len(files)
    assert accuracy >= 0.5, f"the chief's model classifies {accuracy:.2f} of the test digits (chance is 0.1)"


@pytest.mark.parametrize("config, chief", [
    ({}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
])
def test_the_chief_is_the_chief_task_or_else_worker_zero(config, chief):
    from models.distribution import is_chief
    assert is_chief(config) is chief
