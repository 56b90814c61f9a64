"""The pipeline's own components. TFLiteModels and RetrainDecision are importable from here: on Kubeflow an artifact
type is found by its name, which must be `<top-level module>.<class>`. It is imported on first use,
so that commands needing no TFX (python -m pipeline.promote list) do not start TensorFlow."""


def __getattr__(name: str):
    if name in ("TFLiteModels", "RetrainDecision"):
        from components import artifacts  # pylint: disable=import-outside-toplevel
        return getattr(artifacts, name)
    raise AttributeError(f"module 'components' has no attribute {name!r}")
