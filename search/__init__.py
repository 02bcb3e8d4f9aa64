"""Running studies: the Optuna study and objective, samplers, Pareto snapshots, export, CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolnas.search._enumerative import ParetoSurrogateSampler, additive_flops
from poolnas.search._export import export_trials, select_trials
from poolnas.search._locks import StudyLock
from poolnas.search._pareto import hypervolume, is_feasible, pareto_front
from poolnas.search._snapshots import (
    SCHEMA_VERSION,
    FrontMember,
    JournalSnapshotStore,
    Snapshot,
    SnapshotStore,
)
from poolnas.search._storage import StorageHandle, list_studies, load_study, open_storage
from poolnas.search._study import (
    DEFAULT_STORAGE,
    SAMPLERS,
    SearchConfig,
    SearchRunner,
    make_sampler,
    open_study,
)
from poolnas.search._tuner_engine import TUNERS, KerasTunerRunner
from poolnas.search._workers import (
    GracefulStop,
    RetryKilledTrial,
    WorkerIdentity,
    WorkerPool,
    reclaim_dead_trials,
    run_with_workers,
)

if TYPE_CHECKING:
    from poolnas.search._oracle import OptunaOracle

__all__ = [
    "DEFAULT_STORAGE",
    "FrontMember",
    "GracefulStop",
    "JournalSnapshotStore",
    "KerasTunerRunner",
    "OptunaOracle",
    "ParetoSurrogateSampler",
    "RetryKilledTrial",
    "SAMPLERS",
    "SCHEMA_VERSION",
    "SearchConfig",
    "SearchRunner",
    "TUNERS",
    "WorkerIdentity",
    "additive_flops",
    "WorkerPool",
    "Snapshot",
    "SnapshotStore",
    "StorageHandle",
    "StudyLock",
    "export_trials",
    "hypervolume",
    "is_feasible",
    "list_studies",
    "load_study",
    "make_sampler",
    "open_storage",
    "open_study",
    "pareto_front",
    "reclaim_dead_trials",
    "run_with_workers",
    "select_trials",
]


def __getattr__(name: str):
    # KerasTuner (and with it TensorFlow) is imported only when the oracle is asked for.
    if name == "OptunaOracle":
        from poolnas.search._oracle import OptunaOracle

        return OptunaOracle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
