"""Which stages a local run may reuse from an earlier run, and which it must run again.

TFX reuses a stage's outputs when its inputs, its parameters and its executor's class are the same as
a successful earlier execution's. Three things it does not see are added here:
- the code: TFX names the preprocessing and run functions, and the executors, by module path only, so
  an edit to the project's code would reuse outputs made by the old code. Every stage gets the
  fingerprint of the stages' sources (components/, models/), the schema file's content and the library versions as a
  parameter of its own (PROJECT_FINGERPRINT_KEY), so any such change runs everything again;
- the data: the image folder's fingerprint (folder_layout.tree_fingerprint, set by ExampleGen's
  driver);
- state outside the pipeline: ChampionModel reads the serving folder's champion, DataGate the
  class-balance baseline and whether the data was accepted, and RetrainGate what the champion was
  trained on; they always run.

And one thing it sees that it should not: the stages after the RetrainGate run under a condition on
its decision, which TFX adds to each of them as an input (`_RetrainGate.decision`), and LiteModels
under one on the Evaluator's blessing too (`_Evaluator.blessing`). The gate and the Evaluator make a
new artifact every run, so the cache keys would change every run and nothing would be reused. A
condition only says whether a stage runs, never what it computes, so both are left out of the cache
keys (conditions_outside_cache_keys).

The Pusher runs under two nested conditions: the gate's decision, then the Evaluator's blessing. TFX
evaluates a node's conditions in the order of a protobuf map, which varies from process to process;
when the gate skipped the Evaluator, evaluating the blessing first dereferences a missing artifact,
and TFX records a failed Pusher. conditions_in_nesting_order evaluates the outer condition first, so a
false one skips the node before the inner one is read, as the compiled Kubeflow spec's `&&` does.
"""
import contextlib
import hashlib
import re

from tfx.dsl.compiler import compiler
from tfx.dsl.compiler import constants
from tfx.orchestration.portable import cache_utils, runtime_parameter_utils
from tfx.orchestration.portable.input_resolution import node_inputs_resolver
from tfx.proto.orchestration import pipeline_pb2

from components.evaluation import ChampionModel
from components.retrain_gate import RetrainGate
from components.data_gate import DataGate
from models import sources

PROJECT_FINGERPRINT_KEY = "project_fingerprint"
ALWAYS_RUN = (ChampionModel, DataGate, RetrainGate)


def project_fingerprint(schema_file: str) -> str:
    """sha256 of the stages' Python sources, the schema file and the TensorFlow/TFX versions."""
    import tensorflow as tf
    import tfx
    digest = sources.update_with_sources(hashlib.sha256(f"tensorflow {tf.__version__}, tfx {tfx.__version__}\n".encode()))
    digest.update(b"schema")
    with open(schema_file, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def compile_for_local_run(pipeline, fingerprint: str, run_id: str = "") -> pipeline_pb2.Pipeline:
    """The pipeline's IR for LocalDagRunner.run_with_ir: every stage keyed by the project fingerprint,
    the ALWAYS_RUN stages never reused, and, when given, run_id as TFX's pipeline run id (LocalDagRunner
    would otherwise take the time it starts, which the runner cannot know for sure afterwards)."""
    always_run = {component.id for component in pipeline.components if isinstance(component, ALWAYS_RUN)}
    ir = compiler.Compiler().compile(pipeline)
    if run_id:
        runtime_parameter_utils.substitute_runtime_parameter(ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    for node in ir.nodes:
        stage = node.pipeline_node
        stage.parameters.parameters[PROJECT_FINGERPRINT_KEY].field_value.string_value = fingerprint
        if stage.node_info.id in always_run:
            stage.execution_options.caching_options.enable_cache = False
    return ir


# the keys TFX gives a Cond's channel that a stage does not also declare: _<producer>.<output>
CONDITION_INPUT_KEYS = ("_RetrainGate.decision", "_Evaluator.blessing")


@contextlib.contextmanager
def conditions_outside_cache_keys():
    """While it lasts, TFX's launcher computes every cache key without the conditions' inputs.

    TFX has no public way to leave an input out of a cache key: this wraps
    tfx.orchestration.portable.cache_utils.get_cache_context, which the launcher calls by module
    attribute with input_artifacts= as a keyword (tests/test_caching.py pins both)."""
    original = getattr(cache_utils, "get_cache_context", None)
    if original is None:
        raise RuntimeError("tfx.orchestration.portable.cache_utils.get_cache_context is gone from this TFX: "
                           "local stage reuse needs components/caching.py adapted to it")

    def get_cache_context(*args, input_artifacts=None, **kwargs):
        kept = {key: value for key, value in (input_artifacts or {}).items() if key not in CONDITION_INPUT_KEYS}
        return original(*args, input_artifacts=kept, **kwargs)

    cache_utils.get_cache_context = get_cache_context
    try:
        yield
    finally:
        cache_utils.get_cache_context = original


def _nesting_depth(condition_id: str) -> int:
    """TFX numbers a node's conditions cond_1, cond_2, … from the outermost Cond in."""
    found = re.fullmatch(r"cond_(\d+)", condition_id)
    if not found:
        raise RuntimeError(f"a condition named {condition_id!r}: TFX names them cond_<n>; components/caching.py "
                           f"needs adapting to this TFX")
    return int(found.group(1))


@contextlib.contextmanager
def conditions_in_nesting_order():
    """While it lasts, TFX evaluates each node's conditions outermost first.

    Wraps tfx.orchestration.portable.input_resolution.node_inputs_resolver._filter_conditionals (private:
    TFX offers no public way), which takes the artifact maps and a mapping of condition id to condition
    and iterates its items (tests/test_caching.py pins both)."""
    original = getattr(node_inputs_resolver, "_filter_conditionals", None)
    if original is None:
        raise RuntimeError("tfx's node_inputs_resolver._filter_conditionals is gone from this TFX: nested "
                           "conditions need components/caching.py adapted to it")

    def filter_conditionals(artifact_maps, conditionals):
        ordered = dict(sorted(conditionals.items(), key=lambda item: _nesting_depth(item[0])))
        return original(artifact_maps, ordered)

    node_inputs_resolver._filter_conditionals = filter_conditionals  # pylint: disable=protected-access
    try:
        yield
    finally:
        node_inputs_resolver._filter_conditionals = original  # pylint: disable=protected-access
