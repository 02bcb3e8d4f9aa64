"""Serve optuna-dashboard on a poolnas storage and its artifact store.

The server is optuna-dashboard's own WSGI app on a threaded ``wsgiref`` server (what
``optuna-dashboard`` itself runs without gunicorn), so that a browser's parallel requests do not
queue behind each other. It binds the loopback address unless told otherwise, prints the URL it
really listens on (``--port 0`` picks a free port), logs only failed requests, and stops cleanly
on Ctrl-C (or SIGTERM): the listening socket and the database connections are closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from poolnas.search import open_storage, recorded_artifacts
from poolnas.spaces import PoolnasError


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request; threads do not keep the process alive after Ctrl-C."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Logs server errors only: the dashboard polls, and a line per request buries the URL."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).isdigit() and int(code) >= 500:
            super().log_request(code, size)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Let SIGINT (Ctrl-C, ``kill -INT``) and SIGTERM (a service manager's stop) end the server.

    SIGINT is handled explicitly: a process started in the background by a non-interactive
    shell (``poolnas dashboard &`` in a script) inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(storage: str, *, host: str = "127.0.0.1", port: int = 8080,
          artifacts: str | None = None) -> int:
    """Serve optuna-dashboard for ``storage`` until Ctrl-C. Returns the exit status.

    The dashboard shows every study of the storage, and the trained models and architecture
    pictures of their trials from the artifact store (beside an SQLite or journal file, or
    ``artifacts``). It has no authentication and can delete studies, so it binds to the loopback
    address unless told otherwise, and warns when it is not.

    Args:
        storage: An Optuna storage URL or journal file path; it must exist.
        host: The address to bind.
        port: The port; 0 picks a free one (the printed URL says which).
        artifacts: The artifact directory, for a database server (default: beside the file).

    Raises:
        PoolnasError: The storage cannot be opened, or the address cannot be bound.
    """
    import optuna_dashboard

    handle = open_storage(storage, create=False, artifacts=artifacts)
    recorded = recorded_artifacts(handle) if artifacts is None else None
    if recorded is not None and recorded != handle.artifact_dir:
        handle = dataclasses.replace(handle, artifact_dir=recorded)
        print(f"poolnas: artifacts: {recorded} (recorded by the searches; --artifacts "
              "overrides)", file=sys.stderr, flush=True)
    with handle:
        store = handle.artifact_store() if handle.artifact_dir is not None else None
        app = optuna_dashboard.wsgi(handle.optuna_storage, artifact_store=store)
        bind = host.strip("[]")
        server_class = _Server6 if ":" in bind else _Server
        try:
            server = make_server(bind, port, app, server_class=server_class,
                                 handler_class=_QuietHandler)
        except OverflowError:
            raise PoolnasError(f"--port must be from 0 to 65535, got {port}") from None
        except OSError as error:
            raise PoolnasError(
                f"cannot serve on {host}:{port}: {error.strerror or error}"
            ) from None
        # The handlers go in before the URL is printed: whoever reads the URL may send SIGINT
        # at once, and a process that inherited SIGINT ignored would otherwise never stop.
        try:
            with _stop_on_signals():
                if not is_loopback(bind):
                    print(f"poolnas: warning: serving on {host}: optuna-dashboard has no "
                          "authentication and anyone who reaches this address can read and "
                          "delete studies", file=sys.stderr, flush=True)
                if store is None:
                    print("poolnas: warning: no artifact store for this storage, so trained "
                          "models and pictures are not shown; pass --artifacts DIR",
                          file=sys.stderr, flush=True)
                shown = f"[{bind}]" if ":" in bind else bind
                print(f"optuna-dashboard for {handle.display_url} on "
                      f"http://{shown}:{server.server_port}/ (Ctrl-C to stop)", flush=True)
                server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    print("dashboard stopped", flush=True)
    return 0

