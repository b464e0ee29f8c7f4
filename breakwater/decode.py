"""Decoding: a batch of complete messages in, normalized report rows out, sharded by MMSI.

This is the work of one stateless decode task. pyais parses the sentences and decodes the AIS
payload; Breakwater adds what pyais leaves to its user: checksums as counted rejections, the
payload's 6-bit alphabet and fill bits, receive times from tag blocks or AMSA-style trailers
(none far ahead of the ingest clock), MMSI validation, not-available values as None
(`breakwater.normalize`), and the split into one `ReportBatch` per writer shard.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyais.exceptions import AISBaseException
from pyais.messages import AISSentence, TagBlock

from breakwater import accounting as acc
from breakwater.framing import LineBatch
from breakwater.normalize import ROW_BUILDERS, mmsi_is_valid, other_row
from breakwater.reports import (
    FLAG_CLOCK_AHEAD,
    KINDS,
    TIME_FROM_FILE,
    TIME_FROM_INGEST,
    TIME_FROM_TAG_BLOCK,
    TIME_FROM_TRAILER,
    ReportBatch,
    shard_of,
    with_flag,
)

# A receive time before 1990 or after 2100 is a corrupt field, not a time.
_MIN_EPOCH_S, _MAX_EPOCH_S = 631_152_000, 4_102_444_800
# How far a receive time may lie ahead of the ingest clock (seconds). A receive time is when a
# station heard the report, so it is never later than its ingestion; a few minutes absorb a
# receiver clock without GPS or NTP and the ingest host's own error. A time further ahead
# would win newer-wins and pin the vessel's latest state until that time comes.
DEFAULT_MAX_CLOCK_SKEW_S = 300.0
# The AIS payload's 6-bit alphabet (ITU-R M.1371-5 table 47): "0" to "W" and "`" to "w".
_SIXBIT = bytes(range(0x30, 0x58)) + bytes(range(0x60, 0x78))
_FILL_FIELDS = (b",0", b",1", b",2", b",3", b",4", b",5")  # the comma keeps "05" or "" out


@dataclass(slots=True)
class DecodedBatch:
    """What a decode task returns: counts for the summary and one report batch per shard."""

    counts: Counter[str]
    shards: list[ReportBatch]
    rejected_examples: dict[str, bytes] = field(default_factory=dict)


def epoch_ms(text: bytes | str) -> int | None:
    """A Unix time in seconds or milliseconds (told apart by size) as milliseconds."""
    try:
        value = float(text)
    except ValueError:
        return None
    if value > _MAX_EPOCH_S:  # milliseconds
        value /= 1000.0
    if not _MIN_EPOCH_S <= value <= _MAX_EPOCH_S:
        return None
    return round(value * 1000)


@dataclass(frozen=True, slots=True)
class TagInfo:
    """What Breakwater uses of a tag block. `parsed` is False when it has no checksum field at
    all (a broken block); `checksum_ok` is False when the checksum does not match."""

    parsed: bool
    checksum_ok: bool
    received_ms: int | None
    station: str | None


def parse_tag_block(raw: bytes) -> TagInfo:
    """Receive time (`c:`) and station (`s:`) of an NMEA 4.10 tag block (between the slashes)."""
    tag = TagBlock(raw)
    tag.init()
    if b"*" not in raw or raw.count(b"*") > 1:
        return TagInfo(False, False, None, None)
    stamp = tag.receiver_timestamp
    return TagInfo(True, tag.is_valid, epoch_ms(stamp) if stamp else None, tag.source_station)


class _Sentence:
    """One line split into tag block, NMEA sentence and AMSA-style trailing receive time."""

    __slots__ = ("nmea", "tag", "trailer_ms")

    def __init__(self, line: bytes) -> None:
        self.tag: bytes | None = None
        if line[:1] == b"\\":
            end = line.index(b"\\", 1)
            self.tag, line = line[1:end], line[end + 1 :]
        self.trailer_ms: int | None = None
        star = line.rfind(b"*")
        if star >= 0 and len(line) > star + 3 and line[star + 3 : star + 4] == b",":
            self.trailer_ms = epoch_ms(line[star + 4 :])
            line = line[: star + 3]
        self.nmea = line


def payload_is_valid(payload: bytes, nmea: bytes, last_fragment: bool) -> bool:
    """True when a sentence's payload holds only 6-bit characters and its fill-bit field
    (before the `*` of `nmea`) is one digit 0-5 that fits: zero on every fragment but the
    last (fill bits pad the end of the whole message), and zero on an empty payload.

    pyais maps any byte to some six bits and reads a fill field it cannot parse as 0, so a
    corrupt payload whose checksum happens to hold would decode into a wrong report. Non-zero
    pad bits are not checked: real transmitters send them (107 type 20/21 lines of the bundled
    AMSA capture) and pyais drops them unread.
    """
    star = nmea.rfind(b"*")
    fill = nmea[star - 2 : star]
    if fill not in _FILL_FIELDS or (fill != b",0" and (not last_fragment or not payload)):
        return False
    return not payload.translate(None, _SIXBIT)


class BatchDecoder:
    """Decodes `LineBatch`es. One per decode task; it caches parsed tag blocks, which
    repeat from line to line in a feed (the same receive second, the same station).

    The ingest clock a receive time is held against is the batch's `read_ms`, when the
    reader cut it (with the reader's injected clock): the same batch decodes the same way
    wherever and however often a task runs it."""

    def __init__(
        self,
        n_shards: int,
        *,
        strict_tag_blocks: bool = False,
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
    ) -> None:
        if n_shards < 1:
            raise ValueError(f"n_shards must be at least 1, got {n_shards}")
        if not max_clock_skew_s > 0:
            raise ValueError(f"max_clock_skew_s must be above 0 seconds, got {max_clock_skew_s}")
        self.n_shards = n_shards
        self.strict_tag_blocks = strict_tag_blocks
        self.max_clock_skew_ms = round(max_clock_skew_s * 1000)
        self._tags: dict[bytes, TagInfo] = {}

    def decode(self, batch: LineBatch) -> DecodedBatch:
        counts: Counter[str] = Counter()
        examples: dict[str, bytes] = {}
        n = self.n_shards
        shards = [ReportBatch(batch.source, batch.read_ms) for _ in range(n)]
        lists = {kind: [shard.rows(kind) for shard in shards] for kind in KINDS}
        lines_decoded = messages_decoded = 0
        for i, message in enumerate(batch.messages):
            lines = message.split(b"\n")
            result = self._decode_message(lines, batch, i, counts)
            if isinstance(result, str):
                counts[acc.rejected(result)] += len(lines)
                examples.setdefault(result, message[:200])
                continue
            lines_decoded += len(lines)
            messages_decoded += 1
            for kind, row in result:
                lists[kind][shard_of(row[0], n)].append(row)
        counts[acc.LINES_DECODED] += lines_decoded
        counts[acc.MESSAGES_DECODED] += messages_decoded
        for kind in KINDS:
            counts[acc.reports(kind)] += sum(len(rows) for rows in lists[kind])
        if len(self._tags) > 10_000:
            self._tags.clear()
        return DecodedBatch(+counts, shards, examples)

    def _tag(self, raw: bytes) -> TagInfo:
        info = self._tags.get(raw)
        if info is None:
            info = self._tags[raw] = parse_tag_block(raw)
        return info

    def _decode_message(
        self, lines: list[bytes], batch: LineBatch, i: int, counts: Counter[str]
    ) -> str | list[tuple[str, Any]]:
        """Rows for message i of the batch, or the reason it is rejected."""
        received_ms: int | None = None
        time_source = TIME_FROM_INGEST
        station: str | None = None
        sentences: list[AISSentence] = []
        for line in lines:
            try:
                part = _Sentence(line)
                sentence = AISSentence(part.nmea)
            except (AISBaseException, ValueError):
                return acc.REASON_MALFORMED
            if not sentence.is_valid:
                return acc.REASON_BAD_CHECKSUM
            if not payload_is_valid(sentence.payload, part.nmea, sentence.frag_num == sentence.frag_cnt):
                return acc.REASON_BAD_PAYLOAD
            if part.tag is not None:
                info = self._tag(part.tag)
                if not info.parsed or (self.strict_tag_blocks and not info.checksum_ok):
                    return acc.REASON_BAD_TAG_BLOCK
                if not info.checksum_ok:
                    # Some networks add the `g:` group field after computing the checksum
                    # (the Kystverket feed does); the sentence's own checksum still holds.
                    counts[acc.WARN_TAG_BLOCK_CHECKSUM] += 1
                if received_ms is None and info.received_ms is not None:
                    received_ms, time_source = info.received_ms, TIME_FROM_TAG_BLOCK
                station = station or info.station
            if received_ms is None and part.trailer_ms is not None:
                received_ms, time_source = part.trailer_ms, TIME_FROM_TRAILER
            sentences.append(sentence)
        # A receiver whose clock is ahead would pin the vessel's latest state until that time:
        # the report is kept in history, flagged, and moves nothing.
        ahead = received_ms is not None and received_ms > batch.read_ms + self.max_clock_skew_ms
        try:
            joined = AISSentence.assemble_from_iterable(sentences)
            decoded = joined.decode()
            mmsi = decoded.mmsi
        except (AISBaseException, ValueError, IndexError, TypeError, AttributeError):
            return acc.REASON_UNDECODABLE
        if not mmsi_is_valid(mmsi):
            return acc.REASON_INVALID_MMSI
        if received_ms is None:  # placed by its source: `LineBatch.place`
            received_ms, digest = batch.place(i)
            time_source = TIME_FROM_FILE if batch.stamp is not None else TIME_FROM_INGEST
        else:
            digest = zlib.crc32(joined.payload)
        builder = ROW_BUILDERS.get(decoded.msg_type)
        try:
            if builder is None:
                nmea = b"\n".join(lines).decode("ascii", "replace")
                rows = [other_row(decoded, received_ms, digest, nmea, station, time_source)]
            else:
                rows = builder(decoded, received_ms, digest, station, time_source)
        except (AttributeError, TypeError, ValueError):
            # A payload too short for its type decodes with missing fields.
            return acc.REASON_UNDECODABLE
        if ahead:
            counts[acc.flagged(FLAG_CLOCK_AHEAD)] += len(rows)
            return [(kind, with_flag(row, FLAG_CLOCK_AHEAD)) for kind, row in rows]
        return rows


__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW_S",
    "BatchDecoder",
    "DecodedBatch",
    "TagInfo",
    "epoch_ms",
    "parse_tag_block",
    "payload_is_valid",
]
