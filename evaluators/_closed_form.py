"""FLOPs, MACs and parameters of an architecture, or of a whole space, without building a model.

The builder's anatomy (``poolnas.spaces``: :func:`~poolnas.spaces.stem_stage`,
:func:`~poolnas.spaces.point_stage`, :func:`~poolnas.spaces.classifier_head`) is run through
:class:`~poolnas.evaluators._flops.CostLayers`, whose tensors are shapes: the layers counted are
the layers ``build_model`` creates, under the convention of ``evaluators/_flops.py``, so the
totals equal ``count_cost(build_model(...))`` and TensorFlow's profiler by construction (the
tests and ``benchmarks/closed_form_check.py`` check it on every PoolBench architecture).

A network is a chain of parts: the stem stage, one part per downsampling point, the head. A
part's cost depends only on its own choices and the shape that enters it, so each part is
counted once per (choices, input shape) and memoised; an architecture is then a sum of a few
remembered parts, and :func:`cost_table` walks a whole space prefix by prefix, straight from its
parameter values, without making an ``Architecture`` per row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

from poolnas.evaluators._flops import Cost, CostLayers, Shape
from poolnas.spaces import (
    Architecture,
    DownsamplingPoint,
    SearchSpace,
    check_input_shape,
    classifier_head,
    point_stage,
    stem_stage,
)

_MEMO = 1 << 16
#: What a part walk yields per part (a Cost, a tuple of kernels, …).
T = TypeVar("T")


@functools.lru_cache(maxsize=_MEMO)
def _stem_cost(stem: str, width: int, blocks: int, input_shape: Shape, input_scale: float,
               input_offset: float) -> tuple[Cost, Shape]:
    layers = CostLayers()
    out = stem_stage(layers, input_shape, Architecture((), stem=stem, width=width, blocks=blocks),
                     input_scale=input_scale, input_offset=input_offset)
    return layers.total, out


@functools.lru_cache(maxsize=_MEMO)
def _point_cost(point: DownsamplingPoint, shape: Shape) -> tuple[Cost, Shape]:
    layers = CostLayers()
    out = point_stage(layers, shape, point, shape[-1], 1)
    return layers.total, out


@functools.lru_cache(maxsize=_MEMO)
def _head_cost(shape: Shape, num_classes: int) -> Cost:
    layers = CostLayers()
    classifier_head(layers, shape, num_classes)
    return layers.total


def _input(input_shape: Sequence[int]) -> Shape:
    return tuple(int(d) for d in input_shape)


def part_costs(arch: Architecture, input_shape: Sequence[int], num_classes: int, *,
               input_scale: float = 1.0, input_offset: float = 0.0) -> list[Cost]:
    """The cost of each part of ``arch``: the stem stage, every point (its op, its shortcut and
    the stage after it), the head; they sum to :func:`architecture_cost`.

    Raises:
        PoolnasError: The input is too small for ``arch``, or fewer than 2 classes.
    """
    return walk_parts(arch, input_shape, num_classes, stem=_stem_cost, point=_point_cost,
                      head=_head_cost, input_scale=input_scale, input_offset=input_offset)


def walk_parts(arch: Architecture, input_shape: Sequence[int], num_classes: int, *,
               stem: Callable[..., tuple[T, Shape]],
               point: Callable[[DownsamplingPoint, Shape], tuple[T, Shape]],
               head: Callable[[Shape, int], T], input_scale: float = 1.0,
               input_offset: float = 0.0) -> list[T]:
    """``arch`` part by part (stem stage, each point, head), each part's result from its
    (memoised) function given the shape the part before left: what the closed-form costs and
    the latency model's kernels both walk.

    Raises:
        PoolnasError: The input is too small for ``arch``.
    """
    check_input_shape(arch, tuple(input_shape))
    result, shape = stem(arch.stem, arch.width, arch.blocks, _input(input_shape),
                         float(input_scale), float(input_offset))
    parts = [result]
    for each in arch.points:
        result, shape = point(each, shape)
        parts.append(result)
    parts.append(head(shape, num_classes))
    return parts


def architecture_cost(arch: Architecture, input_shape: Sequence[int], num_classes: int, *,
                      input_scale: float = 1.0, input_offset: float = 0.0) -> Cost:
    """FLOPs, MACs and parameters of ``arch`` at batch 1, in closed form (no model is built).

    Equal to ``count_cost(build_model(arch, input_shape, num_classes, input_scale=…,
    input_offset=…))``: the ``Rescaling`` layer is counted when scale and offset are not 1 and 0.

    Args:
        arch: The architecture.
        input_shape: ``(height, width, channels)`` of one image.
        num_classes: Number of classes.
        input_scale: The model's input scale (only whether it is 1 matters).
        input_offset: The model's input offset (only whether it is 0 matters).

    Raises:
        PoolnasError: The input is too small for ``arch``, or fewer than 2 classes.
    """
    return sum(part_costs(arch, input_shape, num_classes, input_scale=input_scale,
                          input_offset=input_offset), Cost())


def _point_choices(space: SearchSpace, index: int) -> list[tuple[str, DownsamplingPoint]]:
    """Point ``index``'s distinct choices as (``/segment`` of the key, point), in the order
    ``SearchSpace.__iter__`` meets them (a point without shortcut takes the first merge)."""
    merges = space.merges[index]
    choices = []
    for op in space.ops[index]:
        for skip in space.skips[index]:
            for merge in merges if skip != "none" else merges[:1]:
                for width in space.widths[index + 1]:
                    for blocks in space.depths[index + 1]:
                        point = DownsamplingPoint(op, skip, merge, width, blocks)
                        choices.append((f"/{point.segment}", point))
    return choices


def cost_table(space: SearchSpace, input_shape: Sequence[int], num_classes: int, *,
               input_scale: float = 1.0, input_offset: float = 0.0) -> dict[str, Cost]:
    """The cost of every architecture of ``space``, by key, in the order of ``iter(space)``.

    Each distinct part (stem stage, point given its input shape, head) is counted once; the
    rest is sums. A space of 50,000 architectures takes well under a second (see
    ``docs/benchmarks.md``).

    Args:
        space: The search space.
        input_shape: ``(height, width, channels)`` of one image.
        num_classes: Number of classes.
        input_scale: The models' input scale (only whether it is 1 matters).
        input_offset: The models' input offset (only whether it is 0 matters).

    Returns:
        ``{architecture key: Cost}``, equal to :func:`architecture_cost` of each.

    Raises:
        PoolnasError: The input is too small for some architecture, or fewer than 2 classes.
    """
    check_input_shape(Architecture(()), input_shape)  # the shape itself: three positive sizes
    space.check_input_shape(input_shape)
    shape_in = _input(input_shape)
    scale, offset = float(input_scale), float(input_offset)
    # Rows: (key so far, flops, macs, params, shape after the prefix).
    rows: list[tuple[str, int, int, int, Shape]] = []
    for stem in space.stems:
        for width in space.widths[0]:
            for blocks in space.depths[0]:
                cost, shape = _stem_cost(stem, width, blocks, shape_in, scale, offset)
                rows.append((f"{stem}:{width}x{blocks}", cost.flops, cost.macs, cost.params,
                             shape))
    for index in range(space.points):
        choices = _point_choices(space, index)
        by_shape: dict[Shape, list[tuple[str, int, int, int, Shape]]] = {}
        grown = []
        append = grown.append
        for key, flops, macs, params, shape in rows:
            steps = by_shape.get(shape)
            if steps is None:
                steps = by_shape[shape] = []
                for segment, point in choices:
                    cost, out = _point_cost(point, shape)
                    steps.append((segment, cost.flops, cost.macs, cost.params, out))
            for segment, d_flops, d_macs, d_params, out in steps:
                append((key + segment, flops + d_flops, macs + d_macs, params + d_params, out))
        rows = grown
    heads = {shape: _head_cost(shape, num_classes) for shape in {row[-1] for row in rows}}
    table = {}
    for key, flops, macs, params, shape in rows:
        head = heads[shape]
        table[key] = Cost(flops + head.flops, macs + head.macs, params + head.params)
    return table
