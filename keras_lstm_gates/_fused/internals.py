"""The TensorFlow and Keras internals the fused path needs, in one place.

Each is imported when this module is, so a TensorFlow or Keras that moved
one fails here, at once and by name, never by silently taking another path.
"""

import tensorflow as tf

try:
    from keras.src.backend import AutocastScope
    from tensorflow.python.eager import record
    from tensorflow.python.ops import control_flow_util
except (
    ImportError
) as error:  # pragma: no cover - a TensorFlow or Keras we do not support
    raise ImportError(
        "keras_lstm_gates' fused loop needs Keras's AutocastScope and "
        "TensorFlow's control_flow_util and eager.record, which this Keras or "
        f"TensorFlow does not have where expected ({error}). Use the versions "
        "in setup.cfg's install_requires"
    ) from error


def stored_values(*variables):
    """The layer's variables as tensors in their own dtype (`None` stays).

    Under a mixed-precision policy Keras reads a layer's float32 variables
    cast to the 16-bit compute dtype, so their gradients would come back
    through 16 bits. The loops take them as stored and cast them inside,
    so the gradients, sums over batch and time, come back in float32.
    """
    with AutocastScope(None):
        return [None if v is None else tf.convert_to_tensor(v) for v in variables]


def in_xla_context():
    """Whether the function being traced will be compiled by XLA."""
    graph = tf.compat.v1.get_default_graph()
    return bool(control_flow_util.GraphOrParentsInXlaContext(graph))


def tape_recording():
    """Whether a gradient tape records now: while a gradient is computed, a
    tape that records it may ask for the gradient of that gradient."""
    return record.could_possibly_record()
