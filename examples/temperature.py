# %% [markdown]
"""
# Forecast the temperature with a four-gate LSTM

**Description:** Predict the temperature an hour ahead from the past two days of
weather readings, beat the persistence and linear baselines honestly, see what
the four gates did on one window of real weather, and export the model for a phone.

**Install** the package with the examples' extra, from a clone of the repository:

    pip install -e ".[examples]"

**Run it** as a script from the repository root (the default data ship with the
package, so this works offline; `--help` lists every flag):

    python examples/temperature.py
    python examples/temperature.py --horizon 3 --compare-keras-lstm
    python examples/temperature.py --use-gate classic   # the textbook LSTM cell
    python examples/temperature.py --data jena          # downloads 13 MB once
    python examples/temperature.py --csv my.csv --time-column time --target-column temp

or as the notebook `examples/temperature.ipynb`, the same code paired by jupytext
(its settings are in the last section, "Run it").

On several devices or machines, add `--distribute mirrored` or
`--distribute multiworker` (each machine runs the same command with its own
`TF_CONFIG`; the chief writes the outputs).
"""

# %% [markdown]
# ## Setup
#
# `common.py` and `distributed.py`, beside this file, hold the plumbing the three
# tutorials share: the command line, the checks of a user's CSV, downloads, the
# output folder, the plots and the exports.

# %%
from pathlib import Path

import common
import distributed
import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import export_tflite
from keras_lstm_gates import trace_gates
from keras_lstm_gates.datasets import load_greensboro_weather

JENA_URL = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
    "jena_climate_2009_2016.csv.zip"
)
# Not verified: no public source gives this archive's checksum (keras.io's
# weather example and TensorFlow's time-series tutorial download it without
# one), and a hash taken from a copy we downloaded would vouch for nothing.
JENA_SHA256 = None
# Rows of the series a `--quick` run keeps.
QUICK_ROWS = 1000
# Chronological split: the first 70 % trains, the next 15 % validates, the
# last 15 % tests.
SPLITS = (0.70, 0.15, 0.15)
# Training windows that calibrate the int8 file's ranges.
CALIBRATION_WINDOWS = 300

# %% [markdown]
# ## Load the data
#
# A table of readings in time order: a time column, the target column and the
# feature columns the model reads (the target among them). By default, one year
# of hourly observations at Greensboro airport, NC, shipped with the package.


# %%
def load_dataset(args):
    """Returns `(frame, time_column, target_column, feature_columns)`."""
    if args.csv is not None:
        ignored = common.given_flags(args, "--data", "--cache-dir")
        if ignored:
            raise ValueError(f"{', '.join(ignored)} do not apply with --csv")
        return common.read_time_series(
            args.csv, args.time_column, args.target_column, args.feature_columns
        )
    given = common.given_flags(
        args, "--time-column", "--target-column", "--feature-columns"
    )
    if given:
        raise ValueError(f"{', '.join(given)} apply only with --csv")
    if args.cache_dir is not None and args.data != "jena":
        raise ValueError(
            "--cache-dir applies only with --data jena (the default data ship "
            "with the package)"
        )
    if args.data == "jena":
        return load_jena(args.cache_dir)
    frame = load_greensboro_weather()
    return frame, "datetime", "temp_c", [c for c in frame.columns if c != "datetime"]


def load_jena(cache_dir=None, origin=JENA_URL, file_hash=JENA_SHA256):
    """Downloads (once) the Jena Climate 2009-2016 readings, one per hour."""
    fname = "jena_climate_2009_2016.csv.zip"
    folder = common.download(
        fname, origin, cache_dir, extract=True, file_hash=file_hash
    )
    path = Path(folder) / "jena_climate_2009_2016.csv"
    try:
        frame = pd.read_csv(path)
        frame["Date Time"] = pd.to_datetime(
            frame["Date Time"], format="%d.%m.%Y %H:%M:%S"
        )
    except (OSError, ValueError, KeyError) as error:
        raise common.damaged_download(Path(folder).with_name(fname), error) from None
    # The readings are every 10 minutes; keep the ones on the hour.
    frame = frame[frame["Date Time"].dt.minute == 0].reset_index(drop=True)
    # The wind speeds hold -9999 where the sensor failed (as TensorFlow's
    # time-series tutorial notes); a speed is never below 0, so those are 0.
    for column in ("wv (m/s)", "max. wv (m/s)"):
        if column in frame:
            frame[column] = frame[column].clip(lower=0.0)
    features = [c for c in frame.columns if c != "Date Time"]
    return frame, "Date Time", "T (degC)", features


# %% [markdown]
# ## Prepare the windows
#
# The model reads the features plus the hour of the day (as a point on a
# circle). The series is split in time before anything is fitted, so the test
# part lies entirely after the training part; the scaling is fitted on the
# training part only (and applied inside the model, by its `Normalization`
# layer).


# %%
def add_hour_of_day(frame, time_column, feature_columns):
    """Adds the hour of the day as sine and cosine columns."""
    hours = frame[time_column].dt.hour + frame[time_column].dt.minute / 60
    frame = frame.assign(
        hour_sin=np.sin(2 * np.pi * hours / 24), hour_cos=np.cos(2 * np.pi * hours / 24)
    )
    return frame, [*feature_columns, "hour_sin", "hour_cos"]


def split_in_time(frame, window, horizon):
    """Splits the rows 70/15/15 in time order; each part must hold a window."""
    needed = window + horizon
    ends = np.cumsum([int(round(f * len(frame))) for f in SPLITS[:2]])
    parts = np.split(np.arange(len(frame)), ends)
    if min(len(part) for part in parts) < needed:
        raise ValueError(
            f"too few rows for the window: {len(frame)} rows split 70/15/15 "
            f"leave {[len(p) for p in parts]}, but each part needs at least "
            f"--window {window} + --horizon {horizon} = {needed}"
        )
    return [frame.iloc[part] for part in parts]


def make_windows(part, feature_columns, target_column, window, horizon):
    """Cuts a part into `(inputs, targets, last_values)`.

    `inputs[k]` holds `window` consecutive readings, `targets[k]` the target
    `horizon` readings after the last of them, and `last_values[k]` the
    target at the last of them (the persistence forecast).
    """
    features = part[feature_columns].to_numpy("float32")
    target = part[target_column].to_numpy("float32")
    starts = np.arange(len(part) - window - horizon + 1)
    inputs = np.stack([features[s : s + window] for s in starts])
    return inputs, target[starts + window + horizon - 1], target[starts + window - 1]


def scaling_stats(train_part, feature_columns, train):
    """The training part's `(mean, variance, change_mean, change_std)`: the
    features' scaling going in, the predicted change's coming out."""
    features = train_part[feature_columns].to_numpy("float32")
    change = train[1] - train[2]
    return (
        features.mean(axis=0),
        features.var(axis=0) + 1e-6,
        float(change.mean()),
        float(change.std()),
    )


# %% [markdown]
# ## Build the model
#
# The model predicts the *change* of the target from the last reading to
# `horizon` readings later; the forecast is the last reading plus that change.
# (Predicting the value itself, the network spends its capacity copying the
# last reading: on the default data, 3 hours ahead, its test MAE was 1.68 °C
# against 1.50 °C for the change.) Readings in their own units go in, scaled
# by a `Normalization` layer holding the training part's mean and variance;
# the change comes out in the target's own units, through a `Rescaling` layer.
# So the exported model is used on a phone with no preprocessing code.
#
# `use_gate` (`--use-gate`) picks the cell's Use gate: `"projected"`, the
# lesson's, or `"classic"`, the textbook LSTM's, which TFLite runs as its own
# LSTM op (see the export).


# %%
def build_model(
    input_shape,
    stats,
    units,
    recurrent="four_gate",
    learning_rate=3e-3,
    use_gate="projected",
):
    mean, variance, target_mean, target_std = stats
    # A fixed name: the TFLite `step` signature names its states after it.
    if recurrent == "four_gate":
        rnn = FourGateLSTM(units, use_gate=use_gate, name="four_gate_lstm")
    else:
        rnn = keras.layers.LSTM(units, name="keras_lstm")
    model = keras.Sequential(
        [
            keras.Input(input_shape),
            # Scaling inside the model: the exported model takes raw readings.
            keras.layers.Normalization(mean=mean, variance=variance),
            rnn,
            keras.layers.Dense(1),
            keras.layers.Rescaling(scale=target_std, offset=target_mean),
        ],
        name=f"{recurrent}_forecaster",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="mse", metrics=["mae"]
    )
    return model


# %% [markdown]
# ## Train
#
# `model.fit` on the change, with early stopping on the validation part (the
# best epoch's weights restored). Under `--distribute`, the model is built and
# trained under a `tf.distribute` strategy, then copied out of it, so that what
# is evaluated and exported is the same whichever strategy trained it.


# %%
def train_model(kind, strategy, train, val, stats, args):
    """Trains one model under `strategy`; returns a copy outside it.

    The copy (same weights and optimizer state, no distribution) is what is
    evaluated, saved and exported, the same whichever `--distribute` trained
    it.
    """
    keras.utils.set_random_seed(args.seed)
    settings = dict(units=args.units, recurrent=kind, use_gate=args.use_gate)
    with strategy.scope():
        model = build_model(train[0].shape[1:], stats, **settings)
    # The targets: the change from the last reading.
    train, val = ((x, y - last) for x, y, last in (train, val))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        history = distributed.fit_across_workers(model, strategy, train, val, args)
    else:
        history = common.train(model, train, val, args, kind)
    copy = build_model(train[0].shape[1:], stats, **settings)
    copy.set_weights(model.get_weights())
    # The optimizer's state too, so that the saved model resumes training
    # where this one stopped (and loads without Keras's warning about it).
    copy.optimizer.build(copy.trainable_variables)
    for target, source in zip(copy.optimizer.variables, model.optimizer.variables):
        target.assign(keras.ops.convert_to_numpy(source))
    return copy, history


def forecast(model, windows):
    """The forecast on `(inputs, targets, last_values)`: last value + change."""
    inputs, _, last_values = windows
    return last_values + model.predict(inputs, verbose=0)[:, 0]


# %% [markdown]
# ## Evaluate against the baselines
#
# Persistence forecasts the last observed value. The linear model is least
# squares on the same window the network reads, fitted on the training part.
# A network that does not beat both has learned nothing worth its cost.


# %%
def linear_forecast(train_inputs, train_targets, test_inputs):
    mean = train_inputs.mean(axis=0)
    std = train_inputs.std(axis=0) + 1e-6

    def design(inputs):
        flat = ((inputs - mean) / std).reshape(len(inputs), -1)
        return np.hstack([flat, np.ones((len(inputs), 1), "float32")])

    weights, *_ = np.linalg.lstsq(design(train_inputs), train_targets, rcond=None)
    return design(test_inputs) @ weights


def evaluate(models, train, test):
    """Each forecaster's test forecasts, and `metrics.json`'s errors."""
    forecasts = {
        "persistence": test[2],
        "linear": linear_forecast(train[0], train[1], test[0]),
    }
    for kind, model in models.items():
        forecasts[common.MODEL_NAMES[kind]] = forecast(model, test)
    mae = {name: float(np.mean(np.abs(p - test[1]))) for name, p in forecasts.items()}
    rmse = {
        name: float(np.sqrt(np.mean((p - test[1]) ** 2)))
        for name, p in forecasts.items()
    }
    metrics = {
        "test_mae": mae["FourGateLSTM"],
        "test_rmse": rmse["FourGateLSTM"],
        "persistence_mae": mae["persistence"],
        "linear_mae": mae["linear"],
    }
    if "keras_lstm" in models:
        metrics["keras_lstm_test_mae"] = mae["keras.layers.LSTM"]
        metrics["keras_lstm_test_rmse"] = rmse["keras.layers.LSTM"]
    return forecasts, metrics


# %% [markdown]
# ## What the gates did on one window
#
# `trace_gates` runs the trained layer on the first test window and returns every
# gate's activation at every hour. The paragraph below the table is computed on
# that window: how much the forget gate kept, the hour where the learn gate's `i`
# opened most, where the long-term memory moved most, and how open the use gate
# was. The plot's x-axis is the window's hours.


# %%
def explain_gates(model, window, times, predicted, truth, target_column, path):
    """Traces, describes and plots the gates on one window of readings.

    Args:
        model: The trained forecaster.
        window: One input window, `(1, window, features)`, in raw units.
        times: The time stamps of the window's readings, then of the target.
        predicted: The model's forecast on it.
        truth: The reading it forecast.
        target_column: The target's name.
        path: Where to write the plot.

    Returns:
        The numbers the printed paragraph quotes.
    """
    normalization = model.layers[0]
    trace = trace_gates(model.get_layer("four_gate_lstm"), normalization(window))
    hours = [f"{t:%d %b %H:%M}" for t in times[:-1]]
    paragraph, numbers = common.describe_gates(trace, hours, "readings", quote=False)
    print(f"\n{paragraph}")
    common.plot_gates(
        trace,
        path,
        f"Gates over the {len(hours)} readings to {hours[-1]}: {target_column} "
        f"forecast for {times[-1]:%d %b %H:%M}: {predicted:.2f} (true {truth:.2f})",
        labels=hours,
        xlabel="time of the reading",
        tick_every=max(1, len(hours) // 8),
    )
    return numbers


# %% [markdown]
# ## Export
#
# `model.keras` resumes training; the SavedModel serves; `model.tflite`, in
# float32, takes raw readings and has the streaming `step` signature that takes
# one reading at a time with the two memories as its states, and its largest
# difference from Keras is measured.
#
# `model_int8.tflite` is the model in int8, weights and activations, for
# microcontrollers and integer-only accelerators (NPUs); its ranges are
# calibrated on a few hundred training windows. int8 quantizes its input with
# one scale for every feature, and the raw readings do not share one (the
# pressure near 1000 mbar, the hour's sine between -1 and 1): the hour and the
# temperature itself would be lost in the rounding. So the int8 file is the model after its
# `Normalization` layer, and reads scaled readings, `(reading - mean) / std`,
# with the mean and standard deviation `metrics.json` holds.
#
# What the LSTM becomes in a file depends on its Use gate. TFLite has one op for
# a whole textbook LSTM, `UNIDIRECTIONAL_SEQUENCE_LSTM`: with `--use-gate
# classic`, both files hold it, one op for the whole window, and the int8 file
# is the smallest, whatever the window's length. The lesson's projected Use
# gate is not that op: the float32 file runs the cell in a `WHILE` loop, and
# int8, whose calibration cannot run a loop, unrolls it: one copy of the step
# per reading, so the file grows with `--window`. Run the tutorial with each
# `--use-gate` to set the two cells' files side by side.


# %%
def export(model, train_inputs, test, output_dir, chief):
    """Saves the model and, on the chief, exports it in float32 and int8;
    returns the exports' paths, scaling and measurements."""
    model.save(output_dir / "model.keras")
    if not chief:
        return {}
    # The textbook cell becomes TFLite's own LSTM op; the lesson's, a loop.
    classic = model.get_layer("four_gate_lstm").cell.use_gate == "classic"
    exports = common.export_model(
        model, output_dir, streaming=True, lstm_op="native" if classic else "auto"
    )
    # int8 reads scaled readings: the model after its Normalization layer,
    # calibrated on training windows spread over the training part.
    normalization = model.layers[0]
    scaled_model = keras.Sequential(
        [keras.Input(model.input_shape[1:]), *model.layers[1:]],
        name=f"{model.name}_on_scaled_readings",
    )
    picked = np.linspace(0, len(train_inputs) - 1, CALIBRATION_WINDOWS).astype(int)
    int8 = export_tflite(
        scaled_model,
        output_dir / "model_int8.tflite",
        quantize="int8",
        representative_data=keras.ops.convert_to_numpy(
            normalization(train_inputs[np.unique(picked)])
        ),
        overwrite=True,
    )
    files = compare_tflite_files(
        {
            "model.tflite": (
                exports["tflite"],
                exports["tflite_recurrent_ops"],
                test[0],
            ),
            "model_int8.tflite": (
                int8.path,
                int8.recurrent_ops,
                keras.ops.convert_to_numpy(normalization(test[0])),
            ),
        },
        model,
        test,
    )
    return {
        **exports,
        "tflite_int8": str(int8.path),
        "tflite_int8_input_mean": np.ravel(normalization.mean).tolist(),
        "tflite_int8_input_std": np.sqrt(np.ravel(normalization.variance)).tolist(),
        "tflite_files": files,
    }


# %% [markdown]
# The table runs each file on the test windows, one window per invoke, as a
# phone would: its size, its largest difference from the Keras model and its
# test MAE (both in the target's units: compare them with the MAE above), and
# its fastest invoke. Pick float32 for a phone's CPU, where it is closest to
# Keras; pick int8 where the target runs integers only, or where the file's size
# counts, if its test MAE is as good. The latency column says whether int8 is
# also faster here: on a desktop CPU, TFLite's float32 kernels are fast too, and
# int8 pays off mostly on hardware built for it.


# %%
def compare_tflite_files(files, model, test):
    """Measures TFLite files on the test windows and prints them as a table.

    Args:
        files: Dict from a file's name to `(path, recurrent_ops, inputs)`:
            what its LSTM became (its export's report) and the test windows
            as it reads them.
        model: The Keras model the files were exported from.
        test: The test windows, `(inputs, targets, last_values)`.

    Returns:
        Dict from a file's name to what the table shows.
    """
    expected = model.predict(test[0], verbose=0)
    results = {}
    for name, (path, recurrent_ops, inputs) in files.items():
        outputs, latency_us = common.run_tflite(path, inputs)
        results[name] = {
            "op": ", ".join(recurrent_ops.values()),
            "size_bytes": Path(path).stat().st_size,
            "max_abs_diff": float(np.max(np.abs(outputs - expected))),
            "test_mae": float(np.mean(np.abs(test[2] + outputs[:, 0] - test[1]))),
            "latency_us": latency_us,
        }
    common.print_columns(
        f"The TFLite files on the {len(test[0])} test windows (batch size 1, "
        "one thread; latency: the fastest invoke)",
        ("file", "LSTM as", "size", "max |TFLite - Keras|", "test MAE", "latency"),
        [
            (
                name,
                row["op"],
                f"{row['size_bytes'] / 1024:.1f} KB",
                f"{row['max_abs_diff']:.2g}",
                f"{row['test_mae']:.4f}",
                f"{row['latency_us']:.0f} µs",
            )
            for name, row in results.items()
        ],
    )
    return results


# %% [markdown]
# ## Run it
#
# `main` reads like the table of contents of the sections above. As a script its
# settings come from the command line (`parse_args` says which flags there are);
# in a notebook, from `ARGS` below, which holds the flags of the `KLG_ARGS`
# environment variable (none: the full run on the shipped data;
# `KLG_ARGS="--quick --overwrite"`: a one-minute run). Edit the cell to change
# them.


# %%
def parse_args(argv):
    parser = common.build_parser(
        "temperature",
        __doc__,
        epochs=60,
        batch_size=64,
        units=64,
    )
    parser.add_argument(
        "--data",
        choices=("greensboro", "jena"),
        default=None,
        help="the dataset, without --csv (default: greensboro, shipped offline)",
    )
    parser.add_argument("--time-column", help="with --csv: the time stamps")
    parser.add_argument("--target-column", help="with --csv: the value to forecast")
    parser.add_argument(
        "--feature-columns",
        nargs="+",
        help="with --csv: the columns the model reads (default: every numeric one)",
    )
    parser.add_argument(
        "--window", type=common.positive_int, default=48, help="past readings read"
    )
    parser.add_argument(
        "--horizon", type=common.positive_int, default=1, help="readings ahead"
    )
    parser.add_argument(
        "--distribute",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="tf.distribute strategy: one device, the devices of this machine "
        "(MirroredStrategy), or several machines (MultiWorkerMirroredStrategy, "
        "configured by TF_CONFIG)",
    )
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    common.quick_settings(args)
    # Bad input (a missing file or column, too few rows for the window, an
    # earlier run's folder) is one line and exit status 2, before any output.
    try:
        strategy = distributed.make_strategy(args.distribute)
        worker = distributed.worker_index(strategy)
        frame, time_column, target_column, feature_columns = load_dataset(args)
        if args.quick:
            frame = frame.iloc[:QUICK_ROWS]
        frame, feature_columns = add_hour_of_day(frame, time_column, feature_columns)
        parts = split_in_time(frame, args.window, args.horizon)
        output_dir = args.output_dir
        if worker:
            output_dir = output_dir.with_name(f"{output_dir.name}-worker{worker}")
        output_dir = common.prepare_output_dir(output_dir, args.overwrite)
        before = common.snapshot(output_dir)
    except common.INPUT_ERRORS as error:
        common.exit_with_error(parser, error)
    keras.utils.set_random_seed(args.seed)

    # The data: windows of each part, and the training part's scaling.
    train, val, test = (
        make_windows(p, feature_columns, target_column, args.window, args.horizon)
        for p in parts
    )
    stats = scaling_stats(parts[0], feature_columns, train)
    print(
        f"{target_column} {args.horizon} step(s) ahead from {args.window}: "
        f"{len(train[0])} training, {len(val[0])} validation, "
        f"{len(test[0])} test windows of {len(feature_columns)} features"
    )

    # Train FourGateLSTM, and keras.layers.LSTM of the same size when asked.
    kinds = ["four_gate", "keras_lstm"] if args.compare_keras_lstm else ["four_gate"]
    models, histories = {}, {}
    for kind in kinds:
        models[kind], histories[kind] = train_model(
            kind, strategy, train, val, stats, args
        )
    model = models["four_gate"]

    # Evaluate against the baselines.
    forecasts, metrics = evaluate(models, train, test)
    common.print_table(
        f"Test MAE of {target_column} {args.horizon} step(s) ahead "
        f"({len(test[1])} windows)",
        [
            ("persistence", metrics["persistence_mae"]),
            ("linear", metrics["linear_mae"]),
            ("FourGateLSTM", metrics["test_mae"]),
        ]
        + (
            [("keras.layers.LSTM", metrics["keras_lstm_test_mae"])]
            if args.compare_keras_lstm
            else []
        ),
    )
    chief = worker == 0
    if chief:
        common.plot_history(histories, output_dir / "training_curves.png")
        common.plot_forecast(
            test[1],
            {k: forecasts[k] for k in ("FourGateLSTM", "persistence", "linear")},
            output_dir / "forecast.png",
            ylabel=target_column,
        )

    # What the gates did on the first test window.
    if chief:
        times = parts[2][time_column].iloc[: args.window].tolist()
        times.append(parts[2][time_column].iloc[args.window + args.horizon - 1])
        metrics["gates"] = explain_gates(
            model,
            test[0][:1],
            times,
            float(forecasts["FourGateLSTM"][0]),
            float(test[1][0]),
            target_column,
            output_dir / "gates.png",
        )

    # Export.
    exports = export(model, train[0], test, output_dir, chief)

    metrics.update(
        target_column=target_column,
        feature_columns=feature_columns,
        window=args.window,
        horizon=args.horizon,
        units=args.units,
        use_gate=args.use_gate,
        num_train=len(train[0]),
        num_val=len(val[0]),
        num_test=len(test[0]),
        epochs_trained=len(histories["four_gate"].history["loss"]),
        distribute=args.distribute,
        model_output=f"the change of {target_column} from the last reading "
        f"to {args.horizon} step(s) later",
        **exports,
    )
    common.write_metrics(metrics, output_dir)
    common.report_written(output_dir, before)
    return metrics


# %% tags=["parameters"]
ARGS = common.command_line()

# %%
if __name__ == "__main__":
    metrics = main(ARGS)
