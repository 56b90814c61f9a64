"""Which tf.distribute strategy the Trainer builds and compiles the model under."""
import tensorflow as tf


def training_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy across all visible GPUs, or across several logical CPU devices when they were
    configured (tests do this); on a plain single CPU, the default strategy, since mirroring one CPU
    device only adds per-step overhead."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()
