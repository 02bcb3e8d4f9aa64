"""Native (C++) output silenced: TensorFlow's import chatter, the TFLite converter's MLIR dump."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """While inside, file descriptor 2 goes to ``os.devnull``: what C++ code writes there (it
    bypasses ``sys.stderr``) is dropped; Python's own errors are raised as usual and reported
    by the caller after fd 2 is back."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
