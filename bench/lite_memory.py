"""Peak memory of LiteModels against the size of the eval split: bounded, not growing with it.

    bin/in-env python bench/lite_memory.py [--output-dir outputs] [--sizes 2000 20000]

Takes the trained model and examples of a finished local run (`make run` first), makes eval splits
of each size by repeating that run's eval examples, and runs LiteModels' measurement
(components.lite_models.variants_with_quality) on each in a fresh process. Prints peak RSS and
seconds per size, and the ratio of the largest to the smallest: about 1 when memory is bounded,
about the ratio of the sizes when the split is held whole.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from models import features  # noqa: E402
from pipeline import paths  # noqa: E402


def make_examples(source_examples: str, target: str, size: int) -> None:
    """train: the run's own; eval: its eval records repeated up to size."""
    import tensorflow as tf
    train = features.split_dir(target, "train")
    os.makedirs(train)
    for path in tf.io.gfile.glob(os.path.join(features.split_dir(source_examples, "train"), "*")):
        tf.io.gfile.copy(path, os.path.join(train, os.path.basename(path)))
    files = tf.io.gfile.glob(os.path.join(features.split_dir(source_examples, "eval"), "*"))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    evaluation = features.split_dir(target, "eval")
    os.makedirs(evaluation)
    with tf.io.TFRecordWriter(os.path.join(evaluation, "data-00000-of-00001.gz"), options="GZIP") as writer:
        for i in range(size):
            writer.write(records[i % len(records)])


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024


def measure_one(model: str, examples: str, output: str, variants, keep_batches: bool = False) -> None:
    """In this process: LiteModels' measurement, then peak RSS (MB) and seconds as JSON, and how far
    the resident set rose, while the eval split streamed past, above where it stood once the first
    batch had gone through. The converters' peak, reached before, varies by tens of MB from run to
    run, and so does the first batch's (the SavedModel's first call and the interpreters' buffers):
    either hides what streaming holds. Linux resets the high-water mark on request (clear_refs 5).
    keep_batches holds every batch, as a leak would."""
    from components import lite_models
    split_batches, streaming, kept = lite_models.split_batches, {}, []

    def measured_split_batches(*args, **kwargs):
        before = None
        for index, batch in enumerate(split_batches(*args, **kwargs)):
            if index == 1:  # the first batch has been scored by every model
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                before = _status_mb("VmRSS")
            if keep_batches:
                kept.append(batch)
            yield batch
        if before is None:  # a split of one batch has nothing to measure after its first: say so, not 0 MB
            raise ValueError("the eval split is one batch: the rise after the first batch cannot be measured")
        streaming["stream_growth_mb"] = round(_status_mb("VmHWM") - before, 1)

    lite_models.split_batches = measured_split_batches
    started = time.time()
    quality = lite_models.variants_with_quality(model, examples, output, max_accuracy_drop=0.01, min_agreement=0.98,
                                                variants=variants or lite_models.lite.VARIANTS)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": round(time.time() - started, 1), "eval_images": quality["eval_images"],
                      **streaming}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=os.path.join(paths.REPO_ROOT, "outputs"), help="a finished run's")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--json", action="store_true", help="end with one JSON line: {size: {peak_rss_mb, seconds}}")
    parser.add_argument("--variants", nargs="+", metavar="VARIANT",
                        help="measure only these TFLite variants (default: all); the streaming pass is the same "
                             "code for any, and each costs a conversion and a pass of its own")
    parser.add_argument("--keep-batches", action="store_true",
                        help="hold every streamed batch, as a leak would: shows what the figures are with one")
    parser.add_argument("--measure-one", nargs=3, metavar=("MODEL", "EXAMPLES", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_one:
        measure_one(*args.measure_one, args.variants, args.keep_batches)
        return
    run = paths.read_last_run(args.output_dir)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            examples = os.path.join(scratch, f"examples-{size}")
            make_examples(run["artifacts"]["examples"], examples, size)
            output = subprocess.run([sys.executable, __file__, "--measure-one", run["trained_model"], examples,
                                     os.path.join(scratch, f"lite-{size}"),
                                     *(["--variants", *args.variants] if args.variants else []),
                                     *(["--keep-batches"] if args.keep_batches else [])],
                                    capture_output=True, text=True,
                                    check=True, cwd=paths.REPO_ROOT).stdout.strip().splitlines()[-1]
            results[size] = json.loads(output)
            print(f"eval split {size:>6} images: peak RSS {results[size]['peak_rss_mb']:7.0f} MB, "
                  f"rising {results[size]['stream_growth_mb']:5.0f} MB while streaming it, "
                  f"{results[size]['seconds']:6.1f} s", flush=True)
    smallest, largest = min(results), max(results)
    print(f"peak RSS {largest} / {smallest} images: "
          f"{results[largest]['peak_rss_mb'] / results[smallest]['peak_rss_mb']:.2f}x "
          f"(the split grew {largest / smallest:.0f}x)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
