"""The core checks of the four-gate LSTM under Keras's JAX and torch backends.

Keras picks its backend once, at import, so each backend runs in one
subprocess (`tests/_backend_worker.py` with `KERAS_BACKEND=jax` or `=torch`)
for the whole module; each test asserts on one part of what it computed. The
references (NumPy, `keras.layers.LSTM`, the TensorFlow backend) are computed
here.
"""

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import keras_lstm_gates
from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import FourGateLSTMCell
from tests import reference

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="compares JAX and torch with TensorFlow, the backend of this process",
)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_backend_worker.py")
PACKAGE_ROOT = os.path.dirname(
    os.path.dirname(os.path.abspath(keras_lstm_gates.__file__))
)
USE_GATES = ["projected", "classic"]
GATES = ["N", "i", "f", "LTM", "U", "V", "STM"]
BACKENDS = ["jax", "torch"]


def _inputs(rng):
    """The weights and data the worker runs on, as float32 arrays."""
    batch, time, features, units = 3, 20, 4, 5
    inputs = {"x": rng.normal(size=(batch, time, features))}
    for use_gate in USE_GATES:
        weights = reference.random_gate_weights(units, features, use_gate, rng)
        inputs.update({f"{use_gate}.{k}": v for k, v in weights.items()})
    inputs["lstm.kernel"] = rng.normal(0, 0.5, (features, 4 * units))
    inputs["lstm.recurrent_kernel"] = rng.normal(0, 0.5, (units, 4 * units))
    inputs["lstm.bias"] = rng.normal(0, 0.5, (4 * units,))

    lengths = np.array([20, 13, 7, 1])
    masked = rng.normal(size=(len(lengths), 20, features))
    masked[np.arange(20)[None, :] >= lengths[:, None]] = 0.0
    inputs.update(masked_x=masked, masked_lengths=lengths)

    # The fit task: the sum of the first feature over the first four of 12
    # steps, which needs memory; the initial weights are made here.
    fit_x = rng.normal(size=(64, 12, 3))
    inputs.update(fit_x=fit_x, fit_y=fit_x[:, :4, :1].sum(axis=1))
    fit_model = keras.Sequential(
        [keras.Input(fit_x.shape[1:]), FourGateLSTM(8), keras.layers.Dense(1)]
    )
    for k, weight in enumerate(fit_model.get_weights()):
        inputs[f"fit_weights.{k}"] = weight
    inputs["save_x"] = rng.normal(size=(5, 9, features))
    return {
        k: v.astype("int64" if k == "masked_lengths" else "float32")
        for k, v in inputs.items()
    }


def _prefixed(arrays, prefix):
    """The arrays named `prefix.name`, by name."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}


def _tensorflow_model(work_dir, x):
    """Saves a model made under TensorFlow; returns its predictions."""
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            FourGateLSTM(6, return_sequences=True),
            keras.layers.RNN(FourGateLSTMCell(4, use_gate="classic")),
            keras.layers.Dense(2),
        ]
    )
    model.save(os.path.join(work_dir, "tf_model.keras"))
    return model.predict(x, verbose=0)


def _tensorflow_fit(inputs):
    """One epoch of the worker's fit under TensorFlow: loss and weights."""
    x, y = inputs["fit_x"], inputs["fit_y"]
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), FourGateLSTM(8), keras.layers.Dense(1)]
    )
    weights = _prefixed(inputs, "fit_weights")
    model.set_weights([weights[str(k)] for k in range(len(weights))])
    model.compile(keras.optimizers.SGD(0.05), "mse")  # as the worker's
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][0], model.get_weights()


@pytest.fixture(scope="module")
def tensorflow_reference(tmp_path_factory):
    """The worker's inputs and what TensorFlow makes of them, made once."""
    work_dir = tmp_path_factory.mktemp("tensorflow")
    inputs = _inputs(np.random.default_rng(6))
    np.savez(work_dir / "inputs.npz", **inputs)
    return SimpleNamespace(
        inputs=inputs,
        work_dir=work_dir,
        tf_predictions=_tensorflow_model(work_dir, inputs["save_x"]),
        tf_fit=_tensorflow_fit(inputs),
    )


@pytest.fixture(scope="module", params=BACKENDS)
def backend_run(request, tensorflow_reference, tmp_path_factory):
    """Runs the worker once under a backend; returns its inputs and outputs."""
    backend = request.param
    work_dir = tmp_path_factory.mktemp(f"{backend}_backend")
    for name in ("inputs.npz", "tf_model.keras"):
        shutil.copy(tensorflow_reference.work_dir / name, work_dir)
    python_path = os.environ.get("PYTHONPATH", "")
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=os.pathsep.join(p for p in (PACKAGE_ROOT, python_path) if p),
    )
    process = subprocess.run(
        [sys.executable, WORKER, str(work_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    with open(work_dir / "info.json") as f:
        info = json.load(f)
    with np.load(work_dir / "outputs.npz") as outputs:
        outputs = dict(outputs)
    return SimpleNamespace(
        backend=backend,
        inputs=tensorflow_reference.inputs,
        info=info,
        outputs=outputs,
        work_dir=work_dir,
        tf_predictions=tensorflow_reference.tf_predictions,
        tf_fit=tensorflow_reference.tf_fit,
    )


def _check(run, name):
    """The arrays one check wrote, or its traceback as the failure."""
    error = run.info["errors"].get(name)
    assert error is None, f"check '{name}' raised under {run.backend}:\n{error}"
    prefix = name + "."
    return {k[len(prefix) :]: v for k, v in run.outputs.items() if k.startswith(prefix)}


def test_worker_ran_on_its_backend(backend_run):
    assert backend_run.info["backend"] == backend_run.backend
    _check(backend_run, "equations")
    for use_gate in USE_GATES:
        variable_type = backend_run.info[f"{use_gate}.variable_type"]
        assert variable_type.startswith(backend_run.backend)


def test_package_needs_no_tensorflow_or_litert(backend_run):
    # The worker refused TensorFlow, tensorflow-text and LiteRT while it
    # imported the package, ran, traced and trained models (and recorded any
    # try), then saved and loaded models without them.
    assert backend_run.info["refused_imports"] == []
    assert backend_run.info["imported"] == []
    _check(backend_run, "fit")
    _check(backend_run, "saving")


@pytest.mark.parametrize("use_gate", USE_GATES)
def test_every_step_matches_numpy_reference(backend_run, use_gate):
    outputs = _check(backend_run, "equations")
    inputs = backend_run.inputs
    expected = reference.four_gate_lstm(
        inputs["x"], _prefixed(inputs, use_gate), use_gate
    )
    np.testing.assert_allclose(
        outputs[f"{use_gate}.layer_STM"], expected["STM"], atol=1e-5
    )
    for gate in GATES:
        np.testing.assert_allclose(
            outputs[f"{use_gate}.trace_{gate}"], expected[gate], atol=1e-5, err_msg=gate
        )


def test_classic_matches_keras_lstm(backend_run):
    outputs = _check(backend_run, "lstm_parity")
    assert np.abs(outputs["keras_lstm"]).max() > 0.1
    np.testing.assert_allclose(outputs["four_gate"], outputs["keras_lstm"], atol=1e-5)


def test_padded_sequence_equals_unpadded(backend_run):
    outputs = _check(backend_run, "masking")
    inputs = backend_run.inputs
    weights = _prefixed(inputs, "projected")
    expected = np.concatenate(
        [
            reference.four_gate_lstm(x[None, :length], weights, "projected")["STM"][
                :, -1
            ]
            for x, length in zip(inputs["masked_x"], inputs["masked_lengths"])
        ]
    )
    np.testing.assert_allclose(outputs["unpadded"], expected, atol=1e-5)
    np.testing.assert_allclose(outputs["padded"], expected, atol=1e-5)
    np.testing.assert_allclose(outputs["trace_STM"][:, -1], expected, atol=1e-5)
    # From an initial state, steps masked before the first one read: the
    # output there is keras.layers.LSTM's, STM_0 on JAX's loop and zeros on
    # torch's (as on TensorFlow's); LTM is LTM_0.
    leading = np.cumsum(outputs["lead_mask"], axis=1) == 0
    assert leading.any()
    np.testing.assert_allclose(
        outputs["lead_trace_STM"], outputs["lead_sequence"], atol=1e-6
    )
    stm_0 = {"jax": 0.5, "torch": 0.0}[backend_run.backend]
    np.testing.assert_allclose(outputs["lead_sequence"][leading], stm_0)
    np.testing.assert_allclose(outputs["lead_keras_lstm"][leading], stm_0)
    np.testing.assert_allclose(outputs["lead_trace_LTM"][leading], 0.7)
    np.testing.assert_allclose(
        outputs["lead_trace_LTM"][:, -1], outputs["lead_ltm"], atol=1e-6
    )


def test_dropout_only_while_training(backend_run):
    outputs = _check(backend_run, "dropout")
    assert np.all(np.isfinite(backend_run.info["dropout.loss"]))
    np.testing.assert_array_equal(outputs["inference_1"], outputs["inference_2"])
    assert not np.allclose(outputs["training_1"], outputs["inference_1"], atol=1e-4)
    assert not np.allclose(outputs["training_1"], outputs["training_2"], atol=1e-4)


def test_fit_equals_tensorflow_fit(backend_run):
    outputs = _check(backend_run, "fit")
    # XLA on JAX; eager on torch, as Keras's jit_compile="auto" runs it.
    assert backend_run.info["fit.model_jit"] == (backend_run.backend == "jax")
    tf_loss, tf_weights = backend_run.tf_fit
    np.testing.assert_allclose(
        backend_run.info["fit.first_epoch_loss"], tf_loss, rtol=1e-5
    )
    initial = _prefixed(backend_run.inputs, "fit_weights")
    for k, tf_weight in enumerate(tf_weights):
        assert not np.allclose(tf_weight, initial[str(k)], atol=1e-3), k
        np.testing.assert_allclose(
            outputs[f"weight{k}"], tf_weight, atol=1e-5, err_msg=f"weight {k}"
        )


def test_fit_learns_a_task_that_needs_memory(backend_run):
    _check(backend_run, "fit")
    losses = backend_run.info["fit.learning_loss"]
    constant_predictor_loss = backend_run.inputs["fit_y"].var()
    assert losses[-1] < 0.3 * constant_predictor_loss, losses


def test_model_saved_in_tensorflow_loads(backend_run):
    outputs = _check(backend_run, "saving")
    np.testing.assert_allclose(
        outputs["tf_model_predictions"], backend_run.tf_predictions, atol=1e-6
    )


def test_model_saved_in_backend_loads_in_tensorflow(backend_run):
    outputs = _check(backend_run, "saving")
    path = backend_run.work_dir / f"{backend_run.backend}_model.keras"
    predictions = keras.models.load_model(path).predict(
        backend_run.inputs["save_x"], verbose=0
    )
    assert not np.allclose(predictions, backend_run.tf_predictions, atol=1e-3)
    np.testing.assert_allclose(predictions, outputs["model_predictions"], atol=1e-6)


@pytest.mark.parametrize("backend_run", ["jax"], indirect=True)
def test_keras_model_export_under_jax_serves_in_tensorflow(backend_run):
    # `model.export` works under JAX too (Keras converts the model with
    # jax2tf; under torch it needs torch_xla); the package's own export
    # functions need TensorFlow's backend.
    import tensorflow as tf

    outputs = _check(backend_run, "keras_export")
    loaded = tf.saved_model.load(str(backend_run.work_dir / "jax_export"))
    x = backend_run.inputs["save_x"]
    for inputs, key in ((x, "predictions"), (x[:2, :3], "predictions_short")):
        served = loaded.serve(tf.constant(inputs)).numpy()
        np.testing.assert_allclose(served, outputs[key], atol=1e-6)
