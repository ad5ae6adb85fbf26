"""The fused training path of `FourGateLSTM` (TensorFlow backend).

`FourGateLSTM` trains through `keras_lstm_gates._fused`, a whole-sequence loop
with a hand-written backward pass. These tests hold it to the cell's own loop
(`keras.layers.RNN(FourGateLSTMCell)`, differentiated by TensorFlow), to an
independent NumPy reference, and to finite differences.
"""

import contextlib

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import FourGateLSTMCell
from tests import reference

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the fused path is the TensorFlow backend's",
)

BATCH, STEPS, FEATURES, UNITS = 4, 6, 4, 5


def _data(dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, STEPS, FEATURES)).astype(dtype)
    h0 = rng.standard_normal((BATCH, UNITS)).astype(dtype)
    c0 = rng.standard_normal((BATCH, UNITS)).astype(dtype)
    mask = np.ones((BATCH, STEPS), bool)
    mask[0, 4:] = False  # padded at the end
    mask[1, :2] = False  # padded at the start
    mask[2, 3] = False  # a gap
    mask[3, :] = False  # all padding: the output and state stay the initial
    return x, h0, c0, mask


def _pair(use_gate, dtype=None, cell_options=None, **kwargs):
    """The fused layer and the cell's loop, with the same random weights."""
    cell_options = cell_options or {}
    fused = FourGateLSTM(
        UNITS, use_gate=use_gate, dtype=dtype, **cell_options, **kwargs
    )
    loop = keras.layers.RNN(
        FourGateLSTMCell(UNITS, use_gate=use_gate, dtype=dtype, **cell_options),
        dtype=dtype,
        **kwargs,
    )
    x = np.zeros((BATCH, STEPS, FEATURES), dtype or "float32")
    fused(x)
    loop(x)
    rng = np.random.default_rng(1)
    weights = [0.5 * rng.standard_normal(w.shape) for w in fused.get_weights()]
    fused.set_weights(weights)
    loop.set_weights(weights)
    return fused, loop


def _outputs_and_gradients(
    layer, x, h0, c0, mask, training=True, jit=False, eager=False
):
    """Outputs and d(loss)/d(x, STM_0, LTM_0, weights), in a tf.function
    (compiled with XLA if `jit`), or eagerly."""
    import tensorflow as tf

    def run(x, h0, c0):
        with tf.GradientTape() as tape:
            tape.watch([x, h0, c0])
            outputs = layer(x, initial_state=[h0, c0], mask=mask, training=training)
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            # A loss that weighs every output differently.
            loss = sum(
                tf.reduce_sum(
                    o * tf.reshape(tf.cast(tf.range(tf.size(o)), o.dtype), o.shape)
                )
                / 10.0
                for o in outputs
            )
        grads = tape.gradient(loss, [x, h0, c0] + layer.trainable_weights)
        return outputs, grads

    if not eager:
        run = tf.function(run, jit_compile=jit)
    outputs, grads = run(tf.constant(x), tf.constant(h0), tf.constant(c0))
    return [o.numpy() for o in outputs], [g.numpy() for g in grads]


def test_layer_runs_through_fused_path(routes):
    layer = FourGateLSTM(UNITS)
    x = _data()[0]
    layer(x, training=False)
    layer(x, training=True)
    assert [route.training for route in routes()] == [False, True]
    keras.layers.RNN(FourGateLSTMCell(UNITS))(x)
    FourGateLSTM(UNITS, unroll=True)(x)
    FourGateLSTM(UNITS, activation="relu")(x)
    assert len(routes()) == 2


@pytest.fixture
def force():
    """`force(**settings)`: `keras_lstm_gates.loops.force` for the rest of
    the test."""
    from keras_lstm_gates import loops

    with contextlib.ExitStack() as stack:
        yield lambda **settings: stack.enter_context(loops.force(**settings))


def _wide_layers_take_xla_loop(force):
    """These tests' layers count as wide: they train batch-major under XLA,
    or with their loops compiled alone where the shapes are static."""
    force(wide_units=UNITS - 1)


def _cpu_without_gpu(force, flags):
    """The loops see a CPU with these flags (`/proc/cpuinfo`) and no GPU."""
    force(cpu_flags=flags, gpu=False)


@contextlib.contextmanager
def _policy(name):
    """Layers made inside take Keras's global dtype policy `name`."""
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_wide_layers_train_through_batch_major_loop(force, routes, jit, wide, use_gate):
    # Under XLA, and compiled by itself for a wide layer outside XLA.
    import tensorflow as tf

    from keras_lstm_gates.loops import Layout
    from keras_lstm_gates.loops import Xla

    if wide:
        _wide_layers_take_xla_loop(force)
    layer = FourGateLSTM(UNITS, use_gate=use_gate)
    x = tf.constant(_data()[0])
    layer(x)
    routes.clear()

    @tf.function(jit_compile=jit)
    def train(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, training=True))
        return tape.gradient(loss, layer.trainable_weights)

    assert all(g is not None for g in train(x))
    # The classic cell under XLA or when wide (its loops compiled alone);
    # the projected cell when wide.
    xla_loop = (jit or wide) if use_gate == "classic" else wide
    expected = Layout.BATCH_MAJOR if xla_loop else Layout.TRANSPOSED
    (route,) = routes()
    assert route.layout is expected and routes.traced() == [expected]
    assert route.xla is (Xla.CALLER if jit else Xla.OWN if wide else Xla.NONE)
    routes.clear()
    layer(x, training=True)  # eagerly: nothing is left of the XLA context
    assert routes()[0].xla is Xla.NONE


@pytest.mark.parametrize("jit", [False, True], ids=["traced", "jit_compile"])
@pytest.mark.parametrize("batch", [1, BATCH])
def test_compiled_inference_takes_transposed_loop_for_batches(routes, batch, jit):
    import tensorflow as tf

    from keras_lstm_gates.loops import Layout

    layer = FourGateLSTM(UNITS)
    x = tf.constant(_data()[0][:batch])
    layer.build(x.shape)
    infer = tf.function(lambda x: layer(x, training=False), jit_compile=jit)
    assert infer(x).shape == (batch, UNITS)
    expected = Layout.TRANSPOSED if batch > 1 else Layout.BATCH_MAJOR
    assert [route.layout for route in routes()] == [expected]
    assert routes.traced() == [expected]


def test_tflite_tracing_picks_batch_major_loop(routes):
    import tensorflow as tf

    from keras_lstm_gates import tflite_tracing
    from keras_lstm_gates.loops import Layout

    layer = FourGateLSTM(UNITS)
    x = tf.constant(_data()[0])
    layer.build(x.shape)
    with tflite_tracing():
        out = tf.function(lambda x: layer(x, training=False))(x)
    (route,) = routes()
    assert route.layout is Layout.BATCH_MAJOR and route.hoist
    expected = tf.function(lambda x: layer(x, training=False))(x)
    assert [r.layout for r in routes()] == [Layout.BATCH_MAJOR, Layout.TRANSPOSED]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def _xla_calls(layer, x, mask, input_signature=None):
    """How many XLA-compiled function calls an inference graph makes."""
    import tensorflow as tf

    @tf.function(input_signature=input_signature)
    def infer(x):
        return layer(x, mask=mask, training=False)

    graph = infer.get_concrete_function(
        *([] if input_signature else [tf.constant(x)])
    ).graph.as_graph_def()
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes += list(function.node_def)
    return sum(
        1
        for node in nodes
        if "_XlaMustCompile" in node.attr and node.attr["_XlaMustCompile"].b
    )


def test_mixed_bfloat16_inference_under_xla_matches_float32():
    import tensorflow as tf

    x, h0, c0, mask = _data()
    full, _ = _pair("projected", return_sequences=True)
    with _policy("mixed_bfloat16"):
        half, _ = _pair("projected", return_sequences=True)
    infer = tf.function(lambda layer, x: layer(x, mask=mask, training=False))
    out = infer(half, tf.constant(x))
    assert out.dtype == tf.bfloat16
    expected = infer(full, tf.constant(x)).numpy()
    np.testing.assert_allclose(np.float32(out), expected, atol=0.03)


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
def test_mixed_bfloat16_training_under_xla_matches_float32(force, routes, use_gate):
    # On a GPU the XLA training loop multiplies in bfloat16; pretend one.
    _wide_layers_take_xla_loop(force)
    x, h0, c0, mask = _data()
    full, _ = _pair(use_gate, return_sequences=True)
    with _policy("mixed_bfloat16"):
        half, _ = _pair(use_gate, return_sequences=True)
    half.set_weights(full.get_weights())
    expected = _outputs_and_gradients(full, x, h0, c0, mask, jit=True)
    force(gpu=True)
    routes.clear()
    got = _outputs_and_gradients(half, x, h0.astype("float32"), c0, mask, jit=True)
    assert [route.matmul_dtype for route in routes()] == ["bfloat16"]
    np.testing.assert_allclose(np.float32(got[0][0]), expected[0][0], atol=0.05)
    for a, b in zip(got[1], expected[1], strict=True):
        a = np.float32(a)
        assert np.max(np.abs(a - b)) <= 0.05 * np.max(np.abs(b)) + 0.05


def test_inference_compiles_with_xla_only_for_static_shapes():
    import tensorflow as tf

    x, _, _, mask = _data()
    layer = FourGateLSTM(UNITS)
    assert _xla_calls(layer, x, mask) == 1
    dynamic = [tf.TensorSpec((None, None, FEATURES), tf.float32)]
    assert _xla_calls(layer, x, None, input_signature=dynamic) == 0


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"masked": True, "return_sequences": True},
        {"go_backwards": True, "return_sequences": True},
        {"masked": True, "return_sequences": True, "zero_output_for_mask": True},
        {"masked": True, "go_backwards": True, "return_state": True},
        {"masked": True, "zero_output_for_mask": True, "return_state": True},
        {
            "masked": True,
            "return_sequences": True,
            "zero_output_for_mask": True,
            "return_state": True,
        },
        {"cell_options": {"recurrent_dropout": 0.5, "dropout": 0.5}},
    ],
    ids=[
        "plain",
        "masked",
        "backwards",
        "masked-zero-output",
        "state",
        "last-zero-output-state",
        "zero-output-state",
        "dropout",
    ],
)
@pytest.mark.parametrize(
    "mode",
    [
        "xla",
        "xla-single",
        "graph-dynamic",
        "eager",
        "jit_compile",
        "jit_compile-single",
        "export",
    ],
)
def test_inference_matches_cell_loop(use_gate, options, mode):
    # "xla": a traced caller, the layer compiles its own loop; "jit_compile":
    # an XLA-compiled caller. Both run the transposed loop, or the
    # batch-major one for a single sequence. "export": traced as for TFLite,
    # the batch-major loop with the events' projection before it.
    import contextlib

    import tensorflow as tf

    from keras_lstm_gates import tflite_tracing

    options = dict(options)
    x, h0, c0, mask = _data()
    mask = mask if options.pop("masked", False) else None
    if mode.endswith("single"):
        x, h0, c0 = x[:1], h0[:1], c0[:1]
        mask = None if mask is None else mask[:1]
    fused, loop = _pair(use_gate, **options)

    def infer(layer):
        def call(x, h0, c0):
            return layer(x, initial_state=[h0, c0], mask=mask, training=False)

        if mode.startswith("xla") or mode == "export":
            call = tf.function(call)
        elif mode.startswith("jit_compile"):
            call = tf.function(call, jit_compile=True)
        elif mode == "graph-dynamic":
            spec = [tf.TensorSpec((None, None, FEATURES), tf.float32)]
            spec += [tf.TensorSpec((None, UNITS), tf.float32)] * 2
            call = tf.function(call, input_signature=spec)
        tracing = contextlib.nullcontext()
        if mode == "export":
            tracing = tflite_tracing()
        with tracing:
            outputs = call(tf.constant(x), tf.constant(h0), tf.constant(c0))
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [o.numpy() for o in outputs]

    for a, b in zip(infer(fused), infer(loop), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"masked": True},
        {"go_backwards": True, "return_sequences": True},
        {"masked": True, "return_sequences": True, "zero_output_for_mask": True},
        {"masked": True, "go_backwards": True, "return_state": True},
        {"masked": True, "zero_output_for_mask": True, "return_state": True},
        {
            "masked": True,
            "return_sequences": True,
            "zero_output_for_mask": True,
            "return_state": True,
        },
    ],
    ids=[
        "plain",
        "masked",
        "backwards-sequences",
        "masked-zero-output",
        "state",
        "last-zero-output-state",
        "zero-output-state",
    ],
)
@pytest.mark.parametrize("mode", ["graph", "xla", "graph-wide"])
def test_gradients_match_autodiff_of_cell_loop(force, use_gate, options, mode):
    # "xla" and "graph-wide" (the loops compiled alone) run the batch-major
    # loop of wide layers.
    if mode != "graph":
        _wide_layers_take_xla_loop(force)
    options = dict(options)
    x, h0, c0, mask = _data()
    mask = mask if options.pop("masked", False) else None
    fused, loop = _pair(use_gate, **options)
    fused_out, fused_grads = _outputs_and_gradients(
        fused, x, h0, c0, mask, jit=mode == "xla"
    )
    loop_out, loop_grads = _outputs_and_gradients(loop, x, h0, c0, mask)
    assert len(fused_out) == len(loop_out)
    for a, b in zip(fused_out, loop_out):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(fused_grads) == len(loop_grads)
    for a, b in zip(fused_grads, loop_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("batch", [1, BATCH], ids=["single", "batch"])
@pytest.mark.parametrize("jit", [False, True], ids=["traced", "jit_compile"])
def test_gradients_through_inference_calls_match_cell_loop(jit, batch, use_gate):
    # training=False under a tape, as for a frozen discriminator or a
    # saliency map: the compiled inference loops (transposed for a batch,
    # batch-major for one sequence) take the gradient of the training loops.
    x, h0, c0, mask = (a[:batch] for a in _data())
    # The states are outputs too: the loss reaches `LTM_T` (a frozen
    # encoder's final state).
    fused, loop = _pair(use_gate, return_sequences=True, return_state=True)
    fused_out, fused_grads = _outputs_and_gradients(
        fused, x, h0, c0, mask, training=False, jit=jit
    )
    loop_out, loop_grads = _outputs_and_gradients(loop, x, h0, c0, mask, training=False)
    for a, b in zip(fused_out, loop_out, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(fused_grads, loop_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("jit", [False, True], ids=["traced", "jit_compile"])
@pytest.mark.parametrize("sequences", [True, False], ids=["sequences", "last"])
def test_masked_outputs_are_zero_even_where_the_state_is_nan(sequences, jit, training):
    # Keras selects a masked step's zero output; multiplying the state by 0
    # would let a NaN through. (a) `zero_output_for_mask` (which
    # `Bidirectional` sets) with a NaN input before the padding; (b) a NaN
    # `STM_0` on a row whose first steps are masked (row 3: all of them).
    import tensorflow as tf

    x, h0, c0, _ = _data()
    x[0, 1, 0] = np.nan
    h0[1] = h0[3] = np.nan
    mask = np.ones((BATCH, STEPS), bool)
    mask[0, 4:] = False
    mask[1, :2] = False
    mask[3, :] = False
    for zero_output in (True, False):
        options = dict(return_sequences=sequences, zero_output_for_mask=zero_output)
        fused = FourGateLSTM(UNITS, use_gate="classic", **options)
        lstm = keras.layers.LSTM(UNITS, **options)
        for layer in (fused, lstm):
            layer.build(x.shape)
        lstm.set_weights(fused.get_weights())
        call = tf.function(
            lambda layer: layer(
                x, initial_state=[h0, c0], mask=mask, training=training
            ),
            jit_compile=jit,
            autograph=False,
        )
        expected = keras.ops.convert_to_numpy(
            lstm(x, initial_state=[h0, c0], mask=mask)
        )
        got = call(fused).numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert (got[3] == 0).all()  # no unmasked step
        if sequences:
            assert (got[1, :2] == 0).all()  # before the first unmasked step
        if zero_output:
            assert (got[0, 4:] == 0).all()  # padding after a NaN


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_float64_gradients_under_jit_compile_match_cell_loop(training, use_gate):
    # A float64 layer under jit_compile, at 8 units and a batch of 4: the
    # shapes where XLA's CPU backend (TensorFlow 2.21) miscompiled the
    # projected loop's concatenation of a row of ones to `LTM_{t-1} * f`,
    # and `b_u`'s gradient came out wrong (4.6 against a largest value 5.4).
    # Narrow layers under XLA take the transposed loop (no force).
    import tensorflow as tf

    units = 8
    rng = np.random.default_rng(6)
    x, h0, c0 = (
        rng.standard_normal(shape)
        for shape in ((BATCH, 30, 3), (BATCH, units), (BATCH, units))
    )
    fused = FourGateLSTM(
        units, use_gate=use_gate, dtype="float64", return_sequences=True
    )
    loop = keras.layers.RNN(
        FourGateLSTMCell(units, use_gate=use_gate, dtype="float64"),
        dtype="float64",
        return_sequences=True,
    )
    for layer in (fused, loop):
        layer.build(x.shape)
    loop.set_weights(fused.get_weights())
    fused_out, fused_grads = _outputs_and_gradients(
        fused, x, h0, c0, None, training=training, jit=True
    )
    loop_out, loop_grads = _outputs_and_gradients(loop, x, h0, c0, None)
    np.testing.assert_allclose(fused_out[0], loop_out[0], atol=1e-12)
    assert tf.reduce_any(tf.abs(loop_grads[-1]) > 0.1)  # b_u (or b) matters
    for a, b in zip(fused_grads, loop_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
def test_eager_training_of_wide_layers_matches_cell_loop(force, use_gate):
    # Traced, a wide layer's loops are compiled with XLA on their own;
    # eagerly (a tape around a direct call, `run_eagerly=True`) they cannot
    # be, as a tape would ask for the compiled loop's intermediates.
    _wide_layers_take_xla_loop(force)
    x, h0, c0, mask = _data()
    fused, loop = _pair(use_gate)
    fused_out, fused_grads = _outputs_and_gradients(fused, x, h0, c0, mask, eager=True)
    loop_out, loop_grads = _outputs_and_gradients(loop, x, h0, c0, mask)
    np.testing.assert_allclose(fused_out[0], loop_out[0], atol=1e-5)
    for a, b in zip(fused_grads, loop_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    model = keras.Sequential(
        [keras.Input((STEPS, FEATURES)), fused, keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse", run_eagerly=True)
    before = [w.copy() for w in fused.get_weights()]
    history = model.fit(x, np.ones((BATCH, 1)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.abs(a - b).max() > 0 for a, b in zip(before, fused.get_weights()))


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
def test_wide_layer_under_jit_compile_matches_cell_loop(use_gate):
    # 130 units: the thresholds as shipped (XLA training loop, one sigmoid
    # per gate), nothing forced.
    import tensorflow as tf

    units = 130
    rng = np.random.default_rng(7)
    x = rng.standard_normal((BATCH, STEPS, FEATURES)).astype("float32")
    fused = FourGateLSTM(units, use_gate=use_gate, return_sequences=True)
    loop = keras.layers.RNN(
        FourGateLSTMCell(units, use_gate=use_gate), return_sequences=True
    )
    fused(x), loop(x)
    weights = [0.2 * rng.standard_normal(w.shape) for w in fused.get_weights()]
    fused.set_weights(weights)
    loop.set_weights(weights)
    coefficients = rng.standard_normal((BATCH, STEPS, units)).astype("float32")

    def run(layer, jit):
        @tf.function(jit_compile=jit)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True) * coefficients)
            grads = tape.gradient(loss, [x] + layer.trainable_weights)
            return [layer(x, training=False)] + grads

        return [t.numpy() for t in step(tf.constant(x))]

    for a, b in zip(run(fused, True), run(loop, False), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("jit_step", [True, False], ids=["xla-step", "plain-step"])
def test_classic_gradients_with_and_without_xla_step(force, routes, jit_step):
    # Wide layers run the classic step as separate ops, narrow ones with XLA.
    force(jit_step=jit_step)
    x, h0, c0, mask = _data()
    fused, loop = _pair("classic", return_sequences=True)
    routes.clear()
    fused_out, fused_grads = _outputs_and_gradients(fused, x, h0, c0, mask)
    assert [route.jit_step for route in routes()] == [jit_step]
    loop_out, loop_grads = _outputs_and_gradients(loop, x, h0, c0, mask)
    np.testing.assert_allclose(fused_out[0], loop_out[0], atol=1e-5)
    for a, b in zip(fused_grads, loop_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
def test_training_forward_matches_numpy_reference(use_gate):
    x, h0, c0, _ = _data()
    layer = FourGateLSTM(UNITS, use_gate=use_gate, return_sequences=True)
    layer(x)
    weights = reference.random_gate_weights(
        UNITS, FEATURES, use_gate, np.random.default_rng(2)
    )
    layer.set_gate_weights(weights)
    out = layer(x, initial_state=[h0, c0], training=True)
    expected = reference.four_gate_lstm(x, weights, use_gate, stm=h0, ltm=c0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), expected["STM"], atol=1e-5
    )


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("mode", ["graph", "xla"])
def test_gradients_match_finite_differences(force, use_gate, mode):
    import tensorflow as tf

    if mode == "xla":
        _wide_layers_take_xla_loop(force)
    x, h0, c0, mask = _data("float64")
    layer, _ = _pair(use_gate, dtype="float64", return_sequences=True)
    coefficients = np.random.default_rng(3).standard_normal((BATCH, STEPS, UNITS))

    def loss(x, h0, c0):
        out = layer(x, initial_state=[h0, c0], mask=mask, training=True)
        return tf.reduce_sum(out * coefficients)

    inputs = [tf.Variable(a) for a in (x, h0, c0)]
    tensors = inputs + layer.trainable_weights
    loss_fn = tf.function(loss, jit_compile=mode == "xla")

    # The tape inside the function: TensorFlow cannot take the gradient of a
    # compiled while loop from outside (true of keras.layers.LSTM as well).
    @tf.function(jit_compile=mode == "xla")
    def gradients():
        with tf.GradientTape() as tape:
            value = loss(*inputs)
        return tape.gradient(value, tensors)

    grads = gradients()
    rng = np.random.default_rng(4)
    eps = 1e-6
    for tensor, grad in zip(tensors, grads):
        for _ in range(3):
            index = tuple(rng.integers(0, n) for n in tensor.shape)
            original = tensor.numpy()
            bumped = []
            for sign in (1, -1):
                changed = original.copy()
                changed[index] += sign * eps
                tensor.assign(changed)
                bumped.append(float(loss_fn(*inputs)))
            tensor.assign(original)
            numeric = (bumped[0] - bumped[1]) / (2 * eps)
            assert abs(grad.numpy()[index] - numeric) < 1e-6 + 1e-5 * abs(numeric)


def _fit_once(use_gate, jit_compile):
    keras.utils.set_random_seed(0)
    x, _, _, _ = _data()
    y = np.random.default_rng(5).standard_normal((BATCH, 1)).astype("float32")
    model = keras.Sequential(
        [keras.Input((STEPS, FEATURES)), FourGateLSTM(UNITS, use_gate=use_gate)]
        + [keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
    model.train_on_batch(x, y)
    return model.get_weights()


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
def test_jit_compiled_training_step_matches_graph_step(use_gate):
    eager = _fit_once(use_gate, jit_compile=False)
    compiled = _fit_once(use_gate, jit_compile=True)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _loop_op_dtypes(layer, x):
    """`{op type: {dtypes}}` of the ops in the training graph's functions
    (the loops' bodies and the functions they call)."""
    import tensorflow as tf

    @tf.function
    def train(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32))
        return tape.gradient(loss, layer.trainable_weights)

    graph = train.get_concrete_function(tf.constant(x)).graph.as_graph_def()
    found = {}
    for function in graph.library.function:
        for node in function.node_def:
            if "T" in node.attr:
                dtype = tf.dtypes.as_dtype(node.attr["T"].type).name
                found.setdefault(node.op, set()).add(dtype)
    return found


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("matrix_units", [True, False], ids=["bf16-units", "none"])
def test_mixed_bfloat16_matmuls_16_bit_only_where_fast(force, use_gate, matrix_units):
    _cpu_without_gpu(force, {"amx_bf16"} if matrix_units else {"avx2"})
    x, h0, c0, mask = _data()
    fused, _ = _pair(use_gate)
    outputs32, grads32 = _outputs_and_gradients(fused, x, h0, c0, mask)
    with _policy("mixed_bfloat16"):
        half, _ = _pair(use_gate)
    dtypes = _loop_op_dtypes(half, x)
    # The gates' arithmetic and the state stay in float32 either way.
    assert dtypes["Sigmoid"] == dtypes["SigmoidGrad"] == {"float32"}
    assert dtypes["MatMul"] == {"bfloat16" if matrix_units else "float32"}
    outputs16, grads16 = _outputs_and_gradients(half, x, h0, c0, mask)
    assert str(outputs16[0].dtype) == "bfloat16"
    np.testing.assert_allclose(np.float32(outputs16[0]), outputs32[0], atol=0.03)
    for a, b in zip(grads32, grads16):
        b = np.asarray(b, np.float32)
        assert np.abs(a - b).max() <= 0.02 * np.abs(a).max() + 0.02


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("mode", ["eager", "traced", "training", "jit_compile"])
def test_mixed_bfloat16_long_term_memory_accumulates_in_float32(force, use_gate, mode):
    # i = f = 1 and N = 1e-3 at every step: LTM_t = t * 1e-3 in exact
    # arithmetic. A state rounded to bfloat16 (8 bits) stops growing near
    # 0.5, where 1e-3 is below half its spacing.
    import tensorflow as tf

    _cpu_without_gpu(force, {"amx_bf16"})
    steps, units = 1000, 3
    with _policy("mixed_bfloat16"):
        layer = FourGateLSTM(units, use_gate=use_gate, return_state=True)
        layer.build((2, steps, 2))
    gates = {k: np.zeros_like(v) for k, v in layer.cell.gate_weights().items()}
    gates.update(
        b_i=np.full(units, 20.0), b_f=np.full(units, 20.0), b_n=np.full(units, 1e-3)
    )
    layer.cell.set_gate_weights(gates)
    x = tf.zeros((2, steps, 2))

    def call(x):
        return layer(x, training=mode == "training")[2]

    if mode != "eager":
        call = tf.function(call, jit_compile=mode == "jit_compile")
    ltm = np.asarray(call(x), np.float32)
    expected = steps * np.tanh(np.float32(np.asarray(1e-3, "bfloat16")))
    np.testing.assert_allclose(ltm, expected, rtol=1e-3)


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("mode", ["graph-fp16-matmuls", "graph", "xla", "graph-wide"])
def test_mixed_float16_weight_gradients_take_a_large_loss_scale(force, use_gate, mode):
    # The weights' gradients sum a loss-scaled gradient over batch and time:
    # they must not pass through float16 (largest 65504), as the per-step
    # gradients of keras.layers.LSTM do not (TensorFlow sums those into the
    # float32 variable).
    import tensorflow as tf

    _cpu_without_gpu(force, {"avx512_fp16"} if mode == "graph-fp16-matmuls" else ())
    if mode in ("xla", "graph-wide"):
        _wide_layers_take_xla_loop(force)
    rng = np.random.default_rng(9)
    x = tf.constant(rng.random((64, 50, FEATURES), np.float32))
    # Positive: the gradients add up over batch and time, so the weights'
    # sums reach 4 x 65504 while every per-step gradient stays far below.
    coefficients = tf.constant(rng.uniform(0.5, 1.0, (64, 8)), tf.float32)
    weights = None

    def gradients(policy, scale):
        nonlocal weights
        with _policy(policy):
            layer = FourGateLSTM(8, use_gate=use_gate)
            layer.build(x.shape)
        weights = weights or [0.3 * rng.standard_normal(w.shape) for w in layer.weights]
        layer.set_weights(weights)

        @tf.function(jit_compile=mode == "xla")
        def run(x):
            with tf.GradientTape() as tape:
                outputs = tf.cast(layer(x, training=True), tf.float32)
                loss = tf.reduce_sum(outputs * coefficients) * scale
            return tape.gradient(loss, layer.trainable_weights)

        return [g.numpy() for g in run(x)]

    exact = gradients("float32", 1.0)
    largest = max(np.abs(g).max() for g in exact)
    scale = 2.0 ** np.ceil(np.log2(4 * 65504 / largest))
    for a, b in zip(exact, gradients("mixed_float16", scale), strict=True):
        assert b.dtype == np.float32 and np.isfinite(b).all()
        np.testing.assert_allclose(b / scale, a, atol=0.01 * largest)


def test_mixed_precision_routes_report_the_matmuls_dtype(force, routes):
    # What `run` hands the dispatch: the CPU's flags and GPU as forced.
    import tensorflow as tf

    x = tf.constant(_data()[0])
    with _policy("mixed_bfloat16"):
        layer = FourGateLSTM(UNITS)
    for flags, expected in (({"avx512_bf16"}, "bfloat16"), ((), "float32")):
        _cpu_without_gpu(force, flags)
        routes.clear()
        layer(x, training=True)
        assert [route.matmul_dtype for route in routes()] == [expected]


def test_recurrent_dropout_trains_through_cell_loop(routes):
    layer = FourGateLSTM(UNITS, recurrent_dropout=0.5, seed=1)
    layer(_data()[0])
    assert [route.training for route in routes()] == [False]
    out = layer(_data()[0], training=True)
    assert len(routes()) == 1  # the cell's loop: no fused route
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("use_gate", ["classic", "projected"])
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_fit_with_unknown_batch_and_time_matches_cell_loop(
    force, use_gate, jit_compile
):
    _wide_layers_take_xla_loop(force)

    def model(layer, jit_compile=False):
        keras.utils.set_random_seed(0)
        net = keras.Sequential(
            [keras.Input((None, FEATURES)), keras.layers.Masking(), layer]
            + [keras.layers.Dense(1)]
        )
        net.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
        return net

    fused = model(FourGateLSTM(UNITS, use_gate=use_gate), jit_compile)
    loop = model(keras.layers.RNN(FourGateLSTMCell(UNITS, use_gate=use_gate)))
    loop.set_weights(fused.get_weights())
    rng = np.random.default_rng(6)
    x = rng.standard_normal((10, STEPS, FEATURES)).astype("float32")
    x[0, 4:] = 0.0  # masked padding
    y = rng.standard_normal((10, 1)).astype("float32")
    # Batches of 4, 4 and 2: the last one has another batch size.
    fused.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    loop.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(fused.get_weights(), loop.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


# Tapes beyond one first-order gradient: a persistent tape (two `gradient`
# calls, as GAN tutorials use), a gradient of a gradient (a gradient
# penalty, WGAN-GP) and `batch_jacobian`. keras.layers.LSTM takes them all;
# the fused path failed inside TensorFlow (records read twice, or a loop
# compiled with XLA asked for its intermediates).


def _tape_case(case, layer, x, training):
    import tensorflow as tf

    if case == "persistent":
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.square(layer(x, training=training) - 1.0))
        return [tape.gradient(loss, layer.trainable_weights), tape.gradient(loss, x)]
    if case == "penalty":
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = layer(x, training=training)
                total = tf.reduce_sum(y * y)
            penalty = tf.reduce_mean(tf.square(inner.gradient(total, x)))
            loss = penalty + tf.reduce_mean(y)
        return outer.gradient(loss, [layer.trainable_weights, x])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)[:, -1]
    return [tape.batch_jacobian(y, x)]


# Each (mode, wide, training) takes its own loops: eager; the compiled
# inference loop; the transposed training loop; the wide layers' loops
# compiled alone; under XLA.
_PATHS = [
    ("eager", False, True),
    ("eager", False, False),
    ("graph", False, True),
    ("graph", False, False),
    ("graph", True, True),
    ("graph", True, False),
    ("xla", True, True),
    ("xla", False, False),
]


@pytest.mark.parametrize(
    "case, use_gate, mode, wide, training",
    [("persistent", "projected", *path) for path in _PATHS]
    + [("penalty", "classic", *path) for path in _PATHS]
    # Not under XLA: pfor there fails for keras.layers.LSTM too (TensorFlow).
    + [
        ("jacobian", "projected", *path)
        for path in _PATHS
        if path[0] != "xla" and (path[0] == "eager") == path[2]
    ],
)
def test_tapes_beyond_first_order_match_cell_loop(
    force, case, use_gate, mode, wide, training
):
    import tensorflow as tf

    if wide:  # the loops compiled with XLA on their own (graph mode)
        _wide_layers_take_xla_loop(force)
    fused, loop = _pair(use_gate, return_sequences=True)
    x = tf.constant(_data()[0])
    results = []
    for layer in (fused, loop):
        run = lambda layer=layer: _tape_case(case, layer, x, training)  # noqa: E731
        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        results.append([np.asarray(t) for t in tf.nest.flatten(run())])
    for a, b in zip(*results, strict=True):
        assert np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_only_a_recorded_gradient_takes_the_autodiff_route(force, routes):
    # Wide layers outside XLA: the compiled backward pass, unless a tape
    # records the gradient (a gradient penalty's inner gradient).
    import tensorflow as tf

    _wide_layers_take_xla_loop(force)

    def calls():
        return [m for m in routes.messages() if m.startswith("gradient by autodiff")]

    fused, _ = _pair("projected")
    x = tf.constant(_data()[0])

    @tf.function
    def gradients(case):
        if case == "penalty":
            return _tape_case("penalty", fused, x, True)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(fused(x, training=True))
        return tape.gradient(loss, fused.trainable_weights)

    gradients("plain")
    assert not calls()
    gradients("penalty")
    assert calls()
