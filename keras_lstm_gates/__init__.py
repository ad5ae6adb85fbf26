"""keras-lstm-gates: an LSTM written as the Learn, Forget, Remember and Use gates.

The public API:

- `FourGateLSTMCell`: one step, for `keras.layers.RNN`.
- `FourGateLSTM`: the layer over a whole sequence, like `keras.layers.LSTM`.
- `trace_gates`: every gate's activation at every step, for reading and plots.
"""

__version__ = "0.1.0"

from keras_lstm_gates.cell import FourGateLSTMCell
from keras_lstm_gates.cell import GateActivations
from keras_lstm_gates.layer import FourGateLSTM
from keras_lstm_gates.trace import trace_gates

__all__ = [
    "FourGateLSTM",
    "FourGateLSTMCell",
    "GateActivations",
    "trace_gates",
    "__version__",
]
