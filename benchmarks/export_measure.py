"""Measures export sizes, ops, parity and LiteRT latency for two sample models.

Run from the repository root: python benchmarks/export_measure.py
(The numbers in docs/deploy.md's "Measured" section come from it.)
"""

import argparse
import os
import tempfile
import time


def text_model():
    import keras

    from keras_lstm_gates import FourGateLSTM

    return keras.Sequential(
        [
            keras.Input((64,), dtype="int32"),
            keras.layers.Embedding(20000, 64, mask_zero=True),
            FourGateLSTM(64),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="sentiment",
    )


def series_model():
    import keras

    from keras_lstm_gates import FourGateLSTM

    return keras.Sequential(
        [keras.Input((48, 5)), FourGateLSTM(32), keras.layers.Dense(1)],
        name="temperature",
    )


def samples(model, n, rng):
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    if model.inputs[0].dtype.startswith("int"):
        ids = rng.integers(1, 20000, size=shape)
        for row, length in enumerate(rng.integers(5, shape[1] + 1, size=n)):
            ids[row, length:] = 0
        return ids.astype("int32")
    return rng.standard_normal(shape).astype("float32")


def latency_ms(fn, repeats=200, rounds=5):
    """Best of `rounds` mean times: the machine is shared, the best is the
    least disturbed."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return 1000 * best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory() as directory:
        measure(directory)


def measure(directory):
    """Exports each model four ways into `directory` and prints the numbers."""
    import keras
    import numpy as np

    from keras_lstm_gates import TFLiteModel
    from keras_lstm_gates import export_tflite

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    for model in (text_model(), series_model()):
        x = samples(model, 1, rng)
        test = samples(model, 256, rng)
        calibration = samples(model, 64, rng)
        scale = np.abs(model.predict(test, verbose=0)).max()
        print(
            f"\n{model.name}: {model.count_params():,} params, "
            f"max |Keras output| on 256 inputs {scale:.3g}"
        )
        for quantize in (None, "dynamic", "float16", "int8"):
            path = os.path.join(directory, f"{model.name}_{quantize}.tflite")
            report = export_tflite(
                model,
                path,
                quantize=quantize,
                streaming=True,
                representative_data=calibration if quantize == "int8" else None,
            )
            tflite = TFLiteModel(path)
            expected = keras.ops.convert_to_numpy(model.predict(test, verbose=0))
            got = np.concatenate([tflite(test[i : i + 1]) for i in range(len(test))])
            diff = np.abs(got - expected)
            step_in = x[:, 0]
            states = tflite.initial_states()
            print(
                f"  {str(quantize):8s} {report.size_bytes / 1024:8.1f} KiB  "
                f"probe diff {report.max_abs_diff:.2e} step {report.step_max_abs_diff:.2e}  "
                f"256 inputs: max {diff.max():.2e} mean {diff.mean():.2e}  "
                f"seq {latency_ms(lambda: tflite(x)):.3f} ms  "  # noqa: B023 (called at once)
                f"step {latency_ms(lambda: tflite.step(step_in, states)):.3f} ms"  # noqa: B023
            )
            print(f"           ops: {', '.join(sorted(report.ops))}")


if __name__ == "__main__":
    main()
