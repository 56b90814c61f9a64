"""Quantization-aware int8 against post-training int8, per tensor and per channel: all three files
converted from one run's models, each measured on that run's eval split against its SavedModel.

    bin/in-env python bench/quantization_aware.py [--run OUTPUT_DIR] [-- RUNNER FLAGS]

OUTPUT_DIR: a finished `local_runner --quantization-aware` run. Without --run, the embedded digits are
trained first (`local_runner --quantization-aware` and the flags after --) in a temporary folder.
LiteModels itself converts per channel only when nothing else may be pushed; this converts all three.
Prints the CPU, then each file's agreement with the SavedModel, accuracy and size.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402


def trained(output_dir: str, flags: list) -> None:
    subprocess.run([sys.executable, "-m", "pipeline.local_runner", "--output-dir", output_dir,
                    "--quantization-aware", *flags], check=True, cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL)


def measured(output_dir: str) -> dict:
    """{file: lite.measure(...)} of the three int8 files of the run in output_dir."""
    import numpy as np
    import tensorflow as tf
    from components.lite_models import sample_split, split_batches
    from models import export, lite
    summary = paths.read_last_run(output_dir)
    examples, serving = summary["artifacts"]["examples"], summary["trained_model"]
    saved_model = lite.load(serving)
    quantization_aware = lite.load(export.quantization_aware_dir(serving))
    spec = lite.image_spec(saved_model)
    calibration, _ = sample_split(examples, "train", spec, lite.CALIBRATION_IMAGES)  # as LiteModels does
    images, labels = (np.concatenate(part) for part in zip(*split_batches(examples, "eval", spec)))
    reference = np.concatenate([saved_model.signatures["serve_images"](images=tf.constant(images[i:i + 256]))
                                ["class_id"].numpy() for i in range(0, len(images), 256)])
    files = {"post-training, per tensor": lite.convert(saved_model, "int8", calibration, "per-tensor"),
             "post-training, per channel": lite.convert(saved_model, "int8", calibration, "per-channel"),
             "quantization-aware": lite.convert(quantization_aware, "int8", calibration, "per-channel")}
    return {"eval_images": len(labels), "saved_model_accuracy": float(np.mean(reference == labels)),
            "files": {name: lite.measure(model, images, labels, reference) for name, model in files.items()}}


def main() -> None:
    import table
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished local_runner --quantization-aware output folder")
    parser.add_argument("flags", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(f"machine: {table.machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="qat-bench-") as work:
        output_dir = args.run or os.path.join(work, "out")
        if not args.run:
            trained(output_dir, args.flags)
        result = measured(output_dir)
    print(f"{result['eval_images']} eval images, SavedModel accuracy {result['saved_model_accuracy']:.4f}")
    for name, figures in result["files"].items():
        print(f"int8 {name}: agreement {figures['agreement']:.4f}, accuracy {figures['accuracy']:.4f}, "
              f"{figures['size_bytes']:,} bytes")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
