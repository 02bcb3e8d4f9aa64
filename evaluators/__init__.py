"""What a candidate is worth: data sets, training and accuracy, FLOPs/MACs/params (counted from
a built model, or in closed form from the architecture or for a whole space)."""

from __future__ import annotations

from poolnas.evaluators._breakdown import PointCost, point_costs
from poolnas.evaluators._closed_form import architecture_cost, cost_table
from poolnas.evaluators._data import BUILTIN_DATASETS, Dataset, keras_home, load_dataset
from poolnas.evaluators._flops import Cost, LayerCost, count_cost, layer_costs
from poolnas.evaluators._profiler import profiler_flops
from poolnas.evaluators._training import (
    OPTIMIZERS,
    Budget,
    Evaluation,
    TrialDiverged,
    evaluate_architecture,
    fresh_model,
    fuse_updates,
    retrain_and_test,
    train_model,
)

__all__ = [
    "BUILTIN_DATASETS",
    "Budget",
    "Cost",
    "Dataset",
    "Evaluation",
    "LayerCost",
    "OPTIMIZERS",
    "PointCost",
    "TrialDiverged",
    "architecture_cost",
    "cost_table",
    "count_cost",
    "evaluate_architecture",
    "fresh_model",
    "fuse_updates",
    "layer_costs",
    "keras_home",
    "load_dataset",
    "point_costs",
    "profiler_flops",
    "retrain_and_test",
    "train_model",
]
