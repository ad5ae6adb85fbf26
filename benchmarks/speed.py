"""Speed of `FourGateLSTM` against `keras.layers.LSTM` (and `torch.nn.LSTM`).

Title: LSTM speed benchmark
Description: trains and runs every contender on the same random data, in one
process, interleaved run by run (A, B, C, A, B, C, ...), and reports the
minimum and the median of each, and the ratio of minima to
`keras.layers.LSTM`. Minima are the stable figure on a noisy machine.

Run (from the repository root):

```
python benchmarks/speed.py                      # everything, TensorFlow
python benchmarks/speed.py --quick              # a short smoke run
python benchmarks/speed.py --backend jax        # Keras's JAX backend
python benchmarks/speed.py --sections train,infer --runs 20
python benchmarks/speed.py --sections fit,predict   # the path users take
```

Results go to `benchmarks/results/<backend>/speed.json` and `speed.md`.
Sections: `peak` (matmul GFLOP/s), `train`, `infer`, `fit`, `predict`,
`bf16`, `length`, `memory`, `tflite` (TensorFlow only).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTIONS = (
    "peak",
    "train",
    "infer",
    "fit",
    "predict",
    "bf16",
    "length",
    "memory",
    "tflite",
)
TENSORFLOW_ONLY = ("tflite",)
SHAPES = ((64, 100, 16, 128), (32, 200, 64, 256), (1, 100, 16, 64), (64, 100, 16, 8))
QUICK_SHAPES = ((64, 100, 16, 128),)
LENGTHS = (50, 100, 200, 400, 800)
BASELINE = "keras LSTM"
TORCH = "torch.nn.LSTM"
# `fit` and `predict`: batches in an epoch, and torch's CPU threads there.
EPOCH_BATCHES = 30
EPOCH_TORCH_THREADS = 2

# ---------------------------------------------------------------------------
# Setup: the backend must be chosen before Keras is imported.
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default=None)
    parser.add_argument("--quick", action="store_true", help="few runs, one shape")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (15)")
    parser.add_argument(
        "--sections",
        default=None,
        help=f"some of {','.join(SECTIONS)} (default: all the backend runs)",
    )
    parser.add_argument(
        "--jit",
        choices=("off", "on", "both"),
        default=None,
        help="jit_compile modes (default: both; --quick: off; JAX: on)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument(
        "--no-torch", action="store_true", help="leave torch.nn.LSTM out"
    )
    parser.add_argument(
        "--shapes",
        default=None,
        help="shapes for train, infer and bf16 as B,T,F,U;B,T,F,U (default: "
        "the four of the issue; --quick: the first)",
    )
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.shapes is not None:
        try:
            args.shapes = parse_shapes(args.shapes)
        except ValueError as error:
            parser.error(f"--shapes: {error}")
    backend = args.backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    runnable = [
        s for s in SECTIONS if backend == "tensorflow" or s not in TENSORFLOW_ONLY
    ]
    if args.sections is None:
        args.sections = runnable
    else:
        args.sections = [s for s in args.sections.split(",") if s]
        unknown = sorted(set(args.sections) - set(SECTIONS))
        if unknown:
            parser.error(f"--sections: unknown {unknown}, expected some of {SECTIONS}")
        if not args.sections:
            parser.error("--sections: nothing to run")
        skipped = [s for s in args.sections if s not in runnable]
        args.sections = [s for s in args.sections if s in runnable]
        if skipped and not args.sections:
            parser.error(
                f"--sections: {', '.join(skipped)} runs on TensorFlow only; "
                f"nothing to run on {backend}"
            )
        if skipped:
            print(
                f"--sections: {', '.join(skipped)} runs on TensorFlow only; "
                f"skipped on {backend}",
                file=sys.stderr,
            )
    if args.runs is None:
        args.runs = 5 if args.quick else 15
    if args.runs < 1:
        parser.error(f"--runs must be a positive int, got {args.runs}")
    return args


def parse_shapes(text):
    """`"B,T,F,U;B,T,F,U"` -> a tuple of 4-tuples of positive ints."""
    try:
        shapes = tuple(
            tuple(int(n) for n in shape.split(","))
            for shape in text.split(";")
            if shape.strip()
        )
    except ValueError:
        shapes = ()
    if not shapes or any(len(shape) != 4 or min(shape) < 1 for shape in shapes):
        raise ValueError(
            "expected positive batch,time,features,units separated by ';', "
            f"e.g. '64,100,16,128;32,200,64,256', got {text!r}"
        )
    return shapes


def select_backend(backend):
    """Sets `KERAS_BACKEND`; re-executes if Keras was already imported."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != backend:
        os.environ["KERAS_BACKEND"] = backend
        os.execv(sys.executable, [sys.executable, *sys.argv])
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return backend


# ---------------------------------------------------------------------------
# Contenders: each is a function `units -> layer` (or a torch model).
# ---------------------------------------------------------------------------


def keras_contenders():
    import keras

    from keras_lstm_gates import FourGateLSTM
    from keras_lstm_gates import FourGateLSTMCell

    return {
        BASELINE: lambda u: keras.layers.LSTM(u),
        "keras RNN(LSTMCell)": lambda u: keras.layers.RNN(keras.layers.LSTMCell(u)),
        "FourGateLSTM classic": lambda u: FourGateLSTM(u, use_gate="classic"),
        "FourGateLSTM projected": lambda u: FourGateLSTM(u, use_gate="projected"),
        "RNN(FourGateLSTMCell) projected": lambda u: keras.layers.RNN(
            FourGateLSTMCell(u, use_gate="projected")
        ),
    }


def torch_available():
    if os.environ.get("SPEED_NO_TORCH"):
        return False
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def lstm_flops(shape, projected=False):
    """Multiply-adds x 2 of one forward pass (matmuls only)."""
    batch, steps, features, units = shape
    per_step = 2 * batch * (features + units) * 4 * units
    if projected:
        per_step += 2 * batch * units * units
    return per_step * steps


# ---------------------------------------------------------------------------
# Timing: interleaved runs, minimum and median.
# ---------------------------------------------------------------------------


# Contenders that raised in their warm-up: `name -> error`, for the results.
FAILED = {}


def time_interleaved(fns, runs, warmup=3, burst=1, progress=None):
    """Times each callable `runs` times, interleaved; returns seconds lists.

    With `burst` above 1, each turn calls a contender `burst` times in a row
    and times the last call: its weights are then in the caches, as in an
    app that runs its one model call after call (interleaved single calls
    would time each one after the others have evicted it).

    A contender that raises in its warm-up is left out of the timing and
    noted in `FAILED` (say, a Keras layer that cannot run in that mode).
    With a `progress` label, each warm-up and each round prints a line: a
    long run shows that it is alive.
    """
    started = time.perf_counter()
    for name, fn in list(fns.items()):
        if progress:
            print(f"  {progress}: warming up {name}", flush=True)
        try:
            for _ in range(warmup):
                fn()
        except Exception as error:  # noqa: BLE001 - reported, not hidden
            message = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            print(f"  {name} failed, left out: {message}")
            FAILED[name] = message
            fns = {k: v for k, v in fns.items() if k != name}
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            for _ in range(burst - 1):
                fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        if progress:
            elapsed = time.perf_counter() - started
            print(f"  {progress}: run {len(times[name])}/{runs}, {elapsed:.0f} s")
    return times


def summarize(times, flops=None):
    """Min/median in ms, ratio of minima to the baseline, GFLOP/s."""
    base = min(times[BASELINE]) if BASELINE in times else None
    rows = {}
    for name, ts in times.items():
        row = {
            "min_ms": 1e3 * min(ts),
            "median_ms": 1e3 * statistics.median(ts),
            "runs": len(ts),
        }
        if base:
            row["ratio"] = min(ts) / base
        if flops is not None:
            f = flops(name) if callable(flops) else flops
            row["gflops"] = f / min(ts) / 1e9
        rows[name] = row
    return rows


def blocking(x):
    """Waits for a result (JAX dispatches asynchronously)."""
    import keras

    if hasattr(x, "block_until_ready"):  # a JAX array: no copy to the host
        return x.block_until_ready()
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------------------
# Model builders.
# ---------------------------------------------------------------------------


def random_data(shape, seed=0):
    import numpy as np

    batch, steps, features, _ = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    y = rng.standard_normal((batch, 1)).astype("float32")
    return x, y


def epoch_data(shape, batches=EPOCH_BATCHES, seed=0):
    """`batches` batches of random data: NumPy pairs and `tf.data` Datasets.

    Returns `(pairs, train, infer)`: a list of `(x, y)` batches, a Dataset of
    them for `model.fit` and one of the `x` alone for `model.predict`, both
    cached in memory after their first epoch (the warm-up), so an epoch
    times the model, not the input pipeline.
    """
    import tensorflow as tf

    batch, steps, features, _ = shape
    x, y = random_data((batch * batches, steps, features, None), seed)
    pairs = [
        (x[i : i + batch], y[i : i + batch]) for i in range(0, batch * batches, batch)
    ]
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    infer = tf.data.Dataset.from_tensor_slices(x).batch(batch).cache()
    return pairs, train, infer


def keras_epoch(model, data, fit):
    """An epoch of `model.fit` over `data`, or of `model.predict`."""
    if fit:
        return lambda: model.fit(data, epochs=1, verbose=0)
    return lambda: model.predict(data, verbose=0)


def build_model(make_layer, shape, jit):
    import keras

    batch, steps, features, units = shape
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((steps, features), batch_size=batch),
            make_layer(units),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse", jit_compile=jit)
    return model


def direct_call(model, jit):
    """A compiled forward call of the model (tf.function / jax.jit)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda x: model(x, training=False), jit_compile=jit)
        return lambda x: fn(x).numpy()
    import jax

    # The variables' values are read at each call: a JAX training step
    # donates (deletes) the arrays it was given.
    fn = jax.jit(lambda t, n, x: model.stateless_call(t, n, x)[0])
    return lambda x: blocking(
        fn(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            x,
        )
    )


def keras_gpu():
    """The GPU Keras computes on (its name), or None on a CPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind if device.platform == "gpu" else None
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")


def torch_models(shape, train, batches=None, threads=None):
    """Train-step and forward closures for `torch.nn.LSTM`.

    On the GPU when Keras computes on one (cuDNN's LSTM, the peer there),
    else on `threads` CPU threads (default: all). With `batches`, a list of
    NumPy `(x, y)` pairs, a call is an epoch over them (optimizer steps, or
    a no-grad forward), each batch copied to the device as Keras does.
    """
    import torch

    device = "cuda" if keras_gpu() and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(threads or os.cpu_count() or 1)
    torch.manual_seed(0)
    batch, steps, features, units = shape
    lstm = torch.nn.LSTM(features, units, batch_first=True).to(device)
    head = torch.nn.Linear(units, 1).to(device)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    if batches is None:
        x = torch.randn(batch, steps, features, device=device)
        y = torch.randn(batch, 1, device=device)
        pairs = [(x, y)]
    else:
        pairs = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
    wait = torch.cuda.synchronize if device == "cuda" else lambda: None

    def train_step():
        for x, y in pairs:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            out, _ = lstm(x)
            loss = torch.mean((head(out[:, -1]) - y) ** 2)
            loss.backward()
            opt.step()
        wait()

    def forward():
        with torch.no_grad():
            for x, _ in pairs:
                out, _ = lstm(x.to(device))
                head(out[:, -1])
        wait()

    return train_step if train else forward


def jit_modes(args):
    if args.backend == "jax":
        return (True,)
    jit = args.jit or ("off" if args.quick else "both")
    return {"off": (False,), "on": (True,), "both": (False, True)}[jit]


# ---------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------


def section_peak(args):
    """Achieved matmul GFLOP/s, fp32 and bf16, for the GFLOP/s columns."""
    import keras

    results = {}
    n = 1024 if args.quick else 8192 if keras_gpu() else 2048
    for dtype in ("float32", "bfloat16"):
        a = keras.ops.ones((n, n), dtype=dtype)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            mm = tf.function(lambda a: tf.linalg.matmul(a, a))
        else:
            import jax

            mm = jax.jit(lambda a: a @ a)
        times = time_interleaved({dtype: lambda mm=mm, a=a: blocking(mm(a))}, args.runs)
        results[dtype] = {"gflops": 2 * n**3 / min(times[dtype]) / 1e9, "n": n}
    return results


def section_train(args, shapes=None, policy=None):
    """Training step (`train_on_batch`, Adam) for every contender."""
    import keras

    shapes = shapes or args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    results = {}
    for shape in shapes:
        for jit in jit_modes(args):
            if policy:
                keras.mixed_precision.set_global_policy(policy)
            x, y = random_data(shape)
            fns = {}
            for name, make in keras_contenders().items():
                model = build_model(make, shape, jit)
                fns[name] = lambda m=model, x=x, y=y: m.train_on_batch(x, y)
            if policy:
                keras.mixed_precision.set_global_policy("float32")
            if torch_available() and not policy:
                fns["torch.nn.LSTM"] = torch_models(shape, train=True)
            key = f"{shape} jit={'on' if jit else 'off'}"
            results[key] = summarize(
                time_interleaved(fns, args.runs), flops=train_flops(shape)
            )
            report(key + (f" {policy}" if policy else "") + " train", results[key])
    return results


def train_flops(shape):
    """Forward + backward is about 3 forward passes of matmul work."""
    return lambda name: 3 * lstm_flops(shape, projected="projected" in name)


def infer_flops(shape):
    return lambda name: lstm_flops(shape, projected="projected" in name)


def section_infer(args):
    """Inference: `predict_on_batch` and a direct compiled call."""
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    results = {}
    for shape in shapes:
        for jit in jit_modes(args):
            x, _ = random_data(shape)
            fns = {}
            for name, make in keras_contenders().items():
                model = build_model(make, shape, jit)
                call = direct_call(model, jit)
                fns[f"{name} | call"] = lambda c=call, x=x: c(x)
                fns[f"{name} | predict"] = lambda m=model, x=x: m.predict_on_batch(x)
            if torch_available():
                fns["torch.nn.LSTM | call"] = torch_models(shape, train=False)
            times = time_interleaved(fns, args.runs)
            key = f"{shape} jit={'on' if jit else 'off'}"
            rows = {}
            for mode in ("call", "predict"):
                sub = {
                    n.split(" | ")[0]: t
                    for n, t in times.items()
                    if n.endswith(f"| {mode}")
                }
                rows[mode] = summarize(sub, flops=infer_flops(shape))
                report(f"{key} infer {mode}", rows[mode])
            results[key] = rows
    return results


CORE_CONTENDERS = (BASELINE, "FourGateLSTM classic", "FourGateLSTM projected")


def section_fit(args):
    """`model.fit` over an epoch of `EPOCH_BATCHES` batches (Adam, MSE)."""
    return epoch_section(args, fit=True)


def section_predict(args):
    """`model.predict` over the same `EPOCH_BATCHES` batches."""
    return epoch_section(args, fit=False)


def epoch_section(args, fit):
    """One epoch per run, after a warm-up epoch, for every core contender.

    `torch.nn.LSTM` runs the same epoch (optimizer steps for `fit`, a
    no-grad forward for `predict`) on `EPOCH_TORCH_THREADS` CPU threads;
    each row also has `vs_torch`, its minimum over torch's.
    """
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    makers = keras_contenders()
    mode = "fit" if fit else "predict"
    results = {}
    for shape in shapes:
        for jit in jit_modes(args):
            pairs, train, infer = epoch_data(shape)
            fns = {}
            for name in CORE_CONTENDERS:
                model = build_model(makers[name], shape, jit)
                fns[name] = keras_epoch(model, train if fit else infer, fit)
            if torch_available():
                fns[TORCH] = torch_models(shape, fit, pairs, EPOCH_TORCH_THREADS)
            key = f"{shape} jit={'on' if jit else 'off'}"
            times = time_interleaved(fns, args.runs, warmup=1, progress=f"{key} {mode}")
            per_batch = train_flops(shape) if fit else infer_flops(shape)
            rows = summarize(times, flops=lambda n, f=per_batch: EPOCH_BATCHES * f(n))
            if TORCH in rows:
                for row in rows.values():
                    row["vs_torch"] = row["min_ms"] / rows[TORCH]["min_ms"]
            results[key] = rows
            report(f"{key} {mode}, an epoch of {EPOCH_BATCHES} batches", rows)
    return results


def section_bf16(args):
    """Training step and direct call under `mixed_bfloat16` and float32.

    The two policies' models run interleaved; each `mixed_bfloat16` row
    also has `vs_float32`: its minimum over the same contender's float32
    minimum in the same run.
    """
    import keras

    shapes = args.shapes or (
        QUICK_SHAPES if args.quick else ((32, 200, 64, 256), (64, 100, 16, 128))
    )
    makers = keras_contenders()
    results = {}
    for shape in shapes:
        for jit in jit_modes(args):
            x, y = random_data(shape)
            fns = {"train": {}, "call": {}}
            for policy in ("float32", "mixed_bfloat16"):
                keras.mixed_precision.set_global_policy(policy)
                try:
                    for name in CORE_CONTENDERS:
                        model = build_model(makers[name], shape, jit)
                        label = name if policy == "float32" else f"{name} {policy}"
                        fns["train"][label] = lambda m=model, x=x, y=y: (
                            m.train_on_batch(x, y)
                        )
                        call = direct_call(model, jit)
                        fns["call"][label] = lambda c=call, x=x: c(x)
                finally:
                    keras.mixed_precision.set_global_policy("float32")
            key = f"{shape} jit={'on' if jit else 'off'}"
            results[key] = {}
            for mode, flops in (("train", train_flops(shape)), ("call", None)):
                rows = summarize(time_interleaved(fns[mode], args.runs), flops=flops)
                for name in CORE_CONTENDERS:
                    half = rows.get(f"{name} mixed_bfloat16")
                    if half and name in rows:
                        half["vs_float32"] = half["min_ms"] / rows[name]["min_ms"]
                results[key][mode] = rows
                report(f"{key} {mode}, float32 and mixed_bfloat16", rows)
    return results


def section_length(args):
    """Training-step time per time step, T from 50 to 800."""
    lengths = (50, 200) if args.quick else LENGTHS
    shapes = tuple((64, t, 16, 128) for t in lengths)
    results = {}
    for shape, rows in zip(shapes, [section_train(args, shapes=(s,)) for s in shapes]):
        for key, row in rows.items():
            for r in row.values():
                r["us_per_step"] = 1e3 * r["min_ms"] / shape[1]
            results[key] = row
    return results


def memory_child(spec):
    """In a child process: trains a few steps; prints peak RSS in MiB."""
    name, shape = spec.split("|")
    shape = tuple(int(s) for s in shape.split(","))
    x, y = random_data(shape)
    model = build_model(keras_contenders()[name], shape, jit=False)
    built = peak_rss_mib()
    for _ in range(3):
        model.train_on_batch(x, y)
    peak = peak_rss_mib()
    print(json.dumps({"peak_rss_mib": peak, "before_training_mib": built}))


def peak_rss_mib():
    """This process's peak resident memory (`VmHWM`; `ru_maxrss` would
    include the parent's, which Linux carries across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def section_memory(args):
    """Peak resident memory of a process that trains each contender."""
    shape = (32, 200, 64, 256)
    results = {}
    for name in keras_contenders():
        spec = f"{name}|{','.join(map(str, shape))}"
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--backend",
                args.backend,
                "--memory-child",
                spec,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"memory {shape} {name}: {results[name]}", flush=True)
    return {str(shape): results}


def tflite_model(make_layer, units, quantize=None, steps=100, features=16):
    """Exports a batch-1 model to TFLite builtin ops; returns the bytes.

    Every contender, `keras.layers.LSTM` included, goes through the
    package's `export_tflite` (a SavedModel, then the converter with
    builtin ops only), the way a user exports: it is also how the
    `FourGateLSTM` loop is traced for TFLite (`tflite_tracing`).
    `quantize="dynamic"`: dynamic-range quantization (int8 weights, float
    activations), the converter's `Optimize.DEFAULT` without data.
    """
    import tempfile

    import keras

    from keras_lstm_gates import export_tflite

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((steps, features), batch_size=1), make_layer(units)]
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.tflite"
        export_tflite(model, path, quantize=quantize)
        return path.read_bytes()


def tflite_contenders():
    """`{name: (make_layer, quantize)}`: float32, dynamic-range, unrolled."""
    import keras

    from keras_lstm_gates import FourGateLSTM

    unrolled = {
        BASELINE: lambda u: keras.layers.LSTM(u, unroll=True),
        "FourGateLSTM classic": lambda u: FourGateLSTM(
            u, use_gate="classic", unroll=True
        ),
        "FourGateLSTM projected": lambda u: FourGateLSTM(
            u, use_gate="projected", unroll=True
        ),
    }
    makers = keras_contenders()
    contenders = {}
    for variant in ("float32", "dynamic", "unroll"):
        for name in CORE_CONTENDERS:
            label = name if variant == "float32" else f"{name} {variant}"
            make = unrolled[name] if variant == "unroll" else makers[name]
            contenders[label] = (make, "dynamic" if variant == "dynamic" else None)
    return contenders


# Calls of one TFLite file in a row, the last one timed (see `time_interleaved`).
TFLITE_BURST = 3


def section_tflite(args):
    """Latency per sequence (batch 1, T=100, 16 features) of TFLite exports.

    Float32 `WHILE` loops, dynamic-range quantized, and `unroll=True`; each
    variant's row also has `vs_float32`, its minimum over the same
    contender's float32 minimum. Each timed call follows
    `TFLITE_BURST - 1` calls of the same file: warm, as in an app.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    results = {}
    x = np.random.default_rng(0).standard_normal((1, 100, 16), "float32")
    for units in (64,) if args.quick else (64, 256):
        fns, sizes = {}, {}
        for name, (make, quantize) in tflite_contenders().items():
            content = tflite_model(make, units, quantize)
            sizes[name] = len(content)
            interpreter = Interpreter(model_content=content)
            interpreter.allocate_tensors()
            inp = interpreter.get_input_details()[0]["index"]
            interpreter.set_tensor(inp, x)
            fns[name] = interpreter.invoke
        rows = summarize(time_interleaved(fns, args.runs * 4, burst=TFLITE_BURST))
        for name, row in rows.items():
            row["bytes"] = sizes[name]
            base = name.rsplit(" ", 1)[0]
            if base != name and base in rows:
                row["vs_float32"] = row["min_ms"] / rows[base]["min_ms"]
        results[f"units={units}"] = rows
        report(f"tflite units={units}", rows)
    return results


# ---------------------------------------------------------------------------
# Output: JSON and Markdown.
# ---------------------------------------------------------------------------


def report(title, rows):
    print(f"\n{title}", flush=True)
    for name, r in rows.items():
        extra = f"  x{r['ratio']:.2f}" if "ratio" in r else ""
        if "vs_float32" in r:
            extra += f"  ({r['vs_float32']:.2f}x its float32)"
        if "vs_torch" in r:
            extra += f"  x{r['vs_torch']:.2f} torch"
        print(
            f"  {name:34s} min {r['min_ms']:8.2f} ms  med {r['median_ms']:8.2f}{extra}"
        )


def markdown(results):
    lines = [
        f"# Speed ({results['backend']}, {results['machine']}"
        + (f", {results['gpu']}" if results.get("gpu") else "")
        + ")",
        "",
        f"Commit {results.get('commit', 'unknown')}.",
        "",
        f"{results['note']}",
        "",
    ]
    for name, error in results.get("failed", {}).items():
        lines += [f"- `{name}` raised and was left out: {error}", ""]
    peak = results["sections"].get("peak")
    if peak:
        lines += [
            "Measured matmul peak: "
            + ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in peak.items()),
            "",
        ]
    for section, body in results["sections"].items():
        if section in ("peak", "memory"):
            continue
        lines += [f"## {section}", ""]
        lines += markdown_tables(body)
    memory = results["sections"].get("memory")
    if memory:
        lines += ["## memory (peak RSS of a training process, MiB)", ""]
        for shape, rows in memory.items():
            lines += [f"{shape}", "", "| contender | peak RSS MiB |", "|---|---|"]
            lines += [f"| {n} | {r['peak_rss_mib']:.0f} |" for n, r in rows.items()]
            lines.append("")
    return "\n".join(lines) + "\n"


def markdown_tables(body, title=""):
    if all(isinstance(v, dict) and "min_ms" in v for v in body.values()):
        own = any("vs_float32" in r for r in body.values())
        torch = any("vs_torch" in r for r in body.values())
        head = "| contender | min ms | median ms | x keras LSTM | GFLOP/s |"
        rule = "|---|---|---|---|---|"
        if own:
            head, rule = head + " x own float32 |", rule + "---|"
        if torch:
            head, rule = head + " x torch |", rule + "---|"
        lines = [f"**{title}**", "", head, rule]
        for name, r in body.items():
            ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
            gf = f"{r['gflops']:.1f}" if "gflops" in r else ""
            row = f"| {name} | {r['min_ms']:.2f} | {r['median_ms']:.2f} | {ratio} | {gf} |"
            if own:
                row += f" {r['vs_float32']:.2f} |" if "vs_float32" in r else " |"
            if torch:
                row += f" {r['vs_torch']:.2f} |" if "vs_torch" in r else " |"
            lines.append(row)
        return lines + [""]
    lines = []
    for key, sub in body.items():
        lines += markdown_tables(sub, f"{title} {key}".strip())
    return lines


def main():
    args = parse_args()
    args.backend = select_backend(args.backend)
    if args.no_torch:
        os.environ["SPEED_NO_TORCH"] = "1"
    sys.path.insert(0, str(REPO))
    if args.memory_child:
        memory_child(args.memory_child)
        return
    import keras

    results = {
        "backend": args.backend,
        "keras": keras.__version__,
        "machine": f"{machine_name()}, {os.cpu_count()} cores",
        "gpu": keras_gpu(),
        "note": (
            "Interleaved runs; min and median over "
            f"{args.runs} runs after 3 warm-up calls (fit and predict: one "
            "warm-up epoch). Load average (1, 5, 15 "
            f"min) at the start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}."
        ),
        "commit": git_commit(),
        "torch": torch_available(),
        "sections": {},
    }
    out_dir = args.out / args.backend
    out_dir.mkdir(parents=True, exist_ok=True)
    for section in args.sections:
        results["sections"][section] = globals()[f"section_{section}"](args)
        if FAILED:  # with each section's write, in case the run is cut short
            results["failed"] = dict(FAILED)
        (out_dir / "speed.json").write_text(json.dumps(results, indent=1))
        (out_dir / "speed.md").write_text(markdown(results))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    results["note"] += f" At the end: {load}."
    (out_dir / "speed.json").write_text(json.dumps(results, indent=1))
    (out_dir / "speed.md").write_text(markdown(results))
    print(f"\nWrote {out_dir / 'speed.json'} and {out_dir / 'speed.md'}")


def git_commit():
    """The measured commit, `+changes` when the working tree differs."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        return run("rev-parse", "--short", "HEAD") + (
            "+changes" if run("status", "--porcelain", "--untracked-files=no") else ""
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
