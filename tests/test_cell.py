"""Tests of `FourGateLSTMCell`: the equations, the weights, the errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import FourGateLSTMCell
from tests import reference

USE_GATES = ["projected", "classic"]


def _built_cell(units, input_dim, **kwargs):
    cell = FourGateLSTMCell(units, **kwargs)
    cell.build((None, input_dim))
    return cell


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_every_step_matches_numpy_reference(use_gate):
    rng = np.random.default_rng(0)
    batch, time, features, units = 4, 24, 5, 6
    cell = _built_cell(units, features, use_gate=use_gate)
    weights = reference.random_gate_weights(units, features, use_gate, rng)
    cell.set_gate_weights(weights)
    x = rng.normal(size=(batch, time, features)).astype("float32")
    stm0 = rng.normal(size=(batch, units)).astype("float32")
    ltm0 = rng.normal(size=(batch, units)).astype("float32")

    expected = reference.four_gate_lstm(x, weights, use_gate, stm0, ltm0)

    stm, ltm = stm0, ltm0
    for t in range(time):
        output, (stm, ltm) = cell(x[:, t], [stm, ltm])
        np.testing.assert_allclose(output, expected["STM"][:, t], atol=1e-5)
        np.testing.assert_allclose(stm, expected["STM"][:, t], atol=1e-5)
        np.testing.assert_allclose(ltm, expected["LTM"][:, t], atol=1e-5)


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize("layer_kind", ["FourGateLSTM", "RNN(cell)"])
def test_layer_matches_numpy_reference(use_gate, layer_kind):
    rng = np.random.default_rng(1)
    batch, time, features, units = 3, 20, 4, 5
    kwargs = dict(return_sequences=True, return_state=True)
    if layer_kind == "FourGateLSTM":
        layer = FourGateLSTM(units, use_gate=use_gate, **kwargs)
    else:
        layer = keras.layers.RNN(FourGateLSTMCell(units, use_gate=use_gate), **kwargs)
    layer.build((None, time, features))
    weights = reference.random_gate_weights(units, features, use_gate, rng)
    layer.cell.set_gate_weights(weights)
    x = rng.normal(size=(batch, time, features)).astype("float32")

    sequence, stm, ltm = layer(x)

    expected = reference.four_gate_lstm(x, weights, use_gate)
    np.testing.assert_allclose(sequence, expected["STM"], atol=1e-5)
    np.testing.assert_allclose(stm, expected["STM"][:, -1], atol=1e-5)
    np.testing.assert_allclose(ltm, expected["LTM"][:, -1], atol=1e-5)


@pytest.mark.parametrize("layer_kind", ["FourGateLSTM", "RNN(cell)"])
def test_classic_takes_keras_lstm_weights_and_matches_it(layer_kind):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 30, 7)).astype("float32")
    lstm = keras.layers.LSTM(9, return_sequences=True)
    expected = lstm(x)
    if layer_kind == "FourGateLSTM":
        ours = FourGateLSTM(9, use_gate="classic", return_sequences=True)
    else:
        ours = keras.layers.RNN(
            FourGateLSTMCell(9, use_gate="classic"), return_sequences=True
        )
    ours.build(x.shape)
    ours.set_weights(lstm.get_weights())
    np.testing.assert_allclose(ours(x), expected, atol=1e-5)


@pytest.mark.parametrize("use_gate", USE_GATES)
# training=True takes the layer's training path (a hand-written backward pass
# on TensorFlow); training=False the inference loop, differentiated by autodiff.
@pytest.mark.parametrize("training", [False, True])
def test_gradients_match_finite_differences(use_gate, training):
    rng = np.random.default_rng(3)
    layer = FourGateLSTM(3, use_gate=use_gate, return_sequences=True, dtype="float64")
    x = tf.constant(rng.normal(size=(2, 6, 2)))
    layer.build(x.shape)
    layer.cell.set_gate_weights(
        reference.random_gate_weights(3, 2, use_gate, rng, scale=0.8)
    )
    probe = tf.constant(rng.normal(size=(2, 6, 3)))

    def loss():
        return tf.reduce_sum(layer(x, training=training) * probe)

    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, layer.trainable_variables)

    eps = 1e-6
    for variable, grad in zip(layer.trainable_variables, grads):
        base = variable.numpy()
        numeric = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                numeric[index] += sign * loss().numpy() / (2 * eps)
        variable.assign(base)
        np.testing.assert_allclose(
            grad, numeric, rtol=1e-5, atol=1e-7, err_msg=variable.path
        )


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_gate_weights_are_slices_of_the_fused_kernels(use_gate):
    cell = _built_cell(4, 3, use_gate=use_gate, bias_initializer="random_normal")
    weights = cell.gate_weights()
    kernel = cell.kernel.numpy()
    recurrent = cell.recurrent_kernel.numpy()
    bias = cell.bias.numpy()
    # Keras's gate order in the fused kernels: i, f, c (our N), o (our V).
    for position, gate in enumerate("ifnv"):
        columns = slice(4 * position, 4 * (position + 1))
        np.testing.assert_array_equal(weights[f"W_{gate}"][:4], recurrent[:, columns])
        np.testing.assert_array_equal(weights[f"W_{gate}"][4:], kernel[:, columns])
        np.testing.assert_array_equal(weights[f"b_{gate}"], bias[columns])
    if use_gate == "projected":
        np.testing.assert_array_equal(weights["W_u"], cell.use_gate_kernel.numpy())
        np.testing.assert_array_equal(weights["b_u"], cell.use_gate_bias.numpy())
    else:
        assert "W_u" not in weights and "b_u" not in weights


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_set_gate_weights_inverts_gate_weights(use_gate):
    rng = np.random.default_rng(4)
    cell = _built_cell(5, 2, use_gate=use_gate)
    weights = reference.random_gate_weights(5, 2, use_gate, rng)
    cell.set_gate_weights(weights)
    got = cell.gate_weights()
    assert sorted(got) == sorted(weights)
    for key, value in weights.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6)


def test_set_gate_weights_names_missing_key():
    cell = _built_cell(4, 3)
    weights = cell.gate_weights()
    del weights["W_u"]
    with pytest.raises(ValueError, match=r"missing key 'W_u'.*\(4, 4\)"):
        cell.set_gate_weights(weights)


def test_set_gate_weights_names_key_and_both_shapes():
    cell = _built_cell(4, 3)
    weights = cell.gate_weights()
    weights["W_f"] = np.zeros((6, 4))
    with pytest.raises(
        ValueError, match=r"'W_f' must have shape \(7, 4\), got \(6, 4\)"
    ):
        cell.set_gate_weights(weights)


@pytest.mark.parametrize(
    "use_gate, use_bias, extra",
    [("projected", False, "b_f"), ("classic", True, "W_u")],
)
def test_set_gate_weights_names_unknown_keys(use_gate, use_bias, extra):
    # A bias given to a cell without biases, or `W_u` to a classic cell,
    # would otherwise be dropped without a word.
    cell = _built_cell(4, 3, use_gate=use_gate, use_bias=use_bias)
    before = cell.gate_weights()
    weights = {**before, extra: np.full((4, 4) if extra == "W_u" else 4, 3.0)}
    with pytest.raises(ValueError, match=rf"unknown keys \['{extra}'\]"):
        cell.set_gate_weights(weights)
    for key, value in cell.gate_weights().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize(
    "inputs_shape, state_shapes, message",
    [
        ((2, 7, 3), [(2, 4), (2, 4)], r"inputs must be one step, \(batch, features\)"),
        ((2, 3), [(2, 4)], r"states must be a list \[STM_\{t-1\}, LTM_\{t-1\}\]"),
        ((2, 3), [(2, 5), (2, 4)], r"STM_\{t-1\} must have shape .* = \(2, 4\)"),
        # Broadcast without a word before: a silently wrong answer.
        (
            (2, 3),
            [(2, 4), (2, 1)],
            r"LTM_\{t-1\} must have shape .* got shape \(2, 1\)",
        ),
    ],
    ids=["sequence", "one-state", "wide-stm", "narrow-ltm"],
)
def test_cell_call_checks_step_and_states(inputs_shape, state_shapes, message):
    cell = _built_cell(4, 3)
    states = [np.zeros(shape, "float32") for shape in state_shapes]
    with pytest.raises(ValueError, match=message):
        cell(np.zeros(inputs_shape, "float32"), states)


def test_gate_weights_needs_a_built_cell():
    with pytest.raises(ValueError, match="needs a built cell"):
        FourGateLSTMCell(4).gate_weights()


def test_unit_forget_bias_sets_only_the_forget_block_to_one():
    weights = _built_cell(3, 2).gate_weights()
    np.testing.assert_array_equal(weights["b_f"], np.ones(3))
    for key in ("b_i", "b_n", "b_v", "b_u"):
        np.testing.assert_array_equal(weights[key], np.zeros(3))
    plain = _built_cell(3, 2, unit_forget_bias=False).gate_weights()
    np.testing.assert_array_equal(plain["b_f"], np.zeros(3))


@pytest.mark.parametrize(
    "use_gate, use_bias, names",
    [
        (
            "projected",
            True,
            ["kernel", "recurrent_kernel", "bias", "use_gate_kernel", "use_gate_bias"],
        ),
        ("projected", False, ["kernel", "recurrent_kernel", "use_gate_kernel"]),
        ("classic", True, ["kernel", "recurrent_kernel", "bias"]),
        ("classic", False, ["kernel", "recurrent_kernel"]),
    ],
)
def test_weights_by_option(use_gate, use_bias, names):
    cell = _built_cell(4, 3, use_gate=use_gate, use_bias=use_bias)
    assert [w.name for w in cell.trainable_weights] == names


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize("layer_kind", ["FourGateLSTM", "RNN(cell)"])
def test_no_bias_matches_reference_with_zero_biases(use_gate, layer_kind):
    # The fused loop and Keras's loop over the cell, with random weights set
    # under the equations' names (no `b_` keys without biases).
    rng = np.random.default_rng(5)
    kwargs = dict(use_gate=use_gate, use_bias=False)
    if layer_kind == "FourGateLSTM":
        layer = FourGateLSTM(4, **kwargs, return_sequences=True)
    else:
        layer = keras.layers.RNN(FourGateLSTMCell(4, **kwargs), return_sequences=True)
    x = rng.normal(size=(2, 8, 3)).astype("float32")
    layer.build(x.shape)
    weights = {
        k: v
        for k, v in reference.random_gate_weights(4, 3, use_gate, rng).items()
        if not k.startswith("b_")
    }
    layer.cell.set_gate_weights(weights)
    read = layer.cell.gate_weights()
    assert sorted(read) == sorted(weights)
    for key, value in weights.items():
        np.testing.assert_allclose(read[key], value, rtol=1e-6)
    full = dict(weights, **{f"b_{g}": np.zeros(4) for g in "nifvu"})
    expected = reference.four_gate_lstm(x, full, use_gate)["STM"]
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize(
    "units, error, message",
    [
        (0, ValueError, "units must be a positive int, got 0"),
        (-3, ValueError, "units must be a positive int, got -3"),
        (2.5, TypeError, "units must be a positive int, got 2.5"),
        ("8", TypeError, "units must be a positive int, got '8'"),
        (True, TypeError, "units must be a positive int, got True"),
    ],
)
def test_bad_units_is_a_clear_error(units, error, message):
    with pytest.raises(error, match=message):
        FourGateLSTMCell(units)
    with pytest.raises(error, match=message):
        FourGateLSTM(units)


def test_unknown_use_gate_is_a_clear_error():
    with pytest.raises(ValueError, match=r"use_gate must be one of .*got 'textbook'"):
        FourGateLSTM(4, use_gate="textbook")


@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_dropout_outside_unit_interval_is_a_clear_error(argument, rate):
    with pytest.raises(ValueError, match=rf"{argument} must be a float in \[0, 1\)"):
        FourGateLSTMCell(4, **{argument: rate})


@pytest.mark.parametrize("rate", ["0.1", None, True])
def test_dropout_of_another_type_is_a_clear_error(rate):
    with pytest.raises(TypeError, match=r"dropout must be a float in \[0, 1\), got "):
        FourGateLSTMCell(4, dropout=rate)


def test_states_not_a_list_is_a_clear_error():
    cell = _built_cell(4, 3)
    x, stm = np.zeros((2, 3), "float32"), np.zeros((2, 4), "float32")
    message = r"states must be a list \[STM_\{t-1\}, LTM_\{t-1\}\] .*got one "
    with pytest.raises(ValueError, match=message):
        cell(x, stm)
    with pytest.raises(ValueError, match=r"states must be a list .*got 1 array\b"):
        cell(x, [stm])


def test_numpy_integer_units_are_accepted():
    assert FourGateLSTMCell(np.int64(7)).units == 7
