"""What a run ran on, recorded beside its figures: a rate means little without the machine,
the library versions and the load it shared the machine with."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil

from jobs.bench.scratch import Scratch


def _cpu_model() -> str:
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )


def server_versions(scratch: Scratch) -> dict[str, Any]:
    """PostgreSQL's and Redis's versions, asked of the servers the scratch stores live on."""
    import psycopg
    import redis

    with psycopg.connect(scratch.admin_url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    client = redis.Redis.from_url(scratch.redis_url)
    redis_version = client.info("server")["redis_version"]
    client.close()
    return {"postgresql": pg, "redis_server": redis_version}


def machine_info(scratch: Scratch | None) -> dict[str, Any]:
    """The machine and versions; the servers' versions only given `scratch` (None when no
    scenario of the run touches a server, e.g. fastpath alone: they are then null)."""
    servers = server_versions(scratch) if scratch is not None else {"postgresql": None, "redis_server": None}
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ray": version("ray"),
        "pyais": version("pyais"),
        "psycopg": version("psycopg"),
        "redis_py": version("redis"),
        **servers,
        "load_average": os.getloadavg(),
    }
