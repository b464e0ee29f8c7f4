"""The `breakwater` command against real stores that are missing, unreachable or mistyped,
and the README's query examples as written: each failure is one line naming the setting,
exit 2; a query never creates a store; every store's times come back in `datetime.UTC`.

The stores are built by writing decoded captures straight through the sinks: no Ray here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, select

from breakwater import Client
from breakwater.cli import main
from breakwater.stores import schema
from breakwater.stores.engine import check_database
from breakwater.stores.redis import RedisSink
from breakwater.stores.sql import SqlSink
from tests.conftest import KYSTVERKET, REDIS_URL
from tests.integration.test_stores import decoded_batches, haversine_km

BREAKWATER = str(Path(sys.executable).with_name("breakwater"))
DATABASE = "BREAKWATER_DATABASE_URL (--database-url)"
REDIS = "BREAKWATER_REDIS_URL (--redis-url)"
QUERIES = [
    ["counts"],
    ["latest", "257591700"],
    ["track", "257591700", "--limit", "3"],
    ["vessel", "257591700"],
    ["nearby", "-33.86", "151.2", "--radius-km", "30"],
    ["box", "-34", "151", "-33", "152"],
]
QUERY_IDS = [q[0] for q in QUERIES]


def build_store(database_url: str, capture: Path, redis_prefix: str | None = None) -> None:
    check_database(database_url, timeout_s=5)
    sinks: list[SqlSink | RedisSink] = [SqlSink(database_url)]
    if redis_prefix is not None:
        sinks.append(RedisSink(REDIS_URL, prefix=redis_prefix))
    for batch in decoded_batches(capture):
        for sink in sinks:
            sink.write(sink.prepare(batch)[0])
    for sink in sinks:
        sink.close()


@pytest.fixture(scope="module")
def amsa_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The AMSA capture (Australian waters: negative latitudes) in a SQLite store."""
    url = f"sqlite:///{tmp_path_factory.mktemp('amsa') / 'breakwater.sqlite3'}"
    build_store(url, Path(__file__).resolve().parents[2] / "data" / "amsa-mixed.nmea.gz")
    return url


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What a person's shell gives the command: a PATH and a HOME, no BREAKWATER_* settings."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), **extra}


def breakwater(*args: str, cwd: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BREAKWATER, *args], cwd=cwd, env=clean_env(home, **env), capture_output=True, text=True, timeout=120
    )


def within(database_url: str, lat: float, lon: float, radius_km: float) -> list[tuple[int, float]]:
    """(MMSI, km) of every latest position within the radius, nearest first, computed from
    the table with this test's own great-circle distance."""
    engine = create_engine(database_url)
    lp = schema.latest_positions
    with engine.connect() as conn:
        rows = conn.execute(select(lp.c.mmsi, lp.c.lat, lp.c.lon).where(lp.c.lat.is_not(None))).all()
    engine.dispose()
    found = [(mmsi, round(haversine_km(lat, lon, a, b), 3)) for mmsi, a, b in rows]
    return sorted(((m, d) for m, d in found if d <= radius_km), key=lambda hit: (hit[1], hit[0]))


def test_the_readme_nearby_example_runs_as_written(amsa_store: str, tmp_path: Path) -> None:
    expected = within(amsa_store, -33.86, 151.2, 30)
    assert len(expected) == 50
    done = breakwater(
        "--database-url",
        amsa_store,
        "--json",
        "nearby",
        "-33.86",
        "151.2",
        "--radius-km",
        "30",
        cwd=tmp_path,
        home=tmp_path,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert [(v["mmsi"], v["distance_km"]) for v in json.loads(done.stdout)] == expected
    table = breakwater(
        "--database-url",
        amsa_store,
        "nearby",
        "-33.86",
        "151.2",
        "--radius-km",
        "30",
        cwd=tmp_path,
        home=tmp_path,
        COLUMNS="80",
    )
    assert table.returncode == 0
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert "…" not in table.stdout
    shown = [line.split("│")[1:4] for line in table.stdout.splitlines() if line.startswith("│ 5")]
    assert [c.strip() for c in shown[0]] == ["503419300", "-33.85567", "151.202738"]


def test_a_negative_box_in_process(amsa_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", amsa_store, "--json", "box", "-33.87", "151.19", "-33.85", "151.21"]) == 0
    boxed = json.loads(capsys.readouterr().out)
    engine = create_engine(amsa_store)
    lp = schema.latest_positions
    with engine.connect() as conn:
        inside = conn.execute(
            select(lp.c.mmsi)
            .where(lp.c.lat.between(-33.87, -33.85), lp.c.lon.between(151.19, 151.21))
            .order_by(lp.c.mmsi)
        )
        expected = [row[0] for row in inside]
    engine.dispose()
    assert [v["mmsi"] for v in boxed] == expected
    assert len(expected) == 4


USAGE = [
    (
        ["latest", "-5"],
        "Error: Invalid value for 'MMSI': MMSI must be a 9-digit number, 000000001 to 999999999, not '-5'",
    ),
    (
        ["latest", "abc"],
        "Error: Invalid value for 'MMSI': MMSI must be a 9-digit number, 000000001 to 999999999, not 'abc'",
    ),
    (["nosuchcmd"], "Error: No such command 'nosuchcmd'."),
    (["box", "59", "10", "60"], "Error: Missing argument 'east'."),
    ([], "Error: Missing command."),
]


@pytest.mark.parametrize(("argv", "reason"), USAGE, ids=[" ".join(a) or "no-args" for a, _ in USAGE])
def test_the_installed_command_prints_usage_errors_and_exits_2(argv: list[str], reason: str, tmp_path: Path) -> None:
    done = breakwater(*argv, cwd=tmp_path, home=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("Usage: breakwater")
    assert done.stderr.endswith(f"\n{reason}\n")
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("query", QUERIES, ids=QUERY_IDS)
def test_a_query_in_an_empty_folder_says_there_is_no_store_and_leaves_nothing(query: list[str], tmp_path: Path) -> None:
    folder, home = tmp_path / "empty", tmp_path / "home"
    folder.mkdir()
    home.mkdir()
    done = breakwater(*query, cwd=folder, home=home)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"breakwater: {DATABASE}: there is no Breakwater store at {folder / 'breakwater.sqlite3'}: "
        "run an ingest job first, or point --database-url at one\n"
    )
    assert os.listdir(folder) == []
    assert os.listdir(home) == []


def test_a_sqlite_file_that_is_not_a_store_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.sqlite3"
    engine = create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE notes (text TEXT)")
    engine.dispose()
    assert main(["--database-url", f"sqlite:///{other}", "counts"]) == 2
    assert capsys.readouterr().err == (
        f"breakwater: {DATABASE}: sqlite:///{other} is not a Breakwater store (it has no breakwater_schema table): "
        "run an ingest job first, or point --database-url at one\n"
    )


@pytest.mark.parametrize("query", QUERIES, ids=QUERY_IDS)
def test_an_unreachable_postgresql_is_one_line(query: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", "postgresql://postgres@127.0.0.1:1/x", *query]) == 2
    assert capsys.readouterr() == (
        "",
        f"breakwater: {DATABASE}: cannot use postgresql+psycopg://postgres@127.0.0.1:1/x: connection failed: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused\n',
    )


@pytest.fixture
def missing_database(postgres_server: str) -> str:
    return f"bw_missing_{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("query", QUERIES, ids=QUERY_IDS)
def test_a_missing_postgresql_database_is_one_line(
    query: list[str], missing_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/{missing_database}"
    assert main(["--database-url", url, *query]) == 2
    assert capsys.readouterr() == (
        "",
        f"breakwater: {DATABASE}: cannot use postgresql+psycopg://postgres@127.0.0.1:5432/{missing_database}: "
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        f'FATAL:  database "{missing_database}" does not exist\n',
    )


def test_an_empty_postgresql_database_is_named_and_left_empty(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", postgres_url, "counts"]) == 2
    name = postgres_url.rsplit("/", 1)[1]
    assert capsys.readouterr().err == (
        f"breakwater: {DATABASE}: postgresql+psycopg://postgres@127.0.0.1:5432/{name} is not a Breakwater store "
        "(it has no breakwater_schema table): run an ingest job first, or point --database-url at one\n"
    )
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone() == (0,)


@pytest.mark.parametrize("query", [q for q in QUERIES if q[0] in ("latest", "nearby", "box")], ids=str)
def test_an_unreachable_redis_is_one_line(
    query: list[str], amsa_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", amsa_store, "--redis-url", "redis://127.0.0.1:1/0", *query]) == 2
    assert capsys.readouterr() == (
        "",
        f"breakwater: {REDIS}: cannot use redis://127.0.0.1:1/0: "
        "Error 111 connecting to 127.0.0.1:1. Connection refused.\n",
    )


@pytest.fixture
def three_stores(tmp_path: Path, postgres_url: str, redis_prefix: str) -> Iterator[dict[str, Client]]:
    """The Kystverket capture in SQLite, in PostgreSQL, and in PostgreSQL with Redis."""
    sqlite_url = f"sqlite:///{tmp_path / 'breakwater.sqlite3'}"
    build_store(sqlite_url, KYSTVERKET)
    build_store(postgres_url, KYSTVERKET, redis_prefix)
    clients = {
        "sqlite": Client(database_url=sqlite_url),
        "postgresql": Client(database_url=postgres_url),
        "redis": Client(database_url=postgres_url, redis_url=REDIS_URL, redis_prefix=redis_prefix),
    }
    yield clients
    for client in clients.values():
        client.close()


def test_every_store_answers_in_datetime_utc(three_stores: dict[str, Client]) -> None:
    mmsi = 257591700
    answers: dict[str, list[datetime | None]] = {}
    for name, client in three_stores.items():
        latest, vessel, counts = client.latest(mmsi), client.vessel(257110940), client.counts()
        assert latest is not None and vessel is not None
        near = client.nearby(latest.lat or 0.0, latest.lon or 0.0, 1.0)
        answers[name] = [
            latest.received_at,
            *(p.received_at for p in client.track(mmsi)),
            vessel.static_received_at,
            counts.first_received_at,
            counts.last_received_at,
            near[0].received_at,
        ]
    for name, times in answers.items():
        assert [t is not None and t.tzinfo is UTC for t in times] == [True] * len(times), name
    assert answers["sqlite"] == answers["postgresql"] == answers["redis"]
    first, last = datetime(2019, 8, 7, 22, 59, 58, tzinfo=UTC), datetime(2019, 8, 7, 23, 0, 27, tzinfo=UTC)
    # latest, the one-point track, the static report, the store's first and last, nearby
    assert answers["sqlite"] == [first, first, first, first, last, first]
