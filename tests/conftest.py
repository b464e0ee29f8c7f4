"""Shared fixtures: the real captures, and the servers the integration tests need.

The integration tests talk to a real PostgreSQL on 127.0.0.1:5432 and a real Redis on
127.0.0.1:6379 (scripts/services.sh starts them when they are installed but stopped). When
one cannot be reached the tests fail with a message saying so: they never pass by skipping.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "token")
# No test may read the developer's own settings.
for _name in [n for n in os.environ if n.startswith("BREAKWATER_")]:
    del os.environ[_name]

ROOT = Path(__file__).resolve().parent.parent
KYSTVERKET = ROOT / "data" / "kystverket-2019-tagblock.nmea"
AMSA = ROOT / "data" / "amsa-mixed.nmea.gz"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def amsa_path() -> Path:
    if not AMSA.exists():
        pytest.fail(f"the AMSA capture is missing at {AMSA} (see data/README.md)")
    return AMSA


@pytest.fixture(scope="session")
def kystverket_path() -> Path:
    return KYSTVERKET


def read_lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read().splitlines()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not _reachable("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432: run scripts/services.sh (make test does)")
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    import psycopg

    name = f"bw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_server() -> str:
    if not _reachable("127.0.0.1", 6379):
        pytest.fail("Redis is not reachable on 127.0.0.1:6379: run scripts/services.sh (make test does)")
    return REDIS_URL


@contextmanager
def scratch_redis_prefix(url: str) -> Iterator[str]:
    """A key prefix nobody else uses; its keys are deleted afterwards."""
    import redis

    prefix = f"test{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of one test's own; its keys are deleted afterwards."""
    with scratch_redis_prefix(redis_server) as prefix:
        yield prefix


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'breakwater.sqlite3'}"


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "dead-letters.sqlite3"


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: make test installs Debian's prometheus package")
    return path
