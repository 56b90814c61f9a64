"""The serving SavedModel exported with and without Keras' per-layer call traces: export and load.

    bin/in-env python bench/export_traces.py [--output-dir outputs] [--repeats 3]

Takes the Transform graph, network settings and classes of a finished local run (`make run` first),
builds that network, and exports it both ways, alternating, in one process: with traces
(tf.saved_model.save of the Keras model, as the Trainer exported before) and without (export.save,
as it exports now). Prints the median seconds to export and to load it (tf.saved_model.load, as
TFMA, LiteModels, the report and pipeline.score do), the functions and bytes of each SavedModel, and
the ratios of the two.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from table import cpu_kind  # noqa: E402


def _exporters():
    import tensorflow as tf
    from models import export

    def with_traces(model, export_dir, signatures):
        tf.saved_model.save(model, export_dir, signatures=signatures)

    return {"with traces": with_traces, "without (export.save)": export.save}


def _functions_and_bytes(export_dir: str):
    from tensorflow.core.protobuf import saved_model_pb2
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    size = sum(os.path.getsize(os.path.join(d, name)) for d, _, names in os.walk(export_dir) for name in names)
    return len(saved.meta_graphs[0].graph_def.library.function), size


def _run_parts(output_dir: str):
    """(network config, classes, Transform graph folder) of the run's trained model."""
    from models.labels import read_labels
    from models.model import ModelConfig, read_facts
    with open(os.path.join(output_dir, "last_run.json")) as f:
        trained = json.load(f).get("trained_model")
    facts = trained and read_facts(trained)
    if not facts:
        sys.exit(f"error: {output_dir}/last_run.json names no trained model with a model.json: run `make run` first")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in facts["config"].items()}
    graphs = sorted(glob.glob(os.path.join(output_dir, "pipeline", "Transform", "transform_graph", "*")),
                    key=os.path.getmtime)
    return ModelConfig(**config), read_labels(os.path.join(trained, "labels.txt")), graphs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tensorflow as tf
    import tensorflow_transform as tft
    from models import export
    from models.model import build_classifier
    from models.preprocessing import ImageSpec
    config, labels, graph = _run_parts(args.output_dir)
    transform = tft.TFTransformOutput(graph)
    spec = ImageSpec(*config.input_shape)
    model = build_classifier(config, export.normalization_constants(transform, spec))
    scratch = tempfile.mkdtemp(prefix="export-traces-")
    exporters = _exporters()
    seconds = {name: {"export": [], "load": []} for name in exporters}
    shape = {}
    try:
        for repeat in range(args.repeats + 1):  # the first round warms both up, and is not counted
            for index, (name, save) in enumerate(exporters.items()):
                export_dir = os.path.join(scratch, f"{repeat}-{index}")
                started = time.perf_counter()
                save(model, export_dir, export.serving_signatures(model, transform, labels, spec))
                exported = time.perf_counter() - started
                started = time.perf_counter()
                tf.saved_model.load(export_dir)
                loaded = time.perf_counter() - started
                if repeat:
                    seconds[name]["export"].append(exported)
                    seconds[name]["load"].append(loaded)
                shape[name] = _functions_and_bytes(export_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"CPU: {cpu_kind()}; network {config.architecture}, input {config.input_shape}, "
          f"median of {args.repeats}")
    medians = {name: {part: statistics.median(values) for part, values in parts.items()}
               for name, parts in seconds.items()}
    for name, parts in medians.items():
        functions, size = shape[name]
        print(f"{name:>22}: export {parts['export']:.2f} s, load {parts['load']:.2f} s, "
              f"{functions} functions, {size / 1e6:.2f} MB")
    (old, new) = medians.values()
    print(f"without / with traces: export {new['export'] / old['export']:.2f}x, load {new['load'] / old['load']:.2f}x")


if __name__ == "__main__":
    main()
