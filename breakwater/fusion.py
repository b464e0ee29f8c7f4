"""Fusion of receivers: one transmission heard by several receivers is one report.

A national network hears a ship through several receivers at once, and each relays its own
copy of the same transmission: the same payload, with its own receive time and station.
Stored as they come, two feeds of one area would double the history and let each copy in
turn move the vessel's latest state. Here the copies are told apart from new reports:

    Two reports are copies of one transmission when they are of the same kind, MMSI and
    payload (the CRC-32 digest), come from different receivers, both carry a receive time of
    their own (a tag block or a trailer), and their receive times lie within `window_ms` of
    each other.

The first copy a writer sees is the report (of the copies in one batch, the earliest by receive
time: the writer's plausibility checks hand them over oldest first); it is stored as it came. Each later copy becomes
a *reception* of it: the stored report's identity (MMSI, receive time, digest), its kind, the
receiver that heard the copy (its tag block station, else the name of the source it came
from) and the copy's own receive time. So a report is stored once, with the list of every
receiver that heard it (`Reception` rows beside its own station) and the first receive time.

The window is per MMSI shard: every report of a vessel reaches the same writer, so each
writer keeps a `FusionWindow` of its own and no state is shared. It is bounded twice: an
entry is forgotten `retain_s` after it was seen (wall clock, so one receiver with a wrong
clock cannot flush everyone's entries) and the oldest go first beyond `max_entries`.

Only other receivers' copies are fused. A row from the stored report's own receiver passes on
as a report: the report again (a batch retried, a file ingested twice), which the stores'
identity keys turn into a duplicate, or that receiver repeating itself with another time,
which stays a report of its own as it was before fusion. So a single source (a file, one
feed) is stored exactly as without fusion, and what a copy becomes never depends on how one
receiver's lines were cut into batches; between receivers, the copy that reaches the writer
first is the report. Re-delivery of a reception passes it on again, and its own key makes it
a duplicate. Reports without a receive time of their own (placed by
their file's line, `framing.LineBatch.place`) have no event time to compare and are never
fused, nor are flagged reports (`breakwater.plausibility`): a demoted receiver's copy must not
become the stored report that a trusted receiver's copy is then only a reception of.

While a transmission is in the window it also measures clocks: once three or more receivers
heard it, each receiver's receive time is held against their median (`Fused.drift`, judged by
`breakwater.plausibility`).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from breakwater.reports import (
    DIGEST,
    FLAG,
    KINDS,
    MMSI,
    RECEIVED_MS,
    STATION,
    TIME_FROM_FILE,
    TIME_FROM_INGEST,
    TIME_SOURCE,
    ReportBatch,
)

DEFAULT_WINDOW_S = 5.0
DEFAULT_RETAIN_S = 30.0
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_DRIFT_S = 2.0
_PLACED = frozenset({TIME_FROM_FILE, TIME_FROM_INGEST})


def receiver_of(row: tuple[Any, ...], source: str) -> str:
    """Who heard a report: its tag block station, else the source it came from."""
    station = row[STATION]
    return str(station) if station else source


@dataclass(slots=True)
class _Heard:
    """One transmission as the window holds it: the stored report's receive time and
    receiver, when (wall clock) the window first saw it, and once other receivers' copies
    come, every receiver's own receive time."""

    received_ms: int
    receiver: str
    seen_at: float
    times: dict[str, int] | None = None


@dataclass
class Fused:
    """What `FusionWindow.admit` made of a batch: the batch without its later copies, which
    are its `receptions` now, and how many copies of each kind were taken out."""

    batch: ReportBatch
    copies: Counter[str] = field(default_factory=Counter)  # kind -> copies taken out
    # (receiver, its receive time within max_drift_ms of the median), for transmissions three
    # or more receivers heard: the clock-drift check of breakwater.plausibility.
    drift: list[tuple[str, bool]] = field(default_factory=list)


class FusionWindow:
    """The copies of recent transmissions one writer has seen. Safe to share between the
    threads of one writer actor."""

    def __init__(
        self,
        window_s: float = DEFAULT_WINDOW_S,
        *,
        retain_s: float = DEFAULT_RETAIN_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_drift_s: float = DEFAULT_MAX_DRIFT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be 0 (off) or more, got {window_s}")
        self.window_ms = round(window_s * 1000)
        self.max_drift_ms = round(max_drift_s * 1000)
        self.retain_s = max(retain_s, window_s)
        self.max_entries = max_entries
        self.clock = clock
        self.forgotten = 0  # entries dropped to make room before their retain_s was up
        # Oldest first; OrderedDict, as a plain dict slows down when its first items keep being
        # deleted (each lookup of the new first item walks over the holes they leave).
        self._heard: OrderedDict[tuple[str, int, int], _Heard] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0

    def __len__(self) -> int:
        return len(self._heard)

    def admit(self, batch: ReportBatch) -> Fused:
        """The batch with every later copy of a transmission replaced by a reception."""
        if not self.enabled:
            return Fused(batch)
        out = ReportBatch(batch.source, batch.read_ms, receptions=list(batch.receptions))
        fused = Fused(out)
        with self._lock:
            now = self.clock()
            self._forget(now)
            for kind in KINDS:
                kept = out.rows(kind)
                for row in batch.rows(kind):
                    reception = self._admit(kind, row, batch.source, now, fused.drift)
                    if reception is None:
                        kept.append(row)
                    else:
                        out.receptions.append(reception)
                        fused.copies[kind] += 1
        return fused

    def _admit(
        self, kind: str, row: tuple[Any, ...], source: str, now: float, drift: list[tuple[str, bool]]
    ) -> tuple[Any, ...] | None:
        if row[TIME_SOURCE] in _PLACED or row[FLAG] is not None:
            return None
        key = (kind, row[MMSI], row[DIGEST])
        receiver = receiver_of(row, source)
        heard = self._heard.get(key)
        if heard is None or abs(row[RECEIVED_MS] - heard.received_ms) > self.window_ms:
            if self._heard.pop(key, None) is None and len(self._heard) >= self.max_entries:
                self._heard.popitem(last=False)  # the oldest makes room
                self.forgotten += 1
            self._heard[key] = _Heard(row[RECEIVED_MS], receiver, now)  # last: the newest
            return None
        if receiver == heard.receiver:
            return None  # the report itself again, or its receiver's own repeat: not another receiver's
        self._judge_drift(heard, receiver, row[RECEIVED_MS], drift)
        return (row[MMSI], heard.received_ms, row[DIGEST], kind, receiver, row[RECEIVED_MS])

    def _judge_drift(self, heard: _Heard, receiver: str, heard_ms: int, drift: list[tuple[str, bool]]) -> None:
        """Once three receivers heard a transmission, each one's time against their median:
        the first three together, every later one as it comes."""
        times = heard.times
        if times is None:
            times = heard.times = {heard.receiver: heard.received_ms}
        if receiver in times:
            return
        times[receiver] = heard_ms
        if len(times) < 3:
            return
        middle = statistics.median(times.values())
        judged = times if len(times) == 3 else {receiver: heard_ms}
        drift.extend((r, abs(t - middle) <= self.max_drift_ms) for r, t in judged.items())

    def _forget(self, now: float) -> None:
        """Drop the entries seen more than `retain_s` ago (the oldest are first)."""
        heard = self._heard
        horizon = now - self.retain_s
        while heard:
            oldest = next(iter(heard.values()))
            if oldest.seen_at >= horizon:
                break
            heard.popitem(last=False)
