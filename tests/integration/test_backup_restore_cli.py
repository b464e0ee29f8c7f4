"""`breakwater backup` and `breakwater restore` as commands: in process through `main(argv)`
for the exit codes and the one-line errors, and in a subprocess with a clean environment, as
a person types them. The stores and their checks are tested in test_backup_restore.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breakwater.backup import backup, store_rows
from breakwater.cli import main
from breakwater.config import Settings
from tests.acceptance.shell import run
from tests.integration.test_backup_restore import damage, settings_for, small_deployment, table_rows


def flags(settings: Settings) -> list[str]:
    return ["--database-url", settings.database_url, "--dlq-path", str(settings.dlq.path), "--namespace", "backup-test"]


def test_a_restore_into_stores_that_are_not_empty_exits_2_with_one_line(
    tmp_path: Path, kystverket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    assert main([*flags(live), "backup", str(tmp_path / "backup")]) == 0
    capsys.readouterr()
    rows = store_rows(live.database_url)

    assert main([*flags(live), "restore", str(tmp_path / "backup"), "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("breakwater: BREAKWATER_DATABASE_URL (--database-url): the store is not empty (")
    assert err.count("\n") == 1
    assert store_rows(live.database_url) == rows

    # An empty store, but a journal that holds records: refused too, naming the journal.
    other = settings_for(f"sqlite:///{tmp_path / 'empty' / 'store.sqlite3'}", live.dlq.path)
    assert main([*flags(other), "restore", str(tmp_path / "backup"), "--yes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("breakwater: BREAKWATER_DLQ__PATH (--dlq-path): ")
    assert err.count("\n") == 1
    assert not (tmp_path / "empty" / "store.sqlite3").exists()


def test_a_damaged_backup_exits_1_with_one_line(
    tmp_path: Path, kystverket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    backup(live, tmp_path / "backup")
    damage(tmp_path / "backup" / "dead-letters.sqlite3")

    target = settings_for(f"sqlite:///{tmp_path / 'new' / 'store.sqlite3'}", tmp_path / "new" / "dl.sqlite3")
    assert main([*flags(target), "restore", str(tmp_path / "backup"), "--yes"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"breakwater: {tmp_path / 'backup'}: dead-letters.sqlite3 does not match its SHA-256 in the manifest: "
        "the file is damaged, nothing was restored\n"
    )
    assert not (tmp_path / "new").exists()


def test_a_used_directory_exits_2_and_restore_needs_yes(
    tmp_path: Path, kystverket_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main([*flags(live), "backup", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == (
        f"breakwater: PATH: {tmp_path / 'taken'} exists and is not an empty directory: back up into a new one\n"
    )
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]

    assert main([*flags(live), "backup", str(tmp_path / "backup")]) == 0
    capsys.readouterr()
    target = settings_for(f"sqlite:///{tmp_path / 'new' / 'store.sqlite3'}", tmp_path / "new" / "dl.sqlite3")
    assert main([*flags(target), "restore", str(tmp_path / "backup")]) == 1
    assert capsys.readouterr().err == "breakwater: restoring writes into the stores: pass --yes\n"
    assert not (tmp_path / "new").exists()


def test_the_commands_as_a_person_runs_them(tmp_path: Path, kystverket_path: Path) -> None:
    live = small_deployment(tmp_path, kystverket_path)
    home = tmp_path / "home"
    backed_up = run(["breakwater", *flags(live), "backup", str(tmp_path / "backup")], home=home)
    assert backed_up.returncode == 0, backed_up.stderr
    lines = backed_up.stdout.splitlines()
    assert lines[0].startswith(f"backed up to {tmp_path / 'backup'}: deployment backup-test in ")
    rows = table_rows(live.database_url)
    assert lines[1].startswith(f"rows: {sum(rows.values())} (positions {rows['positions']}, ")
    assert lines[2] == "dead letters: 40 waiting, 10 dead"
    assert (
        json.loads((tmp_path / "backup" / "manifest.json").read_text())["counts"]["tables"]["vessels"]
        == rows["vessels"]
    )

    target = settings_for(f"sqlite:///{tmp_path / 'new' / 'store.sqlite3'}", tmp_path / "new" / "dl.sqlite3")
    restored = run(["breakwater", *flags(target), "restore", str(tmp_path / "backup"), "--yes"], home=home)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.splitlines()[2] == "dead letters: 40 waiting, 10 dead"
    assert table_rows(target.database_url) == rows

    again = run(["breakwater", *flags(target), "restore", str(tmp_path / "backup"), "--yes"], home=home)
    assert again.returncode == 2
    assert again.stdout == ""
    assert again.stderr.startswith("breakwater: BREAKWATER_DATABASE_URL (--database-url): the store is not empty (")
    assert again.stderr.count("\n") == 1
