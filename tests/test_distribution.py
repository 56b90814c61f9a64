"""The Trainer's strategy: MirroredStrategy over several devices, the default one on a single CPU."""
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
""")


def test_two_logical_cpus_train_under_mirrored_strategy():
    result = subprocess.run([sys.executable, "-c", _TWO_LOGICAL_CPUS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored ok" in result.stdout


def test_single_cpu_uses_the_default_strategy():
    import tensorflow as tf
    from models.distribution import training_strategy
    assert [d.device_type for d in tf.config.list_logical_devices()] == ["CPU"]
    assert training_strategy() is tf.distribute.get_strategy()


_WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from models.distribution import save_on_chief, training_strategy
    strategy = training_strategy()  # before any other op, as run_fn does
    import tensorflow as tf, tf_keras as keras
    from models.model import ModelConfig, build_classifier
    from models.trainer import TrainingConfig, compile_model, fit
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    out_dir = sys.argv[1]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 16, 16, 1)).astype(np.float32)
    labels = (images.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(16).with_options(options)
    config = ModelConfig(input_shape=(16, 16, 1), num_classes=2)   # the pipeline's default network
    training = TrainingConfig(epochs=2, validation_percent=0)
    with strategy.scope():
        model = build_classifier(config)
        compile_model(model, config, training, steps_per_epoch=3, replicas=strategy.num_replicas_in_sync)
    history = fit(model, data, None, training, 3, os.path.join(out_dir, "backup"), os.path.join(out_dir, "logs"))
    chief = save_on_chief(lambda path: tf.saved_model.save(model, path), os.path.join(out_dir, "serving_model"))
    print(json.dumps({"chief": chief, "loss": history.history["loss"]}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_train_together_and_only_the_chief_exports(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path)], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["chief"] for r in results] == [True, False]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"]), "both workers see the same (all-reduced) model"
    saved = [d for d, _, files in os.walk(tmp_path) if "saved_model.pb" in files]
    assert saved == [str(tmp_path / "serving_model")]


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
