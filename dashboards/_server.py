"""Serve optuna-dashboard on a poolnas storage and its artifact store."""

from __future__ import annotations

import ipaddress
import sys

from poolnas.spaces import PoolnasError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(storage: str, *, host: str = "127.0.0.1", port: int = 8080,
          artifacts: str | None = None) -> int:
    """Serve optuna-dashboard until Ctrl-C. Returns the exit status.

    The dashboard has no authentication and can delete studies, so it binds to the loopback
    address unless told otherwise, and warns when it is not.

    Raises:
        PoolnasError: The storage cannot be opened, or the port is taken.
    """
    import optuna_dashboard

    from poolnas.search._storage import open_storage

    handle = open_storage(storage, create=False, artifacts=artifacts)
    if not _is_loopback(host):
        print(f"poolnas: warning: serving on {host}: optuna-dashboard has no authentication and "
              "anyone who reaches this address can read and delete studies", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"optuna-dashboard for {storage} on http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    store = handle.artifact_store() if handle.artifact_dir is not None else None
    try:
        optuna_dashboard.run_server(handle.optuna_storage, host=host, port=port,
                                    artifact_store=store)
    except OSError as error:
        raise PoolnasError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    except KeyboardInterrupt:
        pass
    print("dashboard stopped", flush=True)
    return 0
