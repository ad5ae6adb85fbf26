"""TFLite's native LSTM op: `export_tflite(..., lstm_op=...)`.

Each file runs in LiteRT (and some in TFLite Micro) against Keras, and the
classic cell also against the NumPy reference of `tests/reference.py`. The
sequences are short (T <= 6): a state the op carried over from an earlier
call would still show at the output.
"""

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import TFLiteModel
from keras_lstm_gates import export_tflite
from keras_lstm_gates.tflite import tflite_op_counts
from tests import reference

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "tensorflow",
        reason="export_tflite traces the model with TensorFlow",
    ),
    # Keras's own word on `_masked_inner_model`, which is built so on purpose.
    pytest.mark.filterwarnings("ignore:.*does not support masking:UserWarning"),
]

LSTM_OP = "UNIDIRECTIONAL_SEQUENCE_LSTM"
TIME, FEATURES, UNITS = 5, 3, 6


def _x(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _classic(**kwargs):
    return FourGateLSTM(UNITS, use_gate="classic", **kwargs)


def _sequential(*layers, time=TIME):
    keras.utils.set_random_seed(5)
    return keras.Sequential([keras.Input((time, FEATURES)), *layers])


def _keras(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


MODELS = {
    "classic": lambda: _sequential(_classic()),
    "keras_lstm": lambda: _sequential(keras.layers.LSTM(UNITS)),
    "go_backwards": lambda: _sequential(_classic(go_backwards=True)),
    "return_sequences": lambda: _sequential(
        keras.layers.LSTM(UNITS, return_sequences=True)
    ),
    "backwards_sequences": lambda: _sequential(
        keras.layers.LSTM(UNITS, go_backwards=True, return_sequences=True)
    ),
    "stacked": lambda: _sequential(
        _classic(return_sequences=True),
        keras.layers.LSTM(UNITS),
        keras.layers.Dense(2),
    ),
    "bidirectional_concat": lambda: _sequential(
        keras.layers.Bidirectional(_classic(return_sequences=True))
    ),
    "bidirectional_sum": lambda: _sequential(
        keras.layers.Bidirectional(keras.layers.LSTM(UNITS), merge_mode="sum")
    ),
    "no_bias": lambda: _sequential(_classic(use_bias=False)),
    "rnn_of_lstm_cell": lambda: _sequential(
        keras.layers.RNN(keras.layers.LSTMCell(UNITS), return_sequences=True)
    ),
    "bidirectional_ave": lambda: _sequential(
        keras.layers.Bidirectional(keras.layers.LSTM(UNITS), merge_mode="ave")
    ),
    "bidirectional_own_backward_layer": lambda: _sequential(
        keras.layers.Bidirectional(
            _classic(return_sequences=True),
            backward_layer=keras.layers.LSTM(
                UNITS, go_backwards=True, return_sequences=True
            ),
        ),
        keras.layers.Dense(2),
    ),
}
# Native ops in each model's file.
NATIVE_COUNTS = {
    "stacked": 2,
    "bidirectional_concat": 2,
    "bidirectional_sum": 2,
    "bidirectional_ave": 2,
    "bidirectional_own_backward_layer": 2,
}


@pytest.fixture(scope="module")
def native_files(tmp_path_factory):
    """Each model of `MODELS` exported once with lstm_op="native"."""
    directory = tmp_path_factory.mktemp("native")
    cache = {}

    def get(name, batch_size=2):
        if (name, batch_size) not in cache:
            model = MODELS[name]()
            report = export_tflite(
                model,
                directory / f"{name}_{batch_size}.tflite",
                batch_size=batch_size,
                lstm_op="native",
            )
            cache[name, batch_size] = model, report
        return cache[name, batch_size]

    return get


@pytest.mark.parametrize("name", sorted(MODELS))
def test_native_file_has_the_op_and_no_loop(native_files, name):
    model, report = native_files(name)
    counts = tflite_op_counts(open(report.path, "rb").read())
    assert counts[LSTM_OP] == NATIVE_COUNTS.get(name, 1)
    assert "WHILE" not in report.ops
    assert report.max_abs_diff < 1e-5
    assert set(report.recurrent_ops.values()) == {LSTM_OP}
    assert report.lstm_op == "native"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_two_sequences_in_a_row_match_keras(native_files, name):
    """The op keeps its states in the file between invokes; `TFLiteModel`
    resets them, so the second sequence starts from zero too."""
    model, report = native_files(name)
    tflite = TFLiteModel(report.path)
    for seed in (1, 2, 2):
        x = _x((2, TIME, FEATURES), seed)
        np.testing.assert_allclose(tflite(x), _keras(model, x), atol=1e-5)


def test_classic_file_matches_the_numpy_reference(native_files):
    model, report = native_files("classic", batch_size=1)
    layer = model.layers[0]
    x = _x((1, TIME, FEATURES), 3)
    expected = reference.four_gate_lstm(x, layer.cell.gate_weights(), "classic")
    np.testing.assert_allclose(
        TFLiteModel(report.path)(x), expected["STM"][:, -1], atol=1e-5
    )


def test_keras_lstm_file_matches_the_classic_reference(native_files):
    """`keras.layers.LSTM` is the classic cell in the same weight layout."""
    model, report = native_files("keras_lstm", batch_size=1)
    layer = FourGateLSTM(UNITS, use_gate="classic")
    layer.build((1, TIME, FEATURES))
    layer.set_weights(model.layers[0].get_weights())
    x = _x((1, TIME, FEATURES), 4)
    expected = reference.four_gate_lstm(x, layer.cell.gate_weights(), "classic")
    np.testing.assert_allclose(
        TFLiteModel(report.path)(x), expected["STM"][:, -1], atol=1e-5
    )


def test_without_reset_the_state_carries_over(native_files):
    """What `reset` is for: the same sequence again, not reset, continues
    from where the first one ended."""
    model, report = native_files("classic")
    tflite = TFLiteModel(report.path)
    x = _x((2, TIME, FEATURES), 5)
    first = tflite(x)
    again = tflite(x, reset=False)
    assert np.max(np.abs(again - first)) > 1e-3
    tflite.reset()
    np.testing.assert_allclose(tflite(x, reset=False), first, atol=1e-6)


def test_chunked_streaming_matches_the_whole_sequence(tmp_path):
    """With no reset, two chunks of T/2 give what the whole sequence does."""
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            _classic(return_sequences=True),
            keras.layers.LSTM(UNITS, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    report = export_tflite(model, tmp_path / "m.tflite", lstm_op="native")
    tflite = TFLiteModel(report.path)
    assert tflite.keeps_states
    x = _x((1, 6, FEATURES), 6)
    chunks = [tflite(x[:, :3]), tflite(x[:, 3:], reset=False)]
    np.testing.assert_allclose(
        np.concatenate(chunks, axis=1), _keras(model, x), atol=1e-5
    )
    # A chunk of another length would reallocate the interpreter, which
    # zeroes the states: refused, not silently restarted.
    with pytest.raises(ValueError, match="reset=False, every chunk must have"):
        tflite(x[:, :2], reset=False)


def test_reset_false_on_a_loop_file_is_refused(tmp_path):
    model = _sequential(_classic())
    report = export_tflite(model, tmp_path / "loop.tflite", lstm_op="loop")
    tflite = TFLiteModel(report.path)
    assert report.recurrent_ops == {model.layers[0].name: "WHILE"}
    assert not tflite.keeps_states
    with pytest.raises(ValueError, match="has none.*streaming=True"):
        tflite(_x((1, TIME, FEATURES), 0), reset=False)


def test_streaming_step_works_beside_the_native_op(tmp_path):
    model = _sequential(_classic(return_sequences=True), _classic())
    report = export_tflite(
        model, tmp_path / "s.tflite", lstm_op="native", streaming=True
    )
    assert report.recurrent_ops == {layer.name: LSTM_OP for layer in model.layers}
    assert report.max_abs_diff < 1e-5 and report.step_max_abs_diff < 1e-5
    tflite = TFLiteModel(report.path)
    x = _x((1, TIME, FEATURES), 7)
    states = tflite.initial_states()
    for t in range(TIME):
        y, states = tflite.step(x[:, t], states)
    np.testing.assert_allclose(y, _keras(model, x), atol=1e-5)
    np.testing.assert_allclose(tflite(x), _keras(model, x), atol=1e-5)


def test_a_layer_inside_an_inner_model_goes_native(tmp_path):
    keras.utils.set_random_seed(2)
    inner = keras.Sequential(
        [keras.Input((TIME, FEATURES)), keras.layers.LSTM(UNITS)], name="inner"
    )
    inputs = keras.Input((TIME, FEATURES))
    model = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))
    report = export_tflite(model, tmp_path / "n.tflite", lstm_op="native")
    assert report.recurrent_ops == {inner.layers[0].name: LSTM_OP}
    assert "WHILE" not in report.ops and report.max_abs_diff < 1e-5


# --- int8 without unrolling ---------------------------------------------------


def _int8(tmp_path, time, use_gate="classic", lstm_op="auto"):
    keras.utils.set_random_seed(8)
    model = keras.Sequential(
        [
            keras.Input((time, FEATURES)),
            FourGateLSTM(16, use_gate=use_gate),
            keras.layers.Dense(1),
        ]
    )
    data = _x((16, time, FEATURES), 9)
    return model, export_tflite(
        model,
        tmp_path / f"{use_gate}_{time}_{lstm_op}.tflite",
        quantize="int8",
        representative_data=data,
        lstm_op=lstm_op,
    )


def test_int8_native_file_does_not_grow_with_the_sequence(tmp_path):
    sizes = {}
    for time in (50, 200):
        model, report = _int8(tmp_path, time)
        assert report.recurrent_ops == {model.layers[0].name: LSTM_OP}
        assert "WHILE" not in report.ops
        # Int8 error, measured on the calibration data, in the report.
        assert 0 < report.max_abs_diff < 0.05
        sizes[time] = report.size_bytes
    assert abs(sizes[200] - sizes[50]) <= 0.1 * sizes[50]


def test_int8_auto_unrolls_only_what_cannot_go_native(tmp_path):
    model, report = _int8(tmp_path, 6, use_gate="projected")
    assert report.recurrent_ops == {model.layers[0].name: "unrolled"}
    assert LSTM_OP not in report.ops and "WHILE" not in report.ops
    assert report.max_abs_diff < 0.05


def test_auto_keeps_the_float_loop(tmp_path):
    model = _sequential(_classic())
    report = export_tflite(model, tmp_path / "a.tflite")
    assert report.lstm_op == "auto"
    assert report.recurrent_ops == {model.layers[0].name: "WHILE"}
    assert "WHILE" in report.ops and LSTM_OP not in report.ops
    assert "WHILE" in str(report)


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "lstm_op, error",
    [("Native", ValueError), ("fused", ValueError), (None, TypeError), (1, TypeError)],
)
def test_bad_lstm_op_is_named(tmp_path, lstm_op, error):
    model = _sequential(_classic())
    with pytest.raises(error, match=r"lstm_op must be one of .*auto.*native.*loop"):
        export_tflite(model, tmp_path / "x.tflite", lstm_op=lstm_op)
    assert not (tmp_path / "x.tflite").exists()


def _masked():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((TIME,), dtype="int32"),
            keras.layers.Embedding(20, 4, mask_zero=True),
            keras.layers.LSTM(UNITS),
        ]
    )


def _with_state():
    inputs = keras.Input((TIME, FEATURES))
    state = keras.layers.Dense(UNITS)(keras.layers.Flatten()(inputs))
    outputs = keras.layers.LSTM(UNITS)(inputs, initial_state=[state, state])
    return keras.Model(inputs, outputs)


def _returning_state():
    inputs = keras.Input((TIME, FEATURES))
    outputs, _, _ = keras.layers.LSTM(UNITS, return_state=True)(inputs)
    return keras.Model(inputs, outputs)


class _DoubledLSTM(keras.layers.LSTM):
    """An LSTM whose own `call` does more than its cell: the op would drop it."""

    def call(self, sequences, initial_state=None, mask=None, training=False):
        return 2 * super().call(sequences, initial_state, mask, training)


def _masked_inner_model():
    """A mask that reaches the LSTM through an inner model's call."""
    keras.utils.set_random_seed(1)
    inner_inputs = keras.Input((TIME, 4))
    inner = keras.Model(inner_inputs, keras.layers.LSTM(UNITS)(inner_inputs))
    inputs = keras.Input((TIME,), dtype="int32")
    embedded = keras.layers.Embedding(20, 4, mask_zero=True)(inputs)
    return keras.Model(inputs, inner(embedded))


UNFUSABLE = {
    "projected": (lambda: _sequential(FourGateLSTM(UNITS)), "Use gate is 'projected'"),
    "mask": (_masked, "reads a mask"),
    "gru": (lambda: _sequential(keras.layers.GRU(UNITS)), "its cell is a GRUCell"),
    "activation": (
        lambda: _sequential(keras.layers.LSTM(UNITS, activation="relu")),
        "activations are relu and sigmoid",
    ),
    "return_state": (_returning_state, "return_state=True"),
    "bidirectional_projected": (
        lambda: _sequential(keras.layers.Bidirectional(FourGateLSTM(UNITS))),
        "Use gate is 'projected'",
    ),
    "no_recurrent_layer": (
        lambda: _sequential(keras.layers.Dense(2)),
        "has no recurrent layer",
    ),
    "time_distributed": (
        lambda: keras.Sequential(
            [
                keras.Input((2, TIME, FEATURES)),
                keras.layers.TimeDistributed(keras.layers.LSTM(UNITS)),
            ]
        ),
        "inside a TimeDistributed",
    ),
    "subclassed_lstm": (lambda: _sequential(_DoubledLSTM(UNITS)), "a subclass of RNN"),
    "masked_inner_model": (_masked_inner_model, "reads a mask"),
}


@pytest.mark.parametrize("name", sorted(UNFUSABLE))
def test_native_refuses_an_unfusable_layer_by_name(tmp_path, name):
    build, reason = UNFUSABLE[name]
    model = build()
    with pytest.raises(ValueError, match="lstm_op='native'") as error:
        export_tflite(model, tmp_path / "x.tflite", lstm_op="native")
    message = str(error.value)
    assert reason in message
    assert "\n" not in message
    if name != "no_recurrent_layer":
        names = [layer.name for layer in model.layers]
        names += [i.name for m in model.layers for i in getattr(m, "layers", [])]
        assert any(f"layer '{n}'" in message for n in names), message
    assert not (tmp_path / "x.tflite").exists()


def test_initial_state_input_is_refused_under_native(tmp_path):
    with pytest.raises(ValueError, match="initial state"):
        export_tflite(_with_state(), tmp_path / "x.tflite", lstm_op="native")


def test_native_names_every_unfusable_layer_at_once(tmp_path):
    model = _sequential(
        FourGateLSTM(UNITS, return_sequences=True, name="first"),
        _classic(return_sequences=True, name="fine"),
        keras.layers.GRU(UNITS, name="third"),
    )
    with pytest.raises(ValueError) as error:
        export_tflite(model, tmp_path / "x.tflite", lstm_op="native")
    message = str(error.value)
    assert "'first'" in message and "'third'" in message and "'fine'" not in message


def _representative(model, samples=8):
    shape = (samples,) + tuple(model.inputs[0].shape[1:])
    if "int" in str(model.inputs[0].dtype):
        return np.random.default_rng(0).integers(0, 20, shape)
    return _x(shape, 0)


@pytest.mark.parametrize(
    "name", ["projected", "mask", "gru", "time_distributed", "masked_inner_model"]
)
def test_auto_never_raises_for_an_unfusable_layer(tmp_path, name):
    """int8 is where "auto" goes native: an unfusable layer is unrolled."""
    model = UNFUSABLE[name][0]()
    report = export_tflite(
        model,
        tmp_path / "a.tflite",
        quantize="int8",
        representative_data=_representative(model),
    )
    assert set(report.recurrent_ops.values()) == {"unrolled"}
    assert "WHILE" not in report.ops and LSTM_OP not in report.ops
    assert report.max_abs_diff < 0.05


def test_a_layer_called_twice_is_two_native_ops(tmp_path):
    keras.utils.set_random_seed(3)
    shared = _classic()
    inputs = keras.Input((TIME, FEATURES))
    outputs = keras.layers.Add()([shared(inputs), shared(inputs * 2.0)])
    model = keras.Model(inputs, outputs)
    report = export_tflite(model, tmp_path / "s.tflite", lstm_op="native")
    assert tflite_op_counts(open(report.path, "rb").read())[LSTM_OP] == 2
    assert report.max_abs_diff < 1e-5


def test_zero_weights_of_another_layer_merged_with_the_state_are_refused(tmp_path):
    """A `Dense` kernel of zeros, shaped as the state, merges with it too."""
    model = _sequential(keras.layers.LSTM(UNITS, return_sequences=True))
    model.add(keras.layers.Dense(2, kernel_initializer="zeros"))
    with pytest.raises(ValueError, match="merged all-zero weights"):
        export_tflite(model, tmp_path / "x.tflite", lstm_op="native", batch_size=2)


def test_reset_false_after_a_run_of_another_shape_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((None, FEATURES)), _classic()])
    report = export_tflite(model, tmp_path / "m.tflite", lstm_op="native")
    tflite = TFLiteModel(report.path)
    tflite(_x((1, 3, FEATURES), 1))
    tflite.run("serving_default", inputs=_x((1, 4, FEATURES), 2))
    with pytest.raises(ValueError, match="every chunk must have the shape"):
        tflite(_x((1, 3, FEATURES), 3), reset=False)


# --- TFLite Micro ---------------------------------------------------------------


def _micro(content, arena_size):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(content, arena_size=arena_size)


MICRO_FLAVOURS = {
    # name: (use_gate, export_tflite's options, tolerance against Keras)
    "float32_loop": ("classic", {"lstm_op": "loop"}, 1e-5),
    "float32_native": ("classic", {"lstm_op": "native"}, 1e-5),
    "int8_native": ("classic", {"quantize": "int8"}, 0.02),
    "int8_projected": ("projected", {"quantize": "int8"}, 0.05),
}


@pytest.mark.parametrize("flavour", sorted(MICRO_FLAVOURS))
def test_tflite_micro_runs_each_flavour_like_keras(tmp_path, flavour):
    """Two different sequences in a row, each after TFLM's `reset()`."""
    use_gate, options, tolerance = MICRO_FLAVOURS[flavour]
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            FourGateLSTM(8, use_gate=use_gate),
            keras.layers.Dense(1),
        ]
    )
    if options.get("quantize") == "int8":
        options = {**options, "representative_data": _x((32, TIME, FEATURES), 10)}
    report = export_tflite(model, tmp_path / "m.tflite", **options)
    expected_op = "WHILE" if flavour == "float32_loop" else LSTM_OP
    if flavour == "int8_projected":
        expected_op = "unrolled"
    assert set(report.recurrent_ops.values()) == {expected_op}
    micro = _micro(open(report.path, "rb").read(), arena_size=64 * 1024)
    for seed in (11, 12):
        x = _x((1, TIME, FEATURES), seed)
        micro.reset()
        micro.set_input(x, 0)
        micro.invoke()
        np.testing.assert_allclose(
            micro.get_output(0), _keras(model, x), atol=tolerance
        )


def test_tflite_micro_carries_the_native_state_without_reset(tmp_path):
    model = _sequential(_classic())
    report = export_tflite(model, tmp_path / "m.tflite", lstm_op="native", batch_size=1)
    micro = _micro(open(report.path, "rb").read(), arena_size=64 * 1024)
    x = _x((1, TIME, FEATURES), 13)
    outputs = []
    for _ in range(2):
        micro.set_input(x, 0)
        micro.invoke()
        outputs.append(micro.get_output(0).copy())
    np.testing.assert_allclose(outputs[0], _keras(model, x), atol=1e-5)
    assert np.max(np.abs(outputs[1] - outputs[0])) > 1e-3


def test_long_term_memory_past_ten_is_not_clipped(tmp_path):
    """The converter asks the op to clip LTM to [-10, 10]; Keras does not.

    One unit whose gates are all open: LTM climbs by about 1 a step past
    14, then falls back to about 4, where tanh(LTM) tells it from the
    clipped memory, back down from 10 to about 0.
    """
    time = 25
    model = keras.Sequential(
        [keras.Input((time, 1)), keras.layers.LSTM(1, return_sequences=True)]
    )
    kernel = np.array([[0.1, 0.1, 3.0, 0.1]], "float32")  # i, f, c (N), o
    recurrent = np.full((1, 4), 0.01, "float32")
    bias = np.array([6.0, 6.0, 0.0, 6.0], "float32")
    model.layers[0].set_weights([kernel, recurrent, bias])
    x = np.concatenate([np.ones(15), -np.ones(10)]).reshape(1, time, 1)
    x = x.astype("float32")
    expected = _keras(model, x)
    assert expected[0, -1, 0] > 0.99  # tanh(about 4.4)
    report = export_tflite(model, tmp_path / "clip.tflite", lstm_op="native")
    assert report.recurrent_ops == {model.layers[0].name: LSTM_OP}
    np.testing.assert_allclose(TFLiteModel(report.path)(x), expected, atol=1e-5)


def test_zero_weights_the_converter_merges_with_the_state_are_refused(tmp_path):
    """TF 2.21's converter merges equal constants: all-zero recurrent
    weights of shape (units, units) become the zero initial state's
    variable tensor when batch_size == units, and the op would overwrite
    them. The export refuses the file instead of writing a wrong one."""
    model = _sequential(keras.layers.LSTM(2))
    kernel, recurrent, bias = model.layers[0].get_weights()
    model.layers[0].set_weights([kernel, np.zeros_like(recurrent), bias])
    with pytest.raises(ValueError, match="merged all-zero weights"):
        export_tflite(model, tmp_path / "x.tflite", lstm_op="native", batch_size=2)
    assert not (tmp_path / "x.tflite").exists()
    # At another batch size the shapes differ, and the file is right.
    report = export_tflite(model, tmp_path / "y.tflite", lstm_op="native")
    assert report.max_abs_diff < 1e-5
