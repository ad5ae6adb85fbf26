"""The four-gate LSTM over a whole sequence, fast on TensorFlow.

`FourGateLSTM.inner_loop` routes here under the TensorFlow backend. On a
small CPU the recurrent loop is bound by its small matmuls and by the passes
over `(units, batch)` tensors each step makes, so:

- The state is kept transposed, `(units, batch)`, and the gates in the order
  `i, f, V, N`: each gate's block of the pre-activations is then a
  contiguous slice that TensorFlow splits without copying, and the three
  sigmoid gates take one `sigmoid`. One matmul per step computes all gates
  from `[STM_{t-1}; E_t; 1]` (the bias is the last column of the weights).
- The backward pass is written by hand (`tf.custom_gradient`): two matmuls
  per step (autodiff makes three and many more element-wise ops), the fused
  `SigmoidGrad`/`TanhGrad` ops, and what the forward loop saved kept in one
  `TensorArray` per tensor (one concatenation per step cost more).
- Inference runs the forward loop alone, saving nothing, and compiled with
  XLA where the shapes are static in a traced function (XLA fuses each
  step's element-wise ops; at (64, 100, 16, 128) a direct call took 0.65x
  of `keras.layers.LSTM`'s time, 0.94x without XLA): the transposed loop
  above for a batch above 1, the batch-major one for a single sequence.
  Eagerly, or with a dimension unknown when traced, the batch-major loop
  runs without XLA: XLA would compile again for every new batch size or
  sequence length. A gradient through an inference call (`training=False`
  under a tape) runs the forward loop again, saving what its backward pass
  needs (`_differentiable`): TensorFlow cannot differentiate a loop compiled
  with XLA from outside it. A tape that records the gradient itself (a
  gradient penalty) differentiates the loops compiled alone by TensorFlow's
  autodiff of the same loop; the compiled loops are called where no tape
  records them (a persistent tape would ask for their intermediates).
- Inside `jit_compile=True` the classic cell, and projected layers of more
  than `XLA_TRAINING_MIN_UNITS` units, train through `_forward_xla` /
  `_backward_xla`: batch-major, one matmul a step on `[STM_{t-1}, E_t]`,
  with the weights' and the events' gradients as large matmuls after the
  backward loop, where XLA's CPU matmuls are fast. Outside XLA, wide
  layers take the same loops, each compiled with XLA on its own; the rest
  keep the transposed loop, in TensorFlow's executor.

Under a mixed-precision policy (`mixed_bfloat16`, `mixed_float16`) only the
matmuls run in the 16-bit compute dtype; the state `LTM`/`STM` and the gate
arithmetic stay in float32, so the long-term memory does not lose bits step
after step, and the weights' gradient is one large matmul after the backward
loop (per step, its casts cost more than the matmul saves): in bfloat16, and
in float32 under `mixed_float16`, whose range a loss-scaled sum over batch and
time would overflow; the loops read the float32 variables and return their
gradients in float32 (`stored_values`). Where
the CPU has no 16-bit matrix units, the matmuls stay in float32 too:
emulated bfloat16 would only be slower.

Only the cell's math with `tanh` and `sigmoid` is handled here; `supports`
says when the layer may use this path.
"""

import contextlib
import functools
import threading

import tensorflow as tf
from keras import activations

# CPU flags (`/proc/cpuinfo`) of units that multiply 16-bit matrices natively.
_FAST_MATMUL_FLAGS = {
    tf.bfloat16: ("amx_bf16", "avx512_bf16"),
    tf.float16: ("amx_fp16", "avx512_fp16"),
}


_tracing = threading.local()


def batch_major_inference():
    """Inference traced in this context takes the batch-major loop, with
    the events' projection hoisted out of it: for TFLite export.

    At a fixed batch size above 1 the transposed loop converts to a file as
    fast in float32 (1.78 vs 1.81 ms, batch 8, 128 units), but
    dynamic-range quantization of its matmul, which carries the bias in the
    weights, is 4x less accurate (largest difference 2.4e-3 vs 5.7e-4 at
    256 units). For hoisting, see `_inference_loop`.
    """
    return _tracing_setting("batch_major")


def without_own_xla():
    """Layers traced in this context compile nothing with XLA on their own.

    For `export_saved_model` without `jit_compile`: a serving function
    traced at a fixed batch size would otherwise hold the loops this module
    compiles with XLA where the shapes are static, and a server without
    XLA on CPU (TF Serving's default) cannot run them.
    """
    return _tracing_setting("no_xla")


@contextlib.contextmanager
def exporting(batch_major=False, own_xla=True):
    """What an export needs of the layers traced inside, in this thread.

    `batch_major`: inference takes the batch-major loop with the events'
    projection before it (for TFLite). `own_xla=False`: nothing is compiled
    with XLA on its own (a SavedModel for a server without XLA).
    """
    with contextlib.ExitStack() as stack:
        if batch_major:
            stack.enter_context(_tracing_setting("batch_major"))
        if not own_xla:
            stack.enter_context(_tracing_setting("no_xla"))
        yield


@contextlib.contextmanager
def _tracing_setting(name):
    """Sets `_tracing.<name>` for what is traced inside, in this thread."""
    previous = getattr(_tracing, name, False)
    setattr(_tracing, name, True)
    try:
        yield
    finally:
        setattr(_tracing, name, previous)


def stored_values(*variables):
    """The layer's variables as tensors in their own dtype (`None` stays).

    Under a mixed-precision policy Keras reads a layer's float32 variables
    cast to the 16-bit compute dtype, so their gradients would come back
    through float16. `run` takes them as stored, its loops cast them, and
    the gradients, sums over batch and time, come back in float32 (see
    `_weight_gradient_dtype`).
    """
    try:
        from keras.src.backend import AutocastScope
    except ImportError:  # Keras moved it: read them as Keras casts them
        scope = contextlib.nullcontext()
    else:
        scope = AutocastScope(None)
    with scope:
        return [None if v is None else tf.convert_to_tensor(v) for v in variables]


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


def in_xla_context():
    """Whether the function being traced will be compiled by XLA."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # TensorFlow moved it: take the non-XLA loops
        return False
    graph = tf.compat.v1.get_default_graph()
    return bool(control_flow_util.GraphOrParentsInXlaContext(graph))


@functools.cache
def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def matmul_dtype(compute_dtype, xla=False):
    """The dtype of the loop's matmuls for a layer computing in `compute_dtype`.

    16-bit where a GPU or the CPU's matrix units make 16-bit matmuls fast,
    else float32. Float32 and float64 are kept as they are. With `xla=True`
    (the compiled inference loop) 16-bit only on a GPU: XLA's CPU backend
    emulates 16-bit matmuls (at (64, 100, 16, 128) a bfloat16 inference
    call took 1.27x the float32 one).
    """
    compute_dtype = tf.as_dtype(compute_dtype)
    if compute_dtype.size >= 4:
        return compute_dtype
    if tf.config.list_logical_devices("GPU"):
        return compute_dtype
    if xla:
        return tf.float32
    flags = _FAST_MATMUL_FLAGS.get(compute_dtype, ())
    return compute_dtype if _cpu_flags() & set(flags) else tf.float32


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
    # The state and the gates' arithmetic: float32 under mixed precision.
    dtype = tf.float32 if compute_dtype.size < 4 else compute_dtype
    # Inside a function XLA compiles (`jit_compile=True`), training runs the
    # loop made for XLA; inference in a traced function with static shapes
    # compiles with XLA.
    in_xla = in_xla_context()
    own_xla = not (tf.executing_eagerly() or getattr(_tracing, "no_xla", False))
    xla = in_xla or (own_xla and not training and sequences.shape.is_fully_defined())
    mm_dtype = matmul_dtype(compute_dtype, xla=xla)
    units = recurrent_kernel.shape[0]
    batch, steps = sequences.shape[0], sequences.shape[1]
    projected = use_gate_kernel is not None
    if bias is None:
        bias = tf.zeros((4 * units,), kernel.dtype)
    if projected and use_gate_bias is None:
        use_gate_bias = tf.zeros((units,), kernel.dtype)

    def cast(tensors, dtype):
        return [tf.cast(t, dtype) for t in tensors]

    def gate_order(w):
        # (..., 4 * units), gates in the cell's order i, f, N, V -> i, f, V, N.
        i_f, n, v = tf.split(w, [2 * units, units, units], axis=-1)
        return tf.concat([i_f, v, n], axis=-1)

    events = tf.transpose(tf.cast(sequences, mm_dtype), (1, 0, 2))  # time-major
    if go_backwards:
        events = tf.reverse(events, [0])
    if mask is not None:
        mask = tf.transpose(tf.cast(mask, tf.bool))[..., None]  # (time, batch, 1)
        if go_backwards:
            mask = tf.reverse(mask, [0])
    h0, c0 = cast(initial_state, dtype)
    # Under XLA the classic cell, and the projected one when wide, train
    # through the batch-major loops; outside XLA a wide layer does too, each
    # loop compiled with XLA (see `XLA_TRAINING_MIN_UNITS`).
    wide = units > XLA_TRAINING_MIN_UNITS
    # Not eagerly: a tape around an eager call of a compiled function asks
    # for the loop's intermediates, which cannot leave XLA (TensorFlow's
    # "TensorList crossing the XLA/TF boundary").
    compile_loops = own_xla and not in_xla and mm_dtype == dtype
    compile_loops = wide and compile_loops and sequences.shape.is_fully_defined()
    if training and ((in_xla and (wide or not projected)) or compile_loops):
        # The weights in their own dtype (float32 under mixed precision):
        # the loops cast them, so their gradients, sums over batch and
        # time, come back in it (see `_weight_gradient_dtype`).
        weights = [gate_order(w) for w in (kernel, recurrent_kernel, bias)]
        if projected:
            weights += [use_gate_kernel, use_gate_bias]
        fused = _with_backward(
            projected, mask, return_all_outputs, xla=True, compile_loops=not in_xla
        )
        hs, c_last = fused(events, h0, c0, *weights)
    elif training or (
        xla and batch != 1 and not getattr(_tracing, "batch_major", False)
    ):
        # Transposed, with a row of ones for the bias: the step computes all
        # four gates as `W @ [STM_{t-1}; E_t; 1]`, `W` gate-major. Also the
        # inference loop of a batch above 1 where XLA compiles it: one
        # matmul a step. Inside an XLA-compiled caller 0.78x the batch-major
        # loop's time at (32, 200, 64, 256) and at (64, 100, 16, 128)
        # projected, 0.9x classic; compiled on its own (a traced call,
        # `jit_compile` off) 0.88-0.97x in medians of 40 interleaved runs
        # at both shapes. A single sequence runs faster batch-major (0.34
        # vs 0.41 ms at (1, 100, 16, 64)); so does anything traced with an
        # unknown dimension (`predict` over a dataset's batches) or under
        # `batch_major_inference` (TFLite export).
        events = tf.transpose(events, (0, 2, 1))
        # XLA's CPU backend (TensorFlow 2.21) can miscompile a float64
        # concatenation of a row of ones (see `_forward`); this one, after
        # the transposes, comes out right (tested in float64 at batch 4).
        events = tf.concat([events, tf.ones_like(events[:, :1])], axis=1)
        weights = [recurrent_kernel, kernel, tf.reshape(bias, (1, -1))]
        weights = [tf.transpose(gate_order(tf.concat(weights, axis=0)))]
        if projected:
            use = [use_gate_kernel, tf.reshape(use_gate_bias, (1, -1))]
            weights.append(tf.transpose(tf.concat(use, axis=0)))
        if mask is not None:
            mask = tf.transpose(mask, (0, 2, 1))
        h0, c0 = (tf.transpose(s) for s in (h0, c0))
        for state in (h0, c0):
            state.set_shape((units, batch))
        if training:
            fused = _with_backward(projected, mask, return_all_outputs)
            hs, c_last = fused(events, h0, c0, *weights)
        else:
            forward = _inference_forward(projected, return_all_outputs, mask)
            if in_xla:
                forward = forward.python_function  # compiled with its caller
            # A gradient asked through it is the training loops'.
            train = _with_backward(projected, mask, return_all_outputs)
            forward = _differentiable(forward, _autodiff_gradient(train))
            hs, c_last = forward(events, h0, c0, *weights)
        # Back to (time, batch, units) and (batch, units).
        hs, c_last = tf.transpose(hs, (0, 2, 1)), tf.transpose(c_last)
        if mask is not None:
            mask = tf.transpose(mask, (0, 2, 1))
    else:
        # Batch-major and the weights as they are, as in Keras's LSTM: the
        # TFLite converter lowers each matmul to a FULLY_CONNECTED whose
        # weights dynamic-range quantization keeps in int8.
        weights = [kernel, recurrent_kernel, bias]
        if projected:
            weights += [use_gate_kernel, use_gate_bias]
        hoist = getattr(_tracing, "batch_major", False)
        loop = _inference_loop(projected, return_all_outputs, mask, hoist)
        if xla:
            loop = _differentiable(loop, _autodiff_gradient(loop.python_function))
        else:
            loop = loop.python_function  # the same loop, without XLA
        hs, c_last = loop(events, h0, c0, *weights)

    outputs = hs
    if mask is not None:
        keep = tf.cast(mask, tf.bool)
        if not zero_output_for_mask:
            # Until a first unmasked step, the output is zero, not STM_0.
            keep = tf.cumsum(tf.cast(mask, tf.int32), axis=0) > 0
        # Selected, not multiplied by 0: a NaN state gives 0 here, as Keras.
        keep = keep if return_all_outputs else keep[-1:]
        outputs = tf.where(keep, hs, tf.zeros_like(hs))
    outputs = tf.cast(tf.transpose(outputs, (1, 0, 2)), compute_dtype)
    outputs.set_shape((batch, steps if return_all_outputs else 1, units))
    states = cast([hs[-1], c_last], compute_dtype)
    for state in states:
        state.set_shape((batch, units))
    return outputs[:, -1], outputs, states


def _inference_forward(projected, all_outputs, mask):
    """`_forward` saving nothing, compiled with XLA (`_compiled`), of
    `(events, h0, c0, *weights) -> (STM, LTM_T)`."""

    def forward(events, h0, c0, *weights):
        weights = _in_dtype_of(events, weights)
        hs, c_last, _ = _forward(
            projected, mask, all_outputs, events, h0, c0, *weights, record=False
        )
        return hs, c_last

    return _compiled(forward)


def _differentiable(forward, gradient):
    """`forward` with `gradient(inputs, output_gradients)` as its gradient.

    The inference loops save nothing for a backward pass, and TensorFlow
    cannot differentiate a while loop compiled with XLA from outside it;
    yet a caller may take gradients through an inference call (a frozen
    discriminator, saliency maps). Only then is the gradient's loop run:
    it runs the forward loop again, saving what it needs.
    """

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


def _inference_loop(projected, all_outputs, mask, hoist=False):
    """The forward loop alone, batch-major, compiled with XLA.

    Returns the loop compiled with XLA (`_compiled`), of `(events, h0, c0,
    *weights) -> (STM, LTM_T)`: `events` time-major `(time, batch, features)`, the
    states `(batch, units)`, `weights` the cell's `kernel,
    recurrent_kernel, bias` (gates in its order `i, f, N, V`) plus `W_u,
    b_u` for the projected Use gate; `mask` `(time, batch, 1)` or `None`.
    `STM` stacks every step's `STM_t` if `all_outputs`, else the last one.

    With `hoist`, `events @ kernel + bias` is one matmul before the loop,
    whose steps read its rows: for TFLite, where it becomes one
    `FULLY_CONNECTED` over the whole sequence and each step runs one op
    less. Latency per sequence of `export_tflite`'s file (batch 1, T = 100,
    16 features; minima of 150 interleaved runs, one process): at 64 units
    0.95x the time for both cells in float32, 0.88x (classic) and 0.89x
    (projected) dynamic-range quantized; at 256 units even in float32
    (0.99x, 1.02x) and 0.93x / 0.92x quantized. Under XLA it is slower
    (batch 1, 64 units, `jit_compile`: 1.15x): XLA's CPU code for an
    element-wise kernel that reads a dynamic slice of a loop's array and
    slices it further is slow (see `_forward_xla`).
    """

    def forward(events, h0, c0, *weights):
        units = h0.shape[1]
        dtype = h0.dtype
        kernel, recurrent_kernel, bias, *use = _in_dtype_of(events, weights)
        steps = _length(events)
        if hoist:  # (time * batch, features) @ kernel: one FULLY_CONNECTED
            projection = tf.matmul(tf.reshape(events, (-1, events.shape[2])), kernel)
            projection = tf.reshape(
                projection + bias, tf.concat([tf.shape(events)[:2], [-1]], 0)
            )
            projection.set_shape(events.shape[:2].concatenate(bias.shape))
            events_ta = _array_of(projection)
        else:
            events_ta = _array_of(events)
        mask_ta = _array_of(mask) if mask is not None else None
        # Static element shapes let the TFLite converter lower the arrays.
        hs_ta = tf.TensorArray(
            dtype, size=steps if all_outputs else 1, element_shape=h0.shape
        )

        def step(t, h, c, hs_ta):
            if hoist:
                z = events_ta.read(t)
            else:
                z = tf.matmul(events_ta.read(t), kernel) + bias
            z += tf.matmul(tf.cast(h, kernel.dtype), recurrent_kernel)
            kept, c_new, v = _learn_forget_remember_cell_order(z, c)
            if use:
                z_u = tf.matmul(tf.cast(kept, kernel.dtype), use[0]) + use[1]
                u = tf.tanh(tf.cast(z_u, dtype))
            else:
                u = tf.tanh(c_new)
            h_new = u * v
            h_new, c_new = _keep_masked(mask_ta, t, (h_new, c_new), (h, c))
            if all_outputs:
                hs_ta = hs_ta.write(t, h_new)
            return t + 1, h_new, c_new, hs_ta

        _, h_last, c_last, hs_ta = tf.while_loop(
            lambda t, *_: t < steps,
            step,
            (tf.constant(0), h0, c0, hs_ta),
            maximum_iterations=steps,
        )
        hs = hs_ta.stack() if all_outputs else h_last[None]
        hs.set_shape((events.shape[0] if all_outputs else 1, h0.shape[0], units))
        return hs, c_last

    return _compiled(forward)


def _forward(
    projected, mask, all_outputs, events, h0, c0, kernel, use=None, record=True
):
    """The forward loop over transposed, gate-major tensors.

    Returns `(STM, LTM_T, records)`: `STM` stacks `STM_t` for every step if
    `all_outputs` (else only the last); `records` (empty without `record`:
    inference) holds one `TensorArray` per tensor the backward pass needs:
    `ifv` (`[i; f; V]`), `n`, `c` (`LTM_{t-1}`), `u`, `hx`
    (`[STM_{t-1}; E_t; 1]`) and, for the projected Use gate, `kept`
    (`LTM_{t-1} * f`). The state is in `h0`'s dtype; the matmuls, their
    operands `hx`/`kept` and `events` in `kernel`'s.
    """
    units = h0.shape[0]
    dtype = h0.dtype
    mm_dtype = kernel.dtype
    steps = _length(events)
    events_ta = _array_of(events)
    mask_ta = _array_of(mask) if mask is not None else None
    # `h` for the outputs, and one array per tensor the backward pass reads.
    shapes = {}
    if record:
        shapes = {
            "ifv": (3 * units, h0.shape[1]),
            "n": h0.shape,
            "c": h0.shape,
            "u": h0.shape,
            "hx": (kernel.shape[1], h0.shape[1]),
        }
        if projected:
            shapes["kept"] = h0.shape
    if all_outputs:
        shapes["h"] = h0.shape
    arrays = {
        name: _array(steps, shape, mm_dtype if name in ("hx", "kept") else dtype)
        for name, shape in shapes.items()
    }
    if projected:  # `W_u` and `b_u`, split once out of `[W_u, b_u]`
        use_w, use_b = use[:, :units], use[:, units:]

    def step(t, h, c, arrays):
        hx = tf.concat([tf.cast(h, mm_dtype), events_ta.read(t)], axis=0)
        z = tf.matmul(kernel, hx)
        kept = None
        if projected:
            ifv, n, kept, c_new = _learn_forget_remember(z, c)
            # `b_u` added, not a row of ones concatenated to `kept`: no
            # concatenation a step (0.89x the inference loop's time at 256
            # units), and XLA's CPU backend (TensorFlow 2.21) miscompiles
            # that concatenation in float64 at some shapes (batch 4).
            kept = tf.cast(kept, mm_dtype)
            z_u = tf.matmul(use_w, kept) + use_b
            u, h_new = _projected_use(z_u, ifv)
        else:
            ifv, n, c_new, u, h_new = _step_function(_classic, units)(z, c)
        h_new, c_new = _keep_masked(mask_ta, t, (h_new, c_new), (h, c))
        # One array each: a concatenation here costs more than the writes.
        values = {"h": h_new, "ifv": ifv, "n": n, "c": c, "u": u, "hx": hx}
        values["kept"] = kept
        arrays = {k: ta.write(t, values[k]) for k, ta in arrays.items()}
        return t + 1, h_new, c_new, arrays

    _, h_last, c_last, arrays = tf.while_loop(
        lambda t, *_: t < steps,
        step,
        (tf.constant(0), h0, c0, arrays),
        maximum_iterations=steps,
        parallel_iterations=32,
    )
    hs = arrays.pop("h").stack() if all_outputs else h_last[None]
    return hs, c_last, arrays


def _forward_xla(
    projected, mask, all_outputs, events, h0, c0, kernel, recurrent_kernel, bias, *use
):
    """The training forward loop for XLA, batch-major.

    `events` `(time, batch, features)`, the state `(batch, units)`, the
    weights as the cell's but with the gates in the order `i, f, V, N`.
    Each step computes `[STM_{t-1}, E_t] @ [recurrent_kernel; kernel] + bias`
    in one matmul: model training step at (64, 100, 16, 128), jit on, 0.90x
    / 0.93x the time of two matmuls a step (XLA launches each small matmul
    at a cost; minima of 30-40 interleaved runs, medians 0.96x / 0.93x),
    0.94x at (32, 200, 64, 256) (medians 0.98x), even at 8 and 64 units.
    Projecting all events before the loop was slower: XLA's CPU code for an
    element-wise kernel that reads a dynamic slice of a loop's array and
    slices it further runs ~10x slower than for one that reads a matmul's
    result (inference at (32, 200, 64, 256): 2x the loop's time).

    Returns `(STM, LTM_T, records)` as `_forward` does, `records` holding
    `i`, `f`, `v`, `n`, `c`, `u`, `hx` (`[STM_{t-1}, E_t]`, in the
    matmuls' dtype) and, for the projected Use gate, `kept`
    (`LTM_{t-1} * f`, likewise).
    """
    dtype = h0.dtype
    mm_dtype = kernel.dtype
    steps = _length(events)
    events_ta = _array_of(events)
    mask_ta = _array_of(mask) if mask is not None else None
    # One array per gate: XLA slices them no faster than it writes them.
    names = ["i", "f", "v", "n", "c", "u", "hx"] + (["kept"] if projected else [])
    hx_shape = (h0.shape[0], h0.shape[1] + kernel.shape[0])
    arrays = {
        name: _array(
            steps,
            hx_shape if name == "hx" else h0.shape,
            mm_dtype if name in ("hx", "kept") else dtype,
        )
        for name in names
    }
    outputs = _array(steps if all_outputs else 1, h0.shape, dtype)
    stacked_kernel = tf.concat([recurrent_kernel, kernel], axis=0)

    def step(t, h, c, arrays, outputs):
        hx = tf.concat([tf.cast(h, mm_dtype), events_ta.read(t)], axis=1)
        z = tf.matmul(hx, stacked_kernel) + bias
        values = {"hx": hx, "c": c}
        if projected:
            ifv, n, kept, c_new = _learn_forget_remember(z, c, axis=1)
            values["kept"] = kept = tf.cast(kept, mm_dtype)
            u, h_new = _projected_use(tf.matmul(kept, use[0]) + use[1], ifv, axis=1)
        else:
            ifv, n, c_new, u, h_new = _classic(z, c, axis=1)
        h_new, c_new = _keep_masked(mask_ta, t, (h_new, c_new), (h, c))
        values.update(zip("ifv", tf.split(ifv, 3, axis=1)), n=n, u=u)
        arrays = {k: ta.write(t, values[k]) for k, ta in arrays.items()}
        if all_outputs:
            outputs = outputs.write(t, h_new)
        return t + 1, h_new, c_new, arrays, outputs

    _, h_last, c_last, arrays, outputs = tf.while_loop(
        lambda t, *_: t < steps,
        step,
        (tf.constant(0), h0, c0, arrays, outputs),
        maximum_iterations=steps,
    )
    hs = outputs.stack() if all_outputs else h_last[None]
    return hs, c_last, {k: ta.stack() for k, ta in arrays.items()}


def _backward_xla(
    projected, mask, all_outputs, records, events, h0, weights, d_hs, d_c
):
    """Backpropagation through time for `_forward_xla`.

    Per step, one matmul for `STM_{t-1}`'s gradient (two for the projected
    Use gate); the gradients of the events and of all weights are large
    matmuls after the loop over the saved gradients of the pre-activations:
    XLA's CPU matmuls are slow for a step's small ones (a sum over the
    batch alone) and fast for large ones.
    """
    kernel, recurrent_kernel, bias, *use = weights
    dtype = h0.dtype
    mm_dtype = kernel.dtype
    steps, batch = _length(events), h0.shape[0]
    units = h0.shape[1]
    d_hs_ta = None
    if all_outputs:
        d_hs_ta = _array_of(d_hs)
        dh_last = tf.zeros_like(h0)
    else:
        dh_last = d_hs[-1]
    mask_ta = None
    if mask is not None:
        mask_ta = _array_of(tf.cast(mask, dtype))
    arrays = {"dz": _array(steps, (batch, 4 * units), mm_dtype)}
    if projected:
        arrays["du"] = _array(steps, (batch, units), mm_dtype)
    stacked = records
    records = {k: _array_of(v) for k, v in stacked.items()}
    recurrent_kernel_t = tf.transpose(recurrent_kernel)
    use_t = tf.transpose(use[0]) if projected else None

    def step(t, dh, dc, arrays):
        arrays = dict(arrays)
        n, c_prev, u = (records[k].read(t) for k in ("n", "c", "u"))
        ifv = tf.concat([records[k].read(t) for k in "ifv"], axis=1)
        dh, dh_in, dc_in, m = _gradients_into_step(t, dh, dc, d_hs_ta, mask_ta)
        if projected:
            du, dv = _projected_use_grad(dh_in, ifv, u, axis=1)
            du = tf.cast(du, mm_dtype)
            arrays["du"] = arrays["du"].write(t, du)
            d_kept = tf.matmul(du, use_t)
            dz, dc_prev = _learn_forget_remember_grad(
                dc_in, d_kept, dv, ifv, n, c_prev, axis=1
            )
        else:
            dz, dc_prev = _classic_grad(dh_in, dc_in, ifv, n, c_prev, u, axis=1)
        dz = tf.cast(dz, mm_dtype)
        arrays["dz"] = arrays["dz"].write(t, dz)
        dh_prev = tf.cast(tf.matmul(dz, recurrent_kernel_t), dtype)
        if m is not None:  # masked: the state's gradient passes through
            dh_prev = dh_prev + dh * (1 - m)
            dc_prev = dc_prev + dc * (1 - m)
        return t - 1, dh_prev, dc_prev, arrays

    _, dh0, dc0, arrays = tf.while_loop(
        lambda t, *_: t >= 0,
        step,
        (steps - 1, dh_last, d_c, arrays),
        maximum_iterations=steps,
    )

    def rows(tensor):  # (time, batch, n) -> (time * batch, n)
        if isinstance(tensor, tf.TensorArray):
            tensor = tensor.stack()
        return tf.reshape(tensor, (-1, tensor.shape[-1]))

    sum_dtype = _weight_gradient_dtype(mm_dtype, dtype)

    def weight_gradient(operand, d):  # sum over time and batch of operand^T d
        operand, d = tf.cast(operand, sum_dtype), tf.cast(d, sum_dtype)
        return tf.matmul(operand, d, transpose_a=True)

    def bias_gradient(d):  # summed in float32 even for 16-bit matmuls
        return tf.reduce_sum(tf.cast(d, dtype), axis=0)

    dz = rows(arrays["dz"])
    # One matmul for both kernels: [STM_{t-1}, E_t]^T dz.
    d_recurrent, d_kernel = tf.split(
        weight_gradient(rows(stacked["hx"]), dz), [units, -1], axis=0
    )
    grads = [
        tf.reshape(tf.matmul(dz, kernel, transpose_b=True), tf.shape(events)),
        dh0,
        dc0,
        d_kernel,
        d_recurrent,
        bias_gradient(dz),
    ]
    if projected:
        du = rows(arrays["du"])
        grads += [weight_gradient(rows(stacked["kept"]), du), bias_gradient(du)]
    return grads


def _array(size, element_shape, dtype):
    # Static element shapes let the TFLite converter lower the arrays. Kept
    # after a read: a persistent tape, or a gradient of the gradient, runs
    # an eager backward pass (which reads the records) more than once.
    return tf.TensorArray(
        dtype, size=size, element_shape=element_shape, clear_after_read=False
    )


def _array_of(tensor):
    """A `TensorArray` of `tensor`'s slices along axis 0."""
    size = _length(tensor)
    return _array(size, tensor.shape[1:], tensor.dtype).unstack(tensor)


def _length(tensor):
    """The size of `tensor`'s axis 0, static where known."""
    return tensor.shape[0] if tensor.shape[0] is not None else tf.shape(tensor)[0]


def _gradients_into_step(t, dh, dc, d_hs_ta, mask_ta):
    """The gradients reaching step `t` of a backward loop.

    Returns `(dh, dh_in, dc_in, m)`: `dh` with the gradient of the step's
    output added, `dh_in`/`dc_in` what flows into the step's gates (zero
    where the step is masked) and `m` the step's mask (`None` without one).
    """
    if d_hs_ta is not None:
        dh = dh + d_hs_ta.read(t)
    if mask_ta is None:
        return dh, dh, dc, None
    m = mask_ta.read(t)
    return dh, dh * m, dc * m, m


def _keep_masked(mask_ta, t, new, old):
    """The new `(STM, LTM)` where step `t` is unmasked, else the old."""
    if mask_ta is None:
        return new
    m = mask_ta.read(t)
    return tuple(tf.where(m, a, b) for a, b in zip(new, old))


def _with_backward(projected, mask, all_outputs, xla=False, compile_loops=False):
    """The forward loop as a function with a hand-written gradient.

    `xla` picks the batch-major loop of `_forward_xla`, else the transposed
    one of `_forward`; `compile_loops` compiles its forward and backward
    loops with XLA each (for a caller XLA does not compile).
    """
    loops = (_forward_xla, _backward_xla) if xla else (_forward, _backward)
    forward, backward = (
        functools.partial(loop, projected, mask, all_outputs) for loop in loops
    )
    plain = forward
    if compile_loops:
        forward = _compiled(forward)
        backward = tf.function(backward, jit_compile=True, autograph=False)

    @tf.custom_gradient
    def fused(events, h0, c0, *stored):
        weights = _in_dtype_of(events, stored)
        hs, c_last, records = forward(events, h0, c0, *weights)
        if tf.executing_eagerly() and not xla:
            # As tensors: an eager TensorArray cannot be read from a graph,
            # and `tape.jacobian` traces the backward pass into one.
            records = {k: ta.stack() for k, ta in records.items()}

        def grad(d_hs, d_c_last):
            if compile_loops and _tape_recording():
                # A gradient of this gradient may be asked (a gradient
                # penalty): the compiled loops' records are out of reach of
                # the tape, so differentiate the loop itself.
                return _autodiff_gradient(
                    lambda e, h, c, *w: plain(e, h, c, *_in_dtype_of(e, w))[:2]
                )((events, h0, c0, *stored), (d_hs, d_c_last))
            arrays = records
            if not xla:  # `_backward` reads TensorArrays
                arrays = {
                    k: _array_of(v) if isinstance(v, tf.Tensor) else v
                    for k, v in records.items()
                }
            grads = backward(arrays, events, h0, weights, d_hs, d_c_last)
            # The weights' gradients in the weights' own dtype.
            return grads[:3] + [tf.cast(g, w.dtype) for g, w in zip(grads[3:], stored)]

        return (hs, c_last), grad

    return fused


def _in_dtype_of(events, weights):
    """`weights` cast to the matmuls' dtype, that of `events`.

    The loops take the weights in their own dtype (float32 under mixed
    precision) and cast them here, inside the functions whose gradients are
    written by hand: the weights' gradients then leave in float32 too.
    """
    return [tf.cast(w, events.dtype) for w in weights]


def _weight_gradient_dtype(mm_dtype, dtype):
    """The dtype the weights' gradients are summed in.

    A weight's gradient sums a loss-scaled gradient over batch and time:
    in float16 it overflows (65504) at a loss scale 4x lower than
    `keras.layers.LSTM`'s, whose per-step gradients TensorFlow sums into
    the float32 variable. bfloat16 has float32's range and keeps its fast
    16-bit matmuls.
    """
    return dtype if mm_dtype == tf.float16 else mm_dtype


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

    call.python_function = function
    return call


def _tape_recording():
    """Whether a gradient tape records now: while a gradient is computed, a
    tape that records it may ask for the gradient of that gradient."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # TensorFlow moved it: assume one may
        return True
    return record.could_possibly_record()


def _backward(projected, mask, all_outputs, records, events, h0, weights, d_hs, d_c):
    """Backpropagation through time; returns the inputs' gradients.

    One matmul per step for the state's gradient and fused
    `SigmoidGrad`/`TanhGrad` for the gates. The weights' gradient is one more
    matmul per step, accumulated; with 16-bit matmuls it is one large matmul
    after the loop instead, over the saved gradients of the pre-activations
    (per step, casting its float32 sum would cost more than the matmul).
    """
    kernel, *use = weights
    units = h0.shape[0]
    batch = h0.shape[1]
    dtype = h0.dtype
    mm_dtype = kernel.dtype
    after_loop = mm_dtype != dtype
    steps = _length(events)

    def array(rows, dtype=mm_dtype):
        return _array(steps, (rows, batch), dtype)

    d_hs_ta = None
    if all_outputs:
        d_hs_ta = array(units, dtype).unstack(d_hs)
        dh_last = tf.zeros_like(h0)
    else:
        dh_last = d_hs[-1]
    mask_ta = None
    if mask is not None:
        mask_ta = array(1, dtype).unstack(tf.cast(mask, dtype))
    # What the loop writes per step, and the weights' gradients it sums.
    arrays = {"events": array(kernel.shape[1] - units)}
    sums = {}
    if after_loop:
        arrays["dz"] = array(kernel.shape[0])
        if projected:
            arrays["du"] = array(units)
    else:
        sums["kernel"] = tf.zeros_like(kernel)
        if projected:  # `W_u`'s gradient and `b_u`'s, as a column
            sums["use"] = tf.zeros_like(use[0][:, :units])
            sums["use_bias"] = tf.zeros_like(use[0][:, units:])
    kernel_t = tf.transpose(kernel)
    use_t = tf.transpose(use[0][:, :units]) if projected else None

    def step(t, dh, dc, sums, arrays):
        sums, arrays = dict(sums), dict(arrays)
        ifv, n, c_prev, u = (records[k].read(t) for k in ("ifv", "n", "c", "u"))
        dh, dh_in, dc_in, m = _gradients_into_step(t, dh, dc, d_hs_ta, mask_ta)
        if projected:
            du, dv = _projected_use_grad(dh_in, ifv, u)
            du_mm = tf.cast(du, mm_dtype)
            if after_loop:
                arrays["du"] = arrays["du"].write(t, du_mm)
            else:
                kept = records["kept"].read(t)
                sums["use"] += tf.matmul(du, kept, transpose_b=True)
                sums["use_bias"] += tf.reduce_sum(du, axis=1, keepdims=True)
            d_kept = tf.matmul(use_t, du_mm)
            dz, dc_prev = _learn_forget_remember_grad(dc_in, d_kept, dv, ifv, n, c_prev)
        else:
            grad = _step_function(_classic_grad, units)
            dz, dc_prev = grad(dh_in, dc_in, ifv, n, c_prev, u)
        dz = tf.cast(dz, mm_dtype)
        if after_loop:
            arrays["dz"] = arrays["dz"].write(t, dz)
        else:
            sums["kernel"] += tf.matmul(dz, records["hx"].read(t), transpose_b=True)
        dh_prev, d_event = tf.split(tf.matmul(kernel_t, dz), [units, -1], axis=0)
        arrays["events"] = arrays["events"].write(t, d_event)
        dh_prev = tf.cast(dh_prev, dtype)
        if m is not None:  # masked: the state's gradient passes through
            dh_prev = dh_prev + dh * (1 - m)
            dc_prev = dc_prev + dc * (1 - m)
        return t - 1, dh_prev, dc_prev, sums, arrays

    _, dh0, dc0, sums, arrays = tf.while_loop(
        lambda t, *_: t >= 0,
        step,
        (steps - 1, dh_last, d_c, sums, arrays),
        maximum_iterations=steps,
        parallel_iterations=32,
    )
    if after_loop:
        # Sum over time and batch of d(pre-activation) x operand.
        sum_dtype = _weight_gradient_dtype(mm_dtype, dtype)

        def stacked(array):
            return tf.cast(array.stack(), sum_dtype)

        def weight_gradient(d, operand):
            return tf.einsum("tgb,tkb->gk", d, stacked(records[operand]))

        sums["kernel"] = weight_gradient(stacked(arrays["dz"]), "hx")
        if projected:
            du = stacked(arrays["du"])  # read once for `W_u` and `b_u`
            sums["use"] = weight_gradient(du, "kept")
            sums["use_bias"] = tf.reduce_sum(du, axis=(0, 2))[:, None]
    grads = [arrays["events"].stack(), dh0, dc0]
    grads.append(sums["kernel"])
    if projected:  # of `[W_u, b_u]`, transposed, as the loop takes them
        grads.append(tf.concat([sums["use"], sums["use_bias"]], axis=1))
    return grads


# ---------------------------------------------------------------------------
# One step's gates. In the training loop, `z` holds the pre-activations of the
# four gates in the order `i, f, V, N` along axis 0 (transposed tensors), in
# the matmuls' dtype; the state `c` (`LTM`) and what is returned are in the
# state's dtype. The inference loop's `z` is batch-major, in the cell's order.
# ---------------------------------------------------------------------------


def _sigmoid_gates(z_ifv, axis):
    """`sigmoid` of the pre-activations `[i; f; V]`.

    One op for the three gates, but under XLA and above 128 units one per
    gate: XLA then fuses each gate with its consumers (one over the three
    made XLA's inference step at (32, 200, 64, 256) 1.3x slower). Narrower,
    the single op is as fast for inference and faster for training (at
    (64, 100, 16, 8), jit on, one per gate took 1.12x the time).
    """
    if in_xla_context() and z_ifv.shape[axis] > 3 * 128:
        gates = tf.split(z_ifv, 3, axis=axis)
        return tf.concat([tf.sigmoid(g) for g in gates], axis=axis)
    return tf.sigmoid(z_ifv)


def _learn_forget_remember(z, c, axis=0):
    """Returns `[i; f; V]`, `N`, `LTM_{t-1} * f` and `LTM_t`."""
    units = c.shape[axis]
    z_ifv, z_n = tf.split(tf.cast(z, c.dtype), [3 * units, units], axis=axis)
    ifv = _sigmoid_gates(z_ifv, axis)
    i, f, _ = tf.split(ifv, 3, axis=axis)
    n = tf.tanh(z_n)
    kept = f * c
    return ifv, n, kept, kept + i * n


def _learn_forget_remember_cell_order(z, c):
    """Inference: `z` `(batch, 4 * units)` in the cell's order `i, f, N, V`.

    Returns `LTM_{t-1} * f`, `LTM_t` and `V_t`.
    """
    units = c.shape[1]
    z_if, z_n, z_v = tf.split(tf.cast(z, c.dtype), [2 * units, units, units], 1)
    i, f = tf.split(tf.sigmoid(z_if), 2, axis=1)
    kept = f * c
    return kept, kept + i * tf.tanh(z_n), tf.sigmoid(z_v)


def _projected_use(z_u, ifv, axis=0):
    """Returns `U_t` and `STM_t` from `U_t`'s pre-activation."""
    u = tf.tanh(tf.cast(z_u, ifv.dtype))
    return u, u * tf.split(ifv, 3, axis=axis)[2]


def _classic(z, c, axis=0):
    """Returns `[i; f; V]`, `N`, `LTM_t`, `tanh(LTM_t)` and `STM_t`."""
    units = c.shape[axis]
    z_ifv, z_n = tf.split(tf.cast(z, c.dtype), [3 * units, units], axis=axis)
    ifv = _sigmoid_gates(z_ifv, axis)
    i, f, v = tf.split(ifv, 3, axis=axis)
    n = tf.tanh(z_n)
    c_new = f * c + i * n
    u = tf.tanh(c_new)
    return ifv, n, c_new, u, u * v


def _projected_use_grad(dh, ifv, u, axis=0):
    """Returns the gradients of `U_t`'s and `V_t`'s pre-activations."""
    v = tf.split(ifv, 3, axis=axis)[2]
    du = tf.raw_ops.TanhGrad(y=u, dy=dh * v)
    return du, tf.raw_ops.SigmoidGrad(y=v, dy=dh * u)


def _learn_forget_remember_grad(dc, d_kept, dv, ifv, n, c_prev, axis=0):
    """Returns `dz` and the gradient of `LTM_{t-1}`.

    `dc` is the gradient of `LTM_t`, `d_kept` the Use gate's share of the
    gradient of `LTM_{t-1} * f`, `dv` that of `V_t`'s pre-activation.
    """
    i, f, _ = tf.split(ifv, 3, axis=axis)
    d_kept = dc + tf.cast(d_kept, dc.dtype)
    di = tf.raw_ops.SigmoidGrad(y=i, dy=dc * n)
    df = tf.raw_ops.SigmoidGrad(y=f, dy=d_kept * c_prev)
    dn = tf.raw_ops.TanhGrad(y=n, dy=dc * i)
    return tf.concat([di, df, dv, dn], axis=axis), d_kept * f


def _classic_grad(dh, dc, ifv, n, c_prev, u, axis=0):
    """Returns `dz` and the gradient of `LTM_{t-1}` for the classic cell."""
    i, f, v = tf.split(ifv, 3, axis=axis)
    dv = tf.raw_ops.SigmoidGrad(y=v, dy=dh * u)
    dc = dc + tf.raw_ops.TanhGrad(y=u, dy=dh * v)
    di = tf.raw_ops.SigmoidGrad(y=i, dy=dc * n)
    df = tf.raw_ops.SigmoidGrad(y=f, dy=dc * c_prev)
    dn = tf.raw_ops.TanhGrad(y=n, dy=dc * i)
    return tf.concat([di, df, dv, dn], axis=axis), dc * f


# Training inside an XLA-compiled function (`jit_compile=True`) takes the
# batch-major loop of `_forward_xla`, whose weight gradients are large
# matmuls after the loop (XLA's CPU matmul of a step's weight gradient, a
# sum over the batch alone, took 155-175 us at 128 units, twice the step's
# forward matmul): the classic cell at every width, the projected one above
# this many units. Model training step, jit on, against the transposed
# loop in the same process: classic 0.94x / 0.95x at (64, 100, 16, 128)
# (two runs of 25-35), 0.79x at (32, 100, 16, 96), 0.84x at
# (64, 100, 16, 64), 0.88x at (1, 100, 16, 64), 0.94x at (64, 100, 16, 8);
# projected 0.62x / 0.78x of keras.layers.LSTM at (32, 200, 64, 256)
# instead of 1.03x, but 1.15x at (64, 100, 16, 128) and 1.09x at
# (64, 100, 16, 64), so narrower projected layers keep the transposed loop.
# Outside XLA, the classic cell's loops are compiled with XLA each where
# the shapes are static and the matmuls float32: model training step at
# (32, 200, 64, 256), jit off, 0.68x / 0.71x of keras.layers.LSTM instead
# of 0.82x / 0.77x (two runs); at (64, 100, 16, 128) they would be slower
# (1.04x vs 0.83x), at 64 units even. The projected cell's loops gain too
# since the XLA loop makes one matmul a step: 0.89x / 0.86x instead of
# 1.07x / 0.96x at (32, 200, 64, 256) (two runs of 20-30), 0.92x instead of
# 1.02x at (64, 100, 16, 256), even at (64, 100, 16, 192) (1.10x vs 1.06x,
# medians 0.96x). bfloat16 matmuls stay with oneDNN (XLA's CPU backend
# emulates them).
XLA_TRAINING_MIN_UNITS = 128

# Up to this many units, the classic cell's training step runs its
# element-wise ops as one XLA kernel each way; see `_step_function`.
JIT_STEP_MAX_UNITS = 128


def _step_function(function, units):
    """`function` as the classic cell's training loop should call it.

    Up to `JIT_STEP_MAX_UNITS` units, compiled with XLA: the step's
    element-wise ops as one kernel, the matmuls around it left to
    TensorFlow (faster on CPU than XLA's). Measured on 2 cores, model
    training step, min of 40 interleaved runs: at (64, 100, 16, 128) 0.93x
    the time of separate ops, but at (32, 200, 64, 256), where the step is
    bound by its larger matmuls, 1.07x. The projected cell's step would
    need two kernels each way around its extra matmul; four launches a step
    measured 1.16x, so it always keeps separate ops.
    """
    # Under XLA, XLA compiles it with its caller anyway.
    if (
        units > JIT_STEP_MAX_UNITS
        or in_xla_context()
        or getattr(_tracing, "no_xla", False)
    ):
        return function
    return _jit(function)


@functools.cache
def _jit(function):
    return tf.function(function, jit_compile=True, autograph=False)
