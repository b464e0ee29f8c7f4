"""The rebuild replays only the static reports that decide a vessel's data: the reference
model must end where the whole history takes it, stamps included (the Redis hash keeps them)."""

from __future__ import annotations

from itertools import groupby
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from breakwater.rebuild import deciding_statics
from breakwater.reports import MMSI
from breakwater.write_model import STATIC_VALUE_FIELDS, WriteModel, order_key
from tests.unit.test_write_model import static_rows


def _statics(rows: list[tuple[Any, ...]]) -> dict[int, Any]:
    model = WriteModel()
    for row in rows:
        model.apply_static(row)
    return {
        mmsi: (vessel.newest, {name: (f.value, f.order) for name, f in vessel.fields.items()})
        for mmsi, vessel in model.statics.items()
    }


@settings(max_examples=300)
@given(st.lists(static_rows(), max_size=30))
def test_the_deciding_reports_leave_what_the_whole_history_leaves(rows: list[tuple[Any, ...]]) -> None:
    newest_first = sorted(rows, key=lambda r: (r[MMSI], *(-k for k in order_key(r))))
    kept = [r for _, vessel in groupby(newest_first, key=lambda r: r[MMSI]) for r in deciding_statics(list(vessel))]
    assert _statics(kept) == _statics(rows)
    assert len(kept) <= len({(r[MMSI], order_key(r)) for r in rows})


def test_a_report_that_adds_no_field_is_left_out() -> None:
    def row(ms: int, **values: Any) -> tuple[Any, ...]:
        return (257000001, ms, ms, 5, *(values.get(f) for f in STATIC_VALUE_FIELDS), None, "tag_block", None)

    newest, older_same, older_other = row(3, name="A", callsign="X"), row(2, name="B"), row(1, eta="12-24 08:30")
    assert deciding_statics([newest, older_same, older_other]) == [newest, older_other]
