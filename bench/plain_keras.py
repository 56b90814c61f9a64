"""The plain-Keras peer: image_dataset_from_directory + fit + export + TFLite convert, same model and epochs.

    bin/in-env python bench/plain_keras.py --data-root data/mnist-sample --epochs 15 --output-dir /tmp/peer
Prints one JSON line: wall seconds, test accuracy.
"""
import argparse
import json
import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCH_DIR), BENCH_DIR]  # the repository's packages, and bench/'s



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    args = parser.parse_args()
    started = time.time()
    import tensorflow as tf
    import tf_keras as keras
    from models.model import ModelConfig, build_classifier
    from models.recipe import TrainingConfig
    training = TrainingConfig(epochs=args.epochs)  # the pipeline's batch size and learning rate

    def load(split, shuffle):
        return keras.utils.image_dataset_from_directory(
            os.path.join(args.data_root, split), image_size=(28, 28), color_mode="grayscale",
            batch_size=training.batch_size, shuffle=shuffle, seed=0)

    train, test = load("train", True), load("test", False)
    inputs = keras.Input((28, 28, 1))
    classifier = build_classifier(ModelConfig(num_classes=len(train.class_names)))
    model = keras.Model(inputs, classifier(keras.layers.Rescaling(1 / 255.0)(inputs)))
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(training.learning_rate, len(train) * args.epochs)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(train.cache().prefetch(tf.data.AUTOTUNE), epochs=args.epochs, verbose=0)
    _, accuracy = model.evaluate(test, verbose=0)
    tf.saved_model.save(model, os.path.join(args.output_dir, "saved_model"))
    with open(os.path.join(args.output_dir, "model.tflite"), "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    print(json.dumps({"wall_seconds": round(time.time() - started, 1), "test_accuracy": round(accuracy, 4)}))


if __name__ == "__main__":
    main()
