"""Quantization-aware training (the custom-CNN guide's last step): after the float training, a copy of
the network with fake-quantized weights and activations (tensorflow-model-optimization's default 8-bit
scheme, the one TFLite's int8 kernels implement) is fine-tuned for a few epochs, so the weights settle
where int8 rounding costs least, instead of meeting the rounding only after training.

The default scheme has no rule for Keras' Multiply (squeeze-excite and CBAM gates) nor for CBAM's
ChannelPool; both are given one here: their output quantized as every other activation is.

The copy is made from the network with its BatchNormalization folded into the convolutions before
them (kernels scaled, biases added), because that is what the TFLite converter rounds: the default
scheme would otherwise fake-quantize the kernels before the folding, which the int8 file never does.

Before the fine-tuning, the copy's activation ranges are calibrated on training images, as the
converter calibrates post-training int8 (calibrate_ranges): the default scheme starts every range at
[-6, 6] and moves it a thousandth of the way to each batch's range per step, so a fine-tuning of a
few hundred steps left nearly every range near [-6, 6], and the int8 file rounded to those.

The copy is fine-tuned to answer as the float model does (Distilling), not to fit the labels: the int8
file is judged by how often it agrees with the float model, and trained on the labels the copy became
a slightly different model, which cost agreement that rounding alone did not (bench/RESULTS.md).
"""
import dataclasses
from typing import Iterable, List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from models.model import ChannelPool, ModelConfig, build_classifier

quantize = tfmot.quantization.keras

# A hundredth of the peak: the float model is trained already, and the int8 file is judged by how
# often it agrees with it, so the copy should move no further than the rounding needs.
QUANTIZATION_AWARE_LEARNING_RATE = 0.01


class OutputQuantizeConfig(quantize.QuantizeConfig):
    """A layer without weights whose output is quantized to 8 bits: asymmetric, one range per tensor,
    tracked by a moving average, as the default scheme quantizes activations."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [quantize.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                           narrow_range=False)]

    def get_config(self):
        return {}


_OUTPUT_ONLY = (keras.layers.Multiply, ChannelPool)


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, _OUTPUT_ONLY):
        return quantize.quantize_annotate_layer(layer, OutputQuantizeConfig())
    return layer


def _batchnorm_of(conv_name: str) -> str:
    """The BatchNormalization after a convolution, by models/model.py's names: stem_conv -> stem_bn,
    block0_dw -> block0_dw_bn, block0_pw -> block0_pw_bn, block0_proj -> block0_proj_bn."""
    return conv_name[:-len("_conv")] + "_bn" if conv_name.endswith("_conv") else conv_name + "_bn"


def _folded_weights(conv: keras.layers.Layer, batchnorm: keras.layers.Layer):
    """[kernel, bias] of conv followed by batchnorm in inference, as one convolution."""
    (kernel,) = conv.get_weights()
    gamma, beta, mean, variance = batchnorm.get_weights()
    scale = gamma / np.sqrt(variance + batchnorm.epsilon)
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # [h, w, channels, 1]: one output per channel
        kernel = kernel * scale.reshape(1, 1, -1, 1)
    else:                                              # [h, w, in, out]
        kernel = kernel * scale
    return [kernel, beta - mean * scale]


def folded_copy(model: keras.Model, config: ModelConfig) -> keras.Model:
    """The network of model (built from config) without BatchNormalization: every convolution followed
    by one takes its inference-time scale and shift; every other layer its weights as they are."""
    folded = build_classifier(config, folded_batchnorm=True)
    for layer in folded.layers:
        source = model.get_layer(layer.name)
        convolution = isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
        if convolution and layer.use_bias and not source.use_bias:
            layer.set_weights(_folded_weights(source, model.get_layer(_batchnorm_of(layer.name))))
        else:
            layer.set_weights(source.get_weights())
    return folded


def quantization_aware_copy(model: keras.Model, config: ModelConfig) -> keras.Model:
    """A copy of model (its network built from config), BatchNormalization folded in, with fake
    quantization wherever an int8 TFLite model rounds; train it like the original (build and compile
    it in the same strategy scope)."""
    # (the network's graph alone: an exported model also tracks the Transform layer serving attached
    # to it, which tfmot would take for a model nested inside and refuse)
    # no dropout: the copy learns to answer as the model does; dropped features are noise to that
    network = folded_copy(model, dataclasses.replace(config, dropout=0.0, block_dropout=0.0))
    with quantize.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig, "ChannelPool": ChannelPool}):
        annotated = keras.models.clone_model(network, clone_function=_annotate)
        return quantize.quantize_apply(quantize.quantize_annotate_model(annotated))


# tensorflow-model-optimization's MovingAverageQuantizer: each training step moves an activation range
# (variables <layer>/{output,post_activation,pre_activation}_{min,max}) to decay x itself + (1 - decay) x
# the batch's range. Not public: tests/test_quantization.py pins both, and fails if either changes.
MOVING_AVERAGE_DECAY = 0.999
_MOVING_AVERAGE_RANGES = ("/output", "/post_activation", "/pre_activation")
CALIBRATION_PASSES = 3  # a range depends on the ranges before it, which each pass makes right first


def moving_average_ranges(copy: keras.Model) -> List[Tuple[tf.Variable, tf.Variable]]:
    """(min, max) variables of every activation range of a quantization-aware copy that a moving
    average tracks (not the weights' ranges, which are their last values, nor the input's, all values)."""
    variables = {v.name.split(":")[0]: v for v in copy.non_trainable_variables}
    ranges = [(variables[name], variables[name[:-len("_min")] + "_max"]) for name in variables
              if name.endswith("_min") and name[:-len("_min")].endswith(_MOVING_AVERAGE_RANGES)]
    if not ranges:
        raise RuntimeError(f"tensorflow-model-optimization {tfmot.__version__} names no activation range "
                           f"variables *{{{','.join(_MOVING_AVERAGE_RANGES)}}}_min: the quantization-aware "
                           "copy's ranges cannot be calibrated")
    return ranges


def _batch_range(variable: tf.Variable, before: np.ndarray) -> np.ndarray:
    """The batch's own range, from the moving average one training step made of it."""
    return (variable.numpy() - MOVING_AVERAGE_DECAY * before) / (1 - MOVING_AVERAGE_DECAY)


def calibrate_ranges(copy: keras.Model, images: Iterable, passes: int = CALIBRATION_PASSES) -> None:
    """Sets every moving-average activation range of copy to the smallest and largest values that
    activation takes on images (batches), as the converter calibrates post-training int8."""
    ranges = moving_average_ranges(copy)
    for _ in range(passes):
        lows, highs = [np.inf] * len(ranges), [-np.inf] * len(ranges)
        for batch in images:
            before = [(low.numpy(), high.numpy()) for low, high in ranges]
            copy(batch, training=True)  # training: the step that updates the ranges
            for i, ((low, high), (low_before, high_before)) in enumerate(zip(ranges, before)):
                lows[i] = np.minimum(lows[i], _batch_range(low, low_before))
                highs[i] = np.maximum(highs[i], _batch_range(high, high_before))
                low.assign(low_before)
                high.assign(high_before)
        for (low, high), low_value, high_value in zip(ranges, lows, highs):
            low.assign(np.minimum(low_value, 0.0).astype(np.float32))  # as the batch ranges: 0 always inside
            high.assign(np.maximum(high_value, 0.0).astype(np.float32))


class Distilling(keras.Model):
    """Trains student on the teacher's answers: cross-entropy against the teacher's softmax on the same
    (augmented) batch; the teacher is not trained. Reports accuracy on the labels and agreement (the
    share of images where the two pick the same class) in training and validation."""

    def __init__(self, student: keras.Model, teacher: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
        self.agreement = keras.metrics.Accuracy(name="agreement")

    def call(self, images, training=False):
        return self.student(images, training=training)

    @property
    def metrics(self):
        return super().metrics + [self.agreement]

    def _step(self, data, training: bool):
        images, labels = data[0], data[1]
        targets = tf.nn.softmax(self.teacher(images, training=False))
        with tf.GradientTape() as tape:
            logits = self.student(images, training=training)
            loss = self.compiled_loss(targets, logits, regularization_losses=self.student.losses)
        if training:
            self.optimizer.minimize(loss, self.student.trainable_variables, tape=tape)
        self.compiled_metrics.update_state(labels, logits)
        self.agreement.update_state(tf.argmax(targets, -1), tf.argmax(logits, -1))
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        return self._step(data, training=True)

    def test_step(self, data):
        return self._step(data, training=False)
