"""The Trainer in two worker processes joined by TF_CONFIG on loopback, on the golden run's examples:
the worker script and what it is given (the test is in tests/test_golden_artifacts.py)."""
import os
import socket
import textwrap

TRAINER_WORKER = textwrap.dedent("""
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
    from models import run_fn as trainer
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


def free_ports(count: int) -> list:
    """count distinct free loopback ports: the sockets stay open until all are bound, or the kernel
    may hand the same port out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def golden_trainer_inputs(output_dir: str, locate=lambda uri: uri):
    """The golden run's Trainer execution in ML Metadata: its input artifacts (their URIs passed
    through locate) and its parameters."""
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
        inputs[event.path.steps[0].key] = [locate(found.uri), split_names] if split_names else locate(found.uri)
    exec_properties = {name: getattr(value, value.WhichOneof("value"))
                       for name, value in execution.custom_properties.items() if not name.startswith("__")}
    return inputs, exec_properties
