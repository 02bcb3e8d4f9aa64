"""Workers of a study: who runs each trial, whether it still runs, and K processes on one machine.

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

:class:`GracefulStop` makes Ctrl-C (SIGINT) and SIGTERM stop a search cleanly: a trial being
trained is failed (and queued again), one being recorded is finished first; a second signal stops
at once. :class:`WorkerPool` runs more workers of one search in child processes, each with an
equal share of the CPU cores (workers need no seeds of their own: each trial draws with a seed
made of the study's seed and the trial's number).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from poolnas.search._study import SearchConfig, SearchRunner, TrialReport

#: The user attr of a trial that names the worker running it.
WORKER_ATTR = "worker"
#: The user attr of a failed trial that says why.
FAIL_REASON_ATTR = "fail_reason"
#: The user attr a running trial's :class:`AttrHeartbeat` refreshes (storages without Optuna's).
HEARTBEAT_ATTR = "heartbeat"
#: User attrs a retried trial keeps from the attempt that died (the rest is measured again).
_KEPT_BY_RETRY = ("architecture",)
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
        kept = {k: v for k, v in trial.user_attrs.items() if k in _KEPT_BY_RETRY}
        kept["retry_of"] = trial.system_attrs.get("failed_trial", trial.number)
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
    beat = trial.user_attrs.get(HEARTBEAT_ATTR)
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
                self._storage.set_trial_user_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
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
        identity = WorkerIdentity.from_attr(trial.user_attrs.get(WORKER_ATTR))
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
            storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, reason)
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


# ---------------------------------------------------------------------- signals
class GracefulStop:
    """SIGINT and SIGTERM during a search.

    The first signal while a model trains raises :class:`KeyboardInterrupt` there (the trial is
    failed and queued again); at any other moment it only asks the search to stop before its
    next trial, so what is being written is finished. A second signal raises at once. Handlers
    installed before (e.g. one that forwards signals to child workers) are called first.
    Handlers can only be installed in the main thread; elsewhere only :meth:`request` stops.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._requested = threading.Event()
        self._interruptible = False
        self._previous: dict[int, Any] = {}

    @property
    def stopping(self) -> bool:
        """Whether a signal or :meth:`request` asked the search to stop."""
        return self.signal is not None or self._requested.is_set()

    def signalled(self) -> bool:
        """Whether SIGINT or SIGTERM arrived (not :meth:`request`): for the evaluator's check
        before each training batch, in case the exception raised by the handler was lost."""
        return self.signal is not None

    def request(self) -> None:
        """Ask the search to stop before its next trial (thread-safe)."""
        self._requested.set()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if :meth:`request` is called."""
        self._requested.wait(seconds)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """While inside, the first signal interrupts (a model being trained)."""
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _handle(self, signum: int, frame: Any) -> None:
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        first = self.signal is None
        if first:
            self.signal = signum
        if not first or self._interruptible:
            self._interruptible = False
            raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


# ---------------------------------------------------------------------- threads and processes
def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_split(workers: int, cores: int | None = None) -> int:
    """TensorFlow threads per worker when ``workers`` share ``cores``: ``cores // workers``,
    at least 1."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, workers))


def configure_threads(threads: int) -> bool:
    """Set TensorFlow's intra- and inter-op threads; whether it took effect (it cannot once
    TensorFlow has run an operation in this process)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return True


class _QuietInterrupts(logging.Filter):
    """Drops Optuna's warning, with its full traceback, about a trial that Ctrl-C stopped.

    poolnas says it in one line instead (the trial's progress line and ``fail_reason``); Optuna's
    two records (the traceback, then "failed with value None") would bury it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        number = message.split(" failed with ", 1)[0]
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self._interrupted.add(number)
            return False
        if number in self._interrupted and message.endswith("failed with value None."):
            self._interrupted.discard(number)
            return False
        return True


def quiet_interrupted_trials() -> None:
    """Install :class:`_QuietInterrupts` on Optuna's optimize logger (once per process)."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietInterrupts) for f in logger.filters):
        logger.addFilter(_QuietInterrupts())


def _worker_main(config: SearchConfig, threads: int,
                 report: Callable[[TrialReport], None] | None, parent: int) -> None:
    """Entry point of a child worker process."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # Signals reach it only through the parent, which forwards each once.
    from poolnas.search._cli import _quiet_tensorflow
    from poolnas.search._study import SearchRunner
    from poolnas.spaces import PoolnasError

    _quiet_tensorflow()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_interrupted_trials()
    warnings.simplefilter("ignore", ExperimentalWarning)
    configure_threads(threads)
    try:
        runner = SearchRunner(config, report=report)

        def watch_parent() -> None:  # A worker whose parent is gone finishes its trial and stops.
            while os.getppid() == parent:
                time.sleep(POLL_SECONDS)
            runner.request_stop()

        threading.Thread(target=watch_parent, daemon=True).start()
        runner.run()
    except PoolnasError as error:
        print(f"poolnas: error: worker {config.worker}: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


class WorkerPool:
    """Child processes that run more workers of one search.

    Each child is a :class:`~poolnas.search.SearchRunner` on the same study with
    ``worker = 1, 2, …`` and ``threads`` TensorFlow threads. Children sit in
    their own process group: Ctrl-C reaches the parent, which forwards each signal once
    (:meth:`forward_signals`). A child whose parent died finishes its trial and stops.

    Args:
        config: The parent's configuration (worker 0).
        count: How many children.
        threads: TensorFlow threads per child.
        report: Called in the child after each of its trials; must pickle (a module-level
            function or a ``functools.partial`` of one).
    """

    def __init__(self, config: SearchConfig, count: int, *, threads: int,
                 report: Callable[[TrialReport], None] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self.processes = [
            context.Process(
                target=_worker_main, name=f"poolnas-worker-{i}",
                args=(replace(config, worker=config.worker + i), threads, report, os.getpid()),
            )
            for i in range(1, count + 1)
        ]
        self.signalled: int | None = None
        for process in self.processes:
            process.start()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every child still running."""
        self.signalled = self.signalled or signum
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    @contextlib.contextmanager
    def forward_signals(self) -> Iterator[None]:
        """While inside, SIGINT and SIGTERM to this process are sent on to the children (a
        :class:`GracefulStop` installed inside chains to this)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def forward(signum: int, frame: Any) -> None:
            self.signal(signum)

        previous = {s: signal.signal(s, forward) for s in GracefulStop.SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def wait(self) -> list[int]:
        """Wait for every child; their exit codes (negative: killed by that signal)."""
        for process in self.processes:
            process.join()
        return [int(process.exitcode or 0) for process in self.processes]

    def stop(self) -> list[int]:
        """SIGTERM the children (each fails its running trial and stops); wait for them."""
        self.signal(signal.SIGTERM)
        return self.wait()


def run_with_workers(runner: SearchRunner, count: int, *, threads: int,
                     report: Callable[[TrialReport], None] | None = None) -> list[FrozenTrial]:
    """Run ``runner`` in this process and ``count`` more workers of its study in child processes.

    Call it after ``runner`` was created (the study exists and its settings were checked), and
    set this process's TensorFlow threads first (:func:`configure_threads`).

    Args:
        runner: This process's runner (worker 0).
        count: Child workers; 0 runs ``runner`` alone.
        threads: TensorFlow threads of each child.
        report: Progress callback of the children (see :class:`WorkerPool`).

    Returns:
        The Pareto front once every worker has stopped.

    Raises:
        PoolnasError: A child stopped with an error (it printed it), or trials keep failing.
        KeyboardInterrupt: SIGINT or SIGTERM stopped the workers; each failed and queued again
            the trial it was training.
    """
    from poolnas.search._pareto import pareto_front
    from poolnas.spaces import PoolnasError

    if count < 1:
        return runner.run()
    pool = WorkerPool(runner.config, count, threads=threads, report=report)
    with pool.forward_signals():
        try:
            runner.run()
        except KeyboardInterrupt:
            if pool.signalled is None:  # Not a forwarded signal: stop the children too.
                pool.signal(signal.SIGINT)
            pool.wait()
            raise
        except BaseException:
            pool.stop()
            raise
        codes = pool.wait()
    if pool.signalled is not None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(pool.signalled).name}")
    failed = [code for code in codes if code != 0]
    if failed:
        raise PoolnasError(
            f"{len(failed)} of {count} worker processes stopped with exit status "
            f"{', '.join(map(str, failed))}; their messages are above"
        )
    return pareto_front(runner.study.get_trials(deepcopy=False))
