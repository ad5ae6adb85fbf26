"""Which loop `FourGateLSTM` runs: the dispatch as a table, and the route
each path users take actually runs (`keras_lstm_gates.loops`)."""

import dataclasses

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import loops
from keras_lstm_gates.loops import Facts
from keras_lstm_gates.loops import Layout
from keras_lstm_gates.loops import Xla

T, B = Layout.TRANSPOSED, Layout.BATCH_MAJOR
WIDE = loops.WIDE_UNITS + 1
BF, F16, F32 = "bfloat16", "float16", "float32"
NONE, OWN, CALLER = Xla.NONE, Xla.OWN, Xla.CALLER
# CPU flags of 16-bit matrix units.
BF16, AMX, FP16 = (frozenset({f}) for f in ("avx512_bf16", "amx_bf16", "avx512_fp16"))

# A call traced in a `tf.function` at static shapes, 64 units, float32.
TRACED = Facts(
    training=False,
    in_xla=False,
    eager=False,
    static_shapes=True,
    batch=32,
    units=64,
    projected=True,
    compute_dtype="float32",
)

# (facts changed from TRACED) -> (layout, xla, matmul dtype, hoist, jit_step)
TABLE = [
    # Training.
    (dict(training=True), (T, NONE, F32, False, False)),
    (dict(training=True, projected=False), (T, NONE, F32, False, True)),
    (dict(training=True, units=WIDE), (B, OWN, F32, False, False)),
    (dict(training=True, units=WIDE, eager=True), (T, NONE, F32, False, False)),
    (dict(training=True, units=WIDE, static_shapes=False), (T, NONE, F32, False, False)),
    (dict(training=True, in_xla=True), (T, CALLER, F32, False, False)),
    (dict(training=True, in_xla=True, projected=False), (B, CALLER, F32, False, False)),
    (dict(training=True, in_xla=True, units=WIDE), (B, CALLER, F32, False, False)),
    (dict(training=True, projected=False, units=WIDE), (B, OWN, F32, False, False)),
    (dict(training=True, projected=False, own_xla_allowed=False), (T, NONE, F32, False, False)),
    # Mixed precision: 16-bit matmuls only where the machine makes them fast;
    # a wide layer then keeps oneDNN's 16-bit matmuls, not XLA's emulated ones.
    (dict(training=True, compute_dtype=BF), (T, NONE, F32, False, False)),
    (dict(training=True, compute_dtype=BF, cpu_flags=BF16), (T, NONE, "bfloat16", False, False)),
    (dict(training=True, compute_dtype=BF, cpu_flags=AMX, units=WIDE), (T, NONE, "bfloat16", False, False)),
    (dict(training=True, compute_dtype=F16, cpu_flags=BF16), (T, NONE, F32, False, False)),
    (dict(training=True, compute_dtype=F16, cpu_flags=FP16), (T, NONE, "float16", False, False)),
    (dict(training=True, in_xla=True, compute_dtype=BF, cpu_flags=BF16, projected=False), (B, CALLER, F32, False, False)),
    (dict(training=True, in_xla=True, compute_dtype=BF, gpu=True, projected=False), (B, CALLER, "bfloat16", False, False)),
    (dict(training=True, compute_dtype="float64"), (T, NONE, "float64", False, False)),
    # Inference.
    (dict(), (T, OWN, F32, False, False)),
    (dict(batch=1), (B, OWN, F32, False, False)),
    (dict(in_xla=True), (T, CALLER, F32, False, False)),
    (dict(in_xla=True, batch=1), (B, CALLER, F32, False, False)),
    (dict(eager=True), (B, NONE, F32, False, False)),
    (dict(static_shapes=False, batch=None), (B, NONE, F32, False, False)),
    (dict(own_xla_allowed=False), (B, NONE, F32, False, False)),
    (dict(compute_dtype=BF, cpu_flags=BF16), (T, OWN, F32, False, False)),
    (dict(compute_dtype=BF, cpu_flags=BF16, eager=True), (B, NONE, "bfloat16", False, False)),
    # What an export asks.
    (dict(export_batch_major=True), (B, OWN, F32, True, False)),
    (dict(export_batch_major=True, static_shapes=False), (B, NONE, F32, True, False)),
    (dict(export_batch_major=True, training=True), (T, NONE, F32, False, False)),
    # What `force` asks.
    (dict(forced_layout=B, training=True), (B, OWN, F32, False, False)),
    (dict(forced_layout=B, training=True, static_shapes=False), (B, NONE, F32, False, False)),
    (dict(forced_layout=T, units=WIDE, training=True), (T, NONE, F32, False, False)),
    (dict(forced_layout=B), (B, OWN, F32, False, False)),
    (dict(forced_jit_step=False, training=True, projected=False), (T, NONE, F32, False, False)),
    (dict(forced_jit_step=True, training=True), (T, NONE, F32, False, True)),
    (dict(wide_units=8, training=True), (B, OWN, F32, False, False)),
    (dict(wide_units=8, training=True, eager=True), (T, NONE, F32, False, False)),
    # A compiled inference call's gradient runs the training loop in the
    # executor: the classic step's kernel is named for it.
    (dict(projected=False), (T, OWN, F32, False, True)),
    (dict(projected=False, in_xla=True), (T, CALLER, F32, False, False)),
]  # fmt: skip


@pytest.mark.parametrize("changes, expected", TABLE)
def test_dispatch_table(changes, expected):
    route = loops.choose(dataclasses.replace(TRACED, **changes))
    assert (
        route.layout,
        route.xla,
        route.matmul_dtype,
        route.hoist,
        route.jit_step,
    ) == expected
    assert route.training == changes.get("training", False)
    assert route.reason and route.layout.value in route.name
    if "forced_layout" in changes:
        assert "forced" in route.reason


@pytest.mark.parametrize(
    "changes, expected",
    [
        (dict(units=64, in_xla=True), False),
        (dict(units=WIDE, in_xla=True), True),
        (dict(units=WIDE), True),  # compiled alone
        (dict(units=WIDE, eager=True), False),
        (dict(units=WIDE, export_batch_major=True), False),  # TFLite runs no XLA
    ],
)
def test_one_sigmoid_per_gate_only_for_wide_layers_under_xla(changes, expected):
    route = loops.choose(dataclasses.replace(TRACED, **changes))
    assert route.sigmoid_per_gate is expected


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (dict(layout="sideways"), ValueError, "layout must be one of"),
        (dict(wide_units="8"), TypeError, "wide_units must be an int"),
    ],
)
def test_force_names_a_bad_setting(settings, error, message):
    with pytest.raises(error, match=message):
        loops.force(**settings)


tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the fused loops are the TensorFlow backend's",
)

BATCH, STEPS, FEATURES, UNITS = 8, 5, 3, 4


def _model(use_gate="projected", jit_compile=False):
    model = keras.Sequential(
        [
            keras.Input((STEPS, FEATURES)),
            FourGateLSTM(UNITS, use_gate=use_gate),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse", jit_compile=jit_compile)
    return model


def _data():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((4 * BATCH, STEPS, FEATURES)).astype("float32"),
        rng.standard_normal((4 * BATCH, 1)).astype("float32"),
    )


def _ran(routes):
    """Each logged route, after checking it is what the dispatch names for
    its facts, with the layouts of the forward loops traced."""
    assert [loops.choose(facts) for facts in routes.facts()] == routes()
    return [(r.layout, r.xla, r.training) for r in routes()], routes.traced()


@tensorflow_only
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "jit"])
def test_fit_runs_the_route_the_dispatch_names(routes, jit_compile):
    x, y = _data()
    model = _model("classic", jit_compile)
    routes.clear()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    logged, traced = _ran(routes)
    layout = B if jit_compile else T
    xla = Xla.CALLER if jit_compile else Xla.NONE
    assert set(logged) == {(layout, xla, True)}
    assert set(traced) == {layout}


@tensorflow_only
def test_predict_runs_the_route_the_dispatch_names(routes):
    # Keras traces `predict` at the first batch's static shape (compiled with
    # XLA, transposed), then once more with the batch unknown for a smaller
    # last batch (batch-major, not compiled: XLA would compile every size).
    import tensorflow as tf

    x, _ = _data()
    x = np.concatenate([x, x[:3]])
    model = _model()
    routes.clear()
    model.predict(tf.data.Dataset.from_tensor_slices(x).batch(BATCH), verbose=0)
    logged, traced = _ran(routes)
    assert logged == [(T, Xla.OWN, False), (B, Xla.NONE, False)]
    assert traced == [T, B]


@tensorflow_only
def test_direct_call_runs_the_route_the_dispatch_names(routes):
    import tensorflow as tf

    x, _ = _data()
    model = _model()
    model(x)
    assert _ran(routes) == ([(B, Xla.NONE, False)], [B])  # eagerly
    routes.clear()
    tf.function(model)(x)
    assert _ran(routes) == ([(T, Xla.OWN, False)], [T])


@tensorflow_only
def test_export_tflite_runs_the_route_the_dispatch_names(routes, tmp_path):
    from keras_lstm_gates import export_tflite

    model = _model("classic")
    routes.clear()
    export_tflite(model, str(tmp_path / "model.tflite"), batch_size=1)
    _ran(routes)
    exported = [r for r, f in zip(routes(), routes.facts()) if f.export_batch_major]
    assert exported and all(r.layout is B and r.hoist for r in exported)
    assert set(routes.traced()) == {B}


@tensorflow_only
def test_force_reaches_the_loops_and_is_left_after(routes):
    import tensorflow as tf

    x, _ = _data()
    model = _model()
    with loops.force(layout="batch-major"):
        tf.function(model)(x)
    tf.function(model)(x)
    assert _ran(routes) == ([(B, Xla.OWN, False), (T, Xla.OWN, False)], [B, T])
