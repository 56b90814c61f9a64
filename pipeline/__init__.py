"""The pipeline's wiring and runners."""
import os

# Keras 2 (tf_keras) for every entry point, as bin/in-env and the official TFX 1.21 image set it.
# Must happen before TensorFlow is imported; see docs/running.md, "Keras".
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# oneDNN kernels, which TensorFlow leaves off on non-Intel CPUs (bench/RESULTS.md: ~18 % faster training).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
