"""Export a Keras model to a SavedModel or to a TFLite (LiteRT) file.

Both exports track the model in a `keras.export.ExportArchive` with one
endpoint per signature. For TFLite, that SavedModel is converted with
TFLite builtin ops only (no Flex / Select-TF ops, which stock mobile runtimes
do not ship) at a fixed batch size, and the file is run in the LiteRT
interpreter against the Keras model to measure how closely it matches.
"""

import contextlib
import dataclasses
import numbers
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np

from keras_lstm_gates._streaming import StepFunction
from keras_lstm_gates._streaming import sole_input
from keras_lstm_gates.tflite import SERVING
from keras_lstm_gates.tflite import STEP
from keras_lstm_gates.tflite import TFLiteModel
from keras_lstm_gates.tflite import tflite_ops

QUANTIZE_OPTIONS = (None, "dynamic", "float16", "int8")

# What an exported SavedModel directory holds; overwriting replaces these only.
_SAVED_MODEL_ENTRIES = frozenset(
    {"saved_model.pb", "saved_model.pbtxt", "variables", "assets", "fingerprint.pb"}
)

# A float32 file further than this (relative to the output's scale) from
# the Keras model converted wrongly: they match within ~1e-7.
_FLOAT32_WARN = 1e-4

# The probe input on which an export is compared with the Keras model.
_PROBE_SEED = 1234
_PROBE_TIME_STEPS = 8


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
    """

    path: str
    size_bytes: int
    ops: frozenset
    max_abs_diff: float
    step_max_abs_diff: float | None
    signatures: tuple
    batch_size: int
    quantize: str | None

    def __str__(self):
        lines = [
            f"wrote {self.path} ({self.size_bytes:,} bytes, "
            f"{self.quantize or 'float32'}, batch size {self.batch_size})",
            f"  signatures: {', '.join(self.signatures)}",
            f"  ops ({len(self.ops)}, all TFLite builtins): "
            + ", ".join(sorted(self.ops)),
            f"  max |TFLite - Keras| on a probe input: {self.max_abs_diff:.3g}",
        ]
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
    _require_tensorflow("export_saved_model")
    _check_model("export_saved_model", model)
    batch_size = _check_batch_size("export_saved_model", batch_size, allow_none=True)
    path = _check_target("export_saved_model", path, overwrite, directory=True)
    from keras_lstm_gates import _fused  # imports TensorFlow: only once checked

    # Without `jit_compile`, nothing in the file is compiled with XLA: not
    # even the loops a layer compiles on its own where shapes are static
    # (a fixed `batch_size`), which a server without XLA could not run.
    no_xla = (
        contextlib.nullcontext() if jit_compile else _fused.exporting(own_xla=False)
    )
    with _atomic_target(path, directory=True) as staging, no_xla:
        _write_saved_model(model, staging, batch_size, jit_compile=bool(jit_compile))
    return path


def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    batch_size: int = 1,
    quantize: str | None = None,
    representative_data=None,
    streaming: bool = False,
    overwrite: bool = False,
) -> TFLiteExport:
    """Exports a model as a `.tflite` file of TFLite builtin ops only.

    The file runs on a stock LiteRT / TFLite runtime: it has no Flex
    (Select-TF) ops, and the export fails with a clear error if the model
    cannot be converted without them. The recurrent loop becomes a TFLite
    `WHILE` loop at the fixed `batch_size`. A mixed-precision model is
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
    _require_tensorflow("export_tflite")
    _check_model("export_tflite", model)
    batch_size = _check_batch_size("export_tflite", batch_size, allow_none=False)
    if quantize not in QUANTIZE_OPTIONS:
        raise ValueError(
            f"export_tflite: quantize must be one of {QUANTIZE_OPTIONS}, "
            f"got {quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            'export_tflite: quantize="int8" needs representative_data, an '
            "array of typical inputs of shape (num_samples,) + input shape, "
            "to calibrate the activations; got None"
        )
    if quantize != "int8" and representative_data is not None:
        raise ValueError(
            'export_tflite: representative_data is only used with quantize="int8", '
            f"got quantize={quantize!r}"
        )
    for layer in _all_layers(model):
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"export_tflite: layer '{layer.name}' is stateful; a TFLite file "
                "cannot keep its states between calls. Export the model with "
                "stateful=False and streaming=True, and carry the states of "
                "the step signature yourself"
            )
    if representative_data is not None:
        representative_data = _check_representative_data(
            model, representative_data, batch_size
        )
    converted = model
    mixed = _mixed_precision(model)
    if quantize == "int8" or mixed:
        # TFLite's calibrator crashes the process on a WHILE loop (TF 2.21),
        # so an int8 export converts a copy with unrolled loops; a mixed
        # precision model is exported in float32.
        converted = _export_copy(model, float32=mixed, unroll=quantize == "int8")
    step = StepFunction(converted) if streaming else None
    path = _check_target("export_tflite", path, overwrite, directory=False)

    from keras_lstm_gates import _fused  # imports TensorFlow: only once checked

    with tempfile.TemporaryDirectory(prefix="keras_lstm_gates_export_") as workdir:
        with _fused.exporting(batch_major=True):
            _write_saved_model(converted, workdir, batch_size, step=step)
        content = _convert(
            workdir, converted, batch_size, quantize, representative_data, step
        )
    ops = tflite_ops(content)
    _check_builtin_only(ops)
    with _atomic_target(path, directory=False) as staging:
        with open(staging, "wb") as f:
            f.write(content)
        probe = (
            None if representative_data is None else representative_data[:batch_size]
        )
        max_abs_diff, step_max_abs_diff, scale = _measure(
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
    loop made for XLA (its dynamic-range quantization is 4x less accurate),
    and at every batch size the projection stays inside the loop (moved out,
    a file at 64 units ran in 0.88-0.95x the time). Trace inside the
    context, at a fixed batch size (TFLite builtins need one): write a
    SavedModel there, or, for a model whose input has a fixed batch size,
    call `TFLiteConverter.from_keras_model(model).convert()` there (it
    traces in `convert()`). The setting is per thread.

    Example:

    ```python
    with keras_lstm_gates.tflite_tracing():
        export_saved_model(model, "model_batch1", batch_size=1)
    converter = tf.lite.TFLiteConverter.from_saved_model("model_batch1")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite_bytes = converter.convert()
    ```
    """
    _require_tensorflow("tflite_tracing")
    from keras_lstm_gates import _fused  # imports TensorFlow: only once checked

    with _fused.exporting(batch_major=True):
        yield


def _require_tensorflow(function):
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{function} needs the TensorFlow backend of Keras (a SavedModel "
            "and a TFLite file are TensorFlow graphs), but the backend is "
            f"{backend!r}. Set KERAS_BACKEND=tensorflow before importing keras"
        )


def _check_model(function, model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{function}: model must be a keras.Model, got {type(model).__name__}"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"{function}: model '{model.name}' has no known input shape; "
            "start it with keras.Input(...) or build it first"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"{function}: model must have one input and one output, model "
            f"'{model.name}' has {len(inputs)} inputs and {len(outputs)} outputs"
        )
    if any(d is None for d in inputs[0].shape[2:]):
        raise ValueError(
            f"{function}: the model's input shape must be known beyond the "
            f"time axis, (batch, time, features...), got {inputs[0].shape}"
        )


def _check_batch_size(function, batch_size, allow_none):
    if batch_size is None and allow_none:
        return None
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size <= 0
    ):
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(
            f"{function}: batch_size must be {expected}, got {batch_size!r}"
        )
    return int(batch_size)


def _check_target(function, path, overwrite, directory):
    """The absolute `path` to write, once checked.

    `overwrite` replaces a file, or a directory holding an earlier SavedModel
    (or nothing): never a directory of other files, which a file export or
    a SavedModel export would delete.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{function}: path must be a str or os.PathLike, got {type(path).__name__}"
        )
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        exists = os.path.exists(parent)
        error = NotADirectoryError if exists else FileNotFoundError
        problem = "is not a directory" if exists else "does not exist"
        raise error(f"{function}: the directory {parent!r} of path {path!r} {problem}")
    if not os.path.lexists(path):
        return path
    if not overwrite:
        raise FileExistsError(
            f"{function}: path {path!r} already exists; pass overwrite=True "
            "to replace it"
        )
    is_directory = os.path.isdir(path) and not os.path.islink(path)
    if directory and not is_directory:
        raise NotADirectoryError(
            f"{function}: path {path!r} is not a directory (a file or a link); "
            "overwriting never replaces one with a SavedModel directory"
        )
    if not directory and is_directory:
        raise IsADirectoryError(
            f"{function}: path {path!r} is a directory; give the path of the "
            "file to write (overwriting never replaces a directory)"
        )
    if is_directory:
        names = sorted(os.listdir(path))
        if names and "saved_model.pb" not in names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise FileExistsError(
                f"{function}: path {path!r} holds files that are not a SavedModel "
                f"({shown}); overwriting replaces only an earlier SavedModel "
                "or an empty directory"
            )
        others = [name for name in names if name not in _SAVED_MODEL_ENTRIES]
        if others:
            raise FileExistsError(
                f"{function}: the SavedModel directory {path!r} also holds "
                f"{', '.join(others)}, which overwriting would delete; move "
                "them out first, or export to another directory"
            )
    return path


@contextlib.contextmanager
def _atomic_target(path, directory):
    """Yields a staging path beside `path`; moves it onto `path` on success.

    On any error the staging file or directory is removed and `path` is left
    as it was, so a failed export never leaves a half-written result.
    """
    parent, name = os.path.split(path)
    staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    target = os.path.join(staging, name)
    try:
        if directory:
            # Made with the umask's mode, not mkdtemp's 0700: a SavedModel
            # is read by servers running as other users.
            os.mkdir(target)
        yield target
        if os.path.isdir(path) and not os.path.islink(path):
            # A directory cannot be replaced in one rename: move the old one
            # aside first, then remove it once the new one is in place.
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=parent)
            os.replace(path, os.path.join(old, name))
            os.replace(target, path)
            shutil.rmtree(old)
        else:
            os.replace(target, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def _all_layers(layer):
    """Every layer inside `layer`: nested models and wrappers included."""
    inner = list(getattr(layer, "layers", None) or [])
    for name in ("layer", "forward_layer", "backward_layer"):
        if isinstance(getattr(layer, name, None), keras.layers.Layer):
            inner.append(getattr(layer, name))
    for sublayer in inner:
        yield sublayer
        yield from _all_layers(sublayer)


def _export_copy(model, *, float32=False, unroll=False):
    """A copy of `model`, with its weights, changed as TFLite needs it.

    Args:
        float32: Every layer computes in float32 instead of under a mixed
            precision policy: TFLite has no bfloat16 ops (a converter error
            asking for Select-TF ops), and the weights of a mixed-precision
            model are float32 already.
        unroll: Every recurrent layer, nested ones included (inside
            `Bidirectional` or an inner model), unrolls its loop: TFLite's
            calibrator crashes the process on a `WHILE` loop (TF 2.21).
    """
    if unroll and model.inputs[0].shape[1] is None:
        raise ValueError(
            'export_tflite: quantize="int8" needs a fixed number of time steps '
            "(the recurrent loop is unrolled for calibration), but the "
            f"model's input shape is {model.inputs[0].shape}; give keras.Input "
            "a fixed time length"
        )

    def rewrite(node):
        if isinstance(node, list):
            return [rewrite(value) for value in node]
        if not isinstance(node, dict):
            return node
        if float32 and node.get("class_name") == "DTypePolicy":
            if str(node["config"].get("name", "")).startswith("mixed_"):
                return {**node, "config": {**node["config"], "name": "float32"}}
        node = {key: rewrite(value) for key, value in node.items()}
        if unroll and isinstance(node.get("unroll"), bool):  # a recurrent layer
            node["unroll"] = True
        return node

    def clone(layer):
        return layer.__class__.from_config(rewrite(layer.get_config()))

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _mixed_precision(model):
    """Whether a layer of `model` computes in 16 bits under a mixed policy."""
    return any(
        getattr(layer.dtype_policy, "name", "").startswith("mixed_")
        for layer in _all_layers(model)
    )


def _input_spec(model, batch_size, step=False):
    import tensorflow as tf

    keras_input = model.inputs[0]
    shape = (batch_size,) + tuple(keras_input.shape[1:])
    if step:
        shape = shape[:1] + shape[2:]
    return tf.TensorSpec(shape, keras_input.dtype, name="inputs")


def _write_saved_model(model, path, batch_size, jit_compile=False, step=None):
    """Writes `model` with `serving_default` (and `step`) to directory `path`."""
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(inputs):
        return {"outputs": model(inputs, training=False)}

    serving = tf.function(
        serve,
        input_signature=[_input_spec(model, batch_size)],
        jit_compile=jit_compile,
        autograph=False,
    )
    serving.get_concrete_function()
    archive.add_endpoint(SERVING, serving)

    if step is not None:
        specs = [_input_spec(model, batch_size, step=True)] + [
            tf.TensorSpec((batch_size, units), dtype, name=name)
            for name, units, dtype in zip(
                step.state_names, step.state_units, step.state_dtypes
            )
        ]

        def run_step(inputs, *states):
            return step(inputs, dict(zip(step.state_names, states)))

        stepping = tf.function(run_step, input_signature=specs, autograph=False)
        stepping.get_concrete_function()
        archive.add_endpoint(STEP, stepping)
    archive.write_out(path, verbose=False)


def _convert(saved_model_dir, model, batch_size, quantize, representative_data, step):
    import tensorflow as tf

    keys = [SERVING, STEP] if step is not None else [SERVING]
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=keys
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        # Full integer: every op in int8, float in and out of the file.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = _representative_dataset(
            model, representative_data, batch_size, step
        )
    try:
        with warnings.catch_warnings():
            # The calibrator still uses the deprecated tf.lite.Interpreter.
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except Exception as error:  # the converter raises several error types
        message = str(error)
        if any(
            name in message
            for name in ("Flex", "Select TF", "TF Select", "SELECT_TF_OPS")
        ):
            reason = (
                "the model needs TensorFlow ops that have no TFLite builtin "
                "(it would need the Flex delegate, which stock mobile runtimes "
                "do not ship)"
            )
        else:
            reason = "the TFLite converter failed"
        detail = next(
            (line.strip() for line in message.splitlines() if "error:" in line),
            message.strip().splitlines()[0] if message.strip() else "",
        )
        raise ValueError(
            f"export_tflite: cannot convert model '{model.name}' to TFLite "
            f"builtin ops: {reason}. Converter said: {detail}"
        ) from None


def _check_builtin_only(ops):
    not_builtin = sorted(op for op in ops if op.startswith("Flex") or not op.isupper())
    if not_builtin:
        raise ValueError(
            f"export_tflite: the converted file has ops that are not TFLite "
            f"builtins: {not_builtin}; it would not run on a stock runtime"
        )


def _check_representative_data(model, data, batch_size):
    array = np.asarray(data)
    expected = tuple(model.inputs[0].shape[1:])
    shape_ok = array.ndim == len(expected) + 1 and all(
        e is None or e == a for e, a in zip(expected, array.shape[1:])
    )
    if not shape_ok or len(array) < batch_size:
        raise ValueError(
            "export_tflite: representative_data must be an array of shape "
            f"(num_samples,) + {expected} with num_samples >= batch_size "
            f"({batch_size}), got shape {array.shape}"
        )
    return array.astype(model.inputs[0].dtype, copy=False)


def _representative_dataset(model, data, batch_size, step):
    """The converter's calibration generator, for every signature."""

    def generate():
        for start in range(0, len(data) - batch_size + 1, batch_size):
            batch = data[start : start + batch_size]
            yield SERVING, {"inputs": batch}
            if step is not None:
                states = _zero_states(step, batch_size)
                for t in range(batch.shape[1]):
                    feed = {"inputs": batch[:, t], **states}
                    yield STEP, feed
                    result = step(batch[:, t], states)
                    states = {
                        name: keras.ops.convert_to_numpy(result[name])
                        for name in step.state_names
                    }

    return generate


def _zero_states(step, batch_size):
    return {
        name: np.zeros((batch_size, units), dtype)
        for name, units, dtype in zip(
            step.state_names, step.state_units, step.state_dtypes
        )
    }


def _probe(model, batch_size):
    """A seeded random input for `model`; token ids end in 0-padding.

    Float inputs are standard normal, or, where a top-level `Normalization`
    layer reads the model's input, drawn at its mean and variance: raw values the
    model expects (pressure near 986 hPa, say), not ones it would saturate
    on, where any conversion error would hide.
    """
    rng = np.random.default_rng(_PROBE_SEED)
    keras_input = model.inputs[0]
    time = keras_input.shape[1] or _PROBE_TIME_STEPS
    shape = (batch_size, time) + tuple(keras_input.shape[2:])
    dtype = keras_input.dtype
    if not np.issubdtype(np.dtype(dtype), np.integer):
        probe = rng.standard_normal(shape)
        mean, variance = _input_normalization(model)
        try:
            probe = mean + np.sqrt(np.maximum(variance, 0.0)) * probe
        except ValueError:  # not broadcastable to the input: keep N(0, 1)
            pass
        return probe.astype(dtype)
    embeddings = [
        layer
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.Embedding)
    ]
    high = embeddings[0].input_dim if embeddings else 2
    probe = rng.integers(1, max(high, 2), size=shape)
    lengths = rng.integers(1, time + 1, size=batch_size)
    lengths[0] = time  # one row with no padding: every step is measured
    for row, length in enumerate(lengths):
        probe[row, length:] = 0
    return probe.astype(dtype)


def _input_normalization(model):
    """`(mean, variance)` of a top-level `Normalization` layer reading the
    model's input, or `(0, 1)`."""
    for layer in model.layers:
        if isinstance(model, keras.Sequential):
            # A loaded Sequential model's layers have several call nodes
            # (it is rebuilt as it loads): its first layer reads the input.
            reads_input = layer is model.layers[0]
        else:
            reads_input = sole_input(layer) is model.inputs[0]
        if (
            isinstance(layer, keras.layers.Normalization)
            and not layer.invert
            and reads_input
        ):
            return (
                keras.ops.convert_to_numpy(layer.mean).astype("float64"),
                keras.ops.convert_to_numpy(layer.variance).astype("float64"),
            )
    return 0.0, 1.0


def _measure(model, path, batch_size, step, probe=None):
    """Runs the file against the Keras model on `probe` (default: `_probes`).

    Returns the largest differences of the whole-sequence and the `step`
    outputs, and the scale of the Keras output (at least 1).
    """
    exported = TFLiteModel(path)
    probes = _probes(model, batch_size) if probe is None else [probe]
    measured = [_measure_on(model, exported, step, p) for p in probes]
    max_abs_diff = max(m[0] for m in measured)
    step_max_abs_diff = None if step is None else max(m[1] for m in measured)
    return max_abs_diff, step_max_abs_diff, max(m[2] for m in measured)


def _probes(model, batch_size):
    """`_probe`, and for token ids the same with every row ending in padding.

    `_probe`'s first row has no padding, so that every step is measured; at a
    batch size of 1 that is the only row, and what a masked step outputs
    (`zero_output_for_mask`, the states kept) would go unmeasured.
    """
    probe = _probe(model, batch_size)
    time = probe.shape[1]
    if not np.issubdtype(probe.dtype, np.integer):
        return [probe]
    padded = probe.copy()
    padded[:, time - max(1, time // 3) :] = 0
    return [probe, padded]


def _measure_on(model, exported, step, probe):
    """`_measure` on one probe: `(max_abs_diff, step_max_abs_diff, scale)`."""
    expected = keras.ops.convert_to_numpy(model(probe, training=False))
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    max_abs_diff = _max_abs_diff(exported(probe), expected)
    if step is None:
        return max_abs_diff, None, scale
    states = exported.initial_states()
    outputs = []
    for t in range(probe.shape[1]):
        output, states = exported.step(probe[:, t], states)
        outputs.append(output)
    if expected.ndim == outputs[0].ndim + 1:
        streamed = np.stack(outputs, axis=1)  # a sequence output: every step
    else:
        streamed = outputs[-1]
    return max_abs_diff, _max_abs_diff(streamed, expected), scale


def _max_abs_diff(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(
            f"export_tflite: the exported file gives outputs of shape "
            f"{actual.shape}, the Keras model {expected.shape}"
        )
    return float(np.max(np.abs(actual - expected)))
