"""How closely an exported TFLite file matches its Keras model.

`measure` runs the file in the LiteRT interpreter and the Keras model on the
same seeded probe input, whole sequence and step by step, and returns the
largest differences. The probe looks like the data the model expects: raw
values where a `Normalization` layer reads the input, token ids that end in
padding, so that masked steps are measured too.
"""

import keras
import numpy as np

from keras_lstm_gates._graph import all_layers
from keras_lstm_gates._graph import sole_input
from keras_lstm_gates.tflite import TFLiteModel

# The probe input on which an export is compared with the Keras model.
_PROBE_SEED = 1234
_PROBE_TIME_STEPS = 8


def measure(model, path, batch_size, step, probe=None):
    """Runs the file against the Keras model on `probe` (default: `_probes`).

    Returns the largest differences of the whole-sequence and the `step`
    outputs, and the scale of the Keras output (at least 1).
    """
    exported = TFLiteModel(path)
    probes = _probes(model, batch_size) if probe is None else [probe]
    measured = [_measure_on(model, exported, step, p) for p in probes]
    max_abs_diff = max(m[0] for m in measured)
    step_max_abs_diff = None if step is None else max(m[1] for m in measured)
    return max_abs_diff, step_max_abs_diff, max(m[2] for m in measured)


def _measure_on(model, exported, step, probe):
    """`measure` on one probe: `(max_abs_diff, step_max_abs_diff, scale)`."""
    expected = keras.ops.convert_to_numpy(model(probe, training=False))
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    max_abs_diff = _max_abs_diff(exported(probe), expected)
    if step is None:
        return max_abs_diff, None, scale
    states = exported.initial_states()
    outputs = []
    for t in range(probe.shape[1]):
        output, states = exported.step(probe[:, t], states)
        outputs.append(output)
    if expected.ndim == outputs[0].ndim + 1:
        streamed = np.stack(outputs, axis=1)  # a sequence output: every step
    else:
        streamed = outputs[-1]
    return max_abs_diff, _max_abs_diff(streamed, expected), scale


def _probes(model, batch_size):
    """`_probe`, and for token ids the same with every row ending in padding.

    `_probe`'s first row has no padding, so that every step is measured; at a
    batch size of 1 that is the only row, and what a masked step outputs
    (`zero_output_for_mask`, the states kept) would go unmeasured.
    """
    probe = _probe(model, batch_size)
    time = probe.shape[1]
    if not np.issubdtype(probe.dtype, np.integer):
        return [probe]
    padded = probe.copy()
    padded[:, time - max(1, time // 3) :] = 0
    return [probe, padded]


def _probe(model, batch_size):
    """A seeded random input for `model`; token ids end in 0-padding.

    Float inputs are standard normal, or, where a top-level `Normalization`
    layer reads the model's input, drawn at its mean and variance: raw values the
    model expects (pressure near 986 hPa, say), not ones it would saturate
    on, where any conversion error would hide.
    """
    rng = np.random.default_rng(_PROBE_SEED)
    keras_input = model.inputs[0]
    time = keras_input.shape[1] or _PROBE_TIME_STEPS
    shape = (batch_size, time) + tuple(keras_input.shape[2:])
    dtype = keras_input.dtype
    if not np.issubdtype(np.dtype(dtype), np.integer):
        probe = rng.standard_normal(shape)
        mean, variance = _input_normalization(model)
        try:
            probe = mean + np.sqrt(np.maximum(variance, 0.0)) * probe
        except ValueError:  # not broadcastable to the input: keep N(0, 1)
            pass
        return probe.astype(dtype)
    embeddings = [
        layer
        for layer in all_layers(model)
        if isinstance(layer, keras.layers.Embedding)
    ]
    high = embeddings[0].input_dim if embeddings else 2
    probe = rng.integers(1, max(high, 2), size=shape)
    lengths = rng.integers(1, time + 1, size=batch_size)
    lengths[0] = time  # one row with no padding: every step is measured
    for row, length in enumerate(lengths):
        probe[row, length:] = 0
    return probe.astype(dtype)


def _input_normalization(model):
    """`(mean, variance)` of a top-level `Normalization` layer reading the
    model's input, or `(0, 1)`."""
    for layer in model.layers:
        if isinstance(model, keras.Sequential):
            # A loaded Sequential model's layers have several call nodes
            # (it is rebuilt as it loads): its first layer reads the input.
            reads_input = layer is model.layers[0]
        else:
            reads_input = sole_input(layer) is model.inputs[0]
        if (
            isinstance(layer, keras.layers.Normalization)
            and not layer.invert
            and reads_input
        ):
            return (
                keras.ops.convert_to_numpy(layer.mean).astype("float64"),
                keras.ops.convert_to_numpy(layer.variance).astype("float64"),
            )
    return 0.0, 1.0


def _max_abs_diff(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(
            f"export_tflite: the exported file gives outputs of shape "
            f"{actual.shape}, the Keras model {expected.shape}"
        )
    return float(np.max(np.abs(actual - expected)))
