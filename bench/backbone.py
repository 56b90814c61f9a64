"""--backbone on few photos: a Keras application with random weights, frozen then fine-tuned, beside
the custom CNN of the photo recipe, on the same CIFAR-10 subset at 96x96.

    bin/in-env python bench/backbone.py [--train-per-class 50] [--backbones mobilenet_v2 efficientnet_b0]
                                        [--backbone-weights PATH|imagenet|none] [--archive PATH]

Takes 2 x train-per-class photos of each class from ../shared/datasets/cifar10-train.tar.gz (a fixed
shuffle), half of them held out as the test/ folder (500 held-out photos with the default 50), and
runs `python -m pipeline.local_runner --image-size 96 96 --channels 3` on them: once with the photo
preset (the custom CNN), then once per backbone with its default epochs (frozen, then fine-tuned).
Without the archive, says so and exits 0. No network here, so the default weights are random: with
ImageNet weights (--backbone-weights, docs/transfer-learning.md) a user measures what they add.
Prints each run's held-out accuracy, the Trainer's time and parameters.
"""
import argparse
import json
import os
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s

from photos import ARCHIVE, run_pipeline, split_folder  # noqa: E402
from table import machine  # noqa: E402

FLAGS = ["--image-size", "96", "96", "--channels", "3", "--min-accuracy", "0", "--tflite", "float32"]


def one_run(data_root: str, output_dir: str, flags: list) -> dict:
    summary = run_pipeline(data_root, output_dir, FLAGS + flags)
    with open(os.path.join(summary["artifacts"]["model_run"], "model.json")) as f:
        parameters = json.load(f)["parameters"]
    return {"accuracy": summary["evaluation"]["accuracy"], "trainer_s": summary["stage_seconds"]["Trainer"],
            "wall_s": summary["bench_wall_seconds"], "parameters": parameters}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=ARCHIVE)
    parser.add_argument("--train-per-class", type=int, default=50)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "efficientnet_b0"])
    parser.add_argument("--backbone-weights", default="none")
    args = parser.parse_args()
    if not os.path.exists(args.archive):
        print(f"bench/backbone.py: skipped, {args.archive} is not here")
        return 0
    print(f"machine: {machine()}")
    runs = [("custom CNN, --preset photos", ["--preset", "photos"])]
    runs += [(f"{name}, {args.backbone_weights} weights", ["--backbone", name, "--backbone-weights", args.backbone_weights])
             for name in args.backbones]
    with tempfile.TemporaryDirectory(prefix="backbone-bench-") as work:
        counts = split_folder(args.archive, work, 2 * args.train_per_class, held_out=0.5)
        print(f"data: {counts['train']:,} training photos, {counts['test']:,} held out, at 96x96", flush=True)
        for index, (name, flags) in enumerate(runs):
            run = one_run(os.path.join(work, "photos"), os.path.join(work, f"out{index}"), flags)
            print(f"{name:40s} held-out accuracy {run['accuracy']:.4f}  Trainer {run['trainer_s']:.0f} s  "
                  f"{run['parameters']:,} parameters  ({' '.join(flags)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
