"""Operator commands on a pushed model's serving folder; every change is a new version, the
champion, and a line in the promotion log.

    python -m pipeline.promote [--output-dir outputs] list
    python -m pipeline.promote [--output-dir outputs] rollback --to VERSION [--reason TEXT]
    python -m pipeline.promote [--output-dir outputs] unpin
    python -m pipeline.promote [--output-dir outputs] force --run RUN_ID --reason TEXT

A rollback pins the champion: runs then hold (status `held`) instead of replacing it, until `unpin`.

`force` publishes the model a run trained even though it was not blessed (RUN_ID as in
last_run.json or runs/). Exit code 2 and one line naming the cause when a request cannot be done.
"""
import argparse
import os
import sys
from typing import List, Optional

from models import promotion
from models import files
from pipeline import paths


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.promote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=paths.DEFAULT_OUTPUT_DIR, help="the runner's --output-dir")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="versions, the champion and the promotion log")
    rollback = commands.add_parser("rollback", help="make an earlier version the champion again, pinned")
    rollback.add_argument("--to", type=int, required=True, metavar="VERSION")
    rollback.add_argument("--reason", default="")
    commands.add_parser("unpin", help="let runs replace the pinned champion again")
    force = commands.add_parser("force", help="publish a run's model although it was not blessed")
    force.add_argument("--run", required=True, metavar="RUN_ID")
    force.add_argument("--reason", required=True)
    return parser.parse_args(argv)


def list_versions(serving_dir: str) -> str:
    pointer = promotion.champion(serving_dir) or {}
    champion = pointer.get("version")
    lines = [f"{serving_dir}: {len(promotion.versions(serving_dir))} version(s), champion {champion or 'none'}"
             + (" (pinned: runs hold until `unpin`)" if pointer.get("pinned") else "")]
    for entry in promotion.promotion_log(serving_dir):
        accuracy = (entry.get("metrics") or {}).get("accuracy")
        source = f" (copy of {entry['source_version']})" if entry.get("source_version") else ""
        lines.append(f"{'*' if entry['version'] == champion else ' '} {entry['version']}  {entry['time']}  "
                     f"{entry['action']:<8}{source}  run {entry.get('run_id')}  "
                     f"accuracy {accuracy if accuracy is None else f'{accuracy:.4f}'}"
                     + (f"  reason: {entry['reason']}" if entry.get("reason") else ""))
    return "\n".join(lines)


def force(output_dir: str, serving_dir: str, run_id: str, reason: str) -> int:
    from components.evaluation import promotion_metrics  # TFX only when a model is published
    from components.model_pusher import model_content
    if not reason.strip():
        raise promotion.PromotionError("force needs a --reason")
    runs_dir, path = paths.runs_dir(output_dir), paths.run_summary(output_dir, run_id)
    if not os.path.exists(path):
        known = sorted(name[:-len(".json")] for name in os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
        raise promotion.PromotionError(f"no run {run_id!r} in {runs_dir}; runs: {known or 'none'}")
    run = files.read_json(path)
    model = run.get("trained_model")
    if not model or not os.path.isdir(model):
        raise promotion.PromotionError(f"run {run_id!r} has no trained model to publish (status {run['status']}"
                                       + (f": {run['error']}" if run.get("error") else "") + ")")
    evaluation = run.get("evaluation") or {}
    return promotion.publish(serving_dir, *model_content(model, {
        "action": "forced", "reason": reason, "run_id": run["run_id"], "blessed": run.get("blessed"),
        "metrics": promotion_metrics(evaluation),
        "validation_failures": evaluation.get("validation_failures"), "thresholds": None,
        "data_fingerprint": run.get("data_fingerprint"), "trained_model": model}))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    serving_dir = paths.serving_dir(args.output_dir)
    try:
        if args.command == "list":
            print(list_versions(serving_dir))
            return 0
        if args.command == "unpin":
            print(f"unpin: version {promotion.unpin(serving_dir)} stays the champion; runs may replace it")
            return 0
        if args.command == "rollback":
            version = promotion.rollback(serving_dir, args.to, args.reason)
        else:
            version = force(args.output_dir, serving_dir, args.run, args.reason)
    except promotion.PromotionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pinned = " (pinned: runs hold until `unpin`)" if args.command == "rollback" else ""
    print(f"{args.command}: published version {version} in {serving_dir}; it is the champion{pinned}")
    return 0


if __name__ == "__main__":
    from pipeline.quiet import run_quietly
    run_quietly(main)
