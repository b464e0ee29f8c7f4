"""Rolling a release back, on SQLite and PostgreSQL: a store the ingest job filled is taken down
to each older schema version by `breakwater schema downgrade`, run as a person types it; each
time the tables, columns and indexes are what `define_tables(md, N)` describes and every row is
kept (counts and a SHA-256 per table); the previous release itself, checked out of this
repository's history into a temporary worktree, answers the same queries on the downgraded
store as on the original; and upgrading again gives back the original data. Soft-deleted
vessels refuse the downgrade that would show them again, and nothing changes.

The downgrade steps themselves, their refusals and the command's exit codes are checked
without servers in tests/unit/test_schema_rollback.py, whose helpers this file shares."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from breakwater.admin import token_digest
from breakwater.cli import main
from breakwater.client import Client
from breakwater.config import load_settings
from breakwater.stores import schema
from breakwater.stores.deployment import save_admin_digest
from breakwater.stores.engine import make_engine
from tests.acceptance.shell import ROOT, run
from tests.conftest import AMSA, KYSTVERKET, read_lines
from tests.integration.test_fusion import as_heard_by
from tests.unit.test_schema_rollback import contents, defined_shape, schema_shape, write_captures

TOKEN = "t0ken"
# The queries of the client, as the command asks them, in Norway and in Australia; a negative
# number comes after "--", because the previous release reads `-33.86` alone as an option.
QUERIES = [
    ["counts"],
    ["latest", "257591700"],
    ["track", "257591700", "--start", "2019-08-07T22:59:00", "--end", "2019-08-07T23:10:00"],
    ["vessel", "257110940"],
    ["nearby", "59.9", "10.7", "--radius-km", "20"],
    ["box", "59", "10", "60", "11"],
    ["latest", "503523000"],
    ["vessel", "503003000"],
    ["nearby", "--radius-km", "30", "--", "-33.86", "151.2"],
    ["box", "--", "-35", "150", "-34", "152"],
]
# Runs in the previous release's worktree: every query through its own `main`, in one process
# (a Python start per query would cost seconds), as JSON, with the files it was loaded from.
PREVIOUS_DRIVER = """
import contextlib, io, json, sys
import breakwater.cli, breakwater.stores.schema
answers = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = breakwater.cli.main(argv)
    answers.append([code, json.loads(out.getvalue()) if code == 0 else None])
print(json.dumps({
    "loaded_from": breakwater.cli.__file__,
    "latest_version": breakwater.stores.schema.LATEST_VERSION,
    "answers": answers,
}))
"""


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release before schema version 3 (the parent of the commit that made LATEST_VERSION
    3), checked out into a temporary worktree; it runs on this release's virtualenv."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"git {' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    found = git("log", "--format=%H", "-SLATEST_VERSION = 3", "--", "breakwater/stores/schema.py").split()
    if not found:
        pytest.fail("no commit made LATEST_VERSION 3: the previous release needs the repository's full history")
    path = tmp_path_factory.mktemp("previous-release") / "breakwater"
    git("worktree", "add", "--detach", str(path), f"{found[-1]}^")
    yield path
    git("worktree", "remove", "--force", str(path))


def previous_answers(release: Path, database_url: str, home: Path) -> list[Any]:
    """The previous release's answers to QUERIES on the store, in a clean environment."""
    argvs = [["--json", "--database-url", database_url, *query] for query in QUERIES]
    done = run([sys.executable, "-c", PREVIOUS_DRIVER, json.dumps(argvs)], home=home, cwd=release)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["loaded_from"] == str(release / "breakwater" / "cli.py")
    assert result["latest_version"] == 2
    answers: list[Any] = result["answers"]
    return answers


def current_answers(database_url: str, capsys: pytest.CaptureFixture[str]) -> list[Any]:
    answers = []
    for query in QUERIES:
        code = main(["--json", "--database-url", database_url, *query])
        out = capsys.readouterr().out
        answers.append([code, json.loads(out) if code == 0 else None])
    return answers


def stored_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return schema.current_version(conn)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_rollback_keeps_every_row_and_the_previous_release_answers_the_same(
    database_url: str,
    make_job: Any,
    previous_release: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BREAKWATER_ADMIN_TOKEN", TOKEN)  # the job records its digest in the stores
    job = make_job(database_url)
    # A second receiver's copy of the Kystverket capture: its reports are receptions.
    south = tmp_path / "kystverket-south.nmea"
    south.write_bytes(b"".join(as_heard_by(line, "south", 1) + b"\n" for line in read_lines(KYSTVERKET)))
    summary = job.ingest(KYSTVERKET, AMSA, south)
    assert summary["sinks"]["db"]["dead_letter_queue"] == 0
    assert summary["fused_copies"] >= 876
    capsys.readouterr()  # the job's summary
    monkeypatch.delenv("BREAKWATER_ADMIN_TOKEN")
    engine = make_engine(database_url)
    latest = schema.LATEST_VERSION
    assert schema_shape(engine) == defined_shape(latest, engine)
    original = {version: contents(engine, version) for version in range(1, latest + 1)}
    assert all(n > 0 for n, _ in original[latest].values()), original[latest]
    home = tmp_path / "home"
    answered = current_answers(database_url, capsys)
    previously = previous_answers(previous_release, database_url, home)
    assert [code for code, _ in previously] == [0] * len(QUERIES)
    assert previously[1][1]["mmsi"] == 257591700 and previously[6][1]["mmsi"] == 503523000
    assert all(previously[i][1] for i in (2, 4, 5, 8, 9)), "a query with no answer proves nothing"

    command = ["breakwater", "--database-url", database_url, "--dlq-path", str(job.dlq_path)]
    down = run([*command, "--admin-token", TOKEN, "schema", "downgrade", "2", "--yes"], home=home)
    refusal = down.stderr.splitlines()[-1]
    assert down.returncode == 1 and refusal.startswith("breakwater: receptions holds 876 "), down.stderr
    assert schema_shape(engine) == defined_shape(latest, engine)
    down = run([*command, "--admin-token", TOKEN, "schema", "downgrade", "2", "--yes", "--force"], home=home)
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines()[:3] == [
        f"schema downgraded from version {latest} to 2",
        "dropped the flag column of positions, static_reports and other_messages",
        f"dropped receptions ({original[latest]['receptions'][0]} row(s))",
    ]
    shown = run([*command, "schema"], home=home)
    assert shown.stdout.splitlines()[0] == "store schema version 2"
    assert schema_shape(engine) == defined_shape(2, engine)
    assert contents(engine, 2) == original[2]
    assert previous_answers(previous_release, database_url, home) == previously

    # Version 2 has no settings table: the journal the ingest job wrote holds the token's digest.
    down = run([*command, "--admin-token", TOKEN, "schema", "downgrade", "1", "--yes"], home=home)
    assert down.returncode == 0, down.stderr
    assert down.stdout == (
        "schema downgraded from version 2 to 1\ndropped vessels.deleted_at and the index latest_positions_lat_lon\n"
    )
    assert schema_shape(engine) == defined_shape(1, engine)
    assert contents(engine, 1) == original[1]

    assert schema.migrate(engine) == (1, latest)  # what the next ingest job does on start
    assert schema_shape(engine) == defined_shape(latest, engine)
    # Every report is back; which other receivers heard them was dropped (--force).
    assert contents(engine, latest) == {**original[latest], "receptions": (0, hashlib.sha256().hexdigest())}
    assert current_answers(database_url, capsys) == only_own_receivers(answered)
    engine.dispose()


def only_own_receivers(answers: Any) -> Any:
    """The answers with each track point heard by its own receiver only: what is left once
    the receptions were dropped."""
    if isinstance(answers, list):
        return [only_own_receivers(a) for a in answers]
    if isinstance(answers, dict):
        return {k: v[:1] if k == "receivers" else only_own_receivers(v) for k, v in answers.items()}
    return answers


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_soft_deleted_vessels_refuse_the_downgrade_that_would_show_them_and_nothing_changes(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(database_url)
    schema.migrate(engine)
    write_captures(database_url)
    save_admin_digest(database_url, token_digest(TOKEN), timeout_s=10)
    with Client(load_settings({"database_url": database_url})) as client:
        assert client.delete_vessel(257591700, admin_token=TOKEN)
    shape, rows = schema_shape(engine), contents(engine, schema.LATEST_VERSION)

    flags = ["--database-url", database_url, "--dlq-path", str(tmp_path / "dl.sqlite3"), "--admin-token", TOKEN]
    assert main([*flags, "schema", "downgrade", "1", "--yes"]) == 1
    assert capsys.readouterr().err == (
        "breakwater: 1 vessel(s) are soft-deleted and version 1 has no soft delete, so they would be shown "
        "again: purge them (purge-deleted --yes) or bring them back (restore-vessel MMSI) first, "
        "or pass --force to show them again\n"
    )
    # The step 3 -> 2 ran before the refusal, in the same transaction: it is undone too.
    assert stored_version(engine) == schema.LATEST_VERSION
    assert (schema_shape(engine), contents(engine, schema.LATEST_VERSION)) == (shape, rows)
    with engine.connect() as conn:
        assert conn.execute(select(schema.deployment_settings.c.value)).scalar_one() == token_digest(TOKEN)

    assert main([*flags, "restore-vessel", "257591700"]) == 0
    assert main([*flags, "schema", "downgrade", "1", "--yes"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "dropped vessels.deleted_at and the index latest_positions_lat_lon"
    )
    assert schema_shape(engine) == defined_shape(1, engine)
    engine.dispose()


def test_a_downgrade_that_cannot_have_its_locks_in_time_changes_nothing(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reader still holding a table (a job not stopped) makes the step wait; past
    `store_timeout_s` the downgrade gives up with one line and the store is as it was."""
    import psycopg

    engine = make_engine(postgres_url)
    schema.migrate(engine)
    save_admin_digest(postgres_url, token_digest(TOKEN), timeout_s=10)
    monkeypatch.setenv("BREAKWATER_STORE_TIMEOUT_S", "1")
    flags = ["--database-url", postgres_url, "--dlq-path", str(tmp_path / "dl.sqlite3"), "--admin-token", TOKEN]
    with psycopg.connect(postgres_url) as reader:
        reader.execute("SELECT * FROM breakwater_settings")  # holds its lock until the transaction ends
        assert main([*flags, "schema", "downgrade", "2", "--yes"]) == 1
    assert capsys.readouterr().err == (
        "breakwater: the downgrade failed and changed nothing: canceling statement due to statement timeout\n"
    )
    assert stored_version(engine) == schema.LATEST_VERSION
    assert schema_shape(engine) == defined_shape(schema.LATEST_VERSION, engine)
    engine.dispose()
