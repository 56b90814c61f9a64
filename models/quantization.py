"""Quantization-aware training (the custom-CNN guide's last step): after the float training, a copy of
the network with fake-quantized weights and activations (tensorflow-model-optimization's default 8-bit
scheme, the one TFLite's int8 kernels implement) is fine-tuned for a few epochs, so the weights settle
where int8 rounding costs least, instead of meeting the rounding only after training.

The default scheme has no rule for Keras' Multiply (squeeze-excite and CBAM gates) nor for CBAM's
ChannelPool; both are given one here: their output quantized as every other activation is.
"""
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from models.model import ChannelPool

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


def quantization_aware_copy(model: keras.Model) -> keras.Model:
    """A copy of model, its weights included, with fake quantization wherever an int8 TFLite model
    rounds; train it like the original (build and compile it in the same strategy scope)."""
    # the network's graph alone: an exported model also tracks the Transform layer serving attached to
    # it, which tfmot would take for a model nested inside and refuse
    network = keras.Model(model.inputs, model.outputs, name=model.name)
    with quantize.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig, "ChannelPool": ChannelPool}):
        annotated = keras.models.clone_model(network, clone_function=_annotate)
        return quantize.quantize_apply(quantize.quantize_annotate_model(annotated))
