"""What test-time views add: a run's SavedModel scored on its eval split as it is, with the mean of its
probabilities for each image and its mirror (what --test-time-flip exports), and, with --shift N, with
the mean over four copies shifted diagonally by N pixels too (what --test-time-shift N adds).

    bin/in-env python bench/test_time_flip.py --run OUTPUT_DIR [--shift N]

OUTPUT_DIR: a finished local_runner run made with --flip (and --crop-pad N for --shift N). The views
are made by the export's own code (models.export: InferenceViews, view_images) around the exported
serving function, so a model that already averages some views is measured with the others added.
Prints the CPU, the accuracies and the images they are on.
"""
import argparse
import glob
import json
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402


def _views_to_add(facts: dict, shift: int) -> dict:
    from models.export import InferenceViews
    flip = not facts.get("test_time_flip")  # the exported model averages mirrors itself otherwise
    scored = {"as exported": InferenceViews()}
    if flip:
        scored["mirrors added"] = InferenceViews(flip=True)
    if shift and not facts.get("test_time_shift"):
        scored[f"shifts of {shift} added"] = InferenceViews(flip=flip, shift=shift)
    return scored


def accuracies(output_dir: str, shift: int = 0) -> dict:
    import numpy as np
    import tensorflow as tf
    import tensorflow_transform as tft
    from components.lite_models import split_batches
    from models import export, lite
    from models.model import read_facts
    summary = paths.read_last_run(output_dir)
    facts = read_facts(summary["trained_model"]) or {}
    saved_model = lite.load(summary["trained_model"])
    serve = saved_model.signatures["serve_images"]
    spec = lite.image_spec(saved_model)
    graph = max(glob.glob(os.path.join(output_dir, "pipeline", "Transform", "transform_graph", "*")),
                key=os.path.getmtime)  # the run's: a run's Transform is its newest
    mean, std = export.normalization_constants(tft.TFTransformOutput(graph), spec)
    scored = _views_to_add(facts, shift)
    correct, seen = dict.fromkeys(scored, 0), 0
    for images, labels in split_batches(summary["artifacts"]["examples"], "eval", spec):
        normalized = (tf.constant(images, tf.float32) - mean) / std
        for name, views in scored.items():
            probabilities = np.mean([serve(images=x * std + mean)["probabilities"].numpy()
                                     for x in export.view_images(normalized, views)], axis=0)
            correct[name] += int(np.sum(probabilities.argmax(-1) == labels))
        seen += len(labels)
    return {"eval_images": seen, "model_averages": {k: v for k, v in facts.items() if k.startswith("test_time")},
            "accuracy": {name: count / seen for name, count in correct.items()}}


def main() -> None:
    import table
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished local_runner output folder")
    parser.add_argument("--shift", type=int, default=0, help="also score four copies shifted by this many pixels")
    args = parser.parse_args()
    print(f"machine: {table.machine()}", flush=True)
    result = accuracies(args.run, args.shift)
    print(f"{result['eval_images']} eval images; the model itself averages {result['model_averages'] or 'nothing'}")
    for name, accuracy in result["accuracy"].items():
        print(f"  {name}: accuracy {accuracy:.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
