"""Writing a model as a SavedModel, and converting that to TFLite builtin ops.

`write_saved_model` tracks the model in a `keras.export.ExportArchive` with
one endpoint per signature; `convert` runs `TFLiteConverter.from_saved_model`
on it, restricted to TFLite builtins. `export_copy` first rewrites a model as
TFLite needs it (float32, unrolled loops for int8 calibration).
"""

import warnings

import keras
import numpy as np

from keras_lstm_gates import _native
from keras_lstm_gates._graph import all_layers
from keras_lstm_gates.tflite import SERVING
from keras_lstm_gates.tflite import STEP


def export_copy(model, *, float32=False, unroll=False, native=frozenset()):
    """A copy of `model`, with its weights, changed as TFLite needs it.

    Args:
        float32: Every layer computes in float32 instead of under a mixed
            precision policy: TFLite has no bfloat16 ops (a converter error
            asking for Select-TF ops), and the weights of a mixed-precision
            model are float32 already.
        unroll: Every recurrent layer not in `native`, nested ones included
            (inside `Bidirectional` or an inner model), unrolls its loop:
            TFLite's calibrator crashes the process on a `WHILE` loop
            (TF 2.21).
        native: The recurrent layers (by `id`, from `_native.plan`) that
            become TFLite's native LSTM op: a `_native.NativeLSTM` (or
            `NativeBidirectional`) in their place, with the same weights.
    """
    unroll = unroll and _native.loops_left(model, native)
    if unroll and model.inputs[0].shape[1] is None:
        raise ValueError(
            'export_tflite: quantize="int8" needs a fixed number of time steps '
            "(the recurrent loop is unrolled for calibration), but the "
            f"model's input shape is {model.inputs[0].shape}; give keras.Input "
            "a fixed time length"
        )

    def rewrite(node):
        if isinstance(node, list):
            return [rewrite(value) for value in node]
        if not isinstance(node, dict):
            return node
        if float32 and node.get("class_name") == "DTypePolicy":
            if str(node["config"].get("name", "")).startswith("mixed_"):
                return {**node, "config": {**node["config"], "name": "float32"}}
        node = {key: rewrite(value) for key, value in node.items()}
        if unroll and isinstance(node.get("unroll"), bool):  # a recurrent layer
            node["unroll"] = True
        return node

    def clone(layer):
        if id(layer) in native:
            return _native.native_layer(layer)
        return layer.__class__.from_config(rewrite(layer.get_config()))

    # Recursive: a recurrent layer inside an inner model may become native.
    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def mixed_precision(model):
    """Whether a layer of `model` computes in 16 bits under a mixed policy."""
    return any(
        getattr(layer.dtype_policy, "name", "").startswith("mixed_")
        for layer in all_layers(model)
    )


def _input_spec(model, batch_size, step=False):
    import tensorflow as tf

    keras_input = model.inputs[0]
    shape = (batch_size,) + tuple(keras_input.shape[1:])
    if step:
        shape = shape[:1] + shape[2:]
    return tf.TensorSpec(shape, keras_input.dtype, name="inputs")


def write_saved_model(model, path, batch_size, jit_compile=False, step=None):
    """Writes `model` with `serving_default` (and `step`) to directory `path`."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    if step is not None and step.model is not model:
        archive.track(step.model)  # its cells' weights, for the step signature

    def serve(inputs):
        return {"outputs": model(inputs, training=False)}

    serving = tf.function(
        serve,
        input_signature=[_input_spec(model, batch_size)],
        jit_compile=jit_compile,
        autograph=False,
    )
    serving.get_concrete_function()
    archive.add_endpoint(SERVING, serving)

    if step is not None:
        specs = [_input_spec(model, batch_size, step=True)] + [
            tf.TensorSpec((batch_size, units), dtype, name=name)
            for name, units, dtype in zip(
                step.state_names, step.state_units, step.state_dtypes
            )
        ]

        def run_step(inputs, *states):
            return step(inputs, dict(zip(step.state_names, states)))

        stepping = tf.function(run_step, input_signature=specs, autograph=False)
        stepping.get_concrete_function()
        archive.add_endpoint(STEP, stepping)
    archive.write_out(path, verbose=False)


def convert(saved_model_dir, model, batch_size, quantize, representative_data, step):
    import tensorflow as tf

    keys = [SERVING, STEP] if step is not None else [SERVING]
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=keys
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        # Full integer: every op in int8, float in and out of the file.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = _representative_dataset(
            model, representative_data, batch_size, step
        )
    try:
        with warnings.catch_warnings():
            # The calibrator still uses the deprecated tf.lite.Interpreter.
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except Exception as error:  # the converter raises several error types
        message = str(error)
        if any(
            name in message
            for name in ("Flex", "Select TF", "TF Select", "SELECT_TF_OPS")
        ):
            reason = (
                "the model needs TensorFlow ops that have no TFLite builtin "
                "(it would need the Flex delegate, which stock mobile runtimes "
                "do not ship)"
            )
        else:
            reason = "the TFLite converter failed"
        detail = next(
            (line.strip() for line in message.splitlines() if "error:" in line),
            message.strip().splitlines()[0] if message.strip() else "",
        )
        raise ValueError(
            f"export_tflite: cannot convert model '{model.name}' to TFLite "
            f"builtin ops: {reason}. Converter said: {detail}"
        ) from None


# Where UnidirectionalSequenceLSTMOptions' cell_clip and proj_clip (its
# fields 1 and 2) sit in a flatbuffer vtable: 4 + 2 * field.
_CELL_CLIP_SLOT, _PROJ_CLIP_SLOT = 6, 8
# The inputs of UNIDIRECTIONAL_SEQUENCE_LSTM that hold its states
# (`output_state`, `cell_state`), as TFLite's schema numbers them.
_NATIVE_STATE_INPUTS = (18, 19)


def check_native_ops(content, plan, model):
    """Checks that every layer `plan` made native is a native op in the file
    (one a call), and that no weight is a native op's state.

    The converter falls back to converting the function's body, a loop,
    without a word when it cannot fuse it.
    """
    operators = list(_operators(content))
    found = sum(name == _native.LSTM_OP for _, _, name in operators)
    if found < plan.native_op_count:
        raise ValueError(
            f"export_tflite: model '{model.name}' should have "
            f"{plan.native_op_count} {_native.LSTM_OP} op(s) in its file "
            f"({plan.ops}), but the converter made {found}; export with "
            "lstm_op='loop'"
        )
    # The converter merges equal constants: all-zero weights of the shape of
    # a native layer's zero initial state (batch_size, units), its own gates'
    # or another layer's, become that state's variable tensor, which the op
    # overwrites as it runs.
    for graph, op, name in operators:
        is_lstm = name == _native.LSTM_OP
        for slot, index in enumerate(op.inputs):
            if index < 0 or (is_lstm and slot in _NATIVE_STATE_INPUTS):
                continue
            tensor = graph.tensors[index]
            if tensor.isVariable:
                raise ValueError(
                    f"export_tflite: TFLite's converter merged all-zero "
                    f"weights of model '{model.name}' with the zero initial "
                    f"state of a native LSTM layer (both of shape "
                    f"{tuple(int(d) for d in tensor.shape)}), so the file "
                    "would overwrite those weights as it runs; export with "
                    "lstm_op='loop', or at a batch_size other than the "
                    "layer's units"
                )


def _operators(content):
    """`(subgraph, operator, op name)` for every operator of a `.tflite` file."""
    from ai_edge_litert import schema_py_generated as schema

    from keras_lstm_gates.tflite import tflite_op_names

    names = tflite_op_names(content)
    for graph in schema.ModelT.InitFromPackedBuf(content, 0).subgraphs or ():
        for op in graph.operators or ():
            yield graph, op, names[op.opcodeIndex]


def without_cell_clip(content):
    """`content` with no clipping of the native LSTM ops' states.

    The converter writes `cell_clip=10` into every op it fuses (TF 2.21's
    `ConvertKerasLSTMLayer`), so the file would clip the long-term memory to
    [-10, 10], where Keras lets it grow: a memory that climbs past 10 and
    comes back gives another output. Zero means no clip; the float is
    overwritten where it lies in the flatbuffer, nothing else moves.
    """
    import struct

    from ai_edge_litert import schema_py_generated as schema

    from keras_lstm_gates.tflite import tflite_op_names

    data = bytearray(content)
    names = tflite_op_names(content)
    model = schema.Model.GetRootAs(data, 0)
    options = schema.UnidirectionalSequenceLSTMOptions()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            if names[op.OpcodeIndex()] != _native.LSTM_OP:
                continue
            table = op.BuiltinOptions()
            options.Init(table.Bytes, table.Pos)
            for slot in (_CELL_CLIP_SLOT, _PROJ_CLIP_SLOT):
                offset = options._tab.Offset(slot)
                if offset:
                    struct.pack_into("<f", data, table.Pos + offset, 0.0)
    return bytes(data)


def check_builtin_only(ops):
    not_builtin = sorted(op for op in ops if op.startswith("Flex") or not op.isupper())
    if not_builtin:
        raise ValueError(
            f"export_tflite: the converted file has ops that are not TFLite "
            f"builtins: {not_builtin}; it would not run on a stock runtime"
        )


def _representative_dataset(model, data, batch_size, step):
    """The converter's calibration generator, for every signature."""

    def generate():
        for start in range(0, len(data) - batch_size + 1, batch_size):
            batch = data[start : start + batch_size]
            yield SERVING, {"inputs": batch}
            if step is not None:
                states = _zero_states(step, batch_size)
                for t in range(batch.shape[1]):
                    feed = {"inputs": batch[:, t], **states}
                    yield STEP, feed
                    result = step(batch[:, t], states)
                    states = {
                        name: keras.ops.convert_to_numpy(result[name])
                        for name in step.state_names
                    }

    return generate


def _zero_states(step, batch_size):
    return {
        name: np.zeros((batch_size, units), dtype)
        for name, units, dtype in zip(
            step.state_names, step.state_units, step.state_dtypes
        )
    }
