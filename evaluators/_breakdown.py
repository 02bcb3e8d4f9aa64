"""Where the FLOPs of an architecture go: per downsampling point, and what other ops would cost.

Layers are grouped by the builder's names: ``stem_*`` and ``stage0_*`` are the stem stage,
``down{i}_*`` and ``stage{i}_*`` belong to point ``i`` (its op, its shortcut and the stage after
it), ``global_avg_pool`` and ``classifier`` are the head.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from poolnas.evaluators._flops import Cost, layer_costs
from poolnas.spaces import OPS, Architecture, PoolnasError, build_model

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class PointCost:
    """The cost of one part of a network; for a point, also the cost with every other op."""

    part: str
    label: str
    cost: Cost
    alternatives: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"part": self.part, "label": self.label, "flops": self.cost.flops,
                "macs": self.cost.macs, "params": self.cost.params,
                "flops_with_other_ops": dict(self.alternatives)}

    def explain(self) -> str:
        text = f"{self.part}: {self.label}, {_mflops(self.cost.flops)} MFLOPs"
        if self.alternatives:
            others = ", ".join(f"{op} {_mflops(f)}" for op, f in self.alternatives.items())
            text += f"; the same point with {others}"
        return text


def _mflops(flops: int) -> str:
    return f"{flops / 1e6:.3g}"


def _part_of(layer_name: str) -> str:
    head, _, _ = layer_name.partition("_")
    if head in ("stem", "stage0", "rescale", "image", "augment"):
        return "stem"
    for prefix in ("down", "stage"):
        if head.startswith(prefix) and head[len(prefix):].isdigit():
            return f"point {int(head[len(prefix):])}"
    return "head"


def _grouped_layers(model: keras.Model) -> dict[str, Cost]:
    groups: dict[str, Cost] = {}
    for entry in layer_costs(model):
        part = _part_of(entry.name)
        groups[part] = groups.get(part, Cost()) + entry.cost
    return groups


def _grouped(arch: Architecture, input_shape, num_classes: int) -> dict[str, Cost]:
    import keras

    model = build_model(arch, input_shape, num_classes)
    groups = _grouped_layers(model)
    del model
    keras.backend.clear_session()
    return groups


def point_costs(arch: Architecture, input_shape, num_classes: int, *,
                compare: bool = True, model: keras.Model | None = None) -> list[PointCost]:
    """Cost of the stem stage, of every point (op + shortcut + stage) and of the head.

    With ``compare``, each point also lists the FLOPs it would have with every other op (the
    rest of the network unchanged; ops that the point's widths rule out are left out).
    ``model``, if given, is ``arch``'s model already built for this input (a trained one is
    fine): it is read, not rebuilt; without ``compare`` nothing is built then.
    """
    groups = (_grouped_layers(model) if model is not None
              else _grouped(arch, input_shape, num_classes))
    parts = [PointCost("stem", f"{arch.stem} stem and stage 0", groups.get("stem", Cost()))]
    for index, point in enumerate(arch.points, start=1):
        part = f"point {index}"
        alternatives: dict[str, int] = {}
        if compare:
            for op in OPS:
                if op == point.op:
                    continue
                points = list(arch.points)
                points[index - 1] = replace(point, op=op)
                try:
                    other = replace(arch, points=tuple(points))
                except PoolnasError:
                    continue
                alternatives[op] = _grouped(other, input_shape, num_classes)[part].flops
        label = f"{point.op} ({OPS[point.op].description.split(':')[0]}), skip {point.skip}"
        parts.append(PointCost(part, label, groups[part], alternatives))
    parts.append(PointCost("head", "global average pool and classifier",
                           groups.get("head", Cost())))
    return parts
