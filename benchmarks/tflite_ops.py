"""TFLite's native LSTM op against the loop: size, accuracy, LiteRT and TFLite Micro.

Title: TFLite's native LSTM op against the loop
Description: exports batch-1 models with `export_tflite` both ways,
`lstm_op="loop"` (a `WHILE` loop; for int8 an unrolled one, since TF's
calibrator cannot run a loop) and `lstm_op="native"` (TFLite's builtin
`UNIDIRECTIONAL_SEQUENCE_LSTM`), in float32, dynamic-range and int8, and
measures each file: its size and export time, its largest difference from
the Keras model on a fixed random input, its LiteRT latency (one thread,
min and median over interleaved invokes, with XNNPACK and with TFLite's
builtin kernels alone) and whether TFLite Micro runs it, how fast, how
closely and in how large an arena. The models: a
classic `FourGateLSTM`, `keras.layers.LSTM` (exported by the same function)
and a projected `FourGateLSTM` (which has no native form: loop only), each
followed by `Dense(1)`, at each `--units`, `--time` steps of 16 features.

Run (from the repository root):

```
python benchmarks/tflite_ops.py                 # 64 and 256 units, T = 100 (~5 min on 2 cores)
python benchmarks/tflite_ops.py --units 8 --time 10 --runs 3 --micro-runs 1 --out /tmp/t   # smoke run (~1 min)
```

Results go to `benchmarks/results/tflite_ops/tflite_ops.json` (every timed
call) and `tflite_ops.md` (the tables).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import speed

FEATURES = 16
MODELS = {
    "classic": "`FourGateLSTM` classic",
    "keras": "`keras.layers.LSTM`",
    "projected": "`FourGateLSTM` projected",
}
QUANTIZE = (None, "dynamic", "int8")
CALIBRATION_WINDOWS = 64
# TFLite Micro: the arena a file is first tried with, and the step of the
# search for the smallest one that runs it.
MICRO_ARENA_MAX = 64 * 1024 * 1024
MICRO_ARENA_STEP = 16

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--time", type=int, default=100, help="steps a sequence")
    parser.add_argument(
        "--runs", type=int, default=100, help="interleaved LiteRT rounds (100)"
    )
    parser.add_argument(
        "--micro-runs", type=int, default=10, help="TFLite Micro invokes a file (10)"
    )
    parser.add_argument(
        "--out", type=Path, default=speed.REPO / "benchmarks/results/tflite_ops"
    )
    parser.add_argument("--micro-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("units", "time", "runs", "micro_runs"):
        values = getattr(args, name)
        if any(v < 1 for v in (values if isinstance(values, list) else [values])):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {values}")
    return args


def machine():
    return {
        "cpu": speed.machine_name(),
        "cores": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "commit": speed.git_commit(),
    }


def versions():
    import ai_edge_litert
    import keras
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
        "tflite_micro": _package_version("tflite_micro"),
    }


def _package_version(name):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------
# The cases: every model, quantization and op
# ---------------------------------------------------------------------------


def cases(units_list):
    """One dict per file to export: the projected cell has no native op."""
    result = []
    for units in units_list:
        for model in MODELS:
            for quantize in QUANTIZE:
                for op in ("loop",) if model == "projected" else ("loop", "native"):
                    name = f"{model} {units} {quantize or 'float32'} {op}"
                    result.append(
                        {
                            "name": name,
                            "model": model,
                            "units": units,
                            "quantize": quantize,
                            "lstm_op": op,
                        }
                    )
    return result


def build_model(kind, units, steps):
    """One recurrent layer and `Dense(1)`, seeded: the same weights for each
    of the model's files."""
    import keras

    from keras_lstm_gates import FourGateLSTM

    keras.utils.set_random_seed(0)
    if kind == "keras":
        layer = keras.layers.LSTM(units)
    else:
        layer = FourGateLSTM(units, use_gate=kind)
    return keras.Sequential(
        [keras.Input((steps, FEATURES)), layer, keras.layers.Dense(1)],
        name=f"{kind}_{units}",
    )


# ---------------------------------------------------------------------------
# Export each file, timed
# ---------------------------------------------------------------------------


def export_all(all_cases, steps, directory):
    """Exports every case into `directory`; adds the file's facts and the
    Keras output on the fixed input to each case."""
    import keras
    import numpy as np

    from keras_lstm_gates import export_tflite

    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((CALIBRATION_WINDOWS, steps, FEATURES), "float32")
    x = rng.standard_normal((1, steps, FEATURES), "float32")
    models = {}
    for number, case in enumerate(all_cases, 1):
        key = (case["model"], case["units"])
        if key not in models:
            models[key] = build_model(*key, steps)
        model = models[key]
        case["keras_output"] = keras.ops.convert_to_numpy(model(x)).tolist()
        path = os.path.join(directory, case["name"].replace(" ", "_") + ".tflite")
        start = time.perf_counter()
        try:
            report = export_tflite(
                model,
                path,
                quantize=case["quantize"],
                lstm_op=case["lstm_op"],
                representative_data=calibration if case["quantize"] == "int8" else None,
            )
        except Exception as error:  # noqa: BLE001 - recorded in the results
            case["export_error"] = _one_line(error)
            print(
                f"export {number}/{len(all_cases)} {case['name']}: {case['export_error']}"
            )
            continue
        case.update(
            path=path,
            export_s=time.perf_counter() - start,
            size_bytes=report.size_bytes,
            recurrent_op=next(iter(report.recurrent_ops.values())),
            ops=sorted(report.ops),
            probe_max_abs_diff=report.max_abs_diff,
        )
        print(
            f"export {number}/{len(all_cases)} {case['name']}: "
            f"{case['export_s']:.1f} s, {case['size_bytes']:,} bytes, "
            f"{case['recurrent_op']}",
            flush=True,
        )
    return x


def _one_line(error):
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"


# ---------------------------------------------------------------------------
# LiteRT: accuracy and latency, the files interleaved
# ---------------------------------------------------------------------------


def measure_litert(exported, x, runs):
    """Each file's largest difference from Keras on `x`, then its latency,
    with XNNPACK (LiteRT's default) and with TFLite's builtin kernels alone:
    `runs` rounds over every file, each timed invoke after two of the same
    file (warm, as in an app; `speed.time_interleaved`). The native op keeps
    its states between invokes: every invoke starts from zero states."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    resolvers = {
        "litert": OpResolverType.AUTO,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    }
    invokes = {}
    for case in exported:
        for runtime, resolver in resolvers.items():
            interpreter = Interpreter(
                model_path=case["path"],
                num_threads=1,
                experimental_op_resolver_type=resolver,
            )
            interpreter.allocate_tensors()
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)

            def invoke(interpreter=interpreter):
                interpreter.reset_all_variables()
                interpreter.invoke()

            invoke()
            got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            case[f"{runtime}_max_abs_diff"] = _max_diff(got, case["keras_output"])
            invokes[(case["name"], runtime)] = invoke
    times = speed.time_interleaved(invokes, runs, burst=3)
    for case in exported:
        for runtime in resolvers:
            ts = times.get((case["name"], runtime))
            if ts:
                case[f"{runtime}_ms"] = [1e3 * t for t in ts]
                case[f"{runtime}_min_ms"] = min(case[f"{runtime}_ms"])
                case[f"{runtime}_median_ms"] = statistics.median(case[f"{runtime}_ms"])
            else:
                error = speed.FAILED.get((case["name"], runtime), "not timed")
                case[f"{runtime}_error"] = error


def _max_diff(got, expected):
    import numpy as np

    diff = float(np.max(np.abs(np.asarray(got) - np.asarray(expected))))
    return diff if np.isfinite(diff) else "nan"


# ---------------------------------------------------------------------------
# TFLite Micro: does it run, in how large an arena, how fast
# ---------------------------------------------------------------------------


def micro_child(path, arena_size):
    """Whether TFLite Micro runs the file in an arena of `arena_size` bytes,
    and what it printed (its arena use, or its errors). In a child process:
    TFLM's LSTM kernel crashes the process in an arena a little too small."""
    child = subprocess.run(
        [sys.executable, __file__, "--micro-child", path, str(arena_size)],
        capture_output=True,
        text=True,
    )
    printed = child.stdout + child.stderr
    if child.returncode < 0:
        printed += f"\nTFLM crashed (signal {-child.returncode})"
    return child.returncode == 0, printed


def run_micro_child(path, arena_size):
    """The child's side: allocate, print the arena use, invoke once."""
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    with open(path, "rb") as f:
        content = f.read()
    try:
        interpreter = runtime.Interpreter.from_bytes(content, arena_size=arena_size)
        interpreter.print_allocations()
        shape = interpreter.get_input_details(0)["shape"]
        interpreter.set_input(np.zeros(shape, np.float32), 0)
        interpreter.invoke()
    except RuntimeError as error:
        print(f"TFLM: {error}", flush=True)
        sys.exit(1)


def micro_arena(path):
    """The smallest arena (to `MICRO_ARENA_STEP` bytes) TFLite Micro runs the
    file in, and the arena total its allocator recorded in a large one; or
    the error TFLM gave in the large one."""
    ok, printed = micro_child(path, MICRO_ARENA_MAX)
    if not ok:
        return {"micro_error": _micro_error(printed)}
    recorded = int(re.search(r"Arena allocation total (\d+) bytes", printed).group(1))
    # The recorded total is usually enough; a file with many operators also
    # needs room to plan its memory, which is not recorded.
    failing, step = None, 0
    while step < MICRO_ARENA_MAX and not micro_child(path, recorded + step)[0]:
        failing, step = recorded + step, max(1024, 2 * step)
    works = min(recorded + step, MICRO_ARENA_MAX)
    while failing is not None and works - failing > MICRO_ARENA_STEP:
        middle = failing + (works - failing) // 2 // MICRO_ARENA_STEP * MICRO_ARENA_STEP
        if micro_child(path, middle)[0]:
            works = middle
        else:
            failing = middle
    return {"micro_arena_bytes": works, "micro_arena_recorded_bytes": recorded}


def _micro_error(printed):
    """TFLM's own words for why it cannot run a file, in one line."""
    lines = [
        line.strip()
        for line in printed.splitlines()
        if line.strip()
        and not line.startswith(("W0000", "I0000", "WARNING", "[Recording", "TFLM"))
    ]
    crash = re.search(r"TFLM crashed \(signal (\d+)\)", printed)
    if crash and "Arena allocation total" in printed:
        return f"allocates, then crashes in invoke (signal {crash.group(1)})"
    if crash:
        return "; ".join(lines[-2:] + [f"crashes (signal {crash.group(1)})"])
    return "; ".join(lines[-2:]) or "TFLM failed to allocate tensors"


def measure_micro(exported, x, runs):
    """Each file in TFLite Micro: its arena, its output against Keras, and
    the minimum of `runs` invokes (from zero states), the files in turn."""
    from tflite_micro.python.tflite_micro import runtime

    interpreters = {}
    for case in exported:
        case.update(micro_arena(case["path"]))
        if "micro_error" in case:
            print(f"TFLM {case['name']}: cannot run it: {case['micro_error']}")
            continue
        with open(case["path"], "rb") as f:
            interpreter = runtime.Interpreter.from_bytes(
                f.read(), arena_size=case["micro_arena_bytes"]
            )
        interpreter.reset()
        interpreter.set_input(x, 0)
        interpreter.invoke()
        case["micro_max_abs_diff"] = _max_diff(
            interpreter.get_output(0), case["keras_output"]
        )
        case["micro_ms"] = []
        interpreters[case["name"]] = (case, interpreter)
        print(
            f"TFLM {case['name']}: arena {case['micro_arena_bytes']:,} bytes, "
            f"max diff {case['micro_max_abs_diff']}",
            flush=True,
        )
    for _ in range(runs):
        for case, interpreter in interpreters.values():
            interpreter.reset()
            interpreter.set_input(x, 0)
            start = time.perf_counter()
            interpreter.invoke()
            case["micro_ms"].append(1e3 * (time.perf_counter() - start))
    for case, _ in interpreters.values():
        case["micro_min_ms"] = min(case["micro_ms"])


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def markdown(results):
    info = results["machine"]
    load = ", ".join(f"{v:.2f}" for v in info["load_average_start"])
    end = ", ".join(f"{v:.2f}" for v in info["load_average_end"])
    lines = [
        f"# TFLite: the native LSTM op against the loop ({info['cpu']}, "
        f"{info['cores']} cores)",
        "",
        f"`{results['command']}`",
        "",
        f"Commit {info['commit']}; "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + f". Batch 1, T = "
        f"{results['time']}, {FEATURES} features, each model followed by `Dense(1)`. "
        f"LiteRT: 1 thread, min and median of {results['runs']} interleaved invokes "
        "(each after two of its own file), with XNNPACK (LiteRT's default) and "
        "with TFLite's builtin kernels alone (no delegate); "
        "TFLite Micro: min of "
        f"{results['micro_runs']} invokes. Largest |TFLite - Keras| on one fixed "
        f"N(0, 1) input; int8 calibrated on {CALIBRATION_WINDOWS} such windows. "
        f"Load average (1, 5, 15 min) at the start: {load}; at the end: {end}. "
        f"Whole run {results['wall_s'] / 60:.1f} min.",
        "",
    ]
    for units in results["units"]:
        rows = [case for case in results["cases"] if case["units"] == units]
        lines += [
            f"## {units} units: the file, LiteRT",
            "",
            "| model | weights | op | file | export | max diff | LiteRT min | "
            "LiteRT median | builtin kernels min |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [_litert_row(case, _loop_of(case, rows)) for case in rows]
        lines += [
            "",
            f"## {units} units: TFLite Micro",
            "",
            "| model | weights | op | TFLM min | arena | max diff |",
            "|---|---|---|---|---|---|",
        ]
        lines += [_micro_row(case) for case in rows]
        lines.append("")
    return "\n".join(lines)


def _loop_of(case, rows):
    """The loop file of a native case's model and weights, else `None`."""
    if case["lstm_op"] != "native":
        return None
    for other in rows:
        if other["lstm_op"] == "loop" and all(
            other[k] == case[k] for k in ("model", "units", "quantize")
        ):
            return other
    return None


def _head(case):
    op = "native" if case["lstm_op"] == "native" else case.get("recurrent_op", "loop")
    return f"| {MODELS[case['model']]} | {case['quantize'] or 'float32'} | {op} |"


def _litert_row(case, loop):
    if "export_error" in case:
        return _head(case) + f" export failed: {case['export_error']} |" + " |" * 5
    cells = [
        f"{case['size_bytes'] / 1024:,.1f} KiB",
        f"{case['export_s']:.1f} s",
        _figure(case["litert_max_abs_diff"]),
    ]
    for key in ("litert_min_ms", "litert_median_ms", "builtin_min_ms"):
        if key not in case:
            cells.append(str(case.get(key.split("_")[0] + "_error", "")))
            continue
        cell = f"{case[key]:.3f} ms"
        if loop and key != "litert_median_ms" and key in loop:
            cell += f" ({case[key] / loop[key]:.2f}x loop)"
        cells.append(cell)
    return _head(case) + " " + " | ".join(cells) + " |"


def _micro_row(case):
    if "micro_min_ms" in case:
        return (
            _head(case)
            + f" {case['micro_min_ms']:.2f} ms |"
            + f" {case['micro_arena_bytes'] / 1024:,.1f} KiB |"
            + f" {_figure(case['micro_max_abs_diff'])} |"
        )
    why = case.get("micro_error") or case.get("export_error", "")
    return _head(case) + f" cannot run: {why} | | |"


def _figure(value):
    return "NaN" if value == "nan" else f"{value:.1e}"


def main(argv=None):
    args = parse_args(argv)
    if args.micro_child:
        run_micro_child(args.micro_child[0], int(args.micro_child[1]))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(speed.REPO))
    started = time.perf_counter()
    results = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(),
        "units": args.units,
        "time": args.time,
        "runs": args.runs,
        "micro_runs": args.micro_runs,
        "cases": cases(args.units),
    }
    results["versions"] = versions()
    with tempfile.TemporaryDirectory(prefix="tflite_ops_") as directory:
        x = export_all(results["cases"], args.time, directory)
        exported = [case for case in results["cases"] if "path" in case]
        print(f"\nLiteRT: {args.runs} interleaved rounds over {len(exported)} files")
        measure_litert(exported, x, args.runs)
        print(f"\nTFLite Micro: {args.micro_runs} invokes a file")
        measure_micro(exported, x, args.micro_runs)
    for case in results["cases"]:
        case.pop("path", None)
    results["machine"]["load_average_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - started
    table = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tflite_ops.json").write_text(json.dumps(results, indent=1))
    (args.out / "tflite_ops.md").write_text(table)
    print("\n" + table)
    print(f"Wrote {args.out / 'tflite_ops.json'} and {args.out / 'tflite_ops.md'}")


if __name__ == "__main__":
    main()
