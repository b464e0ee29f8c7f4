"""Framing: from raw lines to batches of complete AIS messages.

The reader runs in one process per source, ahead of the decode tasks, so it does only what
must be done in order: it splits off tag blocks, tells AIS sentences from everything else,
joins the fragments of multi-sentence messages (also when they fall in different batches,
and when several channels interleave), and cuts batches by size or by time. It also turns
away the bytes no NMEA sentence holds, before anything else looks at the line. Checksums,
receive times and the AIS payload are left to the decode tasks, which run in parallel.

Every line ends in exactly one place: a message in a batch, a counted rejection, or the
fragments still waiting for their group. `Reader.pending_lines` is that last number.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from breakwater import accounting as acc

AIS_SENTENCE_TYPES = (b"VDM", b"VDO")

# NMEA 0183 sentences and tag blocks are printable ASCII (0x20 to 0x7E). Any other byte means
# the line was corrupted on its way: a NUL XORs into the checksum as nothing, so only this
# check, made before the checksum, keeps such a line from decoding into a wrong position.
# Deleting the allowed bytes' complement and comparing lengths is one C pass (~0.3 us a line).
_NOT_PRINTABLE = bytes(range(0x20)) + bytes(range(0x7F, 0x100))
# NMEA 0183 limits a sentence to 82 characters; with a tag block and a receive-time trailer
# real lines stay far below this (the bundled captures' longest is 116 bytes). A longer line
# is garbage and is rejected by its length alone, before it is scanned, split or decoded.
MAX_LINE_BYTES = 1024
# The fields that name a fragment's group (talker and type, counts, sequence id, channel) lie
# within this many bytes of the sentence start.
_GROUP_KEY_BYTES = 40


# A message without a receive time of its own is placed by its source: its time is the
# source's time (`SourceStamp.time_ms`, or when a live feed's batch was cut) and its digest is
# its place, `key * PLACE_SPAN + line number` (the line number taken modulo PLACE_SPAN). The
# digest stays below 10**13: Redis's Lua prints numbers with 14 significant digits.
PLACE_SPAN = 10**9
PLACE_KEYS = 10**4


def place_key(data: bytes) -> int:
    """A key in [0, PLACE_KEYS) naming a source by some of its bytes."""
    return zlib.crc32(data) % PLACE_KEYS


@dataclass(frozen=True, slots=True)
class SourceStamp:
    """What places a file's time-less messages, the same on every read of the file: its
    modification time (no line of it was received later) and a key from its first bytes.
    Re-reading the file gives its time-less reports the identities they had, so a re-ingest
    adds nothing, and the line numbers keep them in file order."""

    time_ms: int
    key: int


@dataclass(slots=True)
class LineBatch:
    """Complete messages from one source, ready for a decode task.

    Each message is the raw text of its sentences, tag blocks included, joined by b"\\n" in
    fragment order. `read_ms` is when the batch was cut: the receive time of any message
    that carries none of its own on a live feed, and the start of the end-to-end latency. It
    grows strictly from batch to batch of a reader. `line_nos[i]` is the source line
    message i starts on; `stamp` is the file's, None on a live feed or a pipe.
    """

    source: str
    seq: int
    read_ms: int
    messages: list[bytes] = field(default_factory=list)
    line_count: int = 0
    line_nos: list[int] = field(default_factory=list)
    stamp: SourceStamp | None = None

    def place(self, i: int) -> tuple[int, int]:
        """(time, digest) of message i when it carries no receive time (see PLACE_SPAN)."""
        line_no = self.line_nos[i] % PLACE_SPAN
        if self.stamp is not None:
            return self.stamp.time_ms, self.stamp.key * PLACE_SPAN + line_no
        return self.read_ms, place_key(self.source.encode()) * PLACE_SPAN + line_no


@dataclass(slots=True)
class _Group:
    """Fragments of one multi-sentence message seen so far."""

    frag_cnt: int
    lines: list[bytes]
    first_line_no: int
    started_s: float


def _sentence_start(line: bytes) -> int:
    """Index where the NMEA sentence starts, after an optional tag block; -1 if malformed."""
    if line[:1] != b"\\":
        return 0
    end = line.find(b"\\", 1)
    return -1 if end < 0 else end + 1


_GroupKey = tuple[bytes, bytes, int]


def _group_key(fields: list[bytes], frag_cnt: int) -> _GroupKey:
    """Sequence id and channel tell interleaved groups apart; talker and type keep an
    own-ship VDO group apart from a VDM group with the same id."""
    return (fields[0][-5:], fields[3] + b"," + fields[4], frag_cnt)


def _fragment_group_key(line: bytes) -> _GroupKey | None:
    """The group a line claims to be a fragment of, read from its header fields only; None
    when it claims no group. Used on lines rejected for their bytes, whose header may still
    name the group they leave incomplete."""
    start = _sentence_start(line)
    if start < 0:
        return None
    fields = line[start : start + _GROUP_KEY_BYTES].split(b",", 5)
    if len(fields) < 5 or fields[1] in (b"", b"1"):
        return None
    try:
        frag_cnt = int(fields[1])
    except ValueError:
        return None
    return _group_key(fields, frag_cnt)


class Reader:
    """Frames lines of one source into `LineBatch`es.

    Feed it lines with `feed`; it returns a batch whenever `max_lines` lines are ready. Call
    `tick` on a live feed to cut a batch after `flush_interval_s` even when it is small, and
    `close` at the end of the source: fragments whose group never completed are then
    rejected as orphans.

    A group that waits longer than `fragment_timeout_lines` lines or `fragment_timeout_s`
    seconds is rejected as an orphan too, so a feed that drops fragments cannot grow memory.
    """

    def __init__(
        self,
        source: str,
        *,
        max_lines: int = 5000,
        flush_interval_s: float = 0.5,
        fragment_timeout_lines: int = 1000,
        fragment_timeout_s: float = 60.0,
        stamp: SourceStamp | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.stamp = stamp
        self.max_lines = max_lines
        self.flush_interval_s = flush_interval_s
        self.fragment_timeout_lines = fragment_timeout_lines
        self.fragment_timeout_s = fragment_timeout_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.rejected_examples: dict[str, bytes] = {}
        self._groups: dict[_GroupKey, _Group] = {}
        self._line_no = 0
        self._seq = 0
        self._last_read_ms = 0
        self._batch = self._new_batch()

    @property
    def pending_lines(self) -> int:
        """Lines held as fragments of groups that are not complete yet."""
        return sum(len(g.lines) for g in self._groups.values())

    def _new_batch(self) -> LineBatch:
        self._batch_started_s = self.clock()
        return LineBatch(self.source, self._seq, 0, stamp=self.stamp)

    def _reject(self, reason: str, line: bytes, n_lines: int = 1) -> None:
        self.counts[acc.rejected(reason)] += n_lines
        self.rejected_examples.setdefault(reason, line[:200])

    def _orphan_group(self, key: _GroupKey) -> None:
        """The group under `key` can never complete: its waiting fragments become orphans."""
        group = self._groups.pop(key, None)
        if group is not None:
            self._reject(acc.REASON_ORPHAN_FRAGMENT, group.lines[0], len(group.lines))

    def _reject_corrupt(self, reason: str, line: bytes) -> None:
        """A line with bytes no sentence holds. If it was a fragment, its group is orphaned at
        once (and counted), instead of waiting for a fragment that was thrown away."""
        self._reject(reason, line)
        key = _fragment_group_key(line)
        if key is not None:
            self._orphan_group(key)

    def _emit(self, message: bytes, n_lines: int, line_no: int) -> LineBatch | None:
        batch = self._batch
        batch.messages.append(message)
        batch.line_nos.append(line_no)
        batch.line_count += n_lines
        if batch.line_count >= self.max_lines:
            return self._cut()
        return None

    def _cut(self) -> LineBatch | None:
        batch = self._batch
        if not batch.messages:
            self._batch_started_s = self.clock()
            return None
        batch.read_ms = self._last_read_ms = max(int(self.clock() * 1000), self._last_read_ms + 1)
        self.counts[acc.LINES_FORWARDED] += batch.line_count
        self._seq += 1
        self._batch = self._new_batch()
        return batch

    def feed(self, raw: bytes) -> LineBatch | None:
        """Take one line (with or without its line ending); return a batch when one is full."""
        self._line_no += 1
        self.counts[acc.LINES_READ] += 1
        if len(raw) > MAX_LINE_BYTES:
            self._reject_corrupt(acc.REASON_TOO_LONG, raw)
            return None
        line = raw.strip()
        if not line:
            self._reject(acc.REASON_EMPTY, line)
            return None
        if len(line.translate(None, _NOT_PRINTABLE)) != len(line):
            self._reject_corrupt(acc.REASON_NOT_PRINTABLE, line)
            return None
        start = _sentence_start(line)
        if start < 0:
            self._reject(acc.REASON_MALFORMED, line)
            return None
        head = line[start : start + 6]
        if head[3:6] not in AIS_SENTENCE_TYPES or head[:1] != b"!":
            reason = acc.REASON_NOT_AIS if head[:1] in (b"$", b"!") else acc.REASON_MALFORMED
            self._reject(reason, line)
            return None
        fields = line[start:].split(b",", 5)
        if len(fields) < 6:
            self._reject(acc.REASON_MALFORMED, line)
            return None
        if fields[1] == b"1":
            return self._emit(line, 1, self._line_no)
        return self._fragment(line, fields)

    def _fragment(self, line: bytes, fields: list[bytes]) -> LineBatch | None:
        try:
            frag_cnt, frag_num = int(fields[1]), int(fields[2])
        except ValueError:
            self._reject(acc.REASON_MALFORMED, line)
            return None
        if not 1 <= frag_num <= frag_cnt <= 9:
            self._reject(acc.REASON_MALFORMED, line)
            return None
        key = _group_key(fields, frag_cnt)
        group = self._groups.get(key)
        if frag_num == 1:
            if group is not None:  # a new group started before the old one completed
                self._reject(acc.REASON_ORPHAN_FRAGMENT, group.lines[0], len(group.lines))
            self._groups[key] = _Group(frag_cnt, [line], self._line_no, self.clock())
            self._expire_groups()
            return None
        if group is None or len(group.lines) != frag_num - 1:
            if group is not None and frag_num > len(group.lines) + 1:
                self._orphan_group(key)  # a fragment in between was lost: it cannot complete
            self._reject(acc.REASON_ORPHAN_FRAGMENT, line)
            return None
        group.lines.append(line)
        if frag_num < frag_cnt:
            return None
        del self._groups[key]
        return self._emit(b"\n".join(group.lines), frag_cnt, group.first_line_no)

    def _expire_groups(self) -> None:
        if not self._groups:
            return
        oldest_line = self._line_no - self.fragment_timeout_lines
        oldest_s = self.clock() - self.fragment_timeout_s
        for key, group in list(self._groups.items()):
            if group.first_line_no < oldest_line or group.started_s < oldest_s:
                self._reject(acc.REASON_ORPHAN_FRAGMENT, group.lines[0], len(group.lines))
                del self._groups[key]

    def tick(self) -> LineBatch | None:
        """On a live feed: cut the batch if it has waited `flush_interval_s`."""
        self._expire_groups()
        if self.clock() - self._batch_started_s >= self.flush_interval_s:
            return self._cut()
        return None

    def flush(self) -> LineBatch | None:
        """Cut whatever is in the current batch, however small."""
        return self._cut()

    def close(self) -> LineBatch | None:
        """End of source: incomplete groups become orphans; the last batch is returned."""
        for group in self._groups.values():
            self._reject(acc.REASON_ORPHAN_FRAGMENT, group.lines[0], len(group.lines))
        self._groups.clear()
        return self._cut()
