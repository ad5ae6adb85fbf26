"""`TensorArray` helpers and the mask's effect on a step, for the loops."""

import tensorflow as tf


def array(size, element_shape, dtype):
    # Static element shapes let the TFLite converter lower the arrays. Kept
    # after a read: a persistent tape, or a gradient of the gradient, runs
    # an eager backward pass (which reads the records) more than once.
    return tf.TensorArray(
        dtype, size=size, element_shape=element_shape, clear_after_read=False
    )


def array_of(tensor):
    """A `TensorArray` of `tensor`'s slices along axis 0."""
    return array(length(tensor), tensor.shape[1:], tensor.dtype).unstack(tensor)


def length(tensor):
    """The size of `tensor`'s axis 0, static where known."""
    return tensor.shape[0] if tensor.shape[0] is not None else tf.shape(tensor)[0]


def keep_masked(mask_ta, t, new, old):
    """The new `(STM, LTM)` where step `t` is unmasked, else the old."""
    if mask_ta is None:
        return new
    m = mask_ta.read(t)
    return tuple(tf.where(m, a, b) for a, b in zip(new, old))


def gradients_into_step(t, d_stm, d_ltm, d_outputs_ta, mask_ta):
    """The gradients reaching step `t` of a backward loop.

    Returns `(d_stm, d_stm_in, d_ltm_in, m)`: `d_stm` with the gradient of
    the step's output added, `d_stm_in`/`d_ltm_in` what flows into the
    step's gates (zero where the step is masked) and `m` the step's mask
    (`None` without one).
    """
    if d_outputs_ta is not None:
        d_stm = d_stm + d_outputs_ta.read(t)
    if mask_ta is None:
        return d_stm, d_stm, d_ltm, None
    m = mask_ta.read(t)
    return d_stm, d_stm * m, d_ltm * m, m


def pass_masked(m, d_stm, d_ltm, d_stm_prev, d_ltm_prev):
    """At a masked step the state's gradients pass through unchanged."""
    if m is None:
        return d_stm_prev, d_ltm_prev
    return d_stm_prev + d_stm * (1 - m), d_ltm_prev + d_ltm * (1 - m)
