"""Tests for the three example scripts in `examples/`.

Bad input and the data loaders are tested without training; so are the gate
paragraph and the gate plots, on models built here. Each example runs end to
end once as its notebook, in `tests/test_notebooks.py`. The download paths
run `keras.utils.get_file` on small archives built here in the canonical
layouts, served from `file://` URLs or a pre-filled cache, each verified
against its own sha256.
"""

import hashlib
import inspect
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

import common  # noqa: E402
import distributed  # noqa: E402
import sentiment  # noqa: E402
import temperature  # noqa: E402
import text_classification  # noqa: E402
import text_pipeline  # noqa: E402


def run_bad(main, argv, capsys):
    """Runs an example expected to refuse its input; returns stderr.

    A refused run creates no `--output-dir`.
    """
    output_dir = Path(argv[argv.index("--output-dir") + 1])
    existed = output_dir.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert output_dir.exists() == existed
    return error


# Bad input: one line, exit status 2, before any training or output folder.


@pytest.fixture
def weather_csv(tmp_path):
    hours = pd.date_range("2020-01-01", periods=400, freq="h")
    frame = pd.DataFrame(
        {
            "time": hours,
            "temp": np.sin(np.arange(400) / 10.0),
            "humidity": np.cos(np.arange(400) / 7.0),
            "station": "A",
        }
    )
    path = tmp_path / "weather.csv"
    frame.to_csv(path, index=False)
    return path


def csv_args(path, tmp_path, *more):
    return [
        "--csv",
        str(path),
        "--time-column",
        "time",
        "--target-column",
        "temp",
        "--output-dir",
        str(tmp_path / "out"),
        *more,
    ]


def test_temperature_missing_file_is_one_line_error(tmp_path, capsys):
    error = run_bad(temperature.main, csv_args(tmp_path / "nope.csv", tmp_path), capsys)
    assert "no such file" in error and "nope.csv" in error


def onednn_logs_here():
    """Whether TensorFlow's start-up log says "oneDNN custom operations" on
    this machine (x86-64 Linux, unless turned off)."""
    on = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
    return on and (platform.system(), platform.machine()) == ("Linux", "x86_64")


@pytest.mark.parametrize("verbose", [False, True])
def test_bad_input_in_a_fresh_process_is_only_its_error(tmp_path, verbose):
    # As a user runs it: TensorFlow's C++ start-up log (oneDNN, CUDA), which
    # TF_CPP_MIN_LOG_LEVEL no longer silences, shows only with --verbose.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, str(REPO / "examples" / "temperature.py")]
    command += csv_args(tmp_path / "missing.csv", tmp_path)
    command += ["--verbose"] if verbose else []
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=180
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("temperature.py: error: --csv: no such file")
    if not verbose:
        assert len(lines) == 1, result.stderr
    elif onednn_logs_here():
        assert "oneDNN custom operations" in result.stderr


def test_temperature_missing_column_is_one_line_error(weather_csv, tmp_path, capsys):
    argv = csv_args(weather_csv, tmp_path, "--feature-columns", "pressure")
    error = run_bad(temperature.main, argv, capsys)
    assert "'pressure'" in error and "humidity" in error


def test_temperature_non_numeric_target_is_one_line_error(
    weather_csv, tmp_path, capsys
):
    argv = csv_args(weather_csv, tmp_path)
    argv[argv.index("temp")] = "station"
    error = run_bad(temperature.main, argv, capsys)
    assert "'station'" in error and "numeric" in error


def test_temperature_blank_time_stamps_are_one_line_error(
    weather_csv, tmp_path, capsys
):
    frame = pd.read_csv(weather_csv)
    frame.loc[[50, 120, 200], "time"] = None
    frame.to_csv(weather_csv, index=False)
    error = run_bad(temperature.main, csv_args(weather_csv, tmp_path), capsys)
    # Row 1 of the file is the header.
    assert "--time-column 'time'" in error and "3 rows" in error
    assert "52, 122, 202" in error


def test_temperature_too_few_rows_for_the_window(weather_csv, tmp_path, capsys):
    error = run_bad(
        temperature.main, csv_args(weather_csv, tmp_path, "--window", "200"), capsys
    )
    assert "too few rows" in error and "200" in error
    assert not (tmp_path / "out").exists()


def test_temperature_non_numeric_value_is_named_with_its_row(
    weather_csv, tmp_path, capsys
):
    frame = pd.read_csv(weather_csv)
    frame["temp"] = frame["temp"].astype(str)
    frame.loc[50, "temp"] = "abc"
    frame.to_csv(weather_csv, index=False)
    error = run_bad(temperature.main, csv_args(weather_csv, tmp_path), capsys)
    assert "--target-column 'temp' must be numeric, got 'abc' on row 52" in error


@pytest.mark.parametrize(
    "content, message",
    [
        ("time,temp\n", "has no rows of data, only the header ['time', 'temp']"),
        ("", "is empty"),
        (b"time,temp\n2020-01-01 00:00,\xe9\n", "is not UTF-8 text"),
    ],
    ids=["header-only", "empty", "latin-1"],
)
def test_temperature_unreadable_csv_is_named(content, message, tmp_path, capsys):
    path = tmp_path / "weather.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    error = run_bad(temperature.main, csv_args(path, tmp_path), capsys)
    assert f"--csv {path} {message}" in error


def test_temperature_csv_that_is_a_folder(tmp_path, capsys):
    error = run_bad(temperature.main, csv_args(tmp_path, tmp_path), capsys)
    assert f"--csv {tmp_path} is a folder, not a CSV file" in error


def test_temperature_infinite_values_are_one_line_error(weather_csv, tmp_path, capsys):
    # They trained to a NaN model.keras, then failed in the linear baseline.
    frame = pd.read_csv(weather_csv)
    frame.loc[[10, 20], "humidity"] = np.inf
    frame.to_csv(weather_csv, index=False)
    error = run_bad(temperature.main, csv_args(weather_csv, tmp_path), capsys)
    assert "infinite values in {'humidity': 2}" in error


def test_temperature_numeric_time_stamps_are_refused(weather_csv, tmp_path, capsys):
    # pandas reads Unix seconds as nanoseconds: every reading at midnight 1970.
    frame = pd.read_csv(weather_csv)
    frame["time"] = pd.to_datetime(frame["time"]).astype("int64") // 10**9
    frame.to_csv(weather_csv, index=False)
    error = run_bad(temperature.main, csv_args(weather_csv, tmp_path), capsys)
    assert "--time-column 'time' holds numbers, not time stamps" in error


def test_temperature_repeated_time_stamps_are_refused(weather_csv, tmp_path, capsys):
    frame = pd.read_csv(weather_csv)
    frame.loc[100:109, "time"] = frame.loc[99, "time"]
    frame.to_csv(weather_csv, index=False)
    error = run_bad(temperature.main, csv_args(weather_csv, tmp_path), capsys)
    assert "10 time stamps" in error and "more than once" in error
    assert str(pd.Timestamp(frame.loc[99, "time"])) in error


def test_temperature_gaps_in_time_are_reported(weather_csv, capsys):
    frame = pd.read_csv(weather_csv).drop(index=range(100, 148))
    frame.to_csv(weather_csv, index=False)
    loaded, *_ = common.read_time_series(weather_csv, "time", "temp")
    assert len(loaded) == 352
    note = capsys.readouterr().out
    assert "is not evenly spaced: 1 gap longer than the usual 0 days 01:00:00" in note
    assert "the longest 2 days 01:00:00, after 2020-01-05 03:00:00" in note


def test_temperature_column_flags_need_csv(tmp_path, capsys):
    # Without --csv they were ignored: the run forecast temp_c, not dewpoint_c.
    argv = ["--target-column", "dewpoint_c", "--output-dir", str(tmp_path / "o")]
    error = run_bad(temperature.main, argv, capsys)
    assert "--target-column apply only with --csv" in error


@pytest.mark.parametrize("flag, value", [("--data", "jena"), ("--cache-dir", "c")])
def test_temperature_data_flags_do_not_apply_with_csv(
    weather_csv, tmp_path, capsys, flag, value
):
    # They were ignored without a word: the run read the CSV.
    argv = [
        *["--csv", str(weather_csv), "--time-column", "time"],
        *["--target-column", "temp", flag, value, "--output-dir", str(tmp_path / "o")],
    ]
    error = run_bad(temperature.main, argv, capsys)
    assert f"{flag} do not apply with --csv" in error


@pytest.mark.parametrize("main", [temperature.main, sentiment.main])
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_range_names_the_flag(main, tmp_path, capsys, seed):
    # A traceback from set_random_seed after creating the output folder
    # (temperature), or an error that did not say which flag (sentiment).
    argv = ["--seed", seed, "--output-dir", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after argparse's usage
    assert "argument --seed: must be in [0, 2**32 - 1]" in last
    assert not (tmp_path / "o").exists()


def test_help_shows_no_none_defaults(capsys):
    with pytest.raises(SystemExit):
        temperature.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: None)" not in shown
    assert "(default: ~/.keras)" in shown and "(default: 1337)" in shown


@pytest.mark.parametrize("module", [temperature, sentiment, text_classification])
def test_use_gate_flag_picks_the_cell(module, capsys):
    assert module.parse_args([])[1].use_gate == "projected"
    assert module.parse_args(["--use-gate", "classic"])[1].use_gate == "classic"
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--use-gate", "textbook"])
    assert exit_info.value.code == 2
    assert "--use-gate: invalid choice: 'textbook'" in capsys.readouterr().err


@pytest.mark.parametrize("use_gate", ["projected", "classic"])
@pytest.mark.parametrize("module", [temperature, sentiment, text_classification])
def test_models_are_built_with_the_use_gate(module, use_gate):
    if module is temperature:
        stats = (np.zeros(3), np.ones(3), 0.0, 1.0)
        model = module.build_model((12, 3), stats, 4, use_gate=use_gate)
    elif module is sentiment:
        model = module.build_model(50, 10, 4, use_gate=use_gate)
    else:
        model = module.build_model(50, 10, 3, 4, use_gate=use_gate)
    assert model.get_layer("four_gate_lstm").cell.use_gate == use_gate


@pytest.mark.parametrize("main", [sentiment.main, text_classification.main])
def test_text_column_flags_need_csv(main, tmp_path, text_csv, capsys):
    # Without --csv they were ignored, and the default dataset downloaded.
    argv = ["--label-column", "stars", "--output-dir", str(tmp_path / "o")]
    error = run_bad(main, argv, capsys)
    assert "--label-column apply only with --csv" in error
    path = text_csv(["a", "b"] * 10)
    argv = ["--csv", str(path), "--cache-dir", "c", "--output-dir", str(tmp_path / "o")]
    assert "--cache-dir does not apply with --csv" in run_bad(main, argv, capsys)


def test_temperature_cache_dir_needs_a_download(tmp_path, capsys):
    argv = ["--cache-dir", "c", "--output-dir", str(tmp_path / "o")]
    error = run_bad(temperature.main, argv, capsys)
    assert "--cache-dir applies only with --data jena" in error


def test_multiworker_without_tf_config_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = ["--distribute", "multiworker", "--output-dir", str(tmp_path / "out")]
    assert "TF_CONFIG" in run_bad(temperature.main, argv, capsys)


@pytest.mark.parametrize("main", [temperature.main, sentiment.main])
def test_previous_run_is_not_overwritten(main, tmp_path, capsys):
    previous = tmp_path / "out" / "metrics.json"
    previous.parent.mkdir()
    previous.write_text("{}")
    error = run_bad(main, ["--output-dir", str(previous.parent)], capsys)
    assert "--overwrite" in error
    assert previous.read_text() == "{}"


@pytest.fixture
def text_csv(tmp_path):
    def write(labels, columns=("text", "label"), texts=None):
        if texts is None:
            texts = [f"review number {k}" for k in range(len(labels))]
        frame = pd.DataFrame({columns[0]: texts})
        frame[columns[1]] = labels
        path = tmp_path / "texts.csv"
        frame.to_csv(path, index=False)
        return path

    return write


@pytest.mark.parametrize("main", [sentiment.main, text_classification.main])
def test_text_missing_file_is_one_line_error(main, tmp_path, capsys):
    argv = ["--csv", str(tmp_path / "nope.csv"), "--output-dir", str(tmp_path / "o")]
    assert "nope.csv" in run_bad(main, argv, capsys)


@pytest.mark.parametrize("main", [sentiment.main, text_classification.main])
def test_text_missing_column_is_one_line_error(main, text_csv, tmp_path, capsys):
    path = text_csv(["a", "b"] * 5, columns=("body", "label"))
    argv = ["--csv", str(path), "--output-dir", str(tmp_path / "o")]
    error = run_bad(main, argv, capsys)
    assert "--text-column" in error and "'text'" in error and "body" in error


@pytest.mark.parametrize("main", [sentiment.main, text_classification.main])
def test_text_single_class_is_one_line_error(main, text_csv, tmp_path, capsys):
    argv = ["--csv", str(text_csv(["good"] * 10)), "--output-dir", str(tmp_path / "o")]
    assert "at least 2 classes" in run_bad(main, argv, capsys)


def test_sentiment_needs_exactly_two_classes(text_csv, tmp_path, capsys):
    path = text_csv(["a", "b", "c"] * 5)
    argv = ["--csv", str(path), "--output-dir", str(tmp_path / "o")]
    assert "exactly 2 classes" in run_bad(sentiment.main, argv, capsys)


@pytest.mark.parametrize("main", [sentiment.main, text_classification.main])
def test_text_too_few_rows_per_class_is_one_line_error(
    main, text_csv, tmp_path, capsys
):
    # 5 rows of "b": its 10 % rounds to 0, so validation would lack it.
    path = text_csv(["a"] * 6 + ["b"] * 5)
    argv = ["--csv", str(path), "--quick", "--output-dir", str(tmp_path / "o")]
    error = run_bad(main, argv, capsys)
    assert "too few rows per class" in error and "at least 6" in error
    assert "{'b': 5}" in error


@pytest.mark.parametrize("main", [sentiment.main, text_classification.main])
def test_text_without_words_is_one_line_error(main, text_csv, tmp_path, capsys):
    # Empty texts and punctuation seen once each: no token to learn.
    path = text_csv(["a", "b"] * 10, texts=[""] * 10 + list("!?.,;:-+*/"))
    argv = ["--csv", str(path), "--quick", "--output-dir", str(tmp_path / "o")]
    error = run_bad(main, argv, capsys)
    assert "--text-column" in error and "no word" in error


def test_text_labels_are_stripped_of_spaces(text_csv):
    path = text_csv(["World", "World ", " Sports", "Sports"])
    _, labels = text_pipeline.read_labelled_csv(path)
    assert labels.tolist() == ["World", "World", "Sports", "Sports"]


def test_integer_labels_sort_as_numbers():
    # As text, "10" sorted before "2": output 2 of the model meant label 10.
    labels = np.array(
        ["10", "2", "0", "1", "11", "2", "3", "4", "5", "6", "7", "8", "9"]
    )
    ids, classes = text_pipeline.encode_labels(labels)
    assert classes == [str(k) for k in range(12)]
    np.testing.assert_array_equal(ids, labels.astype(int))
    # Names still sort as text.
    ids, classes = text_pipeline.encode_labels(np.array(["World", "Sports", "World"]))
    assert classes == ["Sports", "World"] and ids.tolist() == [1, 0, 1]


_WRITE_VOCABULARY = """
import sys
sys.path.insert(0, sys.argv[1])
import text_pipeline
vectorizer = text_pipeline.TextVectorizer(["caf\\u00e9", "it\\u2019s", "\\u65e5\\u672c"], 8)
vectorizer.save_vocabulary(sys.argv[2])
"""


def test_vocabulary_is_utf8_whatever_the_locale(tmp_path):
    # Under an ASCII locale (or Windows' cp1252) it failed half-written.
    path = tmp_path / "vocabulary.txt"
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "LANG": "C"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run(
        [sys.executable, "-c", _WRITE_VOCABULARY, str(REPO / "examples"), str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = path.read_bytes().decode("utf-8").splitlines()
    assert lines[2:] == ["café", "it’s", "日本"]
    assert os.listdir(tmp_path) == ["vocabulary.txt"]


def test_one_epoch_training_curve_is_drawn(tmp_path, monkeypatch):
    # Lines without markers: a one-epoch run (--quick) drew empty axes.
    figures = []
    monkeypatch.setattr(common, "_save", lambda figure, path: figures.append(figure))
    history = SimpleNamespace(history={"loss": [0.5], "val_loss": [0.6]})
    common.plot_history({"four_gate": history}, tmp_path / "curves.png")
    (axes,) = figures[0].axes
    assert [line.get_marker() for line in axes.lines] == ["o", "o"]
    assert all(float(t).is_integer() for t in axes.get_xticks())


def test_written_files_are_told_from_kept_ones(tmp_path, capsys):
    (tmp_path / "forecast.png").write_text("an earlier run's")
    (tmp_path / "metrics.json").write_text("{}")
    before = common.snapshot(tmp_path)
    os.utime(tmp_path / "metrics.json", ns=(0, 0))  # rewritten, as a run does
    (tmp_path / "model.tflite").write_text("new")
    common.report_written(tmp_path, before)
    out = capsys.readouterr().out
    assert f"Wrote {tmp_path}: metrics.json, model.tflite" in out
    assert f"Kept from before in {tmp_path}: forecast.png" in out


@pytest.mark.parametrize("main", [sentiment.main, text_classification.main])
def test_text_csv_that_is_a_folder(main, tmp_path, capsys):
    argv = ["--csv", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    assert "is a folder, not a CSV file" in run_bad(main, argv, capsys)


def fake_multiworker(task_type, task_id, cluster):
    resolver = SimpleNamespace(
        task_type=task_type,
        task_id=task_id,
        cluster_spec=lambda: SimpleNamespace(as_dict=lambda: cluster),
    )
    return SimpleNamespace(cluster_resolver=resolver)


def test_worker_index_makes_exactly_one_chief():
    workers = {"worker": ["localhost:1", "localhost:2"]}
    with_chief = {"chief": ["localhost:0"], **workers}
    assert distributed.worker_index(tf.distribute.get_strategy()) == 0
    assert distributed.worker_index(tf.distribute.MirroredStrategy()) == 0
    indices = [
        distributed.worker_index(fake_multiworker("worker", k, workers))
        for k in range(2)
    ]
    assert indices == [0, 1]
    indices = [distributed.worker_index(fake_multiworker("chief", 0, with_chief))] + [
        distributed.worker_index(fake_multiworker("worker", k, with_chief))
        for k in range(2)
    ]
    assert indices == [0, 1, 2]


# The pieces of the pipelines, against independent computations.


def test_windows_hold_the_past_and_the_target_horizon_ahead():
    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) * 10})
    inputs, targets, last = temperature.make_windows(frame, ["a", "b"], "a", 4, 3)
    assert inputs.shape == (20 - 4 - 3 + 1, 4, 2)
    for k in range(len(inputs)):
        np.testing.assert_array_equal(inputs[k, :, 0], np.arange(k, k + 4))
        assert targets[k] == k + 4 + 3 - 1
        assert last[k] == k + 3


def test_forecast_is_the_last_value_plus_the_predicted_change():
    model = keras.Sequential(
        [
            keras.Input((4, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                1,
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant(0.5),
            ),
        ]
    )
    last = np.array([1.0, -2.0, 3.0], "float32")
    windows = (np.zeros((3, 4, 2), "float32"), None, last)
    np.testing.assert_allclose(temperature.forecast(model, windows), last + 0.5)


def test_split_in_time_is_chronological_and_complete():
    frame = pd.DataFrame({"t": np.arange(1000)})
    train, val, test = temperature.split_in_time(frame, 48, 1)
    assert (len(train), len(val), len(test)) == (700, 150, 150)
    assert train["t"].max() < val["t"].min() and val["t"].max() < test["t"].min()


def test_linear_baseline_recovers_a_linear_series():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(300, 5, 2)).astype("float32")
    weights = rng.normal(size=(5, 2))
    targets = np.einsum("nwf,wf->n", inputs, weights) + 3.0
    forecast = temperature.linear_forecast(inputs[:200], targets[:200], inputs[200:])
    np.testing.assert_allclose(forecast, targets[200:], atol=1e-3)


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    parts = text_pipeline.stratified_split(labels, (0.1, 0.2), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    for part, fraction in zip(parts, (0.7, 0.1, 0.2)):
        counts = np.bincount(labels[part], minlength=3)
        np.testing.assert_allclose(counts, fraction * np.array([500, 300, 200]), atol=1)
    again = text_pipeline.stratified_split(labels, (0.1, 0.2), seed=3)
    other = text_pipeline.stratified_split(labels, (0.1, 0.2), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(parts[2], other[2])


def test_vectorizer_vocabulary_comes_from_training_texts_only():
    train = np.array(["The cat sat.", "the CAT ran", "a dog sat"])
    vectorizer = text_pipeline.TextVectorizer.adapt(train, 100, min_count=1)
    # Case folded; "." counts as a token; counts decide the order.
    assert set(vectorizer.vocabulary) == {"the", "cat", "sat", "ran", "a", "dog", "."}
    assert set(vectorizer.vocabulary[:3]) == {"the", "cat", "sat"}
    frequent = text_pipeline.TextVectorizer.adapt(train, 100)
    assert set(frequent.vocabulary) == {"the", "cat", "sat"}
    ids = vectorizer.transform(np.array(["the zebra sat", "cat"]))
    assert ids.shape == (2, vectorizer.sequence_length)
    index = {token: k + 2 for k, token in enumerate(vectorizer.vocabulary)}
    assert ids[0, :3].tolist() == [index["the"], 1, index["sat"]]
    assert ids[1, 0] == index["cat"] and not ids[1, 1:].any()


def test_per_class_report_matches_direct_counts():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 3, 200)
    predicted = np.where(rng.random(200) < 0.7, true, rng.integers(0, 3, 200))
    matrix = text_pipeline.confusion_matrix(true, predicted, 3)
    report = text_pipeline.per_class_report(matrix, ["a", "b", "c"])
    for k, name in enumerate("abc"):
        hits = np.sum((true == k) & (predicted == k))
        assert report[name]["precision"] == pytest.approx(hits / np.sum(predicted == k))
        assert report[name]["recall"] == pytest.approx(hits / np.sum(true == k))
        assert report[name]["support"] == np.sum(true == k)


# The download paths, on tiny archives in the canonical layouts.


def sha256(path):
    """The file's sha256: what a loader is told is the published one."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_imdb_tarball(path):
    reviews = {
        ("train", "pos"): ["A wonderful film.", "Loved it <br />so much."],
        ("train", "neg"): ["Dull and slow.", "I want my time back."],
        ("test", "pos"): ["Great acting."],
        ("test", "neg"): ["Terrible plot.", "Awful."],
    }
    with tarfile.open(path, "w:gz") as archive:
        for (split, label), texts in reviews.items():
            for k, text in enumerate(texts):
                data = text.encode()
                info = tarfile.TarInfo(f"aclImdb/{split}/{label}/{k}_7.txt")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return reviews


def test_imdb_downloads_and_reads_the_canonical_tarball(tmp_path):
    reviews = make_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz")
    splits = sentiment.load_imdb(
        cache_dir=tmp_path / "cache",
        origin=(tmp_path / "aclImdb_v1.tar.gz").as_uri(),
        file_hash=sha256(tmp_path / "aclImdb_v1.tar.gz"),
    )
    for split in ("train", "test"):
        texts, labels = splits[split]
        expected = reviews[(split, "neg")] + reviews[(split, "pos")]
        assert sorted(texts.tolist()) == sorted(expected)
        for text, label in zip(texts, labels):
            assert text in reviews[(split, ("neg", "pos")[label])]


def test_sentiment_default_data_comes_from_a_prefilled_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "datasets"
    cache.mkdir(parents=True)
    make_imdb_tarball(cache / "aclImdb_v1.tar.gz")
    # A cached archive with the published hash is not downloaded again.
    published = (None, sentiment.IMDB_URL, sha256(cache / "aclImdb_v1.tar.gz"))
    monkeypatch.setattr(sentiment.load_imdb, "__defaults__", published)
    args = SimpleNamespace(
        csv=None,
        cache_dir=tmp_path / "cache",
        seed=0,
        text_column=None,
        label_column=None,
    )
    splits = sentiment.load_dataset(args)
    assert args.classes == ["negative", "positive"]
    assert len(splits["train"][0]) + len(splits["val"][0]) == 4
    assert sorted(splits["test"][1].tolist()) == [0, 0, 1]


def test_ag_news_downloads_and_reads_the_canonical_csvs(tmp_path):
    rows = {
        "train": [(3, "Stocks up", "Markets rally."), (2, "Cup final", "A win.")],
        "test": [(1, "Summit", 'Leaders meet, "at last".'), (4, "New chip", "Fast.")],
    }
    for split, items in rows.items():
        pd.DataFrame(items).to_csv(tmp_path / f"{split}.csv", header=False, index=False)
    origin = (tmp_path / "train.csv").as_uri().replace("train.csv", "{split}.csv")
    hashes = {split: sha256(tmp_path / f"{split}.csv") for split in rows}
    splits = text_classification.load_ag_news(tmp_path / "cache", origin, hashes)
    for split, items in rows.items():
        texts, labels = splits[split]
        assert texts.tolist() == [f"{title}. {body}" for _, title, body in items]
        assert labels.tolist() == [c - 1 for c, _, _ in items]
    assert text_classification.CLASSES[splits["test"][1][0]] == "World"


def test_jena_downloads_the_zip_and_keeps_hourly_readings(tmp_path):
    times = pd.date_range("2009-01-01 00:10", periods=30, freq="10min")
    frame = pd.DataFrame(
        {
            "Date Time": times.strftime("%d.%m.%Y %H:%M:%S"),
            "p (mbar)": np.linspace(990, 1000, 30),
            "T (degC)": np.arange(30.0),
            "wv (m/s)": np.where(np.arange(30) % 6 == 5, -9999.0, 1.5),
        }
    )
    archive = tmp_path / "jena_climate_2009_2016.csv.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("jena_climate_2009_2016.csv", frame.to_csv(index=False))
    hourly, time_column, target, features = temperature.load_jena(
        tmp_path / "cache", origin=archive.as_uri()
    )
    on_the_hour = times.minute == 0
    assert (time_column, target) == ("Date Time", "T (degC)")
    assert features == ["p (mbar)", "T (degC)", "wv (m/s)"]
    np.testing.assert_array_equal(hourly[target], np.arange(30.0)[on_the_hour])
    # The sensor's -9999 (a failed reading) is a calm 0, not a huge wind.
    assert (hourly["wv (m/s)"] == 0).sum() == 5 and hourly["wv (m/s)"].min() == 0
    assert (hourly[time_column].dt.minute == 0).all()


def test_cache_dir_is_created_and_used(tmp_path):
    # keras.utils.get_file quietly falls back to /tmp/.keras for a folder that
    # does not exist yet, where an earlier run may have left other files.
    make_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz")
    cache = tmp_path / "new" / "cache"
    origin = (tmp_path / "aclImdb_v1.tar.gz").as_uri()
    sentiment.load_imdb(cache, origin, sha256(tmp_path / "aclImdb_v1.tar.gz"))
    assert (cache / "datasets" / "aclImdb_v1.tar.gz").is_file()


def test_archive_is_extracted_once(tmp_path):
    # keras.utils.get_file extracts again at every call (IMDB: 100,000 files).
    make_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz")
    origin = (tmp_path / "aclImdb_v1.tar.gz").as_uri()
    published = sha256(tmp_path / "aclImdb_v1.tar.gz")
    first = sentiment.load_imdb(tmp_path / "cache", origin, published)
    review = next((tmp_path / "cache" / "datasets").glob("*_extracted/aclImdb/*/*/*"))
    review.write_text("Edited after the extraction.")
    second = sentiment.load_imdb(tmp_path / "cache", origin, published)
    assert "Edited after the extraction." in second[review.parts[-3]][0]
    assert "Edited after the extraction." not in first[review.parts[-3]][0]


def test_deleted_archive_is_downloaded_and_extracted_again(tmp_path):
    # What the "damaged" error asks: delete the archive and run again.
    make_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz")
    origin = (tmp_path / "aclImdb_v1.tar.gz").as_uri()
    sentiment.load_imdb(
        tmp_path / "cache", origin, sha256(tmp_path / "aclImdb_v1.tar.gz")
    )
    (tmp_path / "cache" / "datasets" / "aclImdb_v1.tar.gz").unlink()
    with tarfile.open(tmp_path / "aclImdb_v1.tar.gz", "w:gz") as archive:
        for split in ("train", "test"):
            for label in ("pos", "neg"):
                data = f"A new {split} {label} review.".encode()
                info = tarfile.TarInfo(f"aclImdb/{split}/{label}/0_7.txt")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    published = sha256(tmp_path / "aclImdb_v1.tar.gz")
    texts, _ = sentiment.load_imdb(tmp_path / "cache", origin, published)["test"]
    assert "A new test pos review." in texts


def test_failed_download_is_one_line_error(tmp_path, capsys, monkeypatch):
    missing = (tmp_path / "nowhere" / "aclImdb_v1.tar.gz").as_uri()
    defaults = (None, missing, sentiment.IMDB_SHA256)
    monkeypatch.setattr(sentiment.load_imdb, "__defaults__", defaults)
    argv = ["--cache-dir", str(tmp_path / "c"), "--output-dir", str(tmp_path / "o")]
    error = run_bad(sentiment.main, argv, capsys)
    assert f"could not download aclImdb_v1.tar.gz from {missing}" in error
    assert "pass --csv" in error


def test_damaged_cached_archive_says_to_delete_it(tmp_path, capsys, monkeypatch):
    # Without a published hash (as Jena's) the cached archive is read as is.
    unverified = (None, sentiment.IMDB_URL, None)
    monkeypatch.setattr(sentiment.load_imdb, "__defaults__", unverified)
    cache = tmp_path / "cache" / "datasets"
    cache.mkdir(parents=True)
    make_imdb_tarball(tmp_path / "whole.tar.gz")
    damaged = cache / "aclImdb_v1.tar.gz"
    damaged.write_bytes((tmp_path / "whole.tar.gz").read_bytes()[:200])
    argv = ["--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "o")]
    error = run_bad(sentiment.main, argv, capsys)
    assert f"the downloaded file {damaged} is damaged" in error
    assert "delete it and run again" in error


def test_ag_news_cached_page_that_is_not_the_csv(tmp_path):
    cache = tmp_path / "cache" / "datasets"
    cache.mkdir(parents=True)
    for split in ("train", "test"):
        (cache / f"ag_news_{split}.csv").write_text("<html>Not Found</html>\n")
    # Unverified (a published hash would refuse the page before it is read).
    with pytest.raises(
        ValueError, match=r"damaged .*'<html>Not Found</html>' on line 1"
    ):
        text_classification.load_ag_news(tmp_path / "cache", file_hashes=None)


def test_download_that_is_not_the_published_archive_is_refused(
    tmp_path, capsys, monkeypatch
):
    # A tampered (or truncated) archive: here, ours in place of IMDB's.
    make_imdb_tarball(tmp_path / "aclImdb_v1.tar.gz")
    origin = (tmp_path / "aclImdb_v1.tar.gz").as_uri()
    defaults = (None, origin, sentiment.IMDB_SHA256)
    monkeypatch.setattr(sentiment.load_imdb, "__defaults__", defaults)
    cache = tmp_path / "cache"
    argv = ["--cache-dir", str(cache), "--output-dir", str(tmp_path / "o")]
    error = run_bad(sentiment.main, argv, capsys)
    downloaded = cache / "datasets" / "aclImdb_v1.tar.gz"
    assert f"the downloaded file {downloaded} is damaged" in error
    assert f"does not match the provided value of {sentiment.IMDB_SHA256}" in error
    assert "delete it and run again" in error
    assert not list((cache / "datasets").glob("*_extracted"))


def test_ag_news_csv_that_is_not_the_published_one_is_refused(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text('3,"Stocks up","Markets rally."\n')
    origin = (tmp_path / "train.csv").as_uri().replace("train.csv", "{split}.csv")
    with pytest.raises(ValueError, match=r"ag_news_train.csv is damaged .* sha256"):
        text_classification.load_ag_news(tmp_path / "cache", origin)


@pytest.mark.parametrize(
    "module, name",
    [(sentiment, "IMDB"), (text_classification, "AG_NEWS"), (temperature, "JENA")],
)
def test_every_canonical_download_has_a_sha256_or_a_stated_reason(module, name):
    url, published = getattr(module, f"{name}_URL"), getattr(module, f"{name}_SHA256")
    assert url.startswith("https://")
    # A Git host's file is pinned to a commit, never to a branch that moves.
    if "githubusercontent" in url:
        assert re.search(r"/[0-9a-f]{40}/", url), url
    if published is None:
        source = inspect.getsource(module)
        above = source[: source.index(f"{name}_SHA256 = None")].rsplit("\n\n", 1)
        assert "# Not verified: " in above[-1], f"{name}: say why it has no hash"
        return
    for value in published.values() if isinstance(published, dict) else [published]:
        assert re.fullmatch(r"[0-9a-f]{64}", value), value


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the examples save, by file name (still written)."""
    figures = {}
    save = common._save

    def keep(figure, path):
        figures[Path(path).name] = figure
        save(figure, path)

    monkeypatch.setattr(common, "_save", keep)
    return figures


def x_labels(figure, name):
    axis = next(a for a in figure.axes if a.get_xlabel().startswith(name))
    return [label.get_text() for label in axis.get_xticklabels()]


def test_text_gates_plot_shows_the_tokens_and_the_prediction(
    text_csv, tmp_path, saved_figures, capsys
):
    # Every "pos" text is empty; with the default seed the first test text
    # is, and an empty text has no gates to show.
    path = text_csv(["pos", "neg"] * 10, texts=["", "a film", "", "the film"] * 5)
    out = tmp_path / "run"
    metrics = sentiment.main(
        ["--quick", "--units", "4", "--csv", str(path), "--output-dir", str(out)]
    )
    assert (out / "gates.png").stat().st_size > 1000
    figure = saved_figures["gates.png"]
    tokens = x_labels(figure, "token")
    assert tokens in (["a", "film"], ["the", "film"])
    title = " ".join(figure.get_suptitle().split())
    assert f'"{" ".join(tokens)}" (true: neg; predicted: ' in title
    # The paragraph's numbers are this text's.
    gates = metrics["gates"]
    assert gates["steps"] == 2 and gates["units"] == 4
    assert gates["learn_max_at"] in (repr(token) for token in tokens)
    out_text = capsys.readouterr().out
    assert f"f kept {gates['forget_mean']:.2f} of the long-term memory" in out_text
    assert f"i opened most at {gates['learn_max_at']}" in out_text


def test_temperature_gates_plot_shows_the_hours_of_the_window(
    tmp_path, saved_figures, capsys
):
    window, features = 12, 3
    stats = (np.zeros(features), np.ones(features), 0.0, 1.0)
    model = temperature.build_model((window, features), stats, units=4)
    times = list(pd.date_range("2020-03-01 00:00", periods=window + 1, freq="h"))
    inputs = np.random.default_rng(0).normal(size=(1, window, features))
    numbers = temperature.explain_gates(
        model, inputs.astype("float32"), times, 1.5, 2.0, "temp", tmp_path / "g.png"
    )
    figure = saved_figures["g.png"]
    hours = x_labels(figure, "time of the reading")
    assert hours == [f"{t:%d %b %H:%M}" for t in times[:window]]
    title = " ".join(figure.get_suptitle().split())
    assert "12 readings to 01 Mar 11:00" in title
    assert "temp forecast for 01 Mar 12:00: 1.50 (true 2.00)" in title
    assert numbers["steps"] == window and numbers["units"] == 4
    assert numbers["use_max_at"] in hours
    assert f"most open at {numbers['use_max_at']}" in capsys.readouterr().out


def test_gate_paragraph_is_computed_on_the_input():
    rng = np.random.default_rng(0)
    names = ("N", "i", "f", "LTM", "U", "V", "STM")
    trace = {name: rng.random((1, 5, 3)) for name in names}
    tokens = ["a", "film", "not", "worth", "it"]
    paragraph, numbers = common.describe_gates(trace, tokens, "tokens")
    # Independently: each gate averaged over the units, step by step.
    forget, learn, use = (trace[name][0].mean(axis=1) for name in ("f", "i", "V"))
    ltm = np.vstack([np.zeros(3), trace["LTM"][0]])
    moved = np.abs(ltm[1:] - ltm[:-1]).mean(axis=1)
    assert numbers["forget_mean"] == pytest.approx(forget.mean())
    assert numbers["forget_min_at"] == repr(tokens[forget.argmin()])
    assert numbers["learn_max"] == pytest.approx(learn.max())
    assert numbers["learn_max_at"] == repr(tokens[learn.argmax()])
    assert numbers["remember_max_step"] == moved.argmax()
    assert numbers["use_max_at"] == repr(tokens[use.argmax()])
    assert f"f kept {forget.mean():.2f}" in paragraph
    assert f"over the 5 tokens; it let go most at {tokens[forget.argmin()]!r}" in (
        " ".join(paragraph.split())
    )
    # Another input, another paragraph: none of it is fixed prose.
    trace["f"] = 1 - trace["f"]
    assert common.describe_gates(trace, tokens, "tokens")[0] != paragraph


def test_gates_are_shown_on_a_short_test_text():
    ids = np.array([[0, 0, 0], [5, 6, 7], [3, 4, 0], [2, 0, 0]])
    assert text_pipeline.gate_example(ids, max_tokens=3) == 1
    assert text_pipeline.gate_example(ids, max_tokens=2) == 2
    # None short enough: the shortest that holds a token, never an empty one.
    assert text_pipeline.gate_example(ids[:3], max_tokens=1) == 2


def test_gate_tokens_are_the_words_the_model_read():
    vectorizer = text_pipeline.TextVectorizer(["the", "film"], 4)
    tokens = text_pipeline.tokens_of(vectorizer, "The film, THE zebra!")
    assert tokens == ["the", "film", "[,]", "the"]


def test_notebook_settings_come_from_klg_args(monkeypatch):
    assert not common.in_notebook()
    monkeypatch.setattr(sys, "argv", ["temperature.py", "--units", "8"])
    assert common.command_line() == ["--units", "8"]
    monkeypatch.setattr(common, "in_notebook", lambda: True)
    monkeypatch.setenv("KLG_ARGS", "--quick --output-dir 'my runs/t'")
    assert common.command_line() == ["--quick", "--output-dir", "my runs/t"]
    monkeypatch.delenv("KLG_ARGS")
    assert common.command_line() == []


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_to_the_same_weights(tmp_path):
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        command = [sys.executable, str(REPO / "examples" / "temperature.py")]
        command += ["--quick", "--units", "4", "--window", "12", "--seed", "3"]
        command += [
            "--distribute",
            "multiworker",
            "--output-dir",
            str(tmp_path / "run"),
        ]
        workers.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    chief = keras.models.load_model(tmp_path / "run" / "model.keras")
    other = keras.models.load_model(tmp_path / "run-worker1" / "model.keras")
    for a, b in zip(chief.get_weights(), other.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    metrics = [
        json.loads((tmp_path / name / "metrics.json").read_text())
        for name in ("run", "run-worker1")
    ]
    assert metrics[0]["test_mae"] == pytest.approx(metrics[1]["test_mae"], abs=1e-5)
    assert metrics[0]["distribute"] == "multiworker"
    # Only the chief exports. The lesson's projected cell is a loop in both
    # files (the classic one's native op: test_notebooks.py).
    for name in ("model.tflite", "model_int8.tflite"):
        assert (tmp_path / "run" / name).is_file()
        assert not (tmp_path / "run-worker1" / name).exists()
    files = metrics[0]["tflite_files"]
    assert files["model.tflite"]["op"] == "WHILE"
    assert files["model_int8.tflite"]["op"] == "unrolled"
    assert re.search(r"model_int8\.tflite +unrolled +[0-9.]+ KB", outputs[0])
    assert metrics[0]["use_gate"] == "projected"


def test_mixed_precision_benchmark_reads_the_example_data():
    # benchmarks/mixed_precision_loss.py reads its data with the temperature
    # example's functions: a change to them broke it once (a missing flag).
    sys.path.insert(0, str(REPO / "benchmarks"))
    import mixed_precision_loss

    splits, *_ = mixed_precision_loss.load_windows(quick=True)
    (inputs, targets, last), *_ = splits
    assert inputs.shape[1:] == (mixed_precision_loss.WINDOW, 7)
    assert len(inputs) == len(targets) == len(last) > 0


def test_mixed_precision_smoke_run_keeps_the_readme_figure(tmp_path):
    # `--quick` wrote its 2-epoch plot over docs/, the README's figure.
    sys.path.insert(0, str(REPO / "benchmarks"))
    import mixed_precision_loss

    quick = mixed_precision_loss.parse_args(["--quick", "--out", str(tmp_path)])
    assert quick.plot == tmp_path / "mixed_precision_loss.png"
    full = mixed_precision_loss.parse_args([])
    assert full.plot == REPO / "docs" / "mixed_precision_loss.png"
    chosen = mixed_precision_loss.parse_args(["--quick", "--plot", "p.png"])
    assert str(chosen.plot) == "p.png"
