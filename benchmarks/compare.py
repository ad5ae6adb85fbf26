"""Old code against new: the team's A/B protocol for a change about speed.

Title: A/B speed comparison of two versions of `keras_lstm_gates`
Description: runs the same cases on an old commit of the package (checked
out with `git worktree add` into a temporary folder) and on the working
tree, each version in its own long-lived worker process, interleaved run by
run (old, new, old, new, ...), and compares the minima. Then it does it all
again with fresh workers and the order swapped (new first). A difference
counts only where both repeats agree beyond noise.

Run (from the repository root):

```
python benchmarks/compare.py HEAD~1                 # every case (hours)
python benchmarks/compare.py main --steps fit --shapes 64,100,16,128 \\
    --jit off --dtypes float32 --gates classic
```

Results go to `benchmarks/results/compare/compare.json` and `compare.md`,
the workers' logs (TensorFlow's messages, tracebacks) to `logs/` beside them.
Both versions run the working tree's harness (this file and `speed.py`);
only the package differs. TensorFlow only.
"""

import argparse
import contextlib
import gc
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import speed

REPO = speed.REPO
STEPS = ("fit", "predict", "call", "tflite")
SHAPES = "64,100,16,128;32,200,64,256;1,100,16,64"
DTYPES = ("float32", "mixed_bfloat16")
GATES = ("classic", "projected")
# Warm-up calls before the first timed run, and calls per timed run (the
# last one timed): an epoch is warm after one; a TFLite file is timed warm,
# after two calls of its own, as in an app (see `speed.time_interleaved`).
WARMUP = {"fit": 1, "predict": 1, "call": 3, "tflite": 3}
BURST = {"tflite": speed.TFLITE_BURST}

# ---------------------------------------------------------------------------
# Setup: what to compare.
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "old", nargs="?", default="HEAD", help="the old git commit (HEAD)"
    )
    parser.add_argument("--runs", type=int, default=15, help="runs per case (15)")
    parser.add_argument(
        "--steps", default=",".join(STEPS), help="some of " + ",".join(STEPS)
    )
    parser.add_argument("--shapes", default=SHAPES, help=f"B,T,F,U;... ({SHAPES})")
    parser.add_argument("--jit", default="off,on", help="off,on (both)")
    parser.add_argument(
        "--dtypes", default=",".join(DTYPES), help="float32,mixed_bfloat16"
    )
    parser.add_argument("--gates", default=",".join(GATES), help="classic,projected")
    parser.add_argument(
        "--batches", type=int, default=speed.EPOCH_BATCHES, help="batches an epoch"
    )
    parser.add_argument(
        "--noise", type=float, default=0.02, help="smallest noise band (0.02)"
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "compare"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.steps = choose(parser, "--steps", args.steps, STEPS)
    args.dtypes = choose(parser, "--dtypes", args.dtypes, DTYPES)
    args.gates = choose(parser, "--gates", args.gates, GATES)
    args.jit = [j == "on" for j in choose(parser, "--jit", args.jit, ("off", "on"))]
    try:
        args.shapes = speed.parse_shapes(args.shapes)
    except ValueError as error:
        parser.error(f"--shapes: {error}")
    if args.runs < 1:
        parser.error(f"--runs must be a positive int, got {args.runs}")
    if args.batches < 1:
        parser.error(f"--batches must be a positive int, got {args.batches}")
    return args


def choose(parser, flag, text, allowed):
    chosen = [c for c in text.split(",") if c]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        parser.error(f"{flag}: expected some of {','.join(allowed)}, got {text!r}")
    return chosen


def make_cases(args):
    """Every combination of the flags, as dicts a worker understands.

    `fit` leaves out batch-1 shapes (batch 1 is for inference); `tflite`
    exports at batch 1 with each shape's time, features and units, once
    per such triple, and has no jit_compile.
    """
    cases, seen = [], set()
    for step, shape, jit, dtype, gate in itertools.product(
        args.steps, args.shapes, args.jit, args.dtypes, args.gates
    ):
        if step == "fit" and shape[0] == 1:
            continue
        if step == "tflite":
            shape, jit = (1, *shape[1:]), False
        case = {
            "step": step,
            "gate": gate,
            "shape": list(shape),
            "jit": jit,
            "dtype": dtype,
            "batches": args.batches,
        }
        key = case_name(case)
        if key not in seen:
            seen.add(key)
            cases.append(case)
    return cases


def case_name(case):
    shape = ",".join(map(str, case["shape"]))
    jit = "" if case["step"] == "tflite" else f" jit={'on' if case['jit'] else 'off'}"
    return f"{case['step']} {case['gate']} ({shape}){jit} {case['dtype']}"


# ---------------------------------------------------------------------------
# The worker: one version of the package, warm, timing one case at a time.
# ---------------------------------------------------------------------------


def worker():
    """Answers JSON lines on stdin: `prepare` a case, then `time` it.

    Replies go to the original stdout; everything else written to stdout
    (by TensorFlow or Keras) is sent to stderr, the worker's log, so it
    cannot garble the replies.
    """
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import keras_lstm_gates

    reply(channel, {"package": str(Path(keras_lstm_gates.__file__).parent)})
    folder = Path(tempfile.mkdtemp(prefix="compare-worker-"))
    current = None
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                if request["do"] == "prepare":
                    current = None
                    release()
                    current = prepare(request["case"], folder)
                    answer = {"ok": True}
                else:
                    answer = {"seconds": time_once(*current)}
            except Exception as error:  # noqa: BLE001 - answered, not hidden
                traceback.print_exc()
                message = str(error).splitlines()[0][:300] if str(error) else ""
                answer = {"error": f"{type(error).__name__}: {message}"}
            reply(channel, answer)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def reply(channel, answer):
    channel.write(json.dumps(answer) + "\n")
    channel.flush()


def release():
    import keras

    keras.backend.clear_session()
    gc.collect()


def prepare(case, folder):
    """Builds the case's model and warms it up; returns `(call, burst)`."""
    import keras

    from keras_lstm_gates import FourGateLSTM

    step, shape, jit = case["step"], tuple(case["shape"]), case["jit"]
    keras.config.set_dtype_policy(case["dtype"])
    try:
        model = speed.build_model(
            lambda units: FourGateLSTM(units, use_gate=case["gate"]), shape, jit
        )
    finally:
        keras.config.set_dtype_policy("float32")
    if step in ("fit", "predict"):
        _, train, infer = speed.epoch_data(shape, case["batches"])
        call = speed.keras_epoch(
            model, train if step == "fit" else infer, step == "fit"
        )
    elif step == "call":
        x, _ = speed.random_data(shape)
        direct = speed.direct_call(model, jit)
        call = lambda: direct(x)  # noqa: E731
    else:
        call = tflite_call(model, shape, folder)
    for _ in range(WARMUP[step]):
        call()
    return call, BURST.get(step, 1)


def tflite_call(model, shape, folder):
    """Exports `model` at batch 1; returns a call of the file on one input."""
    from keras_lstm_gates import TFLiteModel
    from keras_lstm_gates import export_tflite

    path = folder / f"model-{len(list(folder.iterdir()))}.tflite"
    export_tflite(model, path, batch_size=1)
    lite = TFLiteModel(path)
    x, _ = speed.random_data(shape)
    return lambda: lite(x)


def time_once(call, burst):
    for _ in range(burst - 1):
        call()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# The parent: two workers, interleaved, in both orders.
# ---------------------------------------------------------------------------


class Worker:
    """A worker process running the package found under `root`."""

    def __init__(self, label, root, log):
        self.label = label
        self.log = log
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root), os.environ.get("PYTHONPATH")) if p
        )
        with open(log, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                cwd=log.parent,
            )
        package = Path(self.receive()["package"]).resolve()
        if package != (Path(root) / "keras_lstm_gates").resolve():
            self.close()
            raise RuntimeError(f"{label}: imported {package}, not the one under {root}")

    def ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.receive()

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            tail = "".join(self.log.read_text().splitlines(keepends=True)[-20:])
            raise RuntimeError(
                f"the {self.label} worker stopped; its log ends:\n{tail}"
            )
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_repeat(args, cases, trees, order, repeat, logs):
    """All cases once, the versions interleaved in `order`; seconds lists."""
    workers = {}
    results = {}
    try:
        for label in order:
            workers[label] = Worker(label, trees[label], logs / f"{repeat}-{label}.log")
        for number, case in enumerate(cases, 1):
            name = case_name(case)
            print(
                f"repeat {repeat} ({', '.join(order)}), case {number}/{len(cases)}: {name}",
                flush=True,
            )
            answers = {
                label: w.ask({"do": "prepare", "case": case})
                for label, w in workers.items()
            }
            errors = {label: a["error"] for label, a in answers.items() if "error" in a}
            if errors:
                for label, error in errors.items():
                    log = logs / f"{repeat}-{label}.log"
                    print(
                        f"  {label} failed, left out: {error} (see {log})", flush=True
                    )
                results[name] = {"failed": errors}
                continue
            times = {label: [] for label in order}
            for run in range(args.runs):
                for label in order:
                    answer = workers[label].ask({"do": "time"})
                    if "error" in answer:
                        raise RuntimeError(f"{label}, {name}: {answer['error']}")
                    times[label].append(answer["seconds"])
                print(
                    f"  run {run + 1}/{args.runs}: "
                    + ", ".join(f"{k} {1e3 * v[-1]:.2f} ms" for k, v in times.items()),
                    flush=True,
                )
            results[name] = times
            ratio = min(times["new"]) / min(times["old"])
            print(f"  new/old (minima) {ratio:.3f}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    return results


def verdicts(cases, repeats, noise_floor):
    """Per case: both repeats' minima and ratios, the noise band, a verdict.

    The noise band is the larger of `noise_floor` and how far each version's
    own minimum moved from one repeat to the other. A difference counts only
    where both repeats' new/old ratios lie beyond it on the same side.
    """
    rows = {}
    for case in cases:
        name = case_name(case)
        runs = [repeat.get(name, {}) for repeat in repeats]
        failed = {k: v for r in runs for k, v in r.get("failed", {}).items()}
        if failed:
            rows[name] = {"failed": failed}
            continue
        minima = [{v: min(r[v]) for v in ("old", "new")} for r in runs]
        ratios = [m["new"] / m["old"] for m in minima]
        drift = max(abs(minima[0][v] / minima[-1][v] - 1) for v in ("old", "new"))
        noise = max(noise_floor, drift)
        if all(r < 1 - noise for r in ratios):
            verdict = "new faster"
        elif all(r > 1 + noise for r in ratios):
            verdict = "new slower"
        else:
            verdict = "no difference beyond noise"
        rows[name] = {
            "case": case,
            "repeats": [
                {
                    v: {
                        "min_ms": 1e3 * min(r[v]),
                        "median_ms": 1e3 * statistics.median(r[v]),
                        "times_ms": [1e3 * t for t in r[v]],
                    }
                    for v in ("old", "new")
                }
                for r in runs
            ],
            "ratios": ratios,
            "noise": noise,
            "verdict": verdict,
        }
    return rows


# ---------------------------------------------------------------------------
# The old version's tree.
# ---------------------------------------------------------------------------


def git(*args):
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.contextmanager
def old_tree(commit):
    """The commit checked out in a temporary worktree; removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="compare-old-"))
    tree = folder / "tree"
    git("worktree", "add", "--detach", str(tree), commit)
    try:
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------
# Output: JSON and Markdown.
# ---------------------------------------------------------------------------


def markdown(results):
    lines = [
        f"# Old against new ({results['machine']})",
        "",
        f"Old: `{results['old']}`. New: the working tree at `{results['new']}`.",
        "",
        results["note"],
        "",
        "| case | old ms (1 / 2) | new ms (1 / 2) | new/old 1 | new/old 2 "
        "| noise | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["cases"].items():
        if "failed" in row:
            lines.append(f"| {name} | | | | | | failed: {row['failed']} |")
            continue
        old, new = (
            " / ".join(f"{r[v]['min_ms']:.2f}" for r in row["repeats"])
            for v in ("old", "new")
        )
        first, second = (f"{r:.3f}" for r in row["ratios"])
        lines.append(
            f"| {name} | {old} | {new} | {first} | {second} "
            f"| ±{row['noise']:.3f} | {row['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    if args.worker:
        worker()
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleans up too
    cases = make_cases(args)
    old = git("rev-parse", "--verify", f"{args.old}^{{commit}}")
    print(
        f"{len(cases)} cases x {args.runs} runs x 2 versions x 2 repeats; "
        f"old {old[:10]}, new the working tree"
        + (
            "; fewer than 15 runs: a smoke run, not a measurement"
            if args.runs < 15
            else ""
        ),
        flush=True,
    )
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with old_tree(old) as tree:
        trees = {"old": tree, "new": REPO}
        repeats = [
            run_repeat(args, cases, trees, order, repeat, logs)
            for repeat, order in enumerate((("old", "new"), ("new", "old")), 1)
        ]
    results = {
        "old": old,
        "new": speed.git_commit(),
        "machine": f"{speed.machine_name()}, {os.cpu_count()} cores",
        "note": (
            f"Each version in its own warm worker; {args.runs} runs per case, "
            "interleaved; repeat 1 runs old then new, repeat 2 (fresh workers) "
            "new then old; ratios of minima. Noise: the larger of "
            f"{args.noise:.0%} and how far each version's minimum moved between "
            "the repeats; a difference counts only where both repeats lie beyond "
            f"it on the same side. Load average at the start: {load}; at the "
            f"end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}."
        ),
        "runs": args.runs,
        "cases": verdicts(cases, repeats, args.noise),
    }
    (args.out / "compare.json").write_text(json.dumps(results, indent=1))
    (args.out / "compare.md").write_text(markdown(results))
    print("\n" + markdown(results))
    print(f"Wrote {args.out / 'compare.json'} and {args.out / 'compare.md'}")


if __name__ == "__main__":
    main()
