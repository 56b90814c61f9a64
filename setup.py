"""Installable package: the pipeline wiring, the custom components and the model code."""
import setuptools

setuptools.setup(
    name="tfx-image-pipeline",
    version="0.1.0",
    description="TFX pipeline that trains a custom CNN on a folder of labelled images.",
    packages=setuptools.find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                               "models", "models.*"]),
    python_requires=">=3.10",
    install_requires=["tfx==1.21.0", "tf-keras==2.21.*", "tensorflow-model-optimization", "tensorboard", "pillow", "matplotlib"],
    extras_require={
        "kubeflow": ["kfp-pipeline-spec"],      # TFX's Kubeflow v2 entrypoint, in the pipeline image
        "gpu": ["tensorflow[and-cuda]==2.21.*"],  # CUDA libraries as wheels, for the GPU image
    },
)
