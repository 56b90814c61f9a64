"""A Keras application as the network's backbone (--backbone), for transfer learning.

The classifier takes the Transform graph's normalized images, like the custom CNN. Inside it, the
normalization is undone (pixels 0..255 again), grey is repeated to three channels, and the
application's own preprocessing follows, so the exported model holds everything an ImageNet-trained
backbone expects and clients still send plain pixels.

Training has two phases (models/run_fn.py): the backbone frozen while the new head learns at the
peak rate, then its top layers unfrozen and fine-tuned at FINE_TUNE_LEARNING_RATE x the peak.
BatchNormalization stays frozen and in inference mode throughout, as Keras' transfer-learning guide
does: its statistics were learnt on the pretraining data, and a small batch would overwrite them.
"""
import os
import tempfile
from typing import Tuple

import tensorflow as tf
import tf_keras as keras

BACKBONES = ("none", "mobilenet_v2", "efficientnet_b0")
LAYER_NAME = "backbone"
INPUT_LAYER_NAME = "backbone_input"
MIN_SIZE = 32                     # what both applications accept
FINE_TUNE_LEARNING_RATE = 0.1     # x the peak, for phase 2
UNFROZEN_FRACTION = 0.3           # of the backbone's layers, the top ones, trained in phase 2

# Where Keras downloads the ImageNet weights from (tf_keras.applications; no top, width 1.0).
_MOBILENET_V2_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
                     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5")
_MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)  # the sizes weights exist for; others load those of 224
_EFFICIENTNET_B0_URL = "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5"


def check_input(backbone: str, shape: Tuple[int, int, int]) -> None:
    """Raises ValueError when the images are too small for the backbone."""
    if backbone != "none" and min(shape[:2]) < MIN_SIZE:
        raise ValueError(f"--backbone {backbone} needs images of at least {MIN_SIZE}x{MIN_SIZE}, got "
                         f"{shape[0]}x{shape[1]}: give --image-size (96 96 or more suits these networks)")


def imagenet_weights_url(backbone: str, shape: Tuple[int, int, int]) -> str:
    if backbone == "mobilenet_v2":
        return _MOBILENET_V2_URL.format(rows=shape[0] if shape[0] in _MOBILENET_V2_ROWS else 224)
    return _EFFICIENTNET_B0_URL


def _application(backbone: str, shape: Tuple[int, int, int], weights=None) -> keras.Model:
    rgb = (shape[0], shape[1], 3)
    if backbone == "mobilenet_v2":
        return keras.applications.MobileNetV2(input_shape=rgb, include_top=False, weights=weights)
    return keras.applications.EfficientNetB0(input_shape=rgb, include_top=False, weights=weights)


def backbone_features(images, backbone: str, normalization: Tuple[float, float]):
    """Normalized images [N, H, W, C] -> the backbone's last feature maps. normalization: the
    Transform graph's (mean, std), which the first layer undoes."""
    check_input(backbone, tuple(images.shape[1:]))
    mean, std = normalization
    x = keras.layers.Rescaling(std, offset=mean, name="pixels")(images)
    if images.shape[-1] == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    # the application's preprocessing: mobilenet_v2.preprocess_input scales to -1..1; EfficientNet's own
    # first layers rescale and normalize 0..255 pixels. Named, so calibrate_batchnorm can feed the backbone.
    scale, offset = (1 / 127.5, -1.0) if backbone == "mobilenet_v2" else (1.0, 0.0)
    x = keras.layers.Rescaling(scale, offset=offset, name=INPUT_LAYER_NAME)(x)
    application = _application(backbone, tuple(images.shape[1:]))
    base = keras.Model(application.inputs, application.outputs, name=LAYER_NAME)
    return base(x, training=False)  # BatchNormalization in inference mode, in both phases


def get_backbone(model: keras.Model) -> keras.Model:
    return model.get_layer(LAYER_NAME)


def freeze(model: keras.Model) -> None:
    """Phase 1: the whole backbone frozen."""
    get_backbone(model).trainable = False


def unfreeze_top(model: keras.Model, fraction: float = UNFROZEN_FRACTION) -> int:
    """Phase 2: the top fraction of the backbone's layers trainable, BatchNormalization excepted;
    returns how many layers were unfrozen. The model must be compiled again afterwards."""
    base = get_backbone(model)
    base.trainable = True
    first = len(base.layers) - int(round(len(base.layers) * fraction))
    unfrozen = 0
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)
        unfrozen += bool(layer.trainable and layer.weights)
    return unfrozen


def calibrate_batchnorm(model: keras.Model, images) -> None:
    """Random weights: every BatchNormalization's statistics set from these (normalized) images, in one
    pass in training mode. BatchNormalization stays in inference mode in both phases, and with the
    initial statistics (mean 0, variance 1) a random backbone's features saturate or vanish: the head
    then learns nothing (measured: chance accuracy, bench/RESULTS.md "Transfer learning")."""
    base = get_backbone(model)
    backbone_inputs = keras.Model(model.inputs, model.get_layer(INPUT_LAYER_NAME).output)(images, training=False)
    layers = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0  # the moving statistics become this pass's batch statistics
        base(backbone_inputs, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def load_weights(model: keras.Model, backbone: str, weights: str) -> None:
    """weights: 'none' (random), 'imagenet' (downloaded by Keras, cached in ~/.keras/models) or the
    path of a weights file of the backbone without its top (local or any tf.io.gfile URL).
    Raises ValueError naming the cause."""
    if weights == "none":
        return
    base = get_backbone(model)
    if weights == "imagenet":
        base.set_weights(imagenet_application(backbone, tuple(base.input_shape[1:])).get_weights())
        return
    with tempfile.TemporaryDirectory() as folder:
        local = os.path.join(folder, os.path.basename(weights))
        try:
            tf.io.gfile.copy(weights, local)
            base.load_weights(local)
        except (tf.errors.OpError, OSError, ValueError) as error:
            raise ValueError(f"--backbone-weights {weights}: not weights of {backbone} without its top "
                             f"({str(error).splitlines()[0]})") from error


def imagenet_application(backbone: str, shape: Tuple[int, int, int]) -> keras.Model:
    """The application with its ImageNet weights, downloading them once. Raises ValueError with the
    download command when there is no network."""
    try:
        return _application(backbone, shape, weights="imagenet")
    except Exception as error:  # Keras raises a bare Exception for a failed download
        url = imagenet_weights_url(backbone, shape)
        reason = str(error).splitlines()[0].split(" -- ")[-1]
        raise ValueError(f"--backbone-weights imagenet: could not download {url} ({reason}). "
                         f"Without a network, fetch it where there is one (curl -fLO {url}) and pass "
                         f"--backbone-weights {os.path.basename(url)}") from error

