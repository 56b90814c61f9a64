"""Which stages a local run may reuse: keyed by the project's code and schema, never the stateful ones."""
import inspect
import shutil

import pytest
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components import caching
from models import sources
from models.settings import PipelineSettings, Thresholds
from pipeline import paths, pipeline


def _compiled(tmp_path, enable_cache=True, fingerprint="f1"):
    wiring = pipeline.create_pipeline(
        pipeline_name="p", pipeline_root=str(tmp_path / "root"), data_root=str(tmp_path / "data"),
        serving_dir=str(tmp_path / "serving"), schema_file=paths.EMBEDDED_SCHEMA,
        settings=PipelineSettings(thresholds=Thresholds(min_accuracy=0.5)), enable_cache=enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "m.sqlite")))
    return {node.pipeline_node.node_info.id: node.pipeline_node
            for node in caching.compile_for_local_run(wiring, fingerprint).nodes}


def test_every_stage_is_keyed_by_the_project_fingerprint_and_the_stateful_ones_always_run(tmp_path):
    nodes = _compiled(tmp_path)
    assert {name: node.parameters.parameters[caching.PROJECT_FINGERPRINT_KEY].field_value.string_value
            for name, node in nodes.items()} == {name: "f1" for name in nodes}
    always_run = {name for name, node in nodes.items() if not node.execution_options.caching_options.enable_cache}
    assert always_run == {"ChampionModel", "DataGate", "RetrainGate"}
    assert {"Trainer", "Transform", "ImageFolderExampleGen", "LiteModels", "Evaluator"} <= set(nodes) - always_run


def test_no_stage_is_reused_when_caching_is_off(tmp_path):
    nodes = _compiled(tmp_path, enable_cache=False)
    assert not any(node.execution_options.caching_options.enable_cache for node in nodes.values())


def test_the_fingerprint_follows_the_schema_files_content(tmp_path):
    copy = str(tmp_path / "schema.pbtxt")
    shutil.copyfile(paths.EMBEDDED_SCHEMA, copy)
    assert caching.project_fingerprint(copy) == caching.project_fingerprint(paths.EMBEDDED_SCHEMA)
    with open(copy, "a") as f:
        f.write("\n# edited\n")
    assert caching.project_fingerprint(copy) != caching.project_fingerprint(paths.EMBEDDED_SCHEMA)


def test_the_fingerprint_covers_the_code_that_runs_in_the_stages():
    names = [name for name, _ in sources.source_files()]
    assert {"models/model.py", "models/preprocessing.py", "models/run_fn.py", "components/lite_models.py",
            "components/image_example_gen/executor.py"} <= set(names)
    assert len(names) == len(set(names))


def test_the_conditions_inputs_are_the_keys_tfx_gives_them_and_the_launcher_calls_the_wrapped_function(tmp_path):
    """Pins what conditions_outside_cache_keys relies on: every stage after the RetrainGate has its
    decision, and LiteModels the Evaluator's blessing, under CONDITION_INPUT_KEYS, and TFX's launcher
    computes cache keys through cache_utils.get_cache_context, by module attribute, with
    input_artifacts= as a keyword."""
    from tfx.orchestration.portable import cache_utils, launcher
    nodes = _compiled(tmp_path)
    decision, blessing = caching.CONDITION_INPUT_KEYS
    conditioned = {name for name, node in nodes.items() if decision in node.inputs.inputs}
    assert {"StatisticsGen", "Transform", "Trainer", "Evaluator", "LiteModels", "Pusher"} <= conditioned
    assert blessing in nodes["LiteModels"].inputs.inputs
    assert "input_artifacts" in inspect.signature(cache_utils.get_cache_context).parameters
    source = inspect.getsource(launcher)
    assert "cache_utils.get_cache_context(" in source and "input_artifacts=input_artifacts" in source


def test_the_cache_key_leaves_out_the_conditions_inputs_and_nothing_else():
    from tfx.orchestration.portable import cache_utils
    seen = []
    original = cache_utils.get_cache_context
    cache_utils.get_cache_context = lambda *args, input_artifacts=None, **kwargs: seen.append(input_artifacts)
    try:
        with caching.conditions_outside_cache_keys():
            decision, blessing = caching.CONDITION_INPUT_KEYS
            cache_utils.get_cache_context(None, input_artifacts={decision: [1], blessing: [4], "examples": [2],
                                                                 "decision": [3]})
        assert cache_utils.get_cache_context.__name__ == "<lambda>"  # restored after the block
    finally:
        cache_utils.get_cache_context = original
    assert seen == [{"examples": [2], "decision": [3]}]


@pytest.mark.parametrize("node, decision_key, blessing_key", [("Pusher", "decision", "model_blessing"),
                                                               ("LiteModels", "_RetrainGate.decision", "_Evaluator.blessing")])
def test_the_blessing_conditions_are_numbered_from_the_outermost_and_evaluated_so(tmp_path, node, decision_key,
                                                                                  blessing_key):
    """Pins what conditions_in_nesting_order relies on: under the blessing, cond_1 reads the RetrainGate's
    decision and cond_2 the Evaluator's blessing (under a declared input's key, else TFX's implicit one);
    under the context a false cond_1 skips the node even though cond_2 cannot be evaluated (its blessing
    is missing), in either order of the map."""
    from tfx.orchestration.portable.input_resolution import node_inputs_resolver
    compiled = _compiled(tmp_path)[node]
    conditions = {key: str(value) for key, value in compiled.inputs.conditionals.items()}
    assert sorted(conditions) == ["cond_1", "cond_2"]
    assert f'"{decision_key}"' in conditions["cond_1"] and f'"{blessing_key}"' in conditions["cond_2"]
    assert list(inspect.signature(node_inputs_resolver._filter_conditionals).parameters) == [
        "artifact_maps", "conditionals"]
    decision = standard_artifacts.Model()  # any artifact: only its custom property is read
    decision.set_int_custom_property("retrain", 0)
    maps = [{decision_key: [decision], blessing_key: []}]
    reversed_order = {key: compiled.inputs.conditionals[key] for key in ("cond_2", "cond_1")}
    with pytest.raises(Exception, match="Expected boolean type"):  # what TFX does unaided, blessing first
        node_inputs_resolver._filter_conditionals(maps, reversed_order)
    with caching.conditions_in_nesting_order():
        assert node_inputs_resolver._filter_conditionals(maps, reversed_order) == []
