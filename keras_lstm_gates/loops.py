"""Which whole-sequence loop `FourGateLSTM` runs on TensorFlow, and why.

On the TensorFlow backend the layer runs one of two fused loops, the
`Layout.TRANSPOSED` one or the `Layout.BATCH_MAJOR` one, each with a
hand-written backward pass, and compiled with XLA or not (`Xla`). `choose`
is the pure rule that picks a `Route` from the static `Facts` of a call;
`docs/architecture.md` tells it in words.

To see the route each call takes, turn on the `keras_lstm_gates.loops`
logger at DEBUG level: every traced call logs one record whose message
names the route and the reason, and whose `route` attribute is the `Route`.

>>> import logging
>>> logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG)  # doctest: +SKIP

`force` overrides the rule for the layers traced inside it, for tests and
experiments; the other backends run Keras's own loop and ignore it.
"""

from keras_lstm_gates._fused.dispatch import LOGGER_NAME
from keras_lstm_gates._fused.dispatch import WIDE_UNITS
from keras_lstm_gates._fused.dispatch import Facts
from keras_lstm_gates._fused.dispatch import Layout
from keras_lstm_gates._fused.dispatch import Route
from keras_lstm_gates._fused.dispatch import Xla
from keras_lstm_gates._fused.dispatch import choose
from keras_lstm_gates._fused.dispatch import force

__all__ = [
    "LOGGER_NAME",
    "WIDE_UNITS",
    "Facts",
    "Layout",
    "Route",
    "Xla",
    "choose",
    "force",
]
