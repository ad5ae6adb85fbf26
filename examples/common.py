"""Helpers shared by the three examples.

The command line every example takes (or, in a notebook, `KLG_ARGS`), the
checks of a user's CSV, verified downloads, the output folder (never
overwritten without `--overwrite`), early stopping, the plots (shown in a
notebook as well), the gate paragraph, `metrics.json`, the results table and
the exports. Each example imports this module and keeps what a learner reads:
its data, its model, its training, evaluation, gates and export.
"""

import argparse
import json
import os
import shlex
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd

# Before keras: for the example scripts, keras_lstm_gates imports TensorFlow
# without its C++ start-up log unless asked (`--verbose`, or your own
# TF_CPP_MIN_LOG_LEVEL); see keras_lstm_gates/_startup_log.py. In a notebook
# the program is the Jupyter kernel, so the import is told it runs for this
# file, with the notebook's settings (KLG_ARGS) as its command line.
_kernel_argv = sys.argv
if "ipykernel" in sys.modules:
    sys.argv = [__file__, *shlex.split(os.environ.get("KLG_ARGS", ""))]
try:
    import keras_lstm_gates  # noqa: F401
finally:
    sys.argv = _kernel_argv

import keras  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

# Errors the examples raise for bad input (a missing file, a missing column,
# too few classes or rows, an existing output folder). They are reported as
# one line and a non-zero exit; any other error keeps its trace.
INPUT_ERRORS = (ValueError, TypeError, OSError)

# How the plots and tables name the two recurrent layers.
MODEL_NAMES = {"four_gate": "FourGateLSTM", "keras_lstm": "keras.layers.LSTM"}

# The choices of `--use-gate`, the lesson's first (FourGateLSTM's `use_gate`).
USE_GATES = ("projected", "classic")

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
        "--use-gate",
        choices=USE_GATES,
        default="projected",
        help="FourGateLSTM's Use gate: the lesson's (projected: a learned "
        "projection of the Forget gate's output) or the textbook LSTM's "
        "(classic: exactly keras.layers.LSTM)",
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
    """The title and description of an example's header, as one paragraph.

    The header is the module docstring, which is also the notebook's first
    (Markdown) cell: `# Title`, then `**Description:** ...`.
    """
    paragraphs = docstring.strip().split("\n\n")
    title = paragraphs[0].strip().lstrip("#").strip()
    description = next(
        (p for p in paragraphs[1:] if p.startswith("**Description:**")), ""
    )
    description = " ".join(description.removeprefix("**Description:**").split())
    return f"{title}. {description}" if description else title


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


def in_notebook():
    """Whether this runs in a Jupyter kernel, where plots are shown as well as
    saved, and the settings come from `command_line`'s variable."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def command_line():
    """An example's arguments: the command line's, or in a notebook (where
    `sys.argv` is the kernel's) those of the `KLG_ARGS` environment variable,
    split as a shell would (`KLG_ARGS="--quick --units 8"`)."""
    if in_notebook():
        return shlex.split(os.environ.get("KLG_ARGS", ""))
    return sys.argv[1:]


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


def read_time_series(path, time_column, target_column, feature_columns=None):
    """Reads a series of readings from a CSV, checking every column it needs.

    Args:
        path: The file given as `--csv`.
        time_column: `--time-column`: the time stamps.
        target_column: `--target-column`: the value to forecast.
        feature_columns: `--feature-columns`: the columns a model reads
            (default: every numeric one); the target is always among them.

    Returns:
        `(frame, time_column, target_column, feature_columns)`, the frame
        sorted in time. Uneven time steps are allowed, with a printed note.
    """
    if time_column is None or target_column is None:
        raise ValueError("--csv needs --time-column and --target-column")
    frame = read_csv(path)
    feature_columns = list(feature_columns or [])
    for column in [time_column, target_column, *feature_columns]:
        if column not in frame.columns:
            raise ValueError(
                f"--csv {path}: no column {column!r}; its columns are "
                f"{list(frame.columns)}"
            )
    _check_numeric(frame, "--target-column", target_column)
    if feature_columns:
        for column in feature_columns:
            _check_numeric(frame, "--feature-columns", column)
    else:
        feature_columns = [
            c
            for c in frame.columns
            if c != time_column and pd.api.types.is_numeric_dtype(frame[c])
        ]
    if target_column not in feature_columns:
        feature_columns = [target_column, *feature_columns]
    if pd.api.types.is_numeric_dtype(frame[time_column]):
        # pandas would read them as nanoseconds since 1970: all one hour.
        raise ValueError(
            f"--time-column {time_column!r} holds numbers, not time stamps such "
            "as 2001-01-01 01:00; convert them first (Unix seconds: "
            "pandas.to_datetime(values, unit='s'))"
        )
    try:
        frame[time_column] = pd.to_datetime(frame[time_column])
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"--time-column {time_column!r} does not hold time stamps: "
            f"{first_line(error)}"
        ) from None
    # Row 1 of the file is the header, so the first reading is on row 2.
    blank = np.flatnonzero(frame[time_column].isna()) + 2
    if len(blank):
        raise ValueError(
            f"--time-column {time_column!r} is blank or not a time stamp on "
            f"{len(blank)} rows of {path}: rows {', '.join(map(str, blank[:5]))}"
            f"{', ...' if len(blank) > 5 else ''} (row 1 is the header); fill "
            "or drop them first"
        )
    missing = frame[feature_columns].isna().sum()
    if missing.any():
        raise ValueError(
            f"--csv {path}: missing values in {missing[missing > 0].to_dict()}; "
            "fill or drop them first"
        )
    infinite = (~np.isfinite(frame[feature_columns])).sum()
    if infinite.any():
        raise ValueError(
            f"--csv {path}: infinite values in {infinite[infinite > 0].to_dict()}; "
            "fix or drop them first"
        )
    frame = frame.sort_values(time_column, kind="stable").reset_index(drop=True)
    times = frame[time_column]
    repeated = times[times.duplicated()]
    if len(repeated):
        raise ValueError(
            f"--time-column {time_column!r}: {len(repeated)} time stamps of {path} "
            f"appear more than once (first: {repeated.iloc[0]}); one reading per "
            "time stamp, please"
        )
    _report_gaps(times, time_column)
    return frame, time_column, target_column, feature_columns


def _check_numeric(frame, flag, column):
    """Raises, naming the first value that is not a number, if `column` is not
    numeric."""
    if pd.api.types.is_numeric_dtype(frame[column]):
        return
    values = frame[column]
    bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
    if bad.empty:  # not text (say, time stamps): no single value to name
        raise ValueError(f"{flag} {column!r} must be numeric, got {values.dtype}")
    raise ValueError(
        f"{flag} {column!r} must be numeric, got {bad.iloc[0]!r} on row "
        f"{bad.index[0] + 2} (row 1 is the header)"
    )


def _report_gaps(times, time_column):
    """Prints a note if the readings are not evenly spaced: a window across
    a gap holds readings further apart than the rest."""
    steps = times.diff().dropna()
    if steps.empty:
        return
    usual = steps.mode().iloc[0]
    gaps = steps[steps > usual]
    if len(gaps):
        print(
            f"Note: --time-column {time_column!r} is not evenly spaced: "
            f"{len(gaps)} gap{'s' * (len(gaps) > 1)} longer than the usual "
            f"{usual} (the longest "
            f"{gaps.max()}, after {times[gaps.idxmax() - 1]}); windows across a "
            "gap see readings further apart than the rest"
        )


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


def export_model(
    model, output_dir, *, streaming=False, saved_model=True, lstm_op="auto"
):
    """Exports `model` as a SavedModel and a TFLite file in `output_dir`.

    Args:
        model: The trained Keras model (not under a distribution strategy).
        output_dir: The run's folder; writes `saved_model/` and
            `model.tflite` there, replacing a previous run's.
        streaming: Whether the TFLite file also gets the `step` signature
            that takes one time step at a time.
        saved_model: Whether to write the SavedModel (the text examples
            write their own, which takes raw strings).
        lstm_op: `export_tflite`'s `lstm_op`: `"native"` makes each LSTM
            TFLite's own LSTM op, `"auto"` keeps float32 loops.

    Returns:
        A dict for `metrics.json`: the paths, the TFLite file's size, its
        ops, what each recurrent layer became in it and its measured
        largest difference from the Keras model.
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
        model,
        output_dir / "model.tflite",
        streaming=streaming,
        lstm_op=lstm_op,
        overwrite=True,
    )
    results.update(
        tflite=str(report.path),
        tflite_size_bytes=int(report.size_bytes),
        tflite_ops=sorted(report.ops),
        tflite_recurrent_ops=dict(report.recurrent_ops),
        tflite_max_abs_diff=float(report.max_abs_diff),
    )
    if streaming:
        results["tflite_step_max_abs_diff"] = float(report.step_max_abs_diff)
    return results


def run_tflite(path, inputs):
    """Runs a TFLite file of batch size 1 on each of `inputs`, one invoke
    each, in one thread.

    Args:
        path: The `.tflite` file.
        inputs: The inputs, `(n, ...)`.

    Returns:
        `(outputs, latency_us)`: the `n` outputs, stacked, and the fastest
        invoke in microseconds (the one least disturbed by whatever else the
        machine runs).
    """
    from keras_lstm_gates import TFLiteModel

    tflite = TFLiteModel(path, num_threads=1)
    tflite(inputs[:1])  # the first invoke allocates the tensors
    outputs, seconds = [], []
    for one in inputs:
        start = time.perf_counter()
        outputs.append(tflite(one[None]))
        seconds.append(time.perf_counter() - start)
    return np.concatenate(outputs), 1e6 * min(seconds)


def print_columns(title, header, rows):
    """Prints `rows` of strings as a table under `title`, `header` first."""
    rows = [header, *rows]
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    print(f"\n{title}")
    for row in rows:
        print("  " + "  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip())


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


def plot_gates(
    trace, path, title, labels=None, xlabel="time step", tick_every=1, max_units=16
):
    """Plots the gate activations of one input, one heatmap per gate.

    Args:
        trace: The dict from `keras_lstm_gates.trace_gates` for a batch of
            one input.
        path: Where to write the PNG.
        title: The figure's title (wrapped to the figure's width).
        labels: One label per step for the x-axis, in the input's language
            (the tokens, the hours); default: the step numbers.
        xlabel: The x-axis' name.
        tick_every: Label every this many steps.
        max_units: Plot at most this many units.
    """
    names = ("N", "i", "f", "LTM", "U", "V", "STM")
    steps = trace["f"].shape[1]
    labels = [str(k) for k in range(steps)] if labels is None else list(labels)
    width = min(max(8.0, 0.3 * steps / tick_every + 2), 20.0)
    figure, axes = plt.subplots(len(names), 1, figsize=(width, 11), sharex=True)
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
    ticks = range(0, steps, tick_every)
    axes[-1].set_xticks(ticks, [labels[k] for k in ticks], rotation=90)
    axes[-1].set_xlabel(xlabel)
    figure.suptitle(textwrap.fill(title, int(width * 11)))
    _save(figure, path)


def describe_gates(trace, labels, step_name, quote=True):
    """The gate paragraph: what each gate did on one input, in numbers.

    Each gate is averaged over the units, step by step; the paragraph names
    the steps where the forget gate let go most, the learn gate's `i` opened
    most, the long-term memory moved most and the use gate's `V` opened
    most.

    Args:
        trace: The dict from `keras_lstm_gates.trace_gates` for a batch of
            one input, cut to the input's own steps.
        labels: One name per step (the token, the hour).
        step_name: What a step is, in the plural (`"tokens"`, `"hours"`).
        quote: Whether to quote the names (tokens) or not (hours).

    Returns:
        `(paragraph, numbers)`: the text, and a dict of the numbers it
        quotes.
    """
    forget = trace["f"][0].mean(axis=-1)
    learn = trace["i"][0].mean(axis=-1)
    use = trace["V"][0].mean(axis=-1)
    ltm = trace["LTM"][0]
    # The long-term memory starts at zero (a layer that is not stateful).
    moved = np.abs(np.diff(ltm, axis=0, prepend=np.zeros_like(ltm[:1])))
    moved = moved.mean(axis=-1)

    numbers = {
        "steps": len(forget),
        "units": ltm.shape[-1],
        "forget_mean": float(forget.mean()),
        "use_mean": float(use.mean()),
    }
    for name, values, pick in (
        ("forget_min", forget, np.argmin),
        ("learn_max", learn, np.argmax),
        ("remember_max", moved, np.argmax),
        ("use_max", use, np.argmax),
    ):
        step = int(pick(values))
        numbers[name] = float(values[step])
        numbers[f"{name}_step"] = step
        numbers[f"{name}_at"] = repr(labels[step]) if quote else labels[step]
    paragraph = "\n".join(
        [
            f"What the gates did on this input (each averaged over its "
            f"{numbers['units']} units):",
            f"  Forget:   f kept {numbers['forget_mean']:.2f} of the long-term "
            f"memory per step on average over the {numbers['steps']} "
            f"{step_name}; it let go most at {numbers['forget_min_at']} "
            f"(f = {numbers['forget_min']:.2f}).",
            f"  Learn:    i opened most at {numbers['learn_max_at']} "
            f"(i = {numbers['learn_max']:.2f}): what was learned there counted most.",
            f"  Remember: the long-term memory moved most at "
            f"{numbers['remember_max_at']} (mean |change| "
            f"{numbers['remember_max']:.3f}).",
            f"  Use:      V was {numbers['use_mean']:.2f} on average, most open at "
            f"{numbers['use_max_at']} (V = {numbers['use_max']:.2f}), where the "
            "most of the long-term memory reached the output.",
        ]
    )
    return paragraph, numbers


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
    """Writes the figure; in a notebook, also shows it below the cell."""
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    if in_notebook():
        from IPython.display import Image
        from IPython.display import display

        display(Image(filename=os.fspath(path)))
