"""A KerasTuner ``Oracle`` backed by an Optuna study: Optuna's samplers and a true Pareto front.

:class:`OptunaOracle` takes the arguments of KerasTuner's ``RandomSearchOracle`` (plus
``storage``, ``study_name`` and ``sampler``) and can replace it in any tuner; :class:`OptunaSearch`
is ``keras_tuner.RandomSearch`` with it. The Optuna study is the one record of the search:
every KerasTuner trial is an Optuna trial (user attr ``keras_tuner_trial``), so
optuna-dashboard reads it, and a resumed tuner takes what was tried from it. The default
storage is ``optuna.db`` in the tuner's project folder, so ``overwrite=False`` resumes the study
as KerasTuner resumes its own files (and ``overwrite=True`` starts both anew).

Two kinds of search space:

- **General** (any ``build_model(hp)`` or ``HyperModel``): each KerasTuner hyperparameter is
  sampled from an Optuna distribution (:mod:`._distributions`), by TPE unless ``sampler=``
  says otherwise; the objectives (one, or a list: a multi-objective study) are the study's.
- **poolnas** (:class:`~poolnas.search.PoolNASHyperModel`): the study is a poolnas study
  (validation accuracy, FLOPs), created or resumed by
  :func:`~poolnas.search._settings.create_or_resume` and recorded by a
  :class:`~poolnas.search.TrialRecorder` like ``poolnas search``'s (the same user attrs, the
  trained model as an artifact, a Pareto-front snapshot after each), so ``poolnas front``,
  ``export`` and ``dashboard`` work on it. A candidate the study already trained is not
  trained again, and one over ``max_flops`` not at all: both are completed KerasTuner trials
  at once (never failures). poolnas' own samplers propose, as ``poolnas search``'s.

What must stay true:

- The study is told a trial's end before KerasTuner's display asks for the best trial, so
  "Best … So Far" includes the trial just ended.
- :meth:`OptunaOracle.get_best_trials` ranks by Pareto fronts (non-dominated sorting, then
  crowding distance, :func:`~poolnas.search._pareto.rank_by_fronts`); with one objective that
  is KerasTuner's order.
- A trial whose process died is failed in the study when the study is next opened, and its
  KerasTuner trial is retried by the next run within ``max_retries_per_trial`` (the interrupted
  run counts as one).
- A new proposal is one the study has not tried: a sampler's repeats are drawn again, then
  KerasTuner's random draw of an untried configuration; none left stops the search.

The oracle learns a poolnas hypermodel from the ``HyperParameters`` it declares
(``HYPERMODEL_ATTR``, a contract with :mod:`._hypermodel`), or from ``hypermodel=``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras_tuner
import optuna
from keras_tuner.engine.trial import Trial, TrialStatus

from poolnas.search._costs import CostModel
from poolnas.search._pareto import pareto_front, rank_by_fronts
from poolnas.search._reclaim import WorkerIdentity
from poolnas.search._recorder import TrialHooks, TrialRecorder
from poolnas.search._samplers import SAMPLERS, make_sampler
from poolnas.search._settings import (
    as_json,
    check_resume,
    create_or_resume,
    create_or_resume_general,
    settings_of,
    trial_seed,
)
from poolnas.search._storage import StorageHandle, open_storage
from poolnas.search._trial_attrs import STUDY_ATTR, TrialAttrs
from poolnas.search.keras_tuner._distributions import VALUES_ATTR, Proposal
from poolnas.search.keras_tuner._hypermodel import HYPERMODEL_ATTR, PoolNASHyperModel
from poolnas.search.keras_tuner._live_trials import (
    LiveTrial,
    RunningCandidate,
    UntriedSampler,
    last_line,
)
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
#: The study's SQLite file in the tuner's project folder (the default storage).
DEFAULT_DB = "optuna.db"
#: Named samplers of a general space (a poolnas space has :data:`SAMPLERS`).
GENERAL_SAMPLERS = ("tpe", "random", "nsga2", "auto")
#: Why a trial whose process died was failed.
_DIED = "its process ended before the trial did (killed or crashed)"


class OptunaOracle(keras_tuner.Oracle):
    """A ``keras_tuner.Oracle`` whose proposals and results live in an Optuna study.

    Drop it in wherever ``RandomSearchOracle`` is used: the first eight arguments are
    ``RandomSearchOracle``'s, in its order, with its defaults and meaning. ``max_trials``
    counts this tuner's trials.

    :meth:`get_best_trials` and with it the tuner's ``get_best_models``,
    ``get_best_hyperparameters`` and ``results_summary`` rank trials by Pareto fronts (with one
    objective: by the objective).

    Args:
        objective: KerasTuner's objective: a name, a ``keras_tuner.Objective``, or a list of
            them (a multi-objective study with a true Pareto front); None: the value returned
            by ``run_trial``/``HyperModel.fit``, minimized. A poolnas space takes one
            validation accuracy to maximize (FLOPs is the study's second objective); None
            there means ``val_accuracy``.
        max_trials: Trials this tuner runs (None: no limit).
        seed: Seeds the sampler (and KerasTuner's random fallback).
        hyperparameters: KerasTuner's: a ``HyperParameters`` that overrides or declares entries.
        allow_new_entries: KerasTuner's: whether the hypermodel may add entries.
        tune_new_entries: KerasTuner's: whether added entries are tuned (else their default).
        max_retries_per_trial: KerasTuner's retries of a trial that crashed or was killed.
        max_consecutive_failed_trials: KerasTuner's limit of failed trials in a row.
        storage: An Optuna storage URL (SQLite, PostgreSQL, MySQL) or a journal file
            (``.log``); default: ``optuna.db`` in the tuner's project folder.
        study_name: The study (default: the tuner's ``project_name``).
        sampler: An Optuna sampler, or a name: ``tpe`` (default for a general space),
            ``random``, ``nsga2``; for a poolnas space also poolnas' ``surrogate``, ``auto``,
            ``grid`` (default ``tpe``, as ``poolnas search``).
        max_flops: (poolnas space) Candidates over this many FLOPs are recorded as infeasible,
            untrained.
        hypermodel: (poolnas space) The :class:`~poolnas.search.PoolNASHyperModel`, when the
            oracle is used without a tuner that declares it.
        dataset: (poolnas space) What the data are: a name ``poolnas export --retrain-epochs``
            can load (``digits``, ``mnist``, a path…) or a description.
        data_options: (poolnas space) ``load_dataset`` options of ``dataset`` (``subset``…).
        data_seed: (poolnas space) The seed of the data split, which ``export
            --retrain-epochs`` needs to rebuild the test split.
        artifacts: Directory of the artifact store (default: beside a SQLite database).
        hooks: What runs as poolnas trials are recorded; pass
            ``poolnas.dashboards.DASHBOARD_HOOKS`` for optuna-dashboard's notes and pictures.

    Raises:
        PoolnasError: A bad poolnas option or storage.
        ValueError: What KerasTuner's oracle refuses (e.g. ``tune_new_entries=False`` without
            ``hyperparameters``).
    """

    def __init__(
        self,
        objective: Any = None,
        max_trials: int | None = 10,
        seed: int | None = None,
        hyperparameters: keras_tuner.HyperParameters | None = None,
        allow_new_entries: bool = True,
        tune_new_entries: bool = True,
        max_retries_per_trial: int = 0,
        max_consecutive_failed_trials: int = 3,
        *,
        storage: str | None = None,
        study_name: str | None = None,
        sampler: str | optuna.samplers.BaseSampler | None = None,
        max_flops: int | None = None,
        hypermodel: PoolNASHyperModel | None = None,
        dataset: str | None = None,
        data_options: dict[str, Any] | None = None,
        data_seed: int | None = None,
        artifacts: str | None = None,
        hooks: TrialHooks | None = None,
    ) -> None:
        if study_name is not None and (not isinstance(study_name, str) or not study_name.strip()):
            raise PoolnasError("study_name must be a non-empty name")
        if max_trials is not None and (
            isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1
        ):
            raise PoolnasError(f"max_trials must be a positive integer or None, got {max_trials!r}")
        if max_flops is not None and (
            isinstance(max_flops, bool) or not isinstance(max_flops, int) or max_flops < 1
        ):
            raise PoolnasError(f"max_flops must be a positive integer, got {max_flops!r}")
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler) and (
            sampler not in SAMPLERS and sampler not in GENERAL_SAMPLERS
        ):
            raise PoolnasError(
                f"unknown sampler {sampler!r}; pass an Optuna sampler or one of: "
                f"{', '.join(dict.fromkeys((*GENERAL_SAMPLERS, *SAMPLERS)))}"
            )
        if hypermodel is not None and not isinstance(hypermodel, PoolNASHyperModel):
            raise PoolnasError("hypermodel must be a poolnas.search.PoolNASHyperModel")
        if data_seed is not None and (
            isinstance(data_seed, bool) or not isinstance(data_seed, int)
        ):
            raise PoolnasError(f"data_seed must be an integer, got {data_seed!r}")
        super().__init__(
            objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries, tune_new_entries=tune_new_entries, seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self._objective_given = objective is not None
        #: The objectives, one per objective of a general study.
        self.objectives: list[keras_tuner.Objective] = list(
            getattr(self.objective, "objectives", [self.objective]))
        self.storage = storage
        self.study_name = study_name
        self.max_flops = max_flops
        self.dataset = dataset
        self.data_options = dict(data_options or {})
        self.data_seed = data_seed
        self._artifacts = artifacts
        self._sampler = sampler
        self._sampler_seed = seed
        self._hypermodel = hypermodel
        self.hooks = hooks
        # A given storage is checked now, before any trial; the study opens on first use.
        self.handle: StorageHandle | None = (
            open_storage(storage, create=True, artifacts=artifacts) if storage else None)
        self._study: optuna.Study | None = None
        #: "poolnas" or "general", decided when the study opens.
        self.mode: str | None = None
        self._space: SearchSpace | None = None
        self._recorder: TrialRecorder | None = None
        self._running: dict[str, Any] = {}
        #: KerasTuner trial id → number of its (latest) Optuna trial; the ids trained here.
        self._numbers: dict[str, int] = {}
        self._trained: set[str] = set()
        #: KerasTuner trial id → its objective values (general space).
        self._values: dict[str, list[float]] = {}
        #: Trials that were running when the project was saved last (see :meth:`reload`).
        self._interrupted: list[str] = []
        #: The sampler (a grid) or the space has nothing left to propose.
        self._exhausted = False

    # ------------------------------------------------------------------ the study
    @property
    def study(self) -> optuna.Study:
        """The Optuna study (created or loaded on first use).

        Raises:
            PoolnasError: No storage (no ``storage=`` and no tuner's project folder), or the
                study is not one this oracle can continue.
        """
        if self._study is None:
            self._study = self._open_study()
        return self._study

    @property
    def recorder(self) -> TrialRecorder:
        """The poolnas study's :class:`~poolnas.search.TrialRecorder` (opens the study)."""
        self.study  # noqa: B018 - opens the study, which makes the recorder
        if self._recorder is None:
            raise PoolnasError("a general KerasTuner search has no poolnas trial recorder")
        return self._recorder

    def _handle(self) -> StorageHandle:
        if self.handle is None:
            if getattr(self, "_directory", None) is None:
                raise PoolnasError(
                    "OptunaOracle has no storage: pass storage= or use it in a keras_tuner "
                    "tuner (its project folder then holds optuna.db)"
                )
            path = os.path.abspath(os.path.join(self._project_dir, DEFAULT_DB))
            self.handle = open_storage(f"sqlite:///{path}", create=True,
                                       artifacts=self._artifacts)
        return self.handle

    @property
    def name(self) -> str:
        """The study name: ``study_name``, else the tuner's project name."""
        return self.study_name or getattr(self, "_project_name", None) or "keras_tuner"

    def _open_study(self) -> optuna.Study:
        handle = self._handle()
        existing = {s.study_name: s for s in handle.optuna_storage.get_all_studies()}
        poolnas = self._hypermodel is not None or (
            self.name in existing and STUDY_ATTR in existing[self.name].user_attrs)
        study = self._open_poolnas() if poolnas else self._open_general()
        self._fail_dead_trials(study)
        return study

    def _seed_now(self, study: optuna.Study, seed: int | None) -> int | None:
        """The sampler's seed: ``seed`` for a new study, another one per resumed size, so that
        a resumed search does not draw the first search's proposals again."""
        n = len(study.get_trials(deepcopy=False))
        return None if seed is None else (seed if n == 0 else trial_seed(seed, n) % 2**31)

    def _open_general(self) -> optuna.Study:
        self.mode = "general"
        directions = ["maximize" if o.direction == "max" else "minimize"
                      for o in self.objectives]
        study = create_or_resume_general(
            self._handle(), self.name, directions=directions,
            metric_names=[o.name for o in self.objectives],
            attrs={"engine": "keras-tuner:optuna-oracle:general"},
        )
        sampler = self._sampler
        if isinstance(sampler, str) and sampler not in GENERAL_SAMPLERS:
            raise PoolnasError(
                f"sampler {sampler!r} is one of poolnas' architecture samplers; a general "
                f"KerasTuner space takes an Optuna sampler or one of: {', '.join(GENERAL_SAMPLERS)}"
            )
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            seed = self._seed_now(study, self.seed)
            if sampler == "random":
                sampler = optuna.samplers.RandomSampler(seed=seed)
            elif sampler == "nsga2":
                sampler = optuna.samplers.NSGAIISampler(seed=seed)
            else:
                sampler = optuna.samplers.TPESampler(seed=seed)
        study.sampler = sampler
        # The study says what was tried, also by other tuners on the same study.
        for trial in study.get_trials(deepcopy=False):
            values = trial.user_attrs.get(VALUES_ATTR)
            if isinstance(values, dict) and trial.state != optuna.trial.TrialState.WAITING:
                self._tried_so_far.add(self._compute_values_hash(values))
        return study

    def _open_poolnas(self) -> optuna.Study:
        self.mode = "poolnas"
        if not self._objective_given:  # a poolnas hypermodel's models report val_accuracy
            self.objective = keras_tuner.Objective("val_accuracy", "max")
            self.objectives = [self.objective]
        if len(self.objectives) != 1 or self.objective.direction != "max":
            raise PoolnasError(
                f"the objective must be one validation accuracy to maximize (the first of the "
                f"study's two objectives), such as 'val_accuracy'; got {self.objective}"
            )
        hypermodel = self._hypermodel
        if hypermodel is None:
            costs = None  # The recorder's, from the study's settings.
            # Only resumed: the study's own settings say what a trial is, but for the budget.
            study = create_or_resume(self._handle(), self.name, None, cli=False)
            check_resume(self.name, settings_of(study), {"max_flops": self.max_flops},
                         keys=("max_flops",), cli=False)
        else:
            costs = CostModel(hypermodel.input_shape, hypermodel.num_classes,
                              input_scale=hypermodel.input_scale,
                              input_offset=hypermodel.input_offset)
            study = create_or_resume(
                self._handle(), self.name, self._wanted(hypermodel),
                new_costs=lambda: costs.study_costs(hypermodel.space), keys=_SHARED_SETTINGS,
                cli=False,
            )
        settings = settings_of(study)
        self._space = SearchSpace.from_dict(settings["space"], source=f"study {self.name!r}")
        self._recorder = TrialRecorder(self._handle(), study, settings, costs=costs,
                                       hooks=self.hooks)
        sampler = self._sampler
        if not isinstance(sampler, optuna.samplers.BaseSampler):
            sampler = make_sampler(sampler or "tpe", self._space,
                                   self._seed_now(study, self._sampler_seed),
                                   flops_of=self._recorder.costs.flops_of(self._space),
                                   max_flops=settings.get("max_flops"),
                                   # KerasTuner decides what it trains: no re-evaluations.
                                   reevaluate=False)
        space = self._space

        def tried(params: dict[str, Any]) -> bool:
            key = space.architecture(params).key
            return any(t.user_attrs.get(TrialAttrs.ARCHITECTURE) == key
                       for t in study.get_trials(deepcopy=False)
                       if t.state in (optuna.trial.TrialState.COMPLETE,
                                      optuna.trial.TrialState.RUNNING))

        # A grid visits each point once by itself (and stops the search when done).
        study.sampler = sampler if isinstance(sampler, optuna.samplers.GridSampler) else (
            UntriedSampler(sampler, space.parameters(), tried=tried,
                           seed=self._seed_now(study, self._sampler_seed)))
        return study

    def _wanted(self, hypermodel: PoolNASHyperModel) -> dict[str, Any]:
        wanted = {
            "engine": ENGINE,
            "dataset": self.dataset or "the data given to the KerasTuner tuner",
            "data_options": self.data_options,
            "budget": None,  # KerasTuner's search() arguments decide the training
            "space": hypermodel.space.to_dict(),
            "input_shape": list(hypermodel.input_shape),
            "num_classes": int(hypermodel.num_classes),
            "input_scale": float(hypermodel.input_scale),
            "input_offset": float(hypermodel.input_offset),
            "max_flops": self.max_flops,
        }
        if self.data_seed is not None:
            wanted["seed"] = self.data_seed
        return wanted

    def _fail_dead_trials(self, study: optuna.Study) -> None:
        """Fail the running KerasTuner trials of the study whose process is gone."""
        here = WorkerIdentity.current()
        storage = study._storage
        for trial in study.get_trials(deepcopy=False,
                                      states=(optuna.trial.TrialState.RUNNING,)):
            if TrialAttrs.KERAS_TUNER_TRIAL not in trial.user_attrs:
                continue
            worker = WorkerIdentity.from_attr(trial.user_attrs.get(TrialAttrs.WORKER))
            if worker is None or not worker.is_dead(here):
                continue
            try:
                storage.set_trial_user_attr(trial._trial_id, TrialAttrs.FAIL_REASON, _DIED)
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            except (RuntimeError, ValueError):
                continue  # another process failed it first

    # ------------------------------------------------------------------ the Oracle contract
    def update_space(self, hyperparameters: keras_tuner.HyperParameters) -> None:
        """KerasTuner's ``update_space``; also learns the poolnas hypermodel that declared it."""
        hypermodel = getattr(hyperparameters, HYPERMODEL_ATTR, None)
        if self._hypermodel is None and isinstance(hypermodel, PoolNASHyperModel):
            self._hypermodel = hypermodel
        super().update_space(hyperparameters)

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """The next proposal: the study's sampler draws it, as a new Optuna trial."""
        study = self.study
        if self._exhausted:
            return {"status": TrialStatus.STOPPED}
        if self.mode == "poolnas":
            running = self._start(trial_id, LiveTrial(study))
            return {"status": TrialStatus.RUNNING,
                    "values": self._space.params_of(running.candidate.arch)}
        live = LiveTrial(study)
        values = self._propose(live)
        if values is None:
            live.tell(None, reason="every configuration of the search space was tried")
            self._exhausted = True
            return {"status": TrialStatus.STOPPED}
        self._running[trial_id] = live
        return {"status": TrialStatus.RUNNING, "values": values}

    def _propose(self, live: LiveTrial) -> dict[str, Any] | None:
        """Values the study has not tried: the sampler's, else KerasTuner's random draw."""
        study = self.study
        proposal = Proposal(self.hyperparameters)
        frozen = live.frozen()
        try:
            relative = dict(live.trial.relative_params)
        except Exception:  # a sampler whose relative search fails: sample independently
            relative = {}

        def sample(name: str, distribution: Any) -> Any:
            if name in relative:
                value = relative.pop(name)
                if distribution._contains(distribution.to_internal_repr(value)):
                    return value
            return study.sampler.sample_independent(study, frozen, name, distribution)

        for _ in range(self._max_collisions):
            values = proposal.draw(sample)
            if not self._duplicate(values):
                return values
        return self._random_values()

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        """KerasTuner's ``create_trial``; a poolnas space completes the candidates that need no
        training (duplicates, those over the FLOPs budget) at once and proposes the next one."""
        self.study  # noqa: B018 - the study decides the kind of space
        if self.mode == "general":
            trial = super().create_trial(tuner_id)
            if trial.status == TrialStatus.RUNNING:
                self._bind(trial)
            return trial
        while True:
            trial = super().create_trial(tuner_id)
            if trial.status != TrialStatus.RUNNING:
                return trial
            running = self._running.get(trial.trial_id)
            if running is None:  # A retry, or a trial of a reloaded KerasTuner project.
                params = {name: trial.hyperparameters.values[name]
                          for name in self._space_of().parameters()}
                previous = self._numbers.get(trial.trial_id)
                running = self._start(trial.trial_id, LiveTrial(self.study, params=params))
                if previous is not None:
                    running.live.trial.set_user_attr(TrialAttrs.RETRY_OF, previous)
                self.save()
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

    def _bind(self, trial: Trial) -> None:
        """Give a running KerasTuner trial of a general space its Optuna trial and values."""
        live = self._running.get(trial.trial_id)
        if live is None:  # A retry, or a trial of a reloaded KerasTuner project.
            live = LiveTrial(self.study)
            if trial.trial_id in self._numbers:
                live.trial.set_user_attr(TrialAttrs.RETRY_OF, self._numbers[trial.trial_id])
            self._running[trial.trial_id] = live
        self._numbers[trial.trial_id] = live.number
        live.trial.set_user_attr(TrialAttrs.KERAS_TUNER_TRIAL, trial.trial_id)
        self._write_values(live, trial.hyperparameters.values)
        self.save()  # the project knows its Optuna trial, also if this process dies now

    def _write_values(self, live: LiveTrial, values: dict[str, Any]) -> None:
        """Store a trial's KerasTuner values: whole, and as Optuna parameters not yet set."""
        storage, trial_id = self.study._storage, live.trial._trial_id
        live.trial.set_user_attr(VALUES_ATTR, as_json(dict(values)))
        done = storage.get_trial(trial_id).params
        for name, (distribution, value) in Proposal(self.hyperparameters).params(values).items():
            if name in done:
                continue
            try:
                storage.set_trial_param(trial_id, name, distribution.to_internal_repr(value),
                                        distribution)
            except ValueError:
                pass  # the study knows this name with another distribution: the attr keeps it

    def score_trial(self, trial: Trial) -> None:
        """KerasTuner's score; with several objectives also each objective's value."""
        if len(self.objectives) == 1:
            super().score_trial(trial)
            values = [trial.score]
        else:
            values = [_best_value(trial, o) for o in self.objectives]
            if trial.metrics.exists(self.objective.name):
                super().score_trial(trial)
            else:
                trial.score = self.objective.get_value(
                    {o.name: v for o, v in zip(self.objectives, values, strict=True)})
                trial.best_step = trial.metrics.get_best_step(self.objectives[0].name)
        self._values[trial.trial_id] = [
            math.nan if v is None else float(v) for v in values]

    @keras_tuner.synchronized
    def end_trial(self, trial: Trial) -> None:
        """KerasTuner's ``end_trial``, with the study told before the display shows the best."""
        old_trial = self.trials[trial.trial_id]
        old_trial.hyperparameters = trial.hyperparameters
        old_trial.status = trial.status
        old_trial.message = trial.message
        trial = old_trial
        self.update_space(trial.hyperparameters)
        if trial.status == TrialStatus.COMPLETED:
            self.score_trial(trial)
            values = self._values.get(trial.trial_id, [trial.score])
            if trial.score is None or any(v is None or math.isnan(v) for v in values) or (
                math.isnan(trial.score)
            ):
                trial.status = TrialStatus.INVALID
        self._record_values(trial)
        self._run_times[trial.trial_id] += 1
        retried = self._retry(trial)
        try:
            self._finish(trial)
        finally:
            if not retried:
                self.end_order.append(trial.trial_id)
            self._save_trial(trial)
            self.save()
        for tuner_id, ongoing_trial in list(self.ongoing_trials.items()):
            if ongoing_trial.trial_id == trial.trial_id:
                self.ongoing_trials.pop(tuner_id)
                break
        if not retried:
            self._check_consecutive_failures()
        self._display.on_trial_end(trial)

    def get_best_trials(self, num_trials: int | None = 1) -> list[Trial]:
        """The best trials: the first Pareto front, then the next fronts (non-dominated
        sorting), within a front by crowding distance (its ends first).

        With one objective this is KerasTuner's order. A general space fills up with trials that
        did not complete, as KerasTuner does; a poolnas space returns only trials trained by
        this tuner (the others have no model).

        Args:
            num_trials: How many; None: the first front (a poolnas space: most accurate first).
        """
        self.study  # noqa: B018 - the study decides the kind of space
        if self.mode == "poolnas":
            return self._best_poolnas(num_trials)
        if len(self.objectives) == 1 and num_trials is not None:
            return super().get_best_trials(num_trials)
        completed = [t for t in self.trials.values()
                     if t.status == TrialStatus.COMPLETED and t.trial_id in self._study_values()]
        values = self._study_values()
        order = rank_by_fronts([values[t.trial_id] for t in completed],
                               [o.direction for o in self.objectives])
        ranked = [completed[i] for i in order]
        if num_trials is None:
            costs = {t.trial_id: values[t.trial_id] for t in ranked}
            directions = [o.direction for o in self.objectives]
            return [t for t in ranked if not any(
                _dominates(costs[o.trial_id], costs[t.trial_id], directions) for o in ranked)]
        if len(ranked) < num_trials:
            ranked += [t for t in self.trials.values() if t not in ranked]
        return ranked[:num_trials]

    def _study_values(self) -> dict[str, list[float]]:
        """KerasTuner trial id → objective values, as the study stores them."""
        numbers = {n: i for i, n in self._numbers.items()}
        out = dict(self._values)
        for frozen in self.study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.COMPLETE,)):
            if frozen.number in numbers and frozen.values is not None:
                out[numbers[frozen.number]] = list(frozen.values)
        return out

    def _best_poolnas(self, num_trials: int | None) -> list[Trial]:
        trained = {self._numbers[i]: i for i in self._trained
                   if i in self._numbers and self.trials[i].status == TrialStatus.COMPLETED}
        if not trained:
            return []
        frozen = [t for t in self.study.get_trials(deepcopy=False) if t.number in trained]
        if num_trials is None:
            front = sorted(pareto_front(frozen), key=lambda t: (-t.values[0], t.values[1]))
            return [self.trials[trained[t.number]] for t in front]
        frozen = [t for t in frozen if t.values is not None and len(t.values) == 2]
        order = rank_by_fronts([t.values for t in frozen], ["max", "min"])
        return [self.trials[trained[frozen[i].number]] for i in order][:num_trials]

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["poolnas"] = {"optuna_trials": dict(self._numbers), "trained": sorted(self._trained),
                            "values": dict(self._values)}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        own = state.get("poolnas", {})
        self._numbers = {str(k): int(v) for k, v in own.get("optuna_trials", {}).items()}
        self._trained = set(own.get("trained", ()))
        self._values = {str(k): [float(x) for x in v] for k, v in own.get("values", {}).items()}
        self._interrupted = [t.trial_id for t in self.ongoing_trials.values()]

    def reload(self) -> None:
        """KerasTuner's ``reload``; a trial that was running when its process died counts as
        one run: it is retried only within ``max_retries_per_trial``."""
        super().reload()
        for trial_id in self._interrupted:
            self._run_times[trial_id] += 1
            if self._run_times[trial_id] <= self.max_retries_per_trial:
                continue
            self._retry_queue = [i for i in self._retry_queue if i != trial_id]
            trial = self.trials[trial_id]
            trial.status = TrialStatus.FAILED
            trial.message = _DIED
            self.end_order.append(trial_id)
            self._save_trial(trial)
        self._interrupted = []
        self.save()

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
        self._numbers[trial_id] = live.number
        return running

    def _finish(self, trial: Trial) -> None:
        """Tell the study how a KerasTuner trial ended."""
        trial_id = trial.trial_id
        running = self._running.pop(trial_id, None)
        if running is None:
            return
        if self.mode == "general":
            self._numbers[trial_id] = running.number
            self._write_values(running, trial.hyperparameters.values)  # new entries too
            if trial.status == TrialStatus.COMPLETED:
                running.tell(self._values[trial_id])
            else:
                running.tell(None, reason=last_line(trial.message,
                                                    f"KerasTuner trial {trial.status}"))
            return
        live = running.live
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


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether objective vector ``a`` dominates ``b`` (``directions``: "max"/"min" each)."""
    signs = [-1.0 if d == "max" else 1.0 for d in directions]
    ca = [s * x for s, x in zip(signs, a, strict=True)]
    cb = [s * x for s, x in zip(signs, b, strict=True)]
    return all(x <= y for x, y in zip(ca, cb)) and any(x < y for x, y in zip(ca, cb))


class OptunaSearch(keras_tuner.Tuner):
    """``keras_tuner.RandomSearch`` with an :class:`OptunaOracle`: the same arguments, plus
    ``storage``, ``study_name`` and ``sampler`` (TPE by default).

    Args:
        hypermodel: A ``HyperModel`` or a ``build_model(hp)`` function (optional when
            ``run_trial`` is overridden, as in KerasTuner).
        objective: One objective or a list of them (a multi-objective study).
        max_trials: Trials to run (None: no limit).
        seed: Seeds the sampler.
        hyperparameters: KerasTuner's ``HyperParameters`` override.
        tune_new_entries: KerasTuner's.
        allow_new_entries: KerasTuner's.
        max_retries_per_trial: KerasTuner's.
        max_consecutive_failed_trials: KerasTuner's.
        storage: See :class:`OptunaOracle`.
        study_name: See :class:`OptunaOracle`.
        sampler: See :class:`OptunaOracle`.
        **kwargs: ``keras_tuner.Tuner``'s (``directory``, ``project_name``, ``overwrite``…).
    """

    def __init__(self, hypermodel: Any = None, objective: Any = None, max_trials: int | None = 10,
                 seed: int | None = None,
                 hyperparameters: keras_tuner.HyperParameters | None = None,
                 tune_new_entries: bool = True, allow_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3, *,
                 storage: str | None = None, study_name: str | None = None,
                 sampler: str | optuna.samplers.BaseSampler | None = None,
                 **kwargs: Any) -> None:
        self.seed = seed
        oracle = OptunaOracle(
            objective=objective, max_trials=max_trials, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials, storage=storage,
            study_name=study_name, sampler=sampler,
        )
        super().__init__(oracle, hypermodel, **kwargs)


def _best_value(trial: Trial, objective: keras_tuner.Objective) -> float | None:
    """A trial's best value of one objective, in the objective's direction (KerasTuner
    registers the metrics of a list of objectives with no direction)."""
    if not trial.metrics.exists(objective.name):
        raise ValueError(
            f"Objective value missing in metrics reported to the Oracle: {objective.name!r}")
    means = [float(obs.mean()) for obs in trial.metrics.get_history(objective.name)]
    means = [m for m in means if not math.isnan(m)]
    if not means:
        return None
    return max(means) if objective.direction == "max" else min(means)
