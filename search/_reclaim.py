"""Dead workers' trials: who runs each trial, whether it still runs, and its retry.

Every trial a poolnas worker starts names its worker (user attr ``worker``): host name, process
id, and what tells a live process from a dead one on that host (the kernel's boot id, the PID
namespace and the process's start time). Before each trial a worker reclaims the trials of dead
workers (:func:`reclaim_dead_trials`):

- a trial whose worker ran on this machine and is no longer running (SIGKILL, a crash, out of
  memory) is failed at once;
- a trial whose heartbeat is older than the grace period is failed: this is how a dead worker on
  another machine is noticed (Optuna's heartbeat on database storages; on journal files, which
  have none, :class:`AttrHeartbeat` refreshes the trial's user attr ``heartbeat``);
- a trial that never named its worker (its process died within milliseconds of creating it) is
  failed once it is older than the grace period.

Each failed trial is queued again (a ``WAITING`` trial with the same parameters, see
:class:`RetryKilledTrial`), and the next trial any worker starts is that retry.
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from poolnas.search._trial_attrs import TrialAttrs

#: How often a worker that waits for other workers' trials looks again (seconds).
POLL_SECONDS = 1.0

try:  # Optuna >= 4.9 renamed the callback.
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryCallback
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _RetryCallback


# ---------------------------------------------------------------------- identity
def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rpartition(")")[2].split()  # The command name may hold spaces and parentheses.
    try:
        return int(fields[19])  # Field 22 of proc(5); fields[0] is field 3.
    except (IndexError, ValueError):
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class WorkerIdentity:
    """Which process on which machine runs a trial.

    Attributes:
        host: The host name.
        pid: The process id.
        boot: The kernel's boot id (Linux), different after every reboot; None elsewhere.
        pidns: The inode of the PID namespace (containers on one kernel differ); None elsewhere.
        started: The process's start time in clock ticks since boot (tells a reused pid apart).
    """

    host: str
    pid: int
    boot: str | None = None
    pidns: int | None = None
    started: int | None = None

    @classmethod
    def current(cls) -> WorkerIdentity:
        """The identity of this process."""
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid,
                   boot=_read("/proc/sys/kernel/random/boot_id"), pidns=_pid_namespace(),
                   started=_process_start(pid))

    def as_attr(self) -> dict[str, Any]:
        """The JSON value stored in the trial's ``worker`` user attr."""
        return asdict(self)

    @classmethod
    def from_attr(cls, value: Any) -> WorkerIdentity | None:
        """Read a ``worker`` user attr back; None if it is missing or not one."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(host=str(value["host"]), pid=int(value["pid"]), boot=value.get("boot"),
                       pidns=value.get("pidns"), started=value.get("started"))
        except (KeyError, TypeError, ValueError):
            return None

    def runs_here(self, here: WorkerIdentity) -> bool:
        """Whether this identity belongs to the same running kernel and PID namespace as
        ``here``, so that its process id can be looked up locally."""
        return (self.host == here.host and self.boot is not None and self.boot == here.boot
                and self.pidns == here.pidns)

    def is_dead(self, here: WorkerIdentity | None = None) -> bool:
        """Whether the process is certainly gone. False when it lives or cannot be checked
        from here (another machine: the heartbeat tells)."""
        here = here or WorkerIdentity.current()
        # A different boot id may be this machine after a reboot or another machine of the
        # same name: only the heartbeat can tell, so neither counts as dead here.
        if not self.runs_here(here):
            return False
        if self.pid == here.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # It exists and belongs to someone else.
        started = _process_start(self.pid)
        return self.started is not None and started is not None and started != self.started


# ---------------------------------------------------------------------- reclaiming dead trials
class RetryKilledTrial(_RetryCallback):
    """Optuna's retry of a dead trial, for poolnas trials.

    The retry is a ``WAITING`` trial with the same parameters (so the same architecture) and
    ``system_attrs["failed_trial"]`` naming the first attempt. Of the dead attempt's user attrs it
    keeps only the architecture key and adds ``retry_of``: timings, worker and artifacts are
    measured again.

    Args:
        max_retry: How often one architecture is retried; None for no limit.
    """

    def __init__(self, max_retry: int | None = 3) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        #: Numbers of the dead trials this callback was called for (read and cleared by
        #: :func:`reclaim_dead_trials`).
        self.reclaimed: list[int] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.reclaimed.append(trial.number)
        trial = copy.deepcopy(trial)
        kept = {k: v for k, v in trial.user_attrs.items() if k in TrialAttrs.KEPT_BY_RETRY}
        kept[TrialAttrs.RETRY_OF] = trial.system_attrs.get("failed_trial", trial.number)
        trial.user_attrs = kept
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            super().__call__(study, trial)


def retry_callback(storage: Any) -> Callable[[optuna.Study, FrozenTrial], None]:
    """The storage's own retry of stale trials, or a :class:`RetryKilledTrial`."""
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    callback = getter() if getter is not None else None
    return callback if callback is not None else RetryKilledTrial()


def _age_seconds(started: datetime.datetime | None) -> float:
    if started is None:
        return 0.0
    return (datetime.datetime.now() - started).total_seconds()  # Optuna stores local time.


def _silent_seconds(trial: FrozenTrial) -> float:
    """Seconds since the trial's last :class:`AttrHeartbeat` (or its start)."""
    beat = trial.user_attrs.get(TrialAttrs.HEARTBEAT)
    if isinstance(beat, (int, float)):
        return time.time() - float(beat)
    return _age_seconds(trial.datetime_start)


def has_optuna_heartbeat(storage: Any) -> bool:
    """Whether the storage keeps Optuna's heartbeat of running trials (database storages)."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


class AttrHeartbeat:
    """A heartbeat for storages without Optuna's (journal files).

    While inside, a thread writes the time (Unix seconds) into the running trial's user attr
    ``heartbeat`` every ``interval`` seconds, so that workers on other machines can tell a trial
    whose worker died. It stops by itself once the trial is finished.

    Args:
        storage: The Optuna storage.
        trial_id: The running trial.
        interval: Seconds between beats.
    """

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while True:
            try:
                self._storage.set_trial_user_attr(self._trial_id, TrialAttrs.HEARTBEAT, time.time())
            except Exception:  # noqa: BLE001 - finished, or the storage is gone: stop beating
                return
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> AttrHeartbeat:
        self._thread = threading.Thread(target=self._beat, name="poolnas-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def reclaim_dead_trials(study: optuna.Study, *, grace_period: float,
                        here: WorkerIdentity | None = None,
                        queue_again: bool = True) -> list[int]:
    """Fail the running trials of ``study`` whose worker is gone, and queue each again.

    Safe when several workers reclaim at once: a trial is failed (and queued) by one of them.

    Args:
        study: The study.
        grace_period: Seconds without a heartbeat (or, for a trial that never named its
            worker, since it started) before a trial counts as dead.
        here: This worker's identity (default: this process).
        queue_again: False: only fail them (for a search whose candidates come from
            elsewhere, e.g. a KerasTuner tuner, which would never run a queued trial). Then
            only trials whose process on this machine is gone are failed.

    Returns:
        The numbers of the trials failed here.
    """
    here = here or WorkerIdentity.current()
    storage = study._storage
    retry = retry_callback(storage) if queue_again else None
    seen = getattr(retry, "reclaimed", [])
    optuna_heartbeat = has_optuna_heartbeat(storage)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        identity = WorkerIdentity.from_attr(trial.user_attrs.get(TrialAttrs.WORKER))
        if identity is None:
            if _age_seconds(trial.datetime_start) <= grace_period:
                continue
            reason = "its worker died before the trial began"
        elif identity.is_dead(here):
            reason = (f"worker {identity.host} pid {identity.pid} died during the trial "
                      "(killed, crashed or the machine restarted)")
        elif identity.runs_here(here) or optuna_heartbeat or not queue_again:
            continue  # Alive here; elsewhere Optuna's heartbeat tells (below), or no one.
        elif (silent := _silent_seconds(trial)) > grace_period:
            reason = (f"no heartbeat from worker {identity.host} pid {identity.pid} for "
                      f"{silent:.0f} s (it stopped, or its machine did)")
        else:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, TrialAttrs.FAIL_REASON, reason)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # Another worker reclaimed it, or it finished after all.
        if retry is None:
            seen.append(trial.number)
        else:
            retry(study, storage.get_trial(trial._trial_id))
    if optuna_heartbeat and queue_again:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # Calls ``retry`` for each stale trial.
    reclaimed = sorted(set(seen))
    seen.clear()
    return reclaimed
