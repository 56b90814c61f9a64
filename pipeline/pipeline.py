"""create_pipeline: pure wiring of the stages. Runners own paths and the orchestrator."""
import dataclasses
import os
from typing import Sequence

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.proto import config_pb2  # tfma lists PerSliceMetricThreshold but does not export it
from tfx import v1 as tfx

from components.image_example_gen.component import ImageFolderExampleGen
from components.image_example_gen.image_check import DEFAULT_MAX_IMAGE_PIXELS
from components.validation_gate import DataGate
from models import features
from models.model import ModelConfig
from models.preprocessing import ImageSpec
from models.trainer import TrainingConfig
from pipeline import configs, schema


def eval_config(min_accuracy: float) -> tfma.EvalConfig:
    """Overall and per-class (sliced by class name) accuracy; blessed only at >= min_accuracy."""
    if not 0 <= min_accuracy <= 1:
        raise ValueError(f"min_accuracy must be between 0 and 1, got {min_accuracy!r}")
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=features.LABEL_KEY,
                                    prediction_key="probabilities")],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[features.CLASS_NAME_KEY])],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(class_name="SparseCategoricalAccuracy", per_slice_thresholds=[
                config_pb2.PerSliceMetricThreshold(  # the whole eval split, not each class
                    slicing_specs=[tfma.SlicingSpec()],
                    threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                        lower_bound={"value": min_accuracy})))]),
        ])])


def create_pipeline(*, pipeline_name: str, pipeline_root: str, data_root: str, serving_dir: str,
                    schema_file: str, image_spec: ImageSpec, training: TrainingConfig, min_accuracy: float,
                    model: ModelConfig = ModelConfig(),
                    eval_percent: int = configs.EVAL_PERCENT,
                    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                    max_class_drift: float = configs.MAX_CLASS_DRIFT,
                    strict: bool = False,
                    metadata_connection_config=None,
                    beam_pipeline_args: Sequence[str] = configs.BEAM_PIPELINE_ARGS,
                    enable_cache: bool = False) -> tfx.dsl.Pipeline:
    if not 0 <= max_class_drift <= 1:
        raise ValueError(f"max_class_drift must be between 0 and 1, got {max_class_drift!r}")
    example_gen = ImageFolderExampleGen(input_base=data_root, eval_percent=eval_percent,
                                        known_classes=schema.class_names(schema.load(schema_file)),
                                        max_image_pixels=max_image_pixels)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        stats_options=tfdv.StatsOptions(desired_batch_size=configs.STATS_BATCH_SIZE,
                                        enable_semantic_domain_stats=True))  # image-format histogram
    example_validator = tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"],
                                                        schema=schema_gen.outputs["schema"])
    data_gate = DataGate(examples=example_gen.outputs["examples"], anomalies=example_validator.outputs["anomalies"],
                         baseline_path=os.path.join(pipeline_root, "DataGate", configs.CLASS_BALANCE_BASELINE),
                         max_class_drift=max_class_drift, strict=int(strict),
                         accept_command=f"bin/in-env python -m pipeline.schema --schema {schema_file} "
                                        f"--data-root {data_root}")
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=configs.PREPROCESSING_FN, materialize=False,
        custom_config={"image": image_spec.to_config()})
    transform.add_upstream_node(data_gate)
    trainer = tfx.components.Trainer(
        run_fn=configs.RUN_FN, examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
        custom_config={"image": image_spec.to_config(), "training": dataclasses.asdict(training),
                       "model": model.options(),
                       "checkpoint_root": os.path.join(pipeline_root, "Trainer", "checkpoints")})
    evaluator = tfx.components.Evaluator(examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
                                         eval_config=eval_config(min_accuracy))
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root,
        components=[example_gen, schema_gen, statistics_gen, example_validator, data_gate, transform,
                    trainer, evaluator, pusher],
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args), enable_cache=enable_cache)
