"""--backbone: a Keras application, its weights loaded from a file, frozen for phase 1 and fine-tuned
in its top layers for phase 2, with its own preprocessing inside the model. No network here: the
weights file is written from a freshly built backbone."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import applications
from models import recipe, run_fn
from models.model import ModelConfig, build_classifier

CONFIG = ModelConfig(backbone="mobilenet_v2", input_shape=(32, 32, 1), num_classes=3)
TRAINING = recipe.TrainingConfig(epochs=1, batch_size=8, fine_tune_epochs=1, shift_rotate=False,
                                 early_stopping_patience=0)
NORMALIZATION = (120.0, 60.0)  # the Transform graph's pixel mean and std


def _weights_by_layer(model: keras.Model):
    return {layer.name: [w.numpy().copy() for w in layer.weights] for layer in applications.get_backbone(model).layers}


def _changed(before, after):
    return {name for name in before if any(not np.array_equal(b, a) for b, a in zip(before[name], after[name]))}


def _batches():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 32, 32, 1)).astype("float32")
    labels = rng.integers(0, 3, size=16)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """The backbone weights of another freshly built classifier (another seed), saved as Keras saves them."""
    keras.utils.set_random_seed(1)
    source = build_classifier(CONFIG, NORMALIZATION)
    path = str(tmp_path_factory.mktemp("weights") / "mobilenet_v2_no_top.h5")
    applications.get_backbone(source).save_weights(path)
    return path, applications.get_backbone(source).get_weights()


def test_the_weights_file_is_loaded_frozen_then_changed_only_in_the_unfrozen_layers(weights_file, tmp_path):
    path, saved = weights_file
    keras.utils.set_random_seed(2)
    model = run_fn.build_network(CONFIG, dataclasses.replace(TRAINING, backbone_weights=path), NORMALIZATION,
                                  _batches())
    loaded = applications.get_backbone(model).get_weights()
    assert len(loaded) == len(saved) and all(np.array_equal(a, b) for a, b in zip(loaded, saved))

    # phase 1: the backbone frozen, the head trained
    assert not applications.get_backbone(model).trainable
    assert {w.name.split("/")[0] for w in model.trainable_weights} == {"head_logits"}
    recipe.compile_model(model, CONFIG, TRAINING, steps_per_epoch=2, replicas=1)
    head_before = model.get_layer("head_logits").get_weights()[0].copy()
    before = _weights_by_layer(model)
    run_fn.fit(model, _batches(), None, TRAINING, 2, str(tmp_path / "backup"), str(tmp_path / "logs"))
    assert not _changed(before, _weights_by_layer(model))
    assert not np.array_equal(head_before, model.get_layer("head_logits").get_weights()[0])

    # phase 2: the top layers (BatchNormalization excepted) trained, nothing below them
    run_fn.fine_tune_backbone(model, CONFIG, TRAINING, tf.distribute.get_strategy(), _batches(), None, 2,
                               str(tmp_path / "backup"), str(tmp_path / "logs"))
    base = applications.get_backbone(model)
    unfrozen = {layer.name for layer in base.layers if layer.trainable and layer.weights}
    assert unfrozen and not any(isinstance(base.get_layer(name), keras.layers.BatchNormalization) for name in unfrozen)
    changed = _changed(before, _weights_by_layer(model))
    # (not every unfrozen layer need change: random weights leave some ReLU6 units without gradient)
    assert changed and changed <= unfrozen
    first_unfrozen = min(index for index, layer in enumerate(base.layers) if layer.name in unfrozen)
    assert first_unfrozen > len(base.layers) // 2  # the top layers, not the bottom ones


def test_the_model_undoes_the_normalization_and_applies_the_applications_preprocessing():
    model = build_classifier(CONFIG, NORMALIZATION)
    pixels = np.arange(0, 256, 0.25, dtype="float32")[:32 * 32].reshape(1, 32, 32, 1)
    normalized = (pixels - NORMALIZATION[0]) / NORMALIZATION[1]
    inside = keras.Model(model.inputs, model.get_layer(applications.INPUT_LAYER_NAME).output)(normalized).numpy()
    assert inside.shape == (1, 32, 32, 3)  # grey repeated to RGB
    expected = keras.applications.mobilenet_v2.preprocess_input(np.repeat(pixels, 3, axis=-1))
    np.testing.assert_allclose(inside, expected, atol=1e-5)


def test_random_weights_take_their_batchnorm_statistics_from_the_training_images():
    """Without it a frozen random backbone passes saturated features and the head learns nothing."""
    keras.utils.set_random_seed(3)
    model = run_fn.build_network(CONFIG, TRAINING, NORMALIZATION, _batches())
    base = applications.get_backbone(model)
    first = next(layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))
    images = np.concatenate([x for x, _ in _batches().take(run_fn.CALIBRATION_BATCHES)])
    pixels = keras.Model(model.inputs, model.get_layer(applications.INPUT_LAYER_NAME).output)(images)
    into_first = keras.Model(base.inputs, base.get_layer(first.name).input)(pixels).numpy()
    np.testing.assert_allclose(first.moving_mean.numpy(), into_first.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(first.moving_variance.numpy(), into_first.var(axis=(0, 1, 2)), rtol=1e-2, atol=1e-4)
    assert not base.trainable and first.momentum == 0.999  # frozen after, its own momentum back


def test_a_weights_file_of_another_network_is_refused_naming_it(tmp_path):
    path = str(tmp_path / "custom_cnn.h5")
    build_classifier(ModelConfig(input_shape=(32, 32, 3), num_classes=3, stage_filters=(8,), stage_strides=(1,))
                     ).save_weights(path)
    model = build_classifier(CONFIG, NORMALIZATION)
    with pytest.raises(ValueError, match=r"--backbone-weights .*custom_cnn\.h5: not weights of mobilenet_v2"):
        applications.load_weights(model, "mobilenet_v2", path)


def test_imagenet_weights_without_a_network_stop_with_the_download_command():
    # The network is closed here (DEVELOPERS.md); on a connected machine Keras would download them.
    with pytest.raises(ValueError, match=r"could not download https://storage\.googleapis\.com/.*_96_no_top\.h5 "
                                         r".*curl -fLO https://"):
        applications.imagenet_application("mobilenet_v2", (96, 96, 3))


def test_images_too_small_for_a_backbone_are_refused():
    with pytest.raises(ValueError, match=r"--backbone mobilenet_v2 needs images of at least 32x32, got 28x28"):
        applications.check_input("mobilenet_v2", (28, 28, 1))
    applications.check_input("mobilenet_v2", (32, 32, 3))
    applications.check_input("none", (8, 8, 1))
