"""`trace_gates`: every gate's activation at every step of a sequence."""

import keras
import numpy as np
from keras import ops

from keras_lstm_gates import _checks
from keras_lstm_gates.cell import FourGateLSTMCell
from keras_lstm_gates.cell import GateActivations


def _four_gate_cell(layer):
    """The `FourGateLSTMCell` of `layer`, or a clear error."""
    cell = getattr(layer, "cell", None)
    if not isinstance(layer, keras.layers.RNN) or not isinstance(
        cell, FourGateLSTMCell
    ):
        hint = ""
        if isinstance(layer, keras.layers.Bidirectional):
            hint = "; trace its halves, layer.forward_layer and layer.backward_layer"
        elif isinstance(layer, keras.Model):
            hint = "; pass one of its layers, e.g. model.get_layer(name)"
        raise TypeError(
            "trace_gates: layer must be a FourGateLSTM or a keras.layers.RNN "
            f"holding a FourGateLSTMCell, got {type(layer).__name__}"
            + (f" with cell {type(cell).__name__}" if cell is not None else "")
            + hint
        )
    if not cell.built:
        raise ValueError(
            f"trace_gates: layer '{layer.name}' is not built; call it on "
            "inputs (or build the model) first"
        )
    return cell


class _GateSteps(keras.layers.Layer):
    """A step of `cell` whose output is every gate's activation, side by side.

    The activations lead the states: on a masked step the JAX backend's loop
    repeats the first state as the output, so it must be the activations; they
    start as zero gates and the initial state, as the layer outputs `STM_0`.
    """

    def __init__(self, cell, **kwargs):
        super().__init__(dtype=cell.variable_dtype, **kwargs)
        self.cell = cell
        self.output_size = len(GateActivations._fields) * cell.units
        self.state_size = [self.output_size, cell.units, cell.units]
        self.built = True

    def call(self, inputs, states):
        _, stm_prev, ltm_prev = states
        gates = self.cell.gates(self.cell.pre_activations(inputs, stm_prev), ltm_prev)
        activations = ops.concatenate(list(gates), axis=-1)
        return activations, [activations, gates.STM, gates.LTM]


def trace_gates(layer: keras.layers.RNN, inputs, initial_state=None, mask=None) -> dict:
    """Runs a four-gate LSTM layer and returns every gate's activations.

    Args:
        layer: A built `FourGateLSTM`, or a built `keras.layers.RNN` whose cell
            is a `FourGateLSTMCell`.
        inputs: Array of shape `(batch, time, features)`.
        initial_state: Optional `[STM_0, LTM_0]`, each `(batch, units)`.
            Defaults to the layer's states if it is stateful, else zeros.
        mask: Optional boolean array `(batch, time)`; a masked step keeps the
            previous step's state and activations, as the layer does.

    Returns:
        A dict of NumPy arrays of shape `(batch, time, units)`: `N`, `i`, `f`,
        `LTM`, `U`, `V` and `STM`, in the order the layer reads the steps
        (reversed for `go_backwards=True`, as the layer's sequence output is).

    Example:

    >>> import numpy as np
    >>> from keras_lstm_gates import FourGateLSTM, trace_gates
    >>> layer = FourGateLSTM(4)
    >>> x = np.random.rand(2, 6, 3).astype("float32")
    >>> _ = layer(x)
    >>> trace = trace_gates(layer, x)
    >>> trace["f"].shape
    (2, 6, 4)
    """
    cell = _four_gate_cell(layer)
    inputs = ops.convert_to_tensor(inputs, dtype=cell.variable_dtype)
    _checks.check_sequence_shape(layer.name, inputs.shape, cell.kernel.shape[0])
    _checks.check_mask(layer.name, mask, inputs.shape)
    batch_size = inputs.shape[0]
    _checks.check_initial_state(layer.name, initial_state, batch_size, cell.units)
    if initial_state is None:
        if getattr(layer, "stateful", False) and layer.states is not None:
            initial_state = [ops.convert_to_tensor(s) for s in layer.states]
            if initial_state[0].shape[0] != batch_size:
                raise ValueError(
                    f"trace_gates: layer '{layer.name}' is stateful with states "
                    f"of batch size {initial_state[0].shape[0]}, got inputs of "
                    f"batch size {batch_size}; trace a batch of that size, or "
                    "pass initial_state"
                )
        else:
            initial_state = [
                ops.zeros((batch_size, cell.units), dtype=inputs.dtype)
                for _ in range(2)
            ]
    initial_state = [
        ops.convert_to_tensor(s, dtype=inputs.dtype) for s in initial_state
    ]
    if mask is not None:
        mask = ops.convert_to_tensor(mask, dtype="bool")

    zeros = ops.zeros((batch_size, cell.units), dtype=inputs.dtype)
    start = {"LTM": initial_state[1], "STM": initial_state[0]}
    activations = ops.concatenate(
        [start.get(name, zeros) for name in GateActivations._fields], axis=-1
    )
    # `keras.layers.RNN` runs the loop our layer's base class runs (masking,
    # go_backwards), so a masked step is what the layer makes of it.
    loop = keras.layers.RNN(
        _GateSteps(cell, name=f"{layer.name}_gate_steps"),
        return_sequences=True,
        go_backwards=layer.go_backwards,
        dtype=cell.variable_dtype,
        name=f"{layer.name}_trace",
    )
    outputs = loop(inputs, initial_state=[activations, *initial_state], mask=mask)
    outputs = np.split(ops.convert_to_numpy(outputs), len(GateActivations._fields), -1)
    trace = dict(zip(GateActivations._fields, outputs))
    if mask is not None:
        # Before a sequence's first unmasked step, its long-term memory is
        # LTM_0 (TensorFlow's loop outputs zeros there). STM is the layer's
        # output: zeros there on TensorFlow and torch, STM_0 on JAX, as Keras's
        # LSTM.
        order = ops.convert_to_numpy(mask)[:, :: -1 if layer.go_backwards else 1]
        started = (np.cumsum(order, axis=1) > 0)[..., None]
        ltm_0 = ops.convert_to_numpy(initial_state[1])[:, None]
        trace["LTM"] = np.where(started, trace["LTM"], ltm_0)
    return trace
