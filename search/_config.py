"""``poolnas search``'s configuration: one validated value, checked before anything is written."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from poolnas.evaluators import DEFAULT_TOLERANCE, Budget, check_runtime
from poolnas.search._multi_fidelity import RungSchedule
from poolnas.search._samplers import SAMPLERS
from poolnas.search._settings import as_json
from poolnas.search._storage import needs_artifact_dir
from poolnas.spaces import PoolnasError, SearchSpace

if TYPE_CHECKING:
    from poolnas.evaluators import Dataset

#: The default storage: a SQLite file in the working directory.
DEFAULT_STORAGE = "sqlite:///poolnas.db"


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
        cost: The second objective: ``flops`` (default) or ``latency`` (predicted ms from a
            per-kernel latency table measured on this machine).
        max_latency: With ``cost="latency"``: candidates predicted slower than this many ms are
            infeasible without training.
        latency_runtime: With ``cost="latency"``: ``keras`` (default) or ``tflite``.
        latency_tolerance: With ``cost="latency"``: how far a kernel's repeat measurements may
            disagree (``(max - min) / min``) before the kernel table is refused.
        latency_table: With ``cost="latency"``: a kernel table file measured elsewhere (the
            deployment device) to use instead of measuring here; it must cover the space.
        artifacts: Directory of the artifact store (default: beside a SQLite database).
        heartbeat: Seconds between the heartbeats of a running trial (database storages). A
            trial whose heartbeat is ``2 * heartbeat`` seconds old is failed and queued again;
            one whose worker ran on this machine and died is failed at once.
        reevaluate: Whether the surrogate sampler may spend a training on another seed of a
            contested architecture (``repeat_of``) instead of a new one (default: True).
        parallel: Trials trained together in one fused training step
            (:func:`~poolnas.evaluators.evaluate_architectures`); 1 (default): one trial at a
            time; None: automatic (:func:`~poolnas.search.auto_parallel`). Each is still its
            own trial, with its own seed and the same result as trained alone.
        min_epochs: Multi-fidelity search (:mod:`._multi_fidelity`): epochs of the lowest rung
            (``--min-epochs``); None (default): every trial trains ``budget.epochs``.
        reduction_factor: With ``min_epochs``: η, the rungs' ratio and the share ``1/η`` a
            rung promotes (default 3).
        epoch_budget: The study also ends once its trials have trained this many epochs in
            total (``--epoch-budget``; None: no such limit).
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
    cost: str = "flops"
    max_latency: float | None = None
    latency_runtime: str = "keras"
    latency_tolerance: float = DEFAULT_TOLERANCE
    latency_table: str | None = None
    artifacts: str | None = None
    heartbeat: int = 60
    reevaluate: bool = True
    parallel: int | None = 1
    min_epochs: int | None = None
    reduction_factor: int | None = None
    epoch_budget: int | None = None
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
        if self.cost not in ("flops", "latency"):
            raise PoolnasError(f"unknown cost {self.cost!r}; choose flops or latency")
        if self.max_latency is not None and not self.max_latency > 0:
            raise PoolnasError(f"--max-latency must be a positive number of ms, "
                               f"got {self.max_latency}")
        if self.max_latency is not None and self.cost != "latency":
            raise PoolnasError("--max-latency is a budget of --cost latency")
        check_runtime(self.latency_runtime)
        if self.latency_table is not None and self.cost != "latency":
            raise PoolnasError("--latency-table is the kernel table of --cost latency")
        if not isinstance(self.heartbeat, int) or self.heartbeat < 1:
            raise PoolnasError(f"--heartbeat must be a positive whole number of seconds, "
                               f"got {self.heartbeat!r}")
        if self.parallel is not None and (isinstance(self.parallel, bool)
                                          or not isinstance(self.parallel, int)
                                          or self.parallel < 1):
            raise PoolnasError(f"--parallel must be a whole number of at least 1, "
                               f"got {self.parallel!r}")
        if not isinstance(self.worker, int) or self.worker < 0:
            raise PoolnasError(f"worker index must be 0 or more, got {self.worker!r}")
        if self.artifacts is None and needs_artifact_dir(self.storage):
            raise PoolnasError(
                "--storage is a database server (or in memory): there is no place beside it for "
                "the trained models; pass --artifacts DIR, a directory every worker can reach"
            )
        if self.budget is None:
            object.__setattr__(self, "budget", Budget())
        if self.reduction_factor is not None and self.min_epochs is None:
            raise PoolnasError("--reduction-factor is an option of multi-fidelity search; "
                               "give --min-epochs as well")
        if self.epoch_budget is not None and (isinstance(self.epoch_budget, bool)
                                              or self.epoch_budget < 1):
            raise PoolnasError(f"--epoch-budget must be a positive number of epochs, "
                               f"got {self.epoch_budget!r}")
        schedule = self.schedule  # Raises on rungs that cannot be.
        if schedule is not None and self.budget.repeats != 1:
            raise PoolnasError("--min-epochs trains one model per architecture; leave out "
                               "--repeats")
        if not self.reevaluate and self.budget.repeats < 1:
            raise PoolnasError("--no-reevaluate with --repeats 0 leaves no training to do; "
                               "use --repeats 1 or more")
        if not self.reevaluate and self.sampler not in ("auto", "surrogate"):
            raise PoolnasError(f"--no-reevaluate is an option of the surrogate sampler; "
                               f"--sampler {self.sampler} never re-evaluates")

    @property
    def schedule(self) -> RungSchedule | None:
        """The rungs of a multi-fidelity search (None without ``min_epochs``).

        Raises:
            PoolnasError: ``min_epochs`` above the epochs, or η below 2.
        """
        if self.min_epochs is None:
            return None
        eta = 3 if self.reduction_factor is None else self.reduction_factor
        return RungSchedule(self.min_epochs, eta, self.budget.epochs)

    def study_settings(self, data: Dataset, *, engine: str | None = None) -> dict[str, Any]:
        """The settings a study of this configuration stores (see :mod:`._settings`)."""
        settings = {
            "dataset": self.dataset,
            "data_options": dict(sorted(self.data_options.items())),
            "seed": self.seed,
            "budget": asdict(self.budget),
            "space": self.space.to_dict(),
            "input_shape": list(data.input_shape),
            "num_classes": int(data.num_classes),
            "input_scale": float(data.input_scale),
            "input_offset": float(data.input_offset),
            "max_flops": self.max_flops,
        }
        if self.cost == "latency":
            settings.update(cost="latency", max_latency=self.max_latency,
                            latency_runtime=self.latency_runtime)
        if engine is not None:
            settings["engine"] = engine
        if self.schedule is not None:
            settings["rungs"] = self.schedule.as_setting()
        return as_json(settings)
