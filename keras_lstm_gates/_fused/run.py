"""`run`: the four-gate LSTM over a whole sequence on TensorFlow.

`FourGateLSTM.inner_loop` calls `run`, which gathers the static facts,
asks `dispatch.choose` for a route, lays the tensors out as that route's
loop holds them, runs it, and lays its outputs back out as Keras's backend
`rnn` returns them. Under a mixed-precision policy only the matmuls run in
16 bits (where they are fast); the state `LTM`/`STM` and the gates stay in
float32, so the long-term memory does not lose bits step after step.
"""

import dataclasses
import logging

import tensorflow as tf
from keras import activations

from keras_lstm_gates._fused import dispatch
from keras_lstm_gates._fused import gradients
from keras_lstm_gates._fused import hardware
from keras_lstm_gates._fused import internals
from keras_lstm_gates._fused.dispatch import Layout
from keras_lstm_gates._fused.dispatch import Xla
from keras_lstm_gates._fused.gates import loop_order

_logger = logging.getLogger(dispatch.LOGGER_NAME)


@dataclasses.dataclass(frozen=True, eq=False)
class LoopOptions:
    """What a loop needs to know beyond its tensors."""

    projected: bool  # `use_gate="projected"`: `W_u`, `b_u` follow the weights
    mask: object  # the mask in the loop's layout, or `None`
    all_outputs: bool  # every step's `STM_t`, or only the last
    jit_step: bool = False  # see `dispatch.Route`
    sigmoid_per_gate: bool = False  # see `dispatch.Route`
    hoist: bool = False  # see `dispatch.Route`


def supports(cell, unroll, training):
    """Whether the layer may take this path.

    For the cell's own activations and no `unroll`; recurrent dropout (which
    masks `STM` inside the step) only outside training.
    """
    return (
        not unroll
        and cell.activation is activations.tanh
        and cell.recurrent_activation is activations.sigmoid
        and not (training and cell.recurrent_dropout)
    )


def facts_of(sequences, units, projected, training):
    """The `dispatch.Facts` of a call, as it is traced now."""
    facts = dict(
        training=training,
        in_xla=internals.in_xla_context(),
        eager=tf.executing_eagerly(),
        static_shapes=sequences.shape.is_fully_defined(),
        batch=sequences.shape[0],
        units=units,
        projected=projected,
        compute_dtype=sequences.dtype.name,
        cpu_flags=hardware.cpu_flags(),
        gpu=hardware.has_gpu() if sequences.dtype.size < 4 else False,
    )
    return dispatch.Facts(**{**facts, **dispatch.requested_facts()})


def run(
    sequences,
    initial_state,
    kernel,
    bias,
    recurrent_kernel,
    use_gate_kernel=None,
    use_gate_bias=None,
    mask=None,
    go_backwards=False,
    zero_output_for_mask=False,
    return_all_outputs=True,
    training=True,
):
    """Runs the cell over a sequence.

    Args:
        sequences: The events, `(batch, time, features)`.
        initial_state: `[STM_0, LTM_0]`, each `(batch, units)`.
        kernel: `(features, 4 * units)`, gates in the cell's order
            `i, f, N, V`.
        bias: `(4 * units,)`, or `None`.
        recurrent_kernel: `(units, 4 * units)`.
        use_gate_kernel: `W_u`, `(units, units)`, for the projected Use
            gate; `None` for the classic one.
        use_gate_bias: `b_u`, `(units,)`, or `None`.
        mask: Optional boolean `(batch, time)`; masked steps keep the state.
        go_backwards: Whether to read the sequence backwards.
        zero_output_for_mask: Whether masked steps output zeros (else the
            last output).
        return_all_outputs: Whether `outputs` holds every step or the last.
        training: Whether gradients will be taken: the loop then saves what
            the hand-written backward pass needs.

    Returns:
        `(last_output, outputs, [STM_T, LTM_T])`, as `keras`'s backend `rnn`,
        in the dtype of `sequences`.
    """
    compute_dtype = sequences.dtype
    dtype = tf.float32 if compute_dtype.size < 4 else compute_dtype
    units = recurrent_kernel.shape[0]
    batch, steps = sequences.shape[0], sequences.shape[1]
    projected = use_gate_kernel is not None
    facts = facts_of(sequences, units, projected, training)
    route = dispatch.choose(facts)
    extra = {"route": route, "facts": facts}
    _logger.debug("%s: %s", route.name, route.reason, extra=extra)
    if bias is None:
        bias = tf.zeros((4 * units,), kernel.dtype)
    if projected and use_gate_bias is None:
        use_gate_bias = tf.zeros((units,), kernel.dtype)

    events = tf.cast(sequences, route.matmul_dtype)
    events = tf.transpose(events, (1, 0, 2))  # time-major
    if go_backwards:
        events = tf.reverse(events, [0])
    if mask is not None:
        mask = tf.transpose(tf.cast(mask, tf.bool))[..., None]  # (time, batch, 1)
        if go_backwards:
            mask = tf.reverse(mask, [0])
    stm0, ltm0 = (tf.cast(s, dtype) for s in initial_state)
    use = (use_gate_kernel, use_gate_bias) if projected else ()
    weights = (kernel, recurrent_kernel, bias)
    if route.layout is Layout.TRANSPOSED:
        stms, ltm_last = _transposed(
            route, events, stm0, ltm0, mask, return_all_outputs, weights, use
        )
    else:
        stms, ltm_last = _batch_major(
            route, events, stm0, ltm0, mask, return_all_outputs, weights, use
        )

    outputs = stms
    if mask is not None:
        keep = mask
        if not zero_output_for_mask:
            # Until a first unmasked step, the output is zero, not STM_0.
            keep = tf.cumsum(tf.cast(mask, tf.int32), axis=0) > 0
        # Selected, not multiplied by 0: a NaN state gives 0 here, as Keras.
        keep = keep if return_all_outputs else keep[-1:]
        outputs = tf.where(keep, stms, tf.zeros_like(stms))
    outputs = tf.cast(tf.transpose(outputs, (1, 0, 2)), compute_dtype)
    outputs.set_shape((batch, steps if return_all_outputs else 1, units))
    states = [tf.cast(s, compute_dtype) for s in (stms[-1], ltm_last)]
    for state in states:
        state.set_shape((batch, units))
    return outputs[:, -1], outputs, states


def _options(route, mask, all_outputs, projected):
    return LoopOptions(
        projected,
        mask,
        all_outputs,
        jit_step=route.jit_step,
        sigmoid_per_gate=route.sigmoid_per_gate,
        hoist=route.hoist,
    )


def _transposed(route, events, stm0, ltm0, mask, all_outputs, weights, use):
    """Runs the transposed loop on time-major tensors; `(STM, LTM_T)` back
    in `(time, batch, units)` and `(batch, units)`."""
    kernel, recurrent_kernel, bias = weights
    units, batch = recurrent_kernel.shape[0], events.shape[1]
    events = tf.transpose(events, (0, 2, 1))
    # XLA's CPU backend (TensorFlow 2.21) can miscompile a float64
    # concatenation of a row of ones; this one, after the transposes, comes
    # out right (tested in float64 at batch 4).
    events = tf.concat([events, tf.ones_like(events[:, :1])], axis=1)
    # The gates in the loops' order `i, f, V, N` (`loop_order`), as rows.
    stacked = tf.concat([recurrent_kernel, kernel, tf.reshape(bias, (1, -1))], 0)
    weights = [tf.transpose(loop_order(stacked, units))]
    if use:
        w_u, b_u = use
        weights.append(tf.transpose(tf.concat([w_u, tf.reshape(b_u, (1, -1))], 0)))
    if mask is not None:
        mask = tf.transpose(mask, (0, 2, 1))
    stm0, ltm0 = tf.transpose(stm0), tf.transpose(ltm0)
    for state in (stm0, ltm0):
        state.set_shape((units, batch))
    options = _options(route, mask, all_outputs, bool(use))
    if route.training:
        loop = gradients.with_backward(route.layout, options)
    else:
        loop = gradients.inference(route, options)
    stms, ltm_last = loop(events, stm0, ltm0, *weights)
    return tf.transpose(stms, (0, 2, 1)), tf.transpose(ltm_last)


def _batch_major(route, events, stm0, ltm0, mask, all_outputs, weights, use):
    """Runs the batch-major loop on time-major tensors."""
    units = weights[1].shape[0]
    # The gates in the loops' order `i, f, V, N` (`loop_order`).
    weights = [loop_order(w, units) for w in weights] + list(use)
    options = _options(route, mask, all_outputs, bool(use))
    if route.training:
        loop = gradients.with_backward(
            route.layout, options, compile_alone=route.xla is Xla.OWN
        )
    else:
        loop = gradients.inference(route, options)
    return loop(events, stm0, ltm0, *weights)
