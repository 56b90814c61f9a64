"""create_pipeline: pure wiring of the stages. Runners own paths and the orchestrator."""
import dataclasses
import hashlib
import json
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

import tensorflow_data_validation as tfdv
from tfx import v1 as tfx

from components.evaluation import ChampionEvaluator, ChampionModel, eval_config
from components.image_example_gen.component import ImageFolderExampleGen
from components.lite_models import LiteModels
from components.model_pusher import ModelPusher
from components.retrain_gate import RETRAIN_PROPERTY, RetrainGate
from components.trainer import Trainer
from components.data_gate import DataGate
from models import features
from models.settings import DataOptions, PipelineSettings, Thresholds
from pipeline import configs, schema

RuntimeParameter = tfx.dsl.experimental.RuntimeParameter


def create_pipeline(*, pipeline_name: str, pipeline_root: str, data_root: Union[str, RuntimeParameter],
                    serving_dir: str, schema_file: str, settings: PipelineSettings,
                    min_accuracy: Optional[RuntimeParameter] = None, epochs: Optional[RuntimeParameter] = None,
                    retrain_always: Optional[RuntimeParameter] = None,
                    metadata_connection_config=None,
                    beam_pipeline_args: Sequence[str] = configs.BEAM_PIPELINE_ARGS,
                    enable_cache: bool = False,
                    schema_file_in_pipeline: Optional[str] = None,
                    state_root: Optional[str] = None,
                    code_fingerprint: str = "",
                    run_id: str = "") -> tfx.dsl.Pipeline:
    """data_root may be a Kubeflow RuntimeParameter, and so may min_accuracy, epochs and retrain_always,
    which then replace the settings' values. schema_file is read here, schema_file_in_pipeline by the
    steps. state_root (default: pipeline_root): the baseline and checkpoints, which outlive a run (on
    Kubeflow a volume, the pipeline root an object store). code_fingerprint keys the RetrainGate's
    settings (caching.project_fingerprint). run_id: the orchestrator's run id (Kubeflow's placeholder),
    else TFX's."""
    state_root = state_root or pipeline_root
    thresholds = settings.thresholds if min_accuracy is None else dataclasses.replace(
        settings.thresholds, min_accuracy=min_accuracy)
    epochs = settings.training.epochs if epochs is None else epochs
    retrain_always = int(settings.retrain_always) if retrain_always is None else retrain_always
    class_names = schema.class_names(schema.load(schema_file))
    example_gen, schema_gen = _ingestion(data_root, schema_file, schema_file_in_pipeline or schema_file, settings.data)
    retrain_gate = RetrainGate(
        examples=example_gen.outputs["examples"], serving_dir=serving_dir, epochs=epochs, retrain_always=retrain_always,
        settings_fingerprint=settings_fingerprint(code_fingerprint, settings))
    # everything after ingestion runs only when the data, settings or code changed since the champion
    with tfx.dsl.Cond(retrain_gate.outputs["decision"].future()[0].custom_property(RETRAIN_PROPERTY) == 1):
        validation = _validation_stages(
            example_gen, schema_gen, schema_file=schema_file, data_root=data_root, data=settings.data,
            baseline_path=os.path.join(state_root, "DataGate", configs.CLASS_BALANCE_BASELINE))
        stages = _training_stages(
            example_gen, schema_gen, validation[-1], retrain_gate, serving_dir=serving_dir, state_root=state_root,
            settings=settings, thresholds=thresholds, epochs=epochs, num_classes=len(class_names), run_id=run_id)
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name, pipeline_root=pipeline_root,
        components=[example_gen, schema_gen, retrain_gate, *validation, *stages],
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args), enable_cache=enable_cache)


def _ingestion(data_root, schema_file: str, schema_file_in_pipeline: str, data: DataOptions) -> Tuple[Any, Any]:
    """ImageFolderExampleGen, told the schema's classes, and ImportSchemaGen."""
    curated = schema.load(schema_file)
    example_gen = ImageFolderExampleGen(input_base=data_root, eval_percent=data.eval_percent,
                                        known_classes=schema.class_names(curated),
                                        retired_classes=schema.retired_classes(curated),
                                        max_image_pixels=data.max_image_pixels)
    return example_gen, tfx.components.ImportSchemaGen(schema_file=schema_file_in_pipeline)


def _validation_stages(example_gen, schema_gen, *, schema_file: str, data_root, data: DataOptions,
                       baseline_path: str) -> List[Any]:
    """StatisticsGen, ExampleValidator and the DataGate that stops the run on what they found."""
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        stats_options=tfdv.StatsOptions(desired_batch_size=configs.STATS_BATCH_SIZE,
                                        enable_semantic_domain_stats=True))  # image-format histogram
    example_validator = tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"],
                                                        schema=schema_gen.outputs["schema"])
    data_gate = DataGate(examples=example_gen.outputs["examples"], anomalies=example_validator.outputs["anomalies"],
                         baseline_path=baseline_path, max_class_drift=data.max_class_drift, strict=int(data.strict),
                         schema_file=schema_file, data_root=data_root)
    return [statistics_gen, example_validator, data_gate]


def _training_stages(example_gen, schema_gen, data_gate, retrain_gate, *, serving_dir: str, state_root: str,
                     settings: PipelineSettings, thresholds: Thresholds, epochs, num_classes: int,
                     run_id: str) -> List[Any]:
    """Transform, the champion, Trainer, Evaluator, and under its blessing LiteModels and the Pusher."""
    image_spec, training, lite = settings.image, settings.training, settings.lite
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=configs.PREPROCESSING_FN, materialize=False,
        # StatisticsGen already describes the raw images, and nothing reads statistics of the
        # normalized pixels: computing both again was most of Transform's time (bench/RESULTS.md)
        disable_statistics=True,
        custom_config={"image": image_spec.to_config(), **settings.model.transform_options()})
    transform.add_upstream_node(data_gate)
    champion = ChampionModel(serving_dir=serving_dir)
    trainer = Trainer(
        run_fn=configs.RUN_FN, examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"], schema=schema_gen.outputs["schema"],
        epochs=epochs,
        # a warm start's Trainer runs every time: its input, the champion, is read anew by every run
        base_model=champion.outputs["champion"] if settings.warm_start else None,
        custom_config={"image": image_spec.to_config(),
                       "training": {k: v for k, v in dataclasses.asdict(training).items() if k != "epochs"},
                       "model": settings.model.options(),
                       "checkpoint_root": os.path.join(state_root, "Trainer", "checkpoints")})
    evaluator = ChampionEvaluator(
        examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
        baseline_model=champion.outputs["champion"],
        eval_config=eval_config(label_key=features.LABEL_KEY, class_key=features.CLASS_NAME_KEY,
                                num_classes=num_classes, max_accuracy_drop=thresholds.max_accuracy_drop,
                                min_class_accuracy=thresholds.min_class_accuracy),
        min_accuracy=thresholds.min_accuracy).with_id("Evaluator")
    # only a blessed model can be pushed, so only its TFLite files are worth converting and scoring
    with tfx.dsl.Cond(evaluator.outputs["blessing"].future()[0].custom_property("blessed") == 1):
        lite_models = LiteModels(model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
                                 max_accuracy_drop=lite.max_accuracy_drop, min_agreement=lite.min_agreement,
                                 variants=",".join(lite.variants))
        pusher = ModelPusher(
            model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
            evaluation=evaluator.outputs["evaluation"], examples=example_gen.outputs["examples"],
            lite_models=lite_models.outputs["lite_models"], decision=retrain_gate.outputs["decision"],
            serving_dir=serving_dir, run_id=run_id, thresholds=thresholds).with_id("Pusher")
    return [transform, trainer, champion, evaluator, lite_models, pusher]


def settings_fingerprint(code_fingerprint: str, settings: PipelineSettings) -> str:
    """sha256 of the code fingerprint and the settings that shape the trained model or the validation of
    its data (PipelineSettings.shaping_the_model; epochs, a run-time parameter, is added by the RetrainGate)."""
    text = json.dumps({"code": code_fingerprint, **settings.shaping_the_model()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
