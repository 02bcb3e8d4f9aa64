"""Running studies: the public surface of ``poolnas.search``, one module per concept behind it.

=====================  ===========================================================================
module                 what it owns
=====================  ===========================================================================
``_config``            :class:`SearchConfig`, what ``poolnas search`` runs, validated up front
``_settings``          a study's stored settings, creating/resuming a study, :func:`trial_seed`
``_trial_attrs``       :class:`TrialAttrs`: every stored trial field's name, defined once
``_costs``             :class:`CostModel`: closed-form FLOPs/MACs/params, predicted latency
``_accuracy_model``    :class:`AccuracyModel` (GP over the choices), :func:`fit_accuracy_model`
``_samplers``          ``--sampler``: :data:`SAMPLERS` and :func:`make_sampler`
``_surrogate``         :class:`ParetoSurrogateSampler` (accuracy model + exact-FLOPs EHVI)
``_recorder``          :class:`TrialRecorder`: how every driver records a trial; :class:`TrialHooks`
``_runner``            :class:`SearchRunner`, the Optuna loop
``_reclaim``           dead workers' trials, heartbeats, retries (:func:`reclaim_dead_trials`)
``_signals``           :class:`GracefulStop` (Ctrl-C, SIGTERM)
``_pool``              :class:`WorkerPool`, :func:`run_with_workers`, threads per worker
``_locks``             :class:`StudyLock`, one worker at a time starts a trial
``_storage``           :func:`open_storage`: SQLite, PostgreSQL, MySQL, journal files, artifacts
``_snapshots``         the Pareto-front snapshot tables
``_pareto``            :func:`pareto_front`, :func:`reported_front`, :func:`hypervolume`
``_export``            :func:`export_trials`: ``.keras`` files and ``manifest.json``
``_retrain``           ``export --retrain-epochs``: retrain and test on held-out data
``keras_tuner/``       the KerasTuner integration: HyperModel, :class:`OptunaOracle`, the engine
``_cli``               the ``poolnas`` command: the one module that composes every folder
=====================  ===========================================================================

Imports run one way: ``spaces`` ← ``evaluators`` ← ``search`` ← ``dashboards``; search never
imports dashboards (their notes and figures subscribe through :class:`TrialHooks`, wired by the
CLI). KerasTuner is imported only when its names are asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolnas.search._accuracy_model import (
    MORE_TRAININGS_HORIZON,
    AccuracyModel,
    ArchitectureEstimate,
    ChoiceEffect,
    Observations,
    StudyModel,
    dominance_probabilities,
    fit_accuracy_model,
    model_fields,
    more_trainings,
)
from poolnas.search._config import DEFAULT_STORAGE, SearchConfig
from poolnas.search._costs import COSTS, MAX_CANDIDATES, CostModel
from poolnas.search._export import (
    export_trials,
    select_trials,
    trial_record,
    write_file_atomically,
)
from poolnas.search._locks import StudyLock
from poolnas.search._pareto import (
    front_by_text,
    hypervolume,
    is_feasible,
    pareto_front,
    reported_front,
)
from poolnas.search._pool import (
    WorkerPool,
    configure_threads,
    quiet_tensorflow,
    run_with_workers,
    thread_split,
)
from poolnas.search._reclaim import (
    AttrHeartbeat,
    RetryKilledTrial,
    WorkerIdentity,
    reclaim_dead_trials,
)
from poolnas.search._recorder import Candidate, TrialEvent, TrialHooks, TrialRecorder
from poolnas.search._retrain import Retrained, kendall_tau, retrain_trials, study_data
from poolnas.search._runner import SearchRunner, TrialReport, auto_parallel
from poolnas.search._samplers import SAMPLERS, make_sampler
from poolnas.search._settings import (
    METRIC_NAMES,
    open_study,
    recorded_artifacts,
    settings_of,
    trial_seed,
)
from poolnas.search._signals import GracefulStop
from poolnas.search._snapshots import (
    SCHEMA_VERSION,
    FrontMember,
    JournalSnapshotStore,
    Snapshot,
    SnapshotStore,
)
from poolnas.search._storage import (
    StorageHandle,
    list_studies,
    load_study,
    mask_url,
    open_storage,
)
from poolnas.search._surrogate import ParetoSurrogateSampler
from poolnas.search._trial_attrs import STUDY_ATTR, TrialAttrs

if TYPE_CHECKING:
    from poolnas.search.keras_tuner import (
        TUNERS,
        KerasTunerRunner,
        OptunaOracle,
        OptunaSearch,
        PoolNASHyperModel,
    )

__all__ = [
    "AccuracyModel",
    "ArchitectureEstimate",
    "AttrHeartbeat",
    "ChoiceEffect",
    "Observations",
    "StudyModel",
    "dominance_probabilities",
    "fit_accuracy_model",
    "model_fields",
    "more_trainings",
    "MORE_TRAININGS_HORIZON",
    "Candidate",
    "COSTS",
    "CostModel",
    "DEFAULT_STORAGE",
    "FrontMember",
    "GracefulStop",
    "JournalSnapshotStore",
    "KerasTunerRunner",
    "MAX_CANDIDATES",
    "METRIC_NAMES",
    "OptunaOracle",
    "OptunaSearch",
    "ParetoSurrogateSampler",
    "PoolNASHyperModel",
    "Retrained",
    "RetryKilledTrial",
    "SAMPLERS",
    "SCHEMA_VERSION",
    "STUDY_ATTR",
    "SearchConfig",
    "SearchRunner",
    "Snapshot",
    "SnapshotStore",
    "StorageHandle",
    "StudyLock",
    "TUNERS",
    "TrialAttrs",
    "TrialEvent",
    "TrialHooks",
    "TrialRecorder",
    "TrialReport",
    "WorkerIdentity",
    "WorkerPool",
    "configure_threads",
    "export_trials",
    "front_by_text",
    "hypervolume",
    "is_feasible",
    "kendall_tau",
    "list_studies",
    "load_study",
    "make_sampler",
    "mask_url",
    "open_storage",
    "open_study",
    "pareto_front",
    "reported_front",
    "quiet_tensorflow",
    "reclaim_dead_trials",
    "recorded_artifacts",
    "retrain_trials",
    "run_with_workers",
    "select_trials",
    "settings_of",
    "study_data",
    "thread_split",
    "trial_record",
    "trial_seed",
    "write_file_atomically",
    "auto_parallel",
]

_KERAS_TUNER_NAMES = ("TUNERS", "KerasTunerRunner", "OptunaOracle", "OptunaSearch",
                      "PoolNASHyperModel")


def __getattr__(name: str):
    # KerasTuner (and with it TensorFlow) is imported only when its integration is asked for.
    if name in _KERAS_TUNER_NAMES:
        from poolnas.search import keras_tuner

        return getattr(keras_tuner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
