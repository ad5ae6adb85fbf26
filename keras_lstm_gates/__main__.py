"""Command line: `python -m keras_lstm_gates export MODEL.keras ...`.

Exports a saved Keras model to a SavedModel and/or a TFLite file and prints
what it wrote, the TFLite ops, the size and the measured parity with Keras.
A missing, unreadable or non-Keras model file, or an output that cannot be
written, is a one-line `error: ...` and exit status 1; a malformed command
line is argparse's usage and error, exit status 2. TensorFlow's C++ start-up
log (oneDNN, CUDA) is hidden unless asked for: `--verbose`, or your own
`TF_CPP_MIN_LOG_LEVEL` (see `_startup_log`).
"""

import argparse
import contextlib
import dataclasses
import os
import sys
import zipfile

from keras_lstm_gates._checks import LSTM_OP_OPTIONS
from keras_lstm_gates._output_files import atomic_target
from keras_lstm_gates._output_files import check_target


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_lstm_gates",
        description="Tools for keras-lstm-gates models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="export a .keras model to a SavedModel and/or a TFLite file",
        description=(
            "Export a saved Keras model (.keras) to a SavedModel directory "
            "and/or a TFLite file of builtin ops only, and print the ops, the "
            "size and the measured difference from the Keras model."
        ),
    )
    export.add_argument("model", help="the .keras file to export")
    export.add_argument("--saved-model", metavar="DIR", help="write a SavedModel here")
    export.add_argument("--tflite", metavar="FILE", help="write a .tflite file here")
    export.add_argument(
        "--quantize",
        choices=("dynamic", "float16", "int8"),
        help=(
            "quantize the TFLite file (default: float32): the weights "
            "(dynamic, float16), or weights and activations (int8, which needs "
            "--representative-data)"
        ),
    )
    export.add_argument(
        "--representative-data",
        metavar="FILE.npy",
        help=(
            "for --quantize int8: a .npy array of typical inputs, shape "
            "(samples,) + the model's input shape, to calibrate the activations"
        ),
    )
    export.add_argument(
        "--lstm-op",
        choices=LSTM_OP_OPTIONS,
        default=None,
        help=(
            "what LSTM layers become in the TFLite file: TFLite's native "
            "UNIDIRECTIONAL_SEQUENCE_LSTM op (native; classic cells and "
            "keras.layers.LSTM without a mask), a WHILE loop (loop), or the "
            "native op where it pays, for int8 (auto, the default)"
        ),
    )
    export.add_argument(
        "--streaming",
        action="store_true",
        help="add the TFLite 'step' signature for step-by-step inference",
    )
    export.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="fixed batch size (TFLite default 1; SavedModel default: any)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs"
    )
    # Read by `_startup_log` when the package is imported, before TensorFlow.
    export.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's C++ start-up log (oneDNN, CUDA)",
    )
    return parser


def _check_paths(args):
    """Checks the files before loading the model, so mistakes answer at once."""
    path = args.model
    if os.path.isdir(path):
        raise IsADirectoryError(f"model file {path!r} is a directory")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"model file {path!r} is not readable")
    if not path.endswith(".keras"):
        raise ValueError(f"model file {path!r} must be a .keras file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"model file {path!r} is not a .keras archive (a zip file)")
    # Real paths: a folder reached through a link is still the same folder.
    model = os.path.realpath(path)
    if args.saved_model and args.tflite:
        saved_model = os.path.realpath(args.saved_model)
        tflite = os.path.realpath(args.tflite)
        if tflite == saved_model or tflite.startswith(saved_model + os.sep):
            raise ValueError(
                f"--tflite {args.tflite!r} would be written into --saved-model "
                f"{args.saved_model!r}; give two separate paths"
            )
    for option, target, directory in (
        ("--saved-model", args.saved_model, True),
        ("--tflite", args.tflite, False),
    ):
        if not target:
            continue
        real = os.path.realpath(target)
        if real == model or (directory and model.startswith(real + os.sep)):
            raise ValueError(
                f"{option} {target!r} would replace the model file {path!r} itself"
            )
        if os.path.lexists(target) and not args.overwrite:
            raise FileExistsError(
                f"{option} {target!r} already exists; pass --overwrite to replace it"
            )
        # The export's own checks: the parent folder, what overwriting replaces.
        check_target(option, target, True, directory=directory)


def _representative_data(args, model):
    """The array of `--representative-data`, checked against `model`, or
    `None`."""
    path = args.representative_data
    if path is None:
        return None
    import numpy as np

    from keras_lstm_gates._checks import check_representative_data

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--representative-data {path!r} is not a file")
    try:
        # No pickles: a .npy file of numbers cannot run code as it loads.
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"--representative-data {path!r} is not a .npy array of numbers "
            f"({' '.join(str(error).split())})"
        ) from None
    batch_size = 1 if args.batch_size is None else args.batch_size
    return check_representative_data(
        model, data, batch_size, name=f"--representative-data {path!r}"
    )


def _load_model(path):
    import keras

    try:
        # Not compiled: an export needs no optimizer (and would warn that
        # its state was not restored).
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"cannot read {path!r} as a Keras model: {type(error).__name__}"
            + (f": {reason}" if reason else "")
        ) from None
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path!r} holds a {type(model).__name__}, not a Keras model")
    return model


def _export(args):
    _check_paths(args)
    import keras_lstm_gates.export as export

    model = _load_model(args.model)
    # The TFLite file first: it is what a model may be refused for (a layer
    # that cannot stream, an op with no TFLite builtin), before anything is
    # written. It waits beside its path until the SavedModel is written too:
    # a failed command replaces nothing.
    lines = []
    with contextlib.ExitStack() as outputs:
        if args.tflite:
            target = os.path.abspath(args.tflite)
            staging = outputs.enter_context(atomic_target(target, directory=False))
            report = export.export_tflite(
                model,
                staging,
                batch_size=1 if args.batch_size is None else args.batch_size,
                quantize=args.quantize,
                representative_data=_representative_data(args, model),
                streaming=args.streaming,
                lstm_op=args.lstm_op or "auto",
            )
            lines.append(str(dataclasses.replace(report, path=target)))
        if args.saved_model:
            path = export.export_saved_model(
                model,
                args.saved_model,
                batch_size=args.batch_size,
                overwrite=args.overwrite,
            )
            lines.insert(0, f"wrote SavedModel {path} (signature serving_default)")
    print("\n".join(lines))


def main(argv=None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.saved_model or args.tflite):
        parser.error("give --saved-model DIR and/or --tflite FILE")
    tflite_options = (
        args.quantize,
        args.streaming,
        args.representative_data,
        args.lstm_op,
    )
    if any(tflite_options) and not args.tflite:
        parser.error(
            "--quantize, --representative-data, --lstm-op and --streaming "
            "apply to --tflite only"
        )
    if (args.quantize == "int8") != (args.representative_data is not None):
        parser.error(
            "--quantize int8 and --representative-data FILE.npy go together: "
            "int8 calibrates its activations on that data"
        )
    try:
        _export(args)
    except (OSError, ValueError, TypeError, RuntimeError) as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
