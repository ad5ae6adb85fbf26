"""Export a Keras model to a SavedModel or to a TFLite (LiteRT) file.

Both exports track the model in a `keras.export.ExportArchive` with one
endpoint per signature. For TFLite, that SavedModel is converted with
TFLite builtin ops only (no Flex / Select-TF ops, which stock mobile runtimes
do not ship) at a fixed batch size, and the file is run in the LiteRT
interpreter against the Keras model to measure how closely it matches.

This module is the public API; each step lives in a module of its own:
`_checks` (the arguments), `_output_files` (checked, atomically written
outputs), `_conversion` (SavedModel and TFLite converter), `_parity` (the
file measured against the model) and `_streaming` (the `step` signature).
"""

import contextlib
import dataclasses
import os
import tempfile
import warnings

import keras

from keras_lstm_gates import _checks
from keras_lstm_gates import _conversion
from keras_lstm_gates import _native
from keras_lstm_gates import _output_files
from keras_lstm_gates import _parity
from keras_lstm_gates._checks import QUANTIZE_OPTIONS
from keras_lstm_gates._fused import exporting
from keras_lstm_gates._graph import all_layers
from keras_lstm_gates._streaming import StepFunction
from keras_lstm_gates.tflite import SERVING
from keras_lstm_gates.tflite import STEP
from keras_lstm_gates.tflite import tflite_ops

__all__ = [
    "QUANTIZE_OPTIONS",
    "TFLiteExport",
    "export_saved_model",
    "export_tflite",
    "tflite_tracing",
]

# A float32 file further than this (relative to the output's scale) from
# the Keras model converted wrongly (docs/performance.md, Export).
_FLOAT32_WARN = 1e-4


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What `export_tflite` wrote and how closely it matches the Keras model.

    Attributes:
        path: The path of the `.tflite` file.
        size_bytes: Its size in bytes.
        ops: The set of TFLite op names in the file (every subgraph).
        max_abs_diff: Largest absolute difference between the file's
            `serving_default` output, run in the LiteRT interpreter, and the
            Keras model's output, on a seeded random probe input (drawn at
            the mean and variance of a top-level `Normalization` layer that
            reads the model's input; token ids are also measured with every
            sequence ending in 0-padding; for `quantize="int8"`, the first
            `batch_size` samples of `representative_data`: the ranges were
            calibrated for such inputs, and random ones may lie far outside
            them).
        step_max_abs_diff: For a streaming export, the same for the `step`
            signature fed the probe one step at a time (every step's output
            for a sequence output, else the output after the last step);
            `None` otherwise.
        signatures: The signatures in the file.
        batch_size: The fixed batch size of the file.
        quantize: The quantization (`None` for float32).
        recurrent_ops: For every recurrent layer of the model, by name, what
            it became in the file: `"UNIDIRECTIONAL_SEQUENCE_LSTM"`
            (TFLite's native LSTM op; two of them for a `Bidirectional`),
            `"WHILE"` (a loop) or `"unrolled"` (an int8 loop, one copy of
            the step per time step).
        lstm_op: The `lstm_op` asked for (`"auto"`, `"native"` or `"loop"`).
    """

    path: str
    size_bytes: int
    ops: frozenset
    max_abs_diff: float
    step_max_abs_diff: float | None
    signatures: tuple
    batch_size: int
    quantize: str | None
    recurrent_ops: dict = dataclasses.field(default_factory=dict)
    lstm_op: str = "auto"

    def __str__(self):
        lines = [
            f"wrote {self.path} ({self.size_bytes:,} bytes, "
            f"{self.quantize or 'float32'}, batch size {self.batch_size})",
            f"  signatures: {', '.join(self.signatures)}",
            f"  ops ({len(self.ops)}, all TFLite builtins): "
            + ", ".join(sorted(self.ops)),
            f"  max |TFLite - Keras| on a probe input: {self.max_abs_diff:.3g}",
        ]
        for name, op in self.recurrent_ops.items():
            lines.insert(-1, f"  layer '{name}': {op}")
        if self.step_max_abs_diff is not None:
            lines.append(
                f"  max |TFLite step by step - Keras|: {self.step_max_abs_diff:.3g}"
            )
        return "\n".join(lines)


def export_saved_model(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    batch_size: int | None = None,
    jit_compile: bool = False,
    overwrite: bool = False,
) -> str:
    """Exports a model as a TensorFlow SavedModel for serving.

    The SavedModel has one signature, `serving_default`, taking `inputs` (the
    whole sequence) and returning `outputs` (the model's output). It holds
    the weights, not the Python code, and loads with `tf.saved_model.load`
    without this package.

    Args:
        model: A built Keras model with one input and one output.
        path: The directory to write. It must not exist unless
            `overwrite=True`, which replaces an earlier SavedModel or an
            empty directory (never one holding other files, nor a SavedModel
            directory holding more, such as `assets.extra/`); its parent must
            exist.
        batch_size: Fixed batch size of the signature, or `None` (default)
            for any batch size.
        jit_compile: If `True`, the serving function is compiled with XLA
            (`tf.function(jit_compile=True)`), e.g. for GPU serving.
            Default: `False`: nothing in the file is compiled with XLA, also
            at a fixed `batch_size`, so a server without XLA runs it.
        overwrite: Whether to replace an existing `path` (an earlier
            SavedModel). Default: `False`.

    Returns:
        The path written, as a string.

    Example:

    >>> import os, tempfile, keras, numpy as np, tensorflow as tf
    >>> from keras_lstm_gates import FourGateLSTM, export_saved_model
    >>> model = keras.Sequential([keras.Input((10, 3)), FourGateLSTM(8)])
    >>> path = export_saved_model(model, os.path.join(tempfile.mkdtemp(), "sm"))
    >>> serve = tf.saved_model.load(path).signatures["serving_default"]
    >>> serve(inputs=tf.zeros((2, 10, 3)))["outputs"].shape
    TensorShape([2, 8])
    """
    _checks.require_tensorflow("export_saved_model")
    _checks.check_model("export_saved_model", model)
    batch_size = _checks.check_batch_size(
        "export_saved_model", batch_size, allow_none=True
    )
    path = _output_files.check_target(
        "export_saved_model", path, overwrite, directory=True
    )

    # Without `jit_compile`, nothing in the file is compiled with XLA: not
    # even the loops a layer compiles on its own where shapes are static
    # (a fixed `batch_size`), which a server without XLA could not run.
    no_xla = contextlib.nullcontext() if jit_compile else exporting(own_xla=False)
    with _output_files.atomic_target(path, directory=True) as staging, no_xla:
        _conversion.write_saved_model(
            model, staging, batch_size, jit_compile=bool(jit_compile)
        )
    return path


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    batch_size: int = 1,
    quantize: str | None = None,
    representative_data=None,
    streaming: bool = False,
    lstm_op: str = "auto",
    overwrite: bool = False,
) -> TFLiteExport:
    """Exports a model as a `.tflite` file of TFLite builtin ops only.

    The file runs on a stock LiteRT / TFLite runtime: it has no Flex
    (Select-TF) ops, and the export fails with a clear error if the model
    cannot be converted without them. Each recurrent loop becomes a TFLite
    `WHILE` loop at the fixed `batch_size`, or TFLite's native LSTM op
    `UNIDIRECTIONAL_SEQUENCE_LSTM` (see `lstm_op`). A mixed-precision model is
    exported in float32 (TFLite has no bfloat16 ops; its weights are float32
    already).

    Signatures:

    - `serving_default`: `inputs` (the whole sequence, `(batch_size, time,
      ...)`) in, `outputs` (the model's output) out.
    - `step` (with `streaming=True`): one time step `inputs`
      (`(batch_size, features)`, or `(batch_size,)` token ids) and, for every
      `FourGateLSTM` layer `L`, the states `L_stm` and `L_ltm` in; `outputs`
      (the model's output for the sequence read so far) and the new `L_stm`,
      `L_ltm` out. Start from zero states (`TFLiteModel.initial_states()`).

    After writing, the file runs in the LiteRT interpreter on a seeded random
    probe input (for `"int8"`, the first `batch_size` samples of
    `representative_data`) and the result is compared with the Keras model.

    Args:
        model: A built Keras model with one input and one output.
        path: The `.tflite` file to write. It must not exist unless
            `overwrite=True`, which replaces a file (never a directory); its
            parent directory must exist.
        batch_size: The fixed batch size of the file (a positive int).
            Default: 1.
        quantize: `None` (default, float32), `"dynamic"` (int8 weights,
            float activations), `"float16"` (float16 weights) or `"int8"`
            (int8 weights and activations; needs `representative_data`).
        representative_data: For `quantize="int8"`: an array of typical
            inputs, shape `(num_samples,) + input shape`, with at least
            `batch_size` samples, used to calibrate the activations' ranges.
        streaming: If `True`, also write the `step` signature. Default:
            `False`.
        lstm_op: What the recurrent layers become. `"native"`: TFLite's
            native LSTM op, for every recurrent layer, or a `ValueError`
            naming each layer that cannot be one and why (it must be a
            classic `FourGateLSTM` or a `keras.layers.LSTM`, also in
            `Bidirectional`, with tanh and sigmoid, no mask, no initial
            state and no `return_state`). The op keeps its states in the
            file between invokes: reset them before each sequence
            (`TFLiteModel` does). `"loop"`: a `WHILE` loop (unrolled for
            `"int8"`). `"auto"` (default): the native op where it pays, for
            `quantize="int8"` (no unrolling), else the loop.
        overwrite: Whether to replace an existing file at `path`. Default:
            `False`.

    Returns:
        A `TFLiteExport` with `path`, `size_bytes`, `ops`, `max_abs_diff` and
        the rest of what was measured.

    Example:

    >>> import os, tempfile, keras, numpy as np
    >>> from keras_lstm_gates import FourGateLSTM, TFLiteModel, export_tflite
    >>> model = keras.Sequential([keras.Input((10, 3)), FourGateLSTM(8)])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
    >>> report = export_tflite(model, path, streaming=True)
    >>> "WHILE" in report.ops, report.max_abs_diff < 1e-5
    (True, True)
    >>> tflite = TFLiteModel(path)
    >>> x = np.random.rand(1, 10, 3).astype("float32")
    >>> states = tflite.initial_states()
    >>> for t in range(10):
    ...     y, states = tflite.step(x[:, t], states)
    >>> bool(np.allclose(y, tflite(x), atol=1e-5))
    True
    """
    _checks.require_tensorflow("export_tflite")
    _checks.check_model("export_tflite", model)
    batch_size = _checks.check_batch_size("export_tflite", batch_size, allow_none=False)
    _checks.check_tflite_options(quantize, representative_data)
    _checks.check_stateless(all_layers(model))
    lstm_op = _checks.check_lstm_op(lstm_op)
    if representative_data is not None:
        representative_data = _checks.check_representative_data(
            model, representative_data, batch_size
        )
    plan = _native.plan(model, lstm_op, quantize)
    mixed = _conversion.mixed_precision(model)
    # A mixed precision model is exported in float32. TFLite's calibrator
    # crashes the process on a WHILE loop (TF 2.21), so for int8 every loop
    # that does not become the native op is unrolled.
    converted = model
    if quantize == "int8" or plan.native or mixed:
        converted = _conversion.export_copy(
            model, float32=mixed, unroll=quantize == "int8", native=plan.native
        )
    step = None
    if streaming:
        # The step runs each cell once, with its states as inputs and
        # outputs: the cells of a layer made native, too.
        loops = converted
        if plan.native:
            loops = _conversion.export_copy(model, float32=True) if mixed else model
        step = StepFunction(loops)
    path = _output_files.check_target("export_tflite", path, overwrite, directory=False)

    with tempfile.TemporaryDirectory(prefix="keras_lstm_gates_export_") as workdir:
        with exporting(batch_major=True):
            _conversion.write_saved_model(converted, workdir, batch_size, step=step)
        content = _conversion.convert(
            workdir, converted, batch_size, quantize, representative_data, step
        )
    if plan.native:
        content = _conversion.without_cell_clip(content)
    ops = tflite_ops(content)
    _conversion.check_builtin_only(ops)
    _conversion.check_native_ops(content, plan, model)
    with _output_files.atomic_target(path, directory=False) as staging:
        with open(staging, "wb") as f:
            f.write(content)
        probe = (
            None if representative_data is None else representative_data[:batch_size]
        )
        max_abs_diff, step_max_abs_diff, scale = _parity.measure(
            model, staging, batch_size, step, probe
        )
    worst = max(max_abs_diff, step_max_abs_diff or 0.0)
    # A mixed-precision model is compared with its 16-bit self: that differs
    # from its float32 file by 16-bit rounding, not by a wrong conversion.
    if quantize is None and not mixed and worst > _FLOAT32_WARN * scale:
        warnings.warn(
            f"export_tflite: the float32 file differs from the Keras model by "
            f"{worst:.3g} on the probe input, where float32 exports match within "
            f"~1e-7: a layer of '{model.name}' converted wrongly. Check the "
            "file's outputs before using it",
            stacklevel=2,
        )
    return TFLiteExport(
        path=path,
        size_bytes=len(content),
        ops=ops,
        max_abs_diff=max_abs_diff,
        step_max_abs_diff=step_max_abs_diff,
        signatures=(SERVING, STEP) if step else (SERVING,),
        batch_size=batch_size,
        quantize=quantize,
        recurrent_ops=dict(plan.ops),
        lstm_op=lstm_op,
    )


@contextlib.contextmanager
def tflite_tracing():
    """Traces `FourGateLSTM` layers for TFLite, as `export_tflite` does.

    For your own converter (`tf.lite.TFLiteConverter` with options
    `export_tflite` does not take): inference traced inside this context
    takes the loop made for TFLite at every batch size: batch-major, each
    matmul a `FULLY_CONNECTED` whose weights dynamic-range quantization
    keeps in int8, with the events' projection computed before the `WHILE`
    loop. Outside it, a model traced at a fixed batch size above 1 gets the
    loop made for XLA (less accurate under dynamic-range quantization), and
    at every batch size the projection stays inside the loop (a slower file;
    docs/performance.md has the figures). Trace inside the context, at a
    fixed batch size (TFLite builtins need one): write a SavedModel there,
    or, for a model whose input has a fixed batch size, call
    `TFLiteConverter.from_keras_model(model).convert()` there (it traces in
    `convert()`). The setting is per thread.

    Example:

    ```python
    with keras_lstm_gates.tflite_tracing():
        export_saved_model(model, "model_batch1", batch_size=1)
    converter = tf.lite.TFLiteConverter.from_saved_model("model_batch1")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite_bytes = converter.convert()
    ```
    """
    _checks.require_tensorflow("tflite_tracing")

    with exporting(batch_major=True):
        yield
