import numpy as np
import pytest
import tensorflow as tf

from models import export
from models.model import ModelConfig, build_classifier, depthwise_separable_block
import tf_keras as keras
from tests.helpers import expected_parameter_count


@pytest.mark.parametrize("input_shape, options", [
    ((28, 28, 1), {}),
    ((32, 48, 3), {"stage_strides": (2, 2, 2, 1, 1), "attention": "none"}),
    ((64, 64, 3), {"stage_strides": (1, 1, 1, 1, 1), "attention_ratio": 0.5, "stage_dilations": (1, 2, 4, 2, 1)}),
    ((28, 28, 1), {"attention": "cbam"}),
    ((32, 32, 3), {"attention": "cbam", "weight_decay": 1e-4, "weight_decay_mode": "l2"}),
    ((28, 28, 1), {"architecture": "classic"}),
    ((40, 30, 3), {"architecture": "classic", "stage_filters": (16, 32, 64), "stage_strides": (2, 2, 2)}),
], ids=["se", "no-attention", "dilated", "cbam", "cbam-l2", "classic", "classic-small"])
def test_every_variant_gives_logits_per_class_and_matches_hand_count(input_shape, options):
    config = ModelConfig(input_shape=input_shape, num_classes=7, **options)
    model = build_classifier(config)
    assert model(np.zeros((2,) + input_shape, np.float32)).shape == (2, 7)
    assert model.count_params() == expected_parameter_count(config)
    assert len(model.losses) == (0 if "l2" not in options.values() else
                                 sum(1 for layer in model.layers for name in ("kernel_regularizer", "depthwise_regularizer")
                                     if getattr(layer, name, None) is not None))


def test_cbam_parameter_count_by_hand():
    # CBAM's channel MLP has SE's weights (shared by the average- and max-pooled paths), plus a 7x7
    # conv with bias over 2 channels per block.
    config = ModelConfig(attention="cbam")
    assert expected_parameter_count(config) == 71_794 + 5 * (7 * 7 * 2 + 1) == 72_289
    assert build_classifier(config).count_params() == 72_289


def test_classic_parameter_count_by_hand():
    stem = 9 * 32 + 4 * 32                                                                     # 416
    blocks = (9 * 32 * 32 + 128) + (9 * 32 * 64 + 256) + (9 * 64 * 64 + 256) + (9 * 64 * 128 + 512) \
        + (9 * 128 * 128 + 512)                                                                # 287,360
    head = 128 * 10 + 10                                                                       # 1,290
    assert stem + blocks + head == 289_066
    assert expected_parameter_count(ModelConfig(architecture="classic")) == 289_066
    assert build_classifier(ModelConfig(architecture="classic")).count_params() == 289_066


def test_dense_network_parameter_count_is_pinned_by_hand():
    """The airbench93 shape on CIFAR-sized photos: 2x2 whitening (24 filters), groups 64/128/128."""
    config = ModelConfig(architecture="dense", input_shape=(32, 32, 3), num_classes=10)
    whitening = 12 * 24                                                           # 288, frozen
    groups = ((9 * 24 * 64 + 3 * 64 + 9 * 64 * 64 + 3 * 64)                       # 51,072
              + (9 * 64 * 128 + 3 * 128 + 9 * 128 * 128 + 3 * 128)               # 221,952
              + (9 * 128 * 128 + 3 * 128 + 9 * 128 * 128 + 3 * 128))              # 295,680
    head = 128 * 10                                                               # 1,280, no bias
    assert whitening + groups + head == 570_272 == expected_parameter_count(config)
    model = build_classifier(config)
    assert model.count_params() == 570_272
    assert not model.get_layer("whitening_conv").trainable
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)
    # the records' sizes (31 after the whitening, then 15, 7, 3): pooling drops an odd row, as theirs does
    assert [model.get_layer(f"group{i}_conv2").output.shape[1:3] for i in range(3)] == [(15, 15), (7, 7), (3, 3)]
    with pytest.raises(ValueError, match=r"needs images of at least 9x9 pixels"):
        ModelConfig(architecture="dense", input_shape=(8, 32, 3), num_classes=10)
    wider = ModelConfig(architecture="dense", input_shape=(32, 32, 3), num_classes=10, group_filters=(64, 256, 256),
                        width=0.5)
    assert build_classifier(wider).count_params() == expected_parameter_count(wider)


def test_dense_convolutions_start_passing_their_first_channels_through_and_the_rest_at_random():
    """The records' Dirac initialization: filter i < min(in, out) is the identity on channel i."""
    model = build_classifier(ModelConfig(architecture="dense", input_shape=(32, 32, 3), num_classes=10))
    for name, channels_in, channels_out in (("group0_conv1", 24, 64), ("group1_conv2", 128, 128)):
        kernel = model.get_layer(name).kernel.numpy()
        assert kernel.shape == (3, 3, channels_in, channels_out)
        identity = np.zeros((3, 3, channels_in, channels_in), np.float32)
        identity[1, 1, np.arange(channels_in), np.arange(channels_in)] = 1.0
        np.testing.assert_array_equal(kernel[..., :channels_in], identity)
        rest = kernel[..., channels_in:]
        bound = 1 / np.sqrt(9 * channels_in)
        assert rest.size == 0 or (np.abs(rest).max() <= bound and rest.std() > bound / 3)


def test_default_config_parameter_count_is_pinned():
    # By hand (dw = depthwise 3x3, pw = pointwise 1x1, BN = 4 per channel, SE = two 1x1 convs with bias):
    stem = 9 * 32 + 4 * 32                                                                    # 416
    block0 = (288 + 128) + (32 * 32 + 128) + (32 * 8 + 8 + 8 * 32 + 32)                       # 2,120
    block1 = (288 + 128) + (32 * 64 + 256) + (64 * 16 + 16 + 16 * 64 + 64) + (32 * 64 + 256)  # 7,152
    block2 = (576 + 256) + (64 * 64 + 256) + (64 * 16 + 16 + 16 * 64 + 64)                    # 7,312
    block3 = (576 + 256) + (64 * 128 + 512) + (128 * 32 + 32 + 32 * 128 + 128) + (64 * 128 + 512)  # 26,592
    block4 = (1152 + 512) + (128 * 128 + 512) + (128 * 32 + 32 + 32 * 128 + 128)              # 26,912
    head = 128 * 10 + 10                                                                      # 1,290
    assert stem + block0 + block1 + block2 + block3 + block4 + head == 71_794
    assert expected_parameter_count(ModelConfig()) == 71_794
    assert build_classifier(ModelConfig()).count_params() == 71_794


def test_width_scales_every_filter_count_and_depth_repeats_each_stage_with_stride_one():
    config = ModelConfig(input_shape=(8, 8, 3), num_classes=2, stem_filters=8, stage_filters=(8, 16),
                         stage_strides=(1, 2), attention="none", width=2.0, depth=2)
    assert config.blocks() == [("block0", 16, 1, 1), ("block0_1", 16, 1, 1), ("block1", 32, 2, 1),
                               ("block1_1", 32, 1, 1)]
    # By hand: stem 3x3x3x16 + BN; dw + BN, pw + BN each block; one projection where 16 -> 32 at stride 2
    stem = 9 * 3 * 16 + 4 * 16                                                   # 496
    block0 = block0_1 = (9 * 16 + 4 * 16) + (16 * 16 + 4 * 16)                   # 528 each
    block1 = (9 * 16 + 4 * 16) + (16 * 32 + 4 * 32) + (16 * 32 + 4 * 32)         # 1,488
    block1_1 = (9 * 32 + 4 * 32) + (32 * 32 + 4 * 32)                            # 1,568
    head = 32 * 2 + 2                                                            # 66
    total = stem + block0 + block0_1 + block1 + block1_1 + head
    assert total == 4_674 == expected_parameter_count(config) == build_classifier(config).count_params()
    model = build_classifier(config)
    assert model.get_layer("block1_1_dw").strides == (1, 1) and model.get_layer("block1_dw").strides == (2, 2)


@pytest.mark.parametrize("stride, filters, expected_shape", [(1, 16, (8, 8, 16)), (2, 32, (4, 4, 32))])
def test_block_output_shape_and_layer_names(stride, filters, expected_shape):
    inputs = keras.Input((8, 8, 16))
    outputs = depthwise_separable_block(inputs, filters, stride, attention="cbam", bn_momentum=0.9, name="b")
    model = keras.Model(inputs, outputs)
    assert outputs.shape[1:] == expected_shape
    assert all(layer.name.startswith("b_") for layer in model.layers[1:])
    assert any(layer.name == "b_proj" for layer in model.layers) == (stride != 1 or filters != 16)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 1}, "num_classes"), ({"stage_strides": (1, 3, 1, 1, 1)}, "stage_strides"),
    ({"stage_filters": (8,)}, "equal length"), ({"attention_ratio": 0}, "attention_ratio"),
    ({"architecture": "vgg"}, "architecture"), ({"attention": "transformer"}, "attention"),
    ({"stage_dilations": (1, 2, 1, 1, 1)}, "stage_dilations"), ({"weight_decay": -1}, "weight_decay"),
    ({"weight_decay_mode": "l1"}, "weight_decay_mode"), ({"width": 0}, "width"), ({"depth": 0}, "depth"), ({"block_dropout": 1.0}, "block_dropout"),
    ({"bn_momentum": 1.0}, "bn_momentum"), ({"input_shape": (28, 28)}, "input_shape")])
def test_config_rejects_bad_values_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("options", [{}, {"attention": "cbam"}, {"architecture": "classic"}],
                         ids=["se", "cbam", "classic"])
def test_save_and_load_round_trip_gives_the_same_outputs(tmp_path, options):
    model = build_classifier(ModelConfig(input_shape=(16, 16, 3), num_classes=4, **options))
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, np.array([0, 1, 2]), epochs=1, verbose=0)  # moves BN statistics off their defaults
    expected = model(images, training=False).numpy()

    @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    def serve(x):
        return {"logits": model(x, training=False)}

    export.save(model, str(tmp_path), {"serving_default": serve})  # as the Trainer exports
    loaded = tf.saved_model.load(str(tmp_path))
    np.testing.assert_allclose(loaded.signatures["serving_default"](tf.constant(images))["logits"].numpy(),
                               expected, rtol=1e-5, atol=1e-5)
