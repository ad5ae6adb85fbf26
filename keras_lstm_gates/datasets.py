"""Small datasets shipped with the package, for examples and tests."""

from importlib import resources

_GREENSBORO_FILE = "greensboro_tmy3_hourly.csv"


def load_greensboro_weather():
    """Loads one year of hourly weather observations at Greensboro, NC.

    The data ship inside the package (see `keras_lstm_gates/data/README.md`
    for the source and licence), so this works offline. They are 8,760 real
    hourly readings of one Typical Meteorological Year (TMY3, NREL station
    723170, US public domain), on a nominal year 2001.

    Needs `pandas` (in the `examples` extra: `pip install
    "keras-lstm-gates[examples]"`).

    Returns:
        A `pandas.DataFrame` with a `datetime` column (`datetime64`) and the
        numeric columns `temp_c`, `dewpoint_c`, `rel_humidity`,
        `pressure_mbar` and `wind_speed_ms`, one row per hour, in time order.

    Example:

    >>> from keras_lstm_gates.datasets import load_greensboro_weather
    >>> frame = load_greensboro_weather()
    >>> frame.shape
    (8760, 6)
    >>> list(frame.columns)[:2]
    ['datetime', 'temp_c']
    """
    try:
        import pandas as pd
    except ImportError as error:
        raise ImportError(
            "load_greensboro_weather needs pandas; install it with "
            'pip install "keras-lstm-gates[examples]"'
        ) from error
    source = resources.files("keras_lstm_gates") / "data" / _GREENSBORO_FILE
    with resources.as_file(source) as path:
        return pd.read_csv(path, parse_dates=["datetime"])
