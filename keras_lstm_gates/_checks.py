"""Argument checks shared by the cell, the layer and the tools around them.

Each check raises a `ValueError` or `TypeError` whose message names the
argument, what was given and what was expected, so that a user never has to
read a TensorFlow trace to learn what they passed wrong.
"""

import numbers

import keras
import numpy as np

USE_GATES = ("projected", "classic")
QUANTIZE_OPTIONS = (None, "dynamic", "float16", "int8")
LSTM_OP_OPTIONS = ("auto", "native", "loop")


def check_units(units):
    """Returns `units` as an int, or raises if it is not a positive int."""
    if isinstance(units, bool) or not isinstance(units, numbers.Integral):
        raise TypeError(
            f"units must be a positive int, got {units!r} "
            f"(of type {type(units).__name__})"
        )
    if units <= 0:
        raise ValueError(f"units must be a positive int, got {units}")
    return int(units)


def check_use_gate(use_gate):
    """Returns `use_gate`, or raises if it is not a known option."""
    if use_gate not in USE_GATES:
        raise ValueError(f"use_gate must be one of {USE_GATES}, got {use_gate!r}")
    return use_gate


def check_rate(name, rate):
    """Returns a dropout rate as a float, or raises if not in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(
            f"{name} must be a float in [0, 1), got {rate!r} "
            f"(of type {type(rate).__name__})"
        )
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {rate}")
    return float(rate)


def check_sequence_shape(layer_name, shape, features=None):
    """Checks that `shape` is (batch, time, features).

    Args:
        layer_name: the name of the layer, for the message.
        shape: the static shape of the inputs.
        features: the feature size the layer was built with, or `None`
            before it is built.
    """
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(
            f"Layer '{layer_name}': inputs must have rank 3, "
            f"(batch, time, features), got rank {len(shape)} "
            f"with shape {shape}"
        )
    if shape[1] == 0:
        raise ValueError(
            f"Layer '{layer_name}': inputs must have at least one time step, "
            f"got shape {shape}"
        )
    if features is not None and shape[-1] is not None and shape[-1] != features:
        raise ValueError(
            f"Layer '{layer_name}': inputs must have {features} features "
            f"(the size it was built with), got shape {shape}"
        )


def _static_shape(value):
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else np.shape(value)


def _matches(shape, expected):
    """Whether `shape` is `expected`, where `None` in either matches any size."""
    return len(shape) == len(expected) and all(
        a is None or b is None or a == b for a, b in zip(shape, expected)
    )


def check_mask(layer_name, mask, sequences_shape):
    """Checks that `mask` is `(batch, time)` for inputs of `sequences_shape`."""
    if mask is None:
        return
    expected = tuple(sequences_shape)[:2]
    shape = _static_shape(mask)
    if not _matches(shape, expected):
        raise ValueError(
            f"Layer '{layer_name}': mask must have shape (batch, time) = "
            f"{expected} for inputs of shape {tuple(sequences_shape)}, got "
            f"shape {shape}"
        )


def check_initial_state(layer_name, initial_state, batch, units):
    """Checks that `initial_state` is `[STM_0, LTM_0]`, each `(batch, units)`."""
    if initial_state is not None:
        _check_states(
            f"Layer '{layer_name}'",
            "initial_state",
            ("STM_0", "LTM_0"),
            initial_state,
            (batch, units),
        )


def check_step(cell_name, inputs_shape, states, units, features):
    """Checks one step's `inputs` `(batch, features)` and `states`
    `[STM_{t-1}, LTM_{t-1}]`, each `(batch, units)`, of a cell built for
    `features`."""
    inputs_shape = tuple(inputs_shape)
    if len(inputs_shape) != 2:
        raise ValueError(
            f"Cell '{cell_name}': inputs must be one step, (batch, features), "
            f"got rank {len(inputs_shape)} with shape {inputs_shape}; run a "
            "sequence through keras.layers.RNN(cell) or FourGateLSTM"
        )
    if inputs_shape[-1] is not None and inputs_shape[-1] != features:
        raise ValueError(
            f"Cell '{cell_name}': inputs must have {features} features "
            f"(the size it was built with), got shape {inputs_shape}"
        )
    _check_states(
        f"Cell '{cell_name}'",
        "states",
        ("STM_{t-1}", "LTM_{t-1}"),
        states,
        (inputs_shape[0], units),
    )


def _check_states(where, argument, names, states, expected):
    if not isinstance(states, (list, tuple)) or len(states) != 2:
        if isinstance(states, (list, tuple)):
            got = f"{len(states)} array" + ("" if len(states) == 1 else "s")
        else:
            got = f"one {type(states).__name__}"
        raise ValueError(
            f"{where}: {argument} must be a list [{', '.join(names)}] of two "
            f"arrays, each (batch, units) = {expected}, got {got}"
        )
    for name, state in zip(names, states):
        shape = _static_shape(state)
        if not _matches(shape, expected):
            raise ValueError(
                f"{where}: {argument} {name} must have shape (batch, units) = "
                f"{expected}, got shape {shape}"
            )


def require_tensorflow(function):
    """Raises unless Keras runs on TensorFlow, which `function` needs."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{function} needs the TensorFlow backend of Keras (a SavedModel "
            "and a TFLite file are TensorFlow graphs), but the backend is "
            f"{backend!r}. Set KERAS_BACKEND=tensorflow before importing keras"
        )


def check_model(function, model):
    """Checks that `model` is a built Keras model of one input and one output."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{function}: model must be a keras.Model, got {type(model).__name__}"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"{function}: model '{model.name}' has no known input shape; "
            "start it with keras.Input(...) or build it first"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"{function}: model must have one input and one output, model "
            f"'{model.name}' has {len(inputs)} inputs and {len(outputs)} outputs"
        )
    if any(d is None for d in inputs[0].shape[2:]):
        raise ValueError(
            f"{function}: the model's input shape must be known beyond the "
            f"time axis, (batch, time, features...), got {inputs[0].shape}"
        )


def check_batch_size(function, batch_size, allow_none):
    """Returns `batch_size` as an int (or `None`, if allowed), or raises."""
    if batch_size is None and allow_none:
        return None
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size <= 0
    ):
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(
            f"{function}: batch_size must be {expected}, got {batch_size!r}"
        )
    return int(batch_size)


def check_tflite_options(quantize, representative_data):
    """Checks `export_tflite`'s `quantize` and the `representative_data` it needs."""
    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(
            f"export_tflite: quantize must be one of {QUANTIZE_OPTIONS}, "
            f"got {quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            'export_tflite: quantize="int8" needs representative_data, an '
            "array of typical inputs of shape (num_samples,) + input shape, "
            "to calibrate the activations; got None"
        )
    if quantize != "int8" and representative_data is not None:
        raise ValueError(
            'export_tflite: representative_data is only used with quantize="int8", '
            f"got quantize={quantize!r}"
        )


def check_lstm_op(lstm_op):
    """Checks `export_tflite`'s `lstm_op`."""
    if not isinstance(lstm_op, str):
        raise TypeError(
            f"export_tflite: lstm_op must be one of {LSTM_OP_OPTIONS}, "
            f"got {lstm_op!r} (of type {type(lstm_op).__name__})"
        )
    if lstm_op not in LSTM_OP_OPTIONS:
        raise ValueError(
            f"export_tflite: lstm_op must be one of {LSTM_OP_OPTIONS}, got {lstm_op!r}"
        )
    return lstm_op


def check_stateless(layers):
    """Checks that no layer keeps states between calls, as a TFLite file cannot."""
    for layer in layers:
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"export_tflite: layer '{layer.name}' is stateful; a TFLite file "
                "cannot keep its states between calls. Export the model with "
                "stateful=False and streaming=True, and carry the states of "
                "the step signature yourself"
            )


def check_representative_data(
    model, data, batch_size, name="export_tflite: representative_data"
):
    """Returns `data` as an array of the model's input dtype, or raises if it
    is not `(num_samples,) + input shape` with `num_samples >= batch_size`.

    `name` says what the data was given as (the command line's option)."""
    array = np.asarray(data)
    expected = tuple(model.inputs[0].shape[1:])
    shape_ok = array.ndim == len(expected) + 1 and all(
        e is None or e == a for e, a in zip(expected, array.shape[1:])
    )
    if not shape_ok or len(array) < batch_size:
        raise ValueError(
            f"{name} must be an array of shape "
            f"(num_samples,) + {expected} with num_samples >= batch_size "
            f"({batch_size}), got shape {array.shape}"
        )
    return array.astype(model.inputs[0].dtype, copy=False)
