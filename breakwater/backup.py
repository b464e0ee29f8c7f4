"""Backup and restore of a deployment: its SQL store, its dead-letter journal, a manifest.

A backup is a directory: the SQL store (SQLite: a copy made with SQLite's online backup API;
PostgreSQL: `pg_dump --format=custom`), the journal (dead letters, retry outcomes, breaker and
metric snapshots: one SQLite file, copied with the backup API) and `manifest.json`. Each copy
is a consistent snapshot taken while jobs keep writing; the two are taken one after the
other, so a record may sit in the queue of the journal copy and already be in the SQL copy
(a retry then counts it as a duplicate, never twice). The manifest's counts are read from the
copies themselves, never from the live stores, so they say what a restore will hold.

Redis is not backed up: it is derived from the SQL store and is rebuilt from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from breakwater import __version__
from breakwater.dead_letters import DEAD, WAITING
from breakwater.deployment import Deployment
from breakwater.errors import BreakwaterError, ConfigError
from breakwater.journal import Transaction, open_journal
from breakwater.stores.engine import DATABASE_SETTING, validate_url
from breakwater.stores.schema import LATEST_VERSION, TABLES

if TYPE_CHECKING:
    from breakwater.config import Settings

MANIFEST = "manifest.json"
FORMAT = 1
SQLITE_COPY = "database.sqlite3"
POSTGRES_DUMP = "database.pgdump"
JOURNAL_COPY = "dead-letters.sqlite3"
# Tables whose rows are the deployment's data; a store with rows in any of them is not empty.
DATA_TABLES = ("positions", "static_reports", "other_messages", "latest_positions", "vessels", "receptions")
REDIS_NOTE = "Redis is not in the backup: it is derived from the SQL store; rebuild it from SQL after a restore"
PATH_SETTING = "PATH"
DLQ_SETTING = "BREAKWATER_DLQ__PATH (--dlq-path)"


class BackupError(BreakwaterError):
    """A backup cannot be written, or a backup cannot be trusted or restored."""


# -- backup ------------------------------------------------------------------------------------


def backup(settings: Settings, path: Path, *, clock: Any = time.monotonic) -> dict[str, Any]:
    """Write a backup of the deployment named by `settings` into the new directory `path`;
    returns the manifest (also written as manifest.json)."""
    started = clock()
    url = validate_url(settings.database_url)
    if url.startswith("sqlite") and not _sqlite_path(url).is_file():
        raise ConfigError(DATABASE_SETTING, f"there is no Breakwater store at {_sqlite_path(url)}: nothing to back up")
    _new_directory(path)
    deployment = Deployment.of(settings)
    files: dict[str, str] = {}
    # The journal first, then SQL: a record a drain moves from the queue into SQL in between
    # is then in both copies (its retry counts a duplicate), never in neither.
    journal = settings.dlq.path
    queue: dict[str, dict[str, int]] = {}
    snapshots: list[str] = []
    if journal.is_file():
        files["journal"] = _sqlite_copy(journal, path / JOURNAL_COPY)
        queue, snapshots = journal_counts(path / JOURNAL_COPY, deployment.fingerprint)
    if url.startswith("sqlite"):
        files["database"] = _sqlite_copy(_sqlite_path(url), path / SQLITE_COPY)
        tables, version = sqlite_counts(path / SQLITE_COPY)
    else:
        files["database"] = _pg_dump(url, path / POSTGRES_DUMP)
        tables, version = dump_counts(path / POSTGRES_DUMP)
    manifest = {
        "format": FORMAT,
        "breakwater_version": __version__,
        "schema_version": version,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "deployment": deployment.as_dict(),
        "database": {"kind": "sqlite" if url.startswith("sqlite") else "postgresql", "file": files["database"]},
        "journal": files.get("journal"),
        "counts": {"tables": tables, "dead_letters": queue, "snapshots": snapshots},
        "sha256": {name: _sha256(path / name) for name in files.values()},
        "redis": REDIS_NOTE,
        "took_s": round(clock() - started, 3),
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _new_directory(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(PATH_SETTING, f"{path} exists and is not an empty directory: back up into a new one")
    path.mkdir(parents=True, exist_ok=True)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ConfigError(DATABASE_SETTING, "an in-memory SQLite store cannot be backed up or restored")
    return Path(database).expanduser().absolute()


def _sqlite_copy(source: Path, target: Path) -> str:
    """Copy a live SQLite file with the online backup API, in one step: the step reads one
    snapshot under a read transaction, and in WAL mode writers go on meanwhile. The copy is
    made a single self-contained file (rollback journal, not WAL)."""
    src = sqlite3.connect(source, timeout=60.0)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
    finally:
        dst.close()
        src.close()
    return target.name


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for pg_dump/pg_restore, and an environment holding the password
    (PGPASSWORD), so the password never appears in the process list."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    dsn = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return dsn, env


def _run_pg_tool(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = argv[0]
    if shutil.which(tool) is None:
        raise BackupError(f"{tool} is not installed: install the PostgreSQL client tools (postgresql-client)")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = next((line for line in result.stderr.splitlines() if line.strip()), f"exit {result.returncode}")
        raise BackupError(f"{tool} failed: {reason}")
    return result


def _pg_dump(url: str, target: Path) -> str:
    """`pg_dump --format=custom`: one transaction, a consistent snapshot by construction."""
    dsn, env = _libpq(url)
    _run_pg_tool(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={target}", dsn], env)
    return target.name


# -- counting what a backup holds ---------------------------------------------------------------


def sqlite_counts(path: Path) -> tuple[dict[str, int], int]:
    """Rows per Breakwater table and the schema version, read from a SQLite file."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables = {t: int(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]) for t in TABLES if t in present}
        row = (
            conn.execute("SELECT version FROM breakwater_schema").fetchone() if "breakwater_schema" in present else None
        )
    finally:
        conn.close()
    return tables, int(row[0]) if row else 0


def dump_counts(path: Path) -> tuple[dict[str, int], int]:
    """Rows per Breakwater table and the schema version, read from a pg_dump file: its data
    as pg_restore prints it, one COPY line per row (COPY escapes newlines in values)."""
    tables: dict[str, int] = {}
    version = 0
    for table, line in _copy_rows(path):
        if table in TABLES:
            tables[table] = tables.get(table, 0) + 1
            if table == "breakwater_schema":
                version = int(line)
    # In the schema's order, as sqlite_counts gives them; a table without rows has 0.
    return {table: tables.get(table, 0) for table in TABLES}, version


def _copy_rows(path: Path) -> Iterator[tuple[str, str]]:
    argv = ["pg_restore", "--data-only", "--file=-", str(path)]
    if shutil.which(argv[0]) is None:
        raise BackupError("pg_restore is not installed: install the PostgreSQL client tools (postgresql-client)")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        table: str | None = None
        for line in process.stdout:
            line = line.rstrip("\n")
            if table is None:
                if line.startswith("COPY ") and line.endswith(" FROM stdin;"):
                    table = line.split()[1].split(".")[-1].strip('"')
            elif line == "\\.":
                table = None
            else:
                yield table, line
        stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise BackupError(f"pg_restore cannot read {path}: {stderr.strip().splitlines()[0] if stderr.strip() else ''}")


def journal_counts(path: Path, destination: str) -> tuple[dict[str, dict[str, int]], list[str]]:
    """The deployment's dead letters per sink and status, counted row by row, and the names of
    the snapshots (breakers, metric totals) a journal file holds."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        queue: dict[str, dict[str, int]] = {}
        for sink, status, n in conn.execute(
            "SELECT sink, status, COUNT(*) FROM dead_letters WHERE destination=? GROUP BY sink, status",
            (destination,),
        ):
            queue.setdefault(sink, {WAITING: 0, DEAD: 0})[status] = int(n)
        snapshots = [f"{kind}/{name}" for kind, name in conn.execute("SELECT kind, name FROM snapshots ORDER BY 1, 2")]
    finally:
        conn.close()
    return queue, snapshots


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- restore -----------------------------------------------------------------------------------


def restore(settings: Settings, path: Path, *, clock: Any = time.monotonic) -> dict[str, Any]:
    """Restore the backup in `path` into the stores named by `settings`, which must be empty.

    Every file's SHA-256 is checked before anything is written. The journal's records are
    re-bound to the target deployment (its fingerprint and, with it, its queue)."""
    started = clock()
    manifest = read_manifest(path)
    url = validate_url(settings.database_url)
    kind = "sqlite" if url.startswith("sqlite") else "postgresql"
    if manifest["database"]["kind"] != kind:
        raise ConfigError(
            DATABASE_SETTING, f"the backup holds a {manifest['database']['kind']} store: restore it into one"
        )
    if int(manifest["schema_version"]) > LATEST_VERSION:
        raise BackupError(
            f"the backup has schema version {manifest['schema_version']}, newer than this Breakwater "
            f"({LATEST_VERSION}): restore it with Breakwater {manifest['breakwater_version']} or later"
        )
    _refuse_unless_empty(url, settings.dlq.path)
    _restore_database(url, path / manifest["database"]["file"])
    deployment = Deployment.of(settings)
    rebound = 0
    if manifest["journal"]:
        settings.dlq.path.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_restore(path / manifest["journal"], settings.dlq.path)
        rebound = rebind(settings.dlq.path, manifest["deployment"]["fingerprint"], deployment.fingerprint)
    return {
        "restored_from": str(path),
        "deployment": deployment.as_dict(),
        "backup_deployment": manifest["deployment"],
        "counts": manifest["counts"],
        "dead_letters_rebound": rebound,
        "redis": REDIS_NOTE,
        "took_s": round(clock() - started, 3),
    }


def _restore_database(url: str, database: Path) -> None:
    """SQLite: the backup API into the target file. PostgreSQL: pg_restore in one transaction
    (all or nothing); --clean drops the empty tables an ingest job's start may have made."""
    if url.startswith("sqlite"):
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_restore(database, target)
        return
    dsn, env = _libpq(url)
    options = ["--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error"]
    _run_pg_tool(["pg_restore", *options, f"--dbname={dsn}", str(database)], env)


def read_manifest(path: Path) -> dict[str, Any]:
    """The backup's manifest, once every file it names has the SHA-256 it records."""
    try:
        manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(PATH_SETTING, f"{path} is not a Breakwater backup (no readable {MANIFEST})") from e
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{path}: backup format {manifest.get('format')!r} is not {FORMAT}: use the release that wrote it"
        )
    for name, expected in manifest["sha256"].items():
        file = path / name
        if not file.is_file():
            raise BackupError(f"{path}: {name} is missing: the backup is incomplete, nothing was restored")
        if _sha256(file) != expected:
            raise BackupError(
                f"{path}: {name} does not match its SHA-256 in the manifest: the file is damaged, nothing was restored"
            )
    return manifest


def _refuse_unless_empty(url: str, journal: Path) -> None:
    rows = store_rows(url)
    if rows:
        held = ", ".join(f"{n} {t}" for t, n in rows.items())
        raise ConfigError(DATABASE_SETTING, f"the store is not empty ({held}): restore only into an empty store")
    if journal.is_file():
        records = _journal_rows(journal)
        if records:
            raise ConfigError(
                DLQ_SETTING, f"{journal} holds {records} rows: restore only into an empty or absent journal"
            )


def store_rows(url: str) -> dict[str, int]:
    """Rows in each of the store's data tables that has any; {} for an empty or absent store."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    from breakwater.stores.engine import cannot_use, make_engine

    if url.startswith("sqlite") and not _sqlite_path(url).is_file():
        return {}

    engine = make_engine(url, create=False)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            counts = {
                t: int(conn.execute(text(f'SELECT COUNT(*) FROM "{t}"')).scalar_one())
                for t in DATA_TABLES
                if t in present
            }
    except SQLAlchemyError as e:
        raise cannot_use(url, e) from e
    finally:
        engine.dispose()
    return {t: n for t, n in counts.items() if n}


def _journal_rows(path: Path) -> int:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables = [t for t in ("dead_letters", "retry_outcomes", "snapshots") if t in present]
        return sum(int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables)
    finally:
        conn.close()


def _sqlite_restore(source: Path, target: Path) -> None:
    """The backup API again, into the target file (created, or an empty one overwritten)."""
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(target, timeout=60.0)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        dst.close()
        src.close()


def rebind(journal: Path, old: str, new: str) -> int:
    """Give the backed-up deployment's records to the deployment they are restored into.

    A queue sees only the records of its own fingerprint (breakwater.deployment): records kept
    under the old one would be invisible to the restored deployment. Records of other
    deployments that shared the journal are dropped: their stores are not restored. Leases
    held by drains of the old deployment end: those drains are gone. Returns the records kept."""
    conn = open_journal(journal)
    try:
        with Transaction(conn):
            conn.execute("DELETE FROM dead_letters WHERE destination != ?", (old,))
            conn.execute("DELETE FROM dead_letter_totals WHERE destination != ?", (old,))
            conn.execute(
                "UPDATE dead_letters SET destination = ?, lease_owner = NULL, lease_until = NULL WHERE destination = ?",
                (new, old),
            )
            conn.execute("UPDATE dead_letter_totals SET destination = ? WHERE destination = ?", (new, old))
            (kept,) = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
    finally:
        conn.close()
    return int(kept)


def describe(result: dict[str, Any], action: str) -> list[str]:
    """What an operator reads after a backup or restore: one line per fact."""
    counts = result["counts"]
    rows = sum(n for t, n in counts["tables"].items() if t in DATA_TABLES)
    waiting = sum(c.get(WAITING, 0) for c in counts["dead_letters"].values())
    dead = sum(c.get(DEAD, 0) for c in counts["dead_letters"].values())
    name = result["deployment"]["name"]
    per_table = ", ".join(f"{t} {counts['tables'].get(t, 0)}" for t in DATA_TABLES)
    return [
        f"{action} deployment {name} in {result['took_s']:.1f} s",
        f"rows: {rows} ({per_table})",
        f"dead letters: {waiting} waiting, {dead} dead",
        REDIS_NOTE,
    ]
