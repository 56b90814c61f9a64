"""How an image folder is laid out: its splits, classes and files. Plain functions, no Beam, no TFX.

Layouts (as Keras' image_dataset_from_directory):
  <root>/train/<class>/**  plus  <root>/<test|eval|validation|val>/<class>/**   (pre-split)
  <root>/<class>/**        (split into train/eval by a hash of each file's path)

File policy: every file below the root is ingested, rejected with a reason, or ignored by a rule:
- ignored: names starting with "." (.DS_Store, ._*, .git/), OS metadata (Thumbs.db, desktop.ini,
  __MACOSX/), a folder with no files at all (not a class), a folder already read through a symlink;
- images in nested folders inside a class belong to that class;
- symlinks are followed only when their target stays inside the data root; others are rejected;
- files beside the class folders (outside any class) are rejected.
Class ids follow the order of the known classes (the schema's), then the new folders, sorted.
"""
import dataclasses
import hashlib
import os
from typing import Iterator, List, Optional, Sequence, Set, Tuple

import tensorflow as tf

TRAIN_DIR = "train"
EVAL_DIRS = ("test", "eval", "validation", "val")
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"
UNSPLIT = "all"  # input split name of a flat folder, before the hash split
OS_METADATA_NAMES = ("thumbs.db", "desktop.ini", "__macosx")

FILE, IGNORED, REJECTED = "file", "ignored", "rejected"


class ImageFolderError(ValueError):
    """A data folder the pipeline cannot use; the message names the path and the expected layout."""


_EXPECTED = ("expected <root>/<class>/<image files> or <root>/train/<class>/... with "
             "<root>/test/<class>/...")


@dataclasses.dataclass(frozen=True)
class Entry:
    """A file (or an ignored folder) found below the data root, before any image is read."""
    path: str
    kind: str          # FILE, IGNORED or REJECTED
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class FolderLayout:
    root: str
    splits: Tuple[Tuple[str, str], ...]   # (input split name, folder relative to root)
    class_names: Tuple[str, ...]          # label order: known classes first, then new ones sorted
    new_classes: Tuple[str, ...]          # class folders not among the known classes (if any are known)
    outside_classes: Tuple[Entry, ...]    # entries beside the class folders, relative to root

    @property
    def presplit(self) -> bool:
        return len(self.splits) > 1


def ignore_reason(name: str) -> str:
    """Why a file or folder name is skipped, or '' when it is read."""
    if name.startswith("."):
        return "hidden name (starts with '.')"
    if name.lower() in OS_METADATA_NAMES:
        return "operating-system metadata"
    return ""


def is_local(path: str) -> bool:
    return "://" not in path


def _symlink_rejection(path: str, root: str) -> str:
    """'' unless the symlink at path is broken or leaves the data root."""
    target = os.path.realpath(path)
    if not os.path.exists(target):
        return f"broken symlink (target {os.readlink(path)!r} does not exist)"
    real_root = os.path.realpath(root)
    if os.path.commonpath([target, real_root]) != real_root:
        return f"symlink to {target}, outside the data root (only links inside it are followed)"
    return ""


def _listing(folder: str) -> List[Tuple[str, bool, bool, bool]]:
    """(name, is folder, is symlink, is other: not a folder nor a regular file) of each entry, sorted;
    one directory read on local disks."""
    if is_local(folder):
        with os.scandir(folder) as scan:
            return sorted((e.name, e.is_dir(), e.is_symlink(), not (e.is_dir() or e.is_file())) for e in scan)
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(folder))
    return sorted((name, tf.io.gfile.isdir(os.path.join(folder, name)), False, False) for name in names)


def entries(folder: str, root: str) -> Tuple[List[str], List[str], List[Entry]]:
    """(sub-folders, files, skipped entries) of one folder, sorted; skipped are ignored or rejected."""
    dirs, files, skipped = [], [], []
    for name, is_dir, is_symlink, is_other in _listing(folder):
        path = os.path.join(folder, name)
        reason = ignore_reason(name)
        if reason:
            skipped.append(Entry(path, IGNORED, reason))
            continue
        reason = _symlink_rejection(path, root) if is_symlink else ""
        if not reason and is_other:
            reason = "not a regular file (a pipe, socket or device)"
        if reason:
            skipped.append(Entry(path, REJECTED, reason))
            continue
        (dirs if is_dir else files).append(name)
    return dirs, files, skipped


def walk(folder: str, root: str, _visited: Optional[Set[str]] = None) -> Iterator[Entry]:
    """Every entry below folder in sorted order: files to read, and what was skipped and why."""
    visited = set() if _visited is None else _visited
    if is_local(folder):
        real = os.path.realpath(folder)
        if real in visited:
            yield Entry(folder, IGNORED, f"folder already read as {real} (symlink)")
            return
        visited.add(real)
    dirs, files, skipped = entries(folder, root)
    yield from skipped
    for name in files:
        yield Entry(os.path.join(folder, name), FILE)
    for name in dirs:
        yield from walk(os.path.join(folder, name), root, visited)


def _content_digest(path: str) -> str:
    """sha256 of a file's bytes. Not its size and modification time: a file replaced with the same
    size and time (`cp -p`, `rsync -a`) would then leave a stale reuse."""
    digest = hashlib.sha256()
    try:
        with (open(path, "rb") if is_local(path) else tf.io.gfile.GFile(path, "rb")) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, tf.errors.OpError) as error:  # gone since the listing: ingest will say so
        return f"unreadable {type(error).__name__}\n"
    return digest.hexdigest() + "\n"


def tree_fingerprint(root: str) -> str:
    """Every entry below the root with the sha256 of its bytes, hashed. What a local run's reuse of
    ExampleGen's output is keyed on: an image added, removed or changed anywhere in the tree changes
    it, whatever its size and modification time; a file touched but unchanged does not."""
    digest, files = hashlib.sha256(), 0
    for entry in walk(root, root):
        digest.update(f"{os.path.relpath(entry.path, root)}\0{entry.kind}\0{entry.reason}\0".encode())
        if entry.kind == FILE:
            files += 1
            digest.update(_content_digest(entry.path).encode())
    return f"files:{files},sha256:{digest.hexdigest()}"


def has_files(folder: str, root: str) -> bool:
    """Whether folder exists and holds anything not ignored (stops at the first such entry)."""
    return tf.io.gfile.isdir(folder) and any(entry.kind != IGNORED for entry in walk(folder, root))


def class_order(known_classes: Sequence[str], folder_classes: Sequence[str]) -> Tuple[str, ...]:
    """Known classes keep their ids; classes new to them follow, sorted."""
    return tuple(known_classes) + tuple(sorted(set(folder_classes) - set(known_classes)))


def stray_files(folder: str, names: Sequence[str]) -> List[Entry]:
    """Files beside the class folders of folder: rejected, since no class folder names them."""
    return [Entry(os.path.join(folder, name), REJECTED, "file outside any class folder") for name in names]


def discover(root: str, known_classes: Sequence[str] = ()) -> FolderLayout:
    """Reads folder names (and what lies beside the class folders), never the images themselves."""
    if not tf.io.gfile.exists(root):
        raise ImageFolderError(f"data root {root!r} does not exist")
    if not tf.io.gfile.isdir(root):
        raise ImageFolderError(f"data root {root!r} is not a folder; {_EXPECTED}")
    top_dirs, top_files, outside = entries(root, root)
    outside = list(outside)
    eval_dirs = [d for d in top_dirs if d.lower() in EVAL_DIRS]
    train_dirs = [d for d in top_dirs if d.lower() == TRAIN_DIR]
    if train_dirs and eval_dirs:
        if len(eval_dirs) > 1:
            raise ImageFolderError(f"data root {root!r} has several evaluation folders {eval_dirs}; keep one")
        others = sorted(set(top_dirs) - {train_dirs[0], eval_dirs[0]})
        if others:
            raise ImageFolderError(f"data root {root!r} has folders {others} beside {train_dirs[0]}/ and "
                                   f"{eval_dirs[0]}/; move them into a split or out of the data root")
        splits = ((TRAIN_SPLIT, train_dirs[0]), (EVAL_SPLIT, eval_dirs[0]))
    else:
        splits = ((UNSPLIT, train_dirs[0] if train_dirs and top_dirs == train_dirs else ""),)
    outside += stray_files(root, top_files)
    class_dirs: List[str] = []
    for split_index, (_, split_dir) in enumerate(splits):
        split_path = os.path.join(root, split_dir)
        split_classes, split_files, skipped = entries(split_path, root) if split_dir else (top_dirs, [], [])
        outside += skipped + stray_files(split_path, split_files)
        for name in split_classes:
            if has_files(os.path.join(split_path, name), root):
                if split_index == 0:
                    class_dirs.append(name)
                elif name not in class_dirs:
                    raise ImageFolderError(
                        f"class folder {name!r} in {split_path} has no files in "
                        f"{os.path.join(root, splits[0][1], name)}; every class needs training images")
            else:
                outside.append(Entry(os.path.join(split_path, name), IGNORED, "folder without files (not a class)"))
    if len(class_dirs) < 2:
        raise ImageFolderError(f"data root {root!r} has {len(class_dirs)} class folder(s) with files "
                               f"under {splits[0][1] or '.'}/, at least 2 are needed; {_EXPECTED}")
    return FolderLayout(root=root, splits=splits, class_names=class_order(known_classes, class_dirs),
                        new_classes=tuple(sorted(set(class_dirs) - set(known_classes))) if known_classes else (),
                        outside_classes=tuple(sorted(outside, key=lambda e: e.path)))
