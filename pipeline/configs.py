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

# --preset NAME: values for flags the user leaves unset (flag dest -> value). bench/RESULTS.md has what
# they were measured to give.
#
# photos: the dense network with the CIFAR-10 speed records' recipe (docs/model.md). Dense 3x3
# convolutions keep a CPU's vector units busy (bench/network_efficiency.py): 4.4x the arithmetic per
# image at the residual network's images/s; on CIFAR-10 it is more accurate than photos-residual in
# less time (bench/RESULTS.md). Why each value:
# - architecture dense: whitening the Transform step computes, dense 3x3 conv groups 64/128/128, max-pool head;
# - the records' optimizer (airbench93's hyperparameters in Keras' terms): Nesterov SGD, momentum 0.85,
#   learning rate 1.5 for the mean loss of a batch of 1024, decoupled weight decay 0.0089 (0.0089 x the
#   rate of each weight per step: what their coupled decay comes to), BatchNorm offsets' steps x 64,
#   BatchNorm momentum 0.6, a warm-up over the first 23 % of training then a straight line down to 0.07,
#   label smoothing 0.2, Lookahead;
# - crop_pad 2 with pad_mode reflect, alternating flips and test_time_flip: the records' augmentation and
#   views; a mirrored photo shows the same thing (unlike a mirrored digit); shift_rotate off. No
#   test-time shifts: they would score every photo ten times in the Evaluator and in each TFLite file;
# - validation_percent 0: a fixed schedule needs no early-stopping slice, so it trains on every photo;
# - eval_percent 10: a folder of class folders alone (no train/ and test/) gives 90 % to training, not
#   the default 80 %: of CIFAR-10's 50,000, 45,000 to learn from (as bench/photos.py measures) and
#   5,000 for the Evaluator, enough to judge a point of accuracy;
# - epochs 16, the warm-up over the first 3.7 of them: the whole run on the 50,000 within 45 minutes in
#   float32 on the slowest CPU kind (AVX2, no bfloat16), with a tenth to spare; precision auto: where the
#   CPU has bfloat16 it trains as accurately in less time;
# - min_tflite_agreement 0.99: a photo model's int8 file answers otherwise on 1-2 % of photos, too many to
#   push it beside the model; the float16 and dynamic-range files stay within 0.5 %;
# - min_accuracy 0.8: photos are harder than digits; a run is still compared with its champion.
#
# photos-wide: photos with airbench94's wider groups (64/256/256: 2.2x the arithmetic per image), for a
# CPU with bfloat16 (AVX-512 BF16 or AMX), where 14 epochs of it fit in 45 minutes and are more accurate
# than photos' 16. In float32 it takes about twice as long.
#
# photos-residual: the default residual network tuned for photos before the dense one: width 1.5, crop_pad 4, one cosine decay (restarts 0), 27 epochs at batch 64, AdamW
# with weight decay 0.05.
_PHOTOS = {"architecture": "dense", "optimizer": "sgd", "learning_rate": 1.5, "momentum": 0.85,
           "weight_decay": 0.0089, "bias_lr_scale": 64.0, "bn_momentum": 0.6, "schedule": "linear",
           "warmup_epochs": 3.7, "label_smoothing": 0.2, "lookahead": True, "flip": True,
           "alternating_flip": True, "test_time_flip": True, "crop_pad": 2, "pad_mode": "reflect",
           "shift_rotate": False, "validation_percent": 0, "epochs": 16, "batch_size": 1024,
           "eval_percent": 10, "precision": "auto", "min_accuracy": 0.8, "min_tflite_agreement": 0.99}
PRESETS = {
    "photos": _PHOTOS,
    "photos-wide": {**_PHOTOS, "group_filters": [64, 256, 256], "epochs": 14, "warmup_epochs": 3.2},
    "photos-residual": {"width": 1.5, "flip": True, "test_time_flip": True, "crop_pad": 4, "shift_rotate": False,
                        "restarts": 0, "epochs": 27, "batch_size": 64, "weight_decay": 0.05, "min_accuracy": 0.8,
                        "min_tflite_agreement": 0.99},
}
# Presets sized for a CPU with bfloat16: on one without, the local runner says so before the run.
PRESETS_FOR_BFLOAT16 = ("photos-wide",)

# The Beam engine, named outright: Beam 2.77's DirectRunner tries the Prism runner first, which
# downloads a binary at run time (a closed network makes it fall back; a cluster with internet access
# would run an engine never tested here). FnApiRunner is what DirectRunner falls back to for batch.
BEAM_RUNNER = "--runner=FnApiRunner"
# Without a dependency flag, TFX builds an sdist of itself before every Beam stage and Beam stages it,
# for remote workers the direct runner never starts: its in-process and subprocess workers run in the
# step's own environment. Naming an SDK container image counts as one, and neither kind reads it.
BEAM_NO_TFX_SDIST = "--sdk_container_image=unused-by-the-direct-runner"
BEAM_PIPELINE_ARGS = (BEAM_RUNNER, "--direct_running_mode=in_memory", BEAM_NO_TFX_SDIST)
