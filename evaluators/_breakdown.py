"""Where the FLOPs of an architecture go: per downsampling point, and what other ops would cost.

The parts are the builder's: the stem stage (``rescale``, ``stem_*``, ``stage0_*``), point ``i``
(``down{i}_*`` and ``stage{i}_*``: its op, its shortcut and the stage after it) and the head
(``global_avg_pool``, ``classifier``). They are counted in closed form
(``evaluators/_closed_form.py``), so nothing is built; a model that is already at hand (a
trained one) is read instead, its layers grouped by those names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from poolnas.evaluators._closed_form import part_costs
from poolnas.evaluators._flops import Cost, layer_costs
from poolnas.spaces import OPS, Architecture, PoolnasError

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


def point_costs(arch: Architecture, input_shape, num_classes: int, *,
                compare: bool = True, model: keras.Model | None = None) -> list[PointCost]:
    """Cost of the stem stage, of every point (op + shortcut + stage) and of the head.

    With ``compare``, each point also lists the FLOPs it would have with every other op (the
    rest of the network unchanged; ops that the point's widths rule out are left out).
    Everything is counted in closed form, for a model without input rescaling; ``model``, if
    given, is ``arch``'s model already built for this input (a trained one is fine): its layers
    are read instead, so the stem stage includes its ``rescale`` layer if it has one.
    """
    if model is not None:
        groups = _grouped_layers(model)
    else:
        counted = part_costs(arch, input_shape, num_classes)
        groups = {"stem": counted[0], "head": counted[-1],
                  **{f"point {i}": cost for i, cost in enumerate(counted[1:-1], start=1)}}
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
                alternatives[op] = part_costs(other, input_shape, num_classes)[index].flops
        label = f"{point.op} ({OPS[point.op].description.split(':')[0]}), skip {point.skip}"
        parts.append(PointCost(part, label, groups[part], alternatives))
    parts.append(PointCost("head", "global average pool and classifier",
                           groups.get("head", Cost())))
    return parts
