"""A KerasTuner ``Oracle`` backed by an Optuna study: a true two-objective search in KerasTuner.

KerasTuner folds several objectives into one sum, so it has no Pareto front. With
:class:`OptunaOracle` a plain ``keras_tuner.Tuner`` and a
:class:`~poolnas.search.PoolNASHyperModel` run poolnas' search: an Optuna sampler (TPE by
default) proposes each architecture, KerasTuner trains it, and the study is told two values, the
tuner's validation accuracy and the candidate's FLOPs (counted by poolnas, not trained for)::

    tuner = keras_tuner.Tuner(
        oracle=OptunaOracle(storage="sqlite:///poolnas.db", study_name="kt", max_trials=20),
        hypermodel=PoolNASHyperModel(SearchSpace(), (8, 8, 1), 10, input_scale=1 / 16),
        directory="kt-runs", project_name="kt",
    )
    tuner.search(x, y, validation_data=(x_val, y_val), epochs=5)
    pareto_models = tuner.get_best_models(num_models=len(tuner.oracle.get_best_trials(None)))

The study is created or resumed by :func:`~poolnas.search._settings.create_or_resume` (it may
add trials to a study of ``poolnas search`` with the same space and data), and its trials are
recorded by a :class:`~poolnas.search.TrialRecorder` like those of ``poolnas search`` (the same
user attrs, the trained model as an artifact, a Pareto-front snapshot after each), so
``poolnas front``, ``poolnas export`` and ``poolnas dashboard`` work on the study; pass
``hooks=poolnas.dashboards.DASHBOARD_HOOKS`` for the dashboard's notes and pictures. A
candidate the study already trained is not trained again, and with ``max_flops`` a candidate
over the budget is not trained at all: both are completed KerasTuner trials at once (never
failures), the study records the second as infeasible.

The oracle learns its hypermodel from the ``HyperParameters`` the hypermodel declares
(``HYPERMODEL_ATTR``, a contract with :mod:`._hypermodel`), or from ``hypermodel=``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import keras_tuner
import optuna
from keras_tuner.engine.trial import Trial, TrialStatus

from poolnas.search._config import DEFAULT_STORAGE
from poolnas.search._costs import CostModel
from poolnas.search._pareto import pareto_front
from poolnas.search._recorder import TrialHooks, TrialRecorder
from poolnas.search._samplers import SAMPLERS, make_sampler
from poolnas.search._settings import check_resume, create_or_resume, settings_of
from poolnas.search._storage import StorageHandle, open_storage
from poolnas.search._trial_attrs import TrialAttrs
from poolnas.search.keras_tuner._hypermodel import HYPERMODEL_ATTR, PoolNASHyperModel
from poolnas.search.keras_tuner._live_trials import LiveTrial, RunningCandidate, last_line
from poolnas.spaces import PoolnasError, SearchSpace

if TYPE_CHECKING:
    from poolnas.spaces import Architecture

#: The ``engine`` of the settings of a study that an OptunaOracle created.
ENGINE = "keras-tuner:optuna-oracle"
#: Settings a study must share with the hypermodel for an OptunaOracle to add trials to it.
_SHARED_SETTINGS = ("space", "input_shape", "num_classes", "input_scale", "input_offset",
                    "max_flops")
#: KerasTuner's file of a trained trial's weights (``Tuner._get_checkpoint_fname``, Keras 3).
_CHECKPOINT = "checkpoint.weights.h5"


class OptunaOracle(keras_tuner.Oracle):
    """A ``keras_tuner.Oracle`` whose proposals come from a two-objective Optuna study.

    Use it with ``keras_tuner.Tuner(oracle=..., hypermodel=PoolNASHyperModel(...))``: the tuner
    tells the oracle its hypermodel when it declares the hypermodel's hyperparameters, and the
    oracle creates (or resumes) the study on the first trial. ``max_trials`` counts this
    tuner's trials, as in KerasTuner. The tuner's ``directory``/``project_name`` hold
    KerasTuner's own files (and its ``overwrite=True`` removes only them); the study and the
    trained models are in ``storage``.

    :meth:`get_best_trials` and so the tuner's ``get_best_models`` return the Pareto front of
    the trials this tuner trained, most accurate first.

    Args:
        storage: An Optuna storage URL (``sqlite:///poolnas.db``, PostgreSQL, MySQL) or a
            journal file (``.log``), as ``poolnas search --storage``.
        study_name: The study; an existing poolnas study of the same space is continued.
        max_trials: Trials this tuner runs (KerasTuner's meaning).
        sampler: An Optuna sampler, or ``tpe`` (default), ``surrogate`` (poolnas'
            :class:`~poolnas.search.ParetoSurrogateSampler`), ``auto``, ``nsga2``, ``random``,
            ``grid``.
        seed: Seeds a named sampler (and KerasTuner's oracle).
        max_flops: Candidates over this many FLOPs are recorded as infeasible, untrained.
        objective: The tuner's metric of validation accuracy (maximized).
        hypermodel: The :class:`~poolnas.search.PoolNASHyperModel`, when the oracle is used
            without a tuner that declares it.
        dataset: What the data are, for the study's settings and ``poolnas export``'s manifest.
        artifacts: Directory of the artifact store (default: beside a SQLite database).
        max_retries_per_trial: KerasTuner's retries of a trial that crashed.
        max_consecutive_failed_trials: KerasTuner's limit of failed trials in a row.
        hooks: What runs as trials are recorded; pass ``poolnas.dashboards.DASHBOARD_HOOKS``
            for optuna-dashboard's notes and pictures (default: none).

    Raises:
        PoolnasError: A bad option or storage.
    """

    def __init__(
        self,
        *,
        storage: str = DEFAULT_STORAGE,
        study_name: str = "poolnas",
        max_trials: int = 10,
        sampler: str | optuna.samplers.BaseSampler | None = None,
        seed: int | None = None,
        max_flops: int | None = None,
        objective: str | keras_tuner.Objective = "val_accuracy",
        hypermodel: PoolNASHyperModel | None = None,
        dataset: str | None = None,
        artifacts: str | None = None,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        hooks: TrialHooks | None = None,
    ) -> None:
        if not isinstance(study_name, str) or not study_name.strip():
            raise PoolnasError("study_name must be a non-empty name")
        if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
            raise PoolnasError(f"max_trials must be a positive integer, got {max_trials!r}")
        if max_flops is not None and (
            isinstance(max_flops, bool) or not isinstance(max_flops, int) or max_flops < 1
        ):
            raise PoolnasError(f"max_flops must be a positive integer, got {max_flops!r}")
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler) and (
            sampler not in SAMPLERS
        ):
            raise PoolnasError(
                f"unknown sampler {sampler!r}; pass an Optuna sampler or one of: "
                f"{', '.join(SAMPLERS)}"
            )
        if hypermodel is not None and not isinstance(hypermodel, PoolNASHyperModel):
            raise PoolnasError("hypermodel must be a poolnas.search.PoolNASHyperModel")
        try:
            super().__init__(
                objective=objective, max_trials=max_trials, seed=seed,
                max_retries_per_trial=max_retries_per_trial,
                max_consecutive_failed_trials=max_consecutive_failed_trials,
            )
        except (TypeError, ValueError) as error:
            raise PoolnasError(f"objective: {error}") from None
        # A list of objectives becomes KerasTuner's MultiObjective (one sum), which has a list.
        if hasattr(self.objective, "objectives") or self.objective.direction != "max":
            raise PoolnasError(
                f"the objective must be one validation accuracy to maximize (the first of the "
                f"study's two objectives), such as 'val_accuracy'; got {self.objective}"
            )
        self.storage = storage
        self.study_name = study_name
        self.max_flops = max_flops
        self.dataset = dataset
        self._sampler = sampler
        self._sampler_seed = seed
        self._hypermodel = hypermodel
        self.hooks = hooks
        # Validates the storage now, before any trial; the study is created on the first trial.
        self.handle: StorageHandle = open_storage(storage, create=True, artifacts=artifacts)
        self._study: optuna.Study | None = None
        self._space: SearchSpace | None = None
        self._recorder: TrialRecorder | None = None
        self._running: dict[str, RunningCandidate] = {}
        #: KerasTuner trial id → Optuna trial number, and the ids of the trials trained here.
        self._numbers: dict[str, int] = {}
        self._trained: set[str] = set()
        #: The sampler has nothing left to propose (a grid sampler that visited every point).
        self._exhausted = False

    # ------------------------------------------------------------------ the study
    @property
    def study(self) -> optuna.Study:
        """The Optuna study (created or loaded on first use).

        Raises:
            PoolnasError: The study is not a poolnas study of this space, or the oracle does not
                know the hypermodel yet and there is no study to learn the space from.
        """
        if self._study is None:
            self._study = self._open_study()
        return self._study

    @property
    def recorder(self) -> TrialRecorder:
        """The study's :class:`~poolnas.search.TrialRecorder` (opens the study on first use)."""
        self.study  # noqa: B018 - opens the study, which makes the recorder
        assert self._recorder is not None
        return self._recorder

    def _open_study(self) -> optuna.Study:
        hypermodel = self._hypermodel
        if hypermodel is None:
            storage = self.handle.optuna_storage
            if self.study_name not in optuna.study.get_all_study_names(storage):
                raise PoolnasError(
                    "OptunaOracle does not know the search space: use it in "
                    "keras_tuner.Tuner(oracle=..., hypermodel=PoolNASHyperModel(...)) or pass "
                    "hypermodel= to the oracle"
                )
            costs = None  # The recorder's, from the study's settings.
            # Only resumed: the study's own settings say what a trial is, but for the budget.
            study = create_or_resume(self.handle, self.study_name, None, cli=False)
            check_resume(self.study_name, settings_of(study), {"max_flops": self.max_flops},
                         keys=("max_flops",), cli=False)
        else:
            costs = CostModel(hypermodel.input_shape, hypermodel.num_classes,
                              input_scale=hypermodel.input_scale,
                              input_offset=hypermodel.input_offset)
            study = create_or_resume(
                self.handle, self.study_name, self._wanted(hypermodel),
                new_costs=lambda: costs.study_costs(hypermodel.space), keys=_SHARED_SETTINGS,
                cli=False,
            )
        settings = settings_of(study)
        self._space = SearchSpace.from_dict(settings["space"], source=f"study {self.study_name!r}")
        self._recorder = TrialRecorder(self.handle, study, settings, costs=costs,
                                       hooks=self.hooks)
        sampler = self._sampler
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            sampler = make_sampler(sampler or "tpe", self._space, self._sampler_seed,
                                   flops_of=self._recorder.costs.flops_of(self._space),
                                   max_flops=settings.get("max_flops"),
                                   # KerasTuner decides what it trains: no re-evaluations.
                                   reevaluate=False)
        study.sampler = sampler
        return study

    def _wanted(self, hypermodel: PoolNASHyperModel) -> dict[str, Any]:
        return {
            "engine": ENGINE,
            "dataset": self.dataset or "the data given to the KerasTuner tuner",
            "data_options": {},
            "budget": None,  # KerasTuner's search() arguments decide the training
            "space": hypermodel.space.to_dict(),
            "input_shape": list(hypermodel.input_shape),
            "num_classes": int(hypermodel.num_classes),
            "input_scale": float(hypermodel.input_scale),
            "input_offset": float(hypermodel.input_offset),
            "max_flops": self.max_flops,
        }

    # ------------------------------------------------------------------ the Oracle contract
    def update_space(self, hyperparameters: keras_tuner.HyperParameters) -> None:
        """KerasTuner's ``update_space``; also learns the hypermodel that declared the space."""
        hypermodel = getattr(hyperparameters, HYPERMODEL_ATTR, None)
        if self._hypermodel is None and isinstance(hypermodel, PoolNASHyperModel):
            self._hypermodel = hypermodel
        super().update_space(hyperparameters)

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """Ask the study for the next architecture; its parameters are the trial's values."""
        study = self.study
        if self._exhausted:
            return {"status": TrialStatus.STOPPED}
        running = self._start(trial_id, LiveTrial(study))
        return {"status": TrialStatus.RUNNING,
                "values": self._space.params_of(running.candidate.arch)}

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        """KerasTuner's ``create_trial``, which completes the candidates that need no training
        (duplicates, and those over the FLOPs budget) at once and proposes the next one."""
        while True:
            trial = super().create_trial(tuner_id)
            if trial.status != TrialStatus.RUNNING:
                return trial
            running = self._running.get(trial.trial_id)
            if running is None:  # A retry, or a trial of a reloaded KerasTuner project.
                params = {name: trial.hyperparameters.values[name]
                          for name in self._space_of().parameters()}
                running = self._start(trial.trial_id, LiveTrial(self.study, params=params))
            candidate = running.candidate
            if candidate.needs_training:
                if self._hypermodel is not None:
                    self._hypermodel.fits.clear()
                candidate.started = time.perf_counter()
                return trial
            # A KerasTuner trial that is complete, and whose score is never the best.
            infeasible = TrialAttrs.INFEASIBLE in candidate.trial.user_attrs
            accuracy = float("-inf") if infeasible else candidate.values[0]
            self.update_trial(trial.trial_id, {self.objective.name: accuracy})
            trial.status = TrialStatus.COMPLETED
            self.end_trial(trial)
            self.save()  # No tuner saves after this trial: a reload must not run it again.

    @keras_tuner.synchronized
    def end_trial(self, trial: Trial) -> None:
        """KerasTuner's ``end_trial``, then the study is told (and a front snapshot written)."""
        try:
            super().end_trial(trial)
        finally:
            self._finish(trial.trial_id)

    def get_best_trials(self, num_trials: int | None = 1) -> list[Trial]:
        """The Pareto-optimal trials among those this tuner trained, most accurate first.

        Args:
            num_trials: How many (None: the whole front).
        """
        trained = {self._numbers[i]: i for i in self._trained
                   if i in self._numbers and self.trials[i].status == TrialStatus.COMPLETED}
        if not trained:
            return []
        frozen = [t for t in self.study.get_trials(deepcopy=False) if t.number in trained]
        front = sorted(pareto_front(frozen), key=lambda t: (-t.values[0], t.values[1]))
        best = [self.trials[trained[t.number]] for t in front]
        return best if num_trials is None else best[:num_trials]

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["poolnas"] = {"optuna_trials": dict(self._numbers), "trained": sorted(self._trained)}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        own = state.get("poolnas", {})
        self._numbers = {str(k): int(v) for k, v in own.get("optuna_trials", {}).items()}
        self._trained = set(own.get("trained", ()))

    # ------------------------------------------------------------------ one trial
    def _space_of(self) -> SearchSpace:
        self.study  # noqa: B018 - opens the study, which sets the space
        assert self._space is not None
        return self._space

    def _start(self, trial_id: str, live: LiveTrial) -> RunningCandidate:
        """Draw (or take) the architecture of a new Optuna trial and decide if it needs training."""
        try:
            arch = self._space_of().suggest(live.trial)
            live.trial.set_user_attr(TrialAttrs.KERAS_TUNER_TRIAL, trial_id)
            candidate = self.recorder.begin(live.trial, arch, epochs=None)
        except BaseException as error:
            live.tell(None, reason=f"{type(error).__name__}: {error}")
            raise
        running = RunningCandidate(live=live, candidate=candidate)
        self._running[trial_id] = running
        return running

    def _finish(self, trial_id: str) -> None:
        running = self._running.pop(trial_id, None)
        if running is None:
            return
        live, trial = running.live, self.trials[trial_id]
        self._numbers[trial_id] = live.number
        if trial.status != TrialStatus.COMPLETED:
            reason = last_line(trial.message, f"KerasTuner trial {trial.status}")
            self._exhausted |= live.tell(None, reason=reason)
            return
        try:
            values = running.candidate.values or self._record_trained(trial, running)
        except BaseException as error:
            live.tell(None, reason=f"{type(error).__name__}: {error}")
            raise
        self._exhausted |= live.tell(values)
        self.recorder.completed(live.number)

    def _record_trained(self, trial: Trial,
                        running: RunningCandidate) -> tuple[float, float]:
        """Record what KerasTuner trained: its score, the model (its best checkpoint), times."""
        candidate = running.candidate
        accuracy = float(trial.score)
        fits = list(self._hypermodel.fits) if self._hypermodel is not None else []
        name = self.objective.name
        accuracies = [max(f["history"][name]) for f in fits if f["history"].get(name)]
        seconds = {"train": sum(f["seconds"] for f in fits)} if fits else {}
        if fits:
            candidate.trial.set_user_attr(TrialAttrs.EPOCHS, max(f["epochs"] for f in fits))
        # Without the hypermodel's timings, the whole trial counts as training.
        train_seconds = seconds.get("train", time.perf_counter() - candidate.started)
        loaded_at = time.perf_counter()
        model = self._trained_model(trial, candidate.arch)
        seconds["load"] = time.perf_counter() - loaded_at
        values = self.recorder.record_trained(
            candidate, model=model, accuracy=accuracy, accuracies=accuracies,
            train_seconds=train_seconds, seconds=seconds)
        self._trained.add(trial.trial_id)
        return values

    def _trained_model(self, trial: Trial, arch: Architecture) -> Any:
        """The trial's model with KerasTuner's checkpoint of it (its best epoch), or None."""
        directory = getattr(self, "_directory", None)
        if directory is None:
            return None
        path = os.path.join(self._project_dir, f"trial_{trial.trial_id}", _CHECKPOINT)
        if not os.path.exists(path):
            return None
        hypermodel = self._hypermodel
        model = hypermodel.last_model if hypermodel is not None else None
        if model is None or not hypermodel.fits or (
            hypermodel.fits[-1]["architecture"] != arch.key
        ):
            settings = self.recorder.settings
            hypermodel = hypermodel or PoolNASHyperModel(
                self._space, tuple(settings["input_shape"]), int(settings["num_classes"]),
                input_scale=float(settings["input_scale"]),
                input_offset=float(settings["input_offset"]),
            )
            model = hypermodel.build(trial.hyperparameters)
        model.load_weights(path)  # the trained model, or a new one: the best epoch's weights
        return model
