"""Fixtures the tests share (helpers.py has the plain functions), and the order pytest's workers take the files in."""
import fcntl
import os
import pickle
import sys

import numpy as np
import pytest

# TFX's Beam executors parse absl flags from sys.argv, where pytest's own options would be read
# (`-v` is absl's --verbosity). pytest has parsed them already; hide them from absl.
del sys.argv[1:]


@pytest.fixture
def image_folder(tmp_path):
    """A flat class-per-folder tree of 3 RGB classes, 6 images each."""
    from tests.helpers import make_class_folder  # TensorFlow, only for the tests that ask
    root = str(tmp_path / "images")
    make_class_folder(root, per_class=6)
    return root


# pytest-xdist hands whole files to the workers in collection order (pytest.ini: --dist loadfile
# --no-loadscope-reorder), and the next one to a worker when its current file has two tests left. So the
# longest file, the golden run and its scenarios, starts at once on one worker and the container run
# (its image build) on the other; then the next longest, the overlapping runs and the tests that read
# the golden run (made by then, the e2e file's first test); the short files last, so that the two
# workers end close together rather than one waiting on a long file alone.
FIRST_FILES = ("test_e2e.py", "test_kubeflow_containers.py", "test_overlapping_runs.py", "test_golden_artifacts.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return FIRST_FILES.index(name) if name in FIRST_FILES else len(FIRST_FILES)
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


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The small model of helpers.CONFIG, Transform graph and all, exported as the Trainer does:
    (export dir, the images as uint8 pixels at the model's size). Once per test module."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    import tf_keras as keras
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
    from models import export, features, preprocessing
    from models.model import build_classifier
    from tests.helpers import CONFIG, LABELS, SPEC, png
    tmp = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6,) + SPEC.shape, dtype=np.uint8)
    raw_spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
                features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}
    raw = [{features.IMAGE_KEY: [png(p)], features.LABEL_KEY: [i % 2]} for i, p in enumerate(pixels)]

    def fn(inputs):
        return preprocessing.preprocessing_fn(inputs, {"image": SPEC.to_config()})

    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(raw_spec))
    with tft_beam.Context(temp_dir=str(tmp / "tft-tmp"), force_tf_compat_v1=False):
        transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp / "transform"))
    metadata_io.write_metadata(metadata, str(tmp / "transform" / tft.TFTransformOutput.RAW_METADATA_DIR))
    keras.utils.set_random_seed(0)
    model = build_classifier(CONFIG)
    export.export_serving_model(model, tft.TFTransformOutput(str(tmp / "transform")), LABELS, SPEC,
                                str(tmp / "model"))
    return str(tmp / "model"), pixels
