"""Training pieces: the schedule, the loss, resuming after an interrupt, and parity across replicas."""
import dataclasses
import glob
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.model import ModelConfig, build_classifier
from models.recipe import (TrainingConfig, WarmupCosineRestarts, compile_model, schedule_for,
                           smoothed_sparse_crossentropy)
from models.run_fn import LEARNING_RATE_FILENAME, fit, profiled_batches, write_learning_rates
from models.training_data import augmenter, training_batches


def test_schedule_warms_up_then_restarts_in_doubling_cycles_that_end_with_training():
    schedule = WarmupCosineRestarts(1.0, warmup_steps=10, total_steps=80, restarts=2, alpha=0.01)
    lr = [float(schedule(step)) for step in range(80)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)       # linear warm-up
    # 70 steps after warm-up in cycles of 10, 20 and 40: each starts at the peak and decays to ~alpha
    for start, length in ((10, 10), (20, 20), (40, 40)):
        assert lr[start] == pytest.approx(1.0)
        assert lr[start + length - 1] < 0.05
        assert all(a >= b for a, b in zip(lr[start:start + length], lr[start + 1:start + length]))
    assert WarmupCosineRestarts(**schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.parametrize("epochs,steps_per_epoch", [(4, 57), (15, 57), (8, 9), (40, 12), (3, 7)])
def test_training_ends_at_the_bottom_of_the_last_cycle_not_back_at_the_peak(epochs, steps_per_epoch):
    schedule = schedule_for(TrainingConfig(epochs=epochs), steps_per_epoch, replicas=1)
    rates = schedule(tf.range(schedule.total_steps)).numpy() / schedule.peak
    last_cycle = rates[int(0.9 * len(rates)):]
    assert rates[-1] < 0.1 and all(a >= b for a, b in zip(last_cycle, last_cycle[1:]))


def test_the_rate_of_every_step_is_written_for_the_report(tmp_path):
    schedule = WarmupCosineRestarts(1.0, warmup_steps=10, total_steps=80, restarts=2, alpha=0.01)
    write_learning_rates(schedule, steps_per_epoch=8, log_dir=str(tmp_path / "model_run"))
    with open(tmp_path / "model_run" / LEARNING_RATE_FILENAME) as f:
        written = json.load(f)
    assert written["steps_per_epoch"] == 8
    assert written["learning_rate"] == pytest.approx([float(schedule(step)) for step in range(80)], rel=1e-5)


def test_the_warm_up_takes_at_most_half_the_training_and_the_peak_scales_with_replicas():
    assert schedule_for(TrainingConfig(epochs=1), steps_per_epoch=10, replicas=1).warmup_steps == 5
    schedule = schedule_for(TrainingConfig(epochs=20, learning_rate=1e-3), steps_per_epoch=10, replicas=4)
    assert (schedule.warmup_steps, schedule.total_steps, schedule.peak) == (10, 200, pytest.approx(4e-3))


def test_label_smoothing_loss_matches_the_formula():
    logits = tf.constant([[2.0, 0.0, -1.0]])
    probabilities = tf.nn.softmax(logits).numpy()[0]
    assert float(smoothed_sparse_crossentropy(3, 0.0)(tf.constant([0]), logits)[0]) == \
        pytest.approx(-math.log(probabilities[0]), rel=1e-5)
    target = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    assert float(smoothed_sparse_crossentropy(3, 0.1)(tf.constant([0]), logits)[0]) == \
        pytest.approx(-(target * np.log(probabilities)).sum(), rel=1e-5)


@pytest.mark.parametrize("kwargs, message", [({"epochs": 0}, "epochs"), ({"warmup_epochs": -1}, "warmup_epochs"),
                                             ({"label_smoothing": 1.0}, "label_smoothing"),
                                             ({"validation_percent": 60}, "validation_percent"),
                                             ({"test_time_shift": -1}, "test_time_shift must be >= 0"),
                                             ({"crop_pad": 1, "test_time_shift": 2},
                                              "test_time_shift needs crop_pad of at least 2, got 1"),
                                             ({"bias_lr_scale": 64.0}, "bias_lr_scale .* for sgd only"),
                                             ({"lookahead": True, "ema": 0.9}, "choose one"),
                                             ({"alternating_flip": True}, "alternating_flip needs flip")])
def test_training_config_rejects_bad_values_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**kwargs)


class _Interrupt(keras.callbacks.Callback):
    """Stops the process's training after an epoch, as a killed Trainer would."""

    def __init__(self, after_epoch: int):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.after_epoch:
            raise KeyboardInterrupt("simulated kill")


class _EpochsRun(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


ONE_PIXEL = (1, 1, 1)


def _class_sorted_examples(classes: int, per_class: int, validation_every: int):
    """(image, label, is_validation) in ExampleGen's order: all of class 0, then class 1, ...; each
    1x1 image holds its example's index."""
    count = classes * per_class
    index = np.arange(count)
    return (tf.data.Dataset.from_tensor_slices((index.astype(np.float32).reshape(count, 1, 1, 1),
                                                index // per_class, index % validation_every == 0)),
            (count - len(index[::validation_every]), len(index[::validation_every])))


def test_training_batches_mix_every_class_from_the_first_batches_of_a_class_sorted_split():
    examples, counts = _class_sorted_examples(classes=10, per_class=3000, validation_every=10)
    training = TrainingConfig(shift_rotate=False, seed=0)
    train, validation = training_batches(examples, counts, ONE_PIXEL, batch_size=32, training=training)
    first_labels = np.concatenate([labels.numpy() for _, labels in train.take(10)])
    assert set(first_labels) == set(range(10)), f"classes in the first 320 examples: {sorted(set(first_labels))}"
    seen = np.concatenate([images.numpy().ravel() for images, _ in train.take(-(-counts[0] // 32))])[:counts[0]]
    assert sorted(seen.astype(int)) == [i for i in range(30000) if i % 10], \
        "one epoch holds every training example once, and no validation example"
    held_out = np.concatenate([images.numpy().ravel() for images, _ in validation]).astype(int)
    assert list(held_out) == list(range(0, 30000, 10))


def test_training_batches_bound_the_shuffle_buffer_by_memory_when_the_split_does_not_fit():
    examples, counts = _class_sorted_examples(classes=10, per_class=300, validation_every=10)
    train, _ = training_batches(examples, counts, ONE_PIXEL, batch_size=32,
                                training=TrainingConfig(shift_rotate=False), memory_bytes=4 * 100)
    first_labels = np.concatenate([labels.numpy() for _, labels in train.take(2)])
    assert set(first_labels) <= {0, 1}, "a 100-image buffer over class-sorted data only reaches the first classes"


def test_photo_augmentation_pads_crops_and_flips_training_images_only_changing_where_they_sit():
    augment = augmenter(TrainingConfig(shift_rotate=False, flip=True, crop_pad=4), 32, 32)
    image = np.zeros((1, 32, 32, 3), np.float32)
    image[0, 10:20, 4:8] = 1.0  # a 10 x 4 bar left of centre, 4 pixels or more from every edge
    keras.utils.set_random_seed(0)
    outputs = augment(np.repeat(image, 64, axis=0), training=True).numpy()
    assert outputs.shape == (64, 32, 32, 3)
    assert all(out.sum() == 120 for out in outputs), "the bar is moved whole, never cut or blurred"
    left_columns = [int(np.nonzero(out[:, :, 0].max(axis=0))[0][0]) for out in outputs]
    flipped = [column >= 16 for column in left_columns]
    assert any(flipped) and not all(flipped), "about half are mirrored"
    offsets = {column - (24 if mirrored else 4) for column, mirrored in zip(left_columns, flipped)}
    assert offsets <= set(range(-4, 5)) and len(offsets) > 3, f"shifted by at most the 4-pixel pad: {offsets}"
    assert np.array_equal(augment(image, training=False).numpy(), image), "inference leaves images alone"
    assert augmenter(TrainingConfig(shift_rotate=False), 32, 32) is None


def _tiny_training(seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(48, 12, 12, 1)).astype(np.float32)
    labels = (images.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(16)
    config = ModelConfig(input_shape=(12, 12, 1), num_classes=2, stage_filters=(8, 8), stage_strides=(1, 2))
    training = TrainingConfig(epochs=5, warmup_epochs=1, validation_percent=0)
    model = build_classifier(config)
    compile_model(model, config, training, steps_per_epoch=3, replicas=1)
    return model, train, training


def test_an_interrupted_training_resumes_after_its_last_finished_epoch(tmp_path):
    backup = str(tmp_path / "backup")
    model, train, training = _tiny_training()
    with pytest.raises(KeyboardInterrupt):
        fit(model, train, None, training, 3, backup, str(tmp_path / "logs"), extra_callbacks=[_Interrupt(after_epoch=2)])
    assert os.listdir(backup), "a checkpoint must exist after the interrupt"
    model, train, training = _tiny_training()   # a new process: fresh weights, same backup dir
    epochs_run = _EpochsRun()
    history = fit(model, train, None, training, 3, backup, str(tmp_path / "logs"), extra_callbacks=[epochs_run])
    assert epochs_run.epochs == [3, 4], "epochs 0-2 were done before the interrupt"
    assert len(history.history["loss"]) == 2
    assert int(model.optimizer.iterations) == 15, "the optimizer state (step count) was restored too"
    assert not os.path.exists(backup) or not os.listdir(backup), "the backup is removed once training ends"


def test_a_profiled_training_leaves_a_trace_of_the_second_epoch_in_its_tensorboard_logs(tmp_path):
    model, train, training = _tiny_training()
    training = dataclasses.replace(training, epochs=2, profile=True)
    assert profiled_batches(training, steps_per_epoch=3) == (4, 6)
    fit(model, train, None, training, 3, str(tmp_path / "backup"), str(tmp_path / "logs"))
    traces = glob.glob(str(tmp_path / "logs" / "**" / "*.xplane.pb"), recursive=True)
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    assert profiled_batches(dataclasses.replace(training, profile=False), 3) == (0, 0)


_PARITY = textwrap.dedent("""
    import json, numpy as np, tensorflow as tf, tf_keras as keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from models.model import ModelConfig, build_classifier
    from models.recipe import Lookahead, TrainingConfig, compile_model
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 12, 12, 1)).astype(np.float32)
    labels = (images[:, :6].mean(axis=(1, 2, 3)) > images[:, 6:].mean(axis=(1, 2, 3))).astype(np.int64)
    config = ModelConfig(input_shape=(12, 12, 1), num_classes=2, stage_filters=(8, 16), stage_strides=(1, 2),
                         dropout=0.0)
    losses = {}
    for recipe, training in (("", TrainingConfig(epochs=6, warmup_epochs=1, learning_rate=2e-3)),
                             (" records'", TrainingConfig(epochs=6, warmup_epochs=1, learning_rate=0.05, optimizer="sgd",
                                                          bias_lr_scale=8.0, lookahead=True,
                                                          schedule="linear"))):
        for name, strategy in (("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                               ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                model = build_classifier(config)
                compile_model(model, config, training, steps_per_epoch=4, replicas=1)  # same global batch and rate
            data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
            callbacks = [Lookahead(training.epochs * 4)] if training.lookahead else []
            history = model.fit(data, epochs=training.epochs, verbose=0, callbacks=callbacks)
            losses[name + recipe] = history.history["loss"]
    print(json.dumps(losses))
""")


def test_two_replicas_follow_the_single_device_loss_trajectory():
    result = subprocess.run([sys.executable, "-c", _PARITY], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert losses["one"][-1] < losses["one"][0] * 0.9, "training must make progress for the comparison to mean anything"
    # Per-replica BatchNorm statistics over half batches are the only difference: within 2 % per epoch,
    # a fraction of the 13 % the loss falls over these epochs.
    np.testing.assert_allclose(losses["mirrored"], losses["one"], rtol=0.02)
    # the same with SGD, scaled steps on BatchNorm offsets and Lookahead, whose callback sets mirrored variables
    assert losses["one records'"][-1] < losses["one records'"][0] * 0.9
    np.testing.assert_allclose(losses["mirrored records'"], losses["one records'"], rtol=0.02)


def test_the_checkpoint_folder_changes_with_the_code_and_a_source_edit_changes_the_digest(tmp_path, monkeypatch):
    """An interrupted run's checkpoint is restored only into the same data, settings and code."""
    import sys
    import types
    from models import features, sources
    from models.run_fn import checkpoint_dir
    examples = tmp_path / "examples"
    os.makedirs(features.split_dir(str(examples), "train"))
    (examples / features.INGEST_REPORT_FILENAME).write_text(json.dumps({"data_fingerprint": "abc"}))
    fn_args = types.SimpleNamespace(train_files=[os.path.join(features.split_dir(str(examples), "train"), "*")], custom_config={"x": 1})
    first = checkpoint_dir(str(tmp_path), fn_args)
    assert checkpoint_dir(str(tmp_path), fn_args) == first

    package = tmp_path / "code" / "editedpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("WIDTH = 32\n")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    before = sources.sources_digest(["editedpkg"])
    (package / "__init__.py").write_text("WIDTH = 64\n")
    assert sources.sources_digest(["editedpkg"]) != before
    sys.modules.pop("editedpkg", None)

    monkeypatch.setattr(sources, "sources_digest", lambda: before)  # the project's code, as if edited
    assert checkpoint_dir(str(tmp_path), fn_args) != first


def test_reflect_padding_fills_the_border_a_shift_uncovers_with_the_image_not_zeros():
    augment = augmenter(TrainingConfig(shift_rotate=False, crop_pad=4, pad_mode="reflect"), 16, 16)
    image = np.arange(1, 257, dtype=np.float32).reshape(1, 16, 16, 1)  # no zero anywhere
    keras.utils.set_random_seed(0)
    outputs = augment(np.repeat(image, 32, axis=0), training=True).numpy()
    assert (outputs > 0).all(), "reflected, never zero-filled"
    moved = [not np.array_equal(out, image[0]) for out in outputs]
    assert sum(moved) > 16, "most images are shifted"
    zero_filled = augmenter(TrainingConfig(shift_rotate=False, crop_pad=4), 16, 16)
    assert (zero_filled(np.repeat(image, 32, axis=0), training=True).numpy() == 0).any()


def test_the_linear_schedule_warms_up_then_decays_linearly_to_its_end_share():
    from models.recipe import WarmupLinearDecay
    schedule = schedule_for(TrainingConfig(epochs=10, learning_rate=0.1, schedule="linear", warmup_epochs=2),
                            steps_per_epoch=10, replicas=1)
    assert isinstance(schedule, WarmupLinearDecay)
    rates = schedule(tf.range(100)).numpy()
    assert rates[19] == pytest.approx(0.1) and rates[0] == pytest.approx(0.1 / 20)
    assert np.all(np.diff(rates[:20]) > 0) and np.all(np.diff(rates[20:]) < 0)
    assert np.allclose(np.diff(rates[20:]), np.diff(rates[20:])[0], atol=1e-7), "a straight line"
    assert rates[99] == pytest.approx(0.1 * (1 - 0.93 * 79 / 80), rel=1e-4)
    assert WarmupLinearDecay(**schedule.get_config()).get_config() == schedule.get_config()


def test_sgd_is_nesterov_and_the_exported_weights_are_the_average_computed_by_hand():
    """With --ema, fit leaves in the model the exponential average of the weights after every step
    (tf_keras starts it at the weights before training), which is what the SavedModel then holds."""
    from models.recipe import optimizer_for
    sgd = optimizer_for(ModelConfig(weight_decay=0.01), TrainingConfig(optimizer="sgd"), 0.1)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9
    assert sgd.weight_decay == 0.01
    assert isinstance(optimizer_for(ModelConfig(), TrainingConfig(), 0.1), keras.optimizers.Adam)
    images = np.random.default_rng(0).normal(0, 1, (64, 4)).astype(np.float32)
    labels = (images[:, 0] > 0).astype(np.int64)

    def trained(ema: float):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile(optimizer_for(ModelConfig(), TrainingConfig(optimizer="sgd", ema=ema), 0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        seen = []
        after_step = keras.callbacks.LambdaCallback(on_train_begin=lambda *_: seen.append(model.get_weights()),
                                                    on_train_batch_end=lambda *_: seen.append(model.get_weights()))
        model.fit(images, labels, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[after_step])
        return model.get_weights(), seen

    plain, steps = trained(0.0)
    averaged, _ = trained(0.8)
    by_hand = steps[0]
    for weights in steps[1:]:
        by_hand = [0.8 * a + 0.2 * w for a, w in zip(by_hand, weights)]
    assert all(np.allclose(a, h, atol=1e-6) for a, h in zip(averaged, by_hand))
    assert not all(np.allclose(a, p) for a, p in zip(averaged, plain))


def test_sgd_steps_on_batchnorm_offsets_are_scaled_and_every_other_step_and_the_decay_are_not():
    """--bias-lr-scale 64: one SGD step moves each BatchNorm offset 64x as far as plain SGD does,
    every other weight as far, and decoupled weight decay shrinks all of them alike."""
    from models.recipe import NormBiasScaledSGD, is_norm_offset, optimizer_for
    images = np.random.default_rng(0).normal(0, 1, (32, 4)).astype(np.float32)
    labels = (images[:, 0] > 0).astype(np.int64)

    def one_step(scale: float, weight_decay: float = 0.0):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"),
                                  keras.layers.BatchNormalization(scale=False, beta_initializer="ones", name="bn"),
                                  keras.layers.Dense(2, name="out")])
        before = [w.numpy() for w in model.trainable_weights]
        optimizer = optimizer_for(ModelConfig(weight_decay=weight_decay),
                                  TrainingConfig(optimizer="sgd", bias_lr_scale=scale), 0.1)
        model.compile(optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images, labels, batch_size=32, epochs=1, shuffle=False, verbose=0)
        return {w.name: (w.numpy() - b) for w, b in zip(model.trainable_weights, before)}, model

    plain, _ = one_step(1.0)
    scaled, model = one_step(64.0)
    offsets = [w.name for w in model.trainable_weights if is_norm_offset(w)]
    assert offsets == ["bn/beta:0"]
    for name, step in plain.items():
        assert np.abs(step).max() > 0
        np.testing.assert_allclose(scaled[name], step * (64.0 if name in offsets else 1.0), rtol=1e-4, atol=1e-7)
    assert isinstance(model.optimizer, NormBiasScaledSGD) and model.optimizer.get_config()["bias_scale"] == 64.0
    decayed, _ = one_step(64.0, weight_decay=0.5)
    decayed_plain, _ = one_step(1.0, weight_decay=0.5)
    for name in offsets:  # the decay (weight x 0.5 x 0.1) is the same; only the gradient's part is scaled
        np.testing.assert_allclose(decayed[name] - scaled[name], decayed_plain[name] - plain[name], atol=1e-6)


def test_lookahead_pulls_the_weights_and_batchnorm_statistics_to_an_average_that_weighs_late_steps_more():
    from models.recipe import Lookahead
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    start = [np.full(w.shape, 1.0, np.float32) for w in model.weights]
    model.set_weights(start)
    lookahead = Lookahead(total_steps=10, every=5)
    lookahead.set_model(model)
    lookahead.on_train_begin()

    def steps(value: float, count: int):
        for _ in range(count):
            model.set_weights([np.full(w.shape, value, np.float32) for w in model.weights])
            lookahead.on_train_batch_end(0)
        return [w.numpy() for w in model.weights]

    assert np.allclose(steps(3.0, 4)[0], 3.0), "between pulls the weights train on"
    early = 1.0 + (1 - 0.95 ** 5 * 0.5 ** 3) * (3.0 - 1.0)  # step 5 of 10: decay 0.95^5 x (5/10)^3
    assert all(np.allclose(w, early) for w in steps(3.0, 1)), "every weight, moving statistics included"
    late = early + (1 - 0.95 ** 5) * (-1.0 - early)  # step 10 of 10: decay 0.95^5
    assert all(np.allclose(w, late) for w in steps(-1.0, 5))
    steps(7.0, 2)
    lookahead.on_train_end()
    assert all(np.allclose(w, late) for w in model.weights), "training ends on the average"
    names = {w.name.split("/")[-1] for w in model.weights}
    assert {"moving_mean:0", "moving_variance:0"} <= names


def test_alternating_flips_mirror_each_image_every_other_epoch_from_a_random_start():
    images = np.arange(16 * 2, dtype=np.float32).reshape(16, 1, 2, 1)  # left pixel < right pixel
    examples = tf.data.Dataset.from_tensor_slices((images, np.arange(16), np.zeros(16, bool)))
    training = TrainingConfig(flip=True, alternating_flip=True, shift_rotate=False, validation_percent=0)
    train, _ = training_batches(examples, (16, 0), (1, 2, 1), 16, training)
    flipped = []
    for x, y in train.take(4):
        mirrored = x.numpy()[:, 0, 0, 0] > x.numpy()[:, 0, 1, 0]
        flipped.append(dict(zip(y.numpy().tolist(), mirrored.tolist())))
    assert 0 < sum(flipped[0].values()) < 16, "the first epoch's flips are a coin per image"
    for image in range(16):
        assert [epoch[image] for epoch in flipped] == [flipped[0][image], not flipped[0][image]] * 2
