"""What --test-time-flip adds: a run's SavedModel scored on its eval split as it is, and with the mean
of its probabilities for each image and its mirror, which is what --test-time-flip exports.

    bin/in-env python bench/test_time_flip.py --run OUTPUT_DIR

OUTPUT_DIR: a finished local_runner run made with --flip and without --test-time-flip (e.g.
`--preset photos --no-test-time-flip`). Prints the CPU, both accuracies and the images they are on.
"""
import argparse
import json
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]


def accuracies(output_dir: str) -> dict:
    import numpy as np
    import tensorflow as tf
    from components.lite_models import split_batches
    from models import lite
    from models.model import read_facts
    from models.preprocessing import ImageSpec
    with open(os.path.join(output_dir, "last_run.json")) as f:
        summary = json.load(f)
    if (read_facts(summary["trained_model"]) or {}).get("test_time_flip"):
        raise SystemExit("error: that run's model answers for mirrors already: run it with --no-test-time-flip")
    saved_model = lite.load(summary["trained_model"])
    serve = saved_model.signatures["serve_images"]
    spec = ImageSpec(*(int(d) for d in lite.image_shape(saved_model)))
    seen = plain = flipped = 0
    for images, labels in split_batches(summary["artifacts"]["examples"], "eval", spec):
        probabilities = serve(images=tf.constant(images))["probabilities"].numpy()
        mirrored = serve(images=tf.constant(images[:, :, ::-1]))["probabilities"].numpy()
        seen += len(labels)
        plain += int(np.sum(probabilities.argmax(-1) == labels))
        flipped += int(np.sum((probabilities + mirrored).argmax(-1) == labels))
    return {"eval_images": seen, "accuracy": plain / seen, "accuracy_test_time_flip": flipped / seen}


def main() -> None:
    import table
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished local_runner output folder")
    args = parser.parse_args()
    print(f"machine: {table.machine()}", flush=True)
    result = accuracies(args.run)
    print(f"{result['eval_images']} eval images: accuracy {result['accuracy']:.4f}, with the mirror's answers "
          f"averaged in {result['accuracy_test_time_flip']:.4f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
