"""What a candidate is worth: data sets, training and accuracy, FLOPs/MACs/params."""

from __future__ import annotations

from poolnas.evaluators._flops import Cost, LayerCost, count_cost, layer_costs
from poolnas.evaluators._profiler import profiler_flops

__all__ = ["Cost", "LayerCost", "count_cost", "layer_costs", "profiler_flops"]
