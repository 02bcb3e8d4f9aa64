"""Optuna trials that KerasTuner drives: asked and told outside ``study.optimize``.

When KerasTuner runs the loop (:class:`~poolnas.search.OptunaOracle` and
``poolnas search --engine keras-tuner``), a poolnas trial is opened when KerasTuner starts one and
told when KerasTuner ends it; what it records in between is the
:class:`~poolnas.search.TrialRecorder`'s.

- :class:`LiveTrial` gives such a trial what ``study.optimize`` gives the CLI's: it names its
  worker (``TrialAttrs.WORKER``, so that other workers do not take it for the trial of a dead
  process) and keeps a heartbeat on database storages, so that a process that dies is noticed
  like any other worker.
- :class:`RunningCandidate` is a KerasTuner trial's live Optuna trial and the recorder's
  :class:`~poolnas.search.Candidate` while it runs.
- :class:`FixedSampler` makes a trial take the values that KerasTuner chose.
- :class:`UntriedSampler` wraps a sampler so that a proposal is an architecture the study has
  not tried, while there is one (a resumed search explores instead of repeating itself).
"""

from __future__ import annotations

import random
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from poolnas.search._reclaim import WorkerIdentity
from poolnas.search._trial_attrs import TrialAttrs

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from poolnas.search._recorder import Candidate


@dataclass
class RunningCandidate:
    """A KerasTuner trial's Optuna trial while it runs.

    Attributes:
        live: The Optuna trial, told when KerasTuner ends the trial.
        candidate: What the recorder began (its ``values`` are set when no training is needed).
    """

    live: LiveTrial
    candidate: Candidate


class FixedSampler(optuna.samplers.BaseSampler):
    """Suggests the values in :attr:`params` (what KerasTuner chose), nothing of its own."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                           param_name: str, param_distribution: BaseDistribution) -> Any:
        return self.params[param_name]


class UntriedSampler(optuna.samplers.BaseSampler):
    """Proposes, through ``inner``, a configuration that ``tried`` says is new.

    All the parameters of a static categorical space are drawn at once (relative sampling):
    ``inner``'s own relative proposal completed by its independent draws, drawn again while
    ``tried`` says the configuration was tried (at most ``attempts`` times), then a random
    untried configuration (at most ``attempts`` random picks); when none is found the last
    proposal stands (it is a duplicate, which the recorder completes without training).

    Args:
        inner: The sampler that proposes.
        space: Parameter name → its values.
        tried: Whether a configuration (name → value) was tried already.
        seed: Seeds the random untried picks.
        attempts: How many draws of each kind.
    """

    def __init__(self, inner: optuna.samplers.BaseSampler, space: Mapping[str, tuple], *,
                 tried: Callable[[dict[str, Any]], bool], seed: int | None = None,
                 attempts: int = 10) -> None:
        self.inner = inner
        self.space = {name: tuple(values) for name, values in space.items()}
        self.tried = tried
        self.attempts = attempts
        self._rng = random.Random(seed)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {name: optuna.distributions.CategoricalDistribution(list(values))
                for name, values in self.space.items()}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        inner_space = self.inner.infer_relative_search_space(study, trial)
        params: dict[str, Any] = {}
        for _ in range(self.attempts):
            params = dict(self.inner.sample_relative(study, trial, inner_space)
                          if inner_space else {})
            for name, distribution in search_space.items():
                if name not in params:
                    params[name] = self.inner.sample_independent(study, trial, name,
                                                                  distribution)
            if not self.tried(params):
                return params
        for _ in range(self.attempts):
            pick = {name: self._rng.choice(values) for name, values in self.space.items()}
            if not self.tried(pick):
                return pick
        return params

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                           param_name: str, param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: optuna.trial.TrialState, values: Any) -> None:
        self.inner.after_trial(study, trial, state, values)


class LiveTrial:
    """A running Optuna trial that is told by the caller, not by ``study.optimize``.

    Args:
        study: The study.
        params: Values the trial must take (queued as a fixed trial), or None to let the study's
            sampler choose.
        identity: The worker that runs it (default: this process).
    """

    def __init__(self, study: optuna.Study, *, params: Mapping[str, Any] | None = None,
                 identity: WorkerIdentity | None = None) -> None:
        self.study = study
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for study.optimize; this class keeps one.
            warnings.simplefilter("ignore")
            if params is not None:
                study.enqueue_trial(dict(params))
            self.trial = study.ask()
        identity = identity or WorkerIdentity.current()
        self.trial.set_user_attr(TrialAttrs.WORKER, identity.as_attr())
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        storage = study._storage
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        if interval:
            trial_id = self.trial._trial_id
            storage.record_heartbeat(trial_id)

            def beat() -> None:
                while not self._stopped.wait(interval):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:  # a lost connection must not kill the training
                        pass

            self._thread = threading.Thread(target=beat, name="poolnas-heartbeat", daemon=True)
            self._thread.start()

    @property
    def number(self) -> int:
        return self.trial.number

    def tell(self, values: tuple[float, float] | None, *, reason: str = "") -> bool:
        """Finish the trial: COMPLETE with ``values``, or FAIL (``values`` None) with a reason.

        Returns:
            Whether the sampler asked the study to stop (a grid with no point left).
        """
        self._stop_heartbeat()
        try:
            if values is None:
                self.trial.set_user_attr(TrialAttrs.FAIL_REASON, (reason or "failed")[:500])
                self.study.tell(self.trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(self.trial, [float(v) for v in values])
        except RuntimeError as error:
            # A sampler calls study.stop(), which is refused outside study.optimize, after the
            # trial's state and values were stored.
            if "Study.stop" not in str(error):
                raise
            return True
        return False

    def frozen(self) -> optuna.trial.FrozenTrial:
        """The trial as stored now."""
        return self.study._storage.get_trial(self.trial._trial_id)

    def _stop_heartbeat(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def last_line(message: str | None, default: str = "failed") -> str:
    """The last non-empty line of a (traceback) message: the exception itself."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[-1][:500] if lines else default
