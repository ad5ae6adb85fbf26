"""Tests for `TFLiteModel`, the wrapper over the LiteRT interpreter."""

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import TFLiteModel
from keras_lstm_gates import export_tflite

TIME, FEATURES, BATCH, UNITS = 5, 2, 3, 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One model exported with and without the `step` signature."""
    keras.utils.set_random_seed(9)
    model = keras.Sequential(
        [keras.Input((TIME, FEATURES)), FourGateLSTM(UNITS, name="memory")]
    )
    directory = tmp_path_factory.mktemp("tflite")
    streaming = export_tflite(
        model, directory / "s.tflite", batch_size=BATCH, streaming=True
    ).path
    plain = export_tflite(model, directory / "p.tflite", batch_size=BATCH).path
    return model, streaming, plain


def _x(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, TIME, FEATURES)).astype("float32")


def test_call_runs_the_whole_sequence(files):
    model, path, _ = files
    x = _x()
    expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(TFLiteModel(path)(x), expected, atol=1e-5)


def test_call_accepts_float64_and_lists(files):
    _, path, _ = files
    tflite = TFLiteModel(path)
    x = _x(1)
    np.testing.assert_array_equal(tflite(x.astype("float64").tolist()), tflite(x))


def test_signatures_describe_inputs_and_outputs(files):
    _, path, plain = files
    signatures = TFLiteModel(path).signatures
    assert set(signatures) == {"serving_default", "step"}
    assert signatures["serving_default"] == {
        "inputs": {"inputs": ((BATCH, TIME, FEATURES), "float32")},
        "outputs": {"outputs": ((BATCH, UNITS), "float32")},
    }
    assert signatures["step"]["inputs"] == {
        "inputs": ((BATCH, FEATURES), "float32"),
        "memory_stm": ((BATCH, UNITS), "float32"),
        "memory_ltm": ((BATCH, UNITS), "float32"),
    }
    assert set(TFLiteModel(plain).signatures) == {"serving_default"}


def test_ops_lists_loop_body_ops(files):
    _, path, _ = files
    ops = TFLiteModel(path).ops
    # TANH and LOGISTIC live only in the WHILE loop's body subgraph, and in
    # the step signature.
    assert {"WHILE", "TANH", "LOGISTIC", "FULLY_CONNECTED"} <= ops


def test_initial_states_are_zero(files):
    _, path, _ = files
    states = TFLiteModel(path).initial_states()
    assert set(states) == {"memory_stm", "memory_ltm"}
    for value in states.values():
        assert value.shape == (BATCH, UNITS) and not value.any()


def test_step_without_states_starts_from_zero(files):
    _, path, _ = files
    tflite = TFLiteModel(path)
    x = _x(2)
    y_default, states_default = tflite.step(x[:, 0])
    y_zero, states_zero = tflite.step(x[:, 0], tflite.initial_states())
    np.testing.assert_array_equal(y_default, y_zero)
    # The output of a FourGateLSTM is its STM.
    np.testing.assert_array_equal(y_default, states_default["memory_stm"])


def test_run_any_signature_by_name(files):
    _, path, _ = files
    tflite = TFLiteModel(path)
    x = _x(3)
    result = tflite.run("serving_default", inputs=x)
    np.testing.assert_array_equal(result["outputs"], tflite(x))


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="'nowhere.tflite' is not a file"):
        TFLiteModel("nowhere.tflite")


def test_not_a_tflite_file(tmp_path):
    path = tmp_path / "junk.tflite"
    path.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ValueError, match="not a readable .tflite file"):
        TFLiteModel(path)


@pytest.mark.parametrize("num_threads", [0, -2, 1.5, True])
def test_bad_num_threads_is_named(files, num_threads):
    # Not blamed on the file ("is not a readable .tflite file").
    _, path, _ = files
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        TFLiteModel(path, num_threads=num_threads)


def test_num_threads(files):
    _, path, _ = files
    x = _x(3)
    np.testing.assert_array_equal(
        TFLiteModel(path, num_threads=2)(x), TFLiteModel(path)(x)
    )


def test_step_needs_a_streaming_export(files):
    _, _, plain = files
    with pytest.raises(ValueError, match="no signature 'step'.*streaming=True"):
        TFLiteModel(plain).step(np.zeros((BATCH, FEATURES), "float32"))


def test_wrong_input_shape(files):
    _, path, _ = files
    with pytest.raises(
        ValueError,
        match=r"input 'inputs' of signature 'serving_default' must have "
        r"shape \(3, 5, 2\).*got \(1, 5, 2\)",
    ):
        TFLiteModel(path)(np.zeros((1, TIME, FEATURES), "float32"))


def test_wrong_input_names(files):
    _, path, _ = files
    with pytest.raises(ValueError, match=r"missing \['memory_ltm'\].*unknown \['h'\]"):
        TFLiteModel(path).run(
            "step",
            inputs=np.zeros((BATCH, FEATURES)),
            memory_stm=np.zeros((BATCH, UNITS)),
            h=np.zeros((BATCH, UNITS)),
        )


def test_states_must_be_a_dict(files):
    _, path, _ = files
    with pytest.raises(TypeError, match="states must be the dict"):
        TFLiteModel(path).step(np.zeros((BATCH, FEATURES)), [np.zeros((BATCH, UNITS))])


def test_unknown_signature(files):
    _, path, _ = files
    with pytest.raises(
        ValueError, match=r"no signature 'serve'.*\['serving_default', 'step'\]"
    ):
        TFLiteModel(path).run("serve", inputs=_x())


def test_any_sequence_length_when_the_model_allows_it(tmp_path):
    keras.utils.set_random_seed(10)
    model = keras.Sequential([keras.Input((None, FEATURES)), FourGateLSTM(UNITS)])
    path = export_tflite(model, tmp_path / "any.tflite").path
    tflite = TFLiteModel(path)
    assert tflite.signatures["serving_default"]["inputs"]["inputs"][0] == (
        1,
        -1,
        FEATURES,
    )
    for time in (3, 11):
        x = np.random.default_rng(time).standard_normal((1, time, FEATURES))
        expected = keras.ops.convert_to_numpy(model(x.astype("float32")))
        np.testing.assert_allclose(tflite(x), expected, atol=1e-5)


def test_complex_input_is_refused(files):
    _, path, _ = files
    with pytest.raises(TypeError, match="must hold real numbers .*complex128"):
        TFLiteModel(path)(_x().astype("complex128"))


def test_token_ids_outside_int32_are_refused(tmp_path):
    # Cast to int32, id + 2**32 would wrap around to id: a silently wrong answer.
    model = keras.Sequential(
        [
            keras.Input((TIME,), dtype="int32"),
            keras.layers.Embedding(10, 3, mask_zero=True),
            FourGateLSTM(UNITS),
        ]
    )
    tflite = TFLiteModel(export_tflite(model, tmp_path / "t.tflite").path)
    ids = np.random.default_rng(2).integers(1, 10, (1, TIME))
    np.testing.assert_array_equal(tflite(ids.astype("int64")), tflite(ids))
    with pytest.raises(ValueError, match=r"holds values outside int32 .*wrap around"):
        tflite(ids + 2**32)
    # Floats for token ids (1.7 would become id 1): refused, not truncated.
    with pytest.raises(TypeError, match=r"must hold integers \(int32\), got float64"):
        tflite(ids + 0.7)


def test_call_runs_a_file_of_your_own_converter(files, tmp_path):
    # Its one input and output have the converter's names, not inputs/outputs.
    import tensorflow as tf

    from keras_lstm_gates import tflite_tracing

    model, _, _ = files
    fixed = keras.Sequential(
        [keras.Input((TIME, FEATURES), batch_size=BATCH), *model.layers]
    )
    with tflite_tracing():
        content = tf.lite.TFLiteConverter.from_keras_model(fixed).convert()
    (tmp_path / "own.tflite").write_bytes(content)
    tflite = TFLiteModel(tmp_path / "own.tflite")
    names = tflite.signatures["serving_default"]
    assert list(names["inputs"]) != ["inputs"], names
    assert list(names["outputs"]) != ["outputs"], names
    x = _x(3)
    np.testing.assert_allclose(
        tflite(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )


def test_step_states_holding_inputs_is_a_clear_error(files):
    _, path, _ = files
    tflite = TFLiteModel(path)
    states = {**tflite.initial_states(), "inputs": np.zeros((BATCH, FEATURES))}
    with pytest.raises(ValueError, match="pass the time step as the first argument"):
        tflite.step(np.zeros((BATCH, FEATURES), "float32"), states)


def test_token_ids_outside_the_embedding_are_a_clear_error(tmp_path):
    # The interpreter says only "gather index out of bounds ... (GATHER)".
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(10, 3, mask_zero=True),
            FourGateLSTM(UNITS),
        ]
    )
    path = export_tflite(model, tmp_path / "t.tflite", streaming=True).path
    tflite = TFLiteModel(path)
    message = r"outside the model's embedding \(its embedding table has 10 rows"
    with pytest.raises(
        ValueError, match=message + r".*'inputs' holds ids in \[1, 12\]"
    ):
        tflite(np.array([[1, 12, 3]]))
    with pytest.raises(ValueError, match=message):
        tflite.step(np.array([10]))
    ids = np.array([[1, 9, 3]])  # the last row is fine
    np.testing.assert_allclose(
        tflite(ids), keras.ops.convert_to_numpy(model(ids)), atol=1e-5
    )


def test_empty_input_is_refused(tmp_path):
    # A time length of 0 fails in the interpreter ("failed to prepare"), or
    # returns zeros where there is an embedding before the layer.
    model = keras.Sequential([keras.Input((None, FEATURES)), FourGateLSTM(UNITS)])
    tflite = TFLiteModel(export_tflite(model, tmp_path / "any.tflite").path)
    with pytest.raises(
        ValueError, match=r"input 'inputs' .* is empty \(shape \(1, 0, 2\)\)"
    ):
        tflite(np.zeros((1, 0, FEATURES), "float32"))
