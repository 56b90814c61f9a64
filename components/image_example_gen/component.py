"""ImageFolderExampleGen: a FileBasedExampleGen over class-per-folder image trees."""
from typing import Optional

from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.image_example_gen import executor
from models import features

# Matches class folders (pre-split layout) or files (flat layout); the driver fingerprints these.
_FINGERPRINT_PATTERN = "*/*"


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

    Beside the splits, the Examples artifact holds labels.txt and ingest_report.json.
    """
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base, eval_percent: int = 20, output_config: Optional[example_gen_pb2.Output] = None):
        if isinstance(input_base, str) and not input_base:
            raise ValueError("input_base must name the image folder, got an empty string")
        super().__init__(
            input_base=input_base,
            input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
                name="all", pattern=_FINGERPRINT_PATTERN)]),
            output_config=output_config or hash_split_config(eval_percent))
