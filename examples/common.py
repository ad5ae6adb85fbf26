"""Helpers shared by the three examples.

The command line every example takes, the output folder (never overwritten
without `--overwrite`), early stopping, the plots, `metrics.json`, the
results table and the exports. Each example script imports this module and
keeps only what is particular to its task.
"""

import argparse
import json
import os
import tarfile
import zipfile
from pathlib import Path

# Before keras: for the example scripts, keras_lstm_gates imports TensorFlow
# without its C++ start-up log unless asked (`--verbose`, or your own
# TF_CPP_MIN_LOG_LEVEL); see keras_lstm_gates/_startup_log.py.
import keras_lstm_gates  # noqa: F401

# isort: split
import keras
import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

# Errors the examples raise for bad input (a missing file, a missing column,
# too few classes or rows, an existing output folder). They are reported as
# one line and a non-zero exit; any other error keeps its trace.
INPUT_ERRORS = (ValueError, TypeError, OSError)

# How the plots and tables name the two recurrent layers.
MODEL_NAMES = {"four_gate": "FourGateLSTM", "keras_lstm": "keras.layers.LSTM"}

# Samples and epochs of a `--quick` smoke run.
QUICK_SAMPLES = 400
QUICK_EPOCHS = 1


def build_parser(task, description, *, epochs, batch_size, units):
    """Returns the argument parser with the flags every example takes.

    Args:
        task: The task's name, for the default output folder `runs/<task>`.
        description: The example's module docstring: its `Title:` and
            `Description:` lines become the text of `--help`.
        epochs: Default of `--epochs`.
        batch_size: Default of `--batch-size`.
        units: Default of `--units`.

    Returns:
        An `argparse.ArgumentParser`; examples add their own flags to it.
    """
    parser = argparse.ArgumentParser(
        prog=f"{task}.py",
        description=_help_text(description),
        formatter_class=_DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=epochs,
        help="most epochs to train (early stopping may end sooner)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help="samples per step"
    )
    parser.add_argument(
        "--units", type=positive_int, default=units, help="size of the LSTM state"
    )
    parser.add_argument(
        "--seed",
        type=seed_int,
        default=1337,
        help="seed of the weights, the data split and dropout",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs") / task,
        help="where the model, exports, plots and metrics.json are written",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of a previous run in --output-dir",
    )
    parser.add_argument("--csv", type=Path, help="train on your own CSV file instead")
    parser.add_argument(
        "--compare-keras-lstm",
        action="store_true",
        help="also train a keras.layers.LSTM of the same size on the same split",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: about {QUICK_SAMPLES} samples, {QUICK_EPOCHS} epoch",
    )
    parser.add_argument(
        "--patience",
        type=positive_int,
        default=5,
        help="epochs without a better validation loss before stopping early",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where downloads are cached (default: ~/.keras)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's C++ start-up log (oneDNN, CUDA)",
    )
    return parser


def _help_text(docstring):
    """The `Title:` and `Description:` of a keras.io-style docstring, as one
    paragraph."""
    header = " ".join(docstring.strip().split("\n\n")[0].split())
    title, _, description = header.partition(" Description: ")
    if not description:
        return header
    return f"{title.removeprefix('Title: ')}. {description}"


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in `--help`, but not `None` (the help says what then)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def seed_int(text):
    """An `argparse` type: a seed for `keras.utils.set_random_seed`."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32 - 1], got {value}")
    return value


def given_flags(args, *flags):
    """The `flags` (`"--cache-dir"`, ...) given a value on the command line
    (not `None`)."""
    return [f for f in flags if getattr(args, f[2:].replace("-", "_")) is not None]


def positive_int(text):
    """An `argparse` type: a positive int."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def exit_with_error(parser, error):
    """Ends the program with a one-line error message and exit status 2."""
    parser.exit(2, f"{parser.prog}: error: {error}\n")


def read_csv(path, flag="--csv", **kwargs):
    """Reads a CSV with `pandas.read_csv`, naming the file in every error.

    Args:
        path: The file given as `flag`.
        flag: The command-line flag, for the messages.
        **kwargs: Passed to `pandas.read_csv`.

    Returns:
        A `pandas.DataFrame` with at least one row.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder, not a CSV file")
    if not path.is_file():
        raise FileNotFoundError(f"{flag}: no such file: {path}")
    try:
        frame = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{flag} {path} is empty") from None
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{flag} {path} is not UTF-8 text ({error.reason} at byte "
            f"{error.start}); save it as UTF-8"
        ) from None
    except pd.errors.ParserError as error:
        raise ValueError(
            f"{flag} {path} is not a readable CSV: {first_line(error)}"
        ) from None
    if frame.empty:
        raise ValueError(
            f"{flag} {path} has no rows of data, only the header {list(frame.columns)}"
        )
    return frame


def download(fname, origin, cache_dir=None, extract=False, file_hash=None):
    """`keras.utils.get_file`, cached, verified, with errors a user can act on.

    Args:
        fname: The file's name in the cache (`<cache_dir>/datasets/`).
        origin: Its URL.
        cache_dir: `--cache-dir`, created if missing (`keras.utils.get_file`
            would quietly use `/tmp/.keras` instead); `None` for `~/.keras`.
        extract: Whether the file is an archive to extract (once: later
            calls return the folder it was extracted to).
        file_hash: The file's published sha256, or `None` where there is
            none. A cached file that differs is downloaded again; a
            downloaded one that differs is refused as damaged.

    Returns:
        The path of the file, or of the folder it was extracted to.
    """
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        if cache_dir.exists() and not cache_dir.is_dir():
            raise NotADirectoryError(f"--cache-dir {cache_dir} is a file, not a folder")
        cache_dir.mkdir(parents=True, exist_ok=True)
    home = os.environ.get("KERAS_HOME", Path("~/.keras").expanduser())
    cached = Path(cache_dir or home) / "datasets" / fname
    # get_file extracts the archive again at every call (IMDB: 100,000
    # files); a mark left after a whole extraction of the verified archive
    # skips that, as long as the archive is there (deleting a damaged one
    # extracts afresh). The mark holds the hash it was verified against.
    extracted = cached.with_name(fname.split(".")[0] + "_extracted")
    done = extracted / ".extracted"
    verified = file_hash or ""
    if extract and cached.is_file() and done.is_file():
        if done.read_text() == verified:
            return os.fspath(extracted)
    if extract:
        done.unlink(missing_ok=True)
    try:
        path = keras.utils.get_file(
            fname=fname,
            origin=origin,
            extract=extract,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            file_hash=file_hash,
            hash_algorithm="sha256",
        )
    except (EOFError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise damaged_download(cached, error) from None
    except ValueError as error:  # the downloaded file is not the published one
        raise damaged_download(cached, error) from None
    except Exception as error:  # get_file raises a bare Exception on failure
        raise OSError(
            f"could not download {fname} from {origin} ({first_line(error)}); "
            "without internet, pass --csv with a local copy of the data"
        ) from None
    if extract and Path(path) == extracted:
        done.write_text(verified)
    return path


def damaged_download(path, reason):
    """The error for a cached download that cannot be read."""
    return ValueError(
        f"the downloaded file {path} is damaged or not what was expected "
        f"({first_line(reason)}); delete it and run again to download it afresh"
    )


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def check_output_dir(path, overwrite):
    """Refuses an output folder that is a file or holds a previous run.

    Creates nothing, so an example calls it before it loads its data and
    creates the folder (`prepare_output_dir`) only once the data are checked.

    Args:
        path: The folder given as `--output-dir`.
        overwrite: Whether `--overwrite` was given.

    Returns:
        The folder, as a `Path`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--output-dir {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"--output-dir {path} already holds files of a previous run; "
            "pass --overwrite to replace them, or choose another --output-dir"
        )
    return path


def prepare_output_dir(path, overwrite):
    """Creates the output folder, refusing to reuse a previous run's folder.

    Args:
        path: The folder given as `--output-dir`.
        overwrite: Whether `--overwrite` was given. Only the files the
            example writes are replaced; other files in the folder are kept.

    Returns:
        The folder, as a `Path`.
    """
    path = check_output_dir(path, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    return path


def quick_settings(args):
    """Applies `--quick`: one epoch (the sample count is each example's)."""
    if args.quick:
        args.epochs = QUICK_EPOCHS


def train(model, train_data, validation_data, args, kind=None):
    """Fits `model` with early stopping on the validation loss.

    Args:
        model: A compiled Keras model.
        train_data: `(x, y)` NumPy arrays of the training split.
        validation_data: `(x, y)` NumPy arrays of the validation split.
        args: The parsed command line (`epochs`, `batch_size`, `patience`).
        kind: The model's kind (`"four_gate"`, `"keras_lstm"`), printed as a
            heading above Keras's progress bars.

    Returns:
        The `keras.callbacks.History`; the model holds the weights of the
        epoch with the best validation loss.
    """
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss",
        patience=args.patience,
        restore_best_weights=True,
    )
    if kind is not None:
        print(f"\nTraining {MODEL_NAMES.get(kind, kind)}")
    return model.fit(
        *train_data,
        validation_data=validation_data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        callbacks=[early_stopping],
        verbose=1 if os.isatty(1) else 2,
    )


def snapshot(folder):
    """The names in `folder` and their modification times, to compare with
    later (`report_written`)."""
    folder = Path(folder)
    return (
        {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        if folder.is_dir()
        else {}
    )


def report_written(folder, before):
    """Prints what this run wrote in `folder` (new or changed since the
    `snapshot` `before`), and what was already there and kept."""
    now = snapshot(folder)
    written = sorted(n for n, t in now.items() if before.get(n) != t)
    kept = sorted(n for n in now if n not in written)
    print(f"\nWrote {folder}: {', '.join(written)}")
    if kept:
        print(f"Kept from before in {folder}: {', '.join(kept)}")


def write_metrics(metrics, output_dir):
    """Writes `metrics` to `output_dir/metrics.json` and returns its path."""
    path = Path(output_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path


def print_table(title, rows):
    """Prints `(name, value)` rows as a two-column table under `title`."""
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    for name, value in rows:
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {name:<{width}}  {shown}")


def export_model(model, output_dir, *, streaming=False, saved_model=True):
    """Exports `model` as a SavedModel and a TFLite file in `output_dir`.

    Args:
        model: The trained Keras model (not under a distribution strategy).
        output_dir: The run's folder; writes `saved_model/` and
            `model.tflite` there, replacing a previous run's.
        streaming: Whether the TFLite file also gets the `step` signature
            that takes one time step at a time.
        saved_model: Whether to write the SavedModel (the text examples
            write their own, which takes raw strings).

    Returns:
        A dict for `metrics.json`: the paths, the TFLite file's size, its
        ops and its measured largest difference from the Keras model.
    """
    from keras_lstm_gates.export import export_saved_model
    from keras_lstm_gates.export import export_tflite

    output_dir = Path(output_dir)
    results = {}
    print(
        "\nExporting "
        + ("the SavedModel and " if saved_model else "")
        + "the TFLite file"
    )
    if saved_model:
        path = export_saved_model(model, output_dir / "saved_model", overwrite=True)
        results["saved_model"] = str(path)
    report = export_tflite(
        model, output_dir / "model.tflite", streaming=streaming, overwrite=True
    )
    results.update(
        tflite=str(report.path),
        tflite_size_bytes=int(report.size_bytes),
        tflite_ops=sorted(report.ops),
        tflite_max_abs_diff=float(report.max_abs_diff),
    )
    if streaming:
        results["tflite_step_max_abs_diff"] = float(report.step_max_abs_diff)
    return results


def plot_history(histories, path):
    """Plots the training and validation loss of each model per epoch.

    Args:
        histories: Dict from a model's kind (`"four_gate"`, `"keras_lstm"`)
            to its `History`.
        path: Where to write the PNG.
    """
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for (kind, history), color in zip(histories.items(), ("C0", "C1")):
        name = MODEL_NAMES.get(kind, kind)
        loss = history.history["loss"]
        epochs = np.arange(1, len(loss) + 1)
        # Markers: a run of one epoch (`--quick`) is a point, not a line.
        axes.plot(epochs, loss, color=color, marker="o", label=f"{name} train")
        axes.plot(
            epochs,
            history.history["val_loss"],
            color=color,
            linestyle="--",
            marker="o",
            label=f"{name} validation",
        )
    locator = matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1)
    axes.xaxis.set_major_locator(locator)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.legend()
    axes.set_title("Training curves")
    _save(figure, path)


def plot_forecast(truth, forecasts, path, ylabel="value", steps=24 * 7):
    """Plots the first `steps` test targets against each forecast.

    Args:
        truth: The true values of the test split, in time order.
        forecasts: Dict from a forecaster's name to its predictions.
        path: Where to write the PNG.
        ylabel: The name of the target, for the axis.
        steps: How many test windows to show.
    """
    figure, axes = plt.subplots(figsize=(8, 3.5))
    axes.plot(truth[:steps], color="black", linewidth=2, label="truth")
    for name, values in forecasts.items():
        axes.plot(values[:steps], linewidth=1, label=name)
    axes.set_xlabel("test step")
    axes.set_ylabel(ylabel)
    axes.legend()
    axes.set_title("Forecast against truth on the test split")
    _save(figure, path)


def plot_gates(trace, path, title, max_units=16):
    """Plots the gate activations of one input, one heatmap per gate.

    Args:
        trace: The dict from `keras_lstm_gates.trace_gates` for a batch of
            one input.
        path: Where to write the PNG.
        title: The figure's title.
        max_units: Plot at most this many units.
    """
    names = ("N", "i", "f", "LTM", "U", "V", "STM")
    figure, axes = plt.subplots(len(names), 1, figsize=(8, 10), sharex=True)
    for axis, name in zip(axes, names):
        values = trace[name][0, :, :max_units].T
        limit = max(float(np.abs(values).max()), 1e-6)
        low = 0.0 if name in ("i", "f", "V") else -limit
        high = 1.0 if name in ("i", "f", "V") else limit
        image = axis.imshow(
            values,
            aspect="auto",
            cmap="viridis" if low == 0.0 else "coolwarm",
            vmin=low,
            vmax=high,
            interpolation="nearest",
        )
        axis.set_ylabel(name)
        axis.set_yticks([])
        figure.colorbar(image, ax=axis, pad=0.01)
    axes[-1].set_xlabel("time step")
    figure.suptitle(title)
    _save(figure, path)


def plot_confusion_matrix(matrix, classes, path):
    """Plots a confusion matrix (rows: true class, columns: predicted)."""
    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(1.2 * len(classes) + 2, len(classes) + 1.5))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2
    for row in range(len(classes)):
        for column in range(len(classes)):
            axes.text(
                column,
                row,
                str(matrix[row, column]),
                ha="center",
                va="center",
                color="white" if matrix[row, column] > threshold else "black",
            )
    axes.set_title("Confusion matrix on the test split")
    _save(figure, path)


def _save(figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
