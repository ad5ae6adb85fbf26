"""Training `FourGateLSTM` across devices with standard distribution APIs.

Each strategy trains the same model from the same weights for one epoch of the
same global batches, in subprocesses (devices are fixed when TensorFlow or JAX
starts; multi-worker training needs one process per worker, here on localhost
ports). The weights must equal those of the same epoch on one device, trained
in this process.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_lstm_gates
from keras_lstm_gates import FourGateLSTM
from tests import _distribute_worker

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute strategies and the reference need the TensorFlow backend",
)

WORKER = os.path.abspath(_distribute_worker.__file__)
PACKAGE_ROOT = os.path.dirname(
    os.path.dirname(os.path.abspath(keras_lstm_gates.__file__))
)
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    """`inputs.npz`: data whose target needs memory, and initial weights."""
    work_dir = tmp_path_factory.mktemp("distribute")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 10, 3)).astype("float32")
    inputs = {"x": x, "y": x[:, :3, :1].sum(axis=1)}
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), FourGateLSTM(8), keras.layers.Dense(1)]
    )
    inputs.update({f"weights.{k}": w for k, w in enumerate(model.get_weights())})
    np.savez(work_dir / "inputs.npz", **inputs)
    return work_dir


@pytest.fixture(scope="module")
def one_device_weights(work_dir):
    """The weights after the same epoch on this process's one device."""
    with np.load(work_dir / "inputs.npz") as inputs:
        inputs = dict(inputs)
    weights = _distribute_worker.fit_one_epoch(inputs).get_weights()
    for k, weight in enumerate(weights):
        assert not np.allclose(weight, inputs[f"weights.{k}"], atol=1e-3), k
    return weights


def _env(**variables):
    python_path = os.environ.get("PYTHONPATH", "")
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (PACKAGE_ROOT, python_path) if p),
        **variables,
    )


def _start(mode, work_dir, env):
    return subprocess.Popen(
        [sys.executable, WORKER, mode, str(work_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes):
    """Waits for every process, killing all of them after `TIMEOUT_S`."""
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT_S)
            assert process.returncode == 0, output[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def _results(work_dir, name):
    with open(work_dir / f"{name}.json") as f:
        info = json.load(f)
    with np.load(work_dir / f"{name}.npz") as arrays:
        weights = [arrays[f"weights.{k}"] for k in range(len(arrays.files))]
    return info, weights


def _assert_same_weights(weights, expected, atol=1e-5):
    assert len(weights) == len(expected)
    for k, (weight, reference) in enumerate(zip(weights, expected)):
        np.testing.assert_allclose(weight, reference, atol=atol, err_msg=f"weight {k}")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_mirrored_strategy_on_two_devices_equals_one_device(
    work_dir, one_device_weights
):
    _finish([_start("mirrored", work_dir, _env())])
    info, weights = _results(work_dir, "mirrored")
    assert info["replicas"] == 2
    assert [d[-5:] for d in info["kernel_devices"]] == ["CPU:0", "CPU:1"]
    _assert_same_weights(weights, one_device_weights)


def test_multiworker_workers_end_with_the_same_weights(work_dir, one_device_weights):
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = _env(TF_CONFIG=json.dumps(config))
        processes.append(_start("multiworker", work_dir, env))
    _finish(processes)
    (info0, weights0), (info1, weights1) = (
        _results(work_dir, f"multiworker_{index}") for index in range(2)
    )
    assert info0["replicas"] == info1["replicas"] == 2
    _assert_same_weights(weights1, weights0, atol=1e-6)
    _assert_same_weights(weights0, one_device_weights)


def test_jax_data_parallel_on_two_devices_equals_one_device(
    work_dir, one_device_weights
):
    env = _env(
        KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    _finish([_start("dataparallel", work_dir, env)])
    info, weights = _results(work_dir, "dataparallel")
    assert info["backend"] == "jax"
    assert info["devices"] == ["cpu:0", "cpu:1"]
    assert info["kernel_devices"] == ["cpu:0", "cpu:1"]
    _assert_same_weights(weights, one_device_weights)
