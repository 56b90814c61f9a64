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
sys.path.insert(0, REPO)
from models.trainer import TrainingConfig  # noqa: E402  (after the path is set)


def timed(cmd) -> tuple:
    """(wall seconds, last stdout line) of a command."""
    started = time.time()
    result = subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return time.time() - started, result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", default=os.path.join(REPO, "data", "mnist-sample"))
    parser.add_argument("--epochs", type=int, default=TrainingConfig.epochs)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        peer_out, pipe_out = os.path.join(tmp, "peer"), os.path.join(tmp, "pipeline")
        os.makedirs(peer_out)
        peer, peer_line = timed([sys.executable, "bench/plain_keras.py", "--data-root", args.data_root,
                      "--output-dir", peer_out, "--epochs", str(args.epochs)])
        pipe, _ = timed([sys.executable, "-m", "pipeline.local_runner", "--data-root", args.data_root,
                      "--output-dir", pipe_out, "--epochs", str(args.epochs)])
        with open(os.path.join(pipe_out, "last_run.json")) as f:
            run = json.load(f)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"data {args.data_root}; {args.epochs} epochs")
    peer_accuracy = json.loads(peer_line)["test_accuracy"]
    pipe_accuracy = (run.get("evaluation") or {}).get("accuracy") or float("nan")
    print(f"{'route':<34}{'wall s':>8}{'test accuracy':>15}")
    print(f"{'plain Keras (fit+export+TFLite)':<34}{peer:>8.1f}{peer_accuracy:>15.4f}")
    print(f"{'TFX pipeline (' + run['status'] + ')':<34}{pipe:>8.1f}{pipe_accuracy:>15.4f}")
    print(f"P1 pipeline / plain Keras wall time: {pipe / peer:.2f}x")


if __name__ == "__main__":
    main()
