"""The Ray runtime behind `breakwater.runtime.Runtime`: the CLI and the client start jobs and
reach a cluster's actors through it, so the plain package never imports Ray. Registered in
pyproject.toml as the entry point `ray` of the group `breakwater.runtime`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from breakwater.config import Settings
    from breakwater.operations import Operations


class RayRuntime:
    def run_job(self, name: str, argv: list[str]) -> int:
        if name == "ingest":
            from jobs.ingest import main
        elif name == "retry":
            from jobs.retry_dlq import main
        else:
            raise ValueError(f"no job named {name!r}: ingest or retry")
        return main(argv)

    def cluster_operations(self, settings: Settings, address: str) -> Operations:
        from actors.operations import ClusterOperations

        return ClusterOperations(settings, address)
