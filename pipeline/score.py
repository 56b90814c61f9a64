"""Scores a pushed model on a folder of labelled images, through both deployable artifacts:

    python -m pipeline.score --model outputs/serving/image_cnn/<version> --data-root DIR [--split test]

Prints the SavedModel's accuracy (serve_image_bytes on raw file bytes) and, for each pushed TFLite
variant (tflite/*.tflite), its accuracy and how often it gives the SavedModel's top-1 class.
Images are read from <data-root>/<split>/<class>/ (or <data-root>/<class>/ with --split ''); every file not
scored (not an image, unreadable, outside any class folder) is listed under "skipped" with its reason.
"""
import argparse
import glob
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def labelled_files(folder: str, label_names: Sequence[str], batch_size: int = 256) -> Tuple[List[tuple], List[dict]]:
    """(path, class) of every file below folder/<class>/ that ingestion would accept, and a
    {"file", "reason"} for every other file, so that none is left out without a word."""
    from components.image_example_gen import folder_layout, image_check
    class_folders, top_files, skipped_entries = folder_layout.entries(folder, folder)
    skipped = [{"file": e.path, "reason": e.reason}
               for e in list(skipped_entries) + folder_layout.stray_files(folder, top_files)]
    candidates = []
    for name in class_folders:
        if name not in label_names:
            raise ValueError(f"class folder {name!r} in {folder} is not one of the model's classes {list(label_names)}")
        for entry in folder_layout.walk(os.path.join(folder, name), folder):
            if entry.kind == folder_layout.FILE:
                candidates.append((entry.path, name))
            else:
                skipped.append({"file": entry.path, "reason": entry.reason})
    files = []
    for start in range(0, len(candidates), batch_size):  # one parallel decode a batch: memory stays flat
        batch = candidates[start:start + batch_size]
        contents = []
        for path, _ in batch:
            with open(path, "rb") as f:
                contents.append(f.read())
        for (path, name), (_, reason, _) in zip(batch, image_check.check_images(contents)):
            if reason:
                skipped.append({"file": path, "reason": reason})
            else:
                files.append((path, name))
    return files, skipped


def saved_model_predictions(model_dir: str, paths: Sequence[str], batch_size: int = 256) -> Dict[str, np.ndarray]:
    import tensorflow as tf
    serve = tf.saved_model.load(model_dir).signatures["serve_image_bytes"]
    outputs = {"class_id": [], "class_name": []}
    for start in range(0, len(paths), batch_size):
        batch = [tf.io.gfile.GFile(p, "rb").read() for p in paths[start:start + batch_size]]
        result = serve(image_bytes=tf.constant(batch))
        outputs["class_id"].append(result["class_id"].numpy())
        outputs["class_name"].append([n.decode() for n in result["class_name"].numpy()])
    return {k: np.concatenate(v) for k, v in outputs.items()}


def tflite_top1(tflite_path: str, paths: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Top-1 class of a TFLite variant; images decoded and resized to its input size, as a client
    would, a batch at a time (memory does not grow with the folder)."""
    import tensorflow as tf
    from models.lite import LiteClassifier
    from models.preprocessing import decode_images
    with open(tflite_path, "rb") as f:
        classifier = LiteClassifier(f.read())
    spec = classifier.image_spec
    top1 = [np.zeros([0], np.int64)]
    for start in range(0, len(paths), batch_size):
        batch = [tf.io.gfile.GFile(p, "rb").read() for p in paths[start:start + batch_size]]
        top1.append(classifier.top1(decode_images(tf.constant(batch), spec).numpy()))
    return np.concatenate(top1)


def score(model_dir: str, folder: str) -> Dict[str, Any]:
    from models import features
    from models.labels import read_labels
    label_names = read_labels(os.path.join(model_dir, features.LABELS_FILENAME))
    files, skipped = labelled_files(folder, label_names)
    if not files:
        why = f"; {len(skipped)} file(s) not scored, first {skipped[0]['file']}: {skipped[0]['reason']}" if skipped else ""
        raise ValueError(f"no images under {folder}/<class>/{why}")
    paths, truth = [p for p, _ in files], np.array([n for _, n in files])
    saved = saved_model_predictions(model_dir, paths)
    result = {"images": len(paths), "saved_model_accuracy": float(np.mean(saved["class_name"] == truth)), "tflite": {},
              "skipped": skipped}
    for tflite_path in sorted(glob.glob(os.path.join(model_dir, "tflite", "*.tflite"))):
        lite = tflite_top1(tflite_path, paths)
        result["tflite"][os.path.basename(tflite_path)[:-len(".tflite")]] = {
            "accuracy": float(np.mean(np.array(label_names)[lite] == truth)),
            "agreement": float(np.mean(lite == saved["class_id"]))}
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.score", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a pushed version folder: serving/<model>/<version>")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test", help="sub-folder to score; '' for the data root itself")
    args = parser.parse_args(argv)
    folder = os.path.join(args.data_root, args.split) if args.split else args.data_root
    for path, what in ((args.model, "model folder"), (folder, "image folder")):
        if not os.path.isdir(path):
            hint = (f"; to score the class folders of {args.data_root!r} themselves, pass --split ''"
                    if path == folder and args.split and os.path.isdir(args.data_root) else "")
            print(f"error: {what} {path!r} does not exist{hint}", file=sys.stderr)
            return 2
    try:
        result = score(args.model, folder)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    if result["skipped"]:
        print(f"note: {len(result['skipped'])} file(s) not scored, each with its reason under \"skipped\"", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from pipeline.quiet import run_quietly
    run_quietly(main)
