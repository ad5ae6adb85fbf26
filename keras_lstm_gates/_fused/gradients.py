"""The loops as differentiable functions: each forward loop with its
hand-written backward pass, and the inference loops with a gradient too."""

import dataclasses
import functools
import logging

import tensorflow as tf

from keras_lstm_gates._fused import batch_major
from keras_lstm_gates._fused import internals
from keras_lstm_gates._fused import transposed
from keras_lstm_gates._fused.arrays import array_of
from keras_lstm_gates._fused.dispatch import LOGGER_NAME
from keras_lstm_gates._fused.dispatch import Layout
from keras_lstm_gates._fused.dispatch import Xla

_LOOPS = {Layout.TRANSPOSED: transposed, Layout.BATCH_MAJOR: batch_major}

_logger = logging.getLogger(LOGGER_NAME)


def with_backward(layout, options, compile_alone=False):
    """`layout`'s forward loop, whose gradient is its backward loop.

    `compile_alone` compiles the forward and backward loops with XLA each,
    for a caller XLA does not compile.
    """
    loops = _LOOPS[layout]
    forward = functools.partial(loops.forward, options)
    backward = functools.partial(loops.backward, options)
    plain = forward
    if compile_alone:
        forward = _compiled(forward)
        backward = tf.function(backward, jit_compile=True, autograph=False)

    @tf.custom_gradient
    def fused(events, stm0, ltm0, *stored):
        weights = _in_dtype_of(events, stored)
        stms, ltm_last, records = forward(events, stm0, ltm0, *weights)
        if tf.executing_eagerly() and layout is Layout.TRANSPOSED:
            # As tensors: an eager TensorArray cannot be read from a graph,
            # and `tape.jacobian` traces the backward pass into one.
            records = {k: ta.stack() for k, ta in records.items()}

        def grad(d_stms, d_ltm_last):
            if compile_alone and internals.tape_recording():
                # A gradient of this gradient may be asked (a gradient
                # penalty): the compiled loop's records are out of the
                # tape's reach, so differentiate the loop itself.
                _logger.debug("gradient by autodiff: a tape records it")
                return _autodiff_gradient(
                    lambda e, h, c, *w: plain(e, h, c, *_in_dtype_of(e, w))[:2]
                )((events, stm0, ltm0, *stored), (d_stms, d_ltm_last))
            arrays = records
            if layout is Layout.TRANSPOSED:  # its backward loop reads arrays
                arrays = {
                    k: array_of(v) if isinstance(v, tf.Tensor) else v
                    for k, v in records.items()
                }
            grads = backward(arrays, events, stm0, weights, d_stms, d_ltm_last)
            # The weights' gradients in the weights' own dtype.
            return grads[:3] + [tf.cast(g, w.dtype) for g, w in zip(grads[3:], stored)]

        return (stms, ltm_last), grad

    return fused


def inference(route, options):
    """`route`'s forward loop saving nothing, of `(events, STM_0, LTM_0,
    *weights) -> (STM, LTM_T)`.

    A caller may still take a gradient through it (a frozen discriminator,
    a saliency map). TensorFlow differentiates the loop as it is where XLA
    does not compile it; a compiled loop cannot be differentiated from
    outside, so its gradient runs the training loops of the same layout.
    """
    loops = _LOOPS[route.layout]

    def forward(events, stm0, ltm0, *stored):
        weights = _in_dtype_of(events, stored)
        stms, ltm_last, _ = loops.forward(
            forward_options, events, stm0, ltm0, *weights, record=False
        )
        return stms, ltm_last

    # The step's own XLA kernel is for a loop in TensorFlow's executor.
    compiled = route.xla is not Xla.NONE
    forward_options = dataclasses.replace(
        options, jit_step=options.jit_step and not compiled
    )
    if not compiled:
        return forward
    if route.xla is Xla.OWN:
        forward = _compiled(forward)
    # The gradient's training loops record `[STM_{t-1}, E_t]`: projected in
    # the loop; outside XLA (`Xla.OWN`), one `sigmoid` for the three gates.
    train_options = dataclasses.replace(
        options,
        hoist=False,
        sigmoid_per_gate=options.sigmoid_per_gate and route.xla is Xla.CALLER,
    )
    train = with_backward(route.layout, train_options)
    return _differentiable(forward, _autodiff_gradient(train))


def _in_dtype_of(events, weights):
    """`weights` cast to the matmuls' dtype, that of `events`.

    The loops take the weights in their own dtype (float32 under mixed
    precision) and cast them here, inside the functions whose gradients are
    written by hand: the weights' gradients then leave in float32 too.
    """
    return [tf.cast(w, events.dtype) for w in weights]


def _compiled(function):
    """`function` compiled with XLA, called where no tape records it.

    A function compiled with XLA, called while a persistent tape (or two
    nested tapes) records, fails in TensorFlow ("TensorList crossing the
    XLA/TF boundary"): the tape asks for the loop's intermediates. Its
    callers give it a gradient of their own, so nothing is lost.
    """
    compiled = tf.function(function, jit_compile=True, autograph=False)

    def call(*inputs):
        return compiled(*(tf.stop_gradient(t) for t in inputs))

    return call


def _differentiable(forward, gradient):
    """`forward` with `gradient(inputs, output_gradients)` as its gradient."""

    @tf.custom_gradient
    def call(*inputs):
        def grad(*output_gradients):
            return gradient(inputs, output_gradients)

        return forward(*inputs), grad

    return call


def _autodiff_gradient(forward):
    """The gradient of `forward` (a loop TensorFlow can differentiate: not
    compiled with XLA, or with a gradient of its own) by autodiff."""

    def gradient(inputs, output_gradients):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = forward(*inputs)
        return tape.gradient(outputs, inputs, output_gradients=output_gradients)

    return gradient
