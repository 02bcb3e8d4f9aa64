"""Tests for poolnas.search._reclaim, _pool and _locks: worker identity, reclaiming the trials
of dead workers, the study lock across processes, signals. Real processes, real SIGKILL, real
databases; no TensorFlow (the end-to-end runs through the CLI are in test_resilience.py)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from poolnas.search import (
    AttrHeartbeat,
    GracefulStop,
    RetryKilledTrial,
    SearchConfig,
    SearchRunner,
    StudyLock,
    TrialAttrs,
    WorkerIdentity,
    load_study,
    open_storage,
    reclaim_dead_trials,
    thread_split,
)
from poolnas.spaces import SearchSpace

optuna.logging.set_verbosity(optuna.logging.ERROR)

DIRECTIONS = ["maximize", "minimize"]
SPAWN = multiprocessing.get_context("spawn")


def storage_url(backend: str, new_database: Callable[[str], str], tmp_path: Path) -> str:
    if backend == "journal":
        return str(tmp_path / "study.log")
    return new_database(backend)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- Identity --------------------------------------------------------------------------------


def test_identity_round_trips_and_this_process_is_alive() -> None:
    here = WorkerIdentity.current()
    assert here.pid == os.getpid() and here.host
    assert WorkerIdentity.from_attr(here.as_attr()) == here
    assert not here.is_dead(here)
    for junk in (None, "host:1", {"host": "h"}, {"host": "h", "pid": "x"}, []):
        assert WorkerIdentity.from_attr(junk) is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_exited_and_reused_processes_are_dead_others_cannot_be_told() -> None:
    here = WorkerIdentity.current()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert WorkerIdentity(**{**here.as_attr(), "pid": child.pid, "started": 1}).is_dead(here)
    parent = WorkerIdentity(**{**here.as_attr(), "pid": os.getppid(), "started": None})
    assert not parent.is_dead(here)  # Alive, and no start time to compare.
    reused = WorkerIdentity(**{**parent.as_attr(), "started": -1})
    assert reused.is_dead(here)  # Same pid, another process.
    elsewhere = WorkerIdentity(**{**here.as_attr(), "host": here.host + "-other", "pid": child.pid})
    assert not elsewhere.is_dead(here)  # Another machine: only its heartbeat can tell.
    rebooted = WorkerIdentity(**{**here.as_attr(), "boot": "another-boot", "pid": child.pid})
    assert not rebooted.is_dead(here)  # This machine rebooted, or a namesake: heartbeat.


@pytest.mark.parametrize(("workers", "cores", "threads"),
                         [(1, 8, 8), (2, 2, 1), (3, 2, 1), (3, 16, 5), (4, 16, 4)])
def test_thread_split(workers: int, cores: int, threads: int) -> None:
    assert thread_split(workers, cores) == threads


# --- Reclaiming the trials of dead workers ---------------------------------------------------


def _run_trial_then_hang(url: str, ready: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    handle = open_storage(url, create=True)  # Heartbeat every 60 s, grace period 120 s.
    study = optuna.create_study(storage=handle.optuna_storage, study_name="s",
                                directions=DIRECTIONS, load_if_exists=True)

    def hang(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr(TrialAttrs.WORKER, WorkerIdentity.current().as_attr())
        trial.set_user_attr("architecture", "conv3:8x1/max+none:16x1")
        trial.set_user_attr("flops", 123)
        trial.suggest_categorical("point1_op", ["max", "avg", "conv"])
        Path(ready).touch()
        time.sleep(600)
        return 0.0, 0.0

    study.optimize(hang, n_trials=1)


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql", "mysql"])
def test_trial_of_a_killed_worker_is_reclaimed_at_once_and_queued_again(
    backend: str, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = storage_url(backend, new_database, tmp_path)
    ready = tmp_path / "ready"
    worker = SPAWN.Process(target=_run_trial_then_hang, args=(url, str(ready)))
    worker.start()
    try:
        wait_for(ready.exists, "the worker to start its trial")
    finally:
        worker.kill()  # SIGKILL: the trial stays RUNNING, its heartbeat is fresh.
        worker.join()
    with open_storage(url, create=True) as handle:
        study = load_study(handle, "s")
        assert [t.state for t in study.trials] == [TrialState.RUNNING]
        # The grace period has not passed: only the dead process tells.
        assert reclaim_dead_trials(study, grace_period=120) == [0]
        assert reclaim_dead_trials(study, grace_period=120) == []  # Once.
        dead, retry = study.trials
        assert dead.state == TrialState.FAIL
        assert f"pid {worker.pid} died" in dead.user_attrs["fail_reason"]
        assert retry.state == TrialState.WAITING
        assert retry.params == dead.params == {"point1_op": dead.params["point1_op"]}
        assert retry.system_attrs["failed_trial"] == 0
        # Only what names the architecture survives; the rest is measured again.
        assert retry.user_attrs == {"architecture": "conv3:8x1/max+none:16x1", "retry_of": 0}

        # The next trial any worker starts is the retry, with the same parameters.
        seen: list[dict] = []

        def record(trial: optuna.Trial) -> tuple[float, float]:
            seen.append({"number": trial.number,
                         "op": trial.suggest_categorical("point1_op", ["max", "avg", "conv"])})
            return 0.5, 10.0

        study.optimize(record, n_trials=1)
        assert seen == [{"number": 1, "op": dead.params["point1_op"]}]
        assert study.trials[1].state == TrialState.COMPLETE


def _foreign_trial_then_hang(url: str, ready: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    handle = open_storage(url, create=True, heartbeat_interval=1)
    study = optuna.create_study(storage=handle.optuna_storage, study_name="s",
                                directions=DIRECTIONS, load_if_exists=True)

    def hang(trial: optuna.Trial) -> tuple[float, float]:
        # As if it ran on another machine: only its heartbeat can tell that it died.
        trial.set_user_attr(TrialAttrs.WORKER, {"host": "gpu-node-7", "pid": 4242})
        trial.suggest_categorical("point1_op", ["max", "avg", "conv"])
        beat = (contextlib.nullcontext() if handle.optuna_storage.__class__.__name__ ==
                "RDBStorage" else AttrHeartbeat(study._storage, trial._trial_id, 1))
        with beat:
            Path(ready).touch()
            time.sleep(600)
        return 0.0, 0.0

    study.optimize(hang, n_trials=1)


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql"])
def test_trial_of_a_dead_worker_elsewhere_is_reclaimed_after_its_grace_period(
    backend: str, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = storage_url(backend, new_database, tmp_path)
    ready = tmp_path / "ready"
    worker = SPAWN.Process(target=_foreign_trial_then_hang, args=(url, str(ready)))
    worker.start()
    try:
        wait_for(ready.exists, "the worker to start its trial")
        with open_storage(url, create=True, heartbeat_interval=1) as handle:  # Grace: 2 s.
            study = load_study(handle, "s")
            time.sleep(3)
            assert reclaim_dead_trials(study, grace_period=2) == []  # It beats: alive.
            worker.kill()
            worker.join()
            wait_for(lambda: reclaim_dead_trials(study, grace_period=2) == [0],
                     "the heartbeat to go stale", timeout=60)
            assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
            assert study.trials[1].params == study.trials[0].params
            if backend == "journal":
                assert "no heartbeat from worker gpu-node-7" in \
                    study.trials[0].user_attrs["fail_reason"]
    finally:
        worker.kill()
        worker.join()


def test_live_foreign_and_unnamed_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with open_storage(url, create=True, heartbeat_interval=None) as handle:
        study = optuna.create_study(storage=handle.optuna_storage, study_name="s",
                                    directions=DIRECTIONS)
        here = WorkerIdentity.current()
        alive, foreign, unnamed = study.ask(), study.ask(), study.ask()
        alive.set_user_attr(TrialAttrs.WORKER, here.as_attr())
        foreign.set_user_attr(TrialAttrs.WORKER, {**here.as_attr(), "host": "gpu-node-7", "pid": 1})
        assert reclaim_dead_trials(study, grace_period=3600) == []
        # Once older than the grace period, a trial that never said who runs it is dead, and so
        # is one of another machine that stopped beating (this storage has no Optuna heartbeat).
        # One whose process runs here is alive, however old.
        time.sleep(0.05)
        assert reclaim_dead_trials(study, grace_period=0.01) == [foreign.number, unnamed.number]
        trials = study.trials
        assert trials[alive.number].state == TrialState.RUNNING
        assert "before the trial began" in trials[unnamed.number].user_attrs["fail_reason"]
        assert "no heartbeat from worker gpu-node-7" in \
            trials[foreign.number].user_attrs["fail_reason"]


def test_retry_gives_up_after_max_retry(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path / 'x.db'}", create=True,
                      heartbeat_interval=None) as handle:
        study = optuna.create_study(storage=handle.optuna_storage, directions=DIRECTIONS)
        retry = RetryKilledTrial(max_retry=1)
        trial = study.ask()
        trial.suggest_int("x", 0, 9)
        study.tell(trial, state=TrialState.FAIL)
        retry(study, study.trials[-1])
        again = study.ask()  # Pops the retry.
        assert again.number == 1 and again.params == trial.params
        study.tell(again, state=TrialState.FAIL)
        retry(study, study.trials[-1])
        assert len(study.trials) == 2  # The second death is not retried.
        assert retry.reclaimed == [0, 1]


# --- The study lock --------------------------------------------------------------------------


def _count_under_lock(url: str, counter: str, rounds: int) -> None:
    handle = open_storage(url, create=True, heartbeat_interval=None)
    lock = StudyLock(handle, "s")
    path = Path(counter)
    for _ in range(rounds):
        with lock:
            value = int(path.read_text())
            time.sleep(0.002)  # Without the lock, another process writes in between.
            path.write_text(str(value + 1))
    handle.close()


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql", "mysql"])
def test_study_lock_excludes_other_processes(
    backend: str, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = storage_url(backend, new_database, tmp_path)
    open_storage(url, create=True).close()
    counter = tmp_path / "counter"
    counter.write_text("0")
    workers = [SPAWN.Process(target=_count_under_lock, args=(url, str(counter), 15))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=180)
        assert worker.exitcode == 0
    assert int(counter.read_text()) == 45


def _hold_lock(url: str, ready: str) -> None:
    handle = open_storage(url, create=True, heartbeat_interval=None)
    StudyLock(handle, "s").acquire()
    Path(ready).touch()
    time.sleep(600)


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql", "mysql"])
def test_study_lock_dies_with_its_holder(
    backend: str, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = storage_url(backend, new_database, tmp_path)
    ready = tmp_path / "ready"
    holder = SPAWN.Process(target=_hold_lock, args=(url, str(ready)))
    holder.start()
    try:
        wait_for(ready.exists, "the holder to take the lock")
        with open_storage(url, create=True, heartbeat_interval=None) as handle:
            lock = StudyLock(handle, "s")
            other_study = StudyLock(handle, "other")
            acquired = threading.Event()

            def take() -> None:
                lock.acquire()
                acquired.set()

            thread = threading.Thread(target=take, daemon=True)
            thread.start()
            assert not acquired.wait(1.0)  # Held by the holder.
            if backend in ("postgresql", "mysql"):
                with other_study:  # Another study of the same server does not wait.
                    assert other_study.held
            holder.kill()
            assert acquired.wait(60), "the lock of a killed holder was never released"
            thread.join()
            lock.release()
            lock.release()  # Releasing twice is harmless.
            assert not lock.held
    finally:
        holder.kill()
        holder.join()


def test_in_memory_storage_needs_no_lock() -> None:
    with open_storage("sqlite://", create=True) as handle:
        lock = StudyLock(handle, "s")
        assert lock.kind == "none"
        with lock:
            assert lock.held
        with pytest.raises(RuntimeError, match="re-entrant"):
            with lock:
                lock.acquire()


# --- Signals ---------------------------------------------------------------------------------


def test_graceful_stop_interrupts_only_training_and_a_second_signal_at_once() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # Between trials: only asks to stop.
        time.sleep(0.01)
        assert stop.stopping and stop.signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)  # A second signal stops at once.
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before

    with GracefulStop() as stop:
        # Training: the handler raises nothing (the evaluator asks before every batch).
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.signalled() and stop.signal == signal.SIGINT
    assert not GracefulStop().stopping


def test_graceful_stop_request_from_another_thread() -> None:
    stop = GracefulStop()
    assert not stop.stopping
    thread = threading.Thread(target=stop.request)
    thread.start()
    thread.join()
    assert stop.stopping and stop.signal is None
    stop.wait(600)  # Returns at once: the stop was requested (a broken wait hangs the test).


def test_a_signal_turned_into_another_error_by_tensorflow_still_interrupts(tmp_path: Path) -> None:
    space = SearchSpace(points=1, ops=("max", "conv"), skips=("none",))
    config = SearchConfig(storage=f"sqlite:///{tmp_path / 's.db'}", study="s", space=space,
                          trials=2)
    runner = SearchRunner(config)

    def objective(trial):  # What TensorFlow's C++ code made of the handler's KeyboardInterrupt.
        trial.set_user_attr("architecture", runner.config.space.suggest(trial).key)
        runner.stop.signal = signal.SIGINT
        raise TypeError

    runner.objective = objective
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGINT"):
        runner.run()
    trials = runner.study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"] == "interrupted: stopped by SIGINT"
    runner.handle.close()
