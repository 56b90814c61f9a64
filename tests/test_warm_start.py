"""--warm-start's weight loading (models/warm_start.py) on small networks exported as the Trainer
exports them: a SavedModel of the Keras model with more attached, labels.txt, model.json and the
promotion record. The pipeline's own warm-started run is a scenario of tests/test_e2e.py."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.labels import write_labels
from models.model import ModelConfig, build_classifier, write_facts
from models.warm_start import start_from_champion

SMALL = ModelConfig(input_shape=(12, 12, 1), num_classes=3, stem_filters=8, stage_filters=(8, 16),
                    stage_strides=(1, 2))
LABELS = ["a", "b", "c"]


def _compiled(config: ModelConfig, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_classifier(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _fit(model: keras.Model, steps: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8 * steps,) + model.input_shape[1:]).astype(np.float32)
    model.fit(images, rng.integers(0, 3, 8 * steps), batch_size=8, epochs=1, verbose=0)


def _export_champion(folder, config: ModelConfig = SMALL, labels=LABELS, facts_config=None, version=4) -> list:
    """A trained model exported as models.export does (extra objects attached to the model), with what
    the Trainer and the Pusher write beside it; returns the network's weights."""
    model = _compiled(config, seed=1)
    _fit(model, steps=5)
    weights = model.get_weights()
    model.label_names = tf.Variable(labels, trainable=False, name="label_names")
    tf.saved_model.save(model, str(folder))
    write_labels(os.path.join(folder, "labels.txt"), labels)
    write_facts(model, facts_config or config, str(folder))
    with open(os.path.join(folder, "promotion.json"), "w") as f:
        json.dump({"version": version}, f)
    return weights


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """(the exported champion's folder, its weights), made once: saving a SavedModel takes seconds."""
    folder = tmp_path_factory.mktemp("champion")
    return str(folder), _export_champion(folder)


def _weights_equal(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_matching_champion_gives_every_weight_and_a_fresh_optimizer(champion):
    folder, weights = champion
    model = _compiled(SMALL, seed=2)
    assert not _weights_equal(model.get_weights(), weights)
    started = start_from_champion(model, SMALL, LABELS, folder)
    assert started == {"champion_version": 4, "champion_dir": folder}
    assert _weights_equal(model.get_weights(), weights)  # batch-norm statistics included
    _fit(model, steps=1)
    # the champion's optimizer took 5 steps; this one starts at 0, so its warm-up is not skipped
    assert int(model.optimizer.iterations) == 1


@pytest.mark.parametrize("change, expected", [
    ({"width": 2.0}, "network differs from this run's in width (1.0 there, 2.0 here)"),
    ({"attention": "cbam"}, "in attention ('se' there, 'cbam' here)"),
    ({"input_shape": (16, 16, 1)}, "in input_shape ([12, 12, 1] there, [16, 16, 1] here)"),
])
def test_another_network_starts_from_scratch_and_says_where_it_differs(champion, change, expected):
    config = ModelConfig(**{**SMALL.__dict__, **change})
    model = _compiled(config, seed=2)
    before = model.get_weights()
    started = start_from_champion(model, config, LABELS, champion[0])
    assert started["champion_version"] is None and expected in started["reason"]
    assert _weights_equal(model.get_weights(), before)


def test_other_classes_no_champion_or_no_model_facts_start_from_scratch(champion, tmp_path):
    model = _compiled(SMALL, seed=2)
    before = model.get_weights()
    reasons = [start_from_champion(model, SMALL, ["a", "b", "d"], champion[0])["reason"],
               start_from_champion(model, SMALL, LABELS, str(tmp_path / "missing"))["reason"]]
    shutil.copytree(champion[0], tmp_path / "champion")
    os.remove(tmp_path / "champion" / "model.json")
    reasons.append(start_from_champion(model, SMALL, LABELS, str(tmp_path / "champion"))["reason"])
    assert reasons == ["the champion's classes ['a', 'b', 'c'] differ from this run's ['a', 'b', 'd']",
                       "there is no champion yet",
                       "the champion has no model.json (it was exported before warm starts), so its network is "
                       "unknown"]
    assert _weights_equal(model.get_weights(), before)


def test_weights_that_do_not_fit_leave_the_model_untouched(tmp_path):
    """model.json says SMALL, but the saved network is wider (as after an edit of the architecture's
    code that kept its config): the restore fails, and no weight has changed."""
    _export_champion(tmp_path / "champion", config=ModelConfig(**{**SMALL.__dict__, "width": 2.0}),
                     facts_config=SMALL)
    model = _compiled(SMALL, seed=2)
    before = model.get_weights()
    started = start_from_champion(model, SMALL, LABELS, str(tmp_path / "champion"))
    assert started["champion_version"] is None
    assert started["reason"].startswith("the champion's weights do not fit this network")
    assert _weights_equal(model.get_weights(), before)


def test_the_version_is_read_from_the_record_the_pusher_writes(tmp_path):
    """The champion's version comes from the promotion record that publishing wrote into it."""
    from models import promotion
    from models import warm_start
    serving = str(tmp_path / "serving")

    def write(folder):
        os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, "saved_model.pb"), "w").close()
    versions = [promotion.publish(serving, write, {"action": "blessed"}) for _ in range(2)]
    assert len(set(versions)) == 2
    for version in versions:
        assert warm_start.champion_version(promotion.version_dir(serving, version)) == version
    assert warm_start.champion_version(str(tmp_path)) is None


def test_the_progress_line_says_what_training_started_from():
    from components.trainer import started_from_text
    assert started_from_text({"champion_version": 7, "champion_dir": "/c"}) == "warm-started from the champion, version 7"
    assert started_from_text({"champion_version": None, "champion_dir": "/c"}) == "warm-started from the champion"
    assert started_from_text({"champion_version": None, "reason": "there is no champion yet"}) == (
        "trained from scratch (--warm-start: there is no champion yet)")
