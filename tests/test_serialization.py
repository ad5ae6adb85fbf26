"""Tests of serialization: configs, `.keras` files, a fresh process."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import FourGateLSTMCell
from tests.conftest import REPO_ROOT

NON_DEFAULT = dict(
    use_gate="classic",
    activation="relu",
    recurrent_activation="hard_sigmoid",
    use_bias=False,
    kernel_initializer="he_normal",
    recurrent_initializer="glorot_normal",
    use_gate_initializer="zeros",
    bias_initializer="ones",
    unit_forget_bias=False,
    kernel_regularizer="l2",
    recurrent_regularizer="l1",
    bias_regularizer=keras.regularizers.L1L2(0.01, 0.02),
    kernel_constraint="non_neg",
    recurrent_constraint="unit_norm",
    bias_constraint="max_norm",
    dropout=0.1,
    recurrent_dropout=0.2,
    seed=7,
)


def _same_config(first, second):
    return json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def _check_values(config, lstm_config):
    """Each argument's serialized value is what `keras.layers.LSTM` (or
    `LSTMCell`) writes for the same argument: a round trip alone would not
    see a value written under the wrong key."""
    for key in _lstm_arguments():
        assert config[key] == lstm_config[key], key
    assert config["use_gate"] == "classic"
    zeros = keras.initializers.serialize(keras.initializers.get("zeros"))
    assert config["use_gate_initializer"] == zeros


def _lstm_arguments():
    return {k: v for k, v in NON_DEFAULT.items() if not k.startswith("use_gate")}


def test_cell_config_round_trip_keeps_every_argument():
    cell = FourGateLSTMCell(5, **NON_DEFAULT)
    config = cell.get_config()
    _check_values(config, keras.layers.LSTMCell(5, **_lstm_arguments()).get_config())
    clone = FourGateLSTMCell.from_config(config)
    assert _same_config(clone.get_config(), config)
    for key in ("dropout", "recurrent_dropout", "seed", "use_bias", "unit_forget_bias"):
        assert getattr(clone, key) == NON_DEFAULT[key], key


def test_layer_config_round_trip_keeps_every_argument():
    layer = FourGateLSTM(
        5,
        return_sequences=True,
        return_state=True,
        go_backwards=True,
        stateful=True,
        unroll=True,
        activity_regularizer="l2",
        **NON_DEFAULT,
    )
    config = layer.get_config()
    assert "cell" not in config
    _check_values(config, keras.layers.LSTM(5, **_lstm_arguments()).get_config())
    clone = FourGateLSTM.from_config(config)
    assert _same_config(clone.get_config(), config)
    for key in ("dropout", "recurrent_dropout", "seed", "use_bias", "unit_forget_bias"):
        assert getattr(clone, key) == NON_DEFAULT[key], key
    assert clone.use_gate == "classic" and clone.go_backwards and clone.seed == 7


def test_rnn_of_cell_config_round_trip():
    layer = keras.layers.RNN(FourGateLSTMCell(3, use_gate="classic"))
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone.cell, FourGateLSTMCell)
    assert clone.cell.use_gate == "classic"


def _model(use_gate):
    inputs = keras.Input((6, 3))
    hidden = FourGateLSTM(5, use_gate=use_gate, return_sequences=True)(inputs)
    hidden = keras.layers.RNN(FourGateLSTMCell(4, use_gate=use_gate))(hidden)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


@pytest.mark.parametrize("use_gate", ["projected", "classic"])
def test_saved_model_file_loads_with_identical_predictions(tmp_path, use_gate):
    model = _model(use_gate)
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_saved_model_file_loads_in_a_fresh_process_without_custom_objects(tmp_path):
    model = _model("projected")
    x = np.random.default_rng(1).normal(size=(4, 6, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras, keras_lstm_gates\n"
        "model = keras.models.load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        check=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "y.npy"), model.predict(x, verbose=0)
    )
