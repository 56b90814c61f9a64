"""The pipeline's own components. TFLiteModels is importable from here: on Kubeflow an artifact
type is found by its name, which must be `<top-level module>.<class>`."""
from components.artifacts import TFLiteModels  # noqa: F401
