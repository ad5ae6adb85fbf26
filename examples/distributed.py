"""Training across devices and machines for `temperature.py --distribute`.

`make_strategy` turns the flag into a `tf.distribute` strategy, `worker_index`
tells the chief (which writes the exports and plots) from the other workers,
and `fit_across_workers` trains under `MultiWorkerMirroredStrategy`, where
Keras 3's `model.fit` fails.
"""

import os

import keras
import numpy as np
import tensorflow as tf


def make_strategy(name):
    """The `tf.distribute` strategy of `--distribute`."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--distribute multiworker needs the TF_CONFIG environment "
                "variable (the cluster and this worker's task); see docs/tutorials.md"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_index(strategy):
    """This worker's index in a multi-worker cluster; 0 for the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 0
    if resolver.task_type == "chief":
        return 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_id + int(has_chief)


def fit_across_workers(model, strategy, train, val, args):
    """`model.fit` with early stopping, for `MultiWorkerMirroredStrategy`.

    Keras 3's `fit` fails under this strategy (keras-team/keras#20585: it
    all-reduces values along an axis they lack), so the workers run this
    short loop instead: each takes its shard of every global batch, the
    gradients are summed across workers by the optimizer, and the losses are
    summed across workers, so every worker sees the same numbers, takes the
    same early-stopping decision and ends with the same weights.

    Returns:
        A `keras.callbacks.History` with `loss` and `val_loss` per epoch.
    """

    def distribute(data, shuffle):
        dataset = tf.data.Dataset.from_tensor_slices(data)
        if shuffle:
            dataset = dataset.shuffle(len(data[0]), seed=args.seed)
        return strategy.experimental_distribute_dataset(dataset.batch(args.batch_size))

    def squared_error_sum(inputs, targets, training):
        predictions = model(inputs, training=training)[:, 0]
        return tf.reduce_sum(tf.square(predictions - targets))

    def train_replica(inputs, targets):
        with tf.GradientTape() as tape:
            total = squared_error_sum(inputs, targets, training=True)
            loss = total / args.batch_size
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return total

    @tf.function
    def train_step(batch):
        totals = strategy.run(train_replica, args=batch)
        return strategy.reduce("SUM", totals, axis=None)

    @tf.function
    def validation_step(batch):
        totals = strategy.run(squared_error_sum, args=(*batch, False))
        return strategy.reduce("SUM", totals, axis=None)

    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    history = keras.callbacks.History()
    history.history = {"loss": [], "val_loss": []}
    best_loss, best_weights, waited = np.inf, model.get_weights(), 0
    for epoch in range(args.epochs):
        loss = sum(float(train_step(b)) for b in distribute(train, True))
        val_loss = sum(float(validation_step(b)) for b in distribute(val, False))
        history.history["loss"].append(loss / len(train[0]))
        history.history["val_loss"].append(val_loss / len(val[0]))
        print(
            f"Epoch {epoch + 1}/{args.epochs} - loss: {loss / len(train[0]):.4f}"
            f" - val_loss: {val_loss / len(val[0]):.4f}"
        )
        if val_loss < best_loss:
            best_loss, best_weights, waited = val_loss, model.get_weights(), 0
        else:
            waited += 1
            if waited >= args.patience:
                break
    model.set_weights(best_weights)
    return history
