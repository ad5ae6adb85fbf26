"""Where one layer's training or inference step spends its time, kernel by kernel.

Runs TensorFlow's profiler over a few calls of a one-layer model and sums the
time of every kernel by name. Without `jit_compile` the kernels are
TensorFlow's ops (`while/body/.../MatMul_2:_MklMatMul`); with it they are
XLA's (HLO names such as `MatMul.22` or `add_divide_fusion`), which XLA's CPU
backend records only with `--xla_cpu_enable_xprof_traceme=true` in
`XLA_FLAGS`: this script adds it before TensorFlow loads. Kernels that run
once per time step show about `time` calls per step.

    python benchmarks/profile_loop.py --layer classic --jit on
    python benchmarks/profile_loop.py --layer keras --step infer --shape 32,200,64,256

Kernels of a step may run at the same time on different cores, so their sum
can exceed the step's wall time (printed first).
"""

import argparse
import collections
import glob
import os
import tempfile
import time

# Containers of the kernels, not kernels: left out of the table (an XLA
# `while.N` stays: it is the whole compiled loop).
_CONTAINERS = (
    "ThunkExecutor::",
    "ExecutorState::",
    "CpuExecutable::",
    "ExecutorDoneCallback",
)


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"--shape takes four positive integers batch,time,features,units; "
            f"got {text!r}"
        )
    return shape


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--layer", choices=["classic", "projected", "keras"], default="classic"
    )
    parser.add_argument("--step", choices=["train", "infer"], default="train")
    parser.add_argument("--jit", choices=["on", "off"], default="on")
    parser.add_argument("--shape", type=_shape, default=(64, 100, 16, 128))
    parser.add_argument("--calls", type=_positive, default=5, help="profiled calls (5)")
    parser.add_argument("--top", type=_positive, default=25, help="kernels shown (25)")
    args = parser.parse_args()
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        parser.error(
            "it profiles TensorFlow's kernels: run it with KERAS_BACKEND unset "
            f"or tensorflow, not {os.environ['KERAS_BACKEND']!r}"
        )

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_xprof_traceme" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_enable_xprof_traceme=true".strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from keras_lstm_gates import FourGateLSTM

    batch, steps, features, units = args.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    y = rng.standard_normal((batch, 1)).astype("float32")
    if args.layer == "keras":
        layer = keras.layers.LSTM(units)
    else:
        layer = FourGateLSTM(units, use_gate=args.layer)
    model = keras.Sequential(
        [keras.Input((steps, features), batch_size=batch), layer, keras.layers.Dense(1)]
    )
    model.compile("adam", "mse", jit_compile=args.jit == "on")
    if args.step == "train":
        step = lambda: model.train_on_batch(x, y)  # noqa: E731
    else:
        call = tf.function(
            lambda x: model(x, training=False), jit_compile=args.jit == "on"
        )
        step = lambda: call(x).numpy()  # noqa: E731
    for _ in range(3):  # warm-up: tracing and compiling
        step()

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.calls):
            step()
        wall = (time.perf_counter() - start) / args.calls
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())

    total, count = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_"):  # the thread pools' lines
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if not name.startswith(_CONTAINERS):
                    total[name] += event.duration_ps / 1e9  # ms
                    count[name] += 1
    print(
        f"{args.layer}, {args.step}, jit {args.jit}, (batch, time, features, units) = "
        f"{args.shape}: {1e3 * wall:.2f} ms a call (profiled), {args.calls} calls"
    )
    print(f"{'kernel':60s} {'ms/call':>8s} {'n/call':>7s} {'us each':>8s}")
    for name, ms in total.most_common(args.top):
        n = count[name]
        print(
            f"{name[-60:]:60s} {ms / args.calls:8.2f} {n / args.calls:7.0f} "
            f"{1e3 * ms / n:8.1f}"
        )


if __name__ == "__main__":
    main()
