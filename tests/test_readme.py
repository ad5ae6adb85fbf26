"""The README's quick start and the docs' snippets run as pasted."""

import os
import re

from tests.conftest import REPO_ROOT


def test_quick_start_runs(tmp_path, monkeypatch):
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "model.save" in code and "trace_gates" in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md#quick-start", "exec"), namespace)
    assert (tmp_path / "model.keras").exists()
    assert namespace["gates"]["STM"].shape == (1, 30, 32)


def _python_blocks(text):
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _docs_page(name):
    with open(os.path.join(REPO_ROOT, "docs", name), encoding="utf-8") as f:
        return f.read()


def test_deploy_snippets_run(tmp_path, monkeypatch):
    import keras
    import numpy as np

    from keras_lstm_gates import FourGateLSTM
    from keras_lstm_gates import export_tflite

    blocks = _python_blocks(_docs_page("deploy.md"))
    (converter,) = [b for b in blocks if "with tflite_tracing():" in b]
    from keras_lstm_gates import TFLiteModel

    (streaming,) = [b for b in blocks if 'TFLiteModel("temperature.tflite")' in b]
    monkeypatch.chdir(tmp_path)
    # Your own converter, on the quick start's model (batch size unknown).
    model = keras.Sequential(
        [keras.Input((30, 4)), FourGateLSTM(32), keras.layers.Dense(1)]
    )
    namespace = {"model": model}
    exec(compile(converter, "docs/deploy.md#from-python", "exec"), namespace)
    (tmp_path / "own.tflite").write_bytes(namespace["tflite_bytes"])
    x = np.random.default_rng(0).standard_normal((1, 30, 4)).astype("float32")
    np.testing.assert_allclose(
        TFLiteModel(tmp_path / "own.tflite")(x),
        keras.ops.convert_to_numpy(model(x)),
        atol=2e-2,  # dynamic-range quantized weights
    )
    # Streaming, on a model shaped as the temperature example's export.
    model = keras.Sequential(
        [
            keras.Input((48, 7)),
            FourGateLSTM(64, name="four_gate_lstm"),
            keras.layers.Dense(1),
        ]
    )
    export_tflite(model, "temperature.tflite", streaming=True)
    namespace = {}
    where = "docs/deploy.md#streaming-on-the-device"
    exec(compile(streaming, where, "exec"), namespace)
    assert np.shape(namespace["forecast"]) == (1, 1)


def test_deploy_native_op_snippets_run(tmp_path, monkeypatch):
    import keras
    import numpy as np

    from keras_lstm_gates import FourGateLSTM

    blocks = _python_blocks(_docs_page("deploy.md"))
    (native,) = [b for b in blocks if 'lstm_op="native"' in b and "report" in b]
    (chunks,) = [b for b in blocks if "reset=False" in b]
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            FourGateLSTM(16, use_gate="classic", return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    namespace = {"model": model}
    exec(compile(native, "docs/deploy.md#tflites-native-lstm-op", "exec"), namespace)
    assert namespace["report"].recurrent_ops == {
        model.layers[0].name: "UNIDIRECTIONAL_SEQUENCE_LSTM"
    }
    signal = np.random.default_rng(1).standard_normal((1, 100, 4)).astype("float32")
    namespace = {"signal": signal}
    where = "docs/deploy.md#chunked-streaming-the-carried-state-on-purpose"
    exec(compile(chunks, where, "exec"), namespace)
    np.testing.assert_allclose(
        np.concatenate([namespace["first"], namespace["second"]], axis=1),
        keras.ops.convert_to_numpy(model(signal)),
        atol=1e-5,
    )


def test_long_memory_snippet_sets_the_forget_bias():
    import keras
    import numpy as np

    from keras_lstm_gates import FourGateLSTM

    (snippet,) = _python_blocks(_docs_page("long_memory.md"))
    layer = FourGateLSTM(8)
    layer(np.zeros((1, 5, 3), "float32"))
    namespace = {"layer": layer, "np": np}
    exec(compile(snippet, "docs/long_memory.md", "exec"), namespace)
    bias = keras.ops.convert_to_numpy(layer.cell.bias)
    np.testing.assert_array_equal(bias[8:16], 3.0)  # the forget gate's block
