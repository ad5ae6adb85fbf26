"""The four-gate LSTM's whole-sequence loops on TensorFlow (`run.run`).

`dispatch` picks the loop from static facts (and imports no TensorFlow);
`gates` holds one step's gates and their gradients, which both loops reuse;
`transposed` and `batch_major` are the two loops, each forward and
backward; `gradients` makes them differentiable; `internals` holds the
TensorFlow and Keras internals they need. See `docs/architecture.md`.
"""

from keras_lstm_gates._fused.dispatch import exporting

__all__ = ["exporting"]
