"""Which loop runs: one pure function from static facts to a named route.

`choose` reads nothing but its `Facts`; `run` gathers them once per trace
(from the tensors, the CPU, and what an export asks through `exporting`) and
logs the `Route` it got to the `keras_lstm_gates.loops` logger. Nothing here
imports TensorFlow, so the table of routes can be tested without running a
loop. Why each rule holds is measured in `docs/performance.md`.
"""

import contextlib
import dataclasses
import enum
import threading

# The logger that names the route of every traced call (at DEBUG level).
LOGGER_NAME = "keras_lstm_gates.loops"

# Above this many units a projected layer trains through the batch-major
# loop under `jit_compile`, and any layer outside it (its loops compiled
# with XLA each): XLA's large matmuls then win over the executor's loop.
# Up to it, the classic transposed step's element-wise ops run as one XLA
# kernel; above it, under XLA, each gate takes its own `sigmoid`.
WIDE_UNITS = 128

_16_BIT = ("bfloat16", "float16")

# CPU flags (`/proc/cpuinfo`) of units that multiply 16-bit matrices natively.
FAST_16_BIT_MATMUL_FLAGS = {
    "bfloat16": ("amx_bf16", "avx512_bf16"),
    "float16": ("amx_fp16", "avx512_fp16"),
}


class Layout(enum.Enum):
    """How a loop holds its tensors."""

    # `(units, batch)`, gates along axis 0: TensorFlow's executor slices the
    # gates without copies; the classic step's element-wise ops can be one
    # XLA kernel.
    TRANSPOSED = "transposed"
    # `(batch, units)`, as Keras's LSTM: one matmul a step on
    # `[STM_{t-1}, E_t]`, the weights' gradients as large matmuls after the
    # loop; what XLA and the TFLite converter handle best.
    BATCH_MAJOR = "batch-major"


class Xla(enum.Enum):
    """Who, if anyone, compiles the loop with XLA."""

    NONE = "none"  # TensorFlow's executor runs it
    OWN = "own"  # the loop is compiled alone, its caller is not
    CALLER = "caller"  # inside a function compiled with `jit_compile=True`


@dataclasses.dataclass(frozen=True)
class Facts:
    """What is known, when a layer is traced, that decides its loop."""

    training: bool  # gradients will be taken through the hand-written pass
    in_xla: bool  # traced inside `jit_compile=True`
    eager: bool  # run eagerly, not traced
    static_shapes: bool  # batch and time known when traced
    batch: int | None
    units: int
    projected: bool  # `use_gate="projected"`
    compute_dtype: str  # the layer's compute dtype: "float32", "bfloat16", ...
    cpu_flags: frozenset = frozenset()
    gpu: bool = False
    export_batch_major: bool = False  # an export asks for the batch-major loop
    own_xla_allowed: bool = True  # an export may forbid compiling alone
    forced_layout: Layout | None = None  # `force(layout=...)`
    wide_units: int = WIDE_UNITS  # moved by `force(wide_units=...)`
    forced_jit_step: bool | None = None  # `force(jit_step=...)`


@dataclasses.dataclass(frozen=True)
class Route:
    """The loop a layer runs, and why."""

    layout: Layout
    xla: Xla
    training: bool
    matmul_dtype: str  # the dtype of the loop's matmuls
    reason: str
    # The events' projection as one matmul before the loop (TFLite export).
    hoist: bool = False
    # The classic transposed step's element-wise ops as one XLA kernel, where
    # TensorFlow's executor runs the step (training, or the training loop
    # that takes the gradient of a compiled inference call).
    jit_step: bool = False
    # One `sigmoid` per gate rather than one over `[i; f; V]`: lets XLA fuse
    # each gate with its consumers when wide.
    sigmoid_per_gate: bool = False

    @property
    def name(self):
        """For example "batch-major training, compiled alone with XLA"."""
        what = "training" if self.training else "inference"
        compiled = {
            Xla.NONE: "in TensorFlow's executor",
            Xla.OWN: "compiled alone with XLA",
            Xla.CALLER: "compiled with its caller by XLA",
        }[self.xla]
        return f"{self.layout.value} {what}, {compiled}"


def matmul_dtype(facts, xla):
    """16-bit matmuls where a GPU or the CPU's matrix units make them fast.

    Float32 and float64 stay as they are; so does everything on a GPU.
    XLA's CPU backend emulates 16-bit matmuls: float32 there.
    """
    dtype = facts.compute_dtype
    if dtype in ("float32", "float64") or facts.gpu:
        return dtype
    if xla:
        return "float32"
    fast = facts.cpu_flags & set(FAST_16_BIT_MATMUL_FLAGS.get(dtype, ()))
    return dtype if fast else "float32"


def choose(facts: Facts) -> Route:
    """The route for `facts`; `docs/architecture.md` tells it in words."""
    wide = facts.units > facts.wide_units
    compile_alone = (
        facts.own_xla_allowed
        and not facts.eager
        and facts.static_shapes
        and not facts.in_xla
    )
    state_dtype = "float32" if facts.compute_dtype in _16_BIT else facts.compute_dtype
    # oneDNN's fast 16-bit matmuls are lost to XLA's CPU backend.
    sixteen_bit = matmul_dtype(facts, xla=False) != state_dtype

    if facts.training:
        if facts.in_xla and (wide or not facts.projected):
            layout, reason = (
                Layout.BATCH_MAJOR,
                "training under jit_compile: one matmul a step, and the "
                "weights' gradients as large matmuls after the loop",
            )
        elif wide and compile_alone and not sixteen_bit:
            layout, reason = (
                Layout.BATCH_MAJOR,
                f"training a wide layer (over {facts.wide_units} units) with "
                "static "
                "shapes: its loops compiled with XLA each",
            )
        else:
            layout, reason = (
                Layout.TRANSPOSED,
                "training: the transposed loop with the hand-written backward pass",
            )
    elif facts.export_batch_major:
        layout, reason = (
            Layout.BATCH_MAJOR,
            "inference for a TFLite export: batch-major, the events' "
            "projection before the loop",
        )
    elif (compile_alone or facts.in_xla) and facts.batch != 1:
        layout, reason = (
            Layout.TRANSPOSED,
            "inference of a batch with static shapes, compiled with XLA: the "
            "transposed loop",
        )
    elif compile_alone or facts.in_xla:
        layout, reason = (
            Layout.BATCH_MAJOR,
            "inference of a single sequence with static shapes, compiled "
            "with XLA: batch-major",
        )
    else:
        layout, reason = (
            Layout.BATCH_MAJOR,
            "inference eagerly or with a dimension unknown when traced: not "
            "compiled, XLA would compile again for every new shape",
        )
    if facts.forced_layout is not None and facts.forced_layout is not layout:
        layout = facts.forced_layout
        reason = f"forced by loops.force (otherwise {reason})"

    if facts.in_xla:
        xla = Xla.CALLER
    elif facts.training:
        batch_major = layout is Layout.BATCH_MAJOR
        own = batch_major and compile_alone and not sixteen_bit
        xla = Xla.OWN if own else Xla.NONE
    else:
        xla = Xla.OWN if compile_alone else Xla.NONE
    jit_step = (
        layout is Layout.TRANSPOSED
        and not facts.projected
        and not facts.in_xla
        and facts.units <= WIDE_UNITS
        and facts.own_xla_allowed
    )
    if facts.forced_jit_step is not None:
        jit_step = facts.forced_jit_step
    hoist = facts.export_batch_major and not facts.training
    hoist = hoist and layout is Layout.BATCH_MAJOR
    big = facts.units > WIDE_UNITS
    return Route(
        layout,
        xla,
        facts.training,
        matmul_dtype(facts, xla is not Xla.NONE),
        reason,
        hoist=hoist,
        jit_step=jit_step,
        # Not for TFLite, which runs no XLA: one op is fewer than three.
        sigmoid_per_gate=xla is not Xla.NONE and not hoist and big,
    )


# What `exporting` and `force` ask of the layers traced in this thread, as
# `Facts` fields: read by `run` alone, through `requested_facts`.
_requests = threading.local()


@contextlib.contextmanager
def _request(**facts):
    previous = requested_facts()
    _requests.facts = {**previous, **facts}
    try:
        yield
    finally:
        _requests.facts = previous


def exporting(batch_major=False, own_xla=True):
    """What an export needs of the layers traced inside, in this thread.

    `batch_major`: inference takes the batch-major loop with the events'
    projection before it (TFLite). `own_xla=False`: nothing is compiled
    with XLA alone (a SavedModel for a server without XLA).
    """
    settings = {}
    if batch_major:
        settings["export_batch_major"] = True
    if not own_xla:
        settings["own_xla_allowed"] = False
    return _request(**settings)


def requested_facts():
    """The facts `exporting` and `force` set for this thread."""
    return dict(getattr(_requests, "facts", {}))


def force(layout=None, wide_units=None, jit_step=None, cpu_flags=None, gpu=None):
    """Overrides the dispatch for layers traced inside, in this thread.

    For tests and experiments: `layout` (a `Layout` or its value) runs that
    loop whatever the rules say (compiled alone with XLA where the shapes
    allow it when it is batch-major training); `wide_units` moves the width
    above which layers train batch-major (`WIDE_UNITS`); `jit_step` turns the
    classic transposed step's XLA kernel on or off; `cpu_flags` and `gpu`
    stand for the machine's (they decide the matmuls' dtype under mixed
    precision).
    """
    settings = {}
    if layout is not None:
        layouts = [item.value for item in Layout]
        if not isinstance(layout, Layout) and layout not in layouts:
            raise ValueError(f"layout must be one of {layouts}, got {layout!r}")
        settings["forced_layout"] = Layout(layout)
    if wide_units is not None:
        if not isinstance(wide_units, int) or isinstance(wide_units, bool):
            raise TypeError(f"wide_units must be an int, got {wide_units!r}")
        settings["wide_units"] = wide_units
    if jit_step is not None:
        settings["forced_jit_step"] = bool(jit_step)
    if cpu_flags is not None:
        settings["cpu_flags"] = frozenset(cpu_flags)
    if gpu is not None:
        settings["gpu"] = bool(gpu)
    return _request(**settings)
