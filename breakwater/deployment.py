"""Which deployment a setting, a record or a cluster belongs to.

A deployment is named (the `deployment` setting, else the Ray namespace) and has a
fingerprint of its stores: where history goes and where the live picture goes, without
secrets. Everything that outlives a job carries the fingerprint: a dead letter is only ever
written into the stores it failed on, the default journal is per deployment, and a command
that reaches a cluster whose actors serve other stores refuses, naming the difference. Two
deployments on one machine, same OS user, never see each other's records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from breakwater.config import Settings
    from breakwater.dead_letters import DeadLetterQueue


def _without_secrets(url: str) -> str:
    """scheme://user@host:port/path?query, no password; SQLite paths made absolute."""
    if url.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).expanduser().resolve())
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://"))
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path or "/", parts.query, ""))


@dataclass(frozen=True)
class Deployment:
    name: str
    stores: tuple[tuple[str, str], ...]  # (what, where), sorted: database, redis

    @classmethod
    def of(cls, settings: Settings) -> Deployment:
        stores = [("database", _without_secrets(settings.database_url))]
        if settings.redis_url:
            stores.append(("redis", f"{_without_secrets(settings.redis_url)} prefix={settings.redis_prefix!r}"))
        return cls(settings.deployment or settings.namespace, tuple(stores))

    @property
    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the stores (not the name: renaming changes nothing)."""
        return hashlib.sha256(json.dumps(self.stores).encode()).hexdigest()[:16]

    @property
    def slug(self) -> str:
        """The journal folder's name: readable, and unique per stores."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return f"{safe}-{self.fingerprint[:8]}"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "fingerprint": self.fingerprint, **dict(self.stores)}

    def differences(self, other: Deployment) -> list[str]:
        """What differs, in words an operator can act on; empty when the stores are the same."""
        mine, theirs = dict(self.stores), dict(other.stores)
        return [
            f"{what}: {theirs.get(what, 'none')} there, {mine.get(what, 'none')} here"
            for what in sorted(set(mine) | set(theirs))
            if mine.get(what) != theirs.get(what)
        ]


def deployment_queue(settings: Settings) -> DeadLetterQueue:
    """The dead-letter queue of this deployment: its journal, bound to its stores."""
    from breakwater.dead_letters import DeadLetterQueue

    return DeadLetterQueue(settings.dlq, settings.retry, destination=Deployment.of(settings).fingerprint)
