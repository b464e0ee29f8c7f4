"""The seam between the plain package and the cluster that runs it.

The CLI and the client start jobs and reach a running deployment's actors, but `breakwater`
must not import Ray, `actors/` or `jobs/`. They go through a `Runtime`: the interface here,
implemented over Ray by `jobs.runtime.RayRuntime` and registered in pyproject.toml as the
entry point `ray` of the group `breakwater.runtime`. Tests pass a runtime of their own.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol

from breakwater.errors import BreakwaterError

if TYPE_CHECKING:
    from breakwater.config import Settings
    from breakwater.operations import Operations

ENTRY_POINT_GROUP = "breakwater.runtime"


class Runtime(Protocol):
    def run_job(self, name: str, argv: list[str]) -> int:
        """Run the job `name` ("ingest" or "retry") with command-line arguments; its exit code."""
        ...

    def cluster_operations(self, settings: Settings, address: str) -> Operations:
        """Operations through the actors of the cluster at `address`, checked to serve the
        deployment of `settings`; NotRunningError when it has no Breakwater actors, ConfigError
        when it cannot be reached or serves another deployment."""
        ...


def load_runtime(name: str = "ray") -> Runtime:
    """The runtime registered under `name`; BreakwaterError when the package is not installed
    with it (pip install -e . registers it)."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        raise BreakwaterError(f"no Breakwater runtime {name!r} is installed: run `pip install -e .` (make install)")
    runtime: Runtime = next(iter(found)).load()()
    return runtime


def named_address(flag: str | None, configured: str | None) -> str | None:
    """The Ray cluster an operator named: the flag, else RAY_ADDRESS, else the deployment's
    `ray_address` setting. None when nobody named one: a job then starts a local cluster of its
    own, and operations work on the journal; nothing joins a cluster by guessing."""
    return flag or os.environ.get("RAY_ADDRESS") or configured or None
