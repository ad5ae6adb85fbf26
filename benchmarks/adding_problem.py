"""The adding problem: does the cell remember across hundreds of steps?

Title: The adding problem (Hochreiter & Schmidhuber, 1997)
Description: each sequence has T steps of (value, marker): values uniform in
[0, 1], exactly two markers set to 1 (one in each half of the sequence), and
the target is the sum of the two marked values. Predicting the constant 1.0
gives a mean squared error of about 0.167; an error below 0.01 means the
network learned to carry both values across the sequence.
Trains `FourGateLSTM` (both `use_gate` options), `keras.layers.LSTM` and
`keras.layers.SimpleRNN` of the same size with the same optimizer and step
budget at each length, and reports the steps each needed to reach a test MSE
below 0.01.

Run (from the repository root):

```
python benchmarks/adding_problem.py                         # T = 100, 200, 400
python benchmarks/adding_problem.py --lengths 100 --steps 500 --units 16
```

Results go to `benchmarks/results/adding_problem.json`, `.md` and `.png`.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SOLVED_MSE = 0.01
MODELS = (
    "FourGateLSTM classic",
    "FourGateLSTM projected",
    "keras LSTM",
    "keras SimpleRNN",
)

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="The adding problem.")
    parser.add_argument("--lengths", default="100,200,400")
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2000, help="budget per run")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--use-gate-initializer",
        default="glorot_uniform",
        help="initializer of W_u for FourGateLSTM projected (the layer's default)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    text, args.lengths = args.lengths, []
    try:
        args.lengths = [int(t) for t in text.split(",")]
    except ValueError:
        pass
    if not args.lengths or min(args.lengths) < 2:
        parser.error(
            "--lengths: expected integers of at least 2 (a step for each "
            f"marker) separated by ',', e.g. '100,200'; got {text!r}"
        )
    args.models = args.models.split(",")
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}, expected some of {list(MODELS)}")
    for name in ("units", "batch_size", "steps", "eval_every"):
        if getattr(args, name) < 1:
            option = "--" + name.replace("_", "-")
            parser.error(f"{option} must be a positive int, got {getattr(args, name)}")
    if not 0 < args.learning_rate < float("inf"):
        parser.error(
            f"--learning-rate must be a positive number, got {args.learning_rate}"
        )
    # Checked last: Keras (and TensorFlow) load only for a valid command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    try:  # made and run once, on the shape of W_u
        keras.initializers.get(args.use_gate_initializer)((args.units, args.units))
    except (ValueError, NotImplementedError):
        parser.error(
            "--use-gate-initializer: expected a Keras initializer name such as "
            f"'glorot_uniform' or 'orthogonal', got {args.use_gate_initializer!r}"
        )
    return args


# ---------------------------------------------------------------------------
# Load the data: generated on the fly.
# ---------------------------------------------------------------------------


def adding_batch(rng, batch_size, length):
    """A batch of `(batch, length, 2)` sequences and their `(batch, 1)` sums."""
    values = rng.uniform(0.0, 1.0, (batch_size, length))
    markers = np.zeros((batch_size, length))
    rows = np.arange(batch_size)
    first = rng.integers(0, length // 2, batch_size)
    second = rng.integers(length // 2, length, batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values[rows, first] + values[rows, second])[:, None].astype("float32")
    return x, y


# ---------------------------------------------------------------------------
# Build the models: the same size, optimizer and budget for each.
# ---------------------------------------------------------------------------


def recurrent_layer(name, args):
    """The recurrent layer of one of `MODELS`, `args.units` wide."""
    import keras

    from keras_lstm_gates import FourGateLSTM

    if name == "FourGateLSTM classic":
        return FourGateLSTM(args.units, use_gate="classic")
    if name == "FourGateLSTM projected":
        return FourGateLSTM(
            args.units,
            use_gate="projected",
            use_gate_initializer=args.use_gate_initializer,
        )
    if name == "keras LSTM":
        return keras.layers.LSTM(args.units)
    return keras.layers.SimpleRNN(args.units)


def build_model(name, length, args):
    import keras

    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((length, 2)),
            recurrent_layer(name, args),
            keras.layers.Dense(1),
        ]
    )
    optimizer = keras.optimizers.Adam(args.learning_rate, clipnorm=1.0)
    model.compile(optimizer, "mse")
    return model


# ---------------------------------------------------------------------------
# Train: until the test MSE is below 0.01 or the budget is spent.
# ---------------------------------------------------------------------------


def train(name, length, args):
    model = build_model(name, length, args)
    rng = np.random.default_rng(args.seed)
    x_test, y_test = adding_batch(np.random.default_rng(12345), 1000, length)
    curve = []
    solved_at = None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train_on_batch(*adding_batch(rng, args.batch_size, length))
        # Every `eval_every` steps, and at the end of a budget that is not
        # a multiple of it.
        if step % args.eval_every == 0 or step == args.steps:
            mse = float(model.evaluate(x_test, y_test, batch_size=500, verbose=0))
            curve.append((step, mse))
            if mse < SOLVED_MSE:
                solved_at = step
                break
    seconds = time.perf_counter() - start
    result = {"solved_at": solved_at, "curve": curve, "seconds": seconds}
    status = f"solved at {solved_at}" if solved_at else "not solved"
    print(
        f"T={length:4d} {name:24s} {status:18s} last MSE {curve[-1][1]:.4f} "
        f"({seconds:.0f} s)",
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------
# Evaluate: a table and learning curves.
# ---------------------------------------------------------------------------


def markdown(results, args):
    lines = [
        f"Adding problem: {args.units} units, batch {args.batch_size}, Adam "
        f"lr {args.learning_rate} (clipnorm 1.0), budget {args.steps} steps, "
        f"test MSE on 1000 sequences every {args.eval_every} steps; "
        f"projected W_u initializer: {args.use_gate_initializer}.",
        "",
        "| model | " + " | ".join(f"T = {t}" for t in args.lengths) + " |",
        "|---|" + "---|" * len(args.lengths),
    ]
    for name in args.models:
        cells = []
        for length in args.lengths:
            r = results.get(f"{name}|{length}")
            if r is None:
                cells.append("")
            elif r["solved_at"]:
                cells.append(f"{r['solved_at']} steps")
            else:
                cells.append(f"not solved (MSE {r['curve'][-1][1]:.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(args.lengths), figsize=(5 * len(args.lengths), 4), squeeze=False
    )
    for ax, length in zip(axes[0], args.lengths):
        for name in args.models:
            r = results.get(f"{name}|{length}")
            if r:
                steps, mse = zip(*r["curve"])
                ax.plot(steps, mse, label=name)
        ax.axhline(SOLVED_MSE, color="gray", linestyle="--", linewidth=1)
        ax.axhline(1 / 6, color="gray", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_title(f"T = {length}")
        ax.set_xlabel("training step")
        ax.set_ylabel("test MSE")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for length in args.lengths:
        for name in args.models:
            results[f"{name}|{length}"] = train(name, length, args)
            config = {k: str(v) for k, v in vars(args).items()}
            (args.out / "adding_problem.json").write_text(
                json.dumps({"config": config, "results": results}, indent=1)
            )
    table = markdown(results, args)
    (args.out / "adding_problem.md").write_text(table)
    plot(results, args, args.out / "adding_problem.png")
    print("\n" + table)


if __name__ == "__main__":
    main()
