"""`TFLiteModel`: run an exported `.tflite` file with the LiteRT interpreter.

`ai_edge_litert` is imported only when a `.tflite` file is read, so that
`import keras_lstm_gates` works without it (e.g. under the JAX backend).
"""

import functools
import numbers
import os

import numpy as np

SERVING = "serving_default"
STEP = "step"


@functools.cache
def _builtin_names():
    """TFLite's builtin operator codes, by number, under their schema names."""
    from ai_edge_litert import schema_py_generated as schema

    return {
        code: name
        for name, code in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }


def tflite_ops(content: bytes) -> frozenset:
    """The names of every operator a `.tflite` flatbuffer uses.

    Reads the model's operator table, which lists the ops of every subgraph
    (a `WHILE` loop's body included), not only the main graph's.

    Args:
        content: The bytes of a `.tflite` file.

    Returns:
        A frozenset of op names: builtin ops under their schema names
        (`"FULLY_CONNECTED"`, `"WHILE"`, ...), custom ops under their custom
        code (a Select-TF op reads `"Flex..."`).
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    return frozenset(_op_name(code) for code in model.operatorCodes or ())


def tflite_op_names(content: bytes) -> list:
    """The op name of each entry of a `.tflite` file's operator table, in
    order: an operator's `opcode_index` indexes it."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    return _op_names_of(model)


def _op_names_of(model):
    """`tflite_op_names` of a parsed `ModelT`."""
    return [_op_name(code) for code in model.operatorCodes or ()]


def tflite_op_counts(content: bytes) -> dict:
    """How many times each operator appears in a `.tflite` file, over every
    subgraph: `{"UNIDIRECTIONAL_SEQUENCE_LSTM": 2, ...}`."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    names = _op_names_of(model)
    counts = {}
    for graph in model.subgraphs or ():
        for op in graph.operators or ():
            counts[names[op.opcodeIndex]] = counts.get(names[op.opcodeIndex], 0) + 1
    return counts


def _text(value):
    """A flatbuffer string (bytes) as `str`."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _op_name(code):
    """The name of an `OperatorCodeT`, as `tflite_ops` gives it."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return _text(code.customCode)
    return _builtin_names().get(builtin, f"BUILTIN_{builtin}")


class TFLiteModel:
    """A `.tflite` file exported by `export_tflite`, callable on NumPy arrays.

    A small wrapper over `ai_edge_litert.interpreter.Interpreter` that knows
    the signatures `export_tflite` writes: `serving_default` (the whole
    sequence in, the model's output out) and, for a streaming export, `step`
    (one time step and the recurrent states in, the output and the new states
    out). Each whole sequence starts from zero states: a file with TFLite's
    native LSTM op keeps its states between invokes, and they are reset
    before each call unless `reset=False` (chunked streaming).

    Args:
        path: Path of a `.tflite` file.
        num_threads: Optional number of CPU threads for the interpreter.

    Example:

    ```python
    model = TFLiteModel("model.tflite")
    y = model(x)  # x: (batch_size, time, features)
    states = model.initial_states()
    for t in range(x.shape[1]):
        y_t, states = model.step(x[:, t], states)
    ```
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if num_threads is not None and (
            isinstance(num_threads, bool)
            or not isinstance(num_threads, numbers.Integral)
            or num_threads < 1
        ):
            raise ValueError(
                f"TFLiteModel: num_threads must be a positive int or None, "
                f"got {num_threads!r}"
            )
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TFLiteModel: path {path!r} is not a file")
        with open(path, "rb") as f:
            content = f.read()
        try:
            self._interpreter = Interpreter(
                model_content=content,
                num_threads=None if num_threads is None else int(num_threads),
            )
        except ValueError as error:
            raise ValueError(
                f"TFLiteModel: {path!r} is not a readable .tflite file "
                f"({str(error).splitlines()[0]})"
            ) from None
        self._path = path
        self._content = content
        self._ops = tflite_ops(content)
        self._keeps_states = _has_variable_tensors(content)
        self._runners = {}
        if self._keeps_states:
            # Resetting needs the states allocated: those of the main
            # subgraph, `serving_default`'s in an `export_tflite` file.
            self._interpreter.allocate_tensors()
        # Each signature's last input shape: a new one reallocates the
        # interpreter, which zeroes the states `reset=False` would carry on.
        self._last_shapes = {}

    @property
    def path(self) -> str:
        """The path of the `.tflite` file."""
        return self._path

    @property
    def ops(self) -> frozenset:
        """The names of the TFLite ops in the file (every subgraph)."""
        return self._ops

    @property
    def signatures(self) -> dict:
        """Each signature's inputs and outputs with their shapes and dtypes.

        Returns:
            A dict `{signature: {"inputs": {name: (shape, dtype)},
            "outputs": {name: (shape, dtype)}}}`; a dimension of `-1` in a
            shape is dynamic.
        """
        result = {}
        for key in self._interpreter.get_signature_list():
            runner = self._runner(key)
            result[key] = {
                "inputs": _describe(runner.get_input_details()),
                "outputs": _describe(runner.get_output_details()),
            }
        return result

    def __call__(self, inputs, *, reset: bool = True) -> np.ndarray:
        """Runs the whole-sequence signature `serving_default`.

        Args:
            inputs: Array of the model's input shape, `(batch_size, time, ...)`.
            reset: If `True` (default), each sequence starts from zero
                states. TFLite's native LSTM op (`export_tflite`'s
                `lstm_op`) keeps its states in the file between calls;
                `reset=False` carries them on, so that a long sequence can
                be fed in chunks, each call continuing where the last one
                ended (`keeps_states` says whether the file can).

        Returns:
            The model's output, a NumPy array.

        A file of one input and one output whose names are not `inputs` and
        `outputs` (converted with your own converter) runs too.
        """
        if not reset and not self.keeps_states:
            raise ValueError(
                f"TFLiteModel: reset=False carries the states of TFLite's native "
                f"LSTM op from one call to the next, but {self._path!r} has none "
                "(its loops start from zero at every call); to stream it, "
                "export it with streaming=True and call step()"
            )
        names = list(self._runner(SERVING).get_input_details())
        name = names[0] if len(names) == 1 else "inputs"
        shape = np.shape(inputs)
        if not reset and self._last_shapes.get(SERVING, shape) != shape:
            # The interpreter reallocates for a new shape, which zeroes the states.
            raise ValueError(
                f"TFLiteModel: with reset=False, every chunk must have the shape "
                f"of the one before ({self._last_shapes[SERVING]}), so that the "
                f"states carry on; got {shape}"
            )
        outputs = self._run(SERVING, {name: inputs}, reset)
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs["outputs"]

    @property
    def keeps_states(self) -> bool:
        """Whether the file keeps states between calls: the variable tensors
        of TFLite's native LSTM op, which `reset()` sets to zero."""
        return self._keeps_states

    def reset(self) -> None:
        """Sets the states the file keeps between calls (see `keeps_states`)
        to zero, as LiteRT's `reset_all_variables` does."""
        if self._keeps_states:
            self._interpreter.reset_all_variables()

    def run(self, signature: str, **inputs) -> dict:
        """Runs any signature on named NumPy inputs, from zero states.

        Args:
            signature: The signature's name, e.g. `"serving_default"`.
            **inputs: One array per input of the signature, by name.

        Returns:
            A dict of the signature's outputs, by name.
        """
        return self._run(signature, inputs, reset=True)

    def _run(self, signature, inputs, reset):
        runner = self._runner(signature)
        details = runner.get_input_details()
        missing = sorted(set(details) - set(inputs))
        unknown = sorted(set(inputs) - set(details))
        if missing or unknown:
            raise ValueError(
                f"TFLiteModel: signature '{signature}' takes inputs "
                f"{sorted(details)}, got {sorted(inputs)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        feed = {
            name: _as_input(signature, name, value, details[name])
            for name, value in inputs.items()
        }
        if reset:
            self.reset()
        self._last_shapes[signature] = np.shape(next(iter(feed.values())))
        try:
            return runner(**feed)
        except RuntimeError as error:
            if "gather index out of bounds" not in str(error):
                raise
            raise ValueError(self._gather_message(signature, feed)) from None

    def initial_states(self) -> dict:
        """Zero states for `step`: `{"<layer>_stm": ..., "<layer>_ltm": ...}`."""
        details = self._runner(STEP).get_input_details()
        return {
            name: np.zeros(detail["shape"], detail["dtype"])
            for name, detail in details.items()
            if name != "inputs"
        }

    def step(self, inputs, states: dict | None = None) -> tuple:
        """Runs one time step of the streaming signature `step`.

        Args:
            inputs: One time step, `(batch_size, features)` (or
                `(batch_size,)` token ids for a text model).
            states: The states the previous call returned; `None` starts from
                `initial_states()` (zeros).

        Returns:
            `(outputs, states)`: the model's output after this step and the
            new states, to pass to the next call.
        """
        if states is None:
            states = self.initial_states()
        if not isinstance(states, dict):
            raise TypeError(
                "TFLiteModel.step: states must be the dict that "
                f"initial_states() or step() returned, got {type(states).__name__}"
            )
        if "inputs" in states:
            raise ValueError(
                "TFLiteModel.step: states must hold only the states "
                f"{sorted(self.initial_states())}, got the key 'inputs' too; "
                "pass the time step as the first argument"
            )
        # The step's states are its inputs and outputs: nothing to reset.
        result = self._run(STEP, {"inputs": inputs, **states}, reset=False)
        outputs = result.pop("outputs")
        return outputs, result

    def _runner(self, signature):
        if signature not in self._runners:
            available = sorted(self._interpreter.get_signature_list())
            if signature not in available:
                hint = " (export it with streaming=True)" if signature == STEP else ""
                raise ValueError(
                    f"TFLiteModel: {self._path!r} has no signature "
                    f"'{signature}'{hint}; it has {available}"
                )
            self._runners[signature] = self._interpreter.get_signature_runner(signature)
        return self._runners[signature]

    def _gather_message(self, signature, feed):
        """Why a `GATHER` (an `Embedding`'s lookup) failed: the ids given
        against the rows of the file's embedding tables."""
        from ai_edge_litert import schema_py_generated as schema

        model = schema.ModelT.InitFromPackedBuf(self._content, 0)
        index = next(
            (
                s.subgraphIndex
                for s in model.signatureDefs or ()
                if _text(s.signatureKey) == signature
            ),
            0,
        )
        graph = model.subgraphs[index]
        rows = sorted(
            {
                int(graph.tensors[op.inputs[0]].shape[0])
                for op in graph.operators
                if _op_name(model.operatorCodes[op.opcodeIndex]) == "GATHER"
                and len(graph.tensors[op.inputs[0]].shape) == 2
            }
        )
        ids = ", ".join(
            f"'{name}' holds ids in [{array.min()}, {array.max()}]"
            for name, array in feed.items()
            if np.issubdtype(array.dtype, np.integer)
        )
        if rows:
            tables = " or ".join(str(r) for r in rows)
            expected = (
                f"its embedding table has {tables} rows, so ids must be below that"
            )
        else:
            expected = "the interpreter: gather index out of bounds"
        return (
            f"TFLiteModel: signature '{signature}' got token ids outside the "
            f"model's embedding ({expected}): {ids or 'no integer input'}"
        )

    def __repr__(self):
        return f"TFLiteModel({self._path!r})"


def _has_variable_tensors(content):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    return any(
        tensor.isVariable
        for graph in model.subgraphs or ()
        for tensor in graph.tensors or ()
    )


def _describe(details):
    return {
        name: (
            tuple(int(d) for d in detail["shape_signature"]),
            detail["dtype"].__name__,
        )
        for name, detail in details.items()
    }


def _as_input(signature, name, value, detail):
    """`value` as the dtype of the input, or an error if its shape is wrong."""
    array = np.asarray(value)
    expected = tuple(int(d) for d in detail["shape_signature"])
    if array.ndim != len(expected) or any(
        e != -1 and e != a for e, a in zip(expected, array.shape)
    ):
        raise ValueError(
            f"TFLiteModel: input '{name}' of signature '{signature}' must have "
            f"shape {expected} (-1: any size), got {array.shape}"
        )
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"TFLiteModel: input '{name}' of signature '{signature}' must hold "
            f"integers ({dtype.name}), got {array.dtype.name}"
        )
    if array.dtype.kind not in "biuf":  # bool, int, unsigned, float
        raise TypeError(
            f"TFLiteModel: input '{name}' of signature '{signature}' must hold "
            f"real numbers ({dtype.name}), got {array.dtype.name}"
        )
    if not array.size:
        raise ValueError(
            f"TFLiteModel: input '{name}' of signature '{signature}' is empty "
            f"(shape {array.shape}); it needs at least one sequence and one "
            "time step"
        )
    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise ValueError(
                f"TFLiteModel: input '{name}' of signature '{signature}' holds "
                f"values outside {dtype.name} ([{array.min()}, {array.max()}]); "
                "they would wrap around"
            )
    return array.astype(dtype, copy=False)
