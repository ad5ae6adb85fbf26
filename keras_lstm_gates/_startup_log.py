"""TensorFlow's C++ start-up log, kept out of this project's command lines.

Importing TensorFlow writes lines of its C++ log to stderr (oneDNN, CUDA
drivers, CPU instructions), and since TensorFlow 2.19 it writes them before it
reads `TF_CPP_MIN_LOG_LEVEL` (tensorflow/tensorflow#100442).
`python -m keras_lstm_gates` and the example scripts are command lines whose
users asked for their own output only, so for them this module, imported by
the package before anything else, imports TensorFlow with those lines
filtered by the level the user chose: their own `TF_CPP_MIN_LOG_LEVEL`, 0
(everything) with `--verbose`, or else 3. The level is also set for what
TensorFlow logs later (a failed `cuInit`). A program that only imports the
package is left alone.
"""

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

# Without `--verbose` or the user's own level: hide information, warnings
# and errors (TensorFlow's meaning of 3); a fatal error always shows.
DEFAULT_LEVEL = 3

_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# absl's format (`I0000 00:00:...`) and TensorFlow's older one
# (`2025-09-17 14:44:05.157831: I tensorflow/...`).
_LOG_LINE = re.compile(r"(?:([IWEF])\d{4} |\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) )")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog()"
# The second line of the one start-up message that has two (cpu_feature_guard).
_SECOND_LINE = "To enable the following instructions"
_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def min_log_level(argv, environ=os.environ):
    """The least severity shown: 0 with `--verbose` in `argv`, else the
    user's `TF_CPP_MIN_LOG_LEVEL`, else `DEFAULT_LEVEL`."""
    if "--verbose" in argv:
        return 0
    try:
        return int(environ.get("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL))
    except ValueError:
        return 0


def filter_log(text, level):
    """`text` less the C++ log lines below `level`; every other line (a
    Python warning, a traceback) stays."""
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match:
            dropping = _SEVERITY[match.group(1) or match.group(2)] < level
        elif line.startswith(_ABSL_NOTICE):
            dropping = level > 0
        elif not line.startswith(_SECOND_LINE):
            dropping = False
        if not dropping:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def filtered_stderr(level):
    """Holds back what is written to stderr (file descriptor 2, where the C++
    log goes) and writes it out at the end, filtered by `filter_log`."""
    sys.stderr.flush()
    real = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(real, 2)
            os.close(real)
            held.seek(0)
            sys.stderr.write(filter_log(held.read().decode(errors="replace"), level))
            sys.stderr.flush()


def is_command_line(argv, orig_argv):
    """Whether the program is ours: `python -m keras_lstm_gates` (while the
    package is imported for it, `argv[0]` is `-m`) or an example script."""
    if argv[:1] == ["-m"] and "-m" in orig_argv[:-1]:
        module = orig_argv[orig_argv.index("-m") + 1]
        return module.partition(".")[0] == __package__
    script = argv[0] if argv else ""
    return script.endswith(".py") and Path(script).resolve().parent == _EXAMPLES


def import_tensorflow_quietly():
    """Imports TensorFlow with its start-up log filtered, for our command
    lines, unless it is imported already or the user asked for all of it."""
    if "tensorflow" in sys.modules or not is_command_line(sys.argv, sys.orig_argv):
        return
    level = min_log_level(sys.argv[1:])
    if level == 0:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(level))
    with filtered_stderr(level):
        import tensorflow  # noqa: F401


import_tensorflow_quietly()
