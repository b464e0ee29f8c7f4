"""The `breakwater` command's own behaviour, in-process: usage errors, arguments that are
negative numbers, times an operator can read, and tables that fit an 80-column terminal.
The stores are the journal file and nothing else: no Ray, no servers."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from breakwater import cli
from breakwater.cli import main
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue, Failure
from breakwater.journal import Snapshots
from breakwater.models import TrackPoint, VesselState
from tests.unit.fakes import position

AUGUST_7_2300 = datetime(2019, 8, 7, 23, 0, tzinfo=UTC).timestamp()


@pytest.fixture(autouse=True)
def _empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default store and journal are relative to the folder and $HOME: make both empty."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The CLI's console, 80 columns wide, writing into a buffer."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=80, color_system=None))
    return out


USAGE_ERRORS = [
    (["latest", "abc"], "Invalid value for 'MMSI': MMSI must be a 9-digit number, 000000001 to 999999999, not 'abc'"),
    (["latest", "-5"], "Invalid value for 'MMSI': MMSI must be a 9-digit number, 000000001 to 999999999, not '-5'"),
    (
        ["latest", "1234567890"],
        "Invalid value for 'MMSI': MMSI must be a 9-digit number, 000000001 to 999999999, not '1234567890'",
    ),
    (["latest", "0"], "Invalid value for 'MMSI': MMSI must be a 9-digit number, 000000001 to 999999999, not '0'"),
    (["nosuchcmd"], "No such command 'nosuchcmd'."),
    (["box", "59", "10", "60"], "Missing argument 'east'."),
    ([], "Missing command."),
    (["dlq"], "Missing command."),
    (["nearby", "59", "10", "--radus-km", "3"], "No such option: --radus-km"),
    (["track", "257591700", "--start", "yesterday"], "Invalid value for '--start'"),
    (["nearby", "north", "10"], "Invalid value for 'lat': Input should be a valid number"),
]


@pytest.mark.parametrize(("argv", "reason"), USAGE_ERRORS, ids=[" ".join(a) or "no-args" for a, _ in USAGE_ERRORS])
def test_usage_errors_print_the_usage_and_exit_2(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Usage: breakwater")
    assert f"Error: {reason}" in err
    assert "Traceback" not in err


class Answers:
    """The client, as far as the query commands use it: records what it is asked, answers
    with canned models."""

    def __init__(self, states: list[VesselState] = [], points: list[TrackPoint] = []) -> None:  # noqa: B006
        self.asked: list[tuple[Any, ...]] = []
        self.states, self.points = states, points

    def latest(self, mmsi: int) -> None:
        self.asked.append(("latest", mmsi))

    def nearby(self, *args: Any) -> list[VesselState]:
        self.asked.append(("nearby", *args))
        return self.states

    def in_box(self, *args: Any) -> list[VesselState]:
        self.asked.append(("box", *args))
        return self.states

    def track(self, *args: Any) -> list[TrackPoint]:
        self.asked.append(("track", *args))
        return self.points


def answering(monkeypatch: pytest.MonkeyPatch, answers: Answers) -> Answers:
    monkeypatch.setattr(cli.Options, "client", lambda self: answers)
    return answers


def test_negative_numbers_are_arguments_not_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every token that is a number reaches the command as an argument, wherever the options
    are; an option's value may be negative too. An MMSI may keep its leading zeros."""
    answers = answering(monkeypatch, Answers())
    assert main(["nearby", "-33.86", "151.2", "--radius-km", "30"]) == 0
    assert main(["--json", "nearby", "-33.86", "151.2", "--radius-km", "30"]) == 0
    assert main(["nearby", "--radius-km", "30", "-33.86", "-151.2", "--limit", "5"]) == 0
    assert main(["nearby", "-.5", "-1e1", "--radius-km=2"]) == 0
    assert main(["box", "-34", "150", "-33", "152"]) == 0
    assert main(["box", "--limit", "-1", "--", "-34", "-10", "-33", "-9"]) == 0
    assert main(["--json", "latest", "002570100"]) == 0
    assert answers.asked == [
        ("nearby", -33.86, 151.2, 30.0, 100),
        ("nearby", -33.86, 151.2, 30.0, 100),
        ("nearby", -33.86, -151.2, 30.0, 5),
        ("nearby", -0.5, -10.0, 2.0, 100),
        ("box", -34.0, 150.0, -33.0, 152.0, 1000),
        ("box", -34.0, -10.0, -33.0, -9.0, -1),
        ("latest", 2570100),
    ]


def dead_letter_journal(path: Path) -> None:
    """A journal holding one record of the deployment the CLI's default settings name."""
    from breakwater.config import load_settings
    from breakwater.deployment import Deployment

    destination = Deployment.of(load_settings({"dlq": {"path": path}})).fingerprint
    queue = DeadLetterQueue(DeadLetterConfig(path=path), clock=lambda: AUGUST_7_2300 + 0.5, destination=destination)
    failure = Failure("OperationalError", "connection refused", "CLOSED", AUGUST_7_2300 + 0.5)
    queue.enqueue(
        "db",
        {"position": [position(257591700, 1565218798000)]},
        source="kystverket-2019-tagblock.nmea",
        job_id="job-1",
        batch_id="batch-1",
        read_ms=1565218798000,
        failure=failure,
        next_retry_at=AUGUST_7_2300 + 60,
    )
    queue.close()


def test_dead_letter_times_are_iso_8601_utc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = tmp_path / "dead-letters.sqlite3"
    dead_letter_journal(journal)
    assert main(["--dlq-path", str(journal), "--json", "dlq", "peek"]) == 0
    [letter] = json.loads(capsys.readouterr().out)
    times = {k: letter[k] for k in ("first_failed_at", "last_failed_at", "next_retry_at", "dead_at", "read_at")}
    assert times == {
        "first_failed_at": "2019-08-07T23:00:00.500000Z",
        "last_failed_at": "2019-08-07T23:00:00.500000Z",
        "next_retry_at": "2019-08-07T23:01:00Z",
        "dead_at": None,
        "read_at": "2019-08-07T22:59:58Z",
    }
    assert "read_ms" not in letter
    assert letter["history"] == [
        {
            "at": "2019-08-07T23:00:00.500000Z",
            "error": "OperationalError",
            "message": "connection refused",
            "breaker": "CLOSED",
        }
    ]
    assert main(["--dlq-path", str(journal), "--json", "dlq", "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["oldest_failed_at"] == "2019-08-07T23:00:00.500000Z"


def test_the_dead_letter_table_fits_80_columns(tmp_path: Path, narrow: io.StringIO) -> None:
    journal = tmp_path / "dead-letters.sqlite3"
    dead_letter_journal(journal)
    assert main(["--dlq-path", str(journal), "dlq", "peek"]) == 0
    lines = narrow.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in narrow.getvalue()
    assert header(lines) == [
        "id",
        "sink",
        "kind",
        "attempts",
        "next_retry_at",
        "last_error",
    ]
    assert body_cells(lines) == [
        ["1", "db", "position", "1", "2019-08-07T23:01:00Z", "OperationalError:"],
        ["", "", "", "", "", "connection refused"],
    ]


def test_breaker_times_are_iso_8601_utc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], narrow: io.StringIO
) -> None:
    journal = tmp_path / "dead-letters.sqlite3"
    snapshots = Snapshots(journal)
    snapshots.save("breaker", "db", {"state": 2, "epoch": 3, "opened_at": AUGUST_7_2300, "forced": 2, "trips": 1})
    snapshots.close()
    assert main(["--dlq-path", str(journal), "--json", "breakers"]) == 0
    [db] = json.loads(capsys.readouterr().out)
    assert (db["sink"], db["state"], db["forced"], db["retry_at"]) == ("db", "OPEN", True, "2019-08-07T23:00:30Z")
    assert main(["--dlq-path", str(journal), "breakers"]) == 0
    lines = narrow.getvalue().splitlines()
    # Epoch 3 both times: looking at a breaker is not restarting it.
    assert body_cells(lines) == [["db", "OPEN", "3", "True", "2019-08-07T23:00:30Z", "1"]]
    assert Snapshots(journal).load("breaker", "db") == {
        "state": 2, "epoch": 3, "opened_at": AUGUST_7_2300, "forced": 2, "trips": 1
    }  # fmt: skip
    assert max(len(line) for line in lines) <= 80


def body_cells(lines: list[str]) -> list[list[str]]:
    """The cells of every body line of a titled table (wrapped text gives a line with some
    cells empty)."""
    return [[c.strip() for c in line.strip("│").split("│")] for line in lines[4:-1]]


def header(lines: list[str]) -> list[str]:
    return [c.strip() for c in lines[2].strip("┃").split("┃")]


def test_vessel_tables_keep_whole_values_in_80_columns(monkeypatch: pytest.MonkeyPatch, narrow: io.StringIO) -> None:
    states = [
        VesselState(
            mmsi=503419300 + i,
            received_at=datetime(2019, 8, 7, 22, 59, 58, 123000, tzinfo=UTC),
            lat=-33.855672 - i,
            lon=151.202738 + i,
            sog_kn=0.1,
            cog_deg=359.9,
            heading_deg=211,
            nav_status=8,
            msg_type=1,
            name="PV11 GOVERNOR PHILLIP OF THE HARBOUR",
            callsign="VJN4321",
            ship_type=60,
            source="amsa-mixed.nmea.gz",
            distance_km=12.345,
        )
        for i in range(3)
    ]
    answering(monkeypatch, Answers(states=states))
    assert main(["nearby", "33.86", "151.2", "--radius-km", "30"]) == 0
    lines = narrow.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in narrow.getvalue()
    assert header(lines) == ["mmsi", "lat", "lon", "distance_km", "name", "sog_kn"]
    rows = [cells for cells in body_cells(lines) if cells[0]]
    assert [cells[:4] + cells[5:] for cells in rows] == [
        ["503419300", "-33.855672", "151.202738", "12.345", "0.1"],
        ["503419301", "-34.855672", "152.202738", "12.345", "0.1"],
        ["503419302", "-35.855672", "153.202738", "12.345", "0.1"],
    ]
    # The name wraps inside its column, whole.
    names = " ".join(cells[4] for cells in body_cells(lines) if cells[4])
    assert names.split() == ["PV11", "GOVERNOR", "PHILLIP", "OF", "THE", "HARBOUR"] * 3


def test_track_tables_keep_whole_times_in_80_columns(monkeypatch: pytest.MonkeyPatch, narrow: io.StringIO) -> None:
    points = [
        TrackPoint(
            received_at=datetime(2019, 8, 7, 22, 59, 58 + i, tzinfo=UTC),
            lat=63.074553,
            lon=-7.601958,
            sog_kn=10.2,
            cog_deg=123.4,
            heading_deg=124,
            nav_status=0,
            msg_type=1,
        )
        for i in range(2)
    ]
    answering(monkeypatch, Answers(points=points))
    assert main(["track", "257591700"]) == 0
    lines = narrow.getvalue().splitlines()
    assert "…" not in narrow.getvalue()
    assert max(len(line) for line in lines) <= 80
    assert header(lines) == ["received_at", "lat", "lon", "sog_kn", "cog_deg", "msg_type"]
    assert body_cells(lines) == [
        ["2019-08-07T22:59:58Z", "63.074553", "-7.601958", "10.2", "123.4", "1"],
        ["2019-08-07T22:59:59Z", "63.074553", "-7.601958", "10.2", "123.4", "1"],
    ]
