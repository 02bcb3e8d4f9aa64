"""What a candidate is worth: data sets, training and accuracy, FLOPs/MACs/params (counted from
a built model, or in closed form from the architecture or for a whole space), measured latency
and the per-kernel latency model."""

from __future__ import annotations

from poolnas.evaluators._breakdown import PointCost, point_costs
from poolnas.evaluators._closed_form import architecture_cost, cost_table
from poolnas.evaluators._data import BUILTIN_DATASETS, Dataset, keras_home, load_dataset
from poolnas.evaluators._flops import Cost, LayerCost, count_cost, layer_costs
from poolnas.evaluators._fused import evaluate_architectures
from poolnas.evaluators._latency import (
    DEFAULT_TOLERANCE,
    RUNTIMES,
    Kernel,
    KernelLayers,
    LatencyModel,
    LatencyTable,
    Timing,
    UnstableLatency,
    architecture_kernels,
    cached_table,
    check_runtime,
    convert_tflite,
    default_table_path,
    machine_name,
    measure_model,
    measure_table,
    pin_threads,
    runtime_description,
    space_kernels,
    time_call,
)
from poolnas.evaluators._profiler import profiler_flops
from poolnas.evaluators._training import (
    OPTIMIZERS,
    Budget,
    Evaluation,
    TrainingState,
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
    "DEFAULT_TOLERANCE",
    "Dataset",
    "Evaluation",
    "Kernel",
    "KernelLayers",
    "LatencyModel",
    "LatencyTable",
    "LayerCost",
    "OPTIMIZERS",
    "PointCost",
    "RUNTIMES",
    "Timing",
    "TrainingState",
    "TrialDiverged",
    "UnstableLatency",
    "architecture_cost",
    "architecture_kernels",
    "cached_table",
    "check_runtime",
    "convert_tflite",
    "default_table_path",
    "machine_name",
    "measure_model",
    "measure_table",
    "pin_threads",
    "runtime_description",
    "space_kernels",
    "time_call",
    "cost_table",
    "count_cost",
    "evaluate_architecture",
    "evaluate_architectures",
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
