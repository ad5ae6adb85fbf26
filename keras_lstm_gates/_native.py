"""TFLite's native LSTM op: which recurrent layers can become one, and how.

TFLite has a builtin op for a whole textbook LSTM over a sequence,
`UNIDIRECTIONAL_SEQUENCE_LSTM`. Full-integer quantization calibrates it
without unrolling, and TFLite Micro, delegates and NPUs run it natively.
Keras 3 exports an LSTM as a `WHILE` loop instead, and its own LSTM layer
no longer asks for the op.

The converter still fuses a `tf.function` that declares itself a Keras 2
LSTM: its attributes `api_implements` (a name starting `lstm_`),
`api_preferred_device`, `time_major` and `go_backwards`; its arguments
`(inputs, init_h, init_c, kernel, recurrent_kernel, bias)` at fixed shapes
(an `input_signature`: without one the converter crashes); its results
`(last_output, outputs, new_h, new_c, runtime)`. It keeps only the first
two, and turns the initial states, which must be constants, into variable
tensors that the op updates: the file carries its states from one invoke to
the next until they are reset.

`plan` decides, layer by layer, which recurrent layers become the op;
`NativeLSTM` and `NativeBidirectional` are the layers an export copy puts in
their place.
"""

import dataclasses
import uuid

import keras

from keras_lstm_gates._graph import all_layers
from keras_lstm_gates.cell import FourGateLSTMCell

# The TFLite op a native layer becomes, as `tflite_ops` names it.
LSTM_OP = "UNIDIRECTIONAL_SEQUENCE_LSTM"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which op each recurrent layer of a model becomes.

    Attributes:
        native: The layers that become the native op (by `id`).
        native_op_count: How many native ops the file holds at least (a
            `Bidirectional` makes two; a layer called twice, one a call).
        ops: For every recurrent layer, by name, what it becomes in the file:
            `LSTM_OP` (two of them for a `Bidirectional`), `"WHILE"` or
            `"unrolled"` (int8, whose calibrator cannot run a loop).
    """

    native: frozenset
    ops: dict
    native_op_count: int


def plan(model, lstm_op, quantize):
    """What each recurrent layer of `model` becomes under `lstm_op`.

    `"native"`: every recurrent layer becomes the op, or one error names each
    that cannot and why. `"auto"`: the layers that can become the op do so
    where it is the better file: for `quantize="int8"`, where a loop would be
    unrolled (a file that grows with the sequence and needs its length
    fixed); in float, XNNPACK runs the loop faster (docs/performance.md).
    `"loop"`: none does.
    """
    found = list(_recurrent_layers(model, inherited=None))
    layers = [layer for layer, _ in found]
    reasons = {
        id(layer): inherited or why_not_native(layer) for layer, inherited in found
    }
    if lstm_op == "native":
        if not layers:
            raise ValueError(
                "export_tflite: lstm_op='native' turns LSTM layers into TFLite's "
                f"{LSTM_OP}, but model '{model.name}' has no recurrent layer"
            )
        refused = [layer for layer in layers if reasons[id(layer)]]
        if refused:
            raise ValueError(
                "export_tflite: lstm_op='native' cannot turn "
                + "; ".join(
                    f"layer '{layer.name}' ({type(layer).__name__}) into "
                    f"TFLite's {LSTM_OP}: {reasons[id(layer)]}"
                    for layer in refused
                )
                + ". Export with lstm_op='auto' to keep such layers as loops"
            )
    wanted = lstm_op == "native" or (lstm_op == "auto" and quantize == "int8")
    native = frozenset(
        id(layer) for layer in layers if wanted and not reasons[id(layer)]
    )
    loop = "unrolled" if quantize == "int8" else "WHILE"
    ops = {}
    count = 0
    for layer in layers:
        if id(layer) in native:
            ops[layer.name] = LSTM_OP
            count += 2 if isinstance(layer, keras.layers.Bidirectional) else 1
        else:
            ops[layer.name] = loop
    return Plan(native=native, ops=ops, native_op_count=count)


def loops_left(model, native):
    """Whether a recurrent layer of `model` stays a loop: one not in
    `native`, nor inside a `Bidirectional` that is, found at any depth
    (inside `TimeDistributed` or a subclassed model too)."""
    covered = set(native)
    for layer in all_layers(model):
        if id(layer) in native and isinstance(layer, keras.layers.Bidirectional):
            covered.update((id(layer.forward_layer), id(layer.backward_layer)))
    return any(
        isinstance(layer, keras.layers.RNN) and id(layer) not in covered
        for layer in all_layers(model)
    )


def _recurrent_layers(model, inherited):
    """`(layer, reason)` for each recurrent layer of `model`: `reason` is why
    the place it sits in rules the op out (`None` if nothing does).

    The export copy replaces layers inside inner functional and Sequential
    models too (Keras clones those); a recurrent layer wrapped in anything
    else (`TimeDistributed`, a subclassed model) comes as that wrapper,
    which cannot be replaced. An inner model given a mask passes it on.
    """
    for layer in getattr(model, "layers", None) or []:
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            yield layer, inherited
        elif _is_graph_model(layer):
            yield from _recurrent_layers(layer, inherited or _reads_mask(layer))
        elif any(isinstance(inner, keras.layers.RNN) for inner in all_layers(layer)):
            yield (
                layer,
                inherited
                or (
                    f"its recurrent layer is inside a {type(layer).__name__}, "
                    "which the export cannot take apart"
                ),
            )


def _is_graph_model(layer):
    """A Sequential or functional model: Keras clones it layer by layer."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and hasattr(layer, "outputs")
    )


def why_not_native(layer):
    """Why `layer` cannot become the native op, or `None` if it can."""
    if isinstance(layer, keras.layers.Bidirectional):
        if type(layer) is not keras.layers.Bidirectional:
            return _subclass_reason(layer, keras.layers.Bidirectional)
        for inner in (layer.forward_layer, layer.backward_layer):
            reason = _why_not_native_rnn(inner)
            if reason:
                return reason
        if layer.merge_mode is None:
            return "its merge_mode is None (two outputs)"
    else:
        reason = _why_not_native_rnn(layer)
        if reason:
            return reason
    return _why_not_native_call(layer)


def _subclass_reason(layer, parent):
    return f"it is a subclass of {parent.__name__}, whose own code the op would not run"


def _why_not_native_rnn(layer):
    from keras_lstm_gates.layer import FourGateLSTM

    cell = getattr(layer, "cell", None)
    if type(cell) is FourGateLSTMCell:
        if cell.use_gate != "classic":
            return (
                f"its Use gate is {cell.use_gate!r}, and the op computes the "
                "textbook LSTM's (train with use_gate='classic' for a native "
                "export)"
            )
    elif type(cell) is not keras.layers.LSTMCell:
        return (
            f"its cell is a {type(cell).__name__}, and the op computes an LSTM "
            "(a FourGateLSTM with use_gate='classic' or a keras.layers.LSTM)"
        )
    if type(layer) not in (FourGateLSTM, keras.layers.LSTM, keras.layers.RNN):
        parent = FourGateLSTM if isinstance(layer, FourGateLSTM) else keras.layers.RNN
        return _subclass_reason(layer, parent)
    # By identity, as Keras checks for cuDNN: a function of the same name
    # may compute something else.
    if (
        cell.activation is not keras.activations.tanh
        or cell.recurrent_activation is not keras.activations.sigmoid
    ):
        return (
            f"its activations are {_name(cell.activation)} and "
            f"{_name(cell.recurrent_activation)}, and the op computes tanh and "
            "sigmoid"
        )
    if layer.return_state:
        return "it returns its states (return_state=True), and the op gives only its outputs"
    if layer.stateful:
        return "it is stateful"
    return None


def _calls(layer):
    """`(tensors, mask, initial_state)` of each call of `layer` in its models:
    the tensors it was given (the mask aside) and the `mask=` and
    `initial_state=` passed by name, if any."""
    for node in getattr(layer, "_inbound_nodes", None) or []:
        kwargs = node.arguments.kwargs
        mask = kwargs.get("mask")
        tensors = [t for t in node.arguments.keras_tensors if t is not mask]
        yield tensors, mask, kwargs.get("initial_state")


def _reads_mask(layer):
    """Why a mask `layer` is called with rules the op out, or `None`."""
    for tensors, mask, _ in _calls(layer):
        if mask is not None or any(
            getattr(t, "_keras_mask", None) is not None for t in tensors
        ):
            return (
                "it reads a mask (an Embedding's mask_zero=True or a Masking "
                "layer), which the op cannot express: it runs every step"
            )
    return None


def _why_not_native_call(layer):
    """Why the way `layer` is called rules the op out (a mask, a state)."""
    reason = _reads_mask(layer)
    if reason:
        return reason
    for tensors, _, initial_state in _calls(layer):
        if len(tensors) > 1 or initial_state is not None:
            return "it is given an initial state, and the op starts from zeros"
    return None


def _name(activation):
    return getattr(activation, "__name__", str(activation))


class NativeLSTM(keras.layers.Layer):
    """The textbook LSTM over a sequence, traced as a function the TFLite
    converter turns into one `UNIDIRECTIONAL_SEQUENCE_LSTM` op.

    Made from a layer `plan` accepted (a classic `FourGateLSTM`, a
    `keras.layers.LSTM`), with the same weights in the same order, so that
    an export copy takes the model's weights as they are. The function's body
    is the same LSTM in TensorFlow ops: what the SavedModel computes.
    """

    def __init__(self, source, **kwargs):
        super().__init__(name=source.name, dtype="float32", **kwargs)
        cell = source.cell
        self.units = cell.units
        self.return_sequences = source.return_sequences
        self.go_backwards = source.go_backwards
        self._shapes = [tuple(w.shape) for w in cell.weights]
        self._functions = {}

    def build(self, input_shape):
        names = ["kernel", "recurrent_kernel", "bias"][: len(self._shapes)]
        self.kernel, self.recurrent_kernel, *bias = [
            self.add_weight(shape=shape, initializer="zeros", name=name)
            for name, shape in zip(names, self._shapes)
        ]
        self.bias = bias[0] if bias else None

    def compute_output_shape(self, input_shape):
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def call(self, inputs, mask=None):
        import tensorflow as tf

        if mask is not None:
            raise ValueError(
                f"export_tflite: layer '{self.name}' reads a mask, which TFLite's "
                f"{LSTM_OP} cannot express; export with lstm_op='loop'"
            )
        inputs = tf.cast(inputs, tf.float32)
        batch = inputs.shape[0]
        kernel = tf.convert_to_tensor(self.kernel.value)
        recurrent_kernel = tf.convert_to_tensor(self.recurrent_kernel.value)
        if self.bias is None:
            bias = tf.zeros((4 * self.units,))
        else:
            bias = tf.convert_to_tensor(self.bias.value)
        # Two constants: the converter makes each a variable tensor of the op.
        init_stm = tf.zeros((batch, self.units))
        init_ltm = tf.zeros((batch, self.units))
        last, outputs, _, _, _ = self._function(tuple(inputs.shape))(
            inputs, init_stm, init_ltm, kernel, recurrent_kernel, bias
        )
        return outputs if self.return_sequences else last

    def _function(self, shape):
        import tensorflow as tf

        if shape not in self._functions:
            units = self.units
            signature = [
                tf.TensorSpec(shape, tf.float32),
                tf.TensorSpec((shape[0], units), tf.float32),
                tf.TensorSpec((shape[0], units), tf.float32),
                tf.TensorSpec((shape[-1], 4 * units), tf.float32),
                tf.TensorSpec((units, 4 * units), tf.float32),
                tf.TensorSpec((4 * units,), tf.float32),
            ]
            go_backwards = self.go_backwards

            def textbook_lstm(inputs, init_stm, init_ltm, kernel, recurrent, bias):
                return _textbook_lstm(
                    inputs, init_stm, init_ltm, kernel, recurrent, bias, go_backwards
                )

            self._functions[shape] = tf.function(
                textbook_lstm,
                input_signature=signature,
                autograph=False,
                experimental_attributes={
                    # A name of its own: the converter fuses one function per
                    # name, and each layer (each shape) is one.
                    "api_implements": f"lstm_{uuid.uuid4()}",
                    "api_preferred_device": "CPU",
                    "time_major": False,
                    "go_backwards": go_backwards,
                },
            )
        return self._functions[shape]


def _textbook_lstm(
    inputs, init_stm, init_ltm, kernel, recurrent_kernel, bias, go_backwards
):
    """The classic cell over a batch-major sequence, Keras 2's results."""
    import tensorflow as tf

    from keras_lstm_gates._fused.gates import classic_step
    from keras_lstm_gates._fused.gates import loop_order

    units = recurrent_kernel.shape[0]
    w = loop_order(kernel, units)
    r = loop_order(recurrent_kernel, units)
    b = loop_order(bias, units)
    events = tf.transpose(inputs, [1, 0, 2])
    if go_backwards:
        events = tf.reverse(events, [0])

    def step(state, event):
        stm, ltm = state
        z = tf.matmul(event, w) + tf.matmul(stm, r) + b
        _, _, ltm, _, stm = classic_step(z, ltm, axis=1)  # Learn, Forget, Remember, Use
        return stm, ltm

    stms, ltms = tf.scan(step, events, initializer=(init_stm, init_ltm))
    runtime = tf.constant(0.0)  # Keras 2's "which kernel ran"; unused
    return stms[-1], tf.transpose(stms, [1, 0, 2]), stms[-1], ltms[-1], runtime


class NativeBidirectional(keras.layers.Layer):
    """A `Bidirectional` of two `NativeLSTM`s, merged as Keras merges them."""

    def __init__(self, source, **kwargs):
        super().__init__(name=source.name, dtype="float32", **kwargs)
        self.forward_layer = NativeLSTM(source.forward_layer)
        self.backward_layer = NativeLSTM(source.backward_layer)
        self.merge_mode = source.merge_mode
        self.return_sequences = source.return_sequences

    def build(self, input_shape):
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = self.forward_layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return shape[:-1] + (shape[-1] + self.backward_layer.units,)
        return shape

    def call(self, inputs, mask=None):
        forward = self.forward_layer(inputs, mask=mask)
        backward = self.backward_layer(inputs, mask=mask)
        if self.return_sequences:
            backward = keras.ops.flip(backward, axis=1)  # back in time order
        if self.merge_mode == "concat":
            return keras.ops.concatenate([forward, backward], axis=-1)
        if self.merge_mode == "sum":
            return forward + backward
        if self.merge_mode == "ave":
            return (forward + backward) / 2
        return forward * backward  # "mul"


def native_layer(layer):
    """The layer an export copy puts in place of `layer`, with its weights."""
    if isinstance(layer, keras.layers.Bidirectional):
        return NativeBidirectional(layer)
    return NativeLSTM(layer)
