"""Schema downgrades on SQLite, with no servers: each one leaves exactly the tables, columns and
indexes the older version defines, keeps every row, refuses what would lose data silently, and
`breakwater schema` / `schema downgrade` say so with the usual exit codes. The same checks on
PostgreSQL, through the ingest job, and against the previous release itself are in
tests/integration/test_schema_rollback.py."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, inspect, select, text
from sqlalchemy.engine import Dialect

from breakwater.admin import token_digest
from breakwater.cli import main
from breakwater.decode import BatchDecoder
from breakwater.framing import Reader
from breakwater.fusion import FusionWindow
from breakwater.journal import Snapshots
from breakwater.reports import FLAG_CLOCK_AHEAD, FLAG_DEMOTED, ReportBatch, with_flag
from breakwater.stores import schema
from breakwater.stores.deployment import save_admin_digest
from breakwater.stores.engine import make_engine
from breakwater.stores.sql import SqlSink
from breakwater.stores.sql_queries import SqlQueries
from tests.conftest import AMSA, KYSTVERKET, read_lines

HISTORY = ("positions", "static_reports", "other_messages")
TOKEN = "t0ken"
AMSA_LINES = 5000

# -- what a store holds: its shape and its rows -----------------------------------------------


# PostgreSQL keeps a FLOAT without precision as DOUBLE PRECISION, and reports it so.
POSTGRES_TYPE_NAMES = {"FLOAT": "DOUBLE PRECISION"}


def type_name(type_: Any, dialect: Dialect) -> str:
    name = str(type_.compile(dialect=dialect))
    return POSTGRES_TYPE_NAMES.get(name, name) if dialect.name == "postgresql" else name


def schema_shape(engine: Engine) -> dict[str, Any]:
    """What the database itself says it has, per table: columns in order (name, type as the
    dialect writes it, nullable), primary key, and indexes."""
    found = inspect(engine)
    dialect = engine.dialect
    return {
        name: {
            "columns": [(c["name"], type_name(c["type"], dialect), c["nullable"]) for c in found.get_columns(name)],
            "primary_key": found.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(name)),
        }
        for name in sorted(found.get_table_names())
    }


def defined_shape(version: int, engine: Engine) -> dict[str, Any]:
    """The same, as `define_tables(md, version)` describes it."""
    dialect = engine.dialect
    tables = schema.define_tables(MetaData(), version)
    return {
        name: {
            "columns": [(c.name, type_name(c.type, dialect), c.nullable) for c in table.columns],
            "primary_key": [c.name for c in table.primary_key.columns],
            "indexes": sorted((i.name, tuple(c.name for c in i.columns)) for i in table.indexes),
        }
        for name, table in sorted(tables.items())
    }


def table_rows(engine: Engine, table: Table) -> tuple[int, str]:
    """How many rows a table holds and a SHA-256 of all of them, in primary-key order."""
    digest = hashlib.sha256()
    order = list(table.primary_key.columns) or list(table.columns)
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(*order)).all()
    for row in rows:
        digest.update(repr(tuple(row)).encode())
    return len(rows), digest.hexdigest()


def contents(engine: Engine, version: int) -> dict[str, tuple[int, str]]:
    """Every table's rows, read as version `version` defines the tables; the schema's own
    version row and the deployment's settings are left out (a downgrade changes them)."""
    tables = schema.define_tables(MetaData(), version)
    return {
        name: table_rows(engine, table)
        for name, table in tables.items()
        if name not in ("breakwater_schema", "breakwater_settings")
    }


def stored_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return schema.current_version(conn)


# -- a store with real data ------------------------------------------------------------------


def write_captures(url: str) -> None:
    """The Kystverket capture and the first AMSA_LINES lines of AMSA's (which has the other
    messages too) through the SQL store's own write path, as the ingest job writes them."""
    sink = SqlSink(url)
    for path, lines in ((KYSTVERKET, None), (AMSA, AMSA_LINES)):
        reader, decoder = Reader(path.name, max_lines=1000), BatchDecoder(1)
        batches = [b for line in read_lines(path)[:lines] if (b := reader.feed(line))]
        if (last := reader.close()) is not None:
            batches.append(last)
        for batch in batches:
            sink.write(decoder.decode(batch).shards[0])
    sink.close()


@pytest.fixture(scope="module")
def capture_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store at the latest version holding the captures, written once per module."""
    path = tmp_path_factory.mktemp("captures") / "store.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    schema.migrate(engine)
    engine.dispose()
    write_captures(f"sqlite:///{path}")
    return path


@pytest.fixture
def store(capture_store: Path, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A copy of the capture store, and the admin token's digest where the ingest job records
    it: the store and the dead-letter journal."""
    shutil.copy(capture_store, tmp_path / "store.sqlite3")
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    engine = make_engine(url)
    save_admin_digest(url, token_digest(TOKEN), timeout_s=10)
    snapshots = Snapshots(tmp_path / "dead-letters.sqlite3")
    snapshots.save("deployment", "admin_token_sha256", {"sha256": token_digest(TOKEN)})
    snapshots.close()
    yield url, engine
    engine.dispose()


def test_every_table_of_the_capture_store_has_rows(store: tuple[str, Engine]) -> None:
    """The checks below compare rows: every table must have some to compare."""
    _, engine = store
    assert {name: n for name, (n, _) in contents(engine, schema.LATEST_VERSION).items()} == {
        "positions": 3556,
        "static_reports": 324,
        "other_messages": 692,
        "latest_positions": 1256,
        "vessels": 258,
        "receptions": 0,  # a second receiver's copies: test_a_downgrade_from_4_keeps_receptions_unless_forced
    }


# -- downgrades --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", range(1, schema.LATEST_VERSION))
def test_a_downgrade_leaves_what_the_older_version_defines_and_keeps_every_row(
    store: tuple[str, Engine], target: int
) -> None:
    _, engine = store
    before = contents(engine, target)
    everything = contents(engine, schema.LATEST_VERSION)
    assert schema_shape(engine) == defined_shape(schema.LATEST_VERSION, engine)

    done = schema.downgrade(engine, target)
    assert (done.before, done.after) == (schema.LATEST_VERSION, target)
    assert stored_version(engine) == target
    assert schema_shape(engine) == defined_shape(target, engine)
    assert contents(engine, target) == before

    assert schema.migrate(engine) == (target, schema.LATEST_VERSION)
    assert schema_shape(engine) == defined_shape(schema.LATEST_VERSION, engine)
    assert contents(engine, schema.LATEST_VERSION) == everything


def test_each_step_says_what_the_operator_must_know(store: tuple[str, Engine]) -> None:
    _, engine = store
    assert schema.downgrade(engine, 2).notes == (
        "dropped the flag column of positions, static_reports and other_messages",
        "dropped receptions (it was empty)",
        "dropped breakwater_settings and the admin token's digest it held: a version-2 release "
        "checks the BREAKWATER_ADMIN_TOKEN of whoever runs an admin command, so set it there; "
        "after upgrading again, admin commands are refused until an ingest job started with "
        "BREAKWATER_ADMIN_TOKEN records the token again",
    )
    assert schema.downgrade(engine, 1).notes == ("dropped vessels.deleted_at and the index latest_positions_lat_lon",)
    schema.migrate(engine)
    # The upgraded store has an empty settings table: admin operations wait for the next job.
    with engine.connect() as conn:
        assert conn.execute(select(schema.deployment_settings)).all() == []


def soft_delete(url: str, *mmsis: int) -> None:
    queries = SqlQueries(url)
    for mmsi in mmsis:
        assert queries.delete_vessel(mmsi)
    queries.close()


def test_soft_deleted_vessels_refuse_a_downgrade_to_1_and_change_nothing(store: tuple[str, Engine]) -> None:
    url, engine = store
    soft_delete(url, 257591700, 257110940)
    before = schema_shape(engine), contents(engine, schema.LATEST_VERSION)
    history = {name: contents(engine, 1)[name] for name in HISTORY}

    with pytest.raises(schema.SchemaError) as refused:
        schema.downgrade(engine, 1)
    assert str(refused.value) == (
        "2 vessel(s) are soft-deleted and version 1 has no soft delete, so they would be shown again: "
        "purge them (purge-deleted --yes) or bring them back (restore-vessel MMSI) first, "
        "or pass --force to show them again"
    )
    # One transaction: the step 3 -> 2 that ran before the refusal is undone as well.
    assert stored_version(engine) == schema.LATEST_VERSION
    assert (schema_shape(engine), contents(engine, schema.LATEST_VERSION)) == before

    assert schema.downgrade(engine, 2).after == 2  # version 2 keeps soft delete: no refusal
    forced = schema.downgrade(engine, 1, force=True)
    assert forced.notes[-1] == "2 soft-deleted vessel(s) are shown again (--force)"
    assert schema_shape(engine) == defined_shape(1, engine)
    assert {name: contents(engine, 1)[name] for name in HISTORY} == history
    with engine.connect() as conn:
        shown = conn.execute(text("SELECT COUNT(*) FROM vessels WHERE mmsi IN (257591700, 257110940)")).scalar_one()
    assert shown == 2


def test_a_downgrade_from_4_keeps_receptions_unless_forced(store: tuple[str, Engine]) -> None:
    """A second receiver's copies of the Kystverket capture are receptions of the reports the
    first one stored; dropping them loses who heard what, so it needs force, and every
    report stays."""
    url, engine = store
    window, sink = FusionWindow(5.0), SqlSink(url)
    for receiver in ("receiver-a", "receiver-b"):
        reader, decoder = Reader(receiver, max_lines=1000), BatchDecoder(1)
        batches = [b for line in read_lines(KYSTVERKET) if (b := reader.feed(line))]
        if (last := reader.close()) is not None:
            batches.append(last)
        for batch in batches:
            sink.write(window.admit(decoder.decode(batch).shards[0]).batch)
    sink.close()
    held = contents(engine, 4)["receptions"][0]
    assert held == 876
    before = schema_shape(engine), contents(engine, 4)

    with pytest.raises(schema.SchemaError, match=f"receptions holds {held} row"):
        schema.downgrade(engine, 3)
    assert stored_version(engine) == schema.LATEST_VERSION  # one transaction: 5 -> 4 undone too
    assert (schema_shape(engine), contents(engine, 4)) == before

    history = {name: contents(engine, 3)[name] for name in HISTORY}
    assert schema.downgrade(engine, 3, force=True).notes == (
        "dropped the flag column of positions, static_reports and other_messages",
        f"dropped receptions ({held} row(s))",
    )
    assert schema_shape(engine) == defined_shape(3, engine)
    assert {name: contents(engine, 3)[name] for name in HISTORY} == history


def test_a_downgrade_from_5_keeps_flagged_reports_unless_forced(store: tuple[str, Engine]) -> None:
    """Version 4 has no flag: a flagged static report would win a vessel's merge there, so
    dropping the flags needs force, and every report stays (unflagged)."""
    url, engine = store
    sink = SqlSink(url)
    ahead = (257000999, 2_334_337_317_000, 1, 1, 60.0, 5.0, 0.0, None, None, None, None, "r9", "tag_block", None)
    echo = (257000999, 2_334_337_318_000, 2, 5, *([None] * 10), "GHOST", "r9", "tag_block", None)
    sink.write(ReportBatch("feed", 0, [with_flag(ahead, FLAG_CLOCK_AHEAD)], [with_flag(echo, FLAG_DEMOTED)]))
    sink.close()
    before = schema_shape(engine), contents(engine, schema.LATEST_VERSION)

    with pytest.raises(schema.SchemaError) as refused:
        schema.downgrade(engine, 4)
    assert str(refused.value) == (
        "2 history row(s) are flagged implausible (positions 1, static_reports 1) and version 4 has no flag, "
        "so a release of version 4 would take them as plausible: pass --force to keep them unflagged"
    )
    assert (schema_shape(engine), contents(engine, schema.LATEST_VERSION)) == before

    history = {name: contents(engine, 4)[name] for name in HISTORY}
    assert schema.downgrade(engine, 4, force=True).notes == (
        "dropped the flag column of positions, static_reports and other_messages (2 flagged row(s) kept "
        "unflagged, --force)",
    )
    assert schema_shape(engine) == defined_shape(4, engine)
    assert {name: contents(engine, 4)[name] for name in HISTORY} == history


def test_a_store_newer_than_this_release_is_refused_both_ways(store: tuple[str, Engine]) -> None:
    _, engine = store
    newer = schema.LATEST_VERSION + 1
    with engine.begin() as conn:
        conn.execute(schema.schema_version.update().values(version=newer))
    with pytest.raises(schema.SchemaError, match=f"schema version {newer}, newer than this Breakwater"):
        schema.downgrade(engine, 2)
    with pytest.raises(schema.SchemaError, match="upgrade Breakwater"):
        schema.migrate(engine)
    assert stored_version(engine) == newer


def test_a_downgrade_only_goes_down_and_only_to_a_known_version(store: tuple[str, Engine]) -> None:
    _, engine = store
    schema.downgrade(engine, 1)
    with pytest.raises(schema.SchemaError, match="older than 2: a downgrade only goes down"):
        schema.downgrade(engine, 2)
    for bad in (0, schema.LATEST_VERSION + 1):
        with pytest.raises(ValueError, match=f"choose 1 to {schema.LATEST_VERSION}"):
            schema.downgrade(engine, bad)
    assert schema.downgrade(engine, 1).notes == ()  # already there: nothing to do
    assert stored_version(engine) == 1


# -- the command -------------------------------------------------------------------------------


def flags(url: str, tmp_path: Path) -> list[str]:
    return ["--database-url", url, "--dlq-path", str(tmp_path / "dead-letters.sqlite3")]


def test_schema_prints_the_store_and_release_versions(
    store: tuple[str, Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = store
    assert main([*flags(url, tmp_path), "schema"]) == 0
    assert capsys.readouterr().out == (
        f"store schema version {schema.LATEST_VERSION}\n"
        f"this release's schema version {schema.LATEST_VERSION} (the same)\n"
    )
    schema.downgrade(engine, 2)
    assert main([*flags(url, tmp_path), "--json", "schema"]) == 0
    assert capsys.readouterr().out == f'{{\n  "store": 2,\n  "release": {schema.LATEST_VERSION}\n}}\n'


def test_schema_downgrade_needs_yes_and_the_stores_token(
    store: tuple[str, Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = store
    store_flags = flags(url, tmp_path)
    assert main([*store_flags, "--admin-token", TOKEN, "schema", "downgrade", "2"]) == 1
    assert capsys.readouterr().err == (
        "breakwater: downgrading changes the store's schema: stop the jobs, back it up, then pass --yes\n"
    )
    assert main([*store_flags, "--admin-token", "wrong", "schema", "downgrade", "2", "--yes"]) == 1
    assert capsys.readouterr().err == (
        "breakwater: schema downgrade to 2 refused: wrong or missing admin token (--admin-token)\n"
    )
    assert stored_version(engine) == schema.LATEST_VERSION

    assert main([*store_flags, "--admin-token", TOKEN, "schema", "downgrade", "2", "--yes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"schema downgraded from version {schema.LATEST_VERSION} to 2"
    assert out[1] == "dropped the flag column of positions, static_reports and other_messages"
    assert out[2] == "dropped receptions (it was empty)"
    assert out[3].startswith("dropped breakwater_settings and the admin token's digest it held: ")
    # Version 2 has no settings table: the journal the same ingest job wrote holds the digest.
    assert main([*store_flags, "--admin-token", "wrong", "schema", "downgrade", "1", "--yes"]) == 1
    assert capsys.readouterr().err.endswith("refused: wrong or missing admin token (--admin-token)\n")
    assert main([*store_flags, "--json", "--admin-token", TOKEN, "schema", "downgrade", "1", "--yes"]) == 0
    assert capsys.readouterr().out == (
        '{\n  "before": 2,\n  "after": 1,\n  "notes": [\n'
        '    "dropped vessels.deleted_at and the index latest_positions_lat_lon"\n  ]\n}\n'
    )
    assert main([*store_flags, "--admin-token", TOKEN, "schema", "downgrade", "1", "--yes"]) == 0
    assert capsys.readouterr().out == "the store is at schema version 1 already: nothing changed\n"


def test_schema_downgrade_refusals_are_one_line(
    store: tuple[str, Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, engine = store
    admin = [*flags(url, tmp_path), "--admin-token", TOKEN]
    soft_delete(url, 257591700)
    assert main([*admin, "schema", "downgrade", "1", "--yes"]) == 1
    assert capsys.readouterr().err == (
        "breakwater: 1 vessel(s) are soft-deleted and version 1 has no soft delete, so they would be shown "
        "again: purge them (purge-deleted --yes) or bring them back (restore-vessel MMSI) first, "
        "or pass --force to show them again\n"
    )
    assert stored_version(engine) == schema.LATEST_VERSION

    with engine.begin() as conn:
        conn.execute(schema.schema_version.update().values(version=schema.LATEST_VERSION + 1))
    assert main([*admin, "schema", "downgrade", "2", "--yes"]) == 1
    assert capsys.readouterr().err == (
        f"breakwater: the store has schema version {schema.LATEST_VERSION + 1}, newer than this Breakwater "
        f"({schema.LATEST_VERSION}): downgrade it with the release that upgraded it\n"
    )
    assert main([*admin, "schema"]) == 0
    assert "newer than this release" in capsys.readouterr().out

    missing = f"sqlite:///{tmp_path / 'nowhere.sqlite3'}"
    assert main(["--database-url", missing, "schema"]) == 2
    assert capsys.readouterr().err == (
        "breakwater: BREAKWATER_DATABASE_URL (--database-url): there is no Breakwater store at "
        f"{tmp_path / 'nowhere.sqlite3'}: run an ingest job first, or point --database-url at one\n"
    )
    assert not (tmp_path / "nowhere.sqlite3").exists()


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("0", "Invalid value for 'N'"),
        (str(schema.LATEST_VERSION + 1), "Invalid value for 'N'"),
        ("two", "Invalid value for 'N'"),
    ],
)
def test_a_bad_version_is_a_usage_error(
    version: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--database-url", f"sqlite:///{tmp_path / 's.sqlite3'}", "schema", "downgrade", version, "--yes"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Usage: breakwater schema downgrade")
    assert f"Error: {reason}" in err
    assert not (tmp_path / "s.sqlite3").exists()
