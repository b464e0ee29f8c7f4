"""The plain package stands on its own, and admin checks belong to the deployment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from breakwater.admin import AdminGuard, journal_guard, token_digest, who_am_i
from breakwater.config import load_settings
from breakwater.errors import AdminAuthError
from breakwater.journal import Snapshots
from breakwater.operations import LocalOperations
from breakwater.runtime import load_runtime, named_address

PACKAGE = Path(__file__).resolve().parents[2] / "breakwater"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_plain_package_imports_neither_actors_nor_jobs_nor_ray() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] in ("actors", "jobs", "ray")
        )
        for path in PACKAGE.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_runtime_is_found_through_its_entry_point() -> None:
    runtime = load_runtime()
    assert type(runtime).__module__ == "jobs.runtime"
    assert hasattr(runtime, "run_job") and hasattr(runtime, "cluster_operations")


def test_only_a_named_cluster_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert named_address(None, None) is None
    assert named_address(None, "10.0.0.1:6379") == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6380")
    assert named_address(None, "10.0.0.1:6379") == "127.0.0.1:6380"
    assert named_address("127.0.0.1:7000", "10.0.0.1:6379") == "127.0.0.1:7000"


def test_the_guard_compares_digests_and_never_keeps_the_token() -> None:
    guard = AdminGuard.from_token("s3cret")
    assert "s3cret" not in repr(vars(guard))
    guard.check("s3cret", "clear", "tester")
    with pytest.raises(AdminAuthError, match="wrong or missing"):
        guard.check("s3cre", "clear", "tester")
    with pytest.raises(AdminAuthError, match="wrong or missing"):
        guard.check(None, "clear", "tester")
    with pytest.raises(AdminAuthError, match="has none"):
        AdminGuard(None).check("anything", "clear", "tester")
    assert token_digest("") is None and len(token_digest("x") or "") == 64


def test_the_journal_decides_not_the_callers_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "dead-letters.sqlite3"
    # The caller has a token in its own environment; the deployment recorded none.
    monkeypatch.setenv("BREAKWATER_ADMIN_TOKEN", "mine")
    settings = load_settings({"dlq": {"path": journal}})
    ops = LocalOperations(settings)
    with pytest.raises(AdminAuthError, match="has none"):
        ops.dlq_admin("clear", "mine", who_am_i())
    # The deployment's ingest job recorded its own token: only that one opens the door.
    snapshots = Snapshots(journal)
    snapshots.save("deployment", "admin_token_sha256", {"sha256": token_digest("theirs")})
    assert journal_guard(snapshots).configured
    with pytest.raises(AdminAuthError, match="wrong"):
        ops.dlq_admin("clear", "mine", who_am_i())
    assert ops.dlq_admin("clear", "theirs", who_am_i()) == 0
    ops.close()
    snapshots.close()


def test_who_asked_names_user_host_and_process() -> None:
    import os
    import socket

    who = who_am_i()
    assert f"@{socket.gethostname()} pid {os.getpid()}" in who


def test_looking_at_the_queue_never_creates_a_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from breakwater.cli import main

    journal = tmp_path / "state" / "dead-letters.sqlite3"
    for command in (["dlq", "stats"], ["dlq", "peek"], ["breakers"]):
        assert main(["--dlq-path", str(journal), *command]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"breakwater: BREAKWATER_DLQ__PATH (--dlq-path): there is no dead-letter journal at {journal}: "
            "no job has run with it here; name the cluster (--address) or the journal (--dlq-path)"
        ]
    assert not journal.parent.exists()
