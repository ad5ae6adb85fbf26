"""Shared fixtures: quiet TensorFlow, fixed seeds, the global policy restored."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
# On a GPU (Ampere and newer) TensorFlow and JAX multiply float32 matrices in
# TF32 by default, ~1e-3 relative error; the tests compare float32 math at
# ~1e-5, so they ask for full float32 matmuls. Measured on an H100 under JAX:
# every gate within 3.4e-4 of the NumPy reference with TF32, 3e-7 without.
# The JAX setting reaches the JAX workers the tests start (they inherit the
# environment). No effect on a CPU.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(False)

# Scripts the tests run in subprocesses, not modules to import here (the
# backend worker refuses TensorFlow from the moment it is imported).
collect_ignore = ["_backend_worker.py", "_distribute_worker.py"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(1234)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.fixture
def routes(caplog):
    """The fused loops' log of this test: `routes()` lists the `Route` of
    every call traced so far, `routes.facts()` the `Facts` it was chosen
    from, `routes.traced()` the layouts of the forward loops actually
    traced, in order (see `keras_lstm_gates.loops`)."""
    from keras_lstm_gates import loops

    caplog.set_level(logging.DEBUG, logger=loops.LOGGER_NAME)

    def logged():
        return [r.route for r in caplog.records if hasattr(r, "route")]

    def facts():
        return [r.facts for r in caplog.records if hasattr(r, "facts")]

    def traced():
        return [r.layout for r in caplog.records if hasattr(r, "layout")]

    def messages():
        return [r.getMessage() for r in caplog.records if r.name == loops.LOGGER_NAME]

    logged.facts = facts
    logged.traced = traced
    logged.messages = messages
    logged.clear = caplog.clear
    return logged
