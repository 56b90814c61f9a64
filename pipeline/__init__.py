"""The pipeline's wiring and runners."""
import os

# Keras 2 (tf_keras) for every entry point, as bin/in-env and the official TFX 1.21 image set it.
# Must happen before TensorFlow is imported; see README "Keras".
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
