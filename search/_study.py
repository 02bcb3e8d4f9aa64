"""Running a study: create or resume, the objective, samplers, dedup, snapshots, progress.

Only this module creates Optuna studies and trials. One trial is one architecture drawn from the
:class:`~poolnas.spaces.SearchSpace`; its two values are validation accuracy (maximize) and FLOPs
(minimize). What a trial stores (user attrs):

``architecture`` (the key), ``flops``, ``macs``, ``params``, ``epochs``, ``train_seconds``,
``accuracy_std`` and ``accuracies`` (one per seed), ``seconds`` (build/train/evaluate/storage
split), ``model_artifact`` (the Optuna artifact id of the trained ``.keras`` file), and, where
they apply, ``duplicate_of`` (the trial whose results were reused), ``infeasible`` (why the
FLOPs budget ruled it out) or ``fail_reason``.

The study itself stores (user attr ``poolnas``) what its trials depend on: the data set and its
options, the training budget, the space, the input shape and the hypervolume reference. A resume
with different settings is refused instead of mixing incomparable trials.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from poolnas.search._pareto import hypervolume, pareto_front
from poolnas.search._storage import StorageHandle, load_study, open_storage
from poolnas.spaces import Architecture, PoolnasError, SearchSpace

if TYPE_CHECKING:
    import optuna

    from poolnas.evaluators import Budget, Dataset

DEFAULT_STORAGE = "sqlite:///poolnas.db"
SAMPLERS = ("tpe", "nsga2", "random", "grid")
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
        sampler: ``tpe`` (default), ``nsga2``, ``random`` or ``grid``.
        space: The search space.
        dataset: Data set spec (``digits``, a Keras data set name, an ``.npz``, a folder).
        data_options: Keyword options of :func:`poolnas.evaluators.load_dataset`.
        budget: Training budget of one trial.
        seed: Seeds the sampler and the training of every trial.
        max_flops: Candidates above this are recorded as infeasible without training.
        artifacts: Directory of the artifact store (default: beside a SQLite database).
    """

    study: str = "poolnas"
    storage: str = DEFAULT_STORAGE
    trials: int = 20
    timeout: float | None = None
    sampler: str = "tpe"
    space: SearchSpace = field(default_factory=SearchSpace)
    dataset: str = "digits"
    data_options: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None
    seed: int = 0
    max_flops: int | None = None
    artifacts: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.study, str) or not self.study.strip():
            raise PoolnasError("--study must be a non-empty name")
        if self.trials < 1:
            raise PoolnasError(f"--trials must be at least 1, got {self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise PoolnasError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if self.sampler not in SAMPLERS:
            raise PoolnasError(
                f"unknown sampler {self.sampler!r}; choose one of: {', '.join(SAMPLERS)}"
            )
        if self.max_flops is not None and self.max_flops < 1:
            raise PoolnasError(f"--max-flops must be a positive number, got {self.max_flops}")
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


def make_sampler(name: str, space: SearchSpace, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``--sampler``.

    Raises:
        PoolnasError: Unknown name.
    """
    import optuna

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
    """FLOPs/MACs/params of architectures on one input, built once per key and cached."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *,
                 input_scale: float = 1.0, input_offset: float = 0.0) -> None:
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self._scale = (input_scale, input_offset)
        self._cache: dict[str, Any] = {}

    def __call__(self, arch: Architecture):
        if arch.key not in self._cache:
            import keras

            from poolnas.evaluators import count_cost
            from poolnas.spaces import build_model

            model = build_model(arch, self.input_shape, self.num_classes,
                                input_scale=self._scale[0], input_offset=self._scale[1])
            self._cache[arch.key] = count_cost(model)
            del model
            keras.backend.clear_session()
        return self._cache[arch.key]

    def largest(self, space: SearchSpace) -> int:
        """The largest FLOPs of ``space``, by coordinate ascent over its parameters.

        Exact when the points' costs are independent (fixed widths, as in the presets); a lower
        bound otherwise. It fixes the hypervolume's reference point for the whole study.
        """
        params = {name: values[0] for name, values in space.parameters().items()}
        best = self(space.architecture(params)).flops
        for _ in range(2):
            improved = False
            for name, values in space.parameters().items():
                for value in values:
                    candidate = {**params, name: value}
                    flops = self(space.architecture(candidate)).flops
                    if flops > best:
                        best, params, improved = flops, candidate, True
            if not improved:
                break
        return best


def study_settings(config: SearchConfig, data: Dataset) -> dict[str, Any]:
    """The settings a study's trials depend on (stored on the study, checked on resume)."""
    return {
        "dataset": config.dataset,
        "data_options": dict(sorted(config.data_options.items())),
        "budget": asdict(config.budget),
        "space": config.space.to_dict(),
        "input_shape": list(data.input_shape),
        "num_classes": int(data.num_classes),
        "input_scale": float(data.input_scale),
        "input_offset": float(data.input_offset),
        "max_flops": config.max_flops,
    }


def _check_resume(name: str, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key in ("dataset", "data_options", "budget", "space", "max_flops"):
        if stored.get(key) != wanted.get(key):
            raise PoolnasError(
                f"study {name!r} was created with a different {key.replace('_', ' ')} "
                f"({stored.get(key)!r}); resume it with the same options or use a new --study"
            )


class SearchRunner:
    """Runs (or resumes) one study. State: the study, its storage, data and caches."""

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
        self.costs = CostModel(self.data.input_shape, self.data.num_classes,
                               input_scale=self.data.input_scale,
                               input_offset=self.data.input_offset)
        self.handle: StorageHandle = open_storage(config.storage, create=True,
                                                  artifacts=config.artifacts)
        self.study = self._create_or_resume()
        settings = self.study.user_attrs[STUDY_ATTR]
        self.reference_flops = int(settings["reference_flops"])
        self._failures = 0
        self._last_failure = ""
        self.timings: list[dict[str, float]] = []

    # ------------------------------------------------------------------ set-up
    def _create_or_resume(self) -> optuna.Study:
        import optuna

        config = self.config
        wanted = study_settings(config, self.data)
        existing = {s.study_name for s in self.handle.optuna_storage.get_all_studies()}
        sampler = make_sampler(config.sampler, config.space, config.seed)
        if config.study in existing:
            study = optuna.load_study(study_name=config.study,
                                      storage=self.handle.optuna_storage, sampler=sampler)
            stored = study.user_attrs.get(STUDY_ATTR)
            if stored is None or study.directions != [
                optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE
            ]:
                raise PoolnasError(
                    f"study {config.study!r} in {config.storage} was not created by poolnas; "
                    "choose another --study"
                )
            _check_resume(config.study, stored, wanted)
            return study
        wanted["reference_flops"] = int(self.costs.largest(config.space))
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
        from poolnas.evaluators import evaluate_architecture

        started = time.perf_counter()
        arch = self.config.space.suggest(trial)
        trial.set_user_attr("architecture", arch.key)
        cost = self.costs(arch)
        for name in ("flops", "macs", "params"):
            trial.set_user_attr(name, int(getattr(cost, name)))
        trial.set_user_attr("epochs", self.config.budget.epochs)

        original = self._evaluated(arch.key, trial.number)
        if original is not None:
            for name in ("accuracy_std", "accuracies", "train_seconds", "model_artifact",
                         "infeasible"):
                if name in original.user_attrs:
                    trial.set_user_attr(name, original.user_attrs[name])
            trial.set_user_attr("duplicate_of", original.number)
            for name, value in original.constraints.items():
                trial.set_constraint(name, value)
            return float(original.values[0]), float(original.values[1])

        budget = self.config.max_flops
        if budget is not None:
            trial.set_constraint("flops_budget", float(cost.flops - budget))
        if budget is not None and cost.flops > budget:
            trial.set_user_attr("infeasible", f"{cost.flops} FLOPs > budget {budget}")
            trial.set_user_attr("train_seconds", 0.0)
            return 0.0, float(cost.flops)

        evaluation = evaluate_architecture(arch, self.data, self.config.budget,
                                           seed=self.config.seed * 100_003 + trial.number)
        stored_at = time.perf_counter()
        artifact_id = self._save_model(trial, evaluation.model, arch)
        seconds = dict(evaluation.seconds)
        seconds["storage"] = time.perf_counter() - stored_at
        seconds["total"] = time.perf_counter() - started
        trial.set_user_attr("model_artifact", artifact_id)
        trial.set_user_attr("accuracy_std", float(evaluation.accuracy_std))
        trial.set_user_attr("accuracies", [float(a) for a in evaluation.accuracies])
        trial.set_user_attr("train_seconds", round(float(evaluation.train_seconds), 3))
        trial.set_user_attr("seconds", {k: round(float(v), 3) for k, v in seconds.items()})
        self.timings.append(seconds)
        return float(evaluation.accuracy), float(cost.flops)

    def _evaluated(self, key: str, number: int) -> optuna.trial.FrozenTrial | None:
        """The first complete, non-duplicate trial of ``key`` (None: never evaluated)."""
        import optuna

        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if (t.number != number and t.user_attrs.get("architecture") == key
                    and "duplicate_of" not in t.user_attrs):
                return t
        return None

    def _save_model(self, trial: optuna.Trial, model, arch: Architecture) -> str:
        import optuna

        with tempfile.TemporaryDirectory(prefix="poolnas-") as tmp:
            path = os.path.join(tmp, f"trial{trial.number:05d}.keras")
            model.save(path)
            return optuna.artifacts.upload_artifact(
                artifact_store=self.handle.artifact_store(), file_path=path,
                study_or_trial=trial, mimetype="application/octet-stream",
            )

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
            members = [(t.number, float(t.values[0]), float(t.values[1])) for t in front]
            volume = hypervolume([(a, f) for _, a, f in members],
                                 reference_flops=self.reference_flops)
            self.handle.snapshots.record(study.study_name, frozen.number, members, volume,
                                         self.reference_flops, n_complete=done)
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
        if done >= self.config.trials:
            study.stop()
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            study.stop()

    # ------------------------------------------------------------------ run
    def complete_trials(self) -> int:
        import optuna

        return len(self.study.get_trials(deepcopy=False,
                                         states=(optuna.trial.TrialState.COMPLETE,)))

    def run(self) -> list[optuna.trial.FrozenTrial]:
        """Run until the study has ``trials`` complete trials (or the timeout). Returns the front.

        Raises:
            PoolnasError: Trials keep failing (the set-up, not one architecture, is broken).
        """
        remaining = self.config.trials - self.complete_trials()
        if remaining > 0:
            self.study.optimize(
                self._objective_recording_failures,
                n_trials=None,
                timeout=self.config.timeout,
                catch=(Exception,),
                callbacks=[self._after_trial],
                gc_after_trial=True,
            )
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            raise PoolnasError(
                f"{self._failures} trials failed in a row, last because: {self._last_failure}"
            )
        return pareto_front(self.study.get_trials(deepcopy=False))

    def _objective_recording_failures(self, trial: optuna.Trial) -> tuple[float, float]:
        try:
            return self.objective(trial)
        except Exception as error:
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

