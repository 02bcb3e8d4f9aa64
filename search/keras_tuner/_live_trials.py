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
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
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
