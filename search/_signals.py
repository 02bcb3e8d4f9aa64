"""Ctrl-C and SIGTERM during a search: stop cleanly, say it in one line.

:class:`GracefulStop` makes SIGINT and SIGTERM stop a search cleanly: a trial being trained is
failed (and queued again), one being recorded is finished first; a second signal stops at once.
:func:`interrupt_on_signals` covers the start of a command, before a search runs, and
:func:`quiet_interrupted_trials` keeps Optuna from burying that one line under a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


# ---------------------------------------------------------------------- signals
class GracefulStop:
    """SIGINT and SIGTERM during a search.

    The first signal only records itself: a model being trained stops at its next batch (the
    evaluator asks :meth:`signalled` before every batch and raises :class:`KeyboardInterrupt`;
    the trial is failed and queued again), and at any other moment the search stops before its
    next trial, so what is being written is finished. The handler itself never raises then: an
    exception raised from a signal handler lands wherever the interpreter happens to be (a
    garbage-collection callback, TensorFlow's C++ code), where it is lost or printed as an
    "Exception ignored" traceback. A second signal raises at once. Handlers installed before
    (e.g. one that forwards signals to child workers) are called first. Handlers can only be
    installed in the main thread; elsewhere only :meth:`request` stops.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._requested = threading.Event()
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

    def _handle(self, signum: int, frame: Any) -> None:
        previous = self._previous.get(signum)
        if callable(previous) and previous not in (signal.default_int_handler, _interrupt):
            previous(signum, frame)
        if self.signal is None:
            self.signal = signum
            return
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


#: The signals :func:`interrupt_on_signals` turned into KeyboardInterrupt (see
#: :func:`signal_arrived`).
_ARRIVED: list[int] = []


def _interrupt(signum: int, frame: Any) -> None:
    _ARRIVED.append(signum)
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def signal_arrived() -> bool:
    """Whether SIGINT or SIGTERM arrived inside the last :func:`interrupt_on_signals`: its
    KeyboardInterrupt may have landed in a library that reports it as an error of its own
    (Keras, interrupted while importing ``optree``, says "you need to have `optree`
    installed"), and that error is still the user's Ctrl-C."""
    return bool(_ARRIVED)


@contextlib.contextmanager
def handling_signals(handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """While inside, ``handler`` handles SIGINT and SIGTERM; the handlers before come back
    after. Only the main thread can install handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in GracefulStop.SIGNALS}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


def interrupt_on_signals() -> contextlib.AbstractContextManager[None]:
    """While inside, SIGINT and SIGTERM raise :class:`KeyboardInterrupt` (SIGTERM would kill
    the process without a word): for the whole of a command, so that its first seconds, before
    a :class:`GracefulStop` takes over (which does not chain to this handler), are covered."""
    _ARRIVED.clear()
    return handling_signals(_interrupt)


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
