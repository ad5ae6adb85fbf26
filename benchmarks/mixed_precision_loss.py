"""Loss curves of `FourGateLSTM` under float32 and `mixed_bfloat16`.

Title: Mixed precision on a real task: the temperature forecast
Description: trains the model of `examples/temperature.py` (a year of hourly
Greensboro weather, the change of the temperature an hour ahead from the past
48 readings) twice, from the same initial weights with the same seed and the
same batches: once under the float32 policy and once under `mixed_bfloat16`.
It reports the training and validation loss (MSE of the change, in °C²) of
each epoch, the wall time of each epoch, the test MAE in °C of both models
and the largest difference between their test forecasts. No early stopping:
both models train every epoch.
Under `mixed_bfloat16` only the `FourGateLSTM` computes in bfloat16: the
`Normalization` layer and the `Dense` and `Rescaling` head are kept in
float32. Built naively under the policy, `Normalization` would cast the raw
readings to bfloat16 first, where the pressure (about 987 mbar, standard
deviation 6 mbar) is rounded to steps of 4 mbar; and a float32 output keeps
the loss in float32, as Keras's mixed-precision guide recommends.

Run (from the repository root):

```
python benchmarks/mixed_precision_loss.py            # 8 epochs, the full year
python benchmarks/mixed_precision_loss.py --quick    # a short smoke run
```

Results go to `benchmarks/results/mixed_precision/mixed_precision_loss.json`
and `.md`; the plot to `docs/mixed_precision_loss.png` (replaced on each run).
"""

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "examples")]

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import temperature  # noqa: E402

from keras_lstm_gates import FourGateLSTM  # noqa: E402
from keras_lstm_gates import loops  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")
WINDOW = 48
HORIZON = 1
# Rows of the series and epochs of a `--quick` run.
QUICK_ROWS = 2000
QUICK_EPOCHS = 2

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Loss curves of FourGateLSTM under float32 and "
        "mixed_bfloat16 on the temperature forecast.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / "mixed_precision",
        help="folder of the JSON and Markdown results",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="the PNG of the loss curves (default: docs/mixed_precision_loss.png, "
        "docs/performance.md's figure, replaced each run; with --quick, the --out folder)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_EPOCHS} epochs on the first {QUICK_ROWS} rows",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "units", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive int, got {getattr(args, name)}")
    if args.quick:
        args.epochs = QUICK_EPOCHS
    if args.plot is None:  # a smoke run never replaces the docs' figure
        folder = args.out if args.quick else REPO / "docs"
        args.plot = folder / "mixed_precision_loss.png"
    return args


# ---------------------------------------------------------------------------
# Load the data: as `examples/temperature.py` does, with its own functions.
# ---------------------------------------------------------------------------


def load_windows(quick):
    """Returns the `(inputs, targets, last_values)` splits, the stats and
    the number of rows read."""
    greensboro = argparse.Namespace(
        csv=None,
        data="greensboro",
        cache_dir=None,
        time_column=None,
        target_column=None,
        feature_columns=None,
    )
    frame, time_column, target_column, features = temperature.load_dataset(greensboro)
    if quick:
        frame = frame.iloc[:QUICK_ROWS]
    frame, features = temperature.add_hour_of_day(frame, time_column, features)
    parts = temperature.split_in_time(frame, WINDOW, HORIZON)
    splits = [
        temperature.make_windows(p, features, target_column, WINDOW, HORIZON)
        for p in parts
    ]
    train_features = parts[0][features].to_numpy("float32")
    change = splits[0][1] - splits[0][2]
    stats = (
        train_features.mean(axis=0),
        train_features.var(axis=0) + 1e-6,
        float(change.mean()),
        float(change.std()),
    )
    return splits, stats, len(frame)


# ---------------------------------------------------------------------------
# Build the models: `temperature.build_model`; under `mixed_bfloat16` all but
# the `FourGateLSTM` are cloned back to float32.
# ---------------------------------------------------------------------------


def build_model(policy, input_shape, stats, units):
    model = temperature.build_model(input_shape, stats, units)
    if policy == "float32":
        return model
    mixed = keras.models.clone_model(model, clone_function=float32_unless_recurrent)
    mixed.compile_from_config(model.get_compile_config())
    return mixed


def float32_unless_recurrent(layer):
    """A copy of `layer`, in float32 unless it is the `FourGateLSTM`."""
    if isinstance(layer, FourGateLSTM):
        return layer.__class__.from_config(layer.get_config())
    return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})


# ---------------------------------------------------------------------------
# Train: the same initial weights and seed under each policy.
# ---------------------------------------------------------------------------


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of each epoch, in seconds."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def train(policy, splits, stats, initial_weights, args):
    """Trains under `policy`; returns its curves and its test forecast."""
    train_split, val_split, test_split = splits
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(policy, train_split[0].shape[1:], stats, args.units)
        model.set_weights(initial_weights)
        layers = ", ".join(f"{x.name} {x.dtype_policy.name}" for x in model.layers)
        print(f"\n{policy}: {layers}")
        timer = EpochTimer()
        # The same seed, so the same batches, under each policy.
        keras.utils.set_random_seed(args.seed)
        history = model.fit(
            train_split[0],
            train_split[1] - train_split[2],
            validation_data=(val_split[0], val_split[1] - val_split[2]),
            epochs=args.epochs,
            batch_size=args.batch_size,
            callbacks=[timer],
            verbose=2,
        )
        forecast = temperature.forecast(model, test_split)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {
        "loss": history.history["loss"],
        "val_loss": history.history["val_loss"],
        "epoch_seconds": timer.seconds,
    }, forecast


def initial_weights(splits, stats, args):
    """The weights of a freshly built float32 model, seeded by `--seed`."""
    keras.utils.set_random_seed(args.seed)
    model = build_model("float32", splits[0][0].shape[1:], stats, args.units)
    return model.get_weights()


# ---------------------------------------------------------------------------
# Report: a Markdown table, a summary, JSON and the plot.
# ---------------------------------------------------------------------------


def mean_epoch_seconds(curves):
    """The mean wall time of an epoch, leaving out the first (tracing)."""
    seconds = curves["epoch_seconds"]
    return statistics.mean(seconds[1:] or seconds)


def summarize(curves, forecasts, truth):
    mae = {p: float(np.mean(np.abs(forecasts[p] - truth))) for p in POLICIES}
    seconds = {p: mean_epoch_seconds(curves[p]) for p in POLICIES}
    return {
        "test_mae_c": mae,
        "max_abs_forecast_diff_c": float(
            np.max(np.abs(forecasts["mixed_bfloat16"] - forecasts["float32"]))
        ),
        "mean_epoch_seconds": seconds,
        "epoch_time_ratio_bf16_to_float32": seconds["mixed_bfloat16"]
        / seconds["float32"],
    }


def markdown(curves, summary, config):
    lines = [
        f"FourGateLSTM({config['units']}) temperature forecast, Greensboro "
        f"{config['rows']} rows, window {WINDOW}, horizon {HORIZON}, batch "
        f"{config['batch_size']}, {config['epochs']} epochs; loss: MSE of the "
        "change (°C²).",
        "",
        "| epoch | float32 train | float32 val | mixed_bfloat16 train "
        "| mixed_bfloat16 val |",
        "|---|---|---|---|---|",
    ]
    f32, bf16 = curves["float32"], curves["mixed_bfloat16"]
    for epoch in range(len(f32["loss"])):
        losses = (f32["loss"], f32["val_loss"], bf16["loss"], bf16["val_loss"])
        cells = " | ".join(f"{loss[epoch]:.4f}" for loss in losses)
        lines.append(f"| {epoch + 1} | {cells} |")
    mae, seconds = summary["test_mae_c"], summary["mean_epoch_seconds"]
    lines += [
        "",
        f"Test MAE: float32 {mae['float32']:.4f} °C, mixed_bfloat16 "
        f"{mae['mixed_bfloat16']:.4f} °C (largest forecast difference "
        f"{summary['max_abs_forecast_diff_c']:.4f} °C). Mean epoch time "
        f"(after the first): float32 {seconds['float32']:.2f} s, "
        f"mixed_bfloat16 {seconds['mixed_bfloat16']:.2f} s, ratio bf16/float32 "
        f"{summary['epoch_time_ratio_bf16_to_float32']:.2f} (bfloat16 matmuls: "
        f"{config['bf16_matmuls']}).",
    ]
    return "\n".join(lines) + "\n"


def plot(curves, path):
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for policy, linestyle in zip(POLICIES, ("-", "--")):
        for key, color, name in (("loss", "C0", "train"), ("val_loss", "C1", "val")):
            values = curves[policy][key]
            epochs = np.arange(1, len(values) + 1)
            axes.plot(
                epochs,
                values,
                color=color,
                linestyle=linestyle,
                label=f"{policy} {name}",
            )
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_ylabel("MSE of the change (°C²)")
    axes.set_title("FourGateLSTM temperature forecast: float32 vs mixed_bfloat16")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def training_matmul_dtype(policy):
    """The dtype of the fused loop's matmuls when it trains under `policy`,
    as its route names it (the `keras_lstm_gates.loops` log)."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger(loops.LOGGER_NAME)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        layer = FourGateLSTM(4, dtype=policy)
        layer(np.zeros((1, 2, 1), "float32"), training=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (route,) = [r.route for r in records if hasattr(r, "route")]
    return route.matmul_dtype


def main(argv=None):
    args = parse_args(argv)
    splits, stats, rows = load_windows(args.quick)
    weights = initial_weights(splits, stats, args)
    curves, forecasts = {}, {}
    for policy in POLICIES:
        curves[policy], forecasts[policy] = train(policy, splits, stats, weights, args)
    summary = summarize(curves, forecasts, splits[2][1])
    config = {
        "epochs": args.epochs,
        "units": args.units,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "rows": rows,
        "windows": [len(split[0]) for split in splits],
        "bf16_matmuls": training_matmul_dtype("mixed_bfloat16") == "bfloat16",
    }
    table = markdown(curves, summary, config)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mixed_precision_loss.json").write_text(
        json.dumps({"config": config, "curves": curves, **summary}, indent=1)
    )
    (args.out / "mixed_precision_loss.md").write_text(table)
    plot(curves, args.plot)
    print("\n" + table)


if __name__ == "__main__":
    main()
