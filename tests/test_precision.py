"""The Trainer's precision: mixed bfloat16 only where the CPU has it, and a float32 model exported."""
import numpy as np
import pytest
import tf_keras as keras

from models import precision
from models.model import ModelConfig, build_classifier


def _cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return str(path)


def test_auto_trains_in_bfloat16_only_on_a_cpu_with_bfloat16_instructions(tmp_path):
    assert precision.training_policy("auto", _cpuinfo(tmp_path, "avx512f avx512_bf16")) == "mixed_bfloat16"
    assert precision.training_policy("auto", _cpuinfo(tmp_path, "amx_bf16 amx_tile")) == "mixed_bfloat16"
    assert precision.training_policy("auto", _cpuinfo(tmp_path, "avx512f")) == "float32"
    assert precision.training_policy("float32", _cpuinfo(tmp_path, "avx512_bf16")) == "float32"
    assert precision.training_policy("auto", str(tmp_path / "missing")) == "float32"
    with open("/proc/cpuinfo") as f:
        here = any(flag in f.read().split() for flag in ("avx512_bf16", "amx_bf16"))
    assert precision.training_policy("auto") == ("mixed_bfloat16" if here else "float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.training_policy("bfloat16")


def test_a_model_trained_in_bfloat16_is_exported_in_float32_with_its_weights():
    config = ModelConfig(architecture="dense", input_shape=(16, 16, 3), num_classes=4, group_filters=(8, 16, 16))
    images = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        trained = build_classifier(config)
        assert trained.compute_dtype == "bfloat16"
        trained.set_weights([np.random.default_rng(1).normal(0, 0.1, w.shape) for w in trained.get_weights()])
        served = precision.in_float32(trained, lambda: build_classifier(config))
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert served is not trained and served.compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in served.weights)
    for a, b in zip(trained.get_weights(), served.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the same answers, up to bfloat16's 8 bits of mantissa in the trained network
    np.testing.assert_allclose(served(images).numpy(), trained(images).numpy(), atol=0.05)
    assert precision.in_float32(served, lambda: None) is served
