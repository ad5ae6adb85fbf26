"""Tests for `python -m keras_lstm_gates export`."""

import os
import platform
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from keras_lstm_gates import FourGateLSTM
from keras_lstm_gates import TFLiteModel
from keras_lstm_gates import _startup_log
from keras_lstm_gates.__main__ import main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [keras.Input((6, 2)), FourGateLSTM(4, return_sequences=True), FourGateLSTM(3)]
    )
    path = tmp_path_factory.mktemp("cli") / "model.keras"
    model.save(path)
    return model, str(path)


# A line of TensorFlow's C++ log, as absl writes it (`I0000 00:00:...`).
_CPP_LOG_LINE = re.compile(r"^[IWE]\d{4} ", re.MULTILINE)


def _run(*args):
    """Runs the command line in a fresh process, as a user would: without
    TF_CPP_MIN_LOG_LEVEL."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO_ROOT
    return subprocess.run(
        [sys.executable, "-m", "keras_lstm_gates", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_export_both_formats_in_a_fresh_process(model_file, tmp_path):
    model, path = model_file
    tflite, saved = tmp_path / "m.tflite", tmp_path / "sm"
    result = _run(
        "export",
        path,
        "--tflite",
        str(tflite),
        "--saved-model",
        str(saved),
        "--streaming",
        "--batch-size",
        "2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Quiet by default: no C++ start-up log (oneDNN, CUDA) before our output.
    assert not _CPP_LOG_LINE.search(result.stderr), result.stderr[-2000:]
    assert "oneDNN custom operations" not in result.stderr
    out = result.stdout
    assert f"wrote SavedModel {saved}" in out
    assert f"wrote {tflite}" in out and f"{os.path.getsize(tflite):,} bytes" in out
    assert "WHILE" in out and "FULLY_CONNECTED" in out
    assert "max |TFLite - Keras|" in out and "step by step" in out
    assert (saved / "saved_model.pb").is_file()
    x = np.random.default_rng(0).standard_normal((2, 6, 2)).astype("float32")
    np.testing.assert_allclose(
        TFLiteModel(tflite)(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )


def _one_line_error(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert lines and lines[-1].startswith("error: ")
    return lines[-1]


def test_missing_model_file_in_a_fresh_process(tmp_path):
    result = _run("export", str(tmp_path / "none.keras"), "--tflite", "m.tflite")
    assert "does not exist" in _one_line_error(result)
    assert result.stdout == ""
    # The error is all there is: TensorFlow's start-up log is held back...
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # ...unless asked for.
    args = ["export", str(tmp_path / "none.keras"), "--tflite", "m.tflite"]
    verbose = _run(*args, "--verbose")
    assert "does not exist" in _one_line_error(verbose)
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
    if onednn and (platform.system(), platform.machine()) == ("Linux", "x86_64"):
        assert "oneDNN custom operations" in verbose.stderr


_START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796600873.184210   26886 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796600873.251708   26886 cpu_feature_guard.cc:227] This TensorFlow binary...
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.
2025-09-17 14:44:05.176998: W external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] No cuda
E0000 00:00:1796600885.245853   26997 cuda_platform.cc:52] failed call to cuInit
/site-packages/keras/x.py:3: UserWarning: a Python warning is kept
F0000 00:00:1796600885.245853   26997 x.cc:1] a fatal error always shows
"""


@pytest.mark.parametrize(
    "level, kept",
    [
        (0, ["WARNING: All log", "oneDNN", "To enable", "No cuda", "cuInit"]),
        (1, ["No cuda", "cuInit"]),
        (2, ["cuInit"]),
        (3, []),
    ],
)
def test_start_up_log_is_filtered_by_level(level, kept):
    shown = _startup_log.filter_log(_START_UP, level)
    always = ["UserWarning: a Python warning is kept", "a fatal error always shows"]
    for text in kept + always:
        assert text in shown, (level, text)
    hidden = {"oneDNN", "To enable", "No cuda", "cuInit"} - set(kept)
    if level >= 1:
        hidden.add("WARNING: All log")
    for text in hidden:
        assert text not in shown, (level, text)


@pytest.mark.parametrize(
    "argv, environ, level",
    [
        ([], {}, _startup_log.DEFAULT_LEVEL),
        ([], {"TF_CPP_MIN_LOG_LEVEL": "1"}, 1),
        (["export", "--verbose"], {"TF_CPP_MIN_LOG_LEVEL": "3"}, 0),
    ],
)
def test_start_up_log_level_is_the_users(argv, environ, level):
    assert _startup_log.min_log_level(argv, environ) == level


@pytest.mark.parametrize(
    "argv, orig_argv, ours",
    [
        (["-m", "export"], ["python", "-m", "keras_lstm_gates", "export"], True),
        (["-m"], ["python", "-X", "dev", "-m", "keras_lstm_gates.x"], True),
        (["-m", "x"], ["python", "-m", "other_package", "x"], False),
        ([os.path.join(REPO_ROOT, "examples", "sentiment.py")], [], True),
        ([os.path.join(REPO_ROOT, "my_script.py")], [], False),
        (["-c"], ["python", "-c", "import keras_lstm_gates"], False),
        ([""], ["python"], False),
    ],
)
def test_only_our_command_lines_are_kept_quiet(argv, orig_argv, ours):
    assert _startup_log.is_command_line(argv, orig_argv) == ours


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("junk.keras", b"this is not a zip file", "not a .keras archive"),
        ("weights.h5", b"\x89HDF\r\n", "must be a .keras file"),
    ],
)
def test_unreadable_model_file(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["export", str(path), "--tflite", str(tmp_path / "m.tflite")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == [name]


def test_existing_output_needs_overwrite(model_file, tmp_path, capsys):
    _, path = model_file
    target = tmp_path / "m.tflite"
    target.write_bytes(b"mine")
    assert main(["export", path, "--tflite", str(target)]) == 1
    err = capsys.readouterr().err
    assert "already exists; pass --overwrite" in err
    assert target.read_bytes() == b"mine"
    assert main(["export", path, "--tflite", str(target), "--overwrite"]) == 0
    assert "FULLY_CONNECTED" in capsys.readouterr().out
    assert TFLiteModel(target).ops


def test_overwrite_never_replaces_the_model_or_a_directory(
    model_file, tmp_path, capsys
):
    _, path = model_file
    content = open(path, "rb").read()
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "notes.txt").write_text("keep")
    for argv, message in [
        (["--tflite", path], "would replace the model file"),
        (["--saved-model", os.path.dirname(path)], "would replace the model file"),
        (["--tflite", str(runs)], "is a directory"),
        (["--saved-model", str(runs)], "not a SavedModel (notes.txt)"),
        # Checked before anything is written: no SavedModel, then a refusal.
        (["--saved-model", str(tmp_path / "sm"), "--tflite", str(runs)], "directory"),
    ]:
        assert main(["export", path, *argv, "--overwrite"]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1
    assert open(path, "rb").read() == content
    assert os.listdir(runs) == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["runs"]


def test_model_reached_through_a_linked_folder_is_not_replaced(
    model_file, tmp_path, capsys
):
    _, path = model_file
    real = tmp_path / "real"
    real.mkdir()
    model = real / "m.keras"
    model.write_bytes(open(path, "rb").read())
    (tmp_path / "link").symlink_to(real)
    for option in ("--tflite", "--saved-model"):
        target = tmp_path / "link" / ("m.keras" if option == "--tflite" else "")
        argv = ["export", str(model), option, str(target), "--overwrite"]
        assert main(argv) == 1
        assert "would replace the model file" in capsys.readouterr().err
    assert model.read_bytes() == open(path, "rb").read()


def _bidirectional_file(directory):
    model = keras.Sequential(
        [keras.Input((6, 2)), keras.layers.Bidirectional(FourGateLSTM(3))]
    )
    path = directory / "bi.keras"
    model.save(path)
    return str(path)


def test_no_output_is_written_when_one_is_refused(model_file, tmp_path, capsys):
    _, path = model_file
    out = tmp_path / "out"
    out.mkdir()
    bidirectional = _bidirectional_file(tmp_path)
    sm, tflite = str(out / "sm"), str(out / "m.tflite")
    for argv, message in [
        (
            [path, "--saved-model", sm, "--tflite", str(out / "no" / "m.tflite")],
            "does not exist",
        ),
        ([path, "--saved-model", sm, "--tflite", sm], "two separate paths"),
        (
            [path, "--saved-model", sm, "--tflite", sm + "/m.tflite"],
            "two separate paths",
        ),
        (
            [bidirectional, "--saved-model", sm, "--tflite", tflite, "--streaming"],
            "cannot stream",
        ),
    ]:
        assert main(["export", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (argv, err)
        assert os.listdir(out) == [], argv


def test_failed_saved_model_leaves_no_tflite_file_behind(
    model_file, tmp_path, capsys, monkeypatch
):
    from keras_lstm_gates import export

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "export_saved_model", fail)
    _, path = model_file
    tflite = tmp_path / "m.tflite"
    argv = ["--saved-model", str(tmp_path / "sm"), "--tflite", str(tflite)]
    assert main(["export", path, *argv]) == 1
    assert "disk full" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    # With --overwrite, the user's earlier file is kept too.
    tflite.write_bytes(b"earlier export")
    assert main(["export", path, *argv, "--overwrite"]) == 1
    assert tflite.read_bytes() == b"earlier export"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_model_path_that_is_a_directory(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--tflite", str(tmp_path / "m.tflite")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a directory" in err


def test_quantize_float16(model_file, tmp_path, capsys):
    _, path = model_file
    target = tmp_path / "m.tflite"
    assert main(["export", path, "--tflite", str(target), "--quantize", "float16"]) == 0
    out = capsys.readouterr().out
    assert "float16" in out and "DEQUANTIZE" in out


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --saved-model DIR and/or --tflite FILE"),
        (["--saved-model", "d", "--streaming"], "apply to --tflite only"),
        (["--tflite", "m.tflite", "--quantize", "int4"], "invalid choice"),
        (["--tflite", "m.tflite", "--lstm-op", "fused"], "invalid choice"),
        (["--saved-model", "d", "--lstm-op", "native"], "apply to --tflite only"),
        (["--tflite", "m.tflite", "--quantize", "int8"], "go together"),
        (
            ["--tflite", "m.tflite", "--representative-data", "x.npy"],
            "go together",
        ),
    ],
)
def test_bad_arguments(model_file, capsys, args, message):
    _, path = model_file
    with pytest.raises(SystemExit) as exit_info:
        main(["export", path, *args])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


def test_bad_batch_size(model_file, tmp_path, capsys):
    _, path = model_file
    args = ["export", path, "--tflite", str(tmp_path / "m.tflite"), "--batch-size", "0"]
    assert main(args) == 1
    assert "batch_size must be a positive int, got 0" in capsys.readouterr().err


def test_compiled_model_exports_without_optimizer_warning(tmp_path, capsys):
    # A compiled model carries its optimizer (the examples save one compiled
    # but not trained); the export has no use for it, and loading it
    # compiled warned that the optimizer's variables were skipped.
    model = keras.Sequential(
        [keras.Input((6, 2)), FourGateLSTM(3), keras.layers.Dense(1)]
    )
    model.compile("adam", "mse")
    path = tmp_path / "trained.keras"
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["export", str(path), "--tflite", str(tmp_path / "m.tflite")]) == 0
    assert "wrote" in capsys.readouterr().out


@pytest.fixture(scope="module")
def classic_file(tmp_path_factory):
    keras.utils.set_random_seed(6)
    model = keras.Sequential(
        [
            keras.Input((6, 2)),
            FourGateLSTM(4, use_gate="classic"),
            keras.layers.Dense(1),
        ]
    )
    directory = tmp_path_factory.mktemp("classic")
    model.save(directory / "classic.keras")
    np.save(directory / "data.npy", np.random.default_rng(0).normal(size=(8, 6, 2)))
    return model, directory


def test_lstm_op_native(classic_file, capsys):
    model, directory = classic_file
    target = directory / "native.tflite"
    args = ["export", str(directory / "classic.keras"), "--tflite", str(target)]
    assert main([*args, "--lstm-op", "native"]) == 0
    out = capsys.readouterr().out
    assert f"layer '{model.layers[0].name}': UNIDIRECTIONAL_SEQUENCE_LSTM" in out
    assert "WHILE" not in out
    x = np.random.default_rng(1).normal(size=(1, 6, 2)).astype("float32")
    np.testing.assert_allclose(TFLiteModel(target)(x), model(x), atol=1e-5)


def test_lstm_op_native_refuses_a_projected_model(model_file, tmp_path, capsys):
    _, path = model_file
    args = ["export", path, "--tflite", str(tmp_path / "m.tflite")]
    assert main([*args, "--lstm-op", "native"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: export_tflite: lstm_op='native' cannot turn layer")
    assert err.count("\n") == 1 and not (tmp_path / "m.tflite").exists()


def test_quantize_int8_with_representative_data(classic_file, capsys):
    model, directory = classic_file
    target = directory / "int8.tflite"
    args = ["export", str(directory / "classic.keras"), "--tflite", str(target)]
    data = ["--representative-data", str(directory / "data.npy")]
    assert main([*args, "--quantize", "int8", *data]) == 0
    out = capsys.readouterr().out
    assert "int8" in out and "UNIDIRECTIONAL_SEQUENCE_LSTM" in out


def test_representative_data_that_is_not_npy(classic_file, tmp_path, capsys):
    _, directory = classic_file
    bad = tmp_path / "data.npy"
    bad.write_text("not an array")
    args = ["export", str(directory / "classic.keras"), "--tflite"]
    args += [str(tmp_path / "m.tflite"), "--quantize", "int8"]
    assert main([*args, "--representative-data", str(bad)]) == 1
    assert "is not a .npy array" in capsys.readouterr().err


def test_representative_data_of_the_wrong_shape(classic_file, tmp_path, capsys):
    _, directory = classic_file
    bad = tmp_path / "data.npy"
    np.save(bad, np.zeros((8, 5, 2)))  # the model reads 6 steps
    args = ["export", str(directory / "classic.keras"), "--tflite"]
    args += [str(tmp_path / "m.tflite"), "--quantize", "int8"]
    assert main([*args, "--representative-data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --representative-data") and "(8, 5, 2)" in err
