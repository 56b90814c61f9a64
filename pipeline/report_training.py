"""The run report's training section: loss and accuracy per epoch, the learning-rate schedule, and what
the Trainer reported (parameters, throughput, where training started)."""
import glob
import os
from typing import Any, Dict

from models import files


def epoch_scalars(log_dir: str) -> Dict[str, Dict[int, float]]:
    """{tag: {epoch: value}} of the TensorBoard event files in log_dir (Keras writes epoch_*)."""
    import tensorflow as tf
    scalars: Dict[str, Dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("epoch_"):
                    number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                    scalars.setdefault(value.tag, {})[int(event.step)] = number
    return scalars


def training_section(page, summary: Dict[str, Any]) -> None:
    import matplotlib.pyplot as plt
    from models.model import read_facts
    from models.run_fn import LEARNING_RATE_FILENAME, THROUGHPUT_FILENAME
    model_run = summary.get("artifacts", {}).get("model_run")
    if not model_run:
        page.add("training", "Training", "<p>The Trainer did not run.</p>")
        return
    train, validation = epoch_scalars(os.path.join(model_run, "train")), epoch_scalars(os.path.join(model_run, "validation"))
    body = []
    metrics = [tag for tag in ("epoch_loss", "epoch_accuracy") if tag in train]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.6), squeeze=False)
        for axis, tag in zip(axes[0], metrics):
            for name, scalars in (("train", train), ("validation", validation)):
                if tag in scalars:
                    epochs = sorted(scalars[tag])
                    axis.plot([e + 1 for e in epochs], [scalars[tag][e] for e in epochs], marker="o", label=name)
            axis.set_xlabel("epoch")
            axis.set_title(tag[len("epoch_"):])
            axis.legend()
            axis.grid(alpha=.3)
        body.append(page.figure("training_curves", fig, "loss and accuracy per epoch"))
    schedule_path = os.path.join(model_run, LEARNING_RATE_FILENAME)
    schedule = files.read_json_if_exists(schedule_path)  # every step's rate, as the Trainer's schedule gives it
    if schedule:
        rates = schedule["learning_rate"]
        fig, axis = plt.subplots(figsize=(5.5, 3))
        axis.plot([step / schedule["steps_per_epoch"] for step in range(len(rates))], rates)
        axis.set_title("learning-rate schedule (every step)")
        axis.set_xlabel("epoch")
        axis.grid(alpha=.3)
        body.append(page.figure("learning_rate", fig, "learning-rate schedule"))
    throughput_path = os.path.join(model_run, THROUGHPUT_FILENAME)
    facts = ["Trainer: cached, this run reused the model an earlier run trained"
             if "Trainer" in (summary.get("cached_stages") or ())
             else f"Trainer wall time: {summary.get('stage_seconds', {}).get('Trainer', 0):.1f} s"]
    model = read_facts(model_run)
    if model:
        config = model["config"]
        network = (f"{config['architecture']} network, width {config['width']:g}, depth {config['depth']}"
                   if config.get("backbone", "none") == "none" else
                   f"{config['backbone']} backbone with {model['backbone_weights']} weights, then "
                   f"{model['fine_tune_epochs']} fine-tuning epochs")
        facts.append(f"{network}: {model['parameters']:,} parameters")
        if "started_from" in model:
            from components.trainer import started_from_text
            facts.append(started_from_text(model["started_from"]))
    epochs = files.read_json_if_exists(throughput_path)
    if epochs:
        from components.trainer import steady_images_per_s
        facts.append(f"{len(epochs)} epochs; {steady_images_per_s(epochs):.0f} images/s (median epoch after the first)")
    body.append("<p>" + "; ".join(facts) + ".</p>")
    page.add("training", "Training", "\n".join(body))


# --- evaluation ----------------------------------------------------------------------------------
