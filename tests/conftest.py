"""Synthetic image folders for tests: the network is closed, so tests make their own data."""
import fcntl
import os
import pickle
import sys
from typing import Dict, Sequence

import numpy as np
import pytest
from PIL import Image

# TFX's Beam executors parse absl flags from sys.argv, where pytest's own options would be read
# (`-v` is absl's --verbosity). pytest has parsed them already; hide them from absl.
del sys.argv[1:]

# Class -> the colour its images are made of (with noise); learnable in a few epochs.
COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 60), "red": (220, 40, 30)}


def write_image(path: str, colour: Sequence[int], size: Sequence[int], seed: int) -> str:
    """An RGB image of the given colour plus noise; the format follows the file extension."""
    rng = np.random.default_rng(seed)
    height, width = size
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (height, width, 3)), 0, 255)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def make_class_folder(root: str, per_class: int, seed: int = 0, colours: Dict = None) -> Dict[str, list]:
    """<root>/<class>/img_<i>.png|jpg in mixed sizes; returns {class: [paths]}."""
    files = {}
    for class_index, (name, colour) in enumerate(sorted((colours or COLOURS).items())):
        files[name] = []
        for i in range(per_class):
            size = (20 + (7 * i) % 41, 24 + (11 * i) % 37)
            ext = ".jpg" if i % 3 == 0 else ".png"
            files[name].append(write_image(os.path.join(root, name, f"img_{i:03d}{ext}"), colour, size,
                                           seed=seed * 100003 + class_index * 1009 + i))
    return files


@pytest.fixture
def image_folder(tmp_path):
    """A flat class-per-folder tree of 3 RGB classes, 6 images each."""
    root = str(tmp_path / "images")
    make_class_folder(root, per_class=6)
    return root


# pytest-xdist hands whole files to the workers in collection order (pytest.ini: --dist loadfile
# --no-loadscope-reorder), so the longest file, the golden run and its scenarios, starts at once on one
# worker and the container run (its image build) on the other, then the overlapping runs (the next
# longest) on whichever frees first; the files that read the golden run come last, so they do not hold
# a worker waiting for it to be made.
FIRST_FILES = ("test_e2e.py", "test_kubeflow_containers.py", "test_overlapping_runs.py")
LAST_FILES = ("test_golden_artifacts.py",)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return (FIRST_FILES.index(name) if name in FIRST_FILES else len(FIRST_FILES) + (name in LAST_FILES))
    items.sort(key=rank)  # stable: within a rank, the collection order


class GoldenSession:
    """The golden run (tests/golden.py), made once per session and shared by pytest's workers: its
    workspace (snapshot "golden"), the run, and the odd-file zoo's expected outcomes. Only
    tests/test_e2e.py runs the pipeline or restores snapshots in the workspace (pytest.ini's
    --dist loadfile keeps that file on one worker); tests in other files only read the snapshot,
    which is never written once made (GoldenSession.frozen)."""

    def __init__(self, base: str):
        from tests.golden import Workspace, make_golden_data
        self.workspace = Workspace(base)
        made = os.path.join(base, "session.pickle")
        if os.path.exists(made):  # made by another worker
            with open(made, "rb") as f:
                self.zoo, self.run = pickle.load(f)
            return
        self.zoo = make_golden_data(self.workspace.data_root)
        self.run = self.workspace.run()
        self.workspace.snapshot("golden")
        with open(made, "wb") as f:
            pickle.dump((self.zoo, self.run), f)

    def frozen(self, path: str) -> str:
        """A path of the golden run (under its data or output folder) in the snapshot instead."""
        return self.workspace.in_snapshot("golden", path)


@pytest.fixture(scope="session")
def golden_session(tmp_path_factory):
    """Under pytest-xdist, in the folder the workers share, made by the first to ask while the other
    waits on the lock: the golden run is the suite's most expensive fixture."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return GoldenSession(str(tmp_path_factory.mktemp("golden")))
    base = tmp_path_factory.getbasetemp().parent / "golden"
    base.mkdir(exist_ok=True)
    with open(f"{base}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return GoldenSession(str(base))


