"""Trains a `FourGateLSTM` model for one epoch under a distribution strategy.

`tests/test_distribute.py` runs this script in subprocesses: devices must be
configured before TensorFlow or JAX starts, and multi-worker training needs a
process per worker. The script trains and writes the weights; the test judges.

Usage:

    python tests/_distribute_worker.py mirrored WORK_DIR
    TF_CONFIG=... python tests/_distribute_worker.py multiworker WORK_DIR
    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/_distribute_worker.py dataparallel WORK_DIR

`WORK_DIR` holds `inputs.npz` (`x`, `y` and the initial weights `weights.K`).
Each mode writes `<mode>.npz` (multi-worker: `multiworker_<task index>.npz`),
the weights `weights.K` after one epoch under the strategy, and `<mode>.json`,
what the test checks about the replicas and devices. `fit_one_epoch` is
the same epoch on one device, for the test to compare with.
"""

import json
import os
import sys

import keras
import numpy as np

from keras_lstm_gates import FourGateLSTM

BATCH_SIZE = 16
LEARNING_RATE = 0.1


def _model(inputs):
    """The model, with the initial weights the test made."""
    model = keras.Sequential(
        [keras.Input(inputs["x"].shape[1:]), FourGateLSTM(8), keras.layers.Dense(1)]
    )
    count = sum(1 for k in inputs if k.startswith("weights."))
    model.set_weights([inputs[f"weights.{k}"] for k in range(count)])
    return model


def fit_one_epoch(inputs):
    """One epoch of `model.fit` (under the current strategy, if any)."""
    model = _model(inputs)
    model.compile(keras.optimizers.SGD(LEARNING_RATE), "mse")
    model.fit(inputs["x"], inputs["y"], batch_size=BATCH_SIZE, shuffle=False, verbose=0)
    return model


def _weights(model):
    """The model's weights, named as in `inputs.npz`."""
    return {f"weights.{k}": w for k, w in enumerate(model.get_weights())}


def mirrored(inputs):
    """One epoch under `MirroredStrategy` over two logical CPU devices."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = fit_one_epoch(inputs)
    info = {
        "replicas": strategy.num_replicas_in_sync,
        "kernel_devices": sorted(v.device for v in model.weights[0].value.values),
    }
    return _weights(model), info


def multiworker(inputs):
    """One epoch under `MultiWorkerMirroredStrategy`, this process a worker.

    Keras 3.15's `model.fit` fails under this strategy for every model (it
    reduces a nested batch with `strategy.reduce`, keras-team/keras#20585),
    so the epoch is the custom training loop of TensorFlow's multi-worker
    guide: the same model, loss and optimizer, gradients summed by the
    strategy over both workers.
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = _model(inputs)
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
        optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((inputs["x"], inputs["y"]))
    batches = strategy.experimental_distribute_dataset(dataset.batch(BATCH_SIZE))

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            errors = keras.losses.mean_squared_error(y, model(x, training=True))
            loss = tf.nn.compute_average_loss(errors, global_batch_size=BATCH_SIZE)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    @tf.function
    def train_step(batch):
        strategy.run(replica_step, args=batch)

    for batch in batches:
        train_step(batch)
    info = {
        "replicas": strategy.num_replicas_in_sync,
        "task_index": strategy.cluster_resolver.task_id,
    }
    return _weights(model), info


def dataparallel(inputs):
    """One epoch under `keras.distribution.DataParallel` over two devices."""
    devices = keras.distribution.list_devices("cpu")
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    model = fit_one_epoch(inputs)
    kernel = model.weights[0].value
    info = {
        "backend": keras.backend.backend(),
        "devices": devices,
        "kernel_devices": sorted(str(d) for d in kernel.sharding.device_set),
    }
    return _weights(model), info


MODES = {"mirrored": mirrored, "multiworker": multiworker, "dataparallel": dataparallel}


def main(mode, work_dir):
    inputs = np.load(os.path.join(work_dir, "inputs.npz"))
    arrays, info = MODES[mode](inputs)
    if mode == "multiworker":
        mode = f"multiworker_{info['task_index']}"
    np.savez(os.path.join(work_dir, f"{mode}.npz"), **arrays)
    with open(os.path.join(work_dir, f"{mode}.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
