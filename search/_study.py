"""Running a study: create or resume, the objective, samplers, dedup, snapshots, progress.

Only this module creates Optuna studies and trials. One trial is one architecture drawn from the
:class:`~poolnas.spaces.SearchSpace`; its two values are validation accuracy (maximize) and FLOPs
(minimize). What a trial stores (user attrs):

``architecture`` (the key), ``flops``, ``macs``, ``params``, ``epochs``, ``train_seconds``,
``accuracy_std`` and ``accuracies`` (one per seed), ``seconds`` (build/train/evaluate/storage
split), ``model_artifact`` (the Optuna artifact id of the trained ``.keras`` file),
``diagram_artifact`` (its architecture picture, with a dashboard note; see
:mod:`poolnas.dashboards`), and, where
they apply, ``duplicate_of`` (the trial whose results were reused), ``infeasible`` (why the
FLOPs budget ruled it out) or ``fail_reason``.

The study itself stores (user attr ``poolnas``) what its trials depend on: the data set and its
options, the training budget, the space, the input shape, the hypervolume reference and, where
FLOPs are additive over the choices, their table (so a resume counts nothing again). A resume
with different settings is refused instead of mixing incomparable trials.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from poolnas.search._enumerative import (
    MAX_CANDIDATES,
    AdditiveFlops,
    ParetoSurrogateSampler,
    additive_flops,
)
from poolnas.search._locks import StudyLock
from poolnas.search._pareto import hypervolume, pareto_front
from poolnas.search._storage import StorageHandle, load_study, needs_artifact_dir, open_storage
from poolnas.search._workers import (
    POLL_SECONDS,
    WORKER_ATTR,
    AttrHeartbeat,
    GracefulStop,
    WorkerIdentity,
    has_optuna_heartbeat,
    reclaim_dead_trials,
)
from poolnas.spaces import Architecture, PoolnasError, SearchSpace, freeze_startup_objects

if TYPE_CHECKING:
    import optuna

    from poolnas.evaluators import Budget, Dataset

DEFAULT_STORAGE = "sqlite:///poolnas.db"
SAMPLERS = ("auto", "surrogate", "tpe", "nsga2", "random", "grid")
METRIC_NAMES = ("accuracy", "flops")
STUDY_ATTR = "poolnas"
#: Trials that fail one after another before the search gives up (a broken set-up, not bad luck).
MAX_CONSECUTIVE_FAILURES = 5


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Everything ``poolnas search`` needs, validated before anything is written.

    Args:
        study: Study name; the same name and storage resume the study.
        storage: An Optuna storage URL (``sqlite:///file.db``, PostgreSQL, MySQL) or a journal
            file path ending in ``.log``.
        trials: The study ends with this many complete trials in total.
        timeout: Seconds this run may take (None: no limit).
        sampler: ``auto`` (default: ``surrogate`` for spaces it can enumerate, else ``tpe``),
            ``surrogate``, ``tpe``, ``nsga2``, ``random`` or ``grid``.
        space: The search space.
        dataset: Data set spec (``digits``, a Keras data set name, an ``.npz``, a folder).
        data_options: Keyword options of :func:`poolnas.evaluators.load_dataset`.
        budget: Training budget of one trial.
        seed: Seeds the sampler and the training of every trial.
        max_flops: Candidates above this are recorded as infeasible without training.
        artifacts: Directory of the artifact store (default: beside a SQLite database).
        heartbeat: Seconds between the heartbeats of a running trial (database storages). A
            trial whose heartbeat is ``2 * heartbeat`` seconds old is failed and queued again;
            one whose worker ran on this machine and died is failed at once.
        worker: Index of this worker among those started together (``--workers``), for
            messages. Workers need no seeds of their own: each trial draws with a seed made of
            ``seed`` and the trial's number.
    """

    study: str = "poolnas"
    storage: str = DEFAULT_STORAGE
    trials: int = 20
    timeout: float | None = None
    sampler: str = "auto"
    space: SearchSpace = field(default_factory=SearchSpace)
    dataset: str = "digits"
    data_options: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None
    seed: int = 0
    max_flops: int | None = None
    artifacts: str | None = None
    heartbeat: int = 60
    worker: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.study, str) or not self.study.strip():
            raise PoolnasError("--study must be a non-empty name")
        if self.trials < 1:
            raise PoolnasError(f"--trials must be at least 1, got {self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise PoolnasError(
                f"--timeout must be a positive number of seconds, got {self.timeout}"
            )
        if self.sampler not in SAMPLERS:
            raise PoolnasError(
                f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}"
            )
        if self.max_flops is not None and self.max_flops < 1:
            raise PoolnasError(f"--max-flops must be a positive number, got {self.max_flops}")
        if not isinstance(self.heartbeat, int) or self.heartbeat < 1:
            raise PoolnasError(f"--heartbeat must be a positive whole number of seconds, "
                               f"got {self.heartbeat!r}")
        if not isinstance(self.worker, int) or self.worker < 0:
            raise PoolnasError(f"worker index must be 0 or more, got {self.worker!r}")
        if self.artifacts is None and needs_artifact_dir(self.storage):
            raise PoolnasError(
                "--storage is a database server (or in memory): there is no place beside it for "
                "the trained models; pass --artifacts DIR, a directory every worker can reach"
            )
        if self.budget is None:
            from poolnas.evaluators import Budget

            object.__setattr__(self, "budget", Budget())


@dataclass
class TrialReport:
    """What the progress line of one finished trial shows."""

    number: int
    key: str
    state: str
    accuracy: float | None = None
    flops: int | None = None
    seconds: float = 0.0
    note: str = ""
    front_size: int = 0
    best_accuracy: float | None = None
    done: int = 0
    total: int = 0


def make_sampler(name: str, space: SearchSpace, seed: int | None, *,
                 flops_of: Callable[[Mapping[str, Any]], float] | None = None,
                 max_flops: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``--sampler``.

    ``surrogate`` is :class:`~poolnas.search.ParetoSurrogateSampler` (it needs ``flops_of``,
    FLOPs from a candidate's parameters); ``auto`` is ``surrogate`` for a space of at most
    :data:`~poolnas.search._enumerative.MAX_CANDIDATES` architectures and ``tpe`` above that.
    Why ``surrogate`` is the default: ``docs/benchmarks.md``, "Sample efficiency".

    Raises:
        PoolnasError: Unknown name, or ``surrogate`` on a space too large to enumerate.
    """
    import optuna

    if name == "auto":
        name = "surrogate" if space.size <= MAX_CANDIDATES else "tpe"
    if name == "surrogate":
        if space.size > MAX_CANDIDATES:
            raise PoolnasError(
                f"--sampler surrogate scores every architecture, and this space has "
                f"{space.size:,} (at most {MAX_CANDIDATES:,}); use --sampler tpe"
            )
        if flops_of is None:
            raise PoolnasError("the surrogate sampler needs the FLOPs of the candidates")
        return ParetoSurrogateSampler(space, flops_of, seed=seed, max_flops=max_flops)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(
            {k: list(v) for k, v in space.parameters().items()}, seed=seed
        )
    raise PoolnasError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


class CostModel:
    """FLOPs/MACs/params of architectures on one input, built once per key and cached.

    A study stores what it costs to know about its space (:meth:`study_costs`: the hypervolume
    reference and, where FLOPs are additive, the table the surrogate sampler reads), and
    :meth:`adopt` reads it back, so that a resume or another worker builds no model for it.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 input_scale: float = 1.0, input_offset: float = 0.0) -> None:
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self._scale = (input_scale, input_offset)
        self._cache: dict[str, Any] = {}
        #: Per space (by its JSON): its verified additive FLOPs table, or None where the FLOPs
        #: are not additive and each architecture is counted on its own.
        self._tables: dict[str, AdditiveFlops | None] = {}

    def known(self, arch: Architecture):
        """The cost of ``arch`` if it was counted before, else None (nothing is built)."""
        return self._cache.get(arch.key)

    def of_model(self, arch: Architecture, model: Any):
        """Count (and remember) the cost of ``arch`` from its model, built for this input."""
        from poolnas.evaluators import count_cost

        self._cache[arch.key] = count_cost(model)
        return self._cache[arch.key]

    def __call__(self, arch: Architecture):
        if arch.key not in self._cache:
            from poolnas.spaces import build_model

            # No clear_session() here: the models are garbage at once, the next trained model
            # starts from a cleared session anyway, and each clear costs a full garbage
            # collection (0.2 s with TensorFlow loaded, more than the build).
            model = build_model(arch, self.input_shape, self.num_classes,
                                input_scale=self._scale[0], input_offset=self._scale[1])
            self.of_model(arch, model)
        return self._cache[arch.key]

    def flops_table(self, space: SearchSpace) -> AdditiveFlops | None:
        """``space``'s FLOPs as a verified additive table (one model per parameter value and 4
        random checks), or None when they are not additive; counted once."""
        key = _space_key(space)
        if key not in self._tables:
            counted = additive_flops(space, lambda arch: self(arch).flops, verify=4)
            self._tables[key] = counted if isinstance(counted, AdditiveFlops) else None
        return self._tables[key]

    def flops_of(self, space: SearchSpace) -> Callable[[Mapping[str, Any]], float]:
        """FLOPs of ``space``'s candidates by their parameters, for the surrogate sampler.

        Counted lazily, on the first call: from :meth:`flops_table` when the FLOPs are
        additive (or from a table adopted from the study), otherwise one model each.
        """
        counted: list[Callable[[Mapping[str, Any]], float]] = []

        def exact(params: Mapping[str, Any]) -> float:
            return float(self(space.architecture(params)).flops)

        def flops(params: Mapping[str, Any]) -> float:
            if not counted:
                counted.append(self.flops_table(space) or exact)
            return counted[0](params)

        return flops

    def largest(self, space: SearchSpace) -> int:
        """The largest FLOPs of ``space``: the most expensive value of every parameter.

        When the points' costs are independent (only ops, skips and merges are searched, with
        fixed widths, as in the default space) they are additive, and the table gives the
        largest at once, counted exactly from its model. Otherwise by coordinate ascent over the
        parameters, a lower bound. It fixes the hypervolume's reference point for the study.
        """
        parameters = space.parameters()
        independent = all(name.endswith(("_op", "_skip", "_merge")) for name in parameters)
        table = self.flops_table(space) if independent else None
        if table is not None:
            return self(space.architecture(table.largest(parameters))).flops
        params = {name: values[0] for name, values in parameters.items()}
        best = self(space.architecture(params)).flops
        for _ in range(2):
            improved = False
            for name, values in parameters.items():
                for value in values:
                    candidate = {**params, name: value}
                    flops = self(space.architecture(candidate)).flops
                    if flops > best:
                        best, params, improved = flops, candidate, True
            if not improved:
                break
        return best

    def study_costs(self, space: SearchSpace) -> dict[str, Any]:
        """What a new study of ``space`` stores about its costs: ``reference_flops`` and, where
        the FLOPs are additive, ``flops_table``."""
        costs: dict[str, Any] = {"reference_flops": int(self.largest(space))}
        table = self._tables.get(_space_key(space))
        if table is not None:
            costs["flops_table"] = table.to_json()
        return costs

    def adopt(self, space: SearchSpace, settings: Mapping[str, Any]) -> None:
        """Take ``space``'s FLOPs table from a study's stored settings (if it has a valid one)."""
        key = _space_key(space)
        if key not in self._tables and "flops_table" in settings:
            table = AdditiveFlops.from_json(settings["flops_table"], space.parameters())
            if table is not None:
                self._tables[key] = table


def _space_key(space: SearchSpace) -> str:
    import json

    return json.dumps(space.to_dict(), sort_keys=True, default=str)


def trial_seed(seed: int, number: int) -> int:
    """The training seed of trial ``number``'s first repeat in a study searched with ``seed``."""
    return seed * 100_003 + number


def study_settings(config: SearchConfig, data: Dataset) -> dict[str, Any]:
    """The settings a study's trials depend on (stored on the study, checked on resume).

    ``dataset``, ``data_options`` and ``seed`` (which fixes the split) reload the same data and
    the same train/validation/test split, e.g. for ``export --retrain-epochs``. Values are
    stored as JSON gives them back (a tuple as a list), so a resume compares like with like.
    """
    import json

    return {
        "dataset": config.dataset,
        "data_options": json.loads(json.dumps(dict(sorted(config.data_options.items())))),
        "seed": config.seed,
        "budget": asdict(config.budget),
        "space": config.space.to_dict(),
        "input_shape": list(data.input_shape),
        "num_classes": int(data.num_classes),
        "input_scale": float(data.input_scale),
        "input_offset": float(data.input_offset),
        "max_flops": config.max_flops,
    }


def _check_resume(name: str, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key in ("engine", "dataset", "data_options", "budget", "space", "max_flops"):
        if stored.get(key) != wanted.get(key):
            raise PoolnasError(
                f"study {name!r} was created with a different {key.replace('_', ' ')} "
                f"({stored.get(key)!r}); resume it with the same options or use a new --study"
            )
    # Studies made before the seed was stored resume with any seed.
    if "seed" in stored and stored["seed"] != wanted.get("seed"):
        raise PoolnasError(
            f"study {name!r} was created with --seed {stored['seed']} (the seed fixes the data "
            "split); resume it with the same seed or use a new --study"
        )


# ---------------------------------------------------------------------- recording trials
# What a trial stores, in one place: the search's objective, the KerasTuner engine and the
# KerasTuner OptunaOracle (poolnas.search._tuner_engine, _oracle) record trials with these.
def record_candidate(trial: optuna.Trial, arch: Architecture, cost: Any, *,
                     epochs: int | None) -> None:
    """Set what every trial carries: ``architecture``, ``flops``, ``macs``, ``params``, ``epochs``.

    ``epochs=None`` leaves ``epochs`` to be set when it is known.
    """
    trial.set_user_attr("architecture", arch.key)
    for name in ("flops", "macs", "params"):
        trial.set_user_attr(name, int(getattr(cost, name)))
    if epochs is not None:
        trial.set_user_attr("epochs", epochs)


def evaluated_trial(study: optuna.Study, key: str,
                    number: int) -> optuna.trial.FrozenTrial | None:
    """The first complete, non-duplicate trial of architecture ``key`` other than ``number``."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if (t.number != number and t.user_attrs.get("architecture") == key
                and "duplicate_of" not in t.user_attrs):
            return t
    return None


def reuse_evaluated(trial: optuna.Trial, study: optuna.Study,
                    key: str) -> optuna.trial.FrozenTrial | None:
    """Make ``trial`` a duplicate of the study's evaluation of ``key``, if there is one.

    Copies the original's results (user attrs and constraints) and sets ``duplicate_of``; the
    caller returns the original's ``values``.

    Returns:
        The original trial, or None when ``key`` was never evaluated.
    """
    original = evaluated_trial(study, key, trial.number)
    if original is None:
        return None
    for name in ("accuracy_std", "accuracies", "train_seconds", "model_artifact", "infeasible"):
        if name in original.user_attrs:
            trial.set_user_attr(name, original.user_attrs[name])
    trial.set_user_attr("duplicate_of", original.number)
    for name, value in original.constraints.items():
        trial.set_constraint(name, value)
    return original


def rule_out_over_budget(trial: optuna.Trial, cost: Any, max_flops: int | None) -> bool:
    """Set the FLOPs-budget constraint; over budget, mark the trial ``infeasible`` (untrained).

    Returns:
        Whether the candidate is over the budget; its values are then ``(0.0, flops)``.
    """
    if max_flops is None:
        return False
    trial.set_constraint("flops_budget", float(cost.flops - max_flops))
    if cost.flops <= max_flops:
        return False
    trial.set_user_attr("infeasible", f"{cost.flops} FLOPs > budget {max_flops}")
    trial.set_user_attr("train_seconds", 0.0)
    return True


def save_model_artifact(handle: StorageHandle, trial: optuna.Trial, model: Any) -> str:
    """Save a trained model as ``trialNNNNN.keras`` in the artifact store; its artifact id."""
    import optuna

    with tempfile.TemporaryDirectory(prefix="poolnas-") as tmp:
        path = os.path.join(tmp, f"trial{trial.number:05d}.keras")
        model.save(path)
        return optuna.artifacts.upload_artifact(
            artifact_store=handle.artifact_store(), file_path=path,
            study_or_trial=trial, mimetype="application/octet-stream",
        )


def record_evaluation(trial: optuna.Trial, *, artifact_id: str | None,
                      accuracies: Sequence[float], train_seconds: float,
                      seconds: dict[str, float]) -> None:
    """Set what a trained trial carries: ``model_artifact`` (unless None), ``accuracy_std``,
    ``accuracies``, ``train_seconds`` and ``seconds`` (wall time by phase)."""
    values = [float(a) for a in accuracies]
    if artifact_id is not None:
        trial.set_user_attr("model_artifact", artifact_id)
    trial.set_user_attr("accuracy_std",
                        float(statistics.stdev(values)) if len(values) > 1 else 0.0)
    trial.set_user_attr("accuracies", values)
    trial.set_user_attr("train_seconds", round(float(train_seconds), 3))
    trial.set_user_attr("seconds", {k: round(float(v), 3) for k, v in seconds.items()})


def snapshot_front(handle: StorageHandle, study: optuna.Study, number: int, *,
                   reference_flops: int,
                   trials: list[optuna.trial.FrozenTrial] | None = None) -> None:
    """After trial ``number`` completed: write the Pareto-front snapshot (in one transaction)
    and refresh the study's dashboard figures."""
    import optuna

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    front = pareto_front(trials)
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    members = [(t.number, float(t.values[0]), float(t.values[1])) for t in front]
    volume = hypervolume([(a, f) for _, a, f in members], reference_flops=reference_flops)
    handle.snapshots.record(study.study_name, number, members, volume, reference_flops,
                            n_complete=done)
    from poolnas.dashboards import refresh_study_figures

    refresh_study_figures(study, trials)


class SearchRunner:
    """Runs (or resumes) one study. State: the study, its storage, data and caches."""

    #: What proposes the candidates, when it is not Optuna's sampler; stored in the study's
    #: settings as ``engine`` (``keras-tuner:random``, …), and a resume with another is refused.
    engine: str | None = None

    def __init__(self, config: SearchConfig, *,
                 report: Callable[[TrialReport], None] | None = None,
                 data: Dataset | None = None) -> None:
        from poolnas.evaluators import load_dataset

        self.config = config
        self.report = report or (lambda _: None)
        # Everything that can fail on user input fails here, before storage is touched.
        self.data = data if data is not None else load_dataset(
            config.dataset, seed=config.seed, **config.data_options
        )
        config.space.check_input_shape(self.data.input_shape)
        import keras  # noqa: F401  (imported before the freeze below)

        # Every trial clears Keras' session, a full garbage collection: keep it cheap.
        freeze_startup_objects()
        self.costs = CostModel(self.data.input_shape, self.data.num_classes,
                               input_scale=self.data.input_scale,
                               input_offset=self.data.input_offset)
        self._flops_of = self.costs.flops_of(config.space)
        self.handle: StorageHandle = open_storage(config.storage, create=True,
                                                  artifacts=config.artifacts,
                                                  heartbeat_interval=config.heartbeat)
        self.study = self._create_or_resume()
        settings = self.study.user_attrs[STUDY_ATTR]
        self.costs.adopt(config.space, settings)  # A resume or a worker counts nothing again.
        if isinstance(self.study.sampler, ParetoSurrogateSampler):
            # Its candidates' FLOPs are counted now, with the reference's models, not in trial 1.
            self._flops_of(self.config.space.params_of(next(iter(self.config.space))))
        self.reference_flops = int(settings["reference_flops"])
        self._failures = 0
        self._last_failure = ""
        self.timings: list[dict[str, float]] = []
        self.identity = WorkerIdentity.current()
        self.stop = GracefulStop()
        self._lock: StudyLock | None = None
        self._interrupted_trial: int | None = None
        self._current_trial: int | None = None

    # ------------------------------------------------------------------ set-up
    def _create_or_resume(self) -> optuna.Study:
        import optuna

        config = self.config
        wanted = study_settings(config, self.data)
        if self.engine is not None:
            wanted["engine"] = self.engine
        existing = {s.study_name for s in self.handle.optuna_storage.get_all_studies()}
        sampler = self._sampler(config.seed)
        if config.study in existing:
            study = optuna.load_study(study_name=config.study,
                                      storage=self.handle.optuna_storage, sampler=sampler)
            stored = study.user_attrs.get(STUDY_ATTR)
            ours = study.directions == [
                optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
            ]
            if stored is None and ours and not study.get_trials(deepcopy=False):
                pass  # Another worker is creating it this moment: finish it below.
            elif stored is None or not ours:
                raise PoolnasError(
                    f"study {config.study!r} in {config.storage} was not created by poolnas; "
                    "choose another --study"
                )
            else:
                _check_resume(config.study, stored, wanted)
                return study
        wanted.update(self.costs.study_costs(config.space))
        study = optuna.create_study(
            study_name=config.study,
            storage=self.handle.optuna_storage,
            sampler=sampler,
            directions=["maximize", "minimize"],
            load_if_exists=True,  # another worker may create it at the same moment
        )
        study.set_metric_names(list(METRIC_NAMES))
        if STUDY_ATTR not in study.user_attrs:
            study.set_user_attr(STUDY_ATTR, wanted)
        else:
            _check_resume(config.study, study.user_attrs[STUDY_ATTR], wanted)
        return study

    # ------------------------------------------------------------------ objective
    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        from poolnas.evaluators import evaluate_architecture, fresh_model

        started = time.perf_counter()
        arch = self.config.space.suggest(trial)
        seed = trial_seed(self.config.seed, trial.number)
        # One build per trained trial: the model that gives the cost is the one trained.
        model = None
        build_seconds = 0.0
        cost = self.costs.known(arch)
        if cost is None:
            tick = time.perf_counter()
            model = fresh_model(arch, self.data, self.config.budget, seed=seed)
            build_seconds = time.perf_counter() - tick
            cost = self.costs.of_model(arch, model)
        record_candidate(trial, arch, cost, epochs=self.config.budget.epochs)

        original = reuse_evaluated(trial, self.study, arch.key)
        if original is not None:
            self._annotate(trial, arch, remark=f"Same architecture as trial {original.number}: "
                           "its results are reused, its model and picture are there.",
                           picture=False)
            return float(original.values[0]), float(original.values[1])

        budget = self.config.max_flops
        if rule_out_over_budget(trial, cost, budget):
            self._annotate(trial, arch, remark=f"Not trained: {cost.flops:,} FLOPs is over the "
                           f"budget of {budget:,}.")
            return 0.0, float(cost.flops)

        evaluation = evaluate_architecture(arch, self.data, self.config.budget, seed=seed,
                                           model=model, interrupted=self.stop.signalled)
        del model
        stored_at = time.perf_counter()
        artifact_id = self._save_model(trial, evaluation.model, arch)
        seconds = dict(evaluation.seconds)
        seconds["build"] += build_seconds
        seconds["storage"] = time.perf_counter() - stored_at
        annotated_at = time.perf_counter()
        self._annotate(trial, arch, model=evaluation.model)
        seconds["annotate"] = time.perf_counter() - annotated_at
        seconds["total"] = time.perf_counter() - started
        record_evaluation(trial, artifact_id=artifact_id, accuracies=evaluation.accuracies,
                          train_seconds=evaluation.train_seconds, seconds=seconds)
        self.timings.append(seconds)
        return float(evaluation.accuracy), float(cost.flops)

    def _evaluated(self, key: str, number: int) -> optuna.trial.FrozenTrial | None:
        """The first complete, non-duplicate trial of ``key`` (None: never evaluated)."""
        return evaluated_trial(self.study, key, number)

    def _save_model(self, trial: optuna.Trial, model, arch: Architecture) -> str:
        return save_model_artifact(self.handle, trial, model)

    def _annotate(self, trial: optuna.Trial, arch: Architecture, *, remark: str | None = None,
                  picture: bool = True, model: Any = None) -> None:
        """The trial's dashboard note and architecture picture; never fails the trial."""
        from poolnas.dashboards import annotate_trial

        store = (self.handle.artifact_store()
                 if picture and self.handle.artifact_dir is not None else None)
        annotate_trial(trial, arch, input_shape=self.data.input_shape,
                       num_classes=self.data.num_classes, artifact_store=store, remark=remark,
                       model=model)

    # ------------------------------------------------------------------ after each trial
    def _after_trial(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        import optuna

        state = frozen.state.name.lower()
        key = frozen.user_attrs.get("architecture", "?")
        if frozen.state == optuna.trial.TrialState.FAIL:
            self._failures += 1
            self._last_failure = frozen.user_attrs.get("fail_reason", "unknown error")
        elif frozen.state == optuna.trial.TrialState.COMPLETE:
            self._failures = 0
        trials = study.get_trials(deepcopy=False)
        front = pareto_front(trials)
        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            snapshot_front(self.handle, study, frozen.number,
                           reference_flops=self.reference_flops, trials=trials)
        note = ""
        if "duplicate_of" in frozen.user_attrs:
            note = f"same as trial {frozen.user_attrs['duplicate_of']}"
        elif "infeasible" in frozen.user_attrs:
            note = "over the FLOPs budget"
        elif frozen.state == optuna.trial.TrialState.FAIL:
            note = frozen.user_attrs.get("fail_reason", "failed")
        self.report(TrialReport(
            number=frozen.number, key=key, state=state,
            accuracy=frozen.values[0] if frozen.values else None,
            flops=int(frozen.values[1]) if frozen.values else None,
            seconds=(frozen.duration.total_seconds() if frozen.duration else 0.0),
            note=note, front_size=len(front),
            best_accuracy=max((t.values[0] for t in front), default=None),
            done=done, total=self.config.trials,
        ))
        if done >= self.config.trials or self._failures >= MAX_CONSECUTIVE_FAILURES:
            self._stop_optimizing(study)

    def _reclaim_dead_trials(self, *, queue_again: bool = True) -> None:
        """Fail the trials of dead workers (and queue each again, unless told not to); report
        each (:func:`~poolnas.search.reclaim_dead_trials`)."""
        for number in reclaim_dead_trials(self.study, grace_period=2 * self.config.heartbeat,
                                          here=self.identity, queue_again=queue_again):
            dead = self.study.trials[number]
            reason = dead.user_attrs.get("fail_reason", "its worker stopped sending heartbeats")
            self._report_failed(dead, reason + "; queued again" if queue_again else reason)

    def _report_failed(self, trial: optuna.trial.FrozenTrial, note: str) -> None:
        """The progress line of a trial failed outside the objective (its worker died)."""
        import optuna

        trials = self.study.get_trials(deepcopy=False)
        front = pareto_front(trials)
        self.report(TrialReport(
            number=trial.number, key=trial.user_attrs.get("architecture", "?"), state="fail",
            note=note, front_size=len(front),
            best_accuracy=max((t.values[0] for t in front), default=None),
            done=sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
            total=self.config.trials,
        ))

    def _stop_optimizing(self, study: optuna.Study) -> None:
        """End ``study.optimize`` after this trial (the KerasTuner engine stops its tuner)."""
        study.stop()

    # ------------------------------------------------------------------ run
    def complete_trials(self) -> int:
        import optuna

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
                        if step == "run":
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
            import signal

            raise KeyboardInterrupt(f"stopped by {signal.Signals(self.stop.signal).name}")
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            raise PoolnasError(
                f"{self._failures} trials failed in a row, last because: {self._last_failure}"
            )
        return pareto_front(self.study.get_trials(deepcopy=False))

    def _next_step(self) -> str:
        """``"run"``, ``"wait"`` or ``"done"``; called while holding the study lock."""
        import optuna

        state = optuna.trial.TrialState
        self._reclaim_dead_trials()
        trials = self.study.get_trials(deepcopy=False)
        complete = sum(t.state == state.COMPLETE for t in trials)
        if complete >= self.config.trials:
            return "done"
        if complete + sum(t.state == state.RUNNING for t in trials) >= self.config.trials:
            return "wait"  # Other workers' trials take the remaining slots.
        # The next trial (its number is the count so far: trials are made under the lock) draws
        # with a seed of its own, so that workers on one study, which share --seed, do not
        # replay each other's draws, and a resumed run does not replay the first one's. Not
        # the surrogate sampler, which already seeds each trial with the seed and its number,
        # nor the grid sampler: its seed shuffles the grid, and trial k takes point k of that
        # order, so every trial, worker and resume must see the one order of the study's seed
        # (a new order per trial proposed points twice while others were left).
        seed = (self.config.seed * 1_000_003 + len(trials)) % 2**32
        if not isinstance(self.study.sampler,
                          (ParetoSurrogateSampler, optuna.samplers.GridSampler)):
            self.study.sampler = self._sampler(seed)
        return "run"

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return make_sampler(self.config.sampler, self.config.space, seed,
                            flops_of=self._flops_of, max_flops=self.config.max_flops)

    def _run_one_trial(self) -> None:
        """One trial through ``study.optimize`` (its heartbeat, retries and callbacks)."""
        import optuna

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

    def _queue_interrupted_trial(self) -> None:
        """Queue the trial a signal interrupted again, so that a resume trains it first."""
        import optuna

        from poolnas.search._workers import retry_callback

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
            import signal

            return f"stopped by {signal.Signals(self.stop.signal).name}"
        return str(error) or "KeyboardInterrupt"

    def _objective_recording_failures(self, trial: optuna.Trial) -> tuple[float, float]:
        self._current_trial = trial._trial_id
        try:
            # Named before other workers may look: none takes it for the trial of a dead one.
            trial.set_user_attr(WORKER_ATTR, self.identity.as_attr())
        finally:
            if self._lock is not None:
                self._lock.release()  # The trial exists: the next worker may count and start.
        beat = (contextlib.nullcontext() if has_optuna_heartbeat(self.study._storage) else
                AttrHeartbeat(self.study._storage, trial._trial_id, self.config.heartbeat))
        try:
            with self.stop.interruptible(), beat:
                return self.objective(trial)
        except KeyboardInterrupt as error:
            self._interrupted_trial = trial._trial_id
            trial.set_user_attr("fail_reason", f"interrupted: {self._stopped_by(error)}")
            raise
        except Exception as error:
            if self.stop.signal is not None:
                # The handler's KeyboardInterrupt landed inside TensorFlow's C++ code, which
                # turned it into another error (seen: a TypeError from nest.flatten).
                why = self._stopped_by(error)
                self._interrupted_trial = trial._trial_id
                trial.set_user_attr("fail_reason", f"interrupted: {why}")
                raise KeyboardInterrupt(why) from error
            reason = f"{type(error).__name__}: {error}".strip()
            trial.set_user_attr("fail_reason", reason.splitlines()[0][:500] if reason else "error")
            raise


def open_study(storage: str, study: str) -> tuple[StorageHandle, optuna.Study]:
    """Open an existing poolnas study read-only-ish (nothing is created).

    Raises:
        PoolnasError: No such storage or study, or not a poolnas study.
    """
    handle = open_storage(storage, create=False)
    loaded = load_study(handle, study)
    if STUDY_ATTR not in loaded.user_attrs:
        raise PoolnasError(f"study {study!r} in {storage} was not created by poolnas")
    return handle, loaded

