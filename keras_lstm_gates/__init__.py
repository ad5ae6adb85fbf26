"""keras-lstm-gates: an LSTM written as the Learn, Forget, Remember and Use gates.

The public API:

- `FourGateLSTMCell`: one step, for `keras.layers.RNN`.
- `FourGateLSTM`: the layer over a whole sequence, like `keras.layers.LSTM`.
- `trace_gates`: every gate's activation at every step, for reading and plots.
- `export_saved_model`, `export_tflite`: a SavedModel for servers, a TFLite
  (LiteRT) file of builtin ops for phones, with measured parity.
- `tflite_tracing`: trace for your own TFLite converter as `export_tflite` does.
- `TFLiteModel`: run an exported `.tflite` file, whole sequence or step by step.
"""

__version__ = "0.3.0"

# First: for our command lines, it imports TensorFlow without its C++ start-up log.
from keras_lstm_gates import _startup_log  # noqa: F401
from keras_lstm_gates.cell import FourGateLSTMCell
from keras_lstm_gates.cell import GateActivations
from keras_lstm_gates.export import TFLiteExport
from keras_lstm_gates.export import export_saved_model
from keras_lstm_gates.export import export_tflite
from keras_lstm_gates.export import tflite_tracing
from keras_lstm_gates.layer import FourGateLSTM
from keras_lstm_gates.tflite import TFLiteModel
from keras_lstm_gates.trace import trace_gates

__all__ = [
    "FourGateLSTM",
    "FourGateLSTMCell",
    "GateActivations",
    "TFLiteExport",
    "TFLiteModel",
    "export_saved_model",
    "export_tflite",
    "tflite_tracing",
    "trace_gates",
    "__version__",
]
