"""What a candidate costs before it is trained: FLOPs, MACs and params for a study's input, and
its predicted latency when the study's cost is ``latency``.

:class:`CostModel` counts an architecture in closed form from the
:class:`~poolnas.spaces.Architecture` alone (:func:`poolnas.evaluators.architecture_cost`, the
FLOPs convention of ``evaluators/_flops.py``; no Keras model is built), caches it by key, and
gives the samplers ``flops_of(params)`` and the study its hypervolume reference (the largest
FLOPs of the space). Counting is microseconds per architecture, so a whole space is counted in
the time a study takes to start, and nothing about costs needs to be stored with a study beyond
its reference point.

A study's cost objective (:data:`COSTS`) is FLOPs by default. With ``latency`` the model also
holds a :class:`~poolnas.evaluators.LatencyModel` (per-kernel latencies measured on this machine,
summed per architecture): :meth:`CostModel.objective` is then the predicted latency in ms, known
before training and the same number every time, and the study stores the kernel table in its
settings (``latency_table``), so every process that reads the study predicts the same costs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from poolnas.evaluators import (
    Cost,
    LatencyModel,
    LatencyTable,
    architecture_cost,
    cost_table,
    space_kernels,
)

if TYPE_CHECKING:
    from poolnas.spaces import Architecture, SearchSpace

#: Spaces up to this size are enumerated: the surrogate sampler scores all of them, and the
#: hypervolume reference is the exact largest FLOPs of the space.
MAX_CANDIDATES = 50_000
#: The cost objectives a study can minimise, and the metric name each is stored under.
COSTS = {"flops": "flops", "latency": "latency_ms"}


class CostModel:
    """FLOPs/MACs/params of architectures on one input (shape, classes, input scaling).

    Args:
        input_shape: ``(height, width, channels)`` of one example.
        num_classes: Classes of the classifier.
        input_scale: The model's input rescaling factor (a ``Rescaling`` layer unless 1 and 0).
        input_offset: The model's input rescaling offset.
        latency: A latency table: the objective is then the predicted latency (ms).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 input_scale: float = 1.0, input_offset: float = 0.0,
                 latency: LatencyTable | None = None) -> None:
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.input_scale = float(input_scale)
        self.input_offset = float(input_offset)
        self.latency = None if latency is None else LatencyModel(
            latency, self.input_shape, self.num_classes, input_scale=self.input_scale,
            input_offset=self.input_offset)
        self._cache: dict[str, Cost] = {}

    @classmethod
    def of_settings(cls, settings: Mapping[str, Any]) -> CostModel:
        """The cost model of a study from its stored settings (its latency table, if any)."""
        table = settings.get("latency_table")
        return cls(tuple(settings["input_shape"]), int(settings["num_classes"]),
                   input_scale=float(settings["input_scale"]),
                   input_offset=float(settings["input_offset"]),
                   latency=None if table is None else LatencyTable.from_dict(table))

    @property
    def cost(self) -> str:
        """The cost objective: ``flops`` or ``latency``."""
        return "flops" if self.latency is None else "latency"

    @property
    def metric_name(self) -> str:
        """The objective's metric name: ``flops`` or ``latency_ms``."""
        return COSTS[self.cost]

    def latency_ms(self, arch: Architecture) -> float | None:
        """Predicted latency of ``arch`` in ms (None without a latency table)."""
        return None if self.latency is None else float(self.latency(arch))

    def objective(self, arch: Architecture) -> float:
        """The cost objective of ``arch``: FLOPs, or predicted latency in ms."""
        if self.latency is not None:
            return float(self.latency(arch))
        return float(self(arch).flops)

    def __call__(self, arch: Architecture) -> Cost:
        cost = self._cache.get(arch.key)
        if cost is None:
            cost = architecture_cost(arch, self.input_shape, self.num_classes,
                                     input_scale=self.input_scale,
                                     input_offset=self.input_offset)
            self._cache[arch.key] = cost
        return cost

    def count_space(self, space: SearchSpace) -> dict[str, Cost]:
        """The cost of every architecture of an enumerable ``space``, by key (and cached):
        each distinct part counted once (:func:`poolnas.evaluators.cost_table`)."""
        table = cost_table(space, self.input_shape, self.num_classes,
                           input_scale=self.input_scale, input_offset=self.input_offset)
        self._cache.update(table)
        return table

    def flops_of(self, space: SearchSpace) -> Callable[[Mapping[str, Any]], float]:
        """The cost objective of ``space``'s candidates by their parameters (what the samplers
        read): FLOPs, or the predicted latency with a latency table."""

        def objective(params: Mapping[str, Any]) -> float:
            return self.objective(space.architecture(params))

        return objective

    def largest(self, space: SearchSpace) -> float:
        """The largest cost objective of ``space``, the hypervolume's reference for its study.

        Exact for a space of up to :data:`MAX_CANDIDATES` architectures (every one is counted);
        above that, coordinate ascent over the parameters, a lower bound.
        """
        if space.size <= MAX_CANDIDATES:
            if self.latency is not None:
                return max(self.objective(arch) for arch in space)
            return max(cost.flops for cost in self.count_space(space).values())
        parameters = space.parameters()
        params = {name: values[0] for name, values in parameters.items()}
        best = self.objective(space.architecture(params))
        for _ in range(3):
            improved = False
            for name, values in parameters.items():
                for value in values:
                    candidate = {**params, name: value}
                    flops = self.objective(space.architecture(candidate))
                    if flops > best:
                        best, params, improved = flops, candidate, True
            if not improved:
                break
        return best

    def study_costs(self, space: SearchSpace) -> dict[str, Any]:
        """What a new study of ``space`` stores about its costs: ``reference_flops`` (the
        reference of the cost objective: FLOPs, or ms for a latency study) and, for a latency
        study, the kernel table of the space (``latency_table``)."""
        if self.latency is None:
            return {"reference_flops": int(self.largest(space))}
        kernels = space_kernels(space, self.input_shape, self.num_classes,
                                input_scale=self.input_scale, input_offset=self.input_offset)
        return {"reference_flops": float(self.largest(space)),
                "latency_table": self.latency.table.subset(kernels).as_dict()}
