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
  kernel a space can produce is built as a one-kernel Keras model and measured once
  (:func:`measure_table`); the :class:`LatencyTable` keeps the medians, refuses a kernel whose
  repeat medians disagree by more than ``tolerance`` (:class:`UnstableLatency`), and is saved
  in a cache file named for the machine, runtime, batch size and threads
  (:func:`default_table_path`). An architecture's predicted latency is the fixed cost of one
  call (the ``overhead`` kernel: a ReLU of one value) plus, per kernel, its time above that
  fixed cost (:meth:`LatencyTable.predict`). It is exact for the table: the same architecture
  always gets the same number, which is what the surrogate sampler needs.

What must stay true: a kernel is built with the very ``KerasLayers`` methods ``build_model``
uses, so what is measured is what the model runs; nothing here asserts on a time.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolnas.evaluators._closed_form import _point_choices, walk_parts
from poolnas.evaluators._flops import CostLayers, Shape
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
_FORMAT = 1
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
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
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

    def model(self, name: str = "kernel") -> Any:
        """A Keras model of just this kernel, built with ``build_model``'s own layers."""
        import keras

        from poolnas.spaces._builder import KerasLayers

        layers = KerasLayers()
        inputs = [keras.Input(shape=s, name=f"in{i}") for i, s in enumerate(self.inputs)]
        x: Any = inputs if len(inputs) > 1 else inputs[0]
        for i, (method, args) in enumerate(self.ops):
            x = getattr(layers, method)(x, *args, name=f"k{i}_{method}")
        return keras.Model(inputs, x, name=name)


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


@dataclass
class LatencyTable:
    """Measured kernel latencies on one machine and runtime.

    Args:
        runtime: ``keras`` or ``tflite``.
        batch_size: The batch every kernel ran with.
        threads: The threads it ran on.
        tolerance: The largest accepted spread of a kernel's repeat medians
            (``(max - min) / min``); :meth:`record` refuses more.
        machine: Where it was measured (default: this machine, :func:`machine_name`).
        runtime_version: What ran it (:func:`runtime_description`).
        kernels: ``{kernel key: median ms}``.
        spreads: ``{kernel key: spread of its repeat medians}``.
    """

    runtime: str
    batch_size: int = 1
    threads: int = 1
    tolerance: float = DEFAULT_TOLERANCE
    machine: str = field(default_factory=machine_name)
    runtime_version: str = ""
    kernels: dict[str, float] = field(default_factory=dict)
    spreads: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_runtime(self.runtime)
        _check_batch(self.batch_size)
        if not (isinstance(self.tolerance, (int, float)) and self.tolerance >= 0):
            raise PoolnasError(f"tolerance must be 0 or more, got {self.tolerance!r}")

    def record(self, key: str, repeat_medians_ms: Sequence[float]) -> float:
        """Store the median of a kernel's repeat medians, if they agree within the tolerance.

        Returns:
            The stored median in milliseconds.

        Raises:
            UnstableLatency: The repeats disagree by more than ``tolerance`` (nothing stored).
        """
        timing = Timing(statistics.median(repeat_medians_ms), 0.0, 0, tuple(repeat_medians_ms))
        if timing.spread > self.tolerance or not all(
                math.isfinite(v) and v > 0 for v in repeat_medians_ms):
            raise UnstableLatency(
                f"kernel {key}: repeat medians {', '.join(f'{v:.4f}' for v in repeat_medians_ms)}"
                f" ms disagree by {timing.spread:.0%} (tolerance {self.tolerance:.0%}); measure "
                "again on a quieter machine, with more runs, or a larger tolerance "
                "(--latency-tolerance)")
        self.kernels[key] = timing.median_ms
        self.spreads[key] = timing.spread
        return timing.median_ms

    @property
    def overhead_ms(self) -> float:
        """The fixed cost of one call (:data:`OVERHEAD_KERNEL`)."""
        try:
            return self.kernels[OVERHEAD_KERNEL.key]
        except KeyError:
            raise PoolnasError("the latency table has no overhead kernel; measure it with "
                               "measure_table") from None

    def missing(self, kernels: Iterable[Kernel]) -> list[Kernel]:
        """The kernels of ``kernels`` (and the overhead kernel) the table lacks."""
        wanted = {k.key: k for k in [OVERHEAD_KERNEL, *kernels]}
        return [k for key, k in wanted.items() if key not in self.kernels]

    def predict(self, kernels: Iterable[Kernel]) -> float:
        """Predicted latency in ms of a model that runs ``kernels``: the overhead of one call
        plus each kernel's time above it.

        Raises:
            PoolnasError: A kernel is not in the table.
        """
        overhead = self.overhead_ms
        total = overhead
        for k in kernels:
            ms = self.kernels.get(k.key)
            if ms is None:
                raise PoolnasError(f"kernel {k.key} is not in the {self.runtime} latency table; "
                                   "measure the space's kernels first")
            total += max(ms - overhead, 0.0)
        return total

    @property
    def max_spread(self) -> float:
        return max(self.spreads.values(), default=0.0)

    def subset(self, kernels: Iterable[Kernel]) -> LatencyTable:
        """A copy holding only ``kernels`` and the overhead kernel."""
        keys = {OVERHEAD_KERNEL.key, *(k.key for k in kernels)}
        return LatencyTable(self.runtime, self.batch_size, self.threads, self.tolerance,
                            self.machine, self.runtime_version,
                            {k: v for k, v in self.kernels.items() if k in keys},
                            {k: v for k, v in self.spreads.items() if k in keys})

    def as_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "machine": self.machine, "runtime": self.runtime,
                "runtime_version": self.runtime_version, "batch_size": self.batch_size,
                "threads": self.threads, "tolerance": self.tolerance,
                "kernels": {k: {"ms": self.kernels[k], "spread": self.spreads.get(k, 0.0)}
                            for k in sorted(self.kernels)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """The table :meth:`as_dict` wrote.

        Raises:
            PoolnasError: Not a poolnas latency table.
        """
        try:
            if data.get("format") != _FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            return cls(data["runtime"], int(data["batch_size"]), int(data["threads"]),
                       float(data["tolerance"]), str(data["machine"]),
                       str(data.get("runtime_version", "")),
                       {k: float(v["ms"]) for k, v in data["kernels"].items()},
                       {k: float(v["spread"]) for k, v in data["kernels"].items()})
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
                  threads: int = 1, warmup: int = 5, runs: int = 20, repeats: int = 3,
                  tolerance: float = DEFAULT_TOLERANCE, retries: int = 2,
                  table: LatencyTable | None = None,
                  progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    """Measure every kernel of ``kernels`` missing from ``table`` (and the overhead kernel).

    All kernels are built first; then ``repeats`` rounds each time every kernel (``warmup``
    untimed calls, then ``runs`` timed ones, the median kept), so a drift of the machine shows
    as a disagreement between rounds. A kernel whose round medians disagree by more than
    ``tolerance`` is measured again, up to ``retries`` times.

    Returns:
        ``table`` (or a new one) with the kernels added.

    Raises:
        UnstableLatency: A kernel still disagrees after the retries (nothing of this call is
            stored in ``table``).
        PoolnasError: Unknown runtime, batch size under 1, or a kernel TFLite cannot convert.
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
    if runtime == "keras":
        pin_threads(threads)
    calls = {}
    for i, kernel in enumerate(todo):
        calls[kernel.key] = model_runner(kernel.model(f"kernel{i}"), runtime,
                                         batch_size=batch_size, threads=threads)
        if progress is not None:
            progress(i + 1, 2 * len(todo))
    staged = LatencyTable(runtime, batch_size, threads, tolerance, table.machine,
                          table.runtime_version)
    pending = list(calls)
    for attempt in range(retries + 1):
        medians: dict[str, list[float]] = {key: [] for key in pending}
        for _ in range(repeats):
            for key in pending:
                call = calls[key]
                for _ in range(warmup):
                    call()
                medians[key].append(statistics.median(_series(call, runs)))
        unstable = []
        for key in pending:
            try:
                staged.record(key, medians[key])
            except UnstableLatency as error:
                if attempt == retries:
                    raise
                unstable.append(key)
                del error
        if progress is not None:
            progress(2 * len(todo) - len(unstable), 2 * len(todo))
        pending = unstable
        if not pending:
            break
    table.kernels.update(staged.kernels)
    table.spreads.update(staged.spreads)
    return table


def cached_table(kernels: Iterable[Kernel], runtime: str = "keras", *, batch_size: int = 1,
                 threads: int = 1, path: str | os.PathLike | None = None,
                 **measure: Any) -> LatencyTable:
    """The machine's cached table for ``runtime``, with any kernel of ``kernels`` it lacks
    measured and the file updated (:func:`default_table_path` unless ``path``).

    ``measure`` goes to :func:`measure_table` (``warmup``, ``runs``, ``repeats``,
    ``tolerance``, ``retries``, ``progress``).
    """
    kernels = list(kernels)
    path = Path(path) if path is not None else default_table_path(
        runtime, batch_size=batch_size, threads=threads)
    table = LatencyTable.load(path) if path.exists() else None
    if table is not None and table.missing(kernels):
        table.tolerance = float(measure.get("tolerance", table.tolerance))
    before = 0 if table is None else len(table.kernels)
    table = measure_table(kernels, runtime, batch_size=batch_size, threads=threads,
                          table=table, **measure)
    if len(table.kernels) != before:
        table.save(path)
    return table


class LatencyModel:
    """Predicted latency (ms) of architectures on one input, from a :class:`LatencyTable`.

    Each part of an architecture (stem stage, point, head) is summed once per (choices, input
    shape) and remembered, so predicting a whole space costs little more than its FLOPs.

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
        self._overhead = table.overhead_ms

    def _part(self, kernels: tuple[Kernel, ...]) -> float:
        ms = self._parts.get(kernels)
        if ms is None:
            ms = self._parts[kernels] = self.table.predict(kernels) - self._overhead
        return ms

    def __call__(self, arch: Architecture) -> float:
        """Predicted latency of ``arch`` in milliseconds.

        Raises:
            PoolnasError: A kernel of ``arch`` is not in the table.
        """
        parts = _parts(arch, self.input_shape, self.num_classes, self.input_scale,
                       self.input_offset)
        return self._overhead + sum(self._part(p) for p in parts)
