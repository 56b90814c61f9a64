"""The shared flags (pipeline/flags.py): presets, the flags that override them, and refusals."""
import dataclasses
import os

import pytest

from pipeline.kubeflow import compile as kfp_compile
from models.settings import DataOptions, LiteBounds, PipelineSettings, Thresholds
from pipeline import configs, flags, local_runner


def _settings(*argv: str):
    return flags.pipeline_settings(local_runner.parse_args(list(argv)))


def test_the_photos_preset_sets_the_records_network_and_recipe_it_documents():
    settings = _settings("--preset", "photos", "--image-size", "32", "32", "--channels", "3")
    training = settings.training
    assert (settings.model.architecture, settings.model.group_filters) == ("dense", (64, 128, 128))
    assert settings.model.transform_options() == {"whitening_patch": 2}
    assert (training.optimizer, training.schedule, training.learning_rate, training.label_smoothing) == (
        "sgd", "linear", 1.5, 0.2)
    assert (training.momentum, training.bias_lr_scale, training.lookahead, settings.model.bn_momentum) == (
        0.85, 64.0, True, 0.6)
    assert (training.crop_pad, training.pad_mode, training.flip, training.test_time_flip) == (2, "reflect", True, True)
    assert (training.alternating_flip, training.test_time_shift, training.precision) == (True, 0, "auto")
    assert (training.shift_rotate, training.validation_percent, training.epochs, training.batch_size) == (
        False, 0, 16, 1024)
    assert (settings.lite.min_agreement, settings.thresholds.min_accuracy, settings.model.weight_decay) == (
        0.99, 0.8, 0.0089)
    assert settings.data.eval_percent == 10 and _settings().data.eval_percent == DataOptions().eval_percent
    assert _settings().lite.min_agreement == LiteBounds().min_agreement
    assert _settings().thresholds.min_accuracy == Thresholds().min_accuracy
    assert _settings("--preset", "photos", "--min-accuracy", "0.5").thresholds.min_accuracy == 0.5
    assert _settings("--preset", "photos", "--architecture", "residual").model.transform_options() == {}
    assert settings.image.shape == (32, 32, 3)


def test_the_photos_wide_preset_is_photos_with_airbench94s_groups_for_fewer_epochs():
    photos, wide = (_settings("--preset", preset, "--image-size", "32", "32", "--channels", "3")
                    for preset in ("photos", "photos-wide"))
    assert (wide.model.group_filters, wide.training.epochs, wide.training.warmup_epochs) == ((64, 256, 256), 14, 3.2)
    assert dataclasses.replace(wide.training, epochs=16, warmup_epochs=3.7) == photos.training
    assert dataclasses.replace(wide.model, group_filters=(64, 128, 128)) == photos.model
    assert _settings("--preset", "photos-wide", "--group-filters", "32", "64", "64").model.group_filters == (32, 64, 64)


def test_photos_wide_on_a_cpu_without_bfloat16_says_it_trains_in_float32_for_longer(tmp_path):
    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    without.write_text("flags\t\t: fpu avx2 fma\n")
    note = local_runner.preset_note("photos-wide", "auto", str(without))
    assert note.startswith("note: --preset photos-wide is sized for 45 minutes on a CPU with bfloat16; this CPU has "
                           "no bfloat16, so it trains in float32")
    assert "--precision float32" in local_runner.preset_note("photos-wide", "float32", str(with_bf16))
    assert local_runner.preset_note("photos-wide", "auto", str(with_bf16)) is None
    assert local_runner.preset_note("photos", "auto", str(without)) is None
    assert local_runner.preset_note(None, "auto", str(without)) is None


def test_the_photos_residual_preset_keeps_the_residual_network_tuned_for_photos():
    settings = _settings("--preset", "photos-residual", "--image-size", "32", "32", "--channels", "3")
    model, training = settings.model, settings.training
    assert (model.architecture, model.width, model.depth, model.weight_decay) == ("residual", 1.5, 1, 0.05)
    assert (training.flip, training.crop_pad, training.shift_rotate, training.restarts) == (True, 4, False, 0)
    assert (training.epochs, training.batch_size, training.optimizer) == (27, 64, "adam")


def test_both_runners_take_the_presets_accuracy_floor_where_they_read_it_themselves():
    from pipeline import kubeflow_runner
    # local_runner records it in last_run.json; kubeflow_runner makes it the run parameter's default
    assert _settings("--preset", "photos").thresholds.min_accuracy == 0.8
    assert _settings().thresholds.min_accuracy == Thresholds().min_accuracy
    compile_argv = ["compile", "--output", "pipeline.yaml"]
    assert kfp_compile.run_parameter_defaults(kubeflow_runner.parse_args(
        [*compile_argv, "--preset", "photos", "--image-size", "32", "32", "--channels", "3"]))["min_accuracy"] == 0.8
    assert kfp_compile.run_parameter_defaults(kubeflow_runner.parse_args(compile_argv))["min_accuracy"] == \
        Thresholds().min_accuracy


@pytest.mark.parametrize("order", ["preset first", "preset last"])
def test_a_flag_the_user_gives_wins_over_the_preset_wherever_it_stands(order):
    given = ["--no-flip", "--width", "2", "--crop-pad", "0", "--restarts", "1"]
    argv = ["--preset", "photos", *given] if order == "preset first" else [*given, "--preset", "photos"]
    settings = _settings(*argv)
    assert (settings.model.width, settings.training.flip) == (2.0, False)
    assert (settings.training.crop_pad, settings.training.restarts) == (0, 1)
    assert settings.training.shift_rotate is False  # not given: still the preset's
    assert settings.training.test_time_flip is False  # the preset's, but for the mirrors --no-flip refused
    assert settings.training.alternating_flip is False  # likewise
    recipe = _settings(*argv, "--ema", "0.99", "--optimizer", "adam").training
    assert (recipe.ema, recipe.lookahead, recipe.optimizer, recipe.bias_lr_scale) == (0.99, False, "adam", 1.0)


def test_test_time_shift_needs_crop_pad_training_as_far(tmp_path, capsys):
    assert _settings("--crop-pad", "2", "--test-time-shift", "2").training.test_time_shift == 2
    assert local_runner.main(["--output-dir", str(tmp_path), "--crop-pad", "1", "--test-time-shift", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: test_time_shift needs crop_pad of at least 2, got 1: a model not trained on images shifted so far "
        "has not learnt them")


def test_test_time_flip_needs_the_model_trained_on_mirror_images(tmp_path, capsys):
    assert _settings("--flip", "--test-time-flip").training.test_time_flip is True
    assert _settings("--preset", "photos", "--no-test-time-flip").training.test_time_flip is False
    assert local_runner.main(["--output-dir", str(tmp_path), "--test-time-flip"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: test_time_flip needs flip: a model not trained on mirror images has not learnt them")


def test_without_a_preset_every_new_flag_keeps_the_configs_default():
    from models.model import ModelConfig
    from models.recipe import TrainingConfig
    settings = _settings()
    assert settings.model == ModelConfig() and settings.training == TrainingConfig()
    settings = _settings("--depth", "3", "--flip", "--no-shift-rotate", "--crop-pad", "2")
    assert settings.model.depth == 3
    assert (settings.training.flip, settings.training.shift_rotate, settings.training.crop_pad) == (True, False, 2)


def test_the_validation_slice_is_a_flag_and_zero_trains_on_every_training_image(tmp_path, capsys):
    from models.recipe import TrainingConfig
    assert _settings().training.validation_percent == TrainingConfig().validation_percent
    assert _settings("--validation-percent", "0").training.validation_percent == 0
    assert _settings("--preset", "photos", "--validation-percent", "5").training.validation_percent == 5
    assert local_runner.main(["--output-dir", str(tmp_path), "--validation-percent", "60"]) == 2
    assert capsys.readouterr().err.strip() == "error: validation_percent must be from 0 to 50, got 60"


@pytest.mark.parametrize("argv, message", [
    (["--validation-percent", "-1"], "argument --validation-percent: must be >= 0, got -1"),
    (["--width", "0"], "argument --width: must be > 0, got 0"),
    (["--depth", "0"], "argument --depth: must be >= 1, got 0"),
    (["--crop-pad", "-1"], "argument --crop-pad: must be >= 0, got -1"),
    (["--preset", "sketches"], "argument --preset: invalid choice: 'sketches'"),
])
def test_a_flag_value_out_of_range_is_refused_by_name(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        local_runner.parse_args(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_width_the_model_refuses_stops_the_run_before_anything_runs(tmp_path, capsys):
    assert local_runner.main(["--output-dir", str(tmp_path), "--width", "20"]) == 2
    assert capsys.readouterr().err.strip() == "error: width must be in (0, 16], got 20.0"
    assert not (tmp_path / "metadata.sqlite").exists()


def test_a_refused_flag_leaves_no_schema_behind_in_the_users_output(tmp_path, capsys):
    from PIL import Image
    for name in ("cat", "dog"):  # the user's own folder: its schema would be created from its classes
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "photos" / name / "a.png")
    out = tmp_path / "out"
    assert local_runner.main(["--data-root", str(tmp_path / "photos"), "--output-dir", str(out), "--width", "20"]) == 2
    assert capsys.readouterr().err.strip() == "error: width must be in (0, 16], got 20.0"
    assert not (out / "schema.pbtxt").exists()


def test_tflite_names_the_files_to_make_float32_always_among_them_and_an_unknown_one_stops_the_run(
        tmp_path, capsys):
    assert _settings().lite.variants == ("float32", "dynamic_range", "float16", "int8")
    assert _settings("--tflite", "int8").lite.variants == ("float32", "int8")
    assert _settings("--tflite", "float16", "float32").lite.variants == ("float32", "float16")
    assert local_runner.main(["--output-dir", str(tmp_path), "--tflite", "int4"]) == 2
    assert capsys.readouterr().err.strip() == ("error: unknown TFLite variant(s) ['int4']: choose from "
                                               "['float32', 'dynamic_range', 'float16', 'int8']")
    assert not (tmp_path / "metadata.sqlite").exists()


def test_quantization_aware_takes_its_epochs_or_the_default_and_needs_the_int8_file(tmp_path, capsys):
    assert _settings().training.quantization_aware_epochs == 0
    assert _settings("--quantization-aware").training.quantization_aware_epochs == configs.QUANTIZATION_AWARE_EPOCHS
    assert _settings("--quantization-aware", "3", "--epochs", "5").training.quantization_aware_epochs == 3
    assert local_runner.main(["--output-dir", str(tmp_path), "--quantization-aware", "--tflite", "float16"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --quantization-aware fine-tunes for the int8 TFLite file: add int8 to --tflite")
    assert not (tmp_path / "metadata.sqlite").exists()


def test_backbone_flags_reach_the_configs_and_what_cannot_work_stops_the_run_naming_it(tmp_path, capsys):
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"")
    settings = _settings("--backbone", "mobilenet_v2", "--image-size", "96", "96", "--backbone-weights", str(weights),
                         "--fine-tune-epochs", "2")
    assert settings.model.backbone == "mobilenet_v2"
    assert (settings.training.backbone_weights, settings.training.fine_tune_epochs) == (str(weights), 2)
    assert _settings().model.backbone == "none"
    for argv, message in [
            (["--backbone", "mobilenet_v2"], "--backbone mobilenet_v2 needs images of at least 32x32, got 28x28"),
            (["--backbone-weights", str(weights)], "--backbone-weights and --fine-tune-epochs need --backbone"),
            (["--backbone", "efficientnet_b0", "--image-size", "32", "32", "--backbone-weights", "missing.h5"],
             f"--backbone-weights {os.path.abspath('missing.h5')}: no such file"),
            (["--backbone", "efficientnet_b0", "--image-size", "32", "32", "--quantization-aware", "--tflite", "int8"],
             "--quantization-aware works on the custom CNN only")]:
        assert local_runner.main(["--output-dir", str(tmp_path), *argv]) == 2
        assert capsys.readouterr().err.strip().startswith(f"error: {message}")
    assert not (tmp_path / "metadata.sqlite").exists()


def test_without_a_flag_or_preset_every_setting_keeps_its_classes_default():
    assert _settings() == PipelineSettings()
    assert (Thresholds(), LiteBounds(), DataOptions()) == (Thresholds(0.9, 0.01, 0.0), LiteBounds(0.01, 0.98),
                                                          DataOptions(20, 25_000_000, 0.05, False))


# A value for every flag of add_pipeline_flags, none of them its default: each must reach the settings.
NOT_DEFAULT = {"image_size": [32, 32], "channels": 3, "epochs": 3, "batch_size": 16, "learning_rate": 0.01,
               "restarts": 1, "shift_rotate": False, "flip": True, "test_time_flip": True, "test_time_shift": 1,
               "crop_pad": 2, "validation_percent": 5, "warm_start": True, "quantization_aware": 1, "profile": True,
               "architecture": "classic", "attention": "cbam", "width": 1.5, "depth": 2, "backbone": "none",
               "backbone_weights": "none", "fine_tune_epochs": 5, "weight_decay": 0.1, "weight_decay_mode": "l2",
               "eval_percent": 10, "strict": True, "retrain_always": True, "max_class_drift": 0.2,
               "max_image_pixels": 1000, "min_accuracy": 0.7, "max_accuracy_drop": 0.05, "min_class_accuracy": 0.3,
               "max_tflite_accuracy_drop": 0.02, "tflite": ["int8"], "min_tflite_agreement": 0.95,
               "optimizer": "sgd", "schedule": "linear", "warmup_epochs": 2.0, "label_smoothing": 0.2, "ema": 0.99,
               "pad_mode": "reflect", "momentum": 0.85, "bias_lr_scale": 64.0, "lookahead": True,
               "alternating_flip": True, "bn_momentum": 0.6, "precision": "auto",
               "group_filters": [32, 64]}
AT_DEFAULT = {"backbone", "backbone_weights", "fine_tune_epochs"}  # only a backbone could change them
EXCLUSIVE = {"ema": "lookahead"}  # two flags that cannot be set together: the first is checked apart


def test_every_flag_a_preset_sets_reaches_the_settings(monkeypatch):
    """A preset key that does not reach PipelineSettings would be ignored silently: every flag of
    add_pipeline_flags is set by a preset here, and each must change the settings it feeds."""
    import argparse
    monkeypatch.setitem(configs.PRESETS, "everything", {k: v for k, v in NOT_DEFAULT.items() if k not in EXCLUSIVE})
    monkeypatch.setitem(configs.PRESETS, "exclusive", {k: NOT_DEFAULT[k] for k in EXCLUSIVE})
    parser = argparse.ArgumentParser()
    flags.add_pipeline_flags(parser)
    unset = vars(parser.parse_args([]))
    assert {name for name, value in unset.items() if value is not None} == set(), "no argparse defaults"
    assert set(NOT_DEFAULT) == set(unset) - {"preset"}, "a new flag needs a value here"
    assert set(flags.FLAG_FIELDS) | {"image_size"} == set(NOT_DEFAULT)
    settings, exclusive = (flags.pipeline_settings(flags.with_preset(parser.parse_args(["--preset", preset])))
                           for preset in ("everything", "exclusive"))
    default = PipelineSettings()
    for flag, (part, field) in flags.FLAG_FIELDS.items():
        value, before = (getattr(getattr(s, part) if part else s, field)
                         for s in (exclusive if flag in EXCLUSIVE else settings, default))
        assert (value == before) is (flag in AT_DEFAULT), (flag, value)
    assert settings.image.shape == (32, 32, 3)
