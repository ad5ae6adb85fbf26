"""Argument checks shared by the cell, the layer and the tools around them.

Each check raises a `ValueError` or `TypeError` whose message names the
argument, what was given and what was expected, so that a user never has to
read a TensorFlow trace to learn what they passed wrong.
"""

import numbers

import numpy as np

USE_GATES = ("projected", "classic")


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
