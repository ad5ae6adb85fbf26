"""One step's gates, and their gradients, as every loop computes them.

The loops keep the pre-activations `z` of the four gates in the order
`i, f, V, N` along `axis` (axis 0 in the transposed loop, 1 batch-major):
the three sigmoid gates side by side, so one `sigmoid` covers them. The
weights are reordered from the cell's `i, f, N, V` once, before a loop
(`loop_order`). The state (`LTM`, `STM`) and the gate arithmetic are in
the state's dtype (float32 under mixed precision); `z` may be 16-bit.
"""

import functools

import tensorflow as tf


def loop_order(w, units):
    """`w` `(..., 4 * units)` from the cell's `i, f, N, V` to `i, f, V, N`."""
    i_f, n, v = tf.split(w, [2 * units, units, units], axis=-1)
    return tf.concat([i_f, v, n], axis=-1)


def learn_forget_remember(z, ltm, axis, sigmoid_per_gate=False):
    """The Learn, Forget and Remember gates of one step.

    Returns `ifv` (`[i_t; f_t; V_t]`), `n` (`N_t`), `kept` (`LTM_{t-1} *
    f_t`, the Forget gate's output) and `LTM_t`.
    """
    units = ltm.shape[axis]
    z_ifv, z_n = tf.split(tf.cast(z, ltm.dtype), [3 * units, units], axis=axis)
    if sigmoid_per_gate:  # XLA then fuses each gate with its consumers
        ifv = tf.concat([tf.sigmoid(g) for g in tf.split(z_ifv, 3, axis)], axis)
    else:
        ifv = tf.sigmoid(z_ifv)
    i, f, _ = tf.split(ifv, 3, axis=axis)
    n = tf.tanh(z_n)  # Learn: N_t, let in by i_t
    kept = ltm * f  # Forget
    return ifv, n, kept, kept + n * i  # Remember


def use_projected(z_u, ifv, axis):
    """The projected Use gate from `U_t`'s pre-activation `W_u kept + b_u`.

    Returns `U_t` and `STM_t = U_t * V_t`.
    """
    u = tf.tanh(tf.cast(z_u, ifv.dtype))
    return u, u * tf.split(ifv, 3, axis=axis)[2]


def use_classic(ltm, ifv, axis):
    """The classic Use gate: returns `tanh(LTM_t)` and `STM_t`."""
    u = tf.tanh(ltm)
    return u, u * tf.split(ifv, 3, axis=axis)[2]


def classic_step(z, ltm, axis, sigmoid_per_gate=False):
    """A classic step's gates: `ifv`, `N_t`, `LTM_t`, `tanh(LTM_t)`, `STM_t`."""
    ifv, n, _, new_ltm = learn_forget_remember(z, ltm, axis, sigmoid_per_gate)
    u, stm = use_classic(new_ltm, ifv, axis)
    return ifv, n, new_ltm, u, stm


def use_projected_grad(d_stm, ifv, u, axis):
    """The gradients of `U_t`'s and `V_t`'s pre-activations."""
    v = tf.split(ifv, 3, axis=axis)[2]
    du = tf.raw_ops.TanhGrad(y=u, dy=d_stm * v)
    return du, tf.raw_ops.SigmoidGrad(y=v, dy=d_stm * u)


def learn_forget_remember_grad(d_ltm, d_kept, dv, ifv, n, ltm_prev, axis):
    """Returns `dz` (in the loops' gate order) and `LTM_{t-1}`'s gradient.

    `d_ltm` is the gradient of `LTM_t`, `d_kept` the Use gate's share of
    the gradient of `LTM_{t-1} * f_t` (`None` for the classic one), `dv`
    that of `V_t`'s pre-activation.
    """
    i, f, _ = tf.split(ifv, 3, axis=axis)
    d_kept = d_ltm if d_kept is None else d_ltm + tf.cast(d_kept, d_ltm.dtype)
    di = tf.raw_ops.SigmoidGrad(y=i, dy=d_ltm * n)
    df = tf.raw_ops.SigmoidGrad(y=f, dy=d_kept * ltm_prev)
    dn = tf.raw_ops.TanhGrad(y=n, dy=d_ltm * i)
    return tf.concat([di, df, dv, dn], axis=axis), d_kept * f


def classic_step_grad(d_stm, d_ltm, ifv, n, ltm_prev, u, axis):
    """`dz` and `LTM_{t-1}`'s gradient for a classic step."""
    v = tf.split(ifv, 3, axis=axis)[2]
    dv = tf.raw_ops.SigmoidGrad(y=v, dy=d_stm * u)
    d_ltm = d_ltm + tf.raw_ops.TanhGrad(y=u, dy=d_stm * v)
    return learn_forget_remember_grad(d_ltm, None, dv, ifv, n, ltm_prev, axis)


@functools.cache
def as_one_kernel(function):
    """`function` compiled with XLA: a step's element-wise ops as one kernel,
    the matmuls around it left to TensorFlow (see `Route.jit_step`)."""
    return tf.function(function, jit_compile=True, autograph=False)


def weight_gradient_dtype(mm_dtype, dtype):
    """The dtype the weights' gradients are summed in.

    A weight's gradient sums a loss-scaled gradient over batch and time: in
    float16 it overflows (65504) at a loss scale far below
    `keras.layers.LSTM`'s, so float32. bfloat16 has float32's range and
    keeps its fast 16-bit matmuls.
    """
    return dtype if mm_dtype == tf.float16 else mm_dtype
