"""``python -m poolnas.search`` runs the ``poolnas`` command line."""

from __future__ import annotations

import os
import sys

from poolnas.search._cli import EXIT_INTERRUPTED, main


def run() -> None:
    """Run the command line and exit with its code.

    An interrupted command leaves with :func:`os._exit` once its output is flushed: under
    ``python -m``, CPython kills the process with SIGINT at exit (return code -2, not 130) when
    a KeyboardInterrupt was ever raised inside code a C extension ran with ``PyRun_String``,
    even one that was caught, and the signal that stopped a search can land there while
    TensorFlow imports. By then every trial is recorded and every temporary folder removed
    (their ``with`` blocks have unwound), so nothing is left for the interpreter to finish.
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
