"""Ray starts the same way in every shell. RAY_AUTH_MODE is read when `ray` is imported, and
a variable set afterwards left the driver and the cluster it started in different modes
(InvalidAuthToken, or a GCS that never answered): the README's next step failed in a plain
shell while every test passed, because the tests exported the variable first. Here each
command runs with an environment of PATH and a fresh HOME only, plus what the case sets."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.acceptance.shell import ROOT, owned_processes, run

SAMPLE = "data/kystverket-2019-tagblock.nmea"


def _ingest_args(tmp_path: Path) -> list[str]:
    return [
        SAMPLE,
        "--database-url",
        f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "--dlq-path",
        str(tmp_path / "dlq.sqlite3"),
        "--metrics-port",
        "0",
        "--no-scheduler",
        "--summary-json",
        str(tmp_path / "summary.json"),
    ]


@pytest.mark.parametrize(
    ("auth_mode", "token_file", "command"),
    [
        (None, False, "python"),  # the README's own case: nothing set, no token yet
        (None, True, "python"),
        ("token", False, "python"),
        ("token", True, "breakwater"),
        ("disabled", False, "python"),
    ],
    ids=["unset-no-token", "unset-token-file", "token-no-token", "token-token-file-cli", "disabled"],
)
def test_the_ingest_job_starts_ray_in_any_shell(
    tmp_path: Path, auth_mode: str | None, token_file: bool, command: str
) -> None:
    home = tmp_path / "home"
    token = home / ".ray" / "auth_token"
    if token_file:
        token.parent.mkdir(parents=True)
        token.write_text(secrets.token_hex(32))
    env = {"RAY_AUTH_MODE": auth_mode} if auth_mode else {}
    argv = ["python", "-m", "jobs.ingest"] if command == "python" else ["breakwater", "ingest"]
    with owned_processes(home):
        result = run([*argv, *_ingest_args(tmp_path)], home=home, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every line and every report is accounted for" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["ok"], summary["messages_decoded"]) == (True, 876)
    # Token authentication is on unless the operator turned it off: a new cluster writes its
    # token where later clients find it.
    assert token.exists() == (auth_mode != "disabled")


def test_a_named_cluster_that_is_not_there_is_one_line_not_a_hang(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with owned_processes(home):
        result = run(
            ["breakwater", "--dlq-path", str(tmp_path / "dlq.sqlite3"), "--address", "127.0.0.1:1", "dlq", "stats"],
            home=home,
            timeout_s=120,
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["breakwater: RAY_ADDRESS (--address, BREAKWATER_RAY_ADDRESS): no Ray cluster answers at "
                     "127.0.0.1:1: Connection refused"]  # fmt: skip  (one connect, not Ray's minute of retries)


def test_the_retry_job_reaches_only_the_cluster_it_is_told(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with owned_processes(home):
        result = run(
            ["python", "-m", "jobs.retry_dlq", "--dlq-path", str(tmp_path / "dlq.sqlite3"),
             "--database-url", f"sqlite:///{tmp_path / 'store.sqlite3'}"],
            home=home, cwd=ROOT, RAY_ADDRESS="127.0.0.1:1",
        )  # fmt: skip
    assert result.returncode == 2
    assert "RAY_ADDRESS" in result.stderr and "127.0.0.1:1" in result.stderr
