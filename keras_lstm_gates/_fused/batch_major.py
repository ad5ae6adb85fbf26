"""The batch-major loop: state `(batch, units)`, as Keras's LSTM holds it.

Each step computes `[STM_{t-1}, E_t] @ [recurrent_kernel; kernel] + bias`
in one matmul (the gates in the loops' order `i, f, V, N`); the backward
pass makes one matmul a step for `STM_{t-1}`'s gradient (two for the
projected Use gate), and the gradients of the events and of all weights as
large matmuls after the loop, which XLA's CPU backend runs fast. For a
TFLite export the events' projection is one matmul before the loop instead
(`hoist`), which the converter turns into one `FULLY_CONNECTED` over the
whole sequence, its weights kept in int8 by dynamic-range quantization.
"""

import logging

import tensorflow as tf

from keras_lstm_gates._fused import gates
from keras_lstm_gates._fused.arrays import array
from keras_lstm_gates._fused.arrays import array_of
from keras_lstm_gates._fused.arrays import gradients_into_step
from keras_lstm_gates._fused.arrays import keep_masked
from keras_lstm_gates._fused.arrays import length
from keras_lstm_gates._fused.arrays import pass_masked
from keras_lstm_gates._fused.dispatch import LOGGER_NAME
from keras_lstm_gates._fused.dispatch import Layout

_GATE_RECORDS = ("i", "f", "v", "n", "ltm", "u")

_logger = logging.getLogger(LOGGER_NAME)


def forward(
    options, events, stm0, ltm0, kernel, recurrent_kernel, bias, *use, record=True
):
    """The forward loop.

    `events` `(time, batch, features)`, the state `(batch, units)`, the
    weights as the cell's but with the gates in the loops' order; `use`
    `(W_u, b_u)` for the projected Use gate.

    Returns `(STM, LTM_T, records)`: `STM` stacks `STM_t` for every step if
    `options.all_outputs` (else only the last); `records` (empty without
    `record`) maps each tensor the backward pass reads (`i`, `f`, `v`,
    `n`, `ltm` (`LTM_{t-1}`), `u`, `stm_event` (`[STM_{t-1}, E_t]`) and,
    for the projected Use gate, `kept`) to its stacked steps.
    """
    # The records hold `[STM_{t-1}, E_t]`, which a hoisted projection skips.
    assert not (record and options.hoist), "hoist is for inference alone"
    layout = Layout.BATCH_MAJOR
    _logger.debug("traced: batch-major forward", extra={"layout": layout})
    dtype, mm_dtype = stm0.dtype, kernel.dtype
    steps = length(events)
    mask_ta = array_of(options.mask) if options.mask is not None else None
    if options.hoist:  # (time * batch, features) @ kernel: one matmul
        projection = tf.matmul(tf.reshape(events, (-1, events.shape[2])), kernel)
        projection = tf.reshape(
            projection + bias, tf.concat([tf.shape(events)[:2], [-1]], 0)
        )
        projection.set_shape(events.shape[:2].concatenate(bias.shape))
        events_ta = array_of(projection)
    else:
        events_ta = array_of(events)
        stacked_kernel = tf.concat([recurrent_kernel, kernel], axis=0)
    names = []
    if record:
        # One array per gate: XLA slices them no faster than it writes them.
        names = [*_GATE_RECORDS, "stm_event"] + (["kept"] if options.projected else [])
    stm_event_shape = (stm0.shape[0], stm0.shape[1] + kernel.shape[0])
    arrays = {
        name: array(
            steps,
            stm_event_shape if name == "stm_event" else stm0.shape,
            mm_dtype if name in ("stm_event", "kept") else dtype,
        )
        for name in names
    }
    outputs = array(steps if options.all_outputs else 1, stm0.shape, dtype)

    def step(t, stm, ltm, arrays, outputs):
        stm_mm = tf.cast(stm, mm_dtype)
        if options.hoist:
            stm_event = None
            z = events_ta.read(t) + tf.matmul(stm_mm, recurrent_kernel)
        else:
            stm_event = tf.concat([stm_mm, events_ta.read(t)], axis=1)
            z = tf.matmul(stm_event, stacked_kernel) + bias
        ifv, n, kept, new_ltm = gates.learn_forget_remember(
            z, ltm, 1, options.sigmoid_per_gate
        )
        if options.projected:
            kept = tf.cast(kept, mm_dtype)
            z_u = tf.matmul(kept, use[0]) + use[1]
            u, new_stm = gates.use_projected(z_u, ifv, 1)
        else:
            u, new_stm = gates.use_classic(new_ltm, ifv, 1)
        new_stm, new_ltm = keep_masked(mask_ta, t, (new_stm, new_ltm), (stm, ltm))
        values = dict(zip("ifv", tf.split(ifv, 3, axis=1)))
        values.update(n=n, ltm=ltm, u=u, stm_event=stm_event, kept=kept)
        arrays = {k: ta.write(t, values[k]) for k, ta in arrays.items()}
        if options.all_outputs:
            outputs = outputs.write(t, new_stm)
        return t + 1, new_stm, new_ltm, arrays, outputs

    _, stm_last, ltm_last, arrays, outputs = tf.while_loop(
        lambda t, *_: t < steps,
        step,
        (tf.constant(0), stm0, ltm0, arrays, outputs),
        maximum_iterations=steps,
    )
    stms = outputs.stack() if options.all_outputs else stm_last[None]
    stms.set_shape((events.shape[0] if options.all_outputs else 1, *stm0.shape))
    return stms, ltm_last, {k: ta.stack() for k, ta in arrays.items()}


def backward(options, records, events, stm0, weights, d_stms, d_ltm):
    """Backpropagation through time for `forward`; the inputs' gradients."""
    kernel, recurrent_kernel, bias, *use = weights
    dtype, mm_dtype = stm0.dtype, kernel.dtype
    steps = length(events)
    batch, units = stm0.shape
    d_outputs_ta = None
    if options.all_outputs:
        d_outputs_ta = array_of(d_stms)
        d_stm_last = tf.zeros_like(stm0)
    else:
        d_stm_last = d_stms[-1]
    mask_ta = None
    if options.mask is not None:
        mask_ta = array_of(tf.cast(options.mask, dtype))
    arrays = {"dz": array(steps, (batch, 4 * units), mm_dtype)}
    if options.projected:
        arrays["du"] = array(steps, (batch, units), mm_dtype)
    stacked = records
    records = {k: array_of(v) for k, v in stacked.items()}
    recurrent_kernel_t = tf.transpose(recurrent_kernel)
    w_u_t = tf.transpose(use[0]) if options.projected else None

    def step(t, d_stm, d_ltm, arrays):
        arrays = dict(arrays)
        n, ltm_prev, u = (records[k].read(t) for k in ("n", "ltm", "u"))
        ifv = tf.concat([records[k].read(t) for k in "ifv"], axis=1)
        d_stm, d_stm_in, d_ltm_in, m = gradients_into_step(
            t, d_stm, d_ltm, d_outputs_ta, mask_ta
        )
        if options.projected:
            du, dv = gates.use_projected_grad(d_stm_in, ifv, u, 1)
            du = tf.cast(du, mm_dtype)
            arrays["du"] = arrays["du"].write(t, du)
            d_kept = tf.matmul(du, w_u_t)
            dz, d_ltm_prev = gates.learn_forget_remember_grad(
                d_ltm_in, d_kept, dv, ifv, n, ltm_prev, 1
            )
        else:
            dz, d_ltm_prev = gates.classic_step_grad(
                d_stm_in, d_ltm_in, ifv, n, ltm_prev, u, 1
            )
        dz = tf.cast(dz, mm_dtype)
        arrays["dz"] = arrays["dz"].write(t, dz)
        d_stm_prev = tf.cast(tf.matmul(dz, recurrent_kernel_t), dtype)
        d_stm_prev, d_ltm_prev = pass_masked(m, d_stm, d_ltm, d_stm_prev, d_ltm_prev)
        return t - 1, d_stm_prev, d_ltm_prev, arrays

    _, d_stm0, d_ltm0, arrays = tf.while_loop(
        lambda t, *_: t >= 0,
        step,
        (steps - 1, d_stm_last, d_ltm, arrays),
        maximum_iterations=steps,
    )

    def rows(tensor):  # (time, batch, n) -> (time * batch, n)
        if isinstance(tensor, tf.TensorArray):
            tensor = tensor.stack()
        return tf.reshape(tensor, (-1, tensor.shape[-1]))

    sum_dtype = gates.weight_gradient_dtype(mm_dtype, dtype)

    def weight_gradient(operand, d):  # sum over time and batch of operand^T d
        operand, d = tf.cast(operand, sum_dtype), tf.cast(d, sum_dtype)
        return tf.matmul(operand, d, transpose_a=True)

    def bias_gradient(d):  # summed in float32 even for 16-bit matmuls
        return tf.reduce_sum(tf.cast(d, dtype), axis=0)

    dz = rows(arrays["dz"])
    # One matmul for both kernels: [STM_{t-1}, E_t]^T dz.
    d_recurrent, d_kernel = tf.split(
        weight_gradient(rows(stacked["stm_event"]), dz), [units, -1], axis=0
    )
    grads = [
        tf.reshape(tf.matmul(dz, kernel, transpose_b=True), tf.shape(events)),
        d_stm0,
        d_ltm0,
        d_kernel,
        d_recurrent,
        bias_gradient(dz),
    ]
    if options.projected:
        du = rows(arrays["du"])
        grads += [weight_gradient(rows(stacked["kept"]), du), bias_gradient(du)]
    return grads
