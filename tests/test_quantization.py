"""The quantization-aware copy of every network the model library builds: BatchNormalization folded into
the convolutions as the TFLite converter folds it, the trained weights carried over, fake quantization
wherever an int8 TFLite model rounds, the squeeze-excite and CBAM gates included."""
import numpy as np
import pytest
import tf_keras as keras

from models.model import ModelConfig, build_classifier
from models.quantization import calibrate_ranges, folded_copy, moving_average_ranges, quantization_aware_copy


def _short(name: str) -> str:
    """"block0_dw/depthwise_kernel:0" -> "depthwise_kernel": the wrapper lists its layer's weights its own way."""
    return name.split("/")[-1].split(":")[0]


def _trained(config: ModelConfig) -> keras.Model:
    """A network whose weights, BatchNormalization statistics included, are not the initial values
    (which would fold to nothing: scale 1, shift 0)."""
    keras.utils.set_random_seed(0)
    model = build_classifier(config)
    rng = np.random.default_rng(1)
    for weight in model.weights:
        change = rng.normal(0, 0.1, weight.shape).astype(np.float32)
        weight.assign(weight + (np.abs(change) if "moving_variance" in weight.name else change))
    return model


OPTIONS = [({}, 2), ({"attention": "cbam"}, 6), ({"attention": "none"}, 0), ({"architecture": "classic"}, 0)]


def _config(options) -> ModelConfig:
    return ModelConfig(input_shape=(16, 16, 3), num_classes=3, stem_filters=8, stage_filters=(8, 16),
                       stage_strides=(1, 2), **options)


@pytest.mark.parametrize("options", [options for options, _ in OPTIONS])
def test_the_folded_network_computes_what_the_trained_one_does_in_inference(options):
    config = _config(options)
    model = _trained(config)
    folded = folded_copy(model, config)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    images = np.random.default_rng(2).normal(0, 1, (4, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(folded(images, training=False), model(images, training=False), rtol=1e-4, atol=1e-4)


# gates: Multiply and ChannelPool layers, which the default 8-bit scheme has no rule for (2 blocks)
@pytest.mark.parametrize("options, gates", OPTIONS)
def test_the_copy_starts_from_the_folded_weights_and_quantizes_every_layer(options, gates):
    config = _config(options)
    model = _trained(config)
    folded = folded_copy(model, config)
    copy = quantization_aware_copy(model, config)
    for layer in folded.layers[1:]:
        if isinstance(layer, keras.layers.Dropout):
            continue  # the copy drops nothing (below)
        wrapper = copy.get_layer(f"quant_{layer.name}")  # every layer wrapped: none left in float
        copied = {_short(weight.name): weight.numpy() for weight in wrapper.weights
                  if weight.name.startswith(f"{layer.name}/")}  # not the wrapper's own ranges and step
        for weight in layer.weights:
            np.testing.assert_array_equal(copied[_short(weight.name)], weight.numpy(), err_msg=weight.name)
    inner = [getattr(layer, "layer", layer) for layer in copy.layers]  # unwrapped
    # it learns to answer as the model does, to which dropped features are noise
    assert all(layer.rate == 0 for layer in inner if isinstance(layer, keras.layers.Dropout))
    quantized_gates = [layer for layer in copy.layers if layer.name.endswith(("_scale", "_spatial_pool"))]
    assert len(quantized_gates) == gates
    for gate in quantized_gates:  # output ranges tracked: the int8 file rounds there too
        assert any("output_max" in weight.name for weight in gate.weights), gate.name
    images = np.random.default_rng(2).normal(0, 1, (4, 16, 16, 3)).astype(np.float32)
    assert copy(images, training=False).shape == model(images, training=False).shape


def test_a_model_with_serving_attached_is_copied_without_it():
    """Export attaches the Transform layer to the trained model before the copy is made (once refused by
    tfmot as "a keras Model inside another")."""
    config = ModelConfig(input_shape=(16, 16, 1), num_classes=2, stem_filters=8, stage_filters=(8,), stage_strides=(1,))
    model = build_classifier(config)
    model.tft_layer = keras.Sequential([keras.layers.Dense(1)], name="transform")
    copy = quantization_aware_copy(model, config)
    assert [layer.name for layer in copy.layers if "transform" in layer.name] == []


def test_the_copy_is_fine_tuned_to_answer_as_the_trained_model_does_not_to_fit_the_labels(tmp_path):
    """Labels that the trained model always contradicts, and a fine-tuning rate high enough to move the
    copy far: a copy trained on the labels would come to contradict the model; trained on its answers,
    it keeps agreeing with it."""
    import tensorflow as tf
    from models.recipe import TrainingConfig
    from models.run_fn import fine_tune_quantization_aware
    config = _config({})
    model = _trained(config)
    images = np.random.default_rng(3).normal(0, 1, (64, 16, 16, 3)).astype(np.float32)
    answers = np.argmax(model(images, training=False), -1)
    contradicting = (answers + 1) % config.num_classes
    batches = tf.data.Dataset.from_tensor_slices((images, contradicting)).batch(16).repeat()
    training = TrainingConfig(quantization_aware_epochs=6, batch_size=16, learning_rate=5.0)  # 0.05 for the copy
    copy = fine_tune_quantization_aware(model, config, training, tf.distribute.get_strategy(), batches, None, 4,
                                        str(tmp_path / "checkpoints"), str(tmp_path / "logs"))
    predicted = np.argmax(copy(images, training=False), -1)
    assert np.mean(predicted == answers) >= 0.9, np.mean(predicted == answers)
    assert np.mean(predicted == contradicting) <= 0.1


def test_the_copys_activation_ranges_are_calibrated_to_what_the_images_give():
    """tensorflow-model-optimization starts every activation range at [-6, 6] and moves it 0.1 % a step:
    left to a short fine-tuning, the int8 file rounded every activation to about [-6, 6]. Calibrated,
    a range is what the activation takes on the images. Fails too if tfmot renames the range variables
    or changes the moving average's decay, which calibrate_ranges reads back."""
    config = _config({})
    model = _trained(config)
    copy = quantization_aware_copy(model, config)
    ranges = {low.name.split(":")[0][:-len("_min")]: (low, high) for low, high in moving_average_ranges(copy)}
    assert {(float(low.numpy()), float(high.numpy())) for low, high in ranges.values()} == {(-6.0, 6.0)}
    rng = np.random.default_rng(4)
    batches = [rng.normal(0, 3, (16, 16, 16, 3)).astype(np.float32) for _ in range(3)]
    calibrate_ranges(copy, batches)
    folded = folded_copy(model, config)
    for layer, variable in (("stem_relu", "quant_stem_relu/output"),
                            ("head_logits", "quant_head_logits/post_activation")):
        outputs = keras.Model(folded.input, folded.get_layer(layer).output).predict(np.concatenate(batches), verbose=0)
        low, high = (float(v.numpy()) for v in ranges[variable])
        # the copy's activations differ from the float ones by the rounding before them
        assert low == pytest.approx(min(outputs.min(), 0.0), abs=0.05 * float(np.ptp(outputs))), variable
        assert high == pytest.approx(max(outputs.max(), 0.0), rel=0.05), variable
    assert len(ranges) >= 10 and all(float(high.numpy()) != 6.0 for _, high in ranges.values())
