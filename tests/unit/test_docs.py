"""docs/ARCHITECTURE.md is a map: every file and every test it cites must exist, so it cannot
drift from the code without a test saying so."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "ARCHITECTURE.md"
SEARCHED = ("breakwater", "breakwater/stores", "actors", "jobs", "jobs/bench", "tests/unit", "tests/integration")


def _exists(cited: str) -> bool:
    if (ROOT / cited).exists():
        return True
    return any((ROOT / folder / cited).exists() for folder in SEARCHED)


def test_every_file_the_architecture_map_cites_exists() -> None:
    text = MAP.read_text()
    cited = set(re.findall(r"`([\w/]+\.(?:py|lua|yml|md|json))", text))
    assert cited, "the map cites no files"
    assert sorted(c for c in cited if not _exists(c)) == []


def test_every_test_the_architecture_map_cites_exists() -> None:
    text = MAP.read_text()
    cited = set(re.findall(r"\b(test_\w+)\b", text)) - {"test_"}
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined.add(path.stem)
        defined.update(re.findall(r"^\s*(?:async )?def (test_\w+)", path.read_text(), flags=re.MULTILINE))
    assert len(cited) > 20
    assert sorted(cited - defined) == []


def test_the_map_states_all_ten_invariants() -> None:
    text = MAP.read_text()
    assert [int(n) for n in re.findall(r"^\*\*(\d+)\. ", text, flags=re.MULTILINE)] == list(range(1, 11))
