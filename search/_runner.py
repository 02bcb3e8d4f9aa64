"""The Optuna loop: run or resume one study, trial after trial, alone or beside other workers.

:class:`SearchRunner` owns the loop and nothing it delegates: the study's creation and settings
(:mod:`._settings`), what a trial records (:class:`~poolnas.search.TrialRecorder`), the samplers
(:mod:`._samplers`), dead workers' trials (:mod:`._reclaim`), signals (:mod:`._signals`) and the
study lock (:mod:`._locks`). One trial is one architecture drawn from the
:class:`~poolnas.spaces.SearchSpace`; its two values are validation accuracy (maximize) and
FLOPs (minimize). :class:`TrialReport` is what the progress line of a finished trial shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from poolnas.evaluators import (
    CALIBRATION_ARCHITECTURES,
    LatencyTable,
    TrainingState,
    evaluate_architecture,
    evaluate_architectures,
    load_dataset,
    space_kernels,
    space_table,
)
from poolnas.search._config import SearchConfig
from poolnas.search._costs import CostModel
from poolnas.search._locks import StudyLock
from poolnas.search._multi_fidelity import (
    FullFidelityView,
    epochs_spent,
    lineage_root,
    next_promotion,
    trained_lineage,
)
from poolnas.search._pareto import pareto_front
from poolnas.search._reclaim import (
    POLL_SECONDS,
    AttrHeartbeat,
    WorkerIdentity,
    has_optuna_heartbeat,
    reclaim_dead_trials,
    retry_callback,
)
from poolnas.search._recorder import TrialHooks, TrialRecorder
from poolnas.search._samplers import make_sampler
from poolnas.search._settings import create_or_resume, settings_of, stored_settings
from poolnas.search._signals import GracefulStop
from poolnas.search._storage import StorageHandle, open_storage
from poolnas.search._surrogate import ParetoSurrogateSampler
from poolnas.search._trial_attrs import TrialAttrs
from poolnas.spaces import PoolnasError, freeze_startup_objects

if TYPE_CHECKING:
    from poolnas.evaluators import Dataset

#: Trials that fail one after another before the search gives up (a broken set-up, not bad luck).
MAX_CONSECUTIVE_FAILURES = 5
#: A start-up step that takes longer than this says what it is doing.
SLOW_STEP_SECONDS = 2.0


@contextlib.contextmanager
def announce_if_slow(what: str, say: Callable[[str], None] | None,
                     after: float = SLOW_STEP_SECONDS) -> Iterator[None]:
    """Run the body; if it takes more than ``after`` seconds, ``say(what + "…")`` meanwhile."""
    if say is None:
        yield
        return
    timer = threading.Timer(after, say, args=(f"{what}…",))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def auto_parallel(*, accelerator: bool | None = None) -> int:
    """``--parallel auto``: how many trials to train together in one fused step.

    Fusing pays where one small model leaves the device idle between its kernels: on an
    accelerator, 8 candidates (HFTA's setting; unmeasured here: ``benchmarks/gpu_check.sh``).
    On CPU cores, 1: there the cost that dominates a small trial is TensorFlow tracing each
    model's part of the step, single-threaded Python that fusing does not share, and the gain
    measured on 2 cores is small (``docs/benchmarks.md``, "Fused trials"); ``--parallel K``
    still fuses on a CPU when asked.

    Args:
        accelerator: Whether TensorFlow sees a GPU (None: ask TensorFlow).
    """
    if accelerator is None:
        import tensorflow as tf

        accelerator = bool(tf.config.list_physical_devices("GPU"))
    return 8 if accelerator else 1


@dataclass
class TrialReport:
    """What the progress line of one finished trial shows."""

    number: int
    key: str
    state: str
    accuracy: float | None = None
    flops: int | None = None
    latency_ms: float | None = None
    seconds: float = 0.0
    note: str = ""
    front_size: int = 0
    best_accuracy: float | None = None
    done: int = 0
    total: int = 0


class SearchRunner:
    """Runs (or resumes) one study. State: the study, its storage, data and recorder.

    Args:
        config: What to search, where, for how long.
        report: Called with a :class:`TrialReport` after each trial (the progress line).
        data: The data set, if already loaded.
        hooks: What runs as trials are recorded (the CLI passes the dashboards' notes).
        announce: Told what a start-up step is doing when it takes over 2 s (None: silent).

    Raises:
        PoolnasError: Bad data, storage or study settings; nothing was written then.
    """

    #: What proposes the candidates, when it is not Optuna's sampler; stored in the study's
    #: settings as ``engine`` (``keras-tuner:random``, …), and a resume with another is refused.
    engine: str | None = None

    def __init__(self, config: SearchConfig, *,
                 report: Callable[[TrialReport], None] | None = None,
                 data: Dataset | None = None, hooks: TrialHooks | None = None,
                 announce: Callable[[str], None] | None = None) -> None:
        self.config = config
        #: The rungs of a multi-fidelity search (``--min-epochs``), else None.
        self.schedule = config.schedule
        self.report = report or (lambda _: None)
        # Everything that can fail on user input fails here, before storage is touched.
        if data is None:
            with announce_if_slow(f"loading the data set {config.dataset!r}", announce):
                data = load_dataset(config.dataset, seed=config.seed, **config.data_options)
        self.data = data
        config.space.check_input_shape(self.data.input_shape)
        #: Trials trained together per fused step (``--parallel``; 1: one at a time).
        self.parallel = (config.parallel if config.parallel is not None
                         else auto_parallel())
        if self.engine is not None:
            self.parallel = 1  # Another engine (KerasTuner) proposes and trains one at a time.
        import keras  # noqa: F401  (imported before the freeze below)

        # Every trial clears Keras' session, a full garbage collection: keep it cheap.
        freeze_startup_objects()
        with announce_if_slow("opening the storage", announce):
            self.handle: StorageHandle = open_storage(config.storage, create=True,
                                                      artifacts=config.artifacts,
                                                      heartbeat_interval=config.heartbeat)
        try:
            self.costs = CostModel(self.data.input_shape, self.data.num_classes,
                                   input_scale=self.data.input_scale,
                                   input_offset=self.data.input_offset,
                                   latency=self._latency_table(announce))
            self._flops_of = self.costs.flops_of(config.space)
            with announce_if_slow(f"creating or resuming study {config.study!r} (the costs of "
                                  f"{config.space.size:,} architectures)", announce):
                self.study = create_or_resume(
                    self.handle, config.study,
                    config.study_settings(self.data, engine=self.engine),
                    new_costs=lambda: {**self.costs.study_costs(config.space),
                                       "artifacts": self._artifacts_recorded()},
                    sampler=self._sampler(config.seed),
                )
        except BaseException:
            self.handle.discard_if_new()  # A refused or interrupted start leaves no file.
            raise
        self.recorder = TrialRecorder(self.handle, self.study, settings_of(self.study),
                                      costs=self.costs, hooks=hooks)
        self.reference_flops = self.recorder.reference_flops
        self._failures = 0
        self._last_failure = ""
        self.timings: list[dict[str, float]] = []
        self.identity = WorkerIdentity.current()
        self.stop = GracefulStop()
        self._lock: StudyLock | None = None
        self._interrupted_trial: int | None = None
        self._current_trial: int | None = None
        #: The trials of a fused batch a signal interrupted (failed; queued again on the way out).
        self._interrupted_batch: list[int] = []
        self._in_batch = False
        self._free_slots = 0

    def _latency_table(self, announce: Callable[[str], None] | None) -> LatencyTable | None:
        """A latency study's kernel table: the one it stored, or (a new study) this machine's
        cached table with the space's missing kernels measured now."""
        config = self.config
        if config.cost != "latency":
            return None
        stored = stored_settings(self.handle, config.study)
        if stored is not None and "latency_table" in stored:
            return LatencyTable.from_dict(stored["latency_table"])
        shape, classes = self.data.input_shape, self.data.num_classes
        scaling = {"input_scale": self.data.input_scale, "input_offset": self.data.input_offset}
        kernels = space_kernels(config.space, shape, classes, **scaling)
        if config.latency_table is not None:
            table = LatencyTable.load(config.latency_table)
            missing = table.missing(kernels)
            chosen = table.subset(kernels)
            if missing or chosen.calibration is None:
                what = (f"{len(missing)} kernels of the space (e.g. {missing[0].key})" if missing
                        else "the space's calibration")
                raise PoolnasError(
                    f"latency table {config.latency_table} lacks {what}; fill it where it was "
                    "measured with `poolnas latency KEY --space SPACE --latency-table FILE` and "
                    "the data's --input-shape, --classes and --input-scale")
            return chosen
        with announce_if_slow(f"measuring the latency of {len(kernels)} kernels and calibrating "
                              f"on {CALIBRATION_ARCHITECTURES} architectures "
                              f"({config.latency_runtime}, 1 thread)", announce):
            return space_table(config.space, shape, classes, config.latency_runtime,
                               tolerance=config.latency_tolerance, **scaling)

    def _artifacts_recorded(self) -> str | None:
        """Where this study's models go, as its settings record it (absolute; None: nowhere)."""
        directory = self.handle.artifact_dir
        return None if directory is None else str(directory.resolve())

    # ------------------------------------------------------------------ objective
    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        """Train and record one trial's architecture: its ``(accuracy, flops)``."""
        if self.schedule is not None:
            return self._objective_rung(trial)
        arch = self.config.space.suggest(trial)
        candidate = self.recorder.begin(trial, arch, epochs=self.config.budget.epochs)
        if not candidate.needs_training:
            return candidate.values
        evaluation = evaluate_architecture(arch, self.data, self.config.budget,
                                           seed=self.recorder.seed(trial.number),
                                           interrupted=self.stop.signalled)
        values = self.recorder.record_trained(
            candidate, model=evaluation.model, accuracy=evaluation.accuracy,
            accuracies=evaluation.accuracies, train_seconds=evaluation.train_seconds,
            seconds=evaluation.seconds)
        self.timings.append(candidate.seconds)
        return values

    def _objective_rung(self, trial: optuna.Trial) -> tuple[float, float]:
        """One rung of a multi-fidelity search (:mod:`._multi_fidelity`): a new architecture
        trained to the lowest rung, or a promotion continued from its parent's checkpoint to
        the next. Below the top rung the trial ends PRUNED (``optuna.TrialPruned``)."""
        schedule = self.schedule
        arch = self.config.space.suggest(trial)
        attrs = trial.storage.get_trial_user_attrs(trial._trial_id)
        parent_number = attrs.get(TrialAttrs.PROMOTED_FROM)
        trials = self.study.get_trials(deepcopy=False)
        if parent_number is None:
            rung, state, history = 0, None, []
            seed = self.recorder.seed(trial.number)
        else:
            rung = int(attrs[TrialAttrs.RUNG])
            parent = next(t for t in trials if t.number == int(parent_number))
            history = list(parent.user_attrs[TrialAttrs.RUNG_ACCURACIES])
            seed = self.recorder.seed(lineage_root(trials, int(parent_number)))
        epochs = schedule.rungs[rung]
        candidate = self.recorder.begin(trial, arch, epochs=epochs,
                                        reuse=parent_number is None)
        if not candidate.needs_training:
            return candidate.values  # trained to the top rung before, or over the budget
        if parent_number is None:
            other = trained_lineage(trials, arch.key, trial.number)
            if other is not None:
                trial.set_user_attr(TrialAttrs.DUPLICATE_OF, other.number)
                raise optuna.TrialPruned(f"same architecture as trial {other.number}, which "
                                         "trains it at a rung")
        else:
            state = self._checkpoint(parent)
        trial.set_user_attr(TrialAttrs.RUNG, rung)
        budget = dataclasses.replace(self.config.budget, epochs=epochs)
        evaluation = evaluate_architecture(arch, self.data, budget, seed=seed,
                                           interrupted=self.stop.signalled, state=state)
        values = self.recorder.record_trained(
            candidate, model=evaluation.model, accuracy=evaluation.accuracy,
            accuracies=evaluation.accuracies, train_seconds=evaluation.train_seconds,
            seconds=evaluation.seconds)
        history.append(float(evaluation.accuracy))
        trial.set_user_attr(TrialAttrs.RUNG_ACCURACIES, history)
        trial.set_user_attr(TrialAttrs.EPOCHS_TRAINED, epochs)
        # Optuna refuses trial.report() in a multi-objective study, but its storages keep
        # intermediate values all the same: optuna-dashboard draws them as the trial's curve.
        for step, accuracy in zip(schedule.rungs, history):
            trial.storage.set_trial_intermediate_value(trial._trial_id, step, accuracy)
        self.timings.append(candidate.seconds)
        if rung < schedule.top:
            raise optuna.TrialPruned(f"rung {rung} ({epochs} epochs) done")
        return values

    def _checkpoint(self, parent: optuna.trial.FrozenTrial) -> TrainingState:
        """The training state a promotion continues: the parent trial's stored model."""
        artifact = parent.user_attrs.get(TrialAttrs.MODEL_ARTIFACT)
        if artifact is None:
            raise PoolnasError(f"trial {parent.number} stored no model to continue from")
        with tempfile.TemporaryDirectory(prefix="poolnas-") as tmp:
            path = os.path.join(tmp, f"trial{parent.number:05d}.keras")
            optuna.artifacts.download_artifact(artifact_store=self.handle.artifact_store(),
                                               file_path=path, artifact_id=artifact)
            return TrainingState.load(path, int(parent.user_attrs[TrialAttrs.EPOCHS_TRAINED]))

    # ------------------------------------------------------------------ after each trial
    def _after_trial(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        state = frozen.state.name.lower()
        key = frozen.user_attrs.get(TrialAttrs.ARCHITECTURE, "?")
        if frozen.state == optuna.trial.TrialState.FAIL:
            self._failures += 1
            self._last_failure = frozen.user_attrs.get(TrialAttrs.FAIL_REASON, "unknown error")
        elif frozen.state == optuna.trial.TrialState.COMPLETE:
            self._failures = 0
        trials = study.get_trials(deepcopy=False)
        front = pareto_front(trials)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        done = len(complete)
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            self.recorder.completed(frozen.number, trials)
            # The count is this trial's place among the complete ones, so that workers that
            # finish at once do not print the same count twice.
            place = sum(t.datetime_complete <= frozen.datetime_complete for t in complete)
        else:
            place = done
        note = ""
        if TrialAttrs.REPEAT_OF in frozen.user_attrs:
            note = f"another seed of trial {frozen.user_attrs[TrialAttrs.REPEAT_OF]}"
        elif TrialAttrs.DUPLICATE_OF in frozen.user_attrs:
            note = f"same as trial {frozen.user_attrs[TrialAttrs.DUPLICATE_OF]}"
        elif TrialAttrs.INFEASIBLE in frozen.user_attrs:
            note = "over the budget: " + str(frozen.user_attrs[TrialAttrs.INFEASIBLE])
        elif frozen.state == optuna.trial.TrialState.FAIL:
            note = frozen.user_attrs.get(TrialAttrs.FAIL_REASON, "failed")
        trained = frozen.values and TrialAttrs.INFEASIBLE not in frozen.user_attrs
        accuracy = frozen.values[0] if trained else None
        costed = bool(frozen.values)
        if self.schedule is not None and TrialAttrs.RUNG_ACCURACIES in frozen.user_attrs:
            rung = int(frozen.user_attrs[TrialAttrs.RUNG])
            accuracy = frozen.user_attrs[TrialAttrs.RUNG_ACCURACIES][-1]
            costed = True
            note = (f"rung {rung + 1}/{len(self.schedule.rungs)}, "
                    f"{frozen.user_attrs[TrialAttrs.EPOCHS_TRAINED]} epochs"
                    + (f", continues trial {frozen.user_attrs[TrialAttrs.PROMOTED_FROM]}"
                       if TrialAttrs.PROMOTED_FROM in frozen.user_attrs else ""))
        self.report(TrialReport(
            number=frozen.number, key=key, state=state,
            accuracy=accuracy,
            flops=frozen.user_attrs.get(TrialAttrs.FLOPS) if costed else None,
            latency_ms=frozen.user_attrs.get(TrialAttrs.LATENCY_MS) if costed else None,
            seconds=(frozen.duration.total_seconds() if frozen.duration else 0.0),
            note=note, front_size=len(front),
            best_accuracy=max((t.values[0] for t in front), default=None),
            done=place, total=self.config.trials,
        ))
        if done >= self.config.trials or self._failures >= MAX_CONSECUTIVE_FAILURES:
            self._stop_optimizing(study)

    def _reclaim_dead_trials(self, *, queue_again: bool = True) -> None:
        """Fail the trials of dead workers (and queue each again, unless told not to); report
        each (:func:`~poolnas.search.reclaim_dead_trials`)."""
        for number in reclaim_dead_trials(self.study, grace_period=2 * self.config.heartbeat,
                                          here=self.identity, queue_again=queue_again):
            dead = self.study.trials[number]
            reason = dead.user_attrs.get(TrialAttrs.FAIL_REASON,
                                         "its worker stopped sending heartbeats")
            self._report_failed(dead, reason + "; queued again" if queue_again else reason)

    def _report_failed(self, trial: optuna.trial.FrozenTrial, note: str) -> None:
        """The progress line of a trial failed outside the objective (its worker died)."""
        trials = self.study.get_trials(deepcopy=False)
        front = pareto_front(trials)
        self.report(TrialReport(
            number=trial.number, key=trial.user_attrs.get(TrialAttrs.ARCHITECTURE, "?"),
            state="fail",
            note=note, front_size=len(front),
            best_accuracy=max((t.values[0] for t in front), default=None),
            done=sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
            total=self.config.trials,
        ))

    def _stop_optimizing(self, study: optuna.Study) -> None:
        """End ``study.optimize`` after this trial (the KerasTuner engine stops its tuner)."""
        if self._in_batch:
            return  # No optimize loop runs a batch; run() sees the study done or failing.
        study.stop()

    # ------------------------------------------------------------------ run
    def complete_trials(self) -> int:
        return len(self.study.get_trials(deepcopy=False,
                                         states=(optuna.trial.TrialState.COMPLETE,)))

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop before its next trial (thread-safe)."""
        self.stop.request()

    def run(self) -> list[optuna.trial.FrozenTrial]:
        """Run until the study has ``trials`` complete trials in total (or the timeout).

        Several workers (processes, machines) may run one study. Each starts a trial only while
        it holds the study's :class:`~poolnas.search.StudyLock` and sees a free slot (complete
        plus running trials below ``trials``), so the study ends with exactly ``trials``
        complete trials. A worker without a free slot waits for the running trials: if one
        fails, or its worker died and it is reclaimed, the slot is free again. Before each trial
        the trials of dead workers are failed and queued again, and a queued trial runs first.
        Ctrl-C and SIGTERM stop cleanly (:class:`~poolnas.search.GracefulStop`).

        Returns:
            The Pareto front of the study.

        Raises:
            PoolnasError: Trials keep failing (the set-up, not one architecture, is broken).
            KeyboardInterrupt: A signal stopped the run. A trial it interrupted was failed and
                queued again; the rest of the study is as it was.
        """
        timeout = self.config.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = StudyLock(self.handle, self.config.study)
        with self.stop:
            try:
                while not self.stop.stopping and self._failures < MAX_CONSECUTIVE_FAILURES:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    lock.acquire()
                    try:
                        step = self._next_step()
                        if step == "run" and self._batch_size() > 1:
                            self._lock = lock  # Released once the batch's trials exist.
                            self._run_batch(self._batch_size())
                        elif step == "run":
                            self._lock = lock  # The objective releases it once it has begun.
                            self._run_one_trial()
                    finally:
                        self._lock = None
                        lock.release()
                    if step == "done":
                        break
                    if step == "wait":
                        self.stop.wait(POLL_SECONDS)
            except KeyboardInterrupt:
                self._queue_interrupted_trial()
                raise
        if self.stop.signal is not None:
            raise KeyboardInterrupt(f"stopped by {signal.Signals(self.stop.signal).name}")
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            raise PoolnasError(
                f"{self._failures} trials failed in a row, last because: {self._last_failure}"
            )
        return pareto_front(self.study.get_trials(deepcopy=False))

    def _next_step(self) -> str:
        """``"run"``, ``"wait"`` or ``"done"``; called while holding the study lock."""
        state = optuna.trial.TrialState
        self._reclaim_dead_trials()
        trials = self.study.get_trials(deepcopy=False)
        complete = sum(t.state == state.COMPLETE for t in trials)
        if complete >= self.config.trials:
            return "done"
        if (self.config.epoch_budget is not None
                and epochs_spent(trials, self.schedule) >= self.config.epoch_budget):
            return "done"
        if self.schedule is not None:
            return self._next_rung_step(trials, complete)
        if complete + sum(t.state == state.RUNNING for t in trials) >= self.config.trials:
            return "wait"  # Other workers' trials take the remaining slots.
        # The next trial (its number is the count so far: trials are made under the lock) draws
        # with a seed of its own, so that workers on one study, which share --seed, do not
        # replay each other's draws, and a resumed run does not replay the first one's. Not
        # the surrogate sampler, which already seeds each trial with the seed and its number,
        # nor the grid sampler: its seed shuffles the grid, and trial k takes point k of that
        # order, so every trial, worker and resume must see the one order of the study's seed
        # (a new order per trial proposed points twice while others were left).
        self._reseed_sampler(len(trials))
        self._free_slots = self.config.trials - complete - sum(t.state == state.RUNNING
                                                               for t in trials)
        return "run"

    def _next_rung_step(self, trials: list[optuna.trial.FrozenTrial], complete: int) -> str:
        """:meth:`_next_step` of a multi-fidelity search: enqueue a promotion (ASHA: the
        highest rung first) or let the sampler propose a new architecture at the lowest rung.
        Under the study lock, so no parent is promoted twice."""
        state = optuna.trial.TrialState
        top = self.schedule.top
        running = [t for t in trials if t.state in (state.RUNNING, state.WAITING)]
        # (A trial being created has no rung yet: it is a new architecture, rung 0.)
        at_top = sum(int(t.user_attrs.get(TrialAttrs.RUNG, 0)) == top for t in running)
        if complete + at_top >= self.config.trials:
            return "wait"  # The promotions under way to the top rung take the slots left.
        tried = {t.user_attrs.get(TrialAttrs.ARCHITECTURE) for t in trials
                 if t.state != state.FAIL} - {None}
        exhausted = len(tried) >= self.config.space.size
        promotion = next_promotion(trials, self.schedule, exhausted=exhausted)
        if promotion is not None:
            parent = next(t for t in trials if t.number == promotion.number)
            self.study.enqueue_trial(parent.params, user_attrs={
                TrialAttrs.PROMOTED_FROM: parent.number, TrialAttrs.RUNG: promotion.rung + 1,
            }, skip_if_exists=False)
            return "run"
        if exhausted and not any(t.state == state.WAITING for t in trials):
            # Every architecture was tried and every one promoted as far as it goes.
            return "wait" if running else "done"
        seed = (self.config.seed * 1_000_003 + len(trials)) % 2**32
        if not isinstance(self.study.sampler.inner,
                          (ParetoSurrogateSampler, optuna.samplers.GridSampler)):
            self.study.sampler = self._sampler(seed)
        return "run"

    def _reseed_sampler(self, number: int) -> None:
        """Give the sampler the seed of trial ``number`` (see :meth:`_next_step`)."""
        seed = (self.config.seed * 1_000_003 + number) % 2**32
        if not isinstance(getattr(self.study.sampler, "inner", self.study.sampler),
                          (ParetoSurrogateSampler, optuna.samplers.GridSampler)):
            self.study.sampler = self._sampler(seed)

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        sampler = make_sampler(self.config.sampler, self.config.space, seed,
                               flops_of=self._flops_of,
                               max_flops=(self.config.max_latency if self.config.cost == "latency"
                                          else self.config.max_flops),
                               # A re-evaluation would go through the rungs again: not offered
                               # in a multi-fidelity search.
                               reevaluate=self.config.reevaluate and self.schedule is None)
        # A multi-fidelity search's sampler learns from trials trained to --epochs only.
        return sampler if self.schedule is None else FullFidelityView(sampler)

    def _run_one_trial(self) -> None:
        """One trial through ``study.optimize`` (its heartbeat, retries and callbacks)."""
        self._current_trial = None
        try:
            self.study.optimize(self._objective_recording_failures, n_trials=1,
                                catch=(Exception,), callbacks=[self._after_trial],
                                gc_after_trial=True)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            # Optuna cannot finish a trial that another worker failed meanwhile: it took this
            # one for dead (its heartbeat came too late) and queued it again. Nothing is lost
            # but this attempt; any other error is a bug and propagates.
            taken = None if self._current_trial is None else \
                self.study._storage.get_trial(self._current_trial)
            if taken is None or taken.state != optuna.trial.TrialState.FAIL:
                raise
            self._report_failed(taken, "another worker took it for dead (its heartbeat was "
                                "late; raise --heartbeat); it is queued again")

    # ------------------------------------------------------------------ fused batches
    def _batch_size(self) -> int:
        """How many trials the next step trains together: ``--parallel``, at most the free
        slots and at most the failures still allowed in a row (1: one trial through
        ``study.optimize``, as without ``--parallel``)."""
        if self.schedule is not None or self.config.epoch_budget is not None:
            # A multi-fidelity search trains each rung's trial through its own path, and an
            # epoch budget is checked trial by trial.
            return 1
        return max(1, min(self.parallel, self._free_slots,
                          MAX_CONSECUTIVE_FAILURES - self._failures))

    def _run_batch(self, size: int) -> None:
        """Ask ``size`` trials, train their architectures in one fused step, tell each.

        Called while holding the study lock, which is released once the trials exist (as
        :meth:`_objective_recording_failures` does for one trial). Each trial is recorded
        through the :class:`~poolnas.search.TrialRecorder` as it would be alone: its own
        architecture, seed, values, artifact and callbacks (:meth:`_after_trial`); a trial
        whose training fails (diverges) fails alone. The sampler is asked ``size`` times
        before any trial is told; the trials asked earlier are RUNNING while it proposes the
        later ones. An architecture that comes twice in one batch is trained once: the later
        trial is begun after the earlier is told, and the recorder makes it a duplicate.
        """
        state = optuna.trial.TrialState
        storage = self.study._storage
        trials: list[optuna.Trial] = []
        archs: list[Any] = []
        try:
            for _ in range(size):
                self._reseed_sampler(len(self.study.get_trials(deepcopy=False)))
                with warnings.catch_warnings():
                    # Optuna warns that its heartbeat is meant for optimize(); this loop runs
                    # the heartbeat of each asked trial itself.
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = self.study.ask()
                trials.append(trial)
                trial.set_user_attr(TrialAttrs.WORKER, self.identity.as_attr())
                # Drawn now, with this trial's sampler seed; the next trial is proposed with
                # this one RUNNING and its architecture known.
                try:
                    archs.append(self.config.space.suggest(trial))
                except Exception as error:  # noqa: BLE001 - this trial fails alone
                    archs.append(error)
        finally:
            if self._lock is not None:
                self._lock.release()
        self._in_batch = True
        try:
            with contextlib.ExitStack() as beats:
                for trial in trials:
                    beats.enter_context(
                        optuna.storages._heartbeat.get_heartbeat_thread(trial._trial_id,
                                                                        storage)
                        if has_optuna_heartbeat(storage) else
                        AttrHeartbeat(storage, trial._trial_id, self.config.heartbeat))
                self._train_batch(trials, archs)
        except KeyboardInterrupt as error:
            why = f"interrupted: {self._stopped_by(error)}"
            for trial in trials:
                if storage.get_trial(trial._trial_id).state == state.RUNNING:
                    trial.set_user_attr(TrialAttrs.FAIL_REASON, why)
                    self.study.tell(trial, state=state.FAIL)
                    self._interrupted_batch.append(trial._trial_id)
            raise
        finally:
            self._in_batch = False
            gc.collect()

    def _train_batch(self, trials: list[optuna.Trial], archs: list[Any]) -> None:
        """Begin every trial, train those that need it together, record and tell each."""
        budget = self.config.budget
        candidates, later = [], []
        keys: set[str] = set()
        for trial, arch in zip(trials, archs):
            try:
                if isinstance(arch, Exception):
                    raise arch
                if arch.key in keys:
                    later.append((trial, arch))  # Begun once the first is told.
                    continue
                candidate = self.recorder.begin(trial, arch, epochs=budget.epochs)
            except Exception as error:  # noqa: BLE001 - this trial fails alone
                self._tell_failed(trial, error)
                continue
            if candidate.needs_training:
                keys.add(arch.key)
                candidates.append(candidate)
            else:
                self._tell(trial, values=candidate.values)
        try:
            outcomes = evaluate_architectures(
                [c.arch for c in candidates], self.data, budget,
                seeds=[self.recorder.seed(c.trial.number) for c in candidates],
                interrupted=self.stop.signalled) if candidates else []
        except KeyboardInterrupt:
            raise
        except Exception as error:  # noqa: BLE001 - the fused step itself failed
            if self.stop.signal is not None:
                raise KeyboardInterrupt(self._stopped_by(error)) from error
            outcomes = [error] * len(candidates)
        for candidate, outcome in zip(candidates, outcomes):
            self._record(candidate, outcome)
        for trial, arch in later:
            try:
                candidate = self.recorder.begin(trial, arch, epochs=budget.epochs)
                if not candidate.needs_training:
                    self._tell(trial, values=candidate.values)
                    continue
                outcome = evaluate_architecture(arch, self.data, budget,
                                                seed=self.recorder.seed(trial.number),
                                                interrupted=self.stop.signalled)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001 - this trial fails alone
                outcome = error
            self._record(candidate, outcome)

    def _record(self, candidate, outcome) -> None:
        """Record and tell one trained (or failed) candidate of a batch."""
        if isinstance(outcome, BaseException):
            self._tell_failed(candidate.trial, outcome)
            return
        try:
            values = self.recorder.record_trained(
                candidate, model=outcome.model, accuracy=outcome.accuracy,
                accuracies=outcome.accuracies, train_seconds=outcome.train_seconds,
                seconds=outcome.seconds)
        except Exception as error:  # noqa: BLE001 - e.g. the artifact store is full
            self._tell_failed(candidate.trial, error)
            return
        self.timings.append(candidate.seconds)
        self._tell(candidate.trial, values=values)

    def _tell_failed(self, trial: optuna.Trial, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}".strip()
        trial.set_user_attr(TrialAttrs.FAIL_REASON,
                            reason.splitlines()[0][:500] if reason else "error")
        self._tell(trial, state=optuna.trial.TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, *, values=None, state=None) -> None:
        """Tell one trial of a batch and run what runs after a trial."""
        try:
            # A sampler may end the optimize loop from its after_trial (the grid sampler does
            # when the grid is used up); Study.stop refuses outside one, so tell as if inside:
            # run() ends by itself when the study is done.
            local = self.study._thread_local
            inside, local.in_optimize_loop = local.in_optimize_loop, True
            try:
                frozen = self.study.tell(trial, values, state=state)
            finally:
                local.in_optimize_loop = inside
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            # Another worker failed it meanwhile (its heartbeat was late) and queued it again.
            taken = self.study._storage.get_trial(trial._trial_id)
            if taken.state != optuna.trial.TrialState.FAIL:
                raise
            self._report_failed(taken, "another worker took it for dead (its heartbeat was "
                                "late; raise --heartbeat); it is queued again")
            return
        self._after_trial(self.study, frozen)

    def _queue_interrupted_trial(self) -> None:
        """Queue the trial a signal interrupted again, so that a resume trains it first."""
        batch, self._interrupted_batch = self._interrupted_batch, []
        for trial_id in batch:
            frozen = self.study._storage.get_trial(trial_id)
            if frozen.state == optuna.trial.TrialState.FAIL:
                retry_callback(self.study._storage)(self.study, frozen)
        trial_id, self._interrupted_trial = self._interrupted_trial, None
        if trial_id is None:
            return
        storage = self.study._storage
        frozen = storage.get_trial(trial_id)
        if frozen.state == optuna.trial.TrialState.FAIL:
            retry_callback(storage)(self.study, frozen)

    def _stopped_by(self, error: BaseException) -> str:
        """``stopped by SIGINT`` (the signal that stopped the trial), else the error's text."""
        if self.stop.signal is not None:
            return f"stopped by {signal.Signals(self.stop.signal).name}"
        return str(error) or "KeyboardInterrupt"

    def _objective_recording_failures(self, trial: optuna.Trial) -> tuple[float, float]:
        self._current_trial = trial._trial_id
        try:
            # Named before other workers may look: none takes it for the trial of a dead one.
            trial.set_user_attr(TrialAttrs.WORKER, self.identity.as_attr())
        finally:
            if self._lock is not None:
                self._lock.release()  # The trial exists: the next worker may count and start.
        beat = (contextlib.nullcontext() if has_optuna_heartbeat(self.study._storage) else
                AttrHeartbeat(self.study._storage, trial._trial_id, self.config.heartbeat))
        try:
            with beat:
                return self.objective(trial)
        except optuna.TrialPruned:
            raise  # A multi-fidelity trial that ends below the top rung: not a failure.
        except KeyboardInterrupt as error:
            self._interrupted_trial = trial._trial_id
            trial.set_user_attr(TrialAttrs.FAIL_REASON, f"interrupted: {self._stopped_by(error)}")
            raise
        except Exception as error:
            if self.stop.signal is not None:
                # A signal arrived and the error is its doing: a second signal's
                # KeyboardInterrupt that landed inside TensorFlow's C++ code, which turned it
                # into another error (seen: a TypeError from nest.flatten).
                why = self._stopped_by(error)
                self._interrupted_trial = trial._trial_id
                trial.set_user_attr(TrialAttrs.FAIL_REASON, f"interrupted: {why}")
                raise KeyboardInterrupt(why) from error
            reason = f"{type(error).__name__}: {error}".strip()
            trial.set_user_attr(TrialAttrs.FAIL_REASON,
                                reason.splitlines()[0][:500] if reason else "error")
            raise


