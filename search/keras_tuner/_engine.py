"""``poolnas search --engine keras-tuner``: a KerasTuner tuner searches, poolnas records.

:class:`KerasTunerRunner` is a :class:`~poolnas.search.SearchRunner` whose candidates come from
one of KerasTuner's own tuners (``RandomSearch``, ``BayesianOptimization`` or ``Hyperband``)
over the same space and data, trained through :class:`~poolnas.search.PoolNASHyperModel` with
the same budget (epochs, batch size, optimizer, repeats as KerasTuner's executions per trial,
the same per-trial seed, :meth:`~poolnas.search.TrialRecorder.seed`). Each KerasTuner trial
becomes a trial of the study, recorded by the runner's :class:`~poolnas.search.TrialRecorder`
like the CLI's (user attrs, the trained model as an artifact, a Pareto snapshot after each), so
both engines can be compared on one dashboard. The mixin :class:`_Recording` hooks a tuner's
``on_trial_begin``/``run_trial``/``on_trial_end`` to the runner's
``_begin``/``_untrained``/``_end``.

What KerasTuner decides stays KerasTuner's: the tuner's score is the best epoch's validation
accuracy and the stored model is that epoch's checkpoint; ``Hyperband`` trains for up to
``--epochs`` and continues the best trials of a round (``TrialAttrs.CONTINUES``), so one
architecture trained again is no duplicate there. Candidates over ``--max-flops`` are not
trained: KerasTuner sees a completed trial of accuracy 0, the study an infeasible one.
KerasTuner's project folder (its trial files and checkpoints) is a temporary folder, or a new
sub-folder of ``--tuner-dir``; nothing that exists is overwritten.

:data:`TUNERS` is importable without KerasTuner (the CLI's parser lists it).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from poolnas.search._config import SearchConfig
from poolnas.search._pareto import pareto_front
from poolnas.search._runner import MAX_CONSECUTIVE_FAILURES, SearchRunner, TrialReport
from poolnas.search._trial_attrs import TrialAttrs
from poolnas.search.keras_tuner._live_trials import (
    FixedSampler,
    LiveTrial,
    RunningCandidate,
    last_line,
)
from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    import optuna

    from poolnas.evaluators import Dataset
    from poolnas.search._recorder import TrialHooks
    from poolnas.search.keras_tuner._hypermodel import PoolNASHyperModel

#: ``--tuner`` choices.
TUNERS = ("random", "bayesian", "hyperband")
#: The tuner's objective: PoolNASHyperModel compiles an ``accuracy`` metric.
OBJECTIVE = "val_accuracy"
#: Hyperband's reduction factor (KerasTuner's default).
HYPERBAND_FACTOR = 3


class KerasTunerRunner(SearchRunner):
    """Runs (or resumes) a study whose candidates a KerasTuner tuner proposes.

    ``config.trials`` is, as for the CLI, the number of complete trials the study ends with.
    ``config.sampler`` is not used. The study's settings name the engine
    (``keras-tuner:random``, …), and a resume with another engine or tuner is refused.

    Args:
        config: The search configuration (storage, study, space, data, budget, seed, …).
        tuner: ``random``, ``bayesian`` or ``hyperband``.
        directory: Where KerasTuner's project folder goes (a new sub-folder); None: a
            temporary folder, removed at the end.
        report: Called with a :class:`~poolnas.search.TrialReport` after each trial.
        data: The data set, if already loaded.
        hooks: What runs as trials are recorded (the CLI passes the dashboards' notes).
        announce: Told what a start-up step is doing when it takes over 2 s (None: silent).

    Raises:
        PoolnasError: Unknown tuner, a missing ``directory``, or anything ``SearchRunner``
            refuses.
    """

    def __init__(self, config: SearchConfig, *, tuner: str = "random",
                 directory: str | os.PathLike[str] | None = None,
                 report: Callable[[TrialReport], None] | None = None,
                 data: Dataset | None = None, hooks: TrialHooks | None = None,
                 announce: Callable[[str], None] | None = None) -> None:
        if tuner not in TUNERS:
            raise PoolnasError(f"unknown tuner {tuner!r}; choose one of: {', '.join(TUNERS)}")
        if directory is not None and not os.path.isdir(directory):
            raise PoolnasError(f"--tuner-dir {str(directory)!r} is not an existing directory")
        self.tuner_name = tuner
        self.engine = f"keras-tuner:{tuner}"
        self.directory = None if directory is None else os.fspath(directory)
        super().__init__(config, report=report, data=data, hooks=hooks, announce=announce)
        self.study.sampler = FixedSampler()
        self.hypermodel = self._hypermodel()
        self.project_dir: str | None = None
        self._tuner: Any = None
        self._running: dict[str, RunningCandidate] = {}
        self._numbers: dict[str, int] = {}
        self._deadline: float | None = None

    def _hypermodel(self) -> PoolNASHyperModel:
        from poolnas.search.keras_tuner._hypermodel import PoolNASHyperModel

        budget = self.config.budget
        return PoolNASHyperModel(
            self.config.space, self.data.input_shape, self.data.num_classes,
            input_scale=self.data.input_scale, input_offset=self.data.input_offset,
            optimizer=budget.make_optimizer, augment=budget.augment,
        )

    # ------------------------------------------------------------------ run
    def run(self) -> list[optuna.trial.FrozenTrial]:
        """Run the tuner until the study has ``trials`` complete trials (or the timeout).

        Returns:
            The Pareto front of the study.

        Raises:
            PoolnasError: Trials keep failing (the set-up, not one architecture, is broken).
        """
        # A run killed mid-trial left its trial RUNNING; the tuner proposes its own candidates
        # and would never run a queued copy, so it is only failed.
        self._reclaim_dead_trials(queue_again=False)
        remaining = self.config.trials - self.complete_trials()
        if remaining > 0:
            timeout = self.config.timeout
            self._deadline = None if timeout is None else time.monotonic() + timeout
            budget = self.config.budget
            with self._project() as (directory, project_name):
                self._tuner = self._make_tuner(directory, project_name, remaining)
                try:
                    self._tuner.search(
                        self.data.train_dataset(budget.batch_size, seed=self.config.seed),
                        validation_data=self.data.val_dataset(budget.batch_size),
                        epochs=budget.epochs, shuffle=False, verbose=0,
                    )
                except BaseException as error:
                    for running in self._running.values():
                        running.live.tell(None, reason=f"{type(error).__name__}: {error}")
                    self._running.clear()
                    raise
                finally:
                    self._tuner = None
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            raise PoolnasError(
                f"{self._failures} trials failed in a row, last because: {self._last_failure}"
            )
        return pareto_front(self.study.get_trials(deepcopy=False))

    @contextlib.contextmanager
    def _project(self) -> Iterator[tuple[str, str]]:
        """KerasTuner's ``(directory, project_name)``: always a folder that did not exist."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.config.study).strip("._") or "study"
        if self.directory is None:
            with tempfile.TemporaryDirectory(prefix="poolnas-keras-tuner-") as tmp:
                self.project_dir = os.path.join(tmp, name)
                yield tmp, name
            return
        number = 1
        while os.path.exists(os.path.join(self.directory, f"{name}-{number}")):
            number += 1
        self.project_dir = os.path.join(self.directory, f"{name}-{number}")
        yield self.directory, f"{name}-{number}"

    def _make_tuner(self, directory: str, project_name: str, trials: int) -> Any:
        import keras_tuner

        budget = self.config.budget
        classes = {"random": keras_tuner.RandomSearch,
                   "bayesian": keras_tuner.BayesianOptimization,
                   "hyperband": keras_tuner.Hyperband}
        base = classes[self.tuner_name]
        options: dict[str, Any] = {
            # KerasTuner takes seed 0 for "no seed"; poolnas' seeds start at 0.
            "seed": self.config.seed + 1,
            "executions_per_trial": budget.repeats,
            # poolnas counts failures itself (the CLI's rule) and then stops the tuner.
            "max_consecutive_failed_trials": 2**31,
        }
        if self.tuner_name == "hyperband":
            options.update(max_epochs=budget.epochs, factor=HYPERBAND_FACTOR,
                           hyperband_iterations=None)
        else:
            options["max_trials"] = trials
        recording = type(f"Recording{base.__name__}", (_Recording, base), {})
        tuner = recording(self.hypermodel, objective=OBJECTIVE, directory=directory,
                          project_name=project_name, overwrite=False, **options)
        tuner.runner = self
        tuner.oracle.max_trials = trials
        return tuner

    # ------------------------------------------------------------------ one trial
    def _begin(self, trial: Any) -> None:
        """KerasTuner starts ``trial``: open its Optuna trial with the same architecture."""
        hp = trial.hyperparameters
        arch = self.hypermodel.architecture(hp)
        self.study.sampler.params = self.config.space.params_of(arch)
        live = LiveTrial(self.study, identity=self.identity)
        try:
            self.config.space.suggest(live.trial)
            live.trial.set_user_attr(TrialAttrs.KERAS_TUNER_TRIAL, trial.trial_id)
            parent = hp.values.get("tuner/trial_id")
            if parent is not None and parent in self._numbers:
                live.trial.set_user_attr(TrialAttrs.CONTINUES, self._numbers[parent])
            # Hyperband trains one architecture for more and more epochs: not a duplicate.
            candidate = self.recorder.begin(
                live.trial, arch,
                epochs=int(hp.values.get("tuner/epochs", self.config.budget.epochs)),
                reuse=self.tuner_name != "hyperband",
            )
        except BaseException as error:
            live.tell(None, reason=f"{type(error).__name__}: {error}")
            raise
        self._running[trial.trial_id] = RunningCandidate(live=live, candidate=candidate)
        self.hypermodel.fits.clear()
        # The CLI's seed for this trial's initial weights.
        self.hypermodel.seed = self.recorder.seed(live.number)

    def _untrained(self, trial: Any) -> dict[str, float] | None:
        """KerasTuner's result for a candidate that is not trained, or None to train it."""
        running = self._running.get(trial.trial_id)
        if running is None or running.candidate.needs_training:
            return None
        return {OBJECTIVE: running.candidate.values[0]}

    def _end(self, tuner: Any, trial: Any) -> None:
        """KerasTuner ended ``trial``: tell its Optuna trial; the runner snapshots and reports."""
        running = self._running.pop(trial.trial_id, None)
        if running is None:
            return
        live = running.live
        self._numbers[trial.trial_id] = live.number
        trial = tuner.oracle.get_trial(trial.trial_id)
        if trial.status != "COMPLETED":
            live.tell(None, reason=last_line(trial.message, f"KerasTuner trial {trial.status}"))
        else:
            try:
                values = running.candidate.values or self._record_trained(tuner, trial, running)
            except BaseException as error:
                live.tell(None, reason=f"{type(error).__name__}: {error}")
                raise
            live.tell(values)
        self._after_trial(self.study, live.frozen())
        self._limit(tuner)

    def _record_trained(self, tuner: Any, trial: Any,
                        running: RunningCandidate) -> tuple[float, float]:
        """Record what KerasTuner trained: its score, the best epoch's model, the timings."""
        candidate = running.candidate
        accuracy = float(trial.score)
        fits = list(self.hypermodel.fits)
        accuracies = [max(f["history"][OBJECTIVE]) for f in fits if f["history"].get(OBJECTIVE)]
        seconds = {"train": sum(f["seconds"] for f in fits)}
        loaded_at = time.perf_counter()
        model = tuner.load_model(trial)  # the best epoch's checkpoint, as KerasTuner scores it
        seconds["load"] = time.perf_counter() - loaded_at
        values = self.recorder.record_trained(
            candidate, model=model, accuracy=accuracy, accuracies=accuracies,
            train_seconds=seconds["train"], seconds=seconds)
        self.timings.append(candidate.seconds)
        return values

    def _limit(self, tuner: Any) -> None:
        """Let the tuner run as many more trials as the study still needs (none to stop it)."""
        remaining = self.config.trials - self.complete_trials()
        if self._failures >= MAX_CONSECUTIVE_FAILURES or (
            self._deadline is not None and time.monotonic() >= self._deadline
        ):
            remaining = 0
        tuner.oracle.max_trials = len(tuner.oracle.trials) + max(remaining, 0)

    def _stop_optimizing(self, study: optuna.Study) -> None:
        # There is no study.optimize here; _limit stops the tuner.
        pass


class _Recording:
    """Mixed into a KerasTuner tuner class: its trials are recorded by a KerasTunerRunner."""

    runner: KerasTunerRunner

    def on_trial_begin(self, trial: Any) -> None:
        super().on_trial_begin(trial)  # type: ignore[misc]
        self.runner._begin(trial)

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        untrained = self.runner._untrained(trial)
        if untrained is not None:
            return untrained
        return super().run_trial(trial, *args, **kwargs)  # type: ignore[misc]

    def on_trial_end(self, trial: Any) -> None:
        try:
            super().on_trial_end(trial)  # type: ignore[misc]
        finally:
            self.runner._end(self, trial)
