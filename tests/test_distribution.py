"""The Trainer's strategy: MirroredStrategy over several devices, the default one on a single CPU."""
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
    # every kind of layer the default network has (stem, residual blocks with and without a stride, SE,
    # head), fewer of each: tracing under the strategy, most of this test's time, grows with the layers
    config = ModelConfig(input_shape=(16, 16, 1), num_classes=3, stem_filters=8, stage_filters=(8, 16),
                         stage_strides=(1, 2))
    assert isinstance(strategy, tf.distribute.MirroredStrategy), type(strategy)
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_classifier(config)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(0).normal(size=(16, 16, 16, 1)).astype("float32")
    history = model.fit(images, np.arange(16) % 3, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    print("mirrored ok")
    # --quantization-aware: the fake-quantized copy is made, compiled and fine-tuned under the same strategy
    import tempfile
    from models.recipe import TrainingConfig
    from models.run_fn import fine_tune_quantization_aware
    batches = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 3)).batch(8).repeat()
    scratch_dir = tempfile.TemporaryDirectory()  # removed when the process ends
    scratch = scratch_dir.name
    copy = fine_tune_quantization_aware(model, config,
                                        TrainingConfig(quantization_aware_epochs=1, batch_size=4), strategy, batches,
                                        None, 2, scratch + "/checkpoints", scratch + "/logs")
    assert any(layer.name.startswith("quant_") for layer in copy.layers)
    from models.quantization import moving_average_ranges
    for _, high in moving_average_ranges(copy):  # calibrated, not 2 steps from [-6, 6]; alike on both replicas
        replicas = [float(value.numpy()) for value in strategy.experimental_local_results(high)]
        assert len(replicas) == 2 and replicas[0] == replicas[1], (high.name, replicas)
    assert max(abs(float(high.numpy()) - 6.0) for _, high in moving_average_ranges(copy)) > 0.5
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
