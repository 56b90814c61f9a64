"""How an image folder is laid out: its splits and classes. Plain functions, no Beam, no TFX.

Supported layouts (as Keras' image_dataset_from_directory):
  <root>/train/<class>/**/<image>  plus  <root>/<test|eval|validation|val>/<class>/**/<image>
  <root>/<class>/**/<image>        (split into train/eval by a hash of the file path)
Names starting with "." are ignored (.DS_Store, .git, ...). Class ids follow sorted folder names.
"""
import dataclasses
import os
from typing import Iterator, List, Tuple

import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TRAIN_DIR = "train"
EVAL_DIRS = ("test", "eval", "validation", "val")
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"
UNSPLIT = "all"  # input split name of a flat folder, before the hash split


class ImageFolderError(ValueError):
    """A data folder the pipeline cannot use; the message names the path and the expected layout."""


_EXPECTED = ("expected <root>/<class>/<image files> or <root>/train/<class>/... with "
             "<root>/test/<class>/...")


@dataclasses.dataclass(frozen=True)
class FolderLayout:
    root: str
    splits: Tuple[Tuple[str, str], ...]   # (input split name, folder relative to root)
    class_names: Tuple[str, ...]
    stray_files: Tuple[str, ...]          # files outside any class folder, relative to root

    @property
    def presplit(self) -> bool:
        return len(self.splits) > 1


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _entries(folder: str) -> Tuple[List[str], List[str]]:
    """(sub-folders, files) of a folder, hidden names left out, sorted."""
    dirs, files = [], []
    for name in sorted(tf.io.gfile.listdir(folder)):
        name = name.rstrip("/")
        if is_hidden(name):
            continue
        (dirs if tf.io.gfile.isdir(os.path.join(folder, name)) else files).append(name)
    return dirs, files


def walk_files(folder: str) -> Iterator[str]:
    """Every non-hidden file below folder, in sorted order, hidden folders skipped."""
    dirs, files = _entries(folder)
    for name in files:
        yield os.path.join(folder, name)
    for name in dirs:
        yield from walk_files(os.path.join(folder, name))


def _has_any_file(folder: str) -> bool:
    return next(walk_files(folder), None) is not None


def discover(root: str) -> FolderLayout:
    """Reads only folder names (and top-level files), never the images themselves."""
    if not tf.io.gfile.exists(root):
        raise ImageFolderError(f"data root {root!r} does not exist")
    if not tf.io.gfile.isdir(root):
        raise ImageFolderError(f"data root {root!r} is not a folder; {_EXPECTED}")
    top_dirs, top_files = _entries(root)
    eval_dirs = [d for d in top_dirs if d.lower() in EVAL_DIRS]
    train_dirs = [d for d in top_dirs if d.lower() == TRAIN_DIR]
    stray = list(top_files)
    if train_dirs and eval_dirs:
        if len(eval_dirs) > 1:
            raise ImageFolderError(f"data root {root!r} has several evaluation folders {eval_dirs}; keep one")
        others = sorted(set(top_dirs) - {train_dirs[0], eval_dirs[0]})
        if others:
            raise ImageFolderError(f"data root {root!r} has folders {others} beside {train_dirs[0]}/ and "
                                   f"{eval_dirs[0]}/; move them into a split or out of the data root")
        splits = ((TRAIN_SPLIT, train_dirs[0]), (EVAL_SPLIT, eval_dirs[0]))
        class_root = train_dirs[0]
    else:
        splits = ((UNSPLIT, train_dirs[0] if train_dirs and top_dirs == train_dirs else ""),)
        class_root = splits[0][1]
    class_dirs, class_root_files = _entries(os.path.join(root, class_root)) if class_root else (top_dirs, [])
    stray += [os.path.join(class_root, f) for f in class_root_files]
    if len(class_dirs) < 2:
        raise ImageFolderError(f"data root {root!r} has {len(class_dirs)} class folder(s) "
                               f"under {class_root or '.'}/, at least 2 are needed; {_EXPECTED}")
    for split_name, split_dir in splits:
        split_classes, split_files = _entries(os.path.join(root, split_dir))
        stray += [os.path.join(split_dir, f) for f in split_files if split_dir != class_root]
        unknown = sorted(set(split_classes) - set(class_dirs))
        if unknown:
            raise ImageFolderError(f"class folder(s) {unknown} in {os.path.join(root, split_dir)} have no "
                                   f"folder in {os.path.join(root, class_root)}; every class needs training images")
    for class_name in class_dirs:
        if not _has_any_file(os.path.join(root, class_root, class_name)):
            raise ImageFolderError(f"class {class_name!r} has no files in {os.path.join(root, class_root, class_name)}")
    return FolderLayout(root=root, splits=splits, class_names=tuple(class_dirs),
                        stray_files=tuple(sorted(set(stray))))
