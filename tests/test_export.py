"""Tests for `export_tflite` and `export_saved_model`.

The reference is the Keras model itself: each exported file runs in the
LiteRT interpreter (through `TFLiteModel`) on inputs drawn in the test, and
its outputs are compared with the Keras model's on the same inputs.
"""

import contextlib
import json
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import FourGateLSTMCell
from keras_lstm_gates import TFLiteModel
from keras_lstm_gates import export_saved_model
from keras_lstm_gates import export_tflite
from keras_lstm_gates.tflite import _op_name
from keras_lstm_gates.tflite import tflite_ops

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME, FEATURES, BATCH = 7, 3, 2
FLOAT_TOLERANCE = 1e-5
# Quantized parity, relative to max(1, max |Keras output|); see docs/deploy.md,
# "Tolerances for quantized parity", for why each bound holds.
QUANTIZED_TOLERANCE = {"float16": 1e-3, "dynamic": 2e-2, "int8": 6e-2}


def _sequences(batch=BATCH, time=TIME, seed=0):
    return (
        np.random.default_rng(seed)
        .standard_normal((batch, time, FEATURES))
        .astype("float32")
    )


def _token_ids(batch, time, vocab, seed=0):
    """Token ids in [1, vocab) followed by 0-padding of varying length."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, time))
    for row, length in enumerate([1, time // 2, time][:batch]):
        ids[row, length:] = 0
    return ids.astype("int32")


@contextlib.contextmanager
def _global_policy(name):
    """Keras's global dtype policy set to `name` inside, restored after."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


def _keras(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _stream(tflite, x):
    """Feeds `x` to the `step` signature one step at a time."""
    states = tflite.initial_states()
    outputs = []
    for t in range(x.shape[1]):
        y, states = tflite.step(x[:, t], states)
        outputs.append(y)
    return outputs


def _randomize(model, seed=0):
    """Weights and biases far from their initial values, for a stronger test."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.uniform(-0.8, 0.8, w.shape).astype(w.dtype) for w in model.get_weights()]
    )
    return model


def _single(use_gate):
    return _randomize(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                FourGateLSTM(6, use_gate=use_gate),
                keras.layers.Dense(2),
            ]
        )
    )


def _stacked():
    return _randomize(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                FourGateLSTM(5, return_sequences=True),
                keras.layers.Dropout(0.5),
                FourGateLSTM(4, use_gate="classic"),
                keras.layers.Dense(3, activation="relu"),
                keras.layers.Dense(1),
            ]
        )
    )


def _sequence_output():
    inputs = keras.Input((TIME, FEATURES))
    hidden = keras.layers.Dense(4, activation="tanh")(inputs)
    hidden = keras.layers.RNN(FourGateLSTMCell(5), return_sequences=True)(hidden)
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(2))(hidden)
    return _randomize(keras.Model(inputs, outputs))


def _normalized():
    # Input scaling inside the model, as the temperature example does.
    mean = np.linspace(-1.0, 1.0, FEATURES)
    variance = np.linspace(0.5, 2.0, FEATURES)
    return _randomize(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.Normalization(mean=mean, variance=variance),
                keras.layers.Rescaling(0.5, offset=0.1),
                FourGateLSTM(5),
                keras.layers.Dense(1),
                keras.layers.Rescaling(3.0, offset=-1.0),
            ]
        )
    )


def _text(vocab=30):
    return _randomize(
        keras.Sequential(
            [
                keras.Input((TIME,), dtype="int32"),
                keras.layers.Embedding(vocab, 4, mask_zero=True),
                FourGateLSTM(6, return_sequences=True),
                FourGateLSTM(5),
                keras.layers.Dense(2),
            ]
        )
    )


FLOAT_MODELS = {
    "single_projected": lambda: _single("projected"),
    "single_classic": lambda: _single("classic"),
    "stacked": _stacked,
    "return_sequences": _sequence_output,
    "normalized": _normalized,
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each float model exported once (with `step`), shared by the tests."""
    directory = tmp_path_factory.mktemp("float")
    cache = {}

    def get(name):
        if name not in cache:
            keras.utils.set_random_seed(7)
            model = FLOAT_MODELS[name]()
            path = directory / f"{name}.tflite"
            report = export_tflite(model, path, batch_size=BATCH, streaming=True)
            cache[name] = (model, report, TFLiteModel(path))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    keras.utils.set_random_seed(7)
    model = _text()
    path = tmp_path_factory.mktemp("text") / "text.tflite"
    report = export_tflite(model, path, batch_size=3, streaming=True)
    return model, report, TFLiteModel(path)


# Float32 parity.


@pytest.mark.parametrize("name", sorted(FLOAT_MODELS))
def test_whole_sequence_matches_keras(exported, name):
    model, report, tflite = exported(name)
    x = _sequences(seed=11)
    diff = np.max(np.abs(tflite(x) - _keras(model, x)))
    assert diff <= FLOAT_TOLERANCE
    assert report.max_abs_diff <= FLOAT_TOLERANCE


@pytest.mark.parametrize("name", sorted(FLOAT_MODELS))
def test_step_by_step_matches_whole_sequence(exported, name):
    model, report, tflite = exported(name)
    x = _sequences(seed=12)
    expected = _keras(model, x)
    outputs = _stream(tflite, x)
    if expected.ndim == 3:  # a sequence output: every step is checked
        np.testing.assert_allclose(np.stack(outputs, 1), expected, atol=FLOAT_TOLERANCE)
    else:  # after t steps, the output of the sequence's first t steps
        np.testing.assert_allclose(outputs[-1], expected, atol=FLOAT_TOLERANCE)
        prefix = _keras_on_prefix(model, x, 3)
        np.testing.assert_allclose(outputs[2], prefix, atol=FLOAT_TOLERANCE)
    assert report.step_max_abs_diff <= FLOAT_TOLERANCE


def _keras_on_prefix(model, x, length):
    """The model's output on the first `length` steps (a same-weight copy
    with a shorter input)."""
    shape = (length,) + x.shape[2:]
    copy = keras.Sequential([keras.Input(shape, dtype=x.dtype)] + model.layers)
    return _keras(copy, x[:, :length])


def test_step_signature_names_every_state(exported):
    model, report, tflite = exported("stacked")
    recurrent = [
        layer.name for layer in model.layers if isinstance(layer, FourGateLSTM)
    ]
    expected_states = {f"{name}_{s}" for name in recurrent for s in ("stm", "ltm")}
    step = tflite.signatures["step"]
    assert set(step["inputs"]) == expected_states | {"inputs"}
    assert set(step["outputs"]) == expected_states | {"outputs"}
    assert step["inputs"]["inputs"][0] == (BATCH, FEATURES)
    assert report.signatures == ("serving_default", "step")


def test_states_carry_over_between_steps(exported):
    model, _, tflite = exported("single_projected")
    x = _sequences(seed=13)
    _, states = tflite.step(x[:, 0])
    fresh, _ = tflite.step(x[:, 1])
    carried, _ = tflite.step(x[:, 1], states)
    assert not np.allclose(fresh, carried)
    np.testing.assert_allclose(
        carried, _keras_on_prefix(model, x, 2), atol=FLOAT_TOLERANCE
    )


def test_masked_text_model_matches_keras(text_export):
    model, report, tflite = text_export
    ids = _token_ids(3, TIME, 30, seed=14)
    np.testing.assert_allclose(tflite(ids), _keras(model, ids), atol=FLOAT_TOLERANCE)
    assert report.max_abs_diff <= FLOAT_TOLERANCE
    # The padding is really skipped: the 1-token row equals a 1-step model.
    short = keras.Sequential([keras.Input((1,), dtype="int32")] + model.layers)
    np.testing.assert_allclose(
        tflite(ids)[0], _keras(short, ids[:1, :1])[0], atol=FLOAT_TOLERANCE
    )


def test_masked_text_model_streams_through_padding(text_export):
    model, report, tflite = text_export
    ids = _token_ids(3, TIME, 30, seed=15)
    ids[1:, 2] = 0  # a gap inside the sequence, not only padding at the end
    outputs = _stream(tflite, ids)
    # Every step's output is the model's on the sequence read so far: a
    # 0 token keeps both states, as Keras's masking does.
    for t, output in enumerate(outputs):
        expected = _keras_on_prefix(model, ids, t + 1)
        np.testing.assert_allclose(output, expected, atol=FLOAT_TOLERANCE)
    assert report.step_max_abs_diff <= FLOAT_TOLERANCE


def test_masking_layer_with_zero_output_for_mask(tmp_path):
    """Float inputs padded with `Masking`; masked steps output zeros."""
    keras.utils.set_random_seed(8)
    model = _randomize(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                keras.layers.Masking(0.0),
                keras.layers.RNN(
                    FourGateLSTMCell(5),
                    return_sequences=True,
                    zero_output_for_mask=True,
                ),
                keras.layers.Dense(2),
            ]
        )
    )
    path = tmp_path / "masking.tflite"
    report = export_tflite(model, path, batch_size=3, streaming=True)
    x = _sequences(batch=3, seed=16)
    x[0, 2:] = 0.0  # padding at the end
    x[1, 3] = 0.0  # a masked step in the middle
    expected = _keras(model, x)
    tflite = TFLiteModel(path)
    np.testing.assert_allclose(tflite(x), expected, atol=FLOAT_TOLERANCE)
    streamed = np.stack(_stream(tflite, x), axis=1)
    np.testing.assert_allclose(streamed, expected, atol=FLOAT_TOLERANCE)
    # A masked step's output is Dense(0): the Dense layer's bias.
    bias = model.layers[-1].get_weights()[1]
    np.testing.assert_allclose(streamed[1, 3], bias, atol=FLOAT_TOLERANCE)
    assert report.step_max_abs_diff <= FLOAT_TOLERANCE


@pytest.mark.parametrize("return_sequences", [False, True])
def test_zero_output_for_mask_streams_zeros_at_batch_size_1(tmp_path, return_sequences):
    """A masked step outputs zeros with `zero_output_for_mask`, step by step
    as over the whole sequence, with or without `return_sequences` (the last
    output of a padded sequence is zero); and at the default batch size of
    1 the export's own check measures a padded sequence."""
    keras.utils.set_random_seed(10)
    model = _randomize(
        keras.Sequential(
            [
                keras.Input((TIME,), dtype="int32"),
                keras.layers.Embedding(30, 4, mask_zero=True),
                FourGateLSTM(
                    5, zero_output_for_mask=True, return_sequences=return_sequences
                ),
            ]
        )
    )
    path = tmp_path / "zero_output.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converted wrongly" warning
        report = export_tflite(model, path, streaming=True)
    assert report.step_max_abs_diff <= FLOAT_TOLERANCE
    ids = _token_ids(1, TIME, 30, seed=18)
    ids[0, 4:] = 0  # padding at the end
    outputs = _stream(TFLiteModel(path), ids)
    for t, output in enumerate(outputs):
        expected = _keras_on_prefix(model, ids, t + 1)
        if return_sequences:
            expected = expected[:, -1]
        np.testing.assert_allclose(output, expected, atol=FLOAT_TOLERANCE)
    np.testing.assert_array_equal(outputs[-1], 0.0)


def _functional_text(mask_zero, vocab=30):
    ids = keras.Input((TIME,), dtype="int32")
    hidden = keras.layers.Embedding(vocab, 4, mask_zero=mask_zero)(ids)
    hidden = FourGateLSTM(6, return_sequences=True)(hidden)
    outputs = keras.layers.Dense(2)(FourGateLSTM(5)(hidden))
    return _randomize(keras.Model(ids, outputs))


@pytest.mark.parametrize("mask_zero", [True, False])
def test_functional_text_model_streams(tmp_path, mask_zero):
    """A functional chain: Keras passes the `Embedding`'s mask along as a
    second tensor (`mask=`), which is no second input; without `mask_zero`
    there is no mask, and padding is an ordinary token."""
    keras.utils.set_random_seed(9)
    model = _functional_text(mask_zero)
    path = tmp_path / "functional.tflite"
    report = export_tflite(model, path, batch_size=3, streaming=True)
    ids = _token_ids(3, TIME, 30, seed=17)
    expected = _keras(model, ids)
    tflite = TFLiteModel(path)
    np.testing.assert_allclose(tflite(ids), expected, atol=FLOAT_TOLERANCE)
    np.testing.assert_allclose(_stream(tflite, ids)[-1], expected, atol=FLOAT_TOLERANCE)
    assert report.step_max_abs_diff <= FLOAT_TOLERANCE


# What is in the file.


def test_file_has_builtin_ops_only(exported):
    _, report, tflite = exported("stacked")
    with open(report.path, "rb") as f:
        ops = tflite_ops(f.read())
    assert ops == report.ops == tflite.ops
    assert "WHILE" in ops and "FULLY_CONNECTED" in ops
    assert not [op for op in ops if op.startswith("Flex") or not op.isupper()]


def _while_loops(path):
    """`(ops before the loop, ops of its body)` for each `WHILE` op of a file."""
    with open(path, "rb") as f:
        model = schema.ModelT.InitFromPackedBuf(f.read(), 0)

    def op_names(graph):
        return [_op_name(model.operatorCodes[op.opcodeIndex]) for op in graph.operators]

    loops = []
    for graph in model.subgraphs:
        ops = op_names(graph)
        for k, op in enumerate(graph.operators):
            if ops[k] == "WHILE":
                body = model.subgraphs[op.builtinOptions.bodySubgraphIndex]
                loops.append((ops[:k], op_names(body)))
    return loops


@pytest.mark.parametrize(
    "name, matmuls", [("single_classic", 1), ("single_projected", 2)]
)
def test_events_are_projected_before_the_loop(exported, name, matmuls):
    # One FULLY_CONNECTED over the whole sequence before the WHILE loop; each
    # step then multiplies only STM (and, projected, LTM_{t-1} * f_t): one op
    # less a step (see `keras_lstm_gates/_fused/batch_major.py`).
    _, report, _ = exported(name)
    loops = _while_loops(report.path)
    assert len(loops) == 1
    before, body = loops[0]
    assert before.count("FULLY_CONNECTED") == 1
    assert body.count("FULLY_CONNECTED") == matmuls


@pytest.mark.parametrize("use_gate, matmuls", [("classic", 1), ("projected", 2)])
def test_own_converter_inside_tflite_tracing_gets_the_export_loop(
    tmp_path, use_gate, matmuls
):
    # At a fixed batch above 1, a plain conversion traces the transposed
    # loop (one matmul a step on [STM; E; 1], nothing before the loop).
    import tensorflow as tf

    from keras_lstm_gates import tflite_tracing

    keras.utils.set_random_seed(3)
    model = _randomize(
        keras.Sequential(
            [
                keras.Input((TIME, FEATURES), batch_size=4),
                FourGateLSTM(6, use_gate=use_gate),
            ]
        )
    )

    def convert(path):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        path.write_bytes(converter.convert())
        return _while_loops(path)

    with tflite_tracing():
        [(before, body)] = convert(tmp_path / "traced.tflite")
    assert before.count("FULLY_CONNECTED") == 1
    assert body.count("FULLY_CONNECTED") == matmuls
    [(before, body)] = convert(tmp_path / "plain.tflite")
    assert before.count("FULLY_CONNECTED") == 0
    x = _sequences(batch=4, seed=5)
    interpreter = Interpreter(model_path=str(tmp_path / "traced.tflite"))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    actual = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(actual, _keras(model, x), atol=FLOAT_TOLERANCE)


def test_report_describes_the_file(exported):
    _, report, _ = exported("single_projected")
    assert report.size_bytes == os.path.getsize(report.path)
    assert report.batch_size == BATCH and report.quantize is None
    text = str(report)
    assert report.path in text and "WHILE" in text and "serving_default" in text


def test_model_needing_flex_ops_is_refused(tmp_path):
    import tensorflow as tf

    class Digamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.digamma(tf.abs(x) + 1.0)  # no TFLite builtin

    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), FourGateLSTM(4), Digamma()]
    )
    path = tmp_path / "flex.tflite"
    with pytest.raises(ValueError, match="builtin"):
        export_tflite(model, path)
    assert os.listdir(tmp_path) == []


# Quantization.


QUANTIZED_TYPE = {
    "dynamic": schema.TensorType.INT8,
    "float16": schema.TensorType.FLOAT16,
    "int8": schema.TensorType.INT8,
}


def _tensor_types(path):
    """The types of every tensor in every subgraph of a .tflite file."""
    with open(path, "rb") as f:
        model = schema.ModelT.InitFromPackedBuf(f.read(), 0)
    return {tensor.type for graph in model.subgraphs for tensor in graph.tensors}


@pytest.fixture(scope="module")
def quantization_model():
    """Big enough (24 units) that dynamic-range quantization quantizes it."""
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((TIME, FEATURES)),
            FourGateLSTM(24, return_sequences=True),
            FourGateLSTM(24),
            keras.layers.Dense(2),
        ]
    )


@pytest.fixture(scope="module")
def float_size(quantization_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "float.tflite"
    return export_tflite(quantization_model, path, streaming=True).size_bytes


@pytest.mark.parametrize("quantize", ["dynamic", "float16", "int8"])
def test_quantized_export_runs_within_tolerance(
    quantization_model, float_size, tmp_path, quantize
):
    data = _sequences(batch=64, seed=20) if quantize == "int8" else None
    path = tmp_path / f"{quantize}.tflite"
    report = export_tflite(
        quantization_model,
        path,
        quantize=quantize,
        representative_data=data,
        streaming=True,
    )
    x = _sequences(batch=1, seed=21)
    expected = _keras(quantization_model, x)
    tflite = TFLiteModel(path)
    tolerance = QUANTIZED_TOLERANCE[quantize] * max(1.0, np.max(np.abs(expected)))
    assert np.max(np.abs(tflite(x) - expected)) <= tolerance
    assert np.max(np.abs(_stream(tflite, x)[-1] - expected)) <= tolerance
    assert report.max_abs_diff <= tolerance
    assert report.quantize == quantize
    assert QUANTIZED_TYPE[quantize] in _tensor_types(path)
    if quantize != "int8":  # int8 unrolls the loop (see export_tflite)
        assert report.size_bytes < float_size
    assert not [op for op in report.ops if op.startswith("Flex")]


def test_int8_report_measures_on_the_calibration_data(tmp_path):
    """The int8 file's ranges fit `representative_data`; a random probe far
    outside them (standard normal against data in [0, 1]) overstated the
    error 30-100x, so the report measures on the data's first batch."""
    keras.utils.set_random_seed(4)
    model = _single("classic")
    data = np.random.default_rng(23).random((32, TIME, FEATURES)).astype("float32")
    path = tmp_path / "int8.tflite"
    report = export_tflite(
        model, path, batch_size=2, quantize="int8", representative_data=data
    )
    actual = np.max(np.abs(TFLiteModel(path)(data[:2]) - _keras(model, data[:2])))
    assert report.max_abs_diff == pytest.approx(actual, rel=1e-6)


@pytest.mark.parametrize("wrapper", ["bidirectional", "inner_model", "keras_lstm"])
def test_int8_export_unrolls_nested_recurrent_layers(tmp_path, wrapper):
    # The calibrator crashes the process on a WHILE loop: every recurrent
    # layer is unrolled, also inside Bidirectional or an inner model (those
    # were missed and killed the process).
    inputs = keras.Input((TIME, FEATURES))
    if wrapper == "bidirectional":
        outputs = keras.layers.Bidirectional(FourGateLSTM(4))(inputs)
    elif wrapper == "inner_model":
        inner = keras.Sequential([keras.Input((TIME, FEATURES)), FourGateLSTM(4)])
        outputs = inner(inputs)
    else:
        outputs = keras.layers.LSTM(4)(inputs)
    model = _randomize(keras.Model(inputs, keras.layers.Dense(1)(outputs)))
    data = _sequences(batch=32, seed=22)
    before = model.to_json()
    report = export_tflite(
        model, tmp_path / "m.tflite", quantize="int8", representative_data=data
    )
    assert "WHILE" not in report.ops
    x = _sequences(batch=1, seed=23)
    expected = _keras(model, x)
    tolerance = QUANTIZED_TOLERANCE["int8"] * max(1.0, np.max(np.abs(expected)))
    assert np.max(np.abs(TFLiteModel(tmp_path / "m.tflite")(x) - expected)) <= tolerance
    # The user's model is left as it was: the nested layers' `unroll` too.
    assert model.to_json() == before


def test_mixed_bfloat16_model_exports_in_float32(tmp_path):
    # TFLite has no bfloat16 ops; the weights of a mixed-precision model are
    # float32 already, so the file computes in float32.
    def build():
        return keras.Sequential(
            [
                keras.Input((TIME, FEATURES)),
                FourGateLSTM(6, return_sequences=True),
                FourGateLSTM(4, use_gate="classic"),
                keras.layers.Dense(2, dtype="float32"),
            ]
        )

    keras.utils.set_random_seed(5)
    with _global_policy("mixed_bfloat16"):
        model = build()
    twin = build()  # the same layers and weights in float32: what the file computes
    twin.set_weights(model.get_weights())
    report = export_tflite(model, tmp_path / "m.tflite", streaming=True)
    x = _sequences(batch=1, seed=24)
    tflite = TFLiteModel(tmp_path / "m.tflite")
    np.testing.assert_allclose(tflite(x), _keras(twin, x), atol=FLOAT_TOLERANCE)
    np.testing.assert_allclose(_stream(tflite, x)[-1], _keras(twin, x), atol=1e-5)
    # Against the bfloat16 model itself: its rounding, reported as measured.
    assert 0 < report.max_abs_diff < 5e-2
    assert model.layers[0].compute_dtype == "bfloat16"


def test_batch_above_one_exports_the_batch_major_loop(
    quantization_model, tmp_path, routes
):
    # Traced at a fixed batch above 1, inference would take the transposed
    # loop; its dynamic-range quantized matmul (bias inside the weights) is
    # less accurate, so export traces the batch-major one.
    import tensorflow as tf

    from keras_lstm_gates.loops import Layout

    path = tmp_path / "batch4.tflite"
    report = export_tflite(quantization_model, path, batch_size=4, quantize="dynamic")
    inference = [route for route in routes() if not route.training]
    assert inference and all(r.layout is Layout.BATCH_MAJOR for r in inference)
    assert Layout.TRANSPOSED not in routes.traced()
    x = _sequences(batch=4, seed=22)
    expected = _keras(quantization_model, x)
    tolerance = QUANTIZED_TOLERANCE["dynamic"] * max(1.0, np.max(np.abs(expected)))
    assert np.max(np.abs(TFLiteModel(path)(x) - expected)) <= tolerance
    assert report.batch_size == 4
    routes.clear()  # the context was left: a traced batch is transposed again
    tf.function(quantization_model)(x)
    assert routes() and {route.layout for route in routes()} == {Layout.TRANSPOSED}


# SavedModel.


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    keras.utils.set_random_seed(5)
    model = _text()
    directory = tmp_path_factory.mktemp("saved")
    plain = export_saved_model(model, directory / "plain")
    jit = export_saved_model(model, directory / "jit", jit_compile=True, batch_size=3)
    fixed = export_saved_model(model, directory / "fixed", batch_size=3)
    return SimpleNamespace(model=model, plain=plain, jit=jit, fixed=fixed)


_RELOAD = """
import json, sys
import numpy as np, tensorflow as tf
ids = np.array(json.loads(sys.argv[1]), dtype="int32")
out = {}
for path in sys.argv[2:]:
    serve = tf.saved_model.load(path).signatures["serving_default"]
    out[path] = serve(inputs=tf.constant(ids))["outputs"].numpy().tolist()
print(json.dumps(out))
"""


def test_saved_model_reloads_in_fresh_process(saved_models):
    paths = [saved_models.plain, saved_models.jit, saved_models.fixed]
    ids = _token_ids(3, TIME, 30, seed=30)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-c", _RELOAD, json.dumps(ids.tolist()), *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd="/",  # the package is not needed to load a SavedModel
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    expected = _keras(saved_models.model, ids)
    for path in paths:
        np.testing.assert_allclose(outputs[path], expected, atol=1e-6)


def _xla_flags(path):
    from tensorflow.python.saved_model import loader_impl

    saved = loader_impl.parse_saved_model(path)
    functions = saved.meta_graphs[0].graph_def.library.function
    return [
        f.attr["_XlaMustCompile"].b for f in functions if "_XlaMustCompile" in f.attr
    ]


def test_jit_compile_makes_serving_function_xla(saved_models):
    assert any(_xla_flags(saved_models.jit))
    assert not any(_xla_flags(saved_models.plain))
    # At a fixed batch size too, where the layer would compile its loops
    # with XLA on its own: a server without XLA on CPU could not run them.
    assert not any(_xla_flags(saved_models.fixed))


def test_saved_model_batch_size(saved_models):
    import tensorflow as tf

    any_batch = tf.saved_model.load(saved_models.plain).signatures["serving_default"]
    fixed = tf.saved_model.load(saved_models.jit).signatures["serving_default"]
    assert any_batch.structured_input_signature[1]["inputs"].shape.as_list() == [
        None,
        TIME,
    ]
    assert fixed.structured_input_signature[1]["inputs"].shape.as_list() == [3, TIME]


# Keras's own export, `model.export`: the path keras.io shows.


def _bidirectional_text(vocab=30):
    inputs = keras.Input((TIME,), dtype="int32")
    hidden = keras.layers.Embedding(vocab, 4, mask_zero=True)(inputs)
    hidden = keras.layers.Bidirectional(FourGateLSTM(5, return_sequences=True))(hidden)
    hidden = FourGateLSTM(4, use_gate="classic")(hidden)
    return _randomize(keras.Model(inputs, keras.layers.Dense(2)(hidden)))


def test_keras_model_export_serves_any_batch_without_xla(tmp_path):
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    model = _bidirectional_text()
    path = str(tmp_path / "keras_export")
    model.export(path, verbose=False)
    # Traced at an unknown batch size: nothing compiled with XLA, so TF
    # Serving without XLA on CPU runs it.
    assert not any(_xla_flags(path))
    loaded = tf.saved_model.load(path)
    for batch in (3, 1):
        ids = _token_ids(batch, TIME, 30, seed=31 + batch)
        served = loaded.serve(tf.constant(ids)).numpy()
        np.testing.assert_allclose(served, _keras(model, ids), atol=1e-6)
    # At a fixed batch size the inference loop compiles itself with XLA, as
    # docs/deploy.md says (`export_saved_model(batch_size=N)` does not).
    fixed = str(tmp_path / "keras_export_fixed")
    signature = [tf.TensorSpec((3, TIME), tf.int32)]
    model.export(fixed, verbose=False, input_signature=signature)
    assert any(_xla_flags(fixed))


@pytest.mark.parametrize("model_fn", [_bidirectional_text, _stacked])
def test_keras_litert_export_at_batch_1_has_builtin_ops_only(tmp_path, model_fn):
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    model = model_fn()
    dtype = model.inputs[0].dtype
    path = str(tmp_path / "keras_export.tflite")
    model.export(
        path,
        format="litert",
        verbose=False,
        input_signature=[tf.TensorSpec((1, *model.inputs[0].shape[1:]), dtype)],
    )
    with open(path, "rb") as f:
        ops = tflite_ops(f.read())
    assert "WHILE" in ops
    assert not [op for op in ops if op.startswith("Flex")], sorted(ops)
    if dtype == "int32":
        x = _token_ids(1, TIME, 30, seed=35)
    else:
        x = _sequences(batch=1, seed=35)
    interpreter = Interpreter(path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(output, _keras(model, x), atol=FLOAT_TOLERANCE)


# Paths: overwrite protection, atomic writes.


@pytest.fixture(scope="module")
def tiny():
    return keras.Sequential([keras.Input((5, 2)), FourGateLSTM(4)])


def test_existing_file_is_kept_without_overwrite(tiny, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_tflite(tiny, path)
    assert path.read_bytes() == b"user data"
    export_tflite(tiny, path, overwrite=True)
    assert TFLiteModel(path).ops
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_existing_saved_model_is_kept_without_overwrite(tiny, tmp_path):
    path = tmp_path / "sm"
    export_saved_model(tiny, path)
    (path / "saved_model.pb").write_bytes(b"earlier export")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_saved_model(tiny, path)
    assert (path / "saved_model.pb").read_bytes() == b"earlier export"
    export_saved_model(tiny, path, overwrite=True)
    assert sorted(os.listdir(path)) == sorted(
        ["assets", "fingerprint.pb", "saved_model.pb", "variables"]
    )
    assert (path / "saved_model.pb").read_bytes() != b"earlier export"
    assert os.listdir(tmp_path) == ["sm"]


def test_overwrite_never_deletes_a_directory_of_other_files(tiny, tmp_path):
    runs = tmp_path / "runs"
    (runs / "exp1").mkdir(parents=True)
    (runs / "exp1" / "precious.txt").write_text("keep")
    (runs / "notes.txt").write_text("keep")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        export_tflite(tiny, runs, overwrite=True)
    with pytest.raises(FileExistsError, match="not a SavedModel .*exp1, notes.txt"):
        export_saved_model(tiny, runs, overwrite=True)
    assert (runs / "exp1" / "precious.txt").read_text() == "keep"
    assert sorted(os.listdir(runs)) == ["exp1", "notes.txt"]
    assert os.listdir(tmp_path) == ["runs"]
    # An empty directory is replaced.
    (tmp_path / "empty").mkdir()
    export_saved_model(tiny, tmp_path / "empty", overwrite=True)
    assert (tmp_path / "empty" / "saved_model.pb").is_file()


def test_overwrite_keeps_files_beside_a_saved_model(tiny, tmp_path):
    # TF Serving reads warm-up requests from assets.extra/ inside the
    # SavedModel: a new export must not delete them silently.
    path = tmp_path / "sm"
    export_saved_model(tiny, path)
    (path / "assets.extra").mkdir()
    (path / "assets.extra" / "tf_serving_warmup_requests").write_text("keep")
    with pytest.raises(FileExistsError, match="also holds assets.extra"):
        export_saved_model(tiny, path, overwrite=True)
    warmup = path / "assets.extra" / "tf_serving_warmup_requests"
    assert warmup.read_text() == "keep"


def test_saved_model_directory_mode_follows_umask(tiny, tmp_path):
    # Not tempfile's 0700: a server running as another user reads it.
    old = os.umask(0o022)
    try:
        path = export_saved_model(tiny, tmp_path / "sm")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o755


def test_saved_model_never_replaces_a_file(tiny, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        export_saved_model(tiny, path, overwrite=True)
    assert path.read_text() == "keep"
    assert os.listdir(tmp_path) == ["notes.txt"]


class _Breaks(keras.layers.Layer):
    """The identity, until `breaks_when` is "traced" (into the graph an export
    writes) or "run" (eagerly, as the export's parity check runs the model)."""

    breaks_when = None

    def call(self, inputs):
        import tensorflow as tf

        now = "run" if tf.executing_eagerly() else "traced"
        if now == self.breaks_when:
            raise RuntimeError(f"broke when {now}")
        return inputs


def _breakable(breaks_when):
    model = keras.Sequential([keras.Input((5, 2)), _Breaks(), FourGateLSTM(4)])
    model.layers[0].breaks_when = breaks_when  # once built
    return model


def test_failed_tflite_export_leaves_nothing(tmp_path):
    # The file is written, then measured against the model: that fails.
    with pytest.raises(RuntimeError, match="broke when run"):
        export_tflite(_breakable("run"), tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_failed_saved_model_export_keeps_the_old_one(tiny, tmp_path, monkeypatch):
    path = tmp_path / "sm"
    export_saved_model(tiny, path)
    before = sorted(os.listdir(path))
    (path / "saved_model.pb").write_bytes(b"earlier export")
    with pytest.raises(RuntimeError, match="broke when traced"):
        export_saved_model(_breakable("traced"), path, overwrite=True)

    # A failure halfway through writing: Keras's writer leaves a partial file.
    def write_half(archive, directory, **kwargs):
        with open(os.path.join(directory, "saved_model.pb"), "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    # `ExportArchive()` makes the backend's own archive class.
    archive = type(keras.export.ExportArchive())
    monkeypatch.setattr(archive, "write_out", write_half)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(tiny, path, overwrite=True)
    assert os.listdir(tmp_path) == ["sm"]
    assert sorted(os.listdir(path)) == before
    assert (path / "saved_model.pb").read_bytes() == b"earlier export"


def test_missing_parent_directory(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_tflite(tiny, tmp_path / "no" / "m.tflite")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_saved_model(tiny, tmp_path / "no" / "sm")
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(NotADirectoryError, match="afile' of path .* is not a dir"):
        export_tflite(tiny, tmp_path / "afile" / "m.tflite")
    assert (tmp_path / "afile").read_text() == "keep"


# Bad arguments.


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, "2", True, None])
def test_bad_batch_size(tiny, tmp_path, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        export_tflite(tiny, tmp_path / "m.tflite", batch_size=batch_size)


def test_bad_saved_model_batch_size(tiny, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
        export_saved_model(tiny, tmp_path / "sm", batch_size=0)


def test_unknown_quantize(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"quantize must be one of .*'int4'"):
        export_tflite(tiny, tmp_path / "m.tflite", quantize="int4")


def test_int8_needs_representative_data(tiny, tmp_path):
    with pytest.raises(ValueError, match="needs representative_data"):
        export_tflite(tiny, tmp_path / "m.tflite", quantize="int8")


def test_representative_data_only_for_int8(tiny, tmp_path):
    with pytest.raises(ValueError, match="only used with"):
        export_tflite(
            tiny, tmp_path / "m.tflite", representative_data=np.zeros((4, 5, 2))
        )


@pytest.mark.parametrize("shape", [(4, 5, 3), (4, 2), (0, 5, 2)])
def test_bad_representative_data(tiny, tmp_path, shape):
    with pytest.raises(ValueError, match=r"representative_data must be an array"):
        export_tflite(
            tiny,
            tmp_path / "m.tflite",
            quantize="int8",
            representative_data=np.zeros(shape),
        )


def test_int8_needs_fixed_time_length(tmp_path):
    model = keras.Sequential([keras.Input((None, 2)), FourGateLSTM(4)])
    with pytest.raises(ValueError, match="fixed number of time steps"):
        export_tflite(
            model,
            tmp_path / "m.tflite",
            quantize="int8",
            representative_data=np.zeros((4, 5, 2)),
        )


def test_not_a_model(tmp_path):
    with pytest.raises(
        TypeError, match="model must be a keras.Model, got FourGateLSTM"
    ):
        export_tflite(FourGateLSTM(4), tmp_path / "m.tflite")


def test_unbuilt_model(tmp_path):
    with pytest.raises(ValueError, match="no known input shape"):
        export_saved_model(keras.Sequential([FourGateLSTM(4)]), tmp_path / "sm")


def test_two_inputs_refused(tmp_path):
    a, b = keras.Input((5, 2)), keras.Input((5, 2))
    model = keras.Model([a, b], FourGateLSTM(4)(keras.layers.Add()([a, b])))
    with pytest.raises(ValueError, match="one input and one output.*2 inputs"):
        export_tflite(model, tmp_path / "m.tflite")


def test_stateful_layer_refused(tmp_path):
    model = keras.Sequential(
        [keras.Input((5, 2), batch_size=1), FourGateLSTM(4, stateful=True)]
    )
    with pytest.raises(ValueError, match="stateful.*streaming=True"):
        export_tflite(model, tmp_path / "m.tflite")


# Models that cannot stream: each gets an error that says why.


def _unstreamable(name):
    inputs = keras.Input((5, 2))
    if name == "go_backwards":
        outputs = FourGateLSTM(4, go_backwards=True)(inputs)
    elif name == "bidirectional":
        outputs = keras.layers.Bidirectional(FourGateLSTM(4))(inputs)
    elif name == "other_rnn":
        outputs = keras.layers.LSTM(4)(FourGateLSTM(4, return_sequences=True)(inputs))
    elif name == "mixes_time":
        outputs = FourGateLSTM(4)(keras.layers.Conv1D(3, 2, padding="same")(inputs))
    elif name == "not_a_chain":
        hidden = FourGateLSTM(2, return_sequences=True)(inputs)
        outputs = FourGateLSTM(4)(keras.layers.Add()([inputs, hidden]))
    elif name == "foreign_mask":  # not the mask Masking(0.0) computes
        custom = keras.ops.any(keras.ops.not_equal(inputs, 1.0), axis=-1)
        outputs = FourGateLSTM(4)(keras.layers.Masking(0.0)(inputs), mask=custom)
    elif name == "nested_model":
        inner = keras.Sequential([keras.Input((5, 2)), FourGateLSTM(4)])
        outputs = inner(inputs)
    elif name == "per_step_on_time_axis":
        outputs = FourGateLSTM(4)(keras.layers.Softmax(axis=1)(inputs))
    elif name == "state_from_input":
        first = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(inputs))
        outputs = FourGateLSTM(4)(inputs, initial_state=[first, first])
    else:
        outputs = keras.layers.Dense(4)(inputs)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("go_backwards", "go_backwards=True reads the sequence from the end"),
        ("bidirectional", "backward half reads the sequence from the end"),
        ("other_rnn", "only the states of this package's FourGateLSTM"),
        ("mixes_time", "not known to act on each time step alone"),
        ("not_a_chain", "must form a chain"),
        ("foreign_mask", "given a mask other than the one its input carries"),
        ("nested_model", "nested models are not supported; flatten its layers"),
        ("per_step_on_time_axis", "it acts on axis 1, not on the features"),
        ("state_from_input", "must form a chain"),
        ("no_recurrent_layer", "no FourGateLSTM layer"),
    ],
)
def test_unstreamable_model_is_refused(tmp_path, name, reason):
    with pytest.raises(ValueError, match=reason):
        export_tflite(_unstreamable(name), tmp_path / "m.tflite", streaming=True)
    assert os.listdir(tmp_path) == []


def test_probe_looks_like_the_raw_data_a_normalization_layer_expects(tmp_path):
    # A standard-normal probe is ~150 standard deviations from a pressure of
    # 986 hPa: every gate saturates, and the report would check nothing.
    mean, variance = np.array([0.0, 986.0, -5.0]), np.array([1.0, 40.0, 0.25])
    model = keras.Sequential(
        [
            keras.Input((None, FEATURES)),
            keras.layers.Normalization(mean=mean, variance=variance),
            _Recorder(),
            FourGateLSTM(4),
        ]
    )
    # Normalized, a probe drawn at the layer's mean and variance is standard
    # normal; a standard-normal one would be near -156 in the second feature.
    normalized = _probe_seen(model, tmp_path / "m.tflite")
    np.testing.assert_allclose(normalized.mean(axis=0), 0.0, atol=0.2)
    np.testing.assert_allclose(normalized.std(axis=0), 1.0, rtol=0.15)
    # Loaded from a .keras file too (the command line's path), whose layers
    # have several call nodes.
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        _probe_seen(loaded, tmp_path / "loaded.tflite"), normalized
    )
    # Without a Normalization layer first, the probe stays standard normal.
    plain = keras.Sequential(
        [keras.Input((None, FEATURES)), _Recorder(), FourGateLSTM(4)]
    )
    raw = _probe_seen(plain, tmp_path / "plain.tflite")
    np.testing.assert_allclose(raw.mean(axis=0), 0.0, atol=0.2)
    np.testing.assert_allclose(raw.std(axis=0), 1.0, rtol=0.15)


@keras.saving.register_keras_serializable(package="test_export")
class _Recorder(keras.layers.Layer):
    """The identity; keeps what it is run on eagerly: the export's probe."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, inputs):
        import tensorflow as tf

        if tf.executing_eagerly():
            self.seen.append(keras.ops.convert_to_numpy(inputs))
        return inputs


def _probe_seen(model, path):
    """What the `_Recorder` in `model` was run on as `export_tflite` measured
    the file, as rows of features."""
    recorder = next(layer for layer in model.layers if isinstance(layer, _Recorder))
    recorder.seen.clear()
    export_tflite(model, path, batch_size=32)
    return recorder.seen[-1].reshape(-1, FEATURES)


def test_keyword_called_functional_chain_streams(tmp_path):
    # Layers called as `layer(inputs=x)` / `FourGateLSTM(...)(sequences=x)`.
    inputs = keras.Input((TIME, FEATURES))
    hidden = keras.layers.Dense(4)(inputs=inputs)
    model = _randomize(keras.Model(inputs, FourGateLSTM(5)(sequences=hidden)))
    report = export_tflite(model, tmp_path / "m.tflite", streaming=True)
    assert report.step_max_abs_diff <= FLOAT_TOLERANCE


@pytest.mark.parametrize("padding", ["Embedding(mask_zero=True)", "Masking(nan)"])
def test_functional_chain_with_a_mask_streams_when_loaded(tmp_path, padding):
    # Loading rebuilds the graph: the recurrent layers get their mask
    # computed again (`not_equal(ids, 0)`), not the tensor their input
    # carries; NaN as the padding value equals itself there.
    keras.utils.set_random_seed(12)
    if padding.startswith("Embedding"):
        model = _functional_text(mask_zero=True)
        x = _token_ids(3, TIME, 30, seed=19)
    else:
        inputs = keras.Input((TIME, FEATURES))
        hidden = keras.layers.Masking(float("nan"))(inputs)
        hidden = FourGateLSTM(6, return_sequences=True)(hidden)
        model = _randomize(keras.Model(inputs, FourGateLSTM(5)(hidden)))
        x = _sequences(batch=3, seed=19)
        x[0, 4:] = np.nan
    model.save(tmp_path / "m.keras")
    model = keras.models.load_model(tmp_path / "m.keras")
    report = export_tflite(model, tmp_path / "m.tflite", batch_size=3, streaming=True)
    assert report.step_max_abs_diff <= FLOAT_TOLERANCE
    streamed = _stream(TFLiteModel(tmp_path / "m.tflite"), x)[-1]
    np.testing.assert_allclose(streamed, _keras(model, x), atol=FLOAT_TOLERANCE)


def test_mixed_precision_export_does_not_warn(tmp_path):
    # Compared with its own bfloat16 outputs, the float32 file differs by
    # bfloat16 rounding (1.6e-4 here), not by a wrong conversion.
    keras.utils.set_random_seed(11)
    with _global_policy("mixed_bfloat16"):
        model = keras.Sequential(
            [
                keras.Input((30, 8)),
                FourGateLSTM(64, return_sequences=True),
                FourGateLSTM(64),
                keras.layers.Dense(4, dtype="float32"),
            ]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = export_tflite(model, tmp_path / "m.tflite")
    assert report.max_abs_diff < 2e-2


def test_float32_file_far_from_keras_is_warned_about(tmp_path):
    # The converter gets TimeDistributed(Flatten()) wrong (keras.layers.LSTM
    # behind it too): the number in the report alone is easy to miss.
    keras.utils.set_random_seed(10)
    inputs = keras.Input((None, 4, 2))
    hidden = keras.layers.TimeDistributed(keras.layers.Flatten())(inputs)
    model = keras.Model(inputs, FourGateLSTM(5)(hidden))
    with pytest.warns(UserWarning, match="differs from the Keras model by"):
        report = export_tflite(model, tmp_path / "m.tflite")
    assert report.max_abs_diff > 1e-4


def test_exact_float32_export_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        report = export_tflite(_single("projected"), tmp_path / "m.tflite")
    assert report.max_abs_diff <= FLOAT_TOLERANCE


def test_bidirectional_exports_without_streaming(tmp_path):
    model = _randomize(_unstreamable("bidirectional"))
    report = export_tflite(model, tmp_path / "m.tflite")
    assert report.max_abs_diff <= FLOAT_TOLERANCE


# Backends.


_UNDER_JAX = """
import keras, numpy as np
from keras_lstm_gates import FourGateLSTM, export_tflite, tflite_tracing
model = keras.Sequential([keras.Input((5, 2)), FourGateLSTM(4)])
try:
    export_tflite(model, "m.tflite")
except RuntimeError as error:
    print("RuntimeError:", error)
try:
    with tflite_tracing():
        pass
except RuntimeError as error:
    print("RuntimeError:", error)
"""


def test_export_under_jax_backend_says_it_needs_tensorflow(tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": REPO_ROOT,
    }
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_JAX],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RuntimeError: export_tflite needs the TensorFlow backend" in result.stdout
    assert "RuntimeError: tflite_tracing needs the TensorFlow backend" in result.stdout
    assert "'jax'" in result.stdout
    assert os.listdir(tmp_path) == []
