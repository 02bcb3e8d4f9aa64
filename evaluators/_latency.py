"""Measured inference latency, and a per-kernel latency model that knows it before training.

Two things live here, both on *this* machine and one runtime (:data:`RUNTIMES`):

- :func:`measure_model` times a whole Keras model: ``keras`` runs it as a ``tf.function`` in
  inference mode; ``tflite`` converts it with TensorFlow's own converter and runs it in the
  TFLite interpreter (LiteRT's ``ai_edge_litert`` when it is installed, else
  ``tf.lite.Interpreter``). Threads are pinned (``threads``, default 1); a few warm-up calls,
  then ``runs`` timed calls give the median and interquartile range (:class:`Timing`), and
  the whole series is repeated ``repeats`` times: the spread of the repeat medians says how
  stable the measurement was.
- The latency model, as nn-Meter does it. The network anatomy (``stem_stage``, ``point_stage``,
  ``classifier_head`` of ``poolnas.spaces``) is run over :class:`KernelLayers`, a
  :class:`~poolnas.spaces.LayerSink` whose tensors are shapes and which records *kernels*: a
  layer kind with its arguments and input shapes, fused the way a deployment runtime fuses
  them (Conv2D + BatchNorm + ReLU, Add + ReLU, any op + ReLU are one kernel). Each distinct
  kernel a space can produce is measured once (:func:`measure_table`) *inside a graph*: a model
  of :data:`COPIES` independent copies of it against a model of one, so that the call's own
  fixed cost, which at these sizes is most of a kernel model's time (a ``tf.function`` call is
  about 0.08 ms here, a small conv 0.01 ms), cancels out. The :class:`LatencyTable` keeps the
  medians, refuses a kernel whose repeat medians disagree by more than ``tolerance``
  (:class:`UnstableLatency`), and is saved in a cache file named for the machine, runtime,
  batch size and threads (:func:`default_table_path`). An architecture's *kernel sum* adds its
  kernels' in-graph times; a :class:`Calibration` per space, fitted on whole models of 20 of
  its architectures measured once (:func:`calibrate`, :func:`space_table`), turns it into
  milliseconds (``intercept + slope × sum``: the whole model's call overhead, and how much
  dispatch a longer graph hides). It is exact for the table: the same architecture always gets
  the same number, which is what the surrogate sampler needs.

What must stay true: a kernel is built with the very ``KerasLayers`` methods ``build_model``
uses, so what is measured is what the model runs; nothing here asserts on a time.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import math
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolnas.evaluators._closed_form import _point_choices, walk_parts
from poolnas.evaluators._flops import CostLayers, Shape
from poolnas.evaluators._quiet import native_stderr_silenced
from poolnas.spaces import (
    Architecture,
    DownsamplingPoint,
    PoolnasError,
    SearchSpace,
    classifier_head,
    point_stage,
    stem_stage,
)

#: The runtimes latency is measured on.
RUNTIMES = ("keras", "tflite")
#: Repeat medians of one kernel may differ by this share of the smallest before a table refuses
#: to store it.
DEFAULT_TOLERANCE = 0.25
_FORMAT = 2
_MEMO = 1 << 14


class UnstableLatency(PoolnasError):
    """Repeat measurements disagree by more than the tolerance: nothing is stored."""


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`.

    Raises:
        PoolnasError: Another name.
    """
    if runtime not in RUNTIMES:
        raise PoolnasError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    return runtime


def _check_batch(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PoolnasError(f"--batch-size must be a whole number of at least 1, got {batch_size!r}")
    return batch_size


# ---------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    """A latency measurement: the median and interquartile range of ``runs`` timed calls per
    repeat, and the spread of the repeat medians (``(max - min) / min``).

    ``median_ms`` is the median of the repeat medians.
    """

    median_ms: float
    iqr_ms: float
    runs: int
    repeat_medians_ms: tuple[float, ...] = ()

    @property
    def spread(self) -> float:
        """How far the repeat medians disagree: ``(max - min) / min`` (0 with one repeat)."""
        values = self.repeat_medians_ms
        if len(values) < 2 or min(values) <= 0:
            return 0.0
        return (max(values) - min(values)) / min(values)

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "iqr_ms": self.iqr_ms, "runs": self.runs,
                "repeat_medians_ms": list(self.repeat_medians_ms), "spread": self.spread}


def _series(call: Callable[[], Any], runs: int) -> list[float]:
    """``runs`` timed calls in ms, with Python's garbage collector held off (a collection in the
    middle of a 0.1 ms call is the largest single source of outliers at these sizes)."""
    times = []
    collecting = gc.isenabled()
    gc.disable()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        if collecting:
            gc.enable()
    return times


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def time_call(call: Callable[[], Any], *, warmup: int = 5, runs: int = 30,
              repeats: int = 3) -> Timing:
    """Time ``call``: ``warmup`` untimed calls, then ``repeats`` series of ``runs`` timed ones."""
    for _ in range(warmup):
        call()
    medians, iqrs = [], []
    for _ in range(repeats):
        times = _series(call, runs)
        medians.append(statistics.median(times))
        iqrs.append(_iqr(times))
    return Timing(statistics.median(medians), statistics.median(iqrs), runs, tuple(medians))


# ---------------------------------------------------------------------- runtimes
def pin_threads(threads: int) -> int:
    """Pin TensorFlow's intra-op threads to ``threads`` (inter-op to 1) if TensorFlow has not
    started yet; the threads TensorFlow actually uses (0: its default, all cores)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # Already running: the earlier setting stays.
    return tf.config.threading.get_intra_op_parallelism_threads()


def _interpreter_class() -> tuple[Any, str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "LiteRT (ai_edge_litert)"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, f"tf.lite.Interpreter (TensorFlow {tf.__version__})"


def runtime_description(runtime: str) -> str:
    """What runs the models for ``runtime``, with its version."""
    import tensorflow as tf

    if check_runtime(runtime) == "keras":
        import keras

        return f"Keras {keras.__version__} tf.function (TensorFlow {tf.__version__})"
    return _interpreter_class()[1]


def _concrete(model: Any, batch_size: int) -> Any:
    import tensorflow as tf

    specs = [tf.TensorSpec((batch_size, *(int(d) for d in t.shape[1:])), t.dtype)
             for t in model.inputs]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    return fn, fn.get_concrete_function(*specs), specs


def convert_tflite(model: Any, batch_size: int = 1) -> bytes:
    """``model`` converted by TensorFlow's TFLite converter at a fixed ``batch_size``.

    Raises:
        PoolnasError: The converter refuses the model.
    """
    import tensorflow as tf

    _, concrete, _ = _concrete(model, batch_size)
    try:
        # The converter's MLIR diagnostics (C++, on fd 2) would bury the one-line error.
        with native_stderr_silenced():
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
            return converter.convert()
    except Exception as error:  # noqa: BLE001 - any converter failure is the user's model
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PoolnasError(f"TFLite cannot convert model {model.name!r}: {first}") from None


def model_runner(model: Any, runtime: str, *, batch_size: int = 1,
                 threads: int = 1) -> Callable[[], Any]:
    """A zero-argument call that runs ``model`` once on a fixed random batch with ``runtime``.

    Raises:
        PoolnasError: Unknown runtime, batch size under 1, or a model TFLite cannot convert.
    """
    import numpy as np

    check_runtime(runtime)
    _check_batch(batch_size)
    rng = np.random.default_rng(0)
    if runtime == "keras":
        fn, _, specs = _concrete(model, batch_size)
        xs = [(4 * rng.random(tuple(s.shape))).astype(s.dtype.as_numpy_dtype) for s in specs]
        import tensorflow as tf

        tensors = [tf.constant(x) for x in xs]
        return lambda: fn(*tensors)
    flat = convert_tflite(model, batch_size)
    interpreter_class, _ = _interpreter_class()
    interpreter = interpreter_class(model_content=flat, num_threads=threads)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"],
                               (4 * rng.random(tuple(detail["shape"]))).astype(detail["dtype"]))
    return interpreter.invoke


def measure_model(model: Any, runtime: str = "keras", *, batch_size: int = 1, threads: int = 1,
                  warmup: int = 5, runs: int = 30, repeats: int = 3) -> Timing:
    """The measured inference latency of ``model`` (see :func:`time_call`).

    Raises:
        PoolnasError: Unknown runtime, batch size under 1, or a model TFLite cannot convert.
    """
    return time_call(model_runner(model, runtime, batch_size=batch_size, threads=threads),
                     warmup=warmup, runs=runs, repeats=repeats)


#: A whole-model measurement whose repeat medians disagree by more is measured again
#: (:func:`measure_stable`).
STABLE_SPREAD = 0.10


def measure_stable(model: Any, runtime: str = "keras", *, retries: int = 2,
                   **timing: Any) -> Timing:
    """:func:`measure_model`, measured again (up to ``retries`` times) while its repeat medians
    disagree by more than :data:`STABLE_SPREAD`; the most stable measurement is returned, and
    its ``spread`` says how stable that was."""
    runner = model_runner(model, runtime, batch_size=timing.pop("batch_size", 1),
                          threads=timing.pop("threads", 1))
    best = time_call(runner, **timing)
    for _ in range(retries):
        if best.spread <= STABLE_SPREAD:
            break
        again = time_call(runner, **timing)
        best = min(best, again, key=lambda t: t.spread)
    return best


# ---------------------------------------------------------------------- kernels
#: One op of a kernel: the LayerSink method and its arguments after the tensor.
Op = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Kernel:
    """One unit of work a runtime executes: ops fused together, and the shapes entering it."""

    ops: tuple[Op, ...]
    inputs: tuple[Shape, ...]

    @property
    def key(self) -> str:
        """``conv(16,3,1)+batch_norm+relu@8x8x1`` (inputs joined by ``|``)."""
        ops = "+".join(name + (f"({','.join(map(str, args))})" if args else "")
                       for name, args in self.ops)
        return f"{ops}@{'|'.join('x'.join(map(str, s)) for s in self.inputs)}"

    def model(self, name: str = "kernel", copies: int = 1) -> Any:
        """A Keras model of just this kernel, built with ``build_model``'s own layers; with
        ``copies`` > 1, that many independent copies (own inputs, weights and outputs) in one
        model, which is how :func:`measure_table` times a kernel inside a graph."""
        import keras

        from poolnas.spaces._builder import KerasLayers

        layers = KerasLayers()
        every, outputs = [], []
        for c in range(copies):
            inputs = [keras.Input(shape=s, name=f"c{c}in{i}") for i, s in enumerate(self.inputs)]
            x: Any = inputs if len(inputs) > 1 else inputs[0]
            for i, (method, args) in enumerate(self.ops):
                x = getattr(layers, method)(x, *args, name=f"c{c}k{i}_{method}")
            every += inputs
            outputs.append(x)
        if copies == 1:
            return keras.Model(every, outputs[0], name=name)
        return keras.Model(every, outputs, name=name)


#: The fixed cost of one call: a ReLU of a single value.
OVERHEAD_KERNEL = Kernel((("relu", ()),), ((1, 1, 1),))


@dataclass
class _Node:
    shape: Shape
    group: int


class KernelLayers:
    """The :class:`~poolnas.spaces.LayerSink` that lists kernels: tensors are shapes (via
    :class:`~poolnas.evaluators._flops.CostLayers`); consecutive calls a runtime fuses (BatchNorm
    after Conv2D, ReLU after anything) join the kernel that made their input.

    Attributes:
        kernels: The kernels, in call order.
    """

    def __init__(self) -> None:
        self._shapes = CostLayers()
        self._groups: list[tuple[list[Op], tuple[Shape, ...]]] = []

    @property
    def kernels(self) -> list[Kernel]:
        return [Kernel(tuple(ops), inputs) for ops, inputs in self._groups]

    def _op(self, method: str, xs: Sequence[_Node], args: tuple[Any, ...], name: str,
            *, many: bool = False) -> _Node:
        shapes = [x.shape for x in xs]
        out = getattr(self._shapes, method)(shapes if many else shapes[0], *args, name)
        last = len(self._groups) - 1
        x = xs[0]
        fuses = (not many and x.group == last and last >= 0
                 and (method == "relu"
                      or (method == "batch_norm" and self._groups[last][0][-1][0] == "conv")))
        if fuses:
            self._groups[last][0].append((method, args))
        else:
            self._groups.append(([(method, args)], tuple(shapes)))
        return _Node(out, len(self._groups) - 1)

    # The LayerSink vocabulary; ``augment`` is training-only and no kernel at inference.
    def augment(self, x: _Node, name: str) -> _Node:
        return x

    def rescale(self, x, scale: float, offset: float, name: str):
        return self._op("rescale", [x], (float(scale), float(offset)), name)

    def conv(self, x, filters: int, kernel: int, stride: int, name: str):
        return self._op("conv", [x], (filters, kernel, stride), name)

    def batch_norm(self, x, name: str):
        return self._op("batch_norm", [x], (), name)

    def relu(self, x, name: str):
        return self._op("relu", [x], (), name)

    def max_pool(self, x, window: int, stride: int, name: str):
        return self._op("max_pool", [x], (window, stride), name)

    def avg_pool(self, x, window: int, stride: int, name: str):
        return self._op("avg_pool", [x], (window, stride), name)

    def blur(self, x, stride: int, name: str):
        return self._op("blur", [x], (stride,), name)

    def space_to_depth(self, x, name: str):
        return self._op("space_to_depth", [x], (), name)

    def zero_channels(self, x, extra: int, name: str):
        return self._op("zero_channels", [x], (extra,), name)

    def add(self, xs, name: str):
        return self._op("add", list(xs), (), name, many=True)

    def concat(self, xs, name: str):
        return self._op("concat", list(xs), (), name, many=True)

    def global_avg_pool(self, x, name: str):
        return self._op("global_avg_pool", [x], (), name)

    def dense(self, x, units: int, activation: str, name: str):
        return self._op("dense", [x], (units, activation), name)


@functools.lru_cache(maxsize=_MEMO)
def _stem_kernels(stem: str, width: int, blocks: int, input_shape: Shape, input_scale: float,
                  input_offset: float) -> tuple[tuple[Kernel, ...], Shape]:
    layers = KernelLayers()
    out = stem_stage(layers, _Node(input_shape, -1),
                     Architecture((), stem=stem, width=width, blocks=blocks),
                     input_scale=input_scale, input_offset=input_offset)
    return tuple(layers.kernels), out.shape


@functools.lru_cache(maxsize=_MEMO)
def _point_kernels(point: DownsamplingPoint, shape: Shape) -> tuple[tuple[Kernel, ...], Shape]:
    layers = KernelLayers()
    out = point_stage(layers, _Node(shape, -1), point, shape[-1], 1)
    return tuple(layers.kernels), out.shape


@functools.lru_cache(maxsize=_MEMO)
def _head_kernels(shape: Shape, num_classes: int) -> tuple[Kernel, ...]:
    layers = KernelLayers()
    classifier_head(layers, _Node(shape, -1), num_classes)
    return tuple(layers.kernels)


def _parts(arch: Architecture, input_shape: Sequence[int], num_classes: int,
           input_scale: float, input_offset: float) -> list[tuple[Kernel, ...]]:
    return walk_parts(arch, input_shape, num_classes, stem=_stem_kernels, point=_point_kernels,
                      head=_head_kernels, input_scale=input_scale, input_offset=input_offset)


def architecture_kernels(arch: Architecture, input_shape: Sequence[int], num_classes: int, *,
                         input_scale: float = 1.0, input_offset: float = 0.0) -> list[Kernel]:
    """The kernels ``build_model(arch, …)`` runs at inference, in order (no model is built).

    Raises:
        PoolnasError: The input is too small for ``arch``, or fewer than 2 classes.
    """
    return [k for part in _parts(arch, input_shape, num_classes, input_scale, input_offset)
            for k in part]


def space_kernels(space: SearchSpace, input_shape: Sequence[int], num_classes: int, *,
                  input_scale: float = 1.0, input_offset: float = 0.0) -> list[Kernel]:
    """Every distinct kernel an architecture of ``space`` can run, sorted by key (each part
    of the space, given its input shape, is visited once)."""
    space.check_input_shape(tuple(input_shape))
    shape_in = tuple(int(d) for d in input_shape)
    found: dict[str, Kernel] = {}

    def note(kernels: Iterable[Kernel]) -> None:
        for k in kernels:
            found.setdefault(k.key, k)

    shapes: set[Shape] = set()
    for stem in space.stems:
        for width in space.widths[0]:
            for blocks in space.depths[0]:
                kernels, shape = _stem_kernels(stem, width, blocks, shape_in,
                                               float(input_scale), float(input_offset))
                note(kernels)
                shapes.add(shape)
    for index in range(space.points):
        choices = _point_choices(space, index)
        grown: set[Shape] = set()
        for shape in shapes:
            for _, point in choices:
                kernels, out = _point_kernels(point, shape)
                note(kernels)
                grown.add(out)
        shapes = grown
    for shape in shapes:
        note(_head_kernels(shape, num_classes))
    return [found[key] for key in sorted(found)]


# ---------------------------------------------------------------------- the table
def machine_name() -> str:
    """This machine as a file-name-safe word: host, processor model and core count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{platform.node()}-{cpu}-{os.cpu_count()}cpu"
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def default_table_path(runtime: str, *, batch_size: int = 1, threads: int = 1) -> Path:
    """The cache file of this machine's kernel table for ``runtime``:
    ``$POOLNAS_LATENCY_CACHE`` (default ``~/.cache/poolnas/latency``) /
    ``{machine}-{runtime}-b{batch}-t{threads}.json``."""
    root = os.environ.get("POOLNAS_LATENCY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "poolnas", "latency")
    return Path(root) / f"{machine_name()}-{check_runtime(runtime)}-b{batch_size}-t{threads}.json"


#: Independent copies of a kernel in the model that times it inside a graph (:func:`measure_table`).
COPIES = 8
#: Whole architectures of a space measured to calibrate its kernel sums (:func:`calibrate`).
CALIBRATION_ARCHITECTURES = 20


def kernel_set_key(kernels: Iterable[Kernel]) -> str:
    """A short name for a set of kernels (a space's, on one input): what a calibration is for."""
    keys = sorted({k.key for k in kernels})
    return hashlib.sha1("\n".join(keys).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Calibration:
    """``measured ≈ intercept_ms + slope × kernel sum``, fitted (:func:`calibrate`) on
    ``architectures`` whole models of one space measured on this machine.

    What it corrects is what the kernels cannot see alone: a whole model's own call overhead
    (its inputs and outputs, the runtime's bookkeeping per call) and how much of each kernel's
    dispatch cost a longer graph hides. ``median_abs_error`` is the fit's median relative error
    on the architectures it was fitted on.
    """

    intercept_ms: float
    slope: float
    architectures: int
    median_abs_error: float

    def as_dict(self) -> dict[str, Any]:
        return {"intercept_ms": self.intercept_ms, "slope": self.slope,
                "architectures": self.architectures, "median_abs_error": self.median_abs_error}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(float(data["intercept_ms"]), float(data["slope"]), int(data["architectures"]),
                   float(data["median_abs_error"]))


@dataclass
class LatencyTable:
    """Measured kernel latencies on one machine and runtime.

    A kernel has two numbers: ``alone`` (one call of a model of just that kernel) and
    ``kernels`` (its time inside a graph: what :data:`COPIES` independent copies in one model
    take beyond one copy, per copy, so the call's fixed cost cancels out). An architecture's
    latency is predicted from the *kernel sum*, each kernel's in-graph time above that of a
    trivial kernel (:data:`OVERHEAD_KERNEL`, whose in-graph time is what any copy costs to feed
    and fetch): with a :class:`Calibration` for its space, ``intercept + slope × sum``; without,
    one call's fixed cost (the trivial kernel alone) plus the sum.

    Args:
        runtime: ``keras`` or ``tflite``.
        batch_size: The batch every kernel ran with.
        threads: The threads it ran on.
        tolerance: The largest accepted spread of a kernel's repeat medians
            (``(max - min) / min``); :meth:`record` refuses more.
        machine: Where it was measured (default: this machine, :func:`machine_name`).
        runtime_version: What ran it (:func:`runtime_description`).
        kernels: ``{kernel key: in-graph ms}``.
        spreads: ``{kernel key: spread of its repeat medians}``.
        alone: ``{kernel key: ms of one call of the kernel alone}``.
        calibrations: ``{kernel_set_key of a space's kernels: its Calibration}``.
        calibration_key: Which of them :meth:`predict` uses (:attr:`calibration`; set by
            :meth:`subset` for a space).
        method: ``in_graph``; ``alone`` for a table of poolnas' first format (kernels timed
            alone only, read so that studies made with it still resume).
    """

    runtime: str
    batch_size: int = 1
    threads: int = 1
    tolerance: float = DEFAULT_TOLERANCE
    machine: str = field(default_factory=machine_name)
    runtime_version: str = ""
    kernels: dict[str, float] = field(default_factory=dict)
    spreads: dict[str, float] = field(default_factory=dict)
    alone: dict[str, float] = field(default_factory=dict)
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    calibration_key: str | None = None
    method: str = "in_graph"

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        _check_batch(self.batch_size)
        if not (isinstance(self.tolerance, (int, float)) and self.tolerance >= 0):
            raise PoolnasError(f"tolerance must be 0 or more, got {self.tolerance!r}")

    @property
    def calibration(self) -> Calibration | None:
        """The calibration :meth:`predict` uses, if the table holds one for its space."""
        return self.calibrations.get(self.calibration_key) if self.calibration_key else None

    def _check(self, key: str, what: str, medians: Sequence[float]) -> float:
        timing = Timing(statistics.median(medians), 0.0, 0, tuple(medians))
        if timing.spread > self.tolerance or not all(
                math.isfinite(v) and v > 0 for v in medians):
            raise UnstableLatency(
                f"kernel {key}{what}: repeat medians {', '.join(f'{v:.4f}' for v in medians)}"
                f" ms disagree by {timing.spread:.0%} (tolerance {self.tolerance:.0%}); measure "
                "again on a quieter machine, with more runs, or a larger tolerance "
                "(--latency-tolerance)")
        return timing.spread

    def record(self, key: str, alone_ms: Sequence[float],
               copies_ms: Sequence[float] | None = None, copies: int = COPIES) -> float:
        """Store a kernel from its repeat medians alone and (optionally) as ``copies`` copies in
        one model, if each series agrees within the tolerance.

        Returns:
            The stored in-graph ms: the median over repeats of ``(copies_ms - alone_ms) /
            (copies - 1)`` (at least 0), or the median alone without copies.

        Raises:
            UnstableLatency: A series disagrees by more than ``tolerance`` (nothing stored).
        """
        spread = self._check(key, "", alone_ms)
        alone = statistics.median(alone_ms)
        in_graph = alone
        if copies_ms is not None:
            spread = max(spread, self._check(key, f" x{copies}", copies_ms))
            in_graph = max(statistics.median(
                (c - a) / (copies - 1) for a, c in zip(alone_ms, copies_ms)), 0.0)
        self.alone[key] = alone
        self.kernels[key] = in_graph
        self.spreads[key] = spread
        return in_graph

    @property
    def overhead_ms(self) -> float:
        """The fixed cost of one call (:data:`OVERHEAD_KERNEL` alone)."""
        try:
            return self.alone[OVERHEAD_KERNEL.key]
        except KeyError:
            raise PoolnasError("the latency table has no overhead kernel; measure it with "
                               "measure_table") from None

    def missing(self, kernels: Iterable[Kernel]) -> list[Kernel]:
        """The kernels of ``kernels`` (and the overhead kernel) the table lacks."""
        wanted = {k.key: k for k in [OVERHEAD_KERNEL, *kernels]}
        return [k for key, k in wanted.items() if key not in self.kernels]

    def kernel_sum(self, kernels: Iterable[Kernel]) -> float:
        """Each kernel's in-graph ms above the trivial kernel's, summed.

        Raises:
            PoolnasError: A kernel is not in the table.
        """
        floor = self.kernels.get(OVERHEAD_KERNEL.key)
        if floor is None:
            self.overhead_ms  # noqa: B018 - raises the missing-overhead error
        total = 0.0
        for k in kernels:
            ms = self.kernels.get(k.key)
            if ms is None:
                raise PoolnasError(f"kernel {k.key} is not in the {self.runtime} latency table; "
                                   "measure the space's kernels first")
            total += max(ms - floor, 0.0)
        return total

    def from_sum(self, kernel_sum: float) -> float:
        """The predicted latency (ms) of a model whose :meth:`kernel_sum` is ``kernel_sum``:
        calibrated if the table holds its space's :attr:`calibration`, never below one call's
        fixed cost."""
        overhead = self.overhead_ms
        c = self.calibration
        if c is None:
            return overhead + kernel_sum
        return max(c.intercept_ms + c.slope * kernel_sum, overhead)

    def predict(self, kernels: Iterable[Kernel]) -> float:
        """Predicted latency in ms of a model that runs ``kernels`` (see the class).

        Raises:
            PoolnasError: A kernel is not in the table.
        """
        return self.from_sum(self.kernel_sum(kernels))

    @property
    def max_spread(self) -> float:
        return max(self.spreads.values(), default=0.0)

    def subset(self, kernels: Iterable[Kernel]) -> LatencyTable:
        """A copy holding only ``kernels`` and the overhead kernel, and the calibration fitted
        for exactly that set of kernels (a space's: :func:`calibrate`), if there is one."""
        kernels = list(kernels)
        keys = {OVERHEAD_KERNEL.key, *(k.key for k in kernels)}
        name = kernel_set_key(kernels)
        chosen = self.calibrations.get(name)

        def keep(values: dict[str, float]) -> dict[str, float]:
            return {k: v for k, v in values.items() if k in keys}

        return LatencyTable(self.runtime, self.batch_size, self.threads, self.tolerance,
                            self.machine, self.runtime_version, keep(self.kernels),
                            keep(self.spreads), keep(self.alone),
                            {} if chosen is None else {name: chosen},
                            None if chosen is None else name, self.method)

    def as_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "machine": self.machine, "runtime": self.runtime,
                "runtime_version": self.runtime_version, "batch_size": self.batch_size,
                "threads": self.threads, "tolerance": self.tolerance, "method": self.method,
                "copies": COPIES,
                "kernels": {k: {"ms": self.kernels[k], "alone_ms": self.alone.get(k),
                                "spread": self.spreads.get(k, 0.0)}
                            for k in sorted(self.kernels)},
                "calibrations": {k: c.as_dict() for k, c in sorted(self.calibrations.items())},
                "calibration": self.calibration_key if self.calibration is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """The table :meth:`as_dict` wrote (or poolnas' first format, read as ``alone``).

        Raises:
            PoolnasError: Not a poolnas latency table.
        """
        try:
            version = data.get("format")
            if version not in (1, _FORMAT):
                raise ValueError(f"format {version!r}")
            kernels = {k: float(v["ms"]) for k, v in data["kernels"].items()}
            alone = {k: float(v["ms"] if v.get("alone_ms") is None else v["alone_ms"])
                     for k, v in data["kernels"].items()}
            calibrations = {k: Calibration.from_dict(v)
                            for k, v in (data.get("calibrations") or {}).items()}
            return cls(data["runtime"], int(data["batch_size"]), int(data["threads"]),
                       float(data["tolerance"]), str(data["machine"]),
                       str(data.get("runtime_version", "")), kernels,
                       {k: float(v["spread"]) for k, v in data["kernels"].items()}, alone,
                       calibrations,
                       data.get("calibration") if data.get("calibration") in calibrations else None,
                       "alone" if version == 1 else str(data.get("method", "in_graph")))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise PoolnasError(f"not a poolnas latency table ({error})") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON (atomically: a reader never sees half a table)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Read a table :meth:`save` wrote.

        Raises:
            PoolnasError: No such file, or not a latency table.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise PoolnasError(f"cannot read latency table {path}: {error}") from None
        return cls.from_dict(data)


def measure_table(kernels: Iterable[Kernel], runtime: str = "keras", *, batch_size: int = 1,
                  threads: int = 1, warmup: int = 10, runs: int = 100, repeats: int = 3,
                  tolerance: float = DEFAULT_TOLERANCE, retries: int = 2,
                  table: LatencyTable | None = None,
                  progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    """Measure every kernel of ``kernels`` missing from ``table`` (and the overhead kernel).

    Each kernel is built twice: alone, and as :data:`COPIES` independent copies in one model
    (own inputs, weights and outputs, so no graph optimisation merges them); the difference is
    its time inside a graph, free of the call's fixed cost. All models are built first; then
    ``repeats`` rounds each time every model (``warmup`` untimed calls, then ``runs`` timed
    ones, the median kept), so a drift of the machine shows as a disagreement between rounds. A
    kernel whose round medians disagree by more than ``tolerance`` is measured again, up to
    ``retries`` times.

    Returns:
        ``table`` (or a new one) with the kernels added.

    Raises:
        UnstableLatency: A kernel still disagrees after the retries (nothing of this call is
            stored in ``table``).
        PoolnasError: Unknown runtime, batch size under 1, a kernel TFLite cannot convert, or a
            table of poolnas' first format (kernels timed alone only: measure a new one).
    """
    check_runtime(runtime)
    _check_batch(batch_size)
    if table is None:
        table = LatencyTable(runtime, batch_size, threads, tolerance,
                             runtime_version=runtime_description(runtime))
    elif (table.runtime, table.batch_size, table.threads) != (runtime, batch_size, threads):
        raise PoolnasError("the latency table was measured with another runtime, batch size or "
                           "thread count")
    todo = table.missing(kernels)
    if not todo:
        return table
    if table.method != "in_graph":
        raise PoolnasError("the latency table is of poolnas' first format (kernels timed alone); "
                           "measure a new one")
    if runtime == "keras":
        pin_threads(threads)
    calls = {}
    for i, kernel in enumerate(todo):
        calls[kernel.key] = tuple(
            model_runner(kernel.model(f"kernel{i}x{n}", copies=n), runtime,
                         batch_size=batch_size, threads=threads) for n in (1, COPIES))
        if progress is not None:
            progress(i + 1, 2 * len(todo))
    staged = LatencyTable(runtime, batch_size, threads, tolerance, table.machine,
                          table.runtime_version)
    pending = list(calls)
    for attempt in range(retries + 1):
        medians: dict[str, tuple[list[float], list[float]]] = {
            key: ([], []) for key in pending}
        for _ in range(repeats):
            for key in pending:
                for call, series in zip(calls[key], medians[key]):
                    for _ in range(warmup):
                        call()
                    series.append(statistics.median(_series(call, runs)))
        unstable = []
        for key in pending:
            try:
                staged.record(key, *medians[key], copies=COPIES)
            except UnstableLatency:
                if attempt == retries:
                    raise
                unstable.append(key)
        if progress is not None:
            progress(2 * len(todo) - len(unstable), 2 * len(todo))
        pending = unstable
        if not pending:
            break
    table.kernels.update(staged.kernels)
    table.spreads.update(staged.spreads)
    table.alone.update(staged.alone)
    return table


def _sample(space: SearchSpace, count: int, seed: int) -> list[Architecture]:
    """``count`` distinct architectures of ``space`` drawn at random (all if it has fewer)."""
    if space.size <= count:
        return list(space)
    rng = random.Random(seed)
    parameters = space.parameters()
    found: dict[str, Architecture] = {}
    for _ in range(50 * count):
        arch = space.architecture({n: rng.choice(v) for n, v in parameters.items()})
        found.setdefault(arch.key, arch)
        if len(found) == count:
            break
    return list(found.values())


def calibrate(table: LatencyTable, space: SearchSpace, input_shape: Sequence[int],
              num_classes: int, *, input_scale: float = 1.0, input_offset: float = 0.0,
              architectures: int = CALIBRATION_ARCHITECTURES, seed: int = 0, warmup: int = 10,
              runs: int = 100, repeats: int = 3, retries: int = 2) -> Calibration:
    """Fit ``table``'s calibration for ``space`` on this input: ``architectures`` random
    architectures of the space are built and measured whole (:func:`measure_stable`), and
    ``measured ≈ intercept + slope × kernel sum`` is fitted by Theil-Sen in relative terms (the
    median of pairwise slopes of measured / uncalibrated against 1 / uncalibrated; with fewer
    than 3 distinct sums, the slope is 1 and the intercept the median difference). Stored in
    ``table.calibrations``.

    Raises:
        UnstableLatency: A whole model's repeat medians still disagree by more than the table's
            tolerance after ``retries`` more measurements (nothing stored).
        PoolnasError: A kernel of the space is not in the table.
    """
    import numpy as np

    from poolnas.spaces import build_model

    scaling = {"input_scale": input_scale, "input_offset": input_offset}
    kernels = space_kernels(space, input_shape, num_classes, **scaling)
    if table.missing(kernels):
        raise PoolnasError("measure the space's kernels before calibrating the table")
    if table.runtime == "keras":
        pin_threads(table.threads)
    sums, measured = [], []
    for arch in _sample(space, architectures, seed):
        model = build_model(arch, tuple(input_shape), num_classes, **scaling)
        timing = measure_stable(model, table.runtime, batch_size=table.batch_size,
                                threads=table.threads, warmup=warmup, runs=runs,
                                repeats=repeats, retries=retries)
        if timing.spread > table.tolerance:
            raise UnstableLatency(
                f"architecture {arch.key}: repeat medians "
                f"{', '.join(f'{v:.4f}' for v in timing.repeat_medians_ms)} ms disagree by "
                f"{timing.spread:.0%} (tolerance {table.tolerance:.0%}); measure again on a "
                "quieter machine or with a larger tolerance (--latency-tolerance)")
        sums.append(table.kernel_sum(architecture_kernels(arch, input_shape, num_classes,
                                                          **scaling)))
        measured.append(timing.median_ms)
    x, y = np.asarray(sums), np.asarray(measured)
    slope = 0.0
    if len(set(np.round(x, 9))) >= 3:
        # Fitted in relative terms, as it is judged: with s = overhead + x (the uncalibrated
        # prediction), y / s = slope + a / s, by Theil-Sen (the median of pairwise slopes: one
        # architecture measured during a burst of other work does not move it, and a space
        # whose latencies span a factor of 8 is not fitted to its slowest members only).
        from scipy.stats import theilslopes

        s = table.overhead_ms + x
        shift, slope = (float(v) for v in theilslopes(y / s, 1.0 / s)[:2])
        intercept = shift + slope * table.overhead_ms
    if slope <= 0:
        slope, intercept = 1.0, float(np.median(y - x))
    errors = np.abs((intercept + slope * x) / y - 1)
    calibration = Calibration(float(intercept), float(slope), len(y), float(np.median(errors)))
    table.calibrations[kernel_set_key(kernels)] = calibration
    return calibration


def _read_cache(path: Path) -> LatencyTable | None:
    """The cache file's table, or None: no file, or one of poolnas' first format (measured anew)."""
    table = LatencyTable.load(path) if path.exists() else None
    return table if table is not None and table.method == "in_graph" else None


def cached_table(kernels: Iterable[Kernel], runtime: str = "keras", *, batch_size: int = 1,
                 threads: int = 1, path: str | os.PathLike | None = None,
                 **measure: Any) -> LatencyTable:
    """The machine's cached table for ``runtime``, with any kernel of ``kernels`` it lacks
    measured and the file updated (:func:`default_table_path` unless ``path``). A cache file of
    poolnas' first format is measured anew.

    ``measure`` goes to :func:`measure_table` (``warmup``, ``runs``, ``repeats``,
    ``tolerance``, ``retries``, ``progress``).
    """
    kernels = list(kernels)
    path = Path(path) if path is not None else default_table_path(
        runtime, batch_size=batch_size, threads=threads)
    table = _read_cache(path)
    if table is not None and table.missing(kernels):
        table.tolerance = float(measure.get("tolerance", table.tolerance))
    before = None if table is None else len(table.kernels)
    table = measure_table(kernels, runtime, batch_size=batch_size, threads=threads,
                          table=table, **measure)
    if len(table.kernels) != before:
        table.save(path)
    return table


def space_table(space: SearchSpace, input_shape: Sequence[int], num_classes: int,
                runtime: str = "keras", *, input_scale: float = 1.0, input_offset: float = 0.0,
                batch_size: int = 1, threads: int = 1, path: str | os.PathLike | None = None,
                architectures: int = CALIBRATION_ARCHITECTURES, extra: Iterable[Kernel] = (),
                announce: Callable[[str], None] | None = None, **measure: Any) -> LatencyTable:
    """The machine's table for ``space`` on this input, calibrated: the cached kernels, any
    missing ones (and ``extra``) measured, the space's :class:`Calibration` fitted if the cache
    has none, and the file updated. Returns the space's :meth:`~LatencyTable.subset`, which
    carries its calibration.

    ``measure`` goes to :func:`measure_table` (``warmup``, ``runs``, ``repeats``,
    ``tolerance``, ``retries``, ``progress``); ``announce`` is told, before anything is
    measured, what is about to be (it takes a minute or two, once per machine and space).
    """
    scaling = {"input_scale": input_scale, "input_offset": input_offset}
    kernels = space_kernels(space, input_shape, num_classes, **scaling)
    path = Path(path) if path is not None else default_table_path(
        runtime, batch_size=batch_size, threads=threads)
    if announce is not None:
        cached = _read_cache(path)
        missing = len((cached or LatencyTable(runtime)).missing([*kernels, *extra]))
        calibrated = cached is not None and kernel_set_key(kernels) in cached.calibrations
        if missing or not calibrated:
            work = [f"{missing} kernels"] if missing else []
            work += [] if calibrated else [f"calibrating on {architectures} architectures"]
            announce(f"measuring {' and '.join(work)} of the space ({runtime}, {threads} "
                     f"thread(s); once per machine, into {path})")
    table = cached_table([*kernels, *extra], runtime, batch_size=batch_size, threads=threads,
                         path=path, **measure)
    if kernel_set_key(kernels) not in table.calibrations:
        timing = {k: measure[k] for k in ("warmup", "runs", "repeats", "retries") if k in measure}
        calibrate(table, space, input_shape, num_classes, architectures=architectures,
                  **scaling, **timing)
        table.save(path)
    return table.subset(kernels)


class LatencyModel:
    """Predicted latency (ms) of architectures on one input, from a :class:`LatencyTable`
    (calibrated when the table carries its space's calibration: :func:`space_table`).

    Each part of an architecture (stem stage, point, head) has its kernel sum computed once per
    (choices, input shape) and remembered, so predicting a whole space costs little more than
    its FLOPs.

    Args:
        table: The kernel table.
        input_shape: ``(height, width, channels)`` of one example.
        num_classes: Classes of the classifier.
        input_scale: The model's input rescaling factor.
        input_offset: The model's input rescaling offset.
    """

    def __init__(self, table: LatencyTable, input_shape: Sequence[int], num_classes: int, *,
                 input_scale: float = 1.0, input_offset: float = 0.0) -> None:
        self.table = table
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.input_scale = float(input_scale)
        self.input_offset = float(input_offset)
        self._parts: dict[tuple[Kernel, ...], float] = {}
        table.overhead_ms  # noqa: B018 - a table without the overhead kernel fails here

    def _part(self, kernels: tuple[Kernel, ...]) -> float:
        ms = self._parts.get(kernels)
        if ms is None:
            ms = self._parts[kernels] = self.table.kernel_sum(kernels)
        return ms

    def __call__(self, arch: Architecture) -> float:
        """Predicted latency of ``arch`` in milliseconds.

        Raises:
            PoolnasError: A kernel of ``arch`` is not in the table.
        """
        parts = _parts(arch, self.input_shape, self.num_classes, self.input_scale,
                       self.input_offset)
        return self.table.from_sum(sum(self._part(p) for p in parts))
