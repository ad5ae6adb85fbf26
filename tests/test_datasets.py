"""Tests for the datasets shipped with the package."""

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from keras_lstm_gates.datasets import load_greensboro_weather

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_greensboro_weather_has_every_hour_of_a_year_in_order():
    frame = load_greensboro_weather()
    assert len(frame) == 365 * 24
    steps = frame["datetime"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(hours=1)]


def test_greensboro_weather_columns_are_numeric_and_plausible():
    frame = load_greensboro_weather()
    numeric = frame.drop(columns="datetime")
    assert list(numeric.columns) == [
        "temp_c",
        "dewpoint_c",
        "rel_humidity",
        "pressure_mbar",
        "wind_speed_ms",
    ]
    assert all(np.issubdtype(t, np.number) for t in numeric.dtypes)
    assert not numeric.isna().any().any()
    assert numeric["temp_c"].between(-30, 45).all()
    assert (numeric["dewpoint_c"] <= numeric["temp_c"] + 1e-9).all()
    assert numeric["rel_humidity"].between(0, 100).all()


def test_greensboro_weather_matches_the_raw_csv_read_without_pandas():
    shipped = Path(__file__).resolve().parents[1] / "keras_lstm_gates" / "data"
    with open(shipped / "greensboro_tmy3_hourly.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    frame = load_greensboro_weather()
    temps = np.array([float(row["temp_c"]) for row in rows])
    np.testing.assert_array_equal(frame["temp_c"].to_numpy(), temps)
    assert str(frame["datetime"].iloc[-1]) == rows[-1]["datetime"] + ":00"


def test_shipped_file_is_the_shared_dataset():
    shipped = Path(__file__).resolve().parents[1] / "keras_lstm_gates" / "data"
    assert (shipped / "greensboro_tmy3_hourly.csv").read_bytes() == (
        SHARED_DATA / "greensboro_tmy3_hourly.csv"
    ).read_bytes()
