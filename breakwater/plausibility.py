"""Plausibility of reports and trust in receivers: which reports may move a latest state.

A network's receivers lie now and then: a clock years ahead, a GPS fix across the globe, a
station echoing stale data. A report that fails a check is kept in the history with the
reason in its `flag` (`reports.FLAGS`) and moves no latest state and no static field
(`write_model` rule 4). The checks:

- **clock_ahead**: its receive time is more than `max_clock_skew_s` ahead of the ingest
  clock (decided when it is decoded, `decode.BatchDecoder`);
- **too_fast**: the distance from the vessel's previous plausible fix, over the time between
  them (at least `MIN_INTERVAL_S`, so two receivers' clocks a few seconds apart and GPS noise
  do not count), implies a speed above `max_speed_kn`: a teleport across the globe fails it
  too. When the reference fix itself was the wrong one, the vessel's next reports all
  disagree with it; the second in a row that agrees with the first disagreeing one replaces
  the reference, so one bad fix costs one flagged report, not the vessel's track. Reports
  older than the reference are not judged: they cannot move the latest state anyway;
- **clock drift**: when three or more receivers heard one transmission (`breakwater.fusion`),
  each receiver whose receive time is more than `max_clock_drift_s` from their median fails.
  With two there is no telling which clock is wrong, and nothing is judged.

Reports placed by their source (no receive time of their own) have no event time to judge
and pass unchecked.

**Demotion.** Every check a receiver's report passes or fails counts towards that receiver's
health over the last `window_s` (wall clock). A receiver with at least `MIN_CHECKED` checks in
the window of which `failure_ratio` or more failed is demoted; it is restored when, over at
least as many checks, fewer than half that ratio fail. A demoted receiver's reports, while it
is demoted, are still checked (that is how it recovers) and still fill the history, but a
report that passes is flagged `demoted` when a trusted receiver has covered the vessel in the
last `COVER_S`: it moves the latest state only of vessels no trusted receiver hears.

A receiver is a report's tag block station, else the name of its source (`fusion.receiver_of`).
State is per writer, like the fusion window: every report of a vessel reaches the same writer,
so the fixes need no sharing; each writer judges a receiver on the share of its reports it sees,
so a receiver is demoted in each writer (`breakwater sources` shows in how many).
Nothing survives a writer's restart: the first report of each vessel after one is unjudged.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from breakwater.fusion import receiver_of
from breakwater.reports import (
    FLAG,
    FLAG_DEMOTED,
    FLAG_TOO_FAST,
    KIND_OTHER,
    KIND_POSITION,
    KINDS,
    MMSI,
    P_LAT,
    P_LON,
    RECEIVED_MS,
    TIME_FROM_FILE,
    TIME_FROM_INGEST,
    TIME_SOURCE,
    ReportBatch,
    with_flag,
)
from breakwater.write_model import has_position, order_key

DEFAULT_MAX_SPEED_KN = 100.0
DEFAULT_FAILURE_RATIO = 0.5
DEFAULT_WINDOW_S = 60.0
MIN_CHECKED = 20  # checks in the window before a receiver is judged either way
MIN_INTERVAL_S = 10.0  # the shortest time a move is judged over
COVER_S = 600.0  # a trusted receiver's report covers its vessel this long (wall clock)
MAX_VESSELS = 1_000_000  # per writer; beyond, the state starts afresh (each vessel unjudged once)
CHECK_CLOCK_DRIFT = "clock_drift"  # a receiver health check that flags no report
_PLACED = frozenset({TIME_FROM_FILE, TIME_FROM_INGEST})
_EARTH_RADIUS_NM = 3440.065


def distance_nm(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in nautical miles."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_RADIUS_NM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(slots=True)
class _Fix:
    received_ms: int
    lat: float
    lon: float

    def reaches(self, row: tuple[Any, ...], max_speed_kn: float) -> bool:
        """Whether a vessel could get from this fix to the row's position in the time between."""
        hours = max(abs(row[RECEIVED_MS] - self.received_ms) / 1000, MIN_INTERVAL_S) / 3600
        return bool(distance_nm(self.lat, self.lon, row[P_LAT], row[P_LON]) <= max_speed_kn * hours)


@dataclass(slots=True)
class _Vessel:
    fix: _Fix | None = None  # the newest plausible position
    doubt: _Fix | None = None  # the last position that disagreed with `fix`
    cover: str | None = None  # the trusted receiver of its last plausible report
    covered_at: float = -math.inf


class Health:
    """One receiver's checks over the last `window_s`, in ten buckets of wall-clock time."""

    def __init__(self, window_s: float) -> None:
        self.bucket_s = window_s / 10
        self.buckets: deque[list[float]] = deque()  # [start, checked, failed]
        self.demoted = False

    def record(self, now: float, failed: bool) -> None:
        if not self.buckets or now - self.buckets[-1][0] >= self.bucket_s:
            self.buckets.append([now, 0, 0])
        bucket = self.buckets[-1]
        bucket[1] += 1
        bucket[2] += failed

    def totals(self, now: float) -> tuple[int, int]:
        """(checked, failed) in the window."""
        while self.buckets and now - self.buckets[0][0] >= self.bucket_s * 10:
            self.buckets.popleft()
        return int(sum(b[1] for b in self.buckets)), int(sum(b[2] for b in self.buckets))


@dataclass(frozen=True, slots=True)
class Change:
    """A receiver demoted or restored, and the window's numbers that decided it."""

    receiver: str
    demoted: bool
    checked: int
    failed: int

    def describe(self, failure_ratio: float) -> str:
        if self.demoted:
            return (
                f"receiver {self.receiver} demoted: {self.failed} of its last {self.checked} checked reports failed "
                f"(limit {failure_ratio:.0%}); its reports fill the history and move no vessel a trusted "
                "receiver covers"
            )
        return (
            f"receiver {self.receiver} restored: {self.failed} of its last {self.checked} checked reports failed "
            f"(below {failure_ratio / 2:.0%})"
        )


@dataclass
class Tally:
    """What a round of checks counted: the flags it set, every receiver's checks and failed
    checks, and the receivers it demoted or restored."""

    flags: Counter[str] = field(default_factory=Counter)  # flags set here, by reason
    checks: Counter[str] = field(default_factory=Counter)  # receiver -> reports checked
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (receiver, check) -> failed
    changes: list[Change] = field(default_factory=list)


@dataclass
class Checked(Tally):
    """What `Plausibility.check` made of a batch: the batch, flagged, and the tally."""

    batch: ReportBatch = field(default_factory=lambda: ReportBatch("", 0))


class Plausibility:
    """One writer's checks of reports and its view of every receiver's health. Safe to share
    between the threads of one writer actor."""

    def __init__(
        self,
        *,
        max_speed_kn: float = DEFAULT_MAX_SPEED_KN,
        failure_ratio: float = DEFAULT_FAILURE_RATIO,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_speed_kn = max_speed_kn
        self.failure_ratio = failure_ratio
        self.window_s = window_s
        self.clock = clock
        self._vessels: dict[int, _Vessel] = {}
        self._health: dict[str, Health] = {}
        self._lock = threading.Lock()

    def demoted(self) -> list[str]:
        return sorted(name for name, h in self._health.items() if h.demoted)

    def check(self, batch: ReportBatch) -> Checked:
        """The batch with every implausible report flagged. Positions and static reports are
        judged, and come out, oldest first: so fusion, next, takes the earliest of a batch's
        copies of one transmission as the report."""
        out = ReportBatch(batch.source, batch.read_ms, receptions=batch.receptions)
        checked = Checked(batch=out)
        with self._lock:
            now = self.clock()
            if len(self._vessels) > MAX_VESSELS:
                self._vessels.clear()
            for kind in KINDS:
                rows = batch.rows(kind)
                if kind != KIND_OTHER:
                    rows = sorted(rows, key=order_key)
                kept = out.rows(kind)
                for row in rows:
                    kept.append(row if kind == KIND_OTHER else self._check(kind, row, batch.source, now, checked))
            self._judge(list(checked.checks), now, checked)
        return checked

    def record_drift(self, verdicts: list[tuple[str, bool]]) -> Tally:
        """Clock-drift verdicts from fusion, (receiver, within the limit), into health."""
        tally = Tally()
        with self._lock:
            now = self.clock()
            for receiver, ok in verdicts:
                self._count(receiver, None if ok else CHECK_CLOCK_DRIFT, now, tally)
            self._judge([r for r, _ in verdicts], now, tally)
        return tally

    def _check(self, kind: str, row: tuple[Any, ...], source: str, now: float, checked: Checked) -> tuple[Any, ...]:
        if row[TIME_SOURCE] in _PLACED:
            return row
        receiver = receiver_of(row, source)
        vessel = self._vessels.get(row[MMSI])
        if vessel is None:
            vessel = self._vessels[row[MMSI]] = _Vessel()
        flag = row[FLAG]
        located = kind == KIND_POSITION and has_position(row)
        if flag is None and located and not self._moves_plausibly(vessel, row):
            flag = FLAG_TOO_FAST
        self._count(receiver, flag, now, checked)
        if flag is None:
            health = self._health[receiver]
            if not health.demoted:
                vessel.cover, vessel.covered_at = receiver, now
            elif self._covered(vessel, receiver, now):
                flag = FLAG_DEMOTED
        if flag is None and located and (vessel.fix is None or row[RECEIVED_MS] > vessel.fix.received_ms):
            vessel.fix = _Fix(row[RECEIVED_MS], row[P_LAT], row[P_LON])
        if flag == row[FLAG]:
            return row
        checked.flags[flag] += 1
        return with_flag(row, flag)

    def _covered(self, vessel: _Vessel, receiver: str, now: float) -> bool:
        """Whether a trusted receiver other than `receiver` heard the vessel lately."""
        cover = vessel.cover
        if cover is None or cover == receiver or now - vessel.covered_at > COVER_S:
            return False
        return not self._health[cover].demoted

    def _moves_plausibly(self, vessel: _Vessel, row: tuple[Any, ...]) -> bool:
        fix = vessel.fix
        if fix is None or row[RECEIVED_MS] <= fix.received_ms or fix.reaches(row, self.max_speed_kn):
            return True
        doubt = vessel.doubt
        if doubt is not None and row[RECEIVED_MS] > doubt.received_ms and doubt.reaches(row, self.max_speed_kn):
            vessel.doubt = None  # two in a row agree: the reference was the wrong one
            return True
        vessel.doubt = _Fix(row[RECEIVED_MS], row[P_LAT], row[P_LON])
        return False

    def _count(self, receiver: str, failed_check: str | None, now: float, checked: Tally) -> None:
        health = self._health.get(receiver)
        if health is None:
            health = self._health[receiver] = Health(self.window_s)
        health.record(now, failed_check is not None)
        checked.checks[receiver] += 1
        if failed_check is not None:
            checked.failures[(receiver, failed_check)] += 1

    def _judge(self, receivers: list[str], now: float, checked: Tally) -> None:
        for receiver in dict.fromkeys(receivers):
            health = self._health[receiver]
            n, failed = health.totals(now)
            if n < MIN_CHECKED:
                continue
            ratio = failed / n
            if not health.demoted and ratio >= self.failure_ratio:
                health.demoted = True
                checked.changes.append(Change(receiver, True, n, failed))
            elif health.demoted and ratio < self.failure_ratio / 2:
                health.demoted = False
                checked.changes.append(Change(receiver, False, n, failed))
