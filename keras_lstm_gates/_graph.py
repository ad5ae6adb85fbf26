"""Reading a Keras model's graph: its layers, and which tensors each reads.

Streaming needs to know whether a model's layers form a chain; export needs
every layer, nested ones included, and which layer reads the model's input.
Both ask here.
"""

import keras
import numpy as np

from keras_lstm_gates.cell import FourGateLSTMCell


def is_four_gate_layer(layer) -> bool:
    """Whether `layer` is a `FourGateLSTM` or an RNN of a `FourGateLSTMCell`."""
    return isinstance(layer, keras.layers.RNN) and isinstance(
        getattr(layer, "cell", None), FourGateLSTMCell
    )


def all_layers(layer):
    """Every layer inside `layer`: nested models and wrappers included."""
    inner = list(getattr(layer, "layers", None) or [])
    for name in ("layer", "forward_layer", "backward_layer"):
        if isinstance(getattr(layer, name, None), keras.layers.Layer):
            inner.append(getattr(layer, name))
    for sublayer in inner:
        yield sublayer
        yield from all_layers(sublayer)


def sole_input(layer):
    """The one tensor `layer` was called on in its model, or `None`.

    The mask that Keras passes along with it (`mask=`, from an `Embedding`
    or a `Masking` layer) is not another input: the step carries it. Any
    other tensor argument (an `initial_state`, a second input) is.
    """
    first, mask = _input_and_mask(layer)
    if mask is not None and not _same_computation(
        mask, getattr(first, "_keras_mask", None)
    ):
        return None
    return first


def _input_and_mask(layer):
    """`(tensor, mask)` of a layer called once on one tensor (`mask=` may be
    `None`), else `(None, None)`."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    if len(nodes) != 1:
        return None, None
    arguments = nodes[0].arguments
    mask = arguments.kwargs.get("mask")
    tensors = [t for t in arguments.keras_tensors if t is not mask]
    if len(tensors) != 1:  # none, or a second input (an `initial_state`)
        return None, None
    return tensors[0], mask  # passed by position or by keyword


def reads_with_other_mask(layer, tensor):
    """Whether `layer` reads `tensor` alone, with a mask `sole_input` refused."""
    first, mask = _input_and_mask(layer)
    return first is tensor and mask is not None


def _same_computation(a, b, depth=0, memo=None):
    """Whether Keras tensors `a` and `b` are the same, or computed alike.

    A model loaded from a `.keras` file passes a recurrent layer a mask
    computed again (`not_equal(ids, 0)` once more), not the very tensor its
    input carries: the same operations on the same tensors and values.
    Each pair is compared once (`memo`): a mask that reads a tensor twice
    would otherwise double the work at every level.
    """
    if a is b:
        return True
    memo = {} if memo is None else memo
    key = (id(a), id(b))
    if key not in memo:
        memo[key] = _same_operation(a, b, depth, memo)
    return memo[key]


def _same_operation(a, b, depth, memo):
    """`_same_computation` of two distinct tensors: the same operation with
    the same settings, on arguments computed alike."""
    history_a = getattr(a, "_keras_history", None)
    history_b = getattr(b, "_keras_history", None)
    if history_a is None or history_b is None or depth > 16:
        return False
    op_a, op_b = history_a.operation, history_b.operation
    if isinstance(op_a, keras.layers.Layer) or isinstance(op_b, keras.layers.Layer):
        return False  # a layer's output is the same only as itself
    if type(op_a) is not type(op_b) or history_a.tensor_index != history_b.tensor_index:
        return False
    settings_a, settings_b = _op_settings(op_a), _op_settings(op_b)
    if settings_a.keys() != settings_b.keys() or not all(
        _equal_values(settings_a[k], settings_b[k]) for k in settings_a
    ):
        return False
    node_a = op_a._inbound_nodes[history_a.node_index].arguments
    node_b = op_b._inbound_nodes[history_b.node_index].arguments
    flat_a = keras.tree.flatten((node_a.args, node_a.kwargs))
    flat_b = keras.tree.flatten((node_b.args, node_b.kwargs))
    if len(flat_a) != len(flat_b):
        return False
    for x, y in zip(flat_a, flat_b):
        symbolic = [isinstance(v, keras.KerasTensor) for v in (x, y)]
        if any(symbolic):
            if not all(symbolic) or not _same_computation(x, y, depth + 1, memo):
                return False
        elif not _equal_values(x, y):
            return False
    return True


def _op_settings(op):
    """An operation's attributes (`axis`, `keepdims`, ...), without its name."""
    return {
        k: v
        for k, v in vars(op).items()
        if not k.startswith("_") and k not in ("name", "built")
    }


def _equal_values(x, y):
    """Whether two constants are equal (NaN equal to NaN: `Masking(nan)`)."""
    if type(x) is not type(y):
        return False
    # `equal_nan` asks for numbers; strings, `None` and dtypes compare without.
    for options in ({"equal_nan": True}, {}):
        try:
            return bool(np.array_equal(x, y, **options))
        except TypeError:
            continue
        except ValueError:
            return False
    return False
