"""Pipeline constants. Paths belong to the runners; everything here is a plain value."""

PIPELINE_NAME = "image-cnn"
MODEL_NAME = "image_cnn"

# Dotted paths of the user functions, resolved by Transform and Trainer inside the environment.
PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.run_fn.run_fn"

# Every setting's default lives in models/settings.py (PipelineSettings and the classes it holds); the
# runners' flags and presets override them.
CLASS_BALANCE_BASELINE = "class_balance_baseline.json"  # under the pipeline root: the last accepted counts
STATS_BATCH_SIZE = 64        # small: image bytes make large TFDV batches expensive

# Epochs of quantization-aware fine-tuning when --quantization-aware is given without a number.
QUANTIZATION_AWARE_EPOCHS = 2

# --preset NAME: values for flags the user leaves unset (flag dest -> value). bench/RESULTS.md
# has what they were measured to give. Why each one, for photos:
# - width 1.5: photos need more filters; this network runs far from the CPU's peak, so the extra
#   arithmetic costs much less time than its share; depth stays 1: a block per stage more does cost;
# - flip: a mirrored photo shows the same thing (unlike a mirrored digit);
# - test_time_flip: so the model answers for both, and their mean is right more often than either,
#   for twice the inference arithmetic, which the training budget does not pay;
# - crop_pad 4: CIFAR's usual augmentation, every image shifted up to 4 pixels; it replaces
#   shift-rotate, whose edge smearing and rotation add little to photos;
# - restarts 0: one cosine decay over the whole budget; with 15 epochs, restarts throw the rate back
#   up while a photo model is still far from converged;
# - min_tflite_agreement 0.99: a photo model's int8 file answers otherwise on 1-2 % of photos, which
#   is too many to push beside it; the float16 and dynamic-range files stay within 0.5 %;
# - epochs 27 at batch 64: more accurate than 15 at 32 on the full CIFAR-10 training split, the larger
#   batch running faster on both CPU kinds, and the most epochs issue H's 45 minutes leave room for;
# - weight_decay 0.05 (decoupled, AdamW): keeps the weights small, which a network with batch
#   normalization needs to keep learning late in the schedule;
# - min_accuracy 0.8: photos are harder than digits, and the digits' 0.9 would refuse a good photo
#   model; a run is still compared with its champion.
# photos-dense: the dense network and the CIFAR-10 speed records' recipe (docs/model.md), which keep a
# CPU's vector units busy (bench/network_efficiency.py): 4.4x the arithmetic per image at the residual
# network's images/s. Why each one:
# - architecture dense: whitening, dense 3x3 conv groups 64/128/128, a max-pool head;
# - optimizer sgd at learning rate 1.0 (Nesterov), linear schedule after a 2-epoch warm-up: the records'
#   recipe; on 12,000 photos over 8 epochs, peak 1.0 held out 0.770 against 0.762 at 0.4;
# - label_smoothing 0.2, weight_decay 0.005 (decoupled: 0.005 of each weight per step at the peak rate);
# - crop_pad 2 with pad_mode reflect, flip and test_time_flip: the records' augmentation and views;
# - validation_percent 0: a fixed schedule needs no early-stopping slice, so it trains on every photo;
# - epochs 12 at batch 512: what the whole run's 45 minutes leave room for at about 330 images/s.
PRESETS = {
    "photos": {"width": 1.5, "flip": True, "test_time_flip": True, "crop_pad": 4, "shift_rotate": False,
               "restarts": 0, "epochs": 27, "batch_size": 64, "weight_decay": 0.05, "min_accuracy": 0.8,
               "min_tflite_agreement": 0.99},
    "photos-dense": {"architecture": "dense", "optimizer": "sgd", "learning_rate": 1.0, "schedule": "linear",
                     "warmup_epochs": 2.0, "label_smoothing": 0.2, "weight_decay": 0.005, "flip": True,
                     "test_time_flip": True, "crop_pad": 2, "pad_mode": "reflect", "shift_rotate": False,
                     "validation_percent": 0, "epochs": 12, "batch_size": 512, "min_accuracy": 0.8,
                     "min_tflite_agreement": 0.99},
}

# The Beam engine, named outright: Beam 2.77's DirectRunner tries the Prism runner first, which
# downloads a binary at run time (a closed network makes it fall back; a cluster with internet access
# would run an engine never tested here). FnApiRunner is what DirectRunner falls back to for batch.
BEAM_RUNNER = "--runner=FnApiRunner"
BEAM_PIPELINE_ARGS = (BEAM_RUNNER, "--direct_running_mode=in_memory")
