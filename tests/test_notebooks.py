"""The tutorials as notebooks: each is its script, and runs with its figures.

Each `examples/<name>.ipynb` is `examples/<name>.py` paired by jupytext, and
runs top to bottom in a Jupyter kernel (nbclient) with small settings passed
in `KLG_ARGS`, offline: the text tutorials on the CSVs of `../shared/data`,
the temperature one on the data the package ships. These runs are the
examples' end-to-end tests: what each wrote is checked after it.
"""

import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import jupytext
import keras
import nbformat
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from nbclient import NotebookClient

from keras_lstm_gates import TFLiteModel

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED_DATA = REPO.parent / "shared" / "data"
TUTORIALS = ["temperature", "sentiment", "text_classification"]


def cells(notebook):
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


@pytest.mark.parametrize("name", TUTORIALS)
def test_notebook_is_its_script(name):
    notebook = nbformat.read(str(EXAMPLES / f"{name}.ipynb"), as_version=4)
    script = jupytext.read(str(EXAMPLES / f"{name}.py"))
    assert cells(notebook) == cells(script), (
        f"examples/{name}.py and .ipynb differ: run "
        f"`jupytext --sync examples/{name}.ipynb` after editing either"
    )
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    # The script, written from the notebook, is the script itself.
    written = jupytext.writes(notebook, "py:percent")
    assert written == (EXAMPLES / f"{name}.py").read_text()
    # Committed without outputs; the first cell says how to install it.
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert 'pip install -e ".[examples]"' in notebook.cells[0].source
    (parameters,) = [
        c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])
    ]
    assert parameters.source == "ARGS = common.command_line()"


def run_notebook(name, monkeypatch, *flags):
    """Executes the notebook with `flags` in `KLG_ARGS`; returns it with its
    outputs."""
    monkeypatch.setenv("KLG_ARGS", shlex.join(flags))
    notebook = nbformat.read(str(EXAMPLES / f"{name}.ipynb"), as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()
    return notebook


def figures(notebook):
    return [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def printed(notebook):
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


def check_gate_paragraph(text, gates):
    """The printed paragraph quotes the numbers of the traced input."""
    assert f"f kept {gates['forget_mean']:.2f} of the long-term memory" in text
    assert f"i opened most at {gates['learn_max_at']}" in text
    assert f"most open at {gates['use_max_at']}" in text
    for key in ("forget_mean", "forget_min", "learn_max", "use_mean", "use_max"):
        assert 0.0 <= gates[key] <= 1.0, key


def docs_block(page, containing):
    """The indented code block of `page` (under docs/) holding `containing`,
    dedented."""
    lines = (REPO / "docs" / page).read_text().splitlines()
    at = next(k for k, line in enumerate(lines) if containing in line)
    start, end = at, at
    while lines[start - 1].startswith("    "):
        start -= 1
    while end + 1 < len(lines) and lines[end + 1].startswith("    "):
        end += 1
    return "\n".join(line[4:] for line in lines[start : end + 1])


def test_temperature_notebook_forecasts_and_exports(tmp_path, monkeypatch):
    # With the textbook cell, which TFLite runs as its own LSTM op; the
    # lesson's projected cell is exported by test_two_workers_train_to_the_same_weights.
    out = tmp_path / "run"
    notebook = run_notebook(
        "temperature",
        monkeypatch,
        *["--quick", "--units", "8", "--use-gate", "classic"],
        *["--output-dir", str(out)],
    )
    # Training curves, forecast, gates.
    assert len(figures(notebook)) == 3
    text = printed(notebook)
    # Quiet as the script: TensorFlow's C++ start-up log is held back.
    assert "oneDNN custom operations" not in text
    assert "absl::InitializeLog" not in text
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("test_mae", "test_rmse", "persistence_mae", "linear_mae"):
        assert np.isfinite(saved[key]) and saved[key] >= 0
    for key in ("test_mae", "persistence_mae", "linear_mae"):
        assert f"{saved[key]:.4f}" in text  # the printed table
    assert saved["test_rmse"] >= saved["test_mae"]
    assert "keras_lstm_test_mae" not in saved
    for name in ("model.keras", "model.tflite", "training_curves.png", "forecast.png"):
        assert (out / name).is_file(), name
    assert (out / "gates.png").stat().st_size > 1000
    gates = saved["gates"]
    assert gates["steps"] == saved["window"] and gates["units"] == 8
    check_gate_paragraph(text, gates)
    # The streaming `step` signature, fed one reading at a time, agrees too.
    assert saved["tflite_max_abs_diff"] < 1e-3
    assert saved["tflite_step_max_abs_diff"] < 1e-3
    signatures = Interpreter(str(out / "model.tflite")).get_signature_list()
    assert set(signatures["step"]["inputs"]) == {
        "inputs",
        "four_gate_lstm_stm",
        "four_gate_lstm_ltm",
    }
    assert not any("Flex" in op for op in saved["tflite_ops"])
    # The saved model carries the optimizer's state: it resumes training.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.models.load_model(out / "model.keras")
    assert not [w for w in caught if "optimizer" in str(w.message)], caught
    check_native_exports(out, saved, text, loaded)
    assert int(loaded.optimizer.iterations) == -(-saved["num_train"] // 64)
    assert loaded.get_layer("four_gate_lstm").cell.use_gate == "classic"
    assert saved["use_gate"] == "classic"


def check_native_exports(out, saved, text, model):
    """Both TFLite files of a classic model hold TFLite's native LSTM op, and
    the printed table gives each file's size, error and latency."""
    native = "UNIDIRECTIONAL_SEQUENCE_LSTM"
    assert saved["tflite_recurrent_ops"] == {"four_gate_lstm": native}
    files = saved["tflite_files"]
    assert list(files) == ["model.tflite", "model_int8.tflite"]
    for name, row in files.items():
        ops = TFLiteModel(out / name).ops
        assert native in ops and "WHILE" not in ops
        assert row["op"] == native
        assert row["size_bytes"] == (out / name).stat().st_size
        (line,) = [line for line in text.splitlines() if line.startswith(f"  {name} ")]
        assert line.split()[1:] == [
            native,
            f"{row['size_bytes'] / 1024:.1f}",
            "KB",
            f"{row['max_abs_diff']:.2g}",
            f"{row['test_mae']:.4f}",
            f"{row['latency_us']:.0f}",
            "µs",
        ]
        assert row["latency_us"] > 0
    assert files["model.tflite"]["max_abs_diff"] < 1e-4
    # int8: smaller, and about as good as the model on the test windows.
    int8 = files["model_int8.tflite"]
    assert int8["size_bytes"] < files["model.tflite"]["size_bytes"]
    assert 0 < int8["max_abs_diff"] < 1.0
    assert int8["test_mae"] == pytest.approx(saved["test_mae"], abs=0.05)
    # It reads scaled readings, with the mean and std metrics.json holds.
    mean = np.array(saved["tflite_int8_input_mean"], "float32")
    std = np.array(saved["tflite_int8_input_std"], "float32")
    assert mean.shape == std.shape == (len(saved["feature_columns"]),)
    readings = mean + std * np.random.default_rng(0).normal(size=(1, 48, len(mean)))
    readings = readings.astype("float32")
    np.testing.assert_allclose(
        model.layers[0](readings), (readings - mean) / std, rtol=1e-5, atol=1e-5
    )


def test_sentiment_notebook_serves_raw_strings(tmp_path, monkeypatch):
    out = tmp_path / "run"
    csv_path = SHARED_DATA / "rotten_tomatoes_snippets.csv"
    notebook = run_notebook(
        "sentiment",
        monkeypatch,
        *["--quick", "--compare-keras-lstm", "--units", "8"],
        *["--csv", str(csv_path), "--output-dir", str(out)],
    )
    # Training curves (both models), confusion matrix, gates.
    assert len(figures(notebook)) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["negative", "positive"]
    for key in (
        "test_accuracy",
        "majority_baseline_accuracy",
        "keras_lstm_test_accuracy",
    ):
        assert 0.0 <= metrics[key] <= 1.0
    assert (
        sum(metrics["confusion_matrix"][0]) + sum(metrics["confusion_matrix"][1])
        == metrics["num_test"]
    )
    check_gate_paragraph(printed(notebook), metrics["gates"])
    # The SavedModel takes the text itself.
    serve = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    scores = serve(tf.constant(["A joy.", "Dreadful, dull."]))["outputs"]
    assert scores.shape == (2, 1)
    assert np.all((scores.numpy() >= 0) & (scores.numpy() <= 1))
    assert metrics["saved_model_max_abs_diff"] < 1e-5
    vocabulary = (out / "vocabulary.txt").read_text().splitlines()
    assert vocabulary[:2] == ["[PAD]", "[UNK]"]
    assert len(vocabulary) == metrics["vocabulary_size"]
    assert (out / "model.tflite").is_file() and metrics["tflite_max_abs_diff"] < 1e-4
    assert (out / "confusion_matrix.png").is_file()
    check_why_a_loop(printed(notebook), metrics, "projected")
    # The tutorials page's snippet, as written, in a fresh process.
    code = docs_block("tutorials.md", "runs/sentiment/saved_model")
    code = code.replace("runs/sentiment/saved_model", str(out / "saved_model"))
    lines = code.splitlines()
    lines[-1] = f"print({lines[-1]}.numpy().tolist())"
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout.strip().splitlines()[-1])) == 2


def test_text_classification_notebook_reports_every_class(tmp_path, monkeypatch):
    out = tmp_path / "run"
    csv_path = SHARED_DATA / "ag_news_test.csv"
    notebook = run_notebook(
        "text_classification",
        monkeypatch,
        *["--quick", "--units", "8", "--use-gate", "classic"],
        *["--csv", str(csv_path), "--output-dir", str(out)],
    )
    assert len(figures(notebook)) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    loaded = keras.models.load_model(out / "model.keras")
    assert loaded.get_layer("four_gate_lstm").cell.use_gate == "classic"
    check_why_a_loop(printed(notebook), metrics, "classic")
    labels = pd.read_csv(csv_path)["label"]
    assert metrics["classes"] == sorted(labels.unique())
    assert set(metrics["per_class"]) == set(metrics["classes"])
    supports = [row["support"] for row in metrics["per_class"].values()]
    assert sum(supports) == metrics["num_test"]
    # AG News is balanced, so the majority class is right on a quarter.
    assert metrics["majority_baseline_accuracy"] == pytest.approx(0.25, abs=0.02)
    for name in ("model.keras", "model.tflite", "confusion_matrix.png", "gates.png"):
        assert (out / name).is_file(), name
    check_gate_paragraph(printed(notebook), metrics["gates"])


def check_why_a_loop(text, metrics, use_gate):
    """A text model's LSTM stays a loop in its TFLite file, and the run says
    why: the padding mask (and a projected Use gate)."""
    assert metrics["use_gate"] == use_gate
    assert metrics["tflite_recurrent_ops"] == {"four_gate_lstm": "WHILE"}
    assert (
        "In model.tflite, layer 'four_gate_lstm' is WHILE (a loop), not TFLite's "
        "native UNIDIRECTIONAL_SEQUENCE_LSTM: it reads the padding mask" in text
    )
    projected = "nor does the op compute the projected Use gate" in text
    assert projected == (use_gate == "projected")
