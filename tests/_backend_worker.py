"""Runs the core checks of the four-gate LSTM under another Keras backend.

`tests/test_backends.py` runs this script once per backend, in a subprocess
with `KERAS_BACKEND=jax` or `=torch` (the backend must be chosen before Keras
is imported), and asserts on what it writes. The script computes; it judges
nothing: the NumPy reference and the comparisons live in the test.

Until the last check (Keras's own `model.export`, which needs TensorFlow),
TensorFlow, tensorflow-text and LiteRT cannot be imported here, and the tries
are recorded: the package must import, run, train and save under JAX and
torch without them.

Usage:

    KERAS_BACKEND=jax python tests/_backend_worker.py WORK_DIR

`WORK_DIR` holds `inputs.npz` and `tf_model.keras`, written by the test. The
script writes `outputs.npz` (arrays named `check.name`),
`<backend>_model.keras` and `info.json` (the backend, loss histories, the
refused imports and, for a check that raised, its traceback under `errors`).
"""

import importlib.machinery
import json
import os
import sys
import traceback

TENSORFLOW_MODULES = ("tensorflow", "tensorflow_text", "ai_edge_litert")


class RefuseImports:
    """A `sys.meta_path` finder under which `TENSORFLOW_MODULES` fail to import.

    It gives them a spec (a probe such as `importlib.util.find_spec`, which
    torch makes of TensorFlow, still answers) whose loader records the try
    and raises `ImportError`.
    """

    def __init__(self):
        self.tried = []

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in TENSORFLOW_MODULES:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        self.tried.append(spec.name)
        raise ImportError(f"{spec.name} is refused by tests/_backend_worker.py")

    def exec_module(self, module):
        raise AssertionError("create_module refuses every module")


REFUSE_IMPORTS = RefuseImports()
sys.meta_path.insert(0, REFUSE_IMPORTS)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_lstm_gates import FourGateLSTM  # noqa: E402
from keras_lstm_gates import FourGateLSTMCell  # noqa: E402
from keras_lstm_gates import trace_gates  # noqa: E402

USE_GATES = ("projected", "classic")
# Under torch, `jit_compile=True` is `torch.compile`, which Keras's "auto"
# leaves off: torch is checked as its users run it, eagerly.
JIT_COMPILE = keras.backend.backend() == "jax"


def _prefixed(inputs, prefix):
    """The arrays of `inputs` whose names start with `prefix.`."""
    start = len(prefix) + 1
    return {k[start:]: inputs[k] for k in inputs.files if k.startswith(prefix + ".")}


def check_equations(inputs, info):
    """A layer with the given gate weights: every step's output and gates."""
    x = inputs["x"]
    outputs = {}
    for use_gate in USE_GATES:
        weights = _prefixed(inputs, use_gate)
        units = weights["b_n"].shape[0]
        layer = FourGateLSTM(units, use_gate=use_gate, return_sequences=True)
        layer.build(x.shape)
        layer.set_gate_weights(weights)
        outputs[f"{use_gate}.layer_STM"] = layer(x)
        for gate, value in trace_gates(layer, x).items():
            outputs[f"{use_gate}.trace_{gate}"] = value
        info[f"{use_gate}.variable_type"] = type(layer.cell.kernel.value).__module__
    return outputs


def check_lstm_parity(inputs, info):
    """`keras.layers.LSTM` and a classic `FourGateLSTM` with its weights."""
    x = inputs["x"]
    lstm_weights = [
        inputs["lstm.kernel"],
        inputs["lstm.recurrent_kernel"],
        inputs["lstm.bias"],
    ]
    units = inputs["lstm.bias"].shape[0] // 4
    outputs = {}
    for name, layer in [
        ("keras_lstm", keras.layers.LSTM(units, return_sequences=True)),
        ("four_gate", FourGateLSTM(units, use_gate="classic", return_sequences=True)),
    ]:
        layer.build(x.shape)
        layer.set_weights(lstm_weights)
        outputs[name] = layer(x)
    return outputs


def check_masking(inputs, info):
    """Padded sequences through `Masking`, and each sequence unpadded."""
    x, lengths = inputs["masked_x"], inputs["masked_lengths"]
    weights = _prefixed(inputs, "projected")
    units = weights["b_n"].shape[0]
    layer = FourGateLSTM(units)
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), keras.layers.Masking(0.0), layer]
    )
    layer.set_gate_weights(weights)
    outputs = {"padded": model(x)}
    outputs["unpadded"] = keras.ops.concatenate(
        [layer(x[b : b + 1, :length]) for b, length in enumerate(lengths)]
    )
    mask = np.arange(x.shape[1])[None, :] < lengths[:, None]
    outputs["trace_STM"] = trace_gates(layer, x, mask=mask)["STM"]
    # Steps masked before the first one read, from a given initial state.
    lead = FourGateLSTM(units, return_sequences=True, return_state=True)
    lead.build(x.shape)
    lead.set_gate_weights(weights)
    lead_mask = mask[:, ::-1]
    state = [np.full((x.shape[0], units), v, "float32") for v in (0.5, 0.7)]
    sequence, _, ltm = lead(x, initial_state=state, mask=lead_mask)
    trace = trace_gates(lead, x, initial_state=state, mask=lead_mask)
    keras_lstm = keras.layers.LSTM(units, return_sequences=True)
    outputs.update(
        lead_mask=lead_mask,
        lead_sequence=sequence,
        lead_keras_lstm=keras_lstm(x, initial_state=state, mask=lead_mask),
        lead_ltm=ltm,
        lead_trace_STM=trace["STM"],
        lead_trace_LTM=trace["LTM"],
    )
    return outputs


def check_dropout(inputs, info):
    """Dropout and recurrent dropout in `fit` (XLA on JAX), then inference."""
    x = inputs["x"]
    outputs = {}
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            FourGateLSTM(8, dropout=0.3, recurrent_dropout=0.3, seed=1),
            keras.layers.Dense(1),
        ]
    )
    model.compile("adam", "mse", jit_compile=JIT_COMPILE)
    history = model.fit(x, x[:, 0, :1], verbose=0)
    info["dropout.loss"] = history.history["loss"]
    for call in (1, 2):
        outputs[f"training_{call}"] = model(x, training=True)
        outputs[f"inference_{call}"] = model(x, training=False)
    return outputs


def check_fit(inputs, info):
    """One epoch of `model.fit` from the test's weights, then more to learn."""
    x, y = inputs["fit_x"], inputs["fit_y"]
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), FourGateLSTM(8), keras.layers.Dense(1)]
    )
    weights = _prefixed(inputs, "fit_weights")
    model.set_weights([weights[k] for k in sorted(weights, key=int)])
    # SGD for the epoch compared with TensorFlow's: its update is linear in
    # the gradient, where Adam's first steps divide by |gradient| and blow a
    # float32 rounding difference in a tiny gradient up past the tolerance.
    model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=JIT_COMPILE)
    history = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    info["fit.model_jit"] = bool(model.jit_compile)
    info["fit.first_epoch_loss"] = history.history["loss"][0]
    outputs = {f"weight{k}": w for k, w in enumerate(model.get_weights())}
    model.compile(keras.optimizers.Adam(0.02), "mse", jit_compile=JIT_COMPILE)
    history = model.fit(x, y, batch_size=32, epochs=40, verbose=0)
    info["fit.learning_loss"] = history.history["loss"]
    return outputs


def check_saving(inputs, info, work_dir):
    """Loads the TensorFlow model; saves one made here for TensorFlow."""
    x = inputs["save_x"]
    loaded = keras.models.load_model(os.path.join(work_dir, "tf_model.keras"))
    outputs = {"tf_model_predictions": loaded.predict(x, verbose=0)}
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            FourGateLSTM(6, return_sequences=True),
            keras.layers.RNN(FourGateLSTMCell(4, use_gate="classic")),
            keras.layers.Dense(2),
        ]
    )
    model.save(os.path.join(work_dir, f"{keras.backend.backend()}_model.keras"))
    outputs["model_predictions"] = model.predict(x, verbose=0)
    return outputs


def check_keras_export(inputs, info, work_dir):
    """Keras's own `model.export` of a model made here (through jax2tf).

    It imports TensorFlow into this process: kept off any GPU, which JAX
    holds, and run last, so that nothing it does reaches the other checks.
    (Under torch, `model.export` needs torch_xla: not run there.)
    """
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    x = inputs["save_x"]
    model = keras.Sequential(
        [
            keras.Input((None, x.shape[2])),
            FourGateLSTM(5, return_sequences=True),
            FourGateLSTM(4, use_gate="classic"),
            keras.layers.Dense(2),
        ]
    )
    model.export(os.path.join(work_dir, "jax_export"), verbose=False)
    return {
        "predictions": model.predict(x, verbose=0),
        "predictions_short": model.predict(x[:2, :3], verbose=0),
    }


def main(work_dir):
    inputs = np.load(os.path.join(work_dir, "inputs.npz"))
    backend = keras.backend.backend()
    info = {"backend": backend, "errors": {}}
    checks = {
        "equations": check_equations,
        "lstm_parity": check_lstm_parity,
        "masking": check_masking,
        "dropout": check_dropout,
        "fit": check_fit,
    }
    arrays = {}

    def run(name, check):
        try:
            for key, value in check(inputs, info).items():
                arrays[f"{name}.{key}"] = keras.ops.convert_to_numpy(value)
        except Exception:
            info["errors"][name] = traceback.format_exc()

    for name, check in checks.items():
        run(name, check)
    # Keras's own `model.save` tries TensorFlow (for a `tf.TensorShape`) and
    # saves without it: the tries are the package's until here.
    info["refused_imports"] = list(REFUSE_IMPORTS.tried)
    run("saving", lambda inputs, info: check_saving(inputs, info, work_dir))
    info["imported"] = [m for m in TENSORFLOW_MODULES if m in sys.modules]
    sys.meta_path.remove(REFUSE_IMPORTS)
    if backend == "jax":
        run(
            "keras_export",
            lambda inputs, info: check_keras_export(inputs, info, work_dir),
        )
    np.savez(os.path.join(work_dir, "outputs.npz"), **arrays)
    with open(os.path.join(work_dir, "info.json"), "w") as f:
        json.dump(info, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
