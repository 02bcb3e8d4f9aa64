"""Several workers of one search on one machine: cores, threads, child processes.

:class:`WorkerPool` runs more workers of one search in child processes, each with an equal share
of the CPU cores (workers need no seeds of their own: each trial draws with a seed made of the
study's seed and the trial's number). :func:`quiet_tensorflow` sets up a process (the CLI's and
each child's) so that TensorFlow's start-up chatter stays off the terminal.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial

from poolnas.evaluators import native_stderr_silenced
from poolnas.search._pareto import pareto_front
from poolnas.search._reclaim import POLL_SECONDS
from poolnas.search._runner import SearchRunner
from poolnas.search._signals import handling_signals, quiet_interrupted_trials
from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    from poolnas.search._config import SearchConfig
    from poolnas.search._recorder import TrialHooks
    from poolnas.search._runner import TrialReport


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


def _worker_main(config: SearchConfig, threads: int,
                 report: Callable[[TrialReport], None] | None, hooks: TrialHooks | None,
                 parent: int) -> None:
    """Entry point of a child worker process."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # Signals reach it only through the parent, which forwards each once.
    quiet_tensorflow()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_interrupted_trials()
    warnings.simplefilter("ignore", ExperimentalWarning)
    configure_threads(threads)
    try:
        runner = SearchRunner(config, report=report, hooks=hooks)

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
        hooks: The children's :class:`~poolnas.search.TrialHooks` (they must pickle too).
    """

    def __init__(self, config: SearchConfig, count: int, *, threads: int,
                 report: Callable[[TrialReport], None] | None = None,
                 hooks: TrialHooks | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self.processes = [
            context.Process(
                target=_worker_main, name=f"poolnas-worker-{i}",
                args=(replace(config, worker=config.worker + i), threads, report, hooks,
                      os.getpid()),
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

        def forward(signum: int, frame: Any) -> None:
            self.signal(signum)

        with handling_signals(forward):
            yield

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
    if count < 1:
        return runner.run()
    pool = WorkerPool(runner.config, count, threads=threads, report=report,
                      hooks=runner.recorder.hooks)
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


def quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up chatter (C++ logs on fd 2) silenced."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
