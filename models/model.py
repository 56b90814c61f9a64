"""The custom CNN library: depthwise-separable residual blocks (optionally dilated) with squeeze-excite
or CBAM attention, or a classic Conv-BN-ReLU-Pool stack.

Blocks are plain functions whose layer names derive from a prefix; the head returns logits
(softmax belongs to serving). Everything is chosen by one validated ModelConfig. Keras 2 (tf_keras)
is used explicitly, see docs/running.md, "Keras".
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from models import applications, dense
from models import files

ARCHITECTURES = ("residual", "classic", "dense")
ATTENTIONS = ("se", "cbam", "none")
WEIGHT_DECAY_MODES = ("decoupled", "l2")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the network, validated up front."""
    input_shape: Tuple[int, int, int] = (28, 28, 1)
    num_classes: int = 10
    backbone: str = "none"                # a Keras application instead of the blocks below (models/applications.py)
    architecture: str = "residual"        # residual: depthwise-separable blocks; classic: Conv-BN-ReLU-Pool;
    #                                       dense: whitening, dense 3x3 conv groups, max-pool head (models/dense.py)
    attention: str = "se"                 # residual blocks only: squeeze-excite, CBAM or none
    attention_ratio: float = 0.25         # channel reduction of the attention MLP
    stem_filters: int = 32
    stage_filters: Tuple[int, ...] = (32, 64, 64, 128, 128)
    stage_strides: Tuple[int, ...] = (1, 2, 1, 2, 1)
    stage_dilations: Tuple[int, ...] = ()  # residual blocks, one per stage (empty: all 1); stride-1 stages only
    group_filters: Tuple[int, ...] = (64, 128, 128)  # dense: the conv groups' filters (x width)
    whitening_patch: int = 2              # dense: side of the patches the first layer whitens
    width: float = 1.0                    # multiplies the filters of the stem and of every stage
    depth: int = 1                        # blocks per stage: the first takes the stage's stride, the rest 1
    dropout: float = 0.2                  # before the head
    block_dropout: float = 0.1            # classic blocks, after each one
    weight_decay: float = 0.0             # 0 disables it
    weight_decay_mode: str = "decoupled"  # decoupled (AdamW, in the Trainer) or l2 (kernel regularizers)
    # 0.9 instead of Keras' 0.99: moving statistics must converge within a few hundred steps
    # on small datasets, or inference-mode accuracy collapses (docs/model.md).
    bn_momentum: float = 0.9

    def __post_init__(self):
        for name in ("input_shape", "stage_filters", "stage_strides", "stage_dilations", "group_filters"):
            object.__setattr__(self, name, tuple(int(d) for d in getattr(self, name)))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (height, width, channels), got {self.input_shape!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.backbone not in applications.BACKBONES:
            raise ValueError(f"backbone must be one of {applications.BACKBONES}, got {self.backbone!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not 0 < self.attention_ratio <= 1:
            raise ValueError(f"attention_ratio must be in (0, 1], got {self.attention_ratio!r}")
        if not self.stage_filters or len(self.stage_filters) != len(self.stage_strides):
            raise ValueError("stage_filters and stage_strides must be non-empty and of equal length, got "
                             f"{self.stage_filters!r} and {self.stage_strides!r}")
        if any(s not in (1, 2) for s in self.stage_strides):
            raise ValueError(f"stage_strides must be 1 or 2, got {self.stage_strides!r}")
        if self.stage_dilations and (len(self.stage_dilations) != len(self.stage_strides)
                                     or min(self.stage_dilations) < 1
                                     or any(d > 1 and s > 1 for d, s in zip(self.stage_dilations, self.stage_strides))):
            raise ValueError("stage_dilations must give one rate >= 1 per stage, and 1 where the stride is 2, got "
                             f"{self.stage_dilations!r}")
        if not self.group_filters or min(self.group_filters) < 1 or not 1 <= self.whitening_patch <= 4:
            raise ValueError(f"group_filters must be positive and whitening_patch from 1 to 4, got "
                             f"{self.group_filters!r} and {self.whitening_patch!r}")
        smallest = 2 ** len(self.group_filters) + self.whitening_patch - 1
        if self.architecture == "dense" and min(self.input_shape[:2]) < smallest:
            raise ValueError(f"the dense network's {len(self.group_filters)} groups each halve the image: it needs "
                             f"images of at least {smallest}x{smallest} pixels, got {self.input_shape[:2]!r}")
        if not 0 < self.width <= 16:
            raise ValueError(f"width must be in (0, 16], got {self.width!r}")
        if not 1 <= self.depth <= 16:
            raise ValueError(f"depth must be from 1 to 16, got {self.depth!r}")
        for name in ("dropout", "block_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {self.weight_decay_mode!r}")
        if not 0 < self.bn_momentum < 1:
            raise ValueError(f"bn_momentum must be in (0, 1), got {self.bn_momentum!r}")

    def transform_options(self) -> Dict[str, Any]:
        """What the Transform step computes for this network besides the normalization (the dense
        network's whitening filters)."""
        if self.architecture == "dense" and self.backbone == "none":
            return {"whitening_patch": self.whitening_patch}
        return {}

    def options(self) -> Dict[str, Any]:
        """Everything but the input shape and class count, which the Trainer takes from the data."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("input_shape", "num_classes")}

    @property
    def dilations(self) -> Tuple[int, ...]:
        return self.stage_dilations or (1,) * len(self.stage_strides)

    def scaled(self, filters: int) -> int:
        return max(1, int(round(filters * self.width)))

    def blocks(self) -> List[Tuple[str, int, int, int]]:
        """(name, filters, stride, dilation) of every block in order, width and depth applied. A stage's
        first block keeps the name it had before depth existed, so depth 1 loads older checkpoints."""
        return [(f"block{stage}" if repeat == 0 else f"block{stage}_{repeat}", self.scaled(filters),
                 stride if repeat == 0 else 1, dilation)
                for stage, (filters, stride, dilation) in enumerate(zip(self.stage_filters, self.stage_strides,
                                                                        self.dilations))
                for repeat in range(self.depth)]

    @property
    def kernel_regularizer(self):
        """L2 on every kernel in l2 mode; decoupled decay lives in the optimizer instead."""
        if self.weight_decay and self.weight_decay_mode == "l2":
            return keras.regularizers.L2(self.weight_decay)
        return None


def batchnorm(x, *, bn_momentum: float, name: str, folded: bool = False):
    """BatchNormalization, or nothing when it is folded into the convolution before it, which then has
    a bias (models/quantization.py fine-tunes such a copy, as TFLite folds before it rounds)."""
    return x if folded else keras.layers.BatchNormalization(momentum=bn_momentum, name=name)(x)


def conv_bn_relu(x, filters: int, *, kernel_size: int = 3, strides: int = 1, bn_momentum: float, name: str,
                 kernel_regularizer=None, folded: bool = False):
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=folded,
                            kernel_regularizer=kernel_regularizer, name=f"{name}_conv")(x)
    x = batchnorm(x, bn_momentum=bn_momentum, name=f"{name}_bn", folded=folded)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def squeeze_excite(x, ratio: float, *, name: str):
    filters = x.shape[-1]
    squeezed = max(1, int(filters * ratio))
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = keras.layers.Conv2D(squeezed, 1, activation="relu", name=f"{name}_reduce")(s)
    s = keras.layers.Conv2D(filters, 1, activation="sigmoid", name=f"{name}_expand")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


@keras.utils.register_keras_serializable(package="image_cnn")
class ChannelPool(keras.layers.Layer):
    """[N, H, W, C] -> [N, H, W, 2]: the mean and the max over channels (CBAM's spatial descriptor)."""

    def call(self, inputs):
        return tf.concat([tf.reduce_mean(inputs, axis=-1, keepdims=True),
                          tf.reduce_max(inputs, axis=-1, keepdims=True)], axis=-1)


def cbam(x, ratio: float, *, name: str, spatial_kernel: int = 7):
    """Convolutional Block Attention Module: channel attention (a shared MLP over average- and
    max-pooled features), then spatial attention (a 7x7 conv over channel-wise mean and max)."""
    filters = x.shape[-1]
    reduce = keras.layers.Dense(max(1, int(filters * ratio)), activation="relu", name=f"{name}_mlp_reduce")
    expand = keras.layers.Dense(filters, name=f"{name}_mlp_expand")
    average = expand(reduce(keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg_pool")(x)))
    maximum = expand(reduce(keras.layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_max_pool")(x)))
    channel = keras.layers.Activation("sigmoid", name=f"{name}_channel_gate")(
        keras.layers.Add(name=f"{name}_channel_sum")([average, maximum]))
    x = keras.layers.Multiply(name=f"{name}_channel_scale")([x, channel])
    spatial = keras.layers.Conv2D(1, spatial_kernel, padding="same", activation="sigmoid",
                                  name=f"{name}_spatial_gate")(ChannelPool(name=f"{name}_spatial_pool")(x))
    return keras.layers.Multiply(name=f"{name}_spatial_scale")([x, spatial])


def depthwise_separable_block(x, filters: int, stride: int, *, attention: str = "se",
                              attention_ratio: float = 0.25, dilation: int = 1, bn_momentum: float, name: str,
                              kernel_regularizer=None, folded: bool = False):
    """Depthwise 3x3 (dilated) -> BN -> ReLU -> pointwise 1x1 -> BN [-> SE | CBAM] + shortcut -> ReLU."""
    shortcut = x
    x = keras.layers.DepthwiseConv2D(3, strides=stride, dilation_rate=dilation, padding="same", use_bias=folded,
                                     depthwise_regularizer=kernel_regularizer, name=f"{name}_dw")(x)
    x = batchnorm(x, bn_momentum=bn_momentum, name=f"{name}_dw_bn", folded=folded)
    x = keras.layers.ReLU(name=f"{name}_dw_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=folded, kernel_regularizer=kernel_regularizer, name=f"{name}_pw")(x)
    x = batchnorm(x, bn_momentum=bn_momentum, name=f"{name}_pw_bn", folded=folded)
    if attention == "se":
        x = squeeze_excite(x, attention_ratio, name=f"{name}_se")
    elif attention == "cbam":
        x = cbam(x, attention_ratio, name=f"{name}_cbam")
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=folded,
                                       kernel_regularizer=kernel_regularizer, name=f"{name}_proj")(shortcut)
        shortcut = batchnorm(shortcut, bn_momentum=bn_momentum, name=f"{name}_proj_bn", folded=folded)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def classic_block(x, filters: int, stride: int, *, dropout: float, bn_momentum: float, name: str,
                  kernel_regularizer=None, folded: bool = False):
    """Conv 3x3 -> BN -> ReLU [-> MaxPool 2x2 when the stride is 2] -> Dropout."""
    x = conv_bn_relu(x, filters, bn_momentum=bn_momentum, kernel_regularizer=kernel_regularizer, name=name,
                     folded=folded)
    if stride == 2:
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)
    return keras.layers.Dropout(dropout, name=f"{name}_dropout")(x) if dropout else x


def backbone(inputs, config: ModelConfig, folded: bool = False):
    regularizer = config.kernel_regularizer
    x = conv_bn_relu(inputs, config.scaled(config.stem_filters), bn_momentum=config.bn_momentum, name="stem",
                     kernel_regularizer=regularizer, folded=folded)
    for name, filters, stride, dilation in config.blocks():
        if config.architecture == "classic":
            x = classic_block(x, filters, stride, dropout=config.block_dropout, bn_momentum=config.bn_momentum,
                              name=name, kernel_regularizer=regularizer, folded=folded)
        else:
            x = depthwise_separable_block(x, filters, stride, attention=config.attention,
                                          attention_ratio=config.attention_ratio, dilation=dilation,
                                          bn_momentum=config.bn_momentum, name=name,
                                          kernel_regularizer=regularizer, folded=folded)
    return x


def build_classifier(config: ModelConfig, normalization: Tuple[float, float] = (0.0, 1.0),
                     folded_batchnorm: bool = False) -> keras.Model:
    """Normalized image [H, W, C] -> class logits [num_classes]. normalization: the Transform graph's
    pixel (mean, std), which a Keras application backbone undoes (the custom CNN ignores it).
    folded_batchnorm: the custom CNN without BatchNormalization layers, its convolutions with biases
    instead (models/quantization.py folds a trained model's statistics into them)."""
    inputs = keras.Input(shape=config.input_shape, name="image")
    if config.architecture == "dense" and config.backbone == "none":
        return dense.dense_classifier(inputs, config)
    if config.backbone != "none":
        x = applications.backbone_features(inputs, config.backbone, normalization)
    else:
        x = backbone(inputs, config, folded_batchnorm)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(config.num_classes, kernel_regularizer=config.kernel_regularizer,
                                dtype="float32", name="head_logits")(x)  # float32 logits under mixed precision
    return keras.Model(inputs, logits, name="image_cnn")


FACTS_FILENAME = "model.json"


def write_facts(model: keras.Model, config: ModelConfig, folder: str, **more: Any) -> None:
    """<folder>/model.json: the network's parameter count and the config it was built from (and what
    else is given). The Trainer writes it beside its logs, for its progress line and the run report,
    and into the exported model, where a warm start checks that a champion has the same network."""
    files.write_json(os.path.join(folder, FACTS_FILENAME), {"parameters": int(model.count_params()), "config": dataclasses.asdict(config), **more})


def read_facts(folder: str) -> Optional[Dict[str, Any]]:
    """What write_facts wrote into folder, or None when it holds no such file."""
    return files.read_json_if_exists(os.path.join(folder, FACTS_FILENAME))
