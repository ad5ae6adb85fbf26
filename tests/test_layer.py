"""Tests of `FourGateLSTM`: every way Keras users run a recurrent layer."""

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import FourGateLSTMCell
from tests import reference

USE_GATES = ["projected", "classic"]


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _copy_weights(source, *targets):
    for target in targets:
        target.set_weights(source.get_weights())


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize(
    "return_sequences, return_state",
    [(False, False), (True, False), (False, True), (True, True)],
)
def test_output_shapes(use_gate, return_sequences, return_state):
    layer = FourGateLSTM(
        6,
        use_gate=use_gate,
        return_sequences=return_sequences,
        return_state=return_state,
    )
    outputs = layer(_inputs((2, 7, 3)))
    expected = (2, 7, 6) if return_sequences else (2, 6)
    if return_state:
        sequence, stm, ltm = outputs
        assert sequence.shape == expected
        assert stm.shape == ltm.shape == (2, 6)
        last = sequence[:, -1] if return_sequences else sequence
        np.testing.assert_allclose(stm, last)
    else:
        assert outputs.shape == expected


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_regularizers_add_losses(use_gate):
    layer = FourGateLSTM(
        4,
        use_gate=use_gate,
        kernel_regularizer="l2",
        recurrent_regularizer="l2",
        bias_regularizer="l2",
        activity_regularizer="l2",
    )
    layer(_inputs((2, 5, 3)))
    # kernel, recurrent, bias, activity; projected adds W_u and b_u.
    assert len(layer.losses) == (6 if use_gate == "projected" else 4)


def test_constraints_apply_to_their_weights():
    layer = FourGateLSTM(
        4,
        kernel_constraint="non_neg",
        recurrent_constraint="non_neg",
        bias_constraint="non_neg",
    )
    layer.build((None, 5, 3))
    cell = layer.cell
    assert cell.kernel.constraint is cell.use_gate_kernel.constraint
    assert cell.recurrent_kernel.constraint is not None
    assert cell.bias.constraint is cell.use_gate_bias.constraint is not None


def test_properties_forward_to_the_cell():
    layer = FourGateLSTM(5, use_gate="classic", dropout=0.25, seed=3)
    assert layer.units == 5
    assert layer.use_gate == "classic"
    assert layer.dropout == 0.25
    assert layer.seed == 3
    assert layer.unit_forget_bias is True
    with pytest.raises(AttributeError):
        layer.units = 6


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_layer_equals_rnn_of_cell(use_gate, go_backwards):
    x = _inputs((3, 9, 4))
    mask = np.ones((3, 9), bool)
    mask[0, 6:] = False
    ours = FourGateLSTM(
        5, use_gate=use_gate, return_sequences=True, go_backwards=go_backwards
    )
    by_hand = keras.layers.RNN(
        FourGateLSTMCell(5, use_gate=use_gate),
        return_sequences=True,
        go_backwards=go_backwards,
    )
    ours.build(x.shape)
    by_hand.build(x.shape)
    _copy_weights(ours, by_hand)
    np.testing.assert_allclose(ours(x, mask=mask), by_hand(x, mask=mask), atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize("padding", ["post", "pre"])
def test_padded_sequence_equals_unpadded_with_embedding_mask(use_gate, padding):
    tokens = np.array([[5, 3, 9, 2, 7]])
    padded = np.zeros((1, 12), int)
    if padding == "post":
        padded[0, :5] = tokens
    else:
        padded[0, -5:] = tokens
    model = keras.Sequential(
        [
            keras.layers.Embedding(10, 4, mask_zero=True),
            FourGateLSTM(6, use_gate=use_gate),
        ]
    )
    np.testing.assert_allclose(model(padded), model(tokens), atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_padded_sequence_equals_unpadded_with_masking_layer(use_gate):
    x = _inputs((2, 6, 3))
    padded = np.concatenate([x, np.zeros((2, 4, 3), "float32")], axis=1)
    layer = FourGateLSTM(5, use_gate=use_gate)
    model = keras.Sequential([keras.layers.Masking(0.0), layer])
    np.testing.assert_allclose(model(padded), layer(x), atol=1e-6)


@pytest.mark.parametrize("unroll", [False, True], ids=["fused", "keras-loop"])
def test_mask_given_as_a_list_is_the_mask(unroll):
    # Keras hands a layer its mask in a list where it came with a list input.
    x = _inputs((3, 6, 4))
    mask = np.ones((3, 6), bool)
    mask[0, 4:] = False
    mask[1, 2] = False
    layer = FourGateLSTM(5, return_sequences=True, unroll=unroll)
    expected = layer(x, mask=mask)
    np.testing.assert_allclose(layer(x, mask=[mask]), expected, atol=1e-7)
    assert not np.allclose(layer(x), expected, atol=1e-3)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_initial_state_continues_a_sequence(use_gate):
    x = _inputs((3, 10, 4))
    layer = FourGateLSTM(5, use_gate=use_gate, return_state=True)
    whole, _, _ = layer(x)
    _, stm, ltm = layer(x[:, :4])
    second_half, _, _ = layer(x[:, 4:], initial_state=[stm, ltm])
    np.testing.assert_allclose(second_half, whole, atol=1e-6)


def test_initial_state_matches_reference():
    rng = np.random.default_rng(7)
    x = _inputs((2, 8, 3), seed=7)
    stm0, ltm0 = rng.normal(size=(2, 2, 4)).astype("float32")
    layer = FourGateLSTM(4, return_sequences=True)
    layer.build(x.shape)
    expected = reference.four_gate_lstm(
        x, layer.gate_weights(), "projected", stm0, ltm0
    )
    np.testing.assert_allclose(
        layer(x, initial_state=[stm0, ltm0]), expected["STM"], atol=1e-5
    )


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_go_backwards_equals_forward_on_reversed_input(use_gate):
    x = _inputs((2, 7, 3))
    backwards = FourGateLSTM(4, use_gate=use_gate, go_backwards=True)
    forwards = FourGateLSTM(4, use_gate=use_gate)
    backwards.build(x.shape)
    forwards.build(x.shape)
    _copy_weights(backwards, forwards)
    np.testing.assert_allclose(backwards(x), forwards(x[:, ::-1]), atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_stateful_halves_equal_the_whole_and_reset_states(use_gate):
    x = _inputs((2, 10, 3))
    stateful = FourGateLSTM(4, use_gate=use_gate, stateful=True)
    stateless = FourGateLSTM(4, use_gate=use_gate)
    stateful.build(x[:, :5].shape)
    stateless.build(x.shape)
    _copy_weights(stateless, stateful)

    stateful(x[:, :5])
    np.testing.assert_allclose(stateful(x[:, 5:]), stateless(x), atol=1e-6)

    stateful.reset_states()
    for state in stateful.states:
        np.testing.assert_array_equal(state, np.zeros((2, 4)))
    np.testing.assert_allclose(stateful(x[:, :5]), stateless(x[:, :5]), atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_unroll_equals_loop(use_gate):
    x = _inputs((3, 6, 4))
    unrolled = FourGateLSTM(5, use_gate=use_gate, unroll=True, return_sequences=True)
    looped = FourGateLSTM(5, use_gate=use_gate, return_sequences=True)
    unrolled.build(x.shape)
    looped.build(x.shape)
    _copy_weights(looped, unrolled)
    np.testing.assert_allclose(unrolled(x), looped(x), atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_bidirectional_halves_are_forward_and_backward_layers(use_gate):
    x = _inputs((2, 6, 3))
    bidirectional = keras.layers.Bidirectional(FourGateLSTM(4, use_gate=use_gate))
    output = bidirectional(x)
    assert output.shape == (2, 8)
    forward = FourGateLSTM(4, use_gate=use_gate)
    backward = FourGateLSTM(4, use_gate=use_gate, go_backwards=True)
    forward.build(x.shape)
    backward.build(x.shape)
    forward.set_weights(bidirectional.forward_layer.get_weights())
    backward.set_weights(bidirectional.backward_layer.get_weights())
    np.testing.assert_allclose(output[:, :4], forward(x), atol=1e-6)
    np.testing.assert_allclose(output[:, 4:], backward(x), atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_stacked_rnn_cells_equal_stacked_layers(use_gate):
    x = _inputs((2, 7, 3))
    first = FourGateLSTM(5, use_gate=use_gate, return_sequences=True)
    second = FourGateLSTM(4, use_gate=use_gate)
    stacked_layers = keras.Sequential([keras.Input((7, 3)), first, second])
    stacked_cells = keras.layers.RNN(
        keras.layers.StackedRNNCells(
            [
                FourGateLSTMCell(5, use_gate=use_gate),
                FourGateLSTMCell(4, use_gate=use_gate),
            ]
        )
    )
    stacked_cells.build(x.shape)
    stacked_cells.set_weights(first.get_weights() + second.get_weights())
    np.testing.assert_allclose(stacked_cells(x), stacked_layers(x), atol=1e-6)


def test_functional_and_sequential_models_agree():
    x = _inputs((4, 8, 3))
    inputs = keras.Input((8, 3))
    hidden = FourGateLSTM(6, return_sequences=True)(inputs)
    outputs = keras.layers.Dense(1)(FourGateLSTM(5)(hidden))
    functional = keras.Model(inputs, outputs)
    sequential = keras.Sequential(
        [
            keras.Input((8, 3)),
            FourGateLSTM(6, return_sequences=True),
            FourGateLSTM(5),
            keras.layers.Dense(1),
        ]
    )
    _copy_weights(functional, sequential)
    np.testing.assert_allclose(
        functional.predict(x, verbose=0), sequential(x), atol=1e-6
    )


def _fit_weights(jit_compile, use_gate):
    keras.utils.set_random_seed(42)
    model = keras.Sequential(
        [
            keras.Input((12, 3)),
            FourGateLSTM(8, use_gate=use_gate),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=jit_compile)
    x = _inputs((32, 12, 3), seed=1)
    y = x[:, :3, 0].sum(axis=1, keepdims=True)
    history = model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    return model.get_weights(), history.history["loss"]


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_fit_with_jit_compile_equals_fit_without(use_gate):
    jit_weights, jit_loss = _fit_weights(True, use_gate)
    eager_weights, eager_loss = _fit_weights(False, use_gate)
    assert jit_loss[-1] < jit_loss[0]
    np.testing.assert_allclose(jit_loss, eager_loss, rtol=1e-4)
    for jit_w, eager_w in zip(jit_weights, eager_weights):
        np.testing.assert_allclose(jit_w, eager_w, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("use_gate", USE_GATES)
def test_mixed_precision_keeps_float32_weights_and_sane_state(policy, use_gate):
    x = _inputs((4, 200, 3))
    full = FourGateLSTM(8, use_gate=use_gate, return_state=True)
    full_out, _, full_ltm = full(x)

    keras.config.set_dtype_policy(policy)
    mixed = FourGateLSTM(8, use_gate=use_gate, return_state=True)
    mixed.build(x.shape)
    mixed.set_weights(full.get_weights())
    out, stm, ltm = mixed(x)

    compute = policy.split("_")[1]
    assert all(w.dtype == "float32" for w in mixed.weights)
    assert keras.backend.standardize_dtype(out.dtype) == compute
    for tensor in (out, stm, ltm):
        assert np.all(
            np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float32")))
        )
    tolerance = 0.02 if compute == "float16" else 0.1
    np.testing.assert_allclose(np.float32(out), full_out, atol=tolerance)
    np.testing.assert_allclose(np.float32(ltm), full_ltm, atol=5 * tolerance)


def test_mixed_precision_model_trains():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = keras.Sequential(
        [keras.Input((10, 3)), FourGateLSTM(8), keras.layers.Dense(1, dtype="float32")]
    )
    model.compile(keras.optimizers.Adam(0.02), "mse")
    x = _inputs((64, 10, 3))
    y = x[:, 0, :1]
    history = model.fit(x, y, epochs=5, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
def test_dropout_only_when_training_and_reproducible_with_seed(use_gate, argument):
    x = _inputs((4, 6, 5))
    plain = FourGateLSTM(8, use_gate=use_gate)
    first = FourGateLSTM(8, use_gate=use_gate, seed=11, **{argument: 0.5})
    second = FourGateLSTM(8, use_gate=use_gate, seed=11, **{argument: 0.5})
    for layer in (plain, first, second):
        layer.build(x.shape)
    _copy_weights(plain, first, second)

    # Two layers with the same seed draw the same masks, call after call.
    for _ in range(2):
        dropped = first(x, training=True)
        np.testing.assert_allclose(second(x, training=True), dropped, atol=1e-6)
        assert np.abs(dropped - plain(x)).max() > 1e-3
    np.testing.assert_allclose(first(x, training=False), plain(x), atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_dropout_matches_rnn_of_cell(use_gate):
    x = _inputs((4, 6, 5))
    kwargs = dict(use_gate=use_gate, dropout=0.3, recurrent_dropout=0.3, seed=5)
    ours = FourGateLSTM(8, **kwargs)
    by_hand = keras.layers.RNN(FourGateLSTMCell(8, **kwargs))
    ours.build(x.shape)
    by_hand.build(x.shape)
    _copy_weights(ours, by_hand)
    np.testing.assert_allclose(
        ours(x, training=True), by_hand(x, training=True), atol=1e-6
    )


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_fit_learns_to_recall_the_first_step_over_60_steps(use_gate):
    # Channel 0 carries a bit at the first step only; channel 1 is noise. The
    # target is that bit, 60 steps later: a constant predictor's best
    # cross-entropy is ln 2 = 0.693. The forget gate starts at b_f = 3
    # (f = 0.95): from the default b_f = 1 (f = 0.73) the gradient through 60
    # steps is ~1e-8 and neither this cell nor keras.layers.LSTM learns the
    # task in a few hundred steps.
    rng = np.random.default_rng(0)
    n, time = 512, 60
    bits = rng.integers(0, 2, n)
    x = np.zeros((n, time, 2), "float32")
    x[:, 0, 0] = 2.0 * bits - 1.0
    x[:, :, 1] = rng.normal(size=(n, time))
    layer = FourGateLSTM(16, use_gate=use_gate)
    model = keras.Sequential(
        [keras.Input((time, 2)), layer, keras.layers.Dense(1, activation="sigmoid")]
    )
    weights = layer.gate_weights()
    weights["b_f"] = np.full(16, 3.0)
    layer.set_gate_weights(weights)
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", jit_compile=True)
    history = model.fit(x, bits, epochs=4, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.1, history.history["loss"]


def test_rank_two_input_is_a_clear_error():
    with pytest.raises(
        ValueError,
        match=r"inputs must have rank 3, \(batch, time, features\), got rank 2",
    ):
        FourGateLSTM(4)(np.zeros((2, 3), "float32"))


def test_wrong_feature_size_is_a_clear_error():
    layer = FourGateLSTM(4)
    layer(np.zeros((2, 5, 3), "float32"))
    with pytest.raises(
        ValueError,
        match=r"inputs must have 3 features \(the size it was built with\), got shape \(2, 5, 8\)",
    ):
        layer(np.zeros((2, 5, 8), "float32"))


def test_no_time_steps_is_a_clear_error():
    # keras.layers.LSTM fails here deep in TensorFlow (a StridedSlice).
    layer = FourGateLSTM(4)
    layer(np.zeros((2, 5, 3), "float32"))
    message = r"inputs must have at least one time step, got shape \(2, 0, 3\)"
    with pytest.raises(ValueError, match=message):
        layer(np.zeros((2, 0, 3), "float32"))
    model = keras.Sequential([keras.Input((None, 3)), layer])
    with pytest.raises(ValueError, match="inputs must have at least one time step"):
        model.predict(np.zeros((2, 0, 3), "float32"), verbose=0)


def test_wrong_feature_size_in_rnn_of_cell_is_a_clear_error():
    layer = keras.layers.RNN(FourGateLSTMCell(4))
    layer(np.zeros((2, 5, 3), "float32"))
    with pytest.raises(ValueError, match=r"inputs must have 3 features"):
        layer(np.zeros((2, 5, 8), "float32"))


@pytest.mark.parametrize(
    "mask_shape",
    [(5,), (2, 4), (3, 5), (2, 5, 3)],
    ids=["rank-1", "short", "wrong-batch", "rank-3"],
)
def test_wrong_mask_shape_is_a_clear_error(mask_shape):
    layer = FourGateLSTM(4, return_sequences=True)
    x = np.zeros((2, 5, 3), "float32")
    layer(x)
    with pytest.raises(
        ValueError,
        match=r"mask must have shape \(batch, time\) = \(2, 5\) for inputs of "
        rf"shape \(2, 5, 3\), got shape \({mask_shape[0]},",
    ):
        layer(x, mask=np.ones(mask_shape, bool))


@pytest.mark.parametrize(
    "shapes, message",
    [
        (
            [(2, 4)],
            r"\[STM_0, LTM_0\] of two arrays, each \(batch, units\) = "
            r"\(2, 4\), got 1 array\b",
        ),
        (
            [(2, 5), (2, 5)],
            r"STM_0 must have shape \(batch, units\) = \(2, 4\), "
            r"got shape \(2, 5\)",
        ),
        ([(2, 4), (2, 1)], r"LTM_0 must have shape .* got shape \(2, 1\)"),
        ([(1, 4), (1, 4)], r"STM_0 must have shape .* got shape \(1, 4\)"),
        ([(4,), (4,)], r"STM_0 must have shape .* got shape \(4,\)"),
    ],
)
def test_wrong_initial_state_is_a_clear_error(shapes, message):
    layer = FourGateLSTM(4)
    x = np.zeros((2, 5, 3), "float32")
    with pytest.raises(ValueError, match=message):
        layer(x, initial_state=[np.zeros(s, "float32") for s in shapes])


def test_initial_state_with_unknown_batch_in_a_functional_model():
    inputs = keras.Input((5, 3))
    states = [keras.Input((4,)), keras.Input((4,))]
    outputs = FourGateLSTM(4)(inputs, initial_state=states)
    model = keras.Model([inputs, *states], outputs)
    x = _inputs((2, 5, 3))
    zeros = np.zeros((2, 4), "float32")
    np.testing.assert_allclose(
        model.predict([x, zeros, zeros], verbose=0),
        keras.ops.convert_to_numpy(model.layers[-1](x)),
        atol=1e-6,
    )


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_integer_inputs_run_as_floats(use_gate):
    # `keras.layers.LSTM` takes integer events; the fused loop must too.
    layer = FourGateLSTM(4, use_gate=use_gate, return_sequences=True)
    events = np.random.default_rng(0).integers(0, 5, (2, 5, 3))
    expected = keras.ops.convert_to_numpy(layer(events.astype("float32")))
    got = layer(events)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-6)
