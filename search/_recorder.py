"""The trial recorder: one way a poolnas trial is recorded, whoever proposes and trains it.

The Optuna loop (:class:`~poolnas.search.SearchRunner`), the KerasTuner engine and the
KerasTuner :class:`~poolnas.search.OptunaOracle` each open an Optuna trial their own way and
train their own way; everything between is here, in this order:

1. :meth:`TrialRecorder.begin`: the architecture's cost (closed form, nothing built), the
   fields every trial carries (:class:`~poolnas.search.TrialAttrs`), then whether it needs
   training at all: an architecture the study already trained is a *duplicate* (its results
   are copied, ``duplicate_of``) unless the sampler asked for a re-evaluation (``repeat_of``:
   trained again with the trial's own seed), one over the FLOPs budget is *infeasible*
   (``infeasible``, values ``(0, flops)``). Either way the caller tells the returned values
   without training.
2. :meth:`TrialRecorder.record_trained`: the trained model as an artifact, the accuracies and
   timings.
3. :meth:`TrialRecorder.completed`, once the trial is told COMPLETE: the Pareto-front snapshot
   (one transaction) and the study-level hooks.

What others add to a trial (optuna-dashboard's note and picture, the study figure) subscribes
through :class:`TrialHooks`: search/ never imports dashboards/; the CLI wires the dashboards'
hooks in. A hook is an observer: its failure is logged and never fails the trial.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from poolnas.search._costs import CostModel
from poolnas.search._pareto import hypervolume, pareto_front
from poolnas.search._settings import trial_seed
from poolnas.search._trial_attrs import TrialAttrs

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore
    from optuna.trial import FrozenTrial

    from poolnas.evaluators import Cost
    from poolnas.search._storage import StorageHandle
    from poolnas.spaces import Architecture

logger = logging.getLogger("poolnas.search")


@dataclass(frozen=True)
class TrialEvent:
    """A trial's candidate was recorded: what a :class:`TrialHooks` ``on_trial`` hook sees.

    Attributes:
        trial: The running Optuna trial (user attrs may still be set on it).
        arch: Its architecture.
        input_shape: The study's input shape.
        num_classes: The study's classes.
        artifact_store: Where pictures may go (None: nowhere, e.g. a duplicate's).
        remark: Why the trial is not trained (a duplicate, over budget), or None.
        model: The trained Keras model, when there is one.
    """

    trial: optuna.Trial
    arch: Architecture
    input_shape: tuple[int, ...]
    num_classes: int
    artifact_store: ArtifactStore | None = None
    remark: str | None = None
    model: Any = None


@dataclass(frozen=True)
class TrialHooks:
    """What runs as trials are recorded; hooks must be picklable for ``--workers`` (module-level
    functions).

    Attributes:
        on_trial: Called with a :class:`TrialEvent` once per trial: when it needs no training
            (with a remark), or when its trained model was stored.
        on_front: Called with the study and its trials after each completed trial's Pareto
            snapshot.
    """

    on_trial: tuple[Callable[[TrialEvent], Any], ...] = ()
    on_front: tuple[Callable[[optuna.Study, list[FrozenTrial]], Any], ...] = ()


@dataclass
class Candidate:
    """An architecture being recorded as a trial.

    Attributes:
        trial: Its Optuna trial.
        arch: The architecture.
        cost: Its FLOPs, MACs, params.
        started: ``time.perf_counter()`` when recording began.
        values: The trial's values when it needs no training (a duplicate or over the budget),
            else None.
    """

    trial: optuna.Trial
    arch: Architecture
    cost: Cost
    started: float = field(default_factory=time.perf_counter)
    values: tuple[float, float] | None = None
    #: Wall time by phase, once trained (:meth:`TrialRecorder.record_trained`).
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def needs_training(self) -> bool:
        return self.values is None


class TrialRecorder:
    """Records the trials of one poolnas study (see the module docstring for the steps).

    Args:
        handle: The study's storage (artifacts and snapshots).
        study: The study.
        settings: Its stored settings (``input_shape``, ``num_classes``, ``seed``,
            ``max_flops``, ``reference_flops``, …).
        costs: The cost model (default: one from ``settings``).
        hooks: What runs after each trial (dashboards' notes, …).
    """

    def __init__(self, handle: StorageHandle, study: optuna.Study, settings: Mapping[str, Any],
                 *, costs: CostModel | None = None, hooks: TrialHooks | None = None) -> None:
        self.handle = handle
        self.study = study
        self.settings = settings
        self.costs = costs if costs is not None else CostModel.of_settings(settings)
        self.hooks = hooks or TrialHooks()
        self.max_flops: int | None = settings.get("max_flops")
        self.max_latency: float | None = settings.get("max_latency")
        #: The hypervolume's reference for the cost objective (FLOPs, or ms for latency).
        self.reference_flops = float(settings["reference_flops"])

    def seed(self, number: int) -> int:
        """The training seed of trial ``number`` (:func:`~poolnas.search._settings.trial_seed`)."""
        return trial_seed(int(self.settings.get("seed", 0)), number)

    # ------------------------------------------------------------------ 1. begin
    def begin(self, trial: optuna.Trial, arch: Architecture, *, epochs: int | None,
              reuse: bool = True) -> Candidate:
        """Record the candidate of ``trial`` and decide whether it needs training.

        Args:
            trial: The running trial.
            arch: Its architecture.
            epochs: Its training epochs (None: set later, when known).
            reuse: Whether an architecture trained before counts as a duplicate (False for
                KerasTuner's Hyperband, which trains one architecture for more epochs).
        """
        cost = self.costs(arch)
        trial.set_user_attr(TrialAttrs.ARCHITECTURE, arch.key)
        trial.set_user_attr(TrialAttrs.FLOPS, int(cost.flops))
        trial.set_user_attr(TrialAttrs.MACS, int(cost.macs))
        trial.set_user_attr(TrialAttrs.PARAMS, int(cost.params))
        latency = self.costs.latency_ms(arch)
        if latency is not None:
            trial.set_user_attr(TrialAttrs.LATENCY_MS, round(latency, 6))
        if epochs is not None:
            trial.set_user_attr(TrialAttrs.EPOCHS, int(epochs))
        candidate = Candidate(trial=trial, arch=arch, cost=cost)
        # A re-evaluation (``repeat_of``, set by the sampler) is trained again, not reused.
        repeat = TrialAttrs.REPEAT_OF in trial.user_attrs
        if not repeat and hasattr(trial, "_trial_id") and hasattr(trial, "storage"):
            # The sampler writes the mark to the storage while the trial is being created;
            # an optuna.Trial's user_attrs are a cache: read the storage as well.
            repeat = TrialAttrs.REPEAT_OF in trial.storage.get_trial_user_attrs(trial._trial_id)
        original = self._reuse(trial, arch.key) if reuse and not repeat else None
        if original is not None:
            candidate.values = (float(original.values[0]), float(original.values[1]))
            self._notify(TrialEvent(
                trial, arch, self._input_shape, self._num_classes,
                remark=f"Same architecture as trial {original.number}: its results are "
                "reused, its model and picture are there."))
        elif (why := self._over_budget(trial, cost, latency)) is not None:
            candidate.values = (0.0, self.costs.objective(arch))
            self._notify(TrialEvent(
                trial, arch, self._input_shape, self._num_classes, self._pictures(),
                remark=f"Not trained: {why}."))
        return candidate

    def evaluated(self, key: str, number: int) -> FrozenTrial | None:
        """The first complete, non-duplicate trial of architecture ``key`` other than ``number``."""
        for t in self.study.get_trials(deepcopy=False,
                                       states=(optuna.trial.TrialState.COMPLETE,)):
            if (t.number != number and t.user_attrs.get(TrialAttrs.ARCHITECTURE) == key
                    and TrialAttrs.DUPLICATE_OF not in t.user_attrs):
                return t
        return None

    def _reuse(self, trial: optuna.Trial, key: str) -> FrozenTrial | None:
        """Make ``trial`` a duplicate of the study's evaluation of ``key``, if there is one."""
        original = self.evaluated(key, trial.number)
        if original is None:
            return None
        for name in TrialAttrs.REUSED:
            if name in original.user_attrs:
                trial.set_user_attr(name, original.user_attrs[name])
        if TrialAttrs.EPOCHS in original.user_attrs:
            trial.set_user_attr(TrialAttrs.EPOCHS, original.user_attrs[TrialAttrs.EPOCHS])
        trial.set_user_attr(TrialAttrs.DUPLICATE_OF, original.number)
        for name, value in original.constraints.items():
            trial.set_constraint(name, value)
        return original

    def _over_budget(self, trial: optuna.Trial, cost: Cost, latency: float | None) -> str | None:
        """Set the budget constraint (FLOPs or latency); over budget, mark the trial infeasible
        (untrained) and say why."""
        if self.max_latency is not None and latency is not None:
            over = latency - float(self.max_latency)
            trial.set_constraint("latency_budget", float(over))
            why = f"{latency:.4f} ms > budget {float(self.max_latency):g} ms"
            remark = f"{latency:.4f} ms is over the latency budget of {self.max_latency:g} ms"
        elif self.max_flops is not None:
            over = cost.flops - self.max_flops
            trial.set_constraint("flops_budget", float(over))
            why = f"{cost.flops} FLOPs > budget {self.max_flops}"
            remark = f"{cost.flops:,} FLOPs is over the budget of {self.max_flops:,}"
        else:
            return None
        if over <= 0:
            return None
        trial.set_user_attr(TrialAttrs.INFEASIBLE, why)
        trial.set_user_attr(TrialAttrs.EPOCHS, 0)
        trial.set_user_attr(TrialAttrs.TRAIN_SECONDS, 0.0)
        return remark

    # ------------------------------------------------------------------ 2. trained
    def record_trained(self, candidate: Candidate, *, model: Any, accuracy: float,
                       accuracies: Sequence[float], train_seconds: float,
                       seconds: Mapping[str, float] | None = None) -> tuple[float, float]:
        """Store what training gave: the model (an artifact, unless None), accuracies, times.

        Args:
            candidate: From :meth:`begin`.
            model: The trained Keras model to store, or None (nothing to store).
            accuracy: The trial's accuracy (its first value).
            accuracies: One accuracy per seed (repeat).
            train_seconds: Seconds spent training.
            seconds: Wall time by phase so far (``storage``, ``annotate`` and ``total`` are
                added here).

        Returns:
            The trial's values: ``(accuracy, cost)``, the cost FLOPs or predicted ms.
        """
        trial = candidate.trial
        seconds = dict(seconds or {})
        stored_at = time.perf_counter()
        if model is not None:
            trial.set_user_attr(TrialAttrs.MODEL_ARTIFACT, self._save_model(trial, model))
        seconds["storage"] = time.perf_counter() - stored_at
        annotated_at = time.perf_counter()
        self._notify(TrialEvent(trial, candidate.arch, self._input_shape, self._num_classes,
                                self._pictures(), model=model))
        seconds["annotate"] = time.perf_counter() - annotated_at
        seconds["total"] = time.perf_counter() - candidate.started
        candidate.seconds = seconds
        values = [float(a) for a in accuracies] or [float(accuracy)]
        trial.set_user_attr(TrialAttrs.ACCURACY_STD,
                            float(statistics.stdev(values)) if len(values) > 1 else 0.0)
        trial.set_user_attr(TrialAttrs.ACCURACIES, values)
        trial.set_user_attr(TrialAttrs.TRAIN_SECONDS, round(float(train_seconds), 3))
        trial.set_user_attr(TrialAttrs.SECONDS, {k: round(float(v), 3)
                                                 for k, v in seconds.items()})
        return float(accuracy), self.costs.objective(candidate.arch)

    def _save_model(self, trial: optuna.Trial, model: Any) -> str:
        """Save a trained model as ``trialNNNNN.keras`` in the artifact store; its artifact id."""
        with tempfile.TemporaryDirectory(prefix="poolnas-") as tmp:
            path = os.path.join(tmp, f"trial{trial.number:05d}.keras")
            model.save(path)
            return optuna.artifacts.upload_artifact(
                artifact_store=self.handle.artifact_store(), file_path=path,
                study_or_trial=trial, mimetype="application/octet-stream",
            )

    # ------------------------------------------------------------------ 3. completed
    def completed(self, number: int, trials: list[FrozenTrial] | None = None) -> None:
        """After trial ``number`` was told COMPLETE: the front snapshot, then the study hooks."""
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        front = pareto_front(trials)
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        members = [(t.number, float(t.values[0]), float(t.values[1])) for t in front]
        volume = hypervolume([(a, f) for _, a, f in members],
                             reference_flops=self.reference_flops)
        self.handle.snapshots.record(self.study.study_name, number, members, volume,
                                     self.reference_flops, n_complete=done)
        for hook in self.hooks.on_front:
            self._guarded(hook, self.study, trials)

    # ------------------------------------------------------------------ hooks
    @property
    def _input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.settings["input_shape"])

    @property
    def _num_classes(self) -> int:
        return int(self.settings["num_classes"])

    def _pictures(self) -> ArtifactStore | None:
        return self.handle.artifact_store() if self.handle.artifact_dir is not None else None

    def _notify(self, event: TrialEvent) -> None:
        for hook in self.hooks.on_trial:
            self._guarded(hook, event)

    @staticmethod
    def _guarded(hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception as error:  # noqa: BLE001 - an observer never fails the trial
            logger.warning("poolnas: %s failed: %s: %s", getattr(hook, "__name__", hook),
                           type(error).__name__, error)
