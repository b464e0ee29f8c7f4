"""Breakwater's exceptions: one root, a short hierarchy, messages that say what to do next.

Bad *input* is never an exception here: a line that cannot be used becomes a counted
rejection with a reason (see `breakwater.decode`). These exceptions are for configuration
the program cannot run with, and for stores that cannot take a write.
"""

from __future__ import annotations


class BreakwaterError(Exception):
    """Root of every error Breakwater raises on purpose."""


class ConfigError(BreakwaterError):
    """A setting is malformed or points at something that cannot be reached.

    The message always starts with the setting's name, so the program can stop with one
    line that tells the operator what to fix.
    """

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")


class SourceError(BreakwaterError):
    """An input source cannot be opened (missing file, unreachable feed)."""


class StoreError(BreakwaterError):
    """A store could not take a write or answer a query.

    `transient` says whether trying again later can succeed (the store is down, a timeout)
    or not (the data violates a constraint of the store: a poison record).
    """

    transient: bool = True

    def __init__(self, sink: str, message: str) -> None:
        self.sink = sink
        super().__init__(f"{sink}: {message}")


class StoreUnavailable(StoreError):
    """The store is down, unreachable or too slow: retrying later can succeed."""

    transient = True


class PoisonRecord(StoreError):
    """The store will never accept this record as it is (a constraint, a value out of range)."""

    transient = False


class AdminAuthError(BreakwaterError):
    """A destructive admin operation was asked for without the right admin token.

    Set BREAKWATER_ADMIN_TOKEN on the cluster and pass the same token with --admin-token.
    """


class NotFoundError(BreakwaterError):
    """An operation names something the store does not hold (a vessel never seen)."""


class ClusterTimeout(BreakwaterError):
    """A Ray actor or task did not answer within `ray_timeout_s`: the cluster is overloaded,
    or the actor is gone and not coming back. Nothing waits forever on it."""


class QueueUnavailable(ClusterTimeout):
    """The dead-letter queue did not take a batch (its actor did not answer, or is gone):
    the writer holds the batch unacknowledged and tries again."""


class NotRunningError(BreakwaterError):
    """An operation needs a running Breakwater cluster (its named actors) and none was found.

    Start an ingest job first, or point RAY_ADDRESS at the cluster that runs it.
    """
