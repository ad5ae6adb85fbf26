"""The transposed loop: state `(units, batch)`, gates along axis 0.

One matmul a step computes all four gates as `W @ [STM_{t-1}; E_t; 1]`
(the bias is the last column of `W`, the gates in the loops' order
`i, f, V, N`): each gate's block of `z` is a contiguous slice TensorFlow
splits without copying. The backward pass is written by hand: two matmuls a
step, the fused `SigmoidGrad`/`TanhGrad` ops, and what the forward loop
saved kept in one `TensorArray` per tensor.
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

_logger = logging.getLogger(LOGGER_NAME)


def _classic_step(jit_step):
    return gates.as_one_kernel(gates.classic_step) if jit_step else gates.classic_step


def forward(options, events, stm0, ltm0, kernel, use=None, record=True):
    """The forward loop.

    `events` `(time, features + 1, batch)` (a row of ones last), `kernel`
    `(4 * units, units + features + 1)`, `use` `[W_u, b_u]` transposed,
    `(units, units + 1)`, for the projected Use gate.

    Returns `(STM, LTM_T, records)`: `STM` stacks `STM_t` for every step if
    `options.all_outputs` (else only the last); `records` (empty without
    `record`) holds one `TensorArray` per tensor the backward pass reads:
    `ifv`, `n`, `ltm` (`LTM_{t-1}`), `u`, `stm_event` (`[STM_{t-1}; E_t; 1]`)
    and, for the projected Use gate, `kept`. The state is in `stm0`'s
    dtype; the matmuls and their operands in `kernel`'s.
    """
    _logger.debug("traced: transposed forward", extra={"layout": Layout.TRANSPOSED})
    units = stm0.shape[0]
    dtype, mm_dtype = stm0.dtype, kernel.dtype
    steps = length(events)
    events_ta = array_of(events)
    mask_ta = array_of(options.mask) if options.mask is not None else None
    shapes = {}
    if record:
        shapes = {
            "ifv": (3 * units, stm0.shape[1]),
            "n": stm0.shape,
            "ltm": stm0.shape,
            "u": stm0.shape,
            "stm_event": (kernel.shape[1], stm0.shape[1]),
        }
        if options.projected:
            shapes["kept"] = stm0.shape
    if options.all_outputs:
        shapes["stm"] = stm0.shape
    arrays = {
        name: array(steps, shape, mm_dtype if name in ("stm_event", "kept") else dtype)
        for name, shape in shapes.items()
    }
    if options.projected:
        w_u, b_u = use[:, :units], use[:, units:]
    classic_step = _classic_step(options.jit_step)

    def step(t, stm, ltm, arrays):
        stm_event = tf.concat([tf.cast(stm, mm_dtype), events_ta.read(t)], axis=0)
        z = tf.matmul(kernel, stm_event)
        kept = None
        if options.projected:
            ifv, n, kept, new_ltm = gates.learn_forget_remember(
                z, ltm, 0, options.sigmoid_per_gate
            )
            # `b_u` added, not a row of ones concatenated to `kept`: XLA's
            # CPU backend (TensorFlow 2.21) miscompiles that concatenation
            # in float64 at some shapes.
            kept = tf.cast(kept, mm_dtype)
            u, new_stm = gates.use_projected(tf.matmul(w_u, kept) + b_u, ifv, 0)
        else:
            ifv, n, new_ltm, u, new_stm = classic_step(
                z, ltm, 0, options.sigmoid_per_gate
            )
        new_stm, new_ltm = keep_masked(mask_ta, t, (new_stm, new_ltm), (stm, ltm))
        values = {"stm": new_stm, "ifv": ifv, "n": n, "ltm": ltm, "u": u}
        values.update(stm_event=stm_event, kept=kept)
        arrays = {k: ta.write(t, values[k]) for k, ta in arrays.items()}
        return t + 1, new_stm, new_ltm, arrays

    _, stm_last, ltm_last, arrays = tf.while_loop(
        lambda t, *_: t < steps,
        step,
        (tf.constant(0), stm0, ltm0, arrays),
        maximum_iterations=steps,
        parallel_iterations=32,
    )
    stms = arrays.pop("stm").stack() if options.all_outputs else stm_last[None]
    return stms, ltm_last, arrays


def backward(options, records, events, stm0, weights, d_stms, d_ltm):
    """Backpropagation through time; returns the inputs' gradients.

    One matmul a step for the state's gradient. The weights' gradient is
    one more matmul a step, summed; with 16-bit matmuls it is one large
    matmul after the loop instead, over the saved gradients of the
    pre-activations (casting a float32 sum each step would cost more).
    """
    kernel, *use = weights
    units, batch = stm0.shape
    dtype, mm_dtype = stm0.dtype, kernel.dtype
    after_loop = mm_dtype != dtype
    steps = length(events)
    projected = options.projected

    def steps_array(rows, dtype=mm_dtype):
        return array(steps, (rows, batch), dtype)

    d_outputs_ta = None
    if options.all_outputs:
        d_outputs_ta = steps_array(units, dtype).unstack(d_stms)
        d_stm_last = tf.zeros_like(stm0)
    else:
        d_stm_last = d_stms[-1]
    mask_ta = None
    if options.mask is not None:
        mask_ta = steps_array(1, dtype).unstack(tf.cast(options.mask, dtype))
    # What the loop writes per step, and the weights' gradients it sums.
    arrays = {"events": steps_array(kernel.shape[1] - units)}
    sums = {}
    if after_loop:
        arrays["dz"] = steps_array(kernel.shape[0])
        if projected:
            arrays["du"] = steps_array(units)
    else:
        sums["kernel"] = tf.zeros_like(kernel)
        if projected:  # `W_u`'s gradient and `b_u`'s, as a column
            sums["w_u"] = tf.zeros_like(use[0][:, :units])
            sums["b_u"] = tf.zeros_like(use[0][:, units:])
    kernel_t = tf.transpose(kernel)
    w_u_t = tf.transpose(use[0][:, :units]) if projected else None
    classic_grad = gates.classic_step_grad
    if options.jit_step:
        classic_grad = gates.as_one_kernel(classic_grad)

    def step(t, d_stm, d_ltm, sums, arrays):
        sums, arrays = dict(sums), dict(arrays)
        ifv, n, ltm_prev, u = (records[k].read(t) for k in ("ifv", "n", "ltm", "u"))
        d_stm, d_stm_in, d_ltm_in, m = gradients_into_step(
            t, d_stm, d_ltm, d_outputs_ta, mask_ta
        )
        if projected:
            du, dv = gates.use_projected_grad(d_stm_in, ifv, u, 0)
            du_mm = tf.cast(du, mm_dtype)
            if after_loop:
                arrays["du"] = arrays["du"].write(t, du_mm)
            else:
                kept = records["kept"].read(t)
                sums["w_u"] += tf.matmul(du, kept, transpose_b=True)
                sums["b_u"] += tf.reduce_sum(du, axis=1, keepdims=True)
            d_kept = tf.matmul(w_u_t, du_mm)
            dz, d_ltm_prev = gates.learn_forget_remember_grad(
                d_ltm_in, d_kept, dv, ifv, n, ltm_prev, 0
            )
        else:
            dz, d_ltm_prev = classic_grad(d_stm_in, d_ltm_in, ifv, n, ltm_prev, u, 0)
        dz = tf.cast(dz, mm_dtype)
        if after_loop:
            arrays["dz"] = arrays["dz"].write(t, dz)
        else:
            stm_event = records["stm_event"].read(t)
            sums["kernel"] += tf.matmul(dz, stm_event, transpose_b=True)
        d_stm_prev, d_event = tf.split(tf.matmul(kernel_t, dz), [units, -1], axis=0)
        arrays["events"] = arrays["events"].write(t, d_event)
        d_stm_prev, d_ltm_prev = pass_masked(
            m, d_stm, d_ltm, tf.cast(d_stm_prev, dtype), d_ltm_prev
        )
        return t - 1, d_stm_prev, d_ltm_prev, sums, arrays

    _, d_stm0, d_ltm0, sums, arrays = tf.while_loop(
        lambda t, *_: t >= 0,
        step,
        (steps - 1, d_stm_last, d_ltm, sums, arrays),
        maximum_iterations=steps,
        parallel_iterations=32,
    )
    if after_loop:
        # Sums over time and batch of d(pre-activation) x operand.
        sum_dtype = gates.weight_gradient_dtype(mm_dtype, dtype)

        def stacked(array):
            return tf.cast(array.stack(), sum_dtype)

        def weight_gradient(d, operand):
            return tf.einsum("tgb,tkb->gk", d, stacked(records[operand]))

        sums["kernel"] = weight_gradient(stacked(arrays["dz"]), "stm_event")
        if projected:
            du = stacked(arrays["du"])  # read once for `W_u` and `b_u`
            sums["w_u"] = weight_gradient(du, "kept")
            sums["b_u"] = tf.reduce_sum(du, axis=(0, 2))[:, None]
    grads = [arrays["events"].stack(), d_stm0, d_ltm0, sums["kernel"]]
    if projected:  # of `[W_u, b_u]`, transposed, as the loop takes them
        grads.append(tf.concat([sums["w_u"], sums["b_u"]], axis=1))
    return grads
