"""ImageFolderExampleGen: a FileBasedExampleGen over class-per-folder image trees."""
import json
from typing import Optional, Sequence

from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_gen.driver import FileBasedDriver
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import channel, component_spec, standard_artifacts, standard_component_specs

from components.image_example_gen import executor, folder_layout
from models import features
from models.settings import DEFAULT_MAX_IMAGE_PIXELS

# TFX's driver would fingerprint what this matches: the data root itself. ImageFolderDriver replaces
# that with a fingerprint of the whole tree.
_FINGERPRINT_PATTERN = ""


class ImageFolderDriver(FileBasedDriver):
    """TFX's ExampleGen driver, with the input fingerprint (which a cached run is keyed on) taken over
    every file below the data root, as folder_layout walks it. TFX's own would match only the root
    folder, whose modification time does not change when an image is added to a class folder; and a
    glob over every file would fail on the first broken symlink, which ingest rejects with a reason."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info, component_info)
        root = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = folder_layout.tree_fingerprint(root)
        return exec_properties


class ImageFolderExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        executor.KNOWN_CLASSES_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        executor.RETIRED_CLASSES_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        executor.MAX_IMAGE_PIXELS_KEY: component_spec.ExecutionParameter(type=int, optional=True),
    }


def hash_split_config(eval_percent: int) -> example_gen_pb2.Output:
    """train/eval split of a flat folder, by a hash of each file's path: stable across runs."""
    if not isinstance(eval_percent, int) or not 1 <= eval_percent <= 50:
        raise ValueError(f"eval_percent must be an integer from 1 to 50, got {eval_percent!r}")
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=100 - eval_percent),
                example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=eval_percent)],
        partition_feature_name=features.FILENAME_KEY))


class ImageFolderExampleGen(FileBasedExampleGen):
    """Outputs Examples with image bytes, an int64 label, the class name and the file name.

    known_classes (the schema's, in label order) fix the class ids; folders new to them get the
    next ids. retired_classes are known classes whose folders were removed on purpose: they keep
    their ids, and having no images is not a problem for them. Beside the splits, the Examples artifact holds labels.txt and ingest_report.json.
    """
    SPEC_CLASS = ImageFolderExampleGenSpec
    DRIVER_CLASS = ImageFolderDriver
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base, eval_percent: int = 20, known_classes: Sequence[str] = (),
                 retired_classes: Sequence[str] = (),
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                 output_config: Optional[example_gen_pb2.Output] = None):
        if isinstance(input_base, str) and not input_base:
            raise ValueError("input_base must name the image folder, got an empty string")
        if not isinstance(max_image_pixels, int) or max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be a positive integer, got {max_image_pixels!r}")
        spec = ImageFolderExampleGenSpec(
            input_base=input_base,
            input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
                name="all", pattern=_FINGERPRINT_PATTERN)]),
            output_config=output_config or hash_split_config(eval_percent),
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            known_classes=json.dumps(list(known_classes)),
            retired_classes=json.dumps(list(retired_classes)),
            max_image_pixels=max_image_pixels,
            examples=channel.Channel(type=standard_artifacts.Examples))
        # FileBasedExampleGen.__init__ builds its own spec; this one adds two parameters.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)  # pylint: disable=non-parent-init-called
