"""Tests of `trace_gates`: every gate at every step, as the layer computes."""

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import FourGateLSTMCell
from keras_lstm_gates import trace_gates
from tests import reference

USE_GATES = ["projected", "classic"]
GATES = ["N", "i", "f", "LTM", "U", "V", "STM"]


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize("wrapper", ["FourGateLSTM", "RNN(cell)"])
def test_every_gate_matches_numpy_reference(use_gate, wrapper):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 20, 4)).astype("float32")
    if wrapper == "FourGateLSTM":
        layer = FourGateLSTM(5, use_gate=use_gate)
    else:
        layer = keras.layers.RNN(FourGateLSTMCell(5, use_gate=use_gate))
    layer.build(x.shape)
    weights = reference.random_gate_weights(5, 4, use_gate, rng)
    layer.cell.set_gate_weights(weights)
    stm0, ltm0 = rng.normal(size=(2, 3, 5)).astype("float32")

    trace = trace_gates(layer, x, initial_state=[stm0, ltm0])

    expected = reference.four_gate_lstm(x, weights, use_gate, stm0, ltm0)
    assert sorted(trace) == sorted(GATES)
    for gate in GATES:
        assert trace[gate].shape == (3, 20, 5)
        np.testing.assert_allclose(trace[gate], expected[gate], atol=1e-5, err_msg=gate)


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_trace_equals_layer_outputs(use_gate):
    x = np.random.default_rng(1).normal(size=(2, 9, 3)).astype("float32")
    layer = FourGateLSTM(4, use_gate=use_gate, return_sequences=True, return_state=True)
    sequence, _, ltm = layer(x)
    trace = trace_gates(layer, x)
    np.testing.assert_allclose(trace["STM"], sequence, atol=1e-6)
    np.testing.assert_allclose(trace["LTM"][:, -1], ltm, atol=1e-6)


def test_trace_follows_mask_and_go_backwards():
    x = np.random.default_rng(2).normal(size=(2, 8, 3)).astype("float32")
    mask = np.ones((2, 8), bool)
    mask[1, 5:] = False
    layer = FourGateLSTM(4, go_backwards=True, return_sequences=True)
    sequence = layer(x, mask=mask)
    trace = trace_gates(layer, x, mask=mask)
    np.testing.assert_allclose(trace["STM"], sequence, atol=1e-6)


@pytest.mark.parametrize("use_gate", USE_GATES)
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_trace_of_steps_masked_before_the_first_one_read(use_gate, go_backwards):
    # Until a sequence's first unmasked step its state is the initial one;
    # the trace's LTM was 0 there. (STM is the layer's output: 0 on
    # TensorFlow and torch, STM_0 on JAX, as keras.layers.LSTM's;
    # tests/test_backends.py.)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    stm0, ltm0 = rng.normal(size=(2, 2, 4)).astype("float32")
    mask = np.ones((2, 6), bool)
    mask[0, :2] = False  # the layer reads these first
    mask[1, -3:] = False  # and these, backwards
    layer = FourGateLSTM(
        4,
        use_gate=use_gate,
        go_backwards=go_backwards,
        return_sequences=True,
        return_state=True,
    )
    sequence, _, ltm = layer(x, initial_state=[stm0, ltm0], mask=mask)
    trace = trace_gates(layer, x, initial_state=[stm0, ltm0], mask=mask)
    order = mask[:, ::-1] if go_backwards else mask
    leading = np.cumsum(order, axis=1) == 0
    assert leading.any()
    np.testing.assert_allclose(trace["STM"], sequence, atol=1e-6)
    np.testing.assert_allclose(trace["LTM"][:, -1], ltm, atol=1e-6)
    for b, t in zip(*np.nonzero(leading)):
        np.testing.assert_allclose(trace["LTM"][b, t], ltm0[b], atol=1e-6)


def test_trace_of_stateful_layer_starts_from_its_states():
    x = np.random.default_rng(3).normal(size=(2, 6, 3)).astype("float32")
    layer = FourGateLSTM(4, stateful=True, return_sequences=True)
    layer(x)
    trace = trace_gates(layer, x)
    np.testing.assert_allclose(trace["STM"], layer(x), atol=1e-6)


def test_trace_of_unbuilt_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="is not built"):
        trace_gates(FourGateLSTM(4), np.zeros((1, 3, 2), "float32"))


@pytest.mark.parametrize(
    "layer", [keras.layers.LSTM(4), keras.layers.Dense(4), "not a layer"]
)
def test_trace_of_a_layer_that_is_not_ours_is_a_clear_error(layer):
    with pytest.raises(TypeError, match="must be a FourGateLSTM or a keras.layers.RNN"):
        trace_gates(layer, np.zeros((1, 3, 2), "float32"))


def test_trace_of_a_model_names_the_layer_to_pass():
    model = keras.Sequential([keras.Input((3, 2)), FourGateLSTM(4, name="lstm")])
    with pytest.raises(TypeError, match=r"got Sequential; pass one of its layers"):
        trace_gates(model, np.zeros((1, 3, 2), "float32"))
    assert trace_gates(model.get_layer("lstm"), np.zeros((1, 3, 2), "float32"))


def test_trace_with_wrong_feature_size_is_a_clear_error():
    layer = FourGateLSTM(4)
    layer(np.zeros((1, 3, 2), "float32"))
    with pytest.raises(ValueError, match="inputs must have 2 features"):
        trace_gates(layer, np.zeros((1, 3, 5), "float32"))


def test_trace_with_wrong_mask_or_initial_state_is_a_clear_error():
    layer = FourGateLSTM(4)
    x = np.zeros((3, 6, 2), "float32")
    layer(x)
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, time\)"):
        trace_gates(layer, x, mask=np.ones((3, 5), bool))
    zeros = np.zeros((3, 4), "float32")
    with pytest.raises(ValueError, match=r"LTM_0 must have shape .* = \(3, 4\)"):
        trace_gates(layer, x, initial_state=[zeros, np.zeros((3, 1), "float32")])
    with pytest.raises(ValueError, match=r"\[STM_0, LTM_0\] of two arrays"):
        trace_gates(layer, x, initial_state=[zeros])


def test_trace_of_bidirectional_points_to_its_halves():
    layer = keras.layers.Bidirectional(FourGateLSTM(4, return_sequences=True))
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    both = keras.ops.convert_to_numpy(layer(x))
    with pytest.raises(TypeError, match="layer.forward_layer and layer.backward_layer"):
        trace_gates(layer, x)
    # The halves the message names give the wrapper's two outputs.
    forward = trace_gates(layer.forward_layer, x)["STM"]
    backward = trace_gates(layer.backward_layer, x)["STM"][:, ::-1]
    np.testing.assert_allclose(np.concatenate([forward, backward], -1), both, atol=1e-6)


def test_trace_of_stateful_layer_needs_its_batch_size():
    layer = FourGateLSTM(5, stateful=True)
    x = np.random.default_rng(2).random((3, 6, 4)).astype("float32")
    layer(x)
    # One sequence against three stored states was broadcast to three traces.
    for batch in (1, 2):
        with pytest.raises(ValueError, match="stateful with states of batch size 3"):
            trace_gates(layer, x[:batch])
    assert trace_gates(layer, x)["STM"].shape == (3, 6, 5)
