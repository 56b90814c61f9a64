"""Trainer: TFX's Trainer with the number of epochs as a parameter of its own. A Kubeflow run-time
parameter must be a top-level value, not an entry of custom_config; the executor puts it into
custom_config["training"]["epochs"], where run_fn reads it.
"""
import json
import os
from typing import Any, Dict, Optional

from tfx import types
from tfx import v1 as tfx
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from models.progress import key_figure
from models import files

EPOCHS_KEY = "epochs"


def steady_images_per_s(epochs) -> float:
    """Median training images/s over the epochs after the first (which includes tracing), from the
    Trainer's throughput.json."""
    rates = sorted(epoch["images_per_s"] for epoch in (epochs[1:] or epochs))
    return rates[len(rates) // 2]


def training_figure(model_run_dir: str) -> str:
    """'155,782 parameters, 15 epochs, 900 images/s' from what run_fn wrote ('' when it wrote nothing), and
    with --warm-start what training started from, with --backbone its weights and fine-tuning epochs, with
    --quantization-aware its fine-tuning epochs."""
    from models.model import read_facts
    from models.run_fn import THROUGHPUT_FILENAME
    model, epochs = read_facts(model_run_dir), files.read_json_if_exists(os.path.join(model_run_dir, THROUGHPUT_FILENAME))
    parts = [f"{model['parameters']:,} parameters"] if model else []
    if epochs:  # written by the chief's ThroughputLogger
        parts.append(f"{len(epochs)} epoch{'' if len(epochs) == 1 else 's'}, {steady_images_per_s(epochs):.0f} images/s")
    if model and "started_from" in model:
        parts.append(started_from_text(model["started_from"]))
    if model and "backbone_weights" in model:
        count = model["fine_tune_epochs"]
        parts.append(f"{model['config']['backbone']} backbone with {model['backbone_weights']} weights, then {count} "
                     f"fine-tuning epoch{'' if count == 1 else 's'}")
    if model and model.get("quantization_aware_epochs"):
        count = model["quantization_aware_epochs"]
        parts.append(f"then {count} quantization-aware epoch{'' if count == 1 else 's'}")
    return ", ".join(parts)


def started_from_text(started_from: Dict[str, Any]) -> str:
    """'warm-started from the champion, version 3' or 'trained from scratch (--warm-start: <why>)'."""
    from models.warm_start import warm_started
    if warm_started(started_from):
        version = started_from.get("champion_version")
        return "warm-started from the champion" + (f", version {version}" if version else "")
    return f"trained from scratch (--warm-start: {started_from['reason']})"


def check_epochs(epochs) -> None:
    """A number of epochs given as a number must be >= 1; a run-time parameter is checked when read."""
    if isinstance(epochs, (int, float)) and (int(epochs) != epochs or epochs < 1):
        raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}")


class Executor(trainer_executor.GenericExecutor):
    def Do(self, input_dict, output_dict, exec_properties: Dict[str, Any]) -> None:
        exec_properties = dict(exec_properties)
        epochs = exec_properties.pop(EPOCHS_KEY)
        check_epochs(epochs)
        custom_config = json.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "{}")
        custom_config.setdefault("training", {})["epochs"] = int(epochs)
        exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY] = json.dumps(custom_config)
        super().Do(input_dict, output_dict, exec_properties)
        figure = training_figure(output_dict[standard_component_specs.MODEL_RUN_KEY][0].uri)
        if figure:
            key_figure(figure)


class TrainerSpec(standard_component_specs.TrainerSpec):
    PARAMETERS = {**standard_component_specs.TrainerSpec.PARAMETERS, EPOCHS_KEY: ExecutionParameter(type=int)}


class Trainer(tfx.components.Trainer):
    SPEC_CLASS = TrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, *, examples: types.BaseChannel, transform_graph: types.BaseChannel,
                 schema: types.BaseChannel, run_fn: str, custom_config: Dict[str, Any], epochs,
                 base_model: Optional[types.BaseChannel] = None):
        """epochs: an int, or a RuntimeParameter of type int. base_model: the model whose weights
        training starts from when they fit (models.warm_start), or None to start from scratch."""
        check_epochs(epochs)
        spec = TrainerSpec(
            examples=examples, transform_graph=transform_graph, schema=schema, run_fn=run_fn, base_model=base_model,
            train_args=trainer_pb2.TrainArgs(), eval_args=trainer_pb2.EvalArgs(),
            custom_config=json.dumps(custom_config), epochs=epochs,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun))
        # tfx Trainer.__init__ builds its own spec; this one adds a parameter.
        base_component.BaseComponent.__init__(self, spec=spec)  # pylint: disable=non-parent-init-called
