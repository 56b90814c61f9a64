"""The Beam engine the pipeline names (FnApiRunner) against Beam's default name for it (DirectRunner).

    bin/in-env python bench/beam_runner.py [--repeats 2] [--epochs 1]

Beam 2.77's DirectRunner tries the Prism runner first, which downloads a binary at run time; on this
closed network the download fails and it falls back to FnApiRunner for the batch pipelines TFX runs.
pipeline/configs.py names FnApiRunner outright. This measures that nothing got slower: the local
runner on the embedded digits, from an empty output folder each time, with each runner in turn
(alternating, so a noisy neighbour costs both alike), in a process of its own. Prints the seconds of
each Beam stage and of the whole run, and the ratio FnApiRunner / DirectRunner (below 1: faster).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s
from pipeline import paths  # noqa: E402

BEAM_STAGES = ("ImageFolderExampleGen", "StatisticsGen", "Transform", "Evaluator")
RUNNERS = {"DirectRunner": "--runner=DirectRunner", "FnApiRunner": "--runner=FnApiRunner"}
# One run of the local runner with configs.BEAM_RUNNER replaced; prints last_run.json's figures.
ONE_RUN = """
import json, sys
from pipeline import configs
configs.BEAM_PIPELINE_ARGS = (sys.argv[1], *configs.BEAM_PIPELINE_ARGS[1:])
from pipeline import local_runner
output = sys.argv[2]
code = local_runner.main(["--output-dir", output, "--epochs", sys.argv[3], "--min-accuracy", "0",
                          "--tflite", "float32"])
summary = json.load(open(output + "/last_run.json"))
print("RESULT " + json.dumps({"code": code, "stages": summary["stage_seconds"], "wall": summary["wall_seconds"]}))
"""


def one_run(runner_flag: str, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as output:
        result = subprocess.run([sys.executable, "-c", ONE_RUN, runner_flag, output, str(epochs)], cwd=paths.REPO_ROOT,
                                capture_output=True, text=True, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    figures = json.loads(line[len("RESULT "):])
    if figures["code"] != 0:
        raise SystemExit(f"the run with {runner_flag} failed: {result.stdout[-2000:]}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    measured = {name: [] for name in RUNNERS}
    for repeat in range(args.repeats):
        order = list(RUNNERS) if repeat % 2 == 0 else list(reversed(RUNNERS))
        for name in order:
            figures = one_run(RUNNERS[name], args.epochs)
            beam = sum(figures["stages"][stage] for stage in BEAM_STAGES)
            measured[name].append({"beam_stages": beam, "wall": figures["wall"],
                                   **{stage: figures["stages"][stage] for stage in BEAM_STAGES}})
            print(json.dumps({"runner": name, "repeat": repeat, **measured[name][-1]}), flush=True)
    for key in ("beam_stages", "wall", *BEAM_STAGES):
        direct = statistics.median(m[key] for m in measured["DirectRunner"])
        fnapi = statistics.median(m[key] for m in measured["FnApiRunner"])
        print(f"{key:22s} DirectRunner {direct:7.1f} s   FnApiRunner {fnapi:7.1f} s   ratio {fnapi / direct:.2f}")


if __name__ == "__main__":
    main()
