"""One time step of a whole Keras model, for streaming inference.

`step_function(model)` turns a model whose layers form a chain (a
`Sequential`, or a functional model that is a chain) into a function of one
time step and the states of its four-gate LSTM layers. Recurrent layers run
their cell on the step with explicit states; layers that act on each time
step alone (`Dense`, `Embedding`, `Dropout`, ...) run on the step; once a
recurrent layer with `return_sequences=False` has consumed the time axis, the
layers after it run on its output at every step, so that the output of a step
is the model's output for the sequence read so far.
"""

import keras
from keras import ops

from keras_lstm_gates._graph import is_four_gate_layer
from keras_lstm_gates._graph import reads_with_other_mask
from keras_lstm_gates._graph import sole_input

# Layers that act on each time step alone, so they can run on one step.
_PER_STEP_LAYERS = (
    keras.layers.Dense,
    keras.layers.Embedding,
    keras.layers.Masking,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.LayerNormalization,
    keras.layers.BatchNormalization,
    keras.layers.Normalization,
    keras.layers.Rescaling,
)
# Layers that are the identity at inference.
_INFERENCE_IDENTITY_LAYERS = (
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


def _cannot_stream(layer, why):
    return ValueError(
        f"streaming=True: cannot stream layer '{layer.name}' "
        f"({type(layer).__name__}): {why}"
    )


def _chain(model):
    """The model's layers in order, or an error if they are not a chain."""
    if isinstance(model, keras.Sequential):
        return [
            layer
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]
    layers = []
    current = model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if sole_input(layer) is not current:
            if reads_with_other_mask(layer, current):
                raise _cannot_stream(
                    layer,
                    "it is given a mask other than the one its input carries "
                    "(an Embedding's or a Masking layer's), and the step "
                    "computes only that one",
                )
            raise ValueError(
                f"streaming=True: the model's layers must form a chain (each "
                f"layer reads the previous one's output), but layer "
                f"'{layer.name}' ({type(layer).__name__}) does not"
            )
        layers.append(layer)
        current = layer.output
    if current is not model.outputs[0]:
        raise ValueError(
            "streaming=True: the model's layers must form a chain that ends in "
            "the model's output"
        )
    return layers


def _plan(model):
    """Checks every layer of the chain; returns `[(kind, layer)]`."""
    plan = []
    in_time = True
    for layer in _chain(model):
        if isinstance(layer, keras.Model):
            raise _cannot_stream(
                layer,
                "nested models are not supported; flatten its layers "
                "into the outer model",
            )
        if isinstance(layer, keras.layers.Bidirectional):
            raise _cannot_stream(
                layer,
                "its backward half reads the sequence from the end, so "
                "no output exists until the whole sequence has arrived",
            )
        if isinstance(layer, keras.layers.RNN) or hasattr(layer, "cell"):
            if not is_four_gate_layer(layer):
                raise _cannot_stream(
                    layer,
                    "only the states of this package's FourGateLSTM "
                    "layers can be carried from step to step",
                )
            if not in_time:
                raise _cannot_stream(
                    layer,
                    "it comes after a recurrent layer with "
                    "return_sequences=False, so it has no sequence to read",
                )
            if layer.go_backwards:
                raise _cannot_stream(
                    layer,
                    "go_backwards=True reads the sequence from the end, "
                    "so no output exists until the whole sequence has arrived",
                )
            if layer.return_state:
                raise _cannot_stream(
                    layer,
                    "return_state=True; the step signature returns the states already",
                )
            plan.append(("recurrent", layer))
            in_time = layer.return_sequences
        elif not in_time:
            plan.append(("layer", layer))
        elif isinstance(layer, _INFERENCE_IDENTITY_LAYERS):
            plan.append(("identity", layer))
        elif isinstance(layer, keras.layers.TimeDistributed):
            plan.append(("time_distributed", layer))
        elif isinstance(layer, _PER_STEP_LAYERS):
            axis = getattr(layer, "axis", -1)
            axes = axis if isinstance(axis, (list, tuple)) else [axis]
            if any(a not in (-1, len(layer.input.shape) - 1) for a in axes):
                raise _cannot_stream(
                    layer, f"it acts on axis {axis}, not on the features of each step"
                )
            plan.append(("per_step", layer))
        else:
            raise _cannot_stream(
                layer,
                "it is not known to act on each time step alone "
                "(streamable layers before the last recurrent layer: "
                + ", ".join(
                    sorted(
                        c.__name__
                        for c in _PER_STEP_LAYERS + _INFERENCE_IDENTITY_LAYERS
                    )
                )
                + ", TimeDistributed)",
            )
    if not any(kind == "recurrent" for kind, _ in plan):
        raise ValueError(
            "streaming=True: the model has no FourGateLSTM layer, so there is "
            "no state to stream"
        )
    return plan


class StepFunction:
    """One time step of a model, with the states of its recurrent layers.

    Args:
        model: A built Keras model whose layers form a chain.

    Attributes:
        model: The model it steps through.
        state_names: `["<layer>_stm", "<layer>_ltm", ...]`, in layer order.
    """

    def __init__(self, model):
        self.model = model
        self._plan = _plan(model)
        self.state_names = []
        self.state_units = []
        self.state_dtypes = []
        for kind, layer in self._plan:
            if kind == "recurrent":
                for suffix in ("stm", "ltm"):
                    self.state_names.append(f"{layer.name}_{suffix}")
                    self.state_units.append(layer.cell.units)
                    self.state_dtypes.append(layer.cell.compute_dtype)

    def __call__(self, inputs, states):
        """Runs one step.

        Args:
            inputs: One time step of the model's input, `(batch, ...)`.
            states: Dict of the states, by the names in `state_names`.

        Returns:
            A dict with `outputs` (the model's output after this step) and the
            new states under their names.
        """
        x = inputs
        mask = None
        new_states = {}
        for kind, layer in self._plan:
            if kind == "identity":
                continue
            if kind == "time_distributed":
                x = layer.layer(x, training=False)
            elif kind == "per_step":
                # The layer sees one step as a sequence of length 1, the rank
                # it was built for (`Normalization` broadcasts over it).
                x = ops.expand_dims(x, 1)
                if isinstance(layer, (keras.layers.Embedding, keras.layers.Masking)):
                    step_mask = layer.compute_mask(x)  # None: no mask_zero
                    mask = None if step_mask is None else ops.squeeze(step_mask, 1)
                x = ops.squeeze(layer(x, training=False), 1)
            elif kind == "layer":
                x = layer(x, training=False)
            else:
                x, mask = self._recurrent_step(layer, x, mask, states, new_states)
        return {"outputs": x, **new_states}

    @staticmethod
    def _recurrent_step(layer, x, mask, states, new_states):
        stm_name, ltm_name = f"{layer.name}_stm", f"{layer.name}_ltm"
        stm, ltm = states[stm_name], states[ltm_name]
        cell = layer.cell
        x = ops.cast(x, cell.compute_dtype)
        output, (new_stm, new_ltm) = cell.call(x, [stm, ltm], training=False)
        if mask is not None:
            # A masked step keeps the states, as `keras.layers.RNN` does.
            keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
            new_stm = ops.where(keep, new_stm, stm)
            new_ltm = ops.where(keep, new_ltm, ltm)
            if layer.zero_output_for_mask:
                # Zeros, as the whole sequence's output at this step would be
                # (its last output too, without `return_sequences`).
                output = ops.where(keep, output, ops.zeros_like(output))
            else:
                output = new_stm
        new_states[stm_name] = new_stm
        new_states[ltm_name] = new_ltm
        return output, (mask if layer.return_sequences else None)
