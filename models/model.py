"""The custom CNN: depthwise-separable residual blocks with optional squeeze-excite.

Blocks are plain functions whose layer names derive from a prefix; the head returns logits
(softmax belongs to serving). Keras 2 (tf_keras) is used explicitly, see README "Keras".
"""
import dataclasses
from typing import Optional, Tuple

import tf_keras as keras


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the network, validated up front."""
    input_shape: Tuple[int, int, int] = (28, 28, 1)
    num_classes: int = 10
    stem_filters: int = 32
    stage_filters: Tuple[int, ...] = (32, 64, 64, 128, 128)
    stage_strides: Tuple[int, ...] = (1, 2, 1, 2, 1)
    se_ratio: Optional[float] = 0.25
    dropout: float = 0.2
    # 0.9 instead of Keras' 0.99: moving statistics must converge within a few hundred steps
    # on small datasets, or inference-mode accuracy collapses (shared NOTES §7).
    bn_momentum: float = 0.9

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "stage_filters", tuple(self.stage_filters))
        object.__setattr__(self, "stage_strides", tuple(self.stage_strides))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (height, width, channels), got {self.input_shape!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes!r}")
        if not self.stage_filters or len(self.stage_filters) != len(self.stage_strides):
            raise ValueError("stage_filters and stage_strides must be non-empty and of equal length, got "
                             f"{self.stage_filters!r} and {self.stage_strides!r}")
        if any(s not in (1, 2) for s in self.stage_strides):
            raise ValueError(f"stage_strides must be 1 or 2, got {self.stage_strides!r}")
        if self.se_ratio is not None and not 0 < self.se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1] or None, got {self.se_ratio!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 < self.bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in (0, 1), got {self.bn_momentum!r}")


def conv_bn_relu(x, filters: int, *, kernel_size: int = 3, strides: int = 1, bn_momentum: float, name: str):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def squeeze_excite(x, ratio: float, *, name: str):
    filters = x.shape[-1]
    squeezed = max(1, int(filters * ratio))
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = keras.layers.Conv2D(squeezed, 1, activation="relu", name=f"{name}_reduce")(s)
    s = keras.layers.Conv2D(filters, 1, activation="sigmoid", name=f"{name}_expand")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def depthwise_separable_block(x, filters: int, stride: int, *, se_ratio: Optional[float],
                              bn_momentum: float, name: str):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN [-> SE] + shortcut -> ReLU."""
    shortcut = x
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_pw_bn")(x)
    if se_ratio:
        x = squeeze_excite(x, se_ratio, name=f"{name}_se")
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(shortcut)
        shortcut = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_proj_bn")(shortcut)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def backbone(inputs, config: ModelConfig):
    x = conv_bn_relu(inputs, config.stem_filters, bn_momentum=config.bn_momentum, name="stem")
    for index, (filters, stride) in enumerate(zip(config.stage_filters, config.stage_strides)):
        x = depthwise_separable_block(x, filters, stride, se_ratio=config.se_ratio,
                                      bn_momentum=config.bn_momentum, name=f"block{index}")
    return x


def build_classifier(config: ModelConfig) -> keras.Model:
    """Normalized image [H, W, C] -> class logits [num_classes]."""
    inputs = keras.Input(shape=config.input_shape, name="image")
    x = backbone(inputs, config)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(config.num_classes, name="head_logits")(x)
    return keras.Model(inputs, logits, name="image_cnn")


def expected_parameter_count(config: ModelConfig) -> int:
    """Parameter count computed by hand from the architecture (pinned by a test)."""
    batchnorm = 4  # gamma, beta, moving mean, moving variance per channel
    channels = config.input_shape[-1]
    total = 9 * channels * config.stem_filters + batchnorm * config.stem_filters
    channels = config.stem_filters
    for filters, stride in zip(config.stage_filters, config.stage_strides):
        total += 9 * channels + batchnorm * channels                 # depthwise + BN
        total += channels * filters + batchnorm * filters            # pointwise + BN
        if config.se_ratio:
            squeezed = max(1, int(filters * config.se_ratio))
            total += filters * squeezed + squeezed + squeezed * filters + filters
        if stride != 1 or channels != filters:
            total += channels * filters + batchnorm * filters        # projection + BN
        channels = filters
    return total + channels * config.num_classes + config.num_classes

