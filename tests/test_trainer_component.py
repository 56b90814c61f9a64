"""The Trainer component: its epochs parameter and the training speed it reports."""
import pytest

from components.trainer import check_epochs, steady_images_per_s


@pytest.mark.parametrize("epochs", [0, 2.5, -3])
def test_epochs_must_be_a_whole_number_from_one(epochs):
    with pytest.raises(ValueError, match="epochs must be a whole number >= 1"):
        check_epochs(epochs)
    check_epochs(15)


def test_training_speed_is_the_median_epoch_after_the_first():
    epochs = [{"images_per_s": 100.0}, {"images_per_s": 500.0}, {"images_per_s": 520.0}, {"images_per_s": 480.0}]
    assert steady_images_per_s(epochs) == 500.0
    assert steady_images_per_s(epochs[:1]) == 100.0


def test_the_progress_line_names_the_quantization_aware_fine_tuning(tmp_path):
    import json
    from components.trainer import training_figure
    with open(tmp_path / "model.json", "w") as f:
        json.dump({"parameters": 71794, "config": {}, "quantization_aware_epochs": 2}, f)
    with open(tmp_path / "throughput.json", "w") as f:  # the float training's epochs only
        json.dump([{"images_per_s": 100.0}, {"images_per_s": 900.0}], f)
    assert training_figure(str(tmp_path)) == "71,794 parameters, 2 epochs, 900 images/s, then 2 quantization-aware epochs"
