"""The one exception type for mistakes a user can make."""

from __future__ import annotations


class PoolnasError(ValueError):
    """A user-caused problem: bad key, bad space file, bad data, bad storage.

    The message is a complete sentence that says what is wrong and what to do. The command line
    prints it as ``poolnas: error: <message>`` and exits with status 2.
    """
