"""The dense network (--architecture dense): a frozen patch-whitening layer, then groups of dense 3x3
convolutions with max-pooling, and a global max-pool head: the shape of the CIFAR-10 speed records
(KellerJordan/cifar10-airbench, airbench93 and airbench94). Dense 3x3 convolutions keep a CPU's
vector units busy, where depthwise and 1x1 convolutions wait on memory (bench/network_efficiency.py).

The whitening layer's filters are not learnt: the Transform step computes them from the covariance of
the training images' patches (models/preprocessing.py whitening_filters), and the Trainer sets them
(set_whitening), so they travel inside the exported model. Blocks are plain functions named by prefix.
"""
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

WHITENING = "whitening"
# Logits scaled down, as the records do: with SGD's large steps, unscaled logits saturate the softmax early.
LOGIT_SCALE = 1.0 / 9.0
# Small: weight decay shrinks the convolutions' weights and so their outputs' variance, which Keras'
# default (1e-3) would then swamp; the records use 1e-12. 1.001e-5 is the least the fused kernel takes.
BN_EPSILON = 1.001e-5


def whitening_width(patch: int, channels: int) -> int:
    """Filters of the whitening layer: each whitening direction and its negative (GELU keeps both halves)."""
    return 2 * patch * patch * channels


def whitening(x, patch: int, *, name: str = WHITENING):
    """A frozen patch x patch convolution (valid padding) and GELU; its filters come from set_whitening."""
    x = keras.layers.Conv2D(whitening_width(patch, x.shape[-1]), patch, padding="valid", use_bias=False,
                            trainable=False, name=f"{name}_conv")(x)
    return keras.layers.Activation("gelu", name=f"{name}_gelu")(x)


@keras.utils.register_keras_serializable(package="image_cnn")
class PartialIdentity(keras.initializers.Initializer):
    """A 3x3 kernel uniform in +-1/sqrt(fan_in), whose first min(in, out) filters pass their input
    channel through unchanged (the records' Dirac initialization): a deep stack starts near the
    identity, so the first steps train every group at once."""

    def __call__(self, shape, dtype=None, **kwargs):
        rows, cols, channels_in, channels_out = shape
        bound = 1.0 / math.sqrt(rows * cols * channels_in)
        kernel = keras.initializers.RandomUniform(-bound, bound)(shape, dtype=tf.float32).numpy()
        n = min(channels_in, channels_out)
        kernel[..., :n] = 0.0
        kernel[rows // 2, cols // 2, np.arange(n), np.arange(n)] = 1.0
        return tf.constant(kernel, dtype=dtype or tf.float32)


def conv_group(x, filters: int, *, bn_momentum: float, name: str, kernel_regularizer=None):
    """Conv 3x3 -> MaxPool 2x2 -> BN -> GELU -> Conv 3x3 -> BN -> GELU. BatchNormalization without a
    scale (the next convolution scales), as the records have it. The pooling drops an odd last row and
    column, as theirs does: after the 2x2 whitening a 32x32 photo is 31x31, and "same" pooling would
    give the groups 16, 8 and 4 pixels a side instead of 15, 7 and 3: 16-23 % more arithmetic."""
    for index in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=kernel_regularizer,
                                kernel_initializer=PartialIdentity(), name=f"{name}_conv{index}")(x)
        if index == 1:
            x = keras.layers.MaxPooling2D(2, padding="valid", name=f"{name}_pool")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, scale=False, epsilon=BN_EPSILON,
                                            name=f"{name}_bn{index}")(x)
        x = keras.layers.Activation("gelu", name=f"{name}_gelu{index}")(x)
    return x


def dense_classifier(inputs, config) -> keras.Model:
    """Normalized image -> logits, for a ModelConfig with architecture "dense"."""
    x = whitening(inputs, config.whitening_patch)
    for index, filters in enumerate(config.group_filters):
        x = conv_group(x, config.scaled(filters), bn_momentum=config.bn_momentum, name=f"group{index}",
                       kernel_regularizer=config.kernel_regularizer)
    x = keras.layers.GlobalMaxPooling2D(name="head_pool")(x)
    x = keras.layers.Dense(config.num_classes, use_bias=False, kernel_regularizer=config.kernel_regularizer,
                           dtype="float32", name="head_logits")(x)
    logits = keras.layers.Rescaling(LOGIT_SCALE, dtype="float32", name="head_scale")(x)
    return keras.Model(inputs, logits, name="image_cnn")


def set_whitening(model: keras.Model, filters: Optional[np.ndarray]) -> None:
    """filters [n, n] (n = patch * patch * channels; a row per filter, in the (row, column, channel)
    order of a patch, as the Transform step computes them) into the whitening layer, each with its
    negative. None leaves the layer as it was built."""
    if filters is None:
        return
    layer = model.get_layer(f"{WHITENING}_conv")
    patch, _, channels, _ = layer.kernel.shape
    kernel = np.asarray(filters, np.float32).T.reshape(patch, patch, channels, -1)
    layer.set_weights([np.concatenate([kernel, -kernel], axis=-1)])
