"""P1: the whole pipeline's wall time against the plain-Keras peer, same data and epochs, one invocation.

    make bench            (or: bin/in-env python bench/pipeline_vs_keras.py [--epochs N] [--data-root D])
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd) -> float:
    started = time.time()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default=os.path.join(REPO, "data", "mnist-sample"))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        peer_out, pipe_out = os.path.join(tmp, "peer"), os.path.join(tmp, "pipeline")
        os.makedirs(peer_out)
        peer = timed([sys.executable, "bench/plain_keras.py", "--data-root", args.data_root,
                      "--output-dir", peer_out, "--epochs", str(args.epochs)])
        pipe = timed([sys.executable, "-m", "pipeline.local_runner", "--data-root", args.data_root,
                      "--output-dir", pipe_out, "--epochs", str(args.epochs)])
        with open(os.path.join(pipe_out, "last_run.json")) as f:
            run = json.load(f)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"data {args.data_root}; {args.epochs} epochs")
    print(f"{'route':<34}{'wall s':>8}")
    print(f"{'plain Keras (fit+export+TFLite)':<34}{peer:>8.1f}")
    print(f"{'TFX pipeline (make run)':<34}{pipe:>8.1f}")
    print(f"P1 pipeline / plain Keras: {pipe / peer:.2f}x   (pipeline status {run['status']}, "
          f"eval accuracy {run.get('evaluation', {}).get('accuracy')})")


if __name__ == "__main__":
    main()
