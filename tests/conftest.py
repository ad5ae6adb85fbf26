"""Shared fixtures: quiet TensorFlow, fixed seeds, the global policy restored."""

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

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(1234)
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.fixture
def inference_loops(monkeypatch):
    """Counts the inference loops `_fused` traces: transposed, batch-major."""
    from keras_lstm_gates import _fused

    calls = {"transposed": 0, "batch-major": 0}
    forward, batch_major = _fused._forward, _fused._inference_loop

    def spy_forward(*args, **kwargs):
        calls["transposed"] += not kwargs.get("record", True)
        return forward(*args, **kwargs)

    def spy_batch_major(*args, **kwargs):
        calls["batch-major"] += 1
        return batch_major(*args, **kwargs)

    monkeypatch.setattr(_fused, "_forward", spy_forward)
    monkeypatch.setattr(_fused, "_inference_loop", spy_batch_major)
    return calls
