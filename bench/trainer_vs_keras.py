"""Training throughput: the pipeline's Trainer against plain Keras `fit` on in-memory arrays.

    bin/in-env python bench/trainer_vs_keras.py [--epochs 5]

In one invocation, on the embedded sample, same model (the default ModelConfig), same optimizer,
schedule and loss (trainer.compile_model), same batch of 32:
- trainer: the real pipeline (LocalDagRunner) whose Trainer reads the examples through the
  Transform graph in tf.data, with augmentation; its images/s per epoch come from throughput.json;
- keras: `model.fit` on the decoded, normalized images held in numpy arrays (no input pipeline).
Epoch 0 (tracing, caching) is left out; the median of the other epochs is compared. Prints the
ratio (goal >= 0.95) and the achieved FLOP/s as a fraction of the CPU's fp32 peak (goal >= 25 %).

The pipeline runs with --profile: the Trainer traces 10 steps of its second epoch into its
TensorBoard logs, and this prints where those steps spent their time: how long each step waited
for its batch (the input pipeline starving the model), how busy TensorFlow's compute threads were,
the CPU time of the input pipeline's threads, and the op kinds that take the most compute time.
"""
import argparse
import collections
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402


def steady(epochs) -> float:
    return statistics.median(e["images_per_s"] for e in epochs[1:])


def run_trainer(epochs: int, work_dir: str) -> Tuple[float, str]:
    """(steady images/s, path of the profiler trace)."""
    subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--output-dir", work_dir, "--epochs", str(epochs),
                    "--min-accuracy", "0", "--profile"], check=True, cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    model_run, = glob.glob(os.path.join(work_dir, "pipeline", "Trainer", "model_run", "*"))
    with open(os.path.join(model_run, "throughput.json")) as f:
        rate = steady(json.load(f))
    trace, = glob.glob(os.path.join(model_run, "**", "*.xplane.pb"), recursive=True)
    return rate, trace


def _top_level(events) -> List:
    """Events not nested inside an earlier event of the same thread."""
    kept, end = [], -1
    for event in sorted(events, key=lambda e: e.offset_ps):
        if event.offset_ps >= end:
            kept.append(event)
            end = event.offset_ps + event.duration_ps
    return kept


def summarize_trace(path: str, top: int = 8) -> Dict:
    """Step time, input wait, compute-thread occupancy, input-pipeline CPU time and the top op kinds
    of a TensorFlow profiler trace (XSpace) of training steps."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    host, = (plane for plane in space.planes if plane.name == "/host:CPU")

    def events(prefix: str, name=lambda n: True, window=(0, float("inf"))):
        """(thread, event name, event) of the threads named prefix*, within the window."""
        return [(line.name, host.event_metadata[e.metadata_id].name, e) for line in host.lines
                if line.name.startswith(prefix) for e in line.events
                if name(host.event_metadata[e.metadata_id].name)
                and window[0] <= line.timestamp_ns * 1000 + e.offset_ps < window[1]]

    # Only the steps traced whole; everything else is counted within their time span.
    steps = [(line, e) for line in host.lines if line.name == "python" for e in line.events
             if host.event_metadata[e.metadata_id].name == "train"]
    start = min(line.timestamp_ns * 1000 + e.offset_ps for line, e in steps)
    end = max(line.timestamp_ns * 1000 + e.offset_ps + e.duration_ps for line, e in steps)
    span, window = end - start, (start, end)
    waits = [e for _, _, e in events("tf_data_iterator_get_next", lambda n: n == "IteratorGetNextOp::DoCompute",
                                     window)]
    ops = events("tf_Compute", lambda n: ":" in n and not n.startswith(("ThreadpoolListener", "ExecutorState")),
                 window=window)
    compute_threads = {line for line, _, _ in ops}
    by_kind = collections.Counter()
    for _, name, event in ops:
        by_kind[name.split(":")[-1]] += event.duration_ps
    op_total = sum(by_kind.values())
    input_lines = collections.defaultdict(list)
    for line, _, event in events("tf_data_", window=window):
        input_lines[line].append(event)
    input_cpu = sum(e.duration_ps for line_events in input_lines.values() for e in _top_level(line_events))
    return {"steps": len(steps), "ms_per_step": round(span / len(steps) / 1e9, 2),
            "input_wait_ms_per_step": round(sum(e.duration_ps for e in waits) / len(steps) / 1e9, 3),
            "compute_threads": len(compute_threads),
            "compute_thread_occupancy": round(op_total / (len(compute_threads) * span), 3),
            "input_pipeline_cpu_ms_per_step": round(input_cpu / len(steps) / 1e9, 2),
            "top_ops": {kind: round(t / op_total, 3) for kind, t in by_kind.most_common(top)}}


def run_keras(epochs: int, work_dir: str) -> float:
    import numpy as np
    from PIL import Image
    import tf_keras as keras
    from models.model import ModelConfig, build_classifier
    from models.recipe import TrainingConfig, compile_model
    from models.run_fn import THROUGHPUT_FILENAME, ThroughputLogger
    files = sorted(glob.glob(os.path.join(paths.EMBEDDED_DATA, "train", "*", "*.png")))
    images = np.stack([np.asarray(Image.open(p), np.float32)[..., None] for p in files])
    images = (images - images.mean()) / images.std()
    labels = np.array([int(os.path.basename(os.path.dirname(p))) for p in files])
    training = TrainingConfig(epochs=epochs)
    config = ModelConfig()
    steps = -(-len(images) // training.batch_size)
    keras.utils.set_random_seed(0)
    model = build_classifier(config)
    compile_model(model, config, training, steps_per_epoch=steps, replicas=1)
    model.fit(images, labels, batch_size=training.batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[ThroughputLogger(training.batch_size, steps, work_dir)])
    with open(os.path.join(work_dir, THROUGHPUT_FILENAME)) as f:
        return steady(json.load(f))


def training_flops_per_image(config=None) -> float:
    """3x the forward FLOPs (forward, plus gradients for activations and weights), counted by TF, of
    the network config builds (default: ModelConfig())."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from models.model import ModelConfig, build_classifier
    config = config or ModelConfig()
    model = build_classifier(config)
    forward = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec((1, *config.input_shape), tf.float32))
    graph = convert_variables_to_constants_v2(forward).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return 3.0 * tf.compat.v1.profiler.profile(graph, options=options).total_float_ops


ZEN5_FAMILY = 26  # AMD's Zen 5 (EPYC 9005): AVX-512 on full 512-bit units, where Zen 4 (family 25) splits it


def amd_family(info: str) -> int:
    """AMD's CPU family number in /proc/cpuinfo's text; 0 for any other vendor."""
    if "AuthenticAMD" not in info:
        return 0
    return int(next((line.split(":")[1] for line in info.splitlines() if line.startswith("cpu family")), "0"))


def cpu_peak_flops() -> float:
    """cores x clock x fp32 FLOPs per cycle: two FMA units, 32 with AVX2, 64 with AVX-512 on 512-bit units
    (Intel's, AMD's Zen 5). AMD's Zen 4 has AVX-512 instructions but runs each on 256-bit units: 32, as
    with AVX2."""
    with open("/proc/cpuinfo") as f:
        info = f.read()
    mhz = float(next(line.split(":")[1] for line in info.splitlines() if line.startswith("cpu MHz")))
    full_width = "GenuineIntel" in info or amd_family(info) >= ZEN5_FAMILY
    per_cycle = 64 if " avx512f" in info and full_width else 32 if " fma" in info else 16
    return os.cpu_count() * mhz * 1e6 * per_cycle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--child", choices=("keras",), help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"images_per_s": run_keras(args.epochs, args.work_dir)}))
        return
    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as tmp:
        trainer, trace = run_trainer(args.epochs, os.path.join(tmp, "pipeline"))
        profile = summarize_trace(trace)
        keras_out = subprocess.run([sys.executable, __file__, "--child", "keras", "--epochs", str(args.epochs),
                                    "--work-dir", tmp], check=True, capture_output=True, text=True).stdout
        keras_rate = json.loads(keras_out.strip().splitlines()[-1])["images_per_s"]
    flops, peak = training_flops_per_image(), cpu_peak_flops()
    print(json.dumps({"trainer_images_per_s": trainer, "keras_images_per_s": keras_rate,
                      "trainer_over_keras": round(trainer / keras_rate, 2),
                      "training_mflops_per_image": round(flops / 1e6, 2), "cpu_peak_gflops": round(peak / 1e9, 1),
                      "trainer_fraction_of_peak": round(trainer * flops / peak, 3),
                      "keras_fraction_of_peak": round(keras_rate * flops / peak, 3)}))
    print(json.dumps({"trainer_profile": profile}))


if __name__ == "__main__":
    main()
