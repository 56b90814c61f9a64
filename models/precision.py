"""The Trainer's arithmetic: mixed bfloat16 where the CPU computes bfloat16 itself and the run asks for
it (precision "auto"), mixed float16 on a GPU, float32 elsewhere. The exported model is float32
either way: serving and TFLite run on CPUs that may have no bfloat16 at all."""
from typing import Callable

import tensorflow as tf
import tf_keras as keras

PRECISIONS = ("float32", "auto")
# The CPU flags (Linux /proc/cpuinfo) of bfloat16 arithmetic: AVX-512 BF16 (AMD Zen 4, Intel Cooper
# Lake and later) and AMX (Intel Sapphire Rapids and later). Without them, TensorFlow emulates it, slowly.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def training_policy(precision: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """The Keras mixed-precision policy to train in."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"  # logits stay float32 (see the model's head)
    return "mixed_bfloat16" if precision == "auto" and cpu_has_bfloat16(cpuinfo) else "float32"


def in_float32(model: keras.Model, rebuild: Callable[[], keras.Model]) -> keras.Model:
    """model itself when it computes in float32; otherwise the same network rebuilt (rebuild) in
    float32 with model's weights, layer by layer, and float32 left as the policy."""
    if model.compute_dtype == "float32":
        return model
    keras.mixed_precision.set_global_policy("float32")
    served = rebuild()
    _copy_weights(model, served)
    return served


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Layer by layer, into nested models too: a model's own weight list is ordered by what is frozen."""
    for layer in source.layers:
        twin = target.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_weights(layer, twin)
        else:
            twin.set_weights(layer.get_weights())
