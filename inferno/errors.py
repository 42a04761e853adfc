"""Error vocabulary shared by the core and the worlds.

Bad input is a `ConfigError` whose message names the file, the field path and the value; the
CLI prints it on one line and exits 2. Collect/actuate failures carry `transient` so the
controller can tell "skip this cycle" from "give up".
"""

from __future__ import annotations


class InfernoError(Exception):
    """Base of every error inferno raises on purpose."""


class ConfigError(InfernoError, ValueError):
    """Bad user input: the message carries file, field path and value.

    ``problems`` holds every problem found (one line each) so a whole file is reported at once.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class CollectError(InfernoError):
    """Observations could not be collected; the cycle is skipped."""

    def __init__(self, message: str, *, transient: bool = True,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after_s = retry_after_s


class ActuateError(InfernoError):
    """A decision could not be applied."""

    def __init__(self, message: str, *, transient: bool = True,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after_s = retry_after_s
