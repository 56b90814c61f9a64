"""How much of the CPU each network's training uses: images/s and the share of the fp32 peak, for
today's photo network (the `photos` preset: residual, width 1.5) against the dense networks shaped like
the CIFAR-10 speed records (--architecture dense: airbench93's 64/128/128 and airbench94's 64/256/256),
on the same images, with the same Keras fit; and, on a CPU with bfloat16 instructions, each under
Keras' mixed_bfloat16 policy.

    bin/in-env python bench/network_efficiency.py [--images 4096] [--batch-size 512] [--repeats 2]

The images are CIFAR-10 training photos when ../shared/datasets/cifar10-train.tar.gz is there, else
random pixels (the speed does not depend on them). One epoch of warm-up, then --repeats epochs, the
median one's time taken; each network in a process of its own. FLOPs per training image are 3x the
forward FLOPs TensorFlow counts. Prints the CPU and one line per network.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402

ARCHIVE = os.path.join(os.path.dirname(paths.REPO_ROOT), "shared", "datasets", "cifar10-train.tar.gz")
NETWORKS = {
    "photos preset (residual, width 1.5)": {"architecture": "residual", "width": 1.5},
    "dense 64/128/128 (airbench93 shape)": {"architecture": "dense", "group_filters": (64, 128, 128)},
    "dense 64/256/256 (airbench94 shape)": {"architecture": "dense", "group_filters": (64, 256, 256)},
}


def cpu() -> dict:
    """The CPU kind, and whether it has bfloat16 as the Trainer's --precision auto decides it."""
    import table
    from models.precision import cpu_has_bfloat16
    return {"model": table.cpu_kind(), "bf16": cpu_has_bfloat16()}


def load_images(count: int, work: str):
    import numpy as np
    if not os.path.exists(ARCHIVE):
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, count)
    from PIL import Image
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(work, filter="data")
    files = sorted(glob.glob(os.path.join(work, "train", "*", "*")))
    chosen = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:count]]
    classes = sorted({os.path.basename(os.path.dirname(f)) for f in files})
    images = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) for f in chosen])
    return images, np.array([classes.index(os.path.basename(os.path.dirname(f))) for f in chosen])


def child(options: dict, data: str, batch_size: int, repeats: int, policy: str) -> dict:
    """One network's training speed, in this process."""
    import numpy as np
    import tf_keras as keras
    import trainer_vs_keras
    from models.model import ModelConfig, build_classifier
    from models.recipe import TrainingConfig, compile_model
    from models.run_fn import ThroughputLogger
    keras.mixed_precision.set_global_policy(policy)
    loaded = np.load(data)
    images, labels = (loaded["images"] - 120.0) / 64.0, loaded["labels"]
    config = ModelConfig(input_shape=(32, 32, 3), num_classes=10, **options)
    keras.utils.set_random_seed(0)
    model = build_classifier(config)
    steps = len(images) // batch_size
    compile_model(model, config, TrainingConfig(epochs=1 + repeats, batch_size=batch_size, optimizer="sgd"),
                  steps_per_epoch=steps, replicas=1)
    throughput = ThroughputLogger(batch_size, steps, log_dir="", write=False)
    model.fit(images, labels, batch_size=batch_size, epochs=1 + repeats, verbose=0, callbacks=[throughput])
    # The first epoch warms up (tracing, oneDNN's choices). Epochs are timed as the Trainer times them:
    # fit()'s whole call also holds seconds after the last epoch that are not training.
    rate = float(np.median([epoch["images_per_s"] for epoch in throughput.epochs[1:]]))
    keras.mixed_precision.set_global_policy("float32")
    flops = trainer_vs_keras.training_flops_per_image(config)
    return {"images_per_s": rate, "mflops_per_image": flops / 1e6, "parameters": model.count_params()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        request = json.loads(args.child)
        print(json.dumps(child(**request, batch_size=args.batch_size, repeats=args.repeats)))
        return 0
    import numpy as np
    import trainer_vs_keras
    machine = cpu()
    peak = trainer_vs_keras.cpu_peak_flops()
    print(f"CPU: {machine['model']}, {os.cpu_count()} cores, fp32 peak {peak / 1e9:.0f} GFLOP/s; "
          f"bfloat16 instructions: {'yes' if machine['bf16'] else 'no'}; images: "
          f"{'CIFAR-10 photos' if os.path.exists(ARCHIVE) else 'random pixels'}, {args.images}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as work:
        images, labels = load_images(args.images, work)
        data = os.path.join(work, "images.npz")
        np.savez(data, images=images, labels=labels)
        policies = ["float32"] + (["mixed_bfloat16"] if machine["bf16"] else [])
        for name, options in NETWORKS.items():
            for policy in policies:
                request = json.dumps({"options": options, "data": data, "policy": policy})
                done = subprocess.run([sys.executable, __file__, "--child", request, "--batch-size", str(args.batch_size),
                                       "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                share = result["images_per_s"] * result["mflops_per_image"] * 1e6 / peak
                print(f"{name:38s} {policy:15s} {result['parameters']:>9,} parameters  "
                      f"{result['mflops_per_image']:7.1f} MFLOP/training image  {result['images_per_s']:6.0f} images/s  "
                      f"{result['images_per_s'] * result['mflops_per_image'] / 1e3:6.1f} GFLOP/s  "
                      f"{share:5.1%} of fp32 peak", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
