"""Running studies: the Optuna study and objective, samplers, Pareto snapshots, export, CLI."""

from __future__ import annotations

from poolnas.search._export import export_trials, select_trials
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

__all__ = [
    "DEFAULT_STORAGE",
    "FrontMember",
    "JournalSnapshotStore",
    "SAMPLERS",
    "SCHEMA_VERSION",
    "SearchConfig",
    "SearchRunner",
    "Snapshot",
    "SnapshotStore",
    "StorageHandle",
    "export_trials",
    "hypervolume",
    "is_feasible",
    "list_studies",
    "load_study",
    "make_sampler",
    "open_storage",
    "open_study",
    "pareto_front",
    "select_trials",
]
