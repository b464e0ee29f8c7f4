"""Benchmark corpora: large, realistic inputs made by replaying real captures.

A corpus is the real captures played again and again, each replay with its receive times
shifted by a whole period, so that every replay holds distinct reports (the history key is
MMSI, receive time and payload digest) and no position is ever invented. The mess of the real
feeds stays: non-AIS sentences, truncated lines and multi-sentence messages are copied as they
are, so a corpus rejects what the captures reject.

How each line is replayed:

- A line with an NMEA 4.10 tag block (`\\g:1-2-9999,c:1565218798*53\\!BSVDM,...`) gets its `c:`
  time shifted and its tag-block checksum computed afresh (XOR of the characters between the
  backslash and `*`); `g:`, `s:` and any other field stay. The checksum is valid afterwards
  even where the capture's was not (Kystverket adds `g:` after computing it).
- An AIS sentence without a tag block (the AMSA capture) gets one, `\\c:<seconds>*hh\\`, whose
  time is its AMSA-style trailer (`...*hh,1327664821`) when it has one, else the last trailer
  time seen before it (the first one of the file for lines before any). A trailer is shifted
  with its line, so the two times agree.
- Everything else (`$GPZDA`, `!AIPWR`, blank lines) is copied unchanged.

A corpus is deterministic: the same sources, size and start time give the same bytes. The
last replay is cut at exactly `lines` lines, which may leave its last multi-sentence message
incomplete (one orphan fragment, as a feed cut mid-message has).

    from jobs.bench.corpus import build_corpus
    info = build_corpus([Path("kystverket.nmea"), Path("amsa.nmea.gz")], 200_000, Path("corpus.nmea"))
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import xor
from pathlib import Path
from typing import Any, BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
# Tag-block times above this are milliseconds (the year 2100 in seconds), as in decode.epoch_ms.
_MAX_EPOCH_S = 4_102_444_800
# Receive times of a source that carries none at all: one second per this many lines.
_UNTIMED_LINES_PER_S = 100
UNTIMED_START_S = 1_577_836_800  # 2020-01-01T00:00:00Z
# Replays are spaced by whole minutes, so shifted times keep their second-of-minute.
_PERIOD_STEP_S = 60


@dataclass(frozen=True, slots=True)
class _Line:
    """One captured line, split where its receive time goes in.

    `tag_fields` is the tag block's text with the `c:` value cut out (`head`, `tail`), None for a
    line that has no tag block; `sentence` is everything after the tag block, trailer cut off
    (`trailer` True when it had one). `time_s` is the line's receive time in the capture.
    """

    kind: str  # "tagged", "ais" (gets a tag block) or "verbatim"
    time_s: int
    head: bytes = b""
    tail: bytes = b""
    sentence: bytes = b""
    trailer: bool = False
    time_scale: int = 1  # 1000 when the capture's `c:` is in milliseconds


@dataclass(frozen=True, slots=True)
class CorpusInfo:
    """What was built: enough to describe the corpus in a benchmark report."""

    path: Path | None
    lines: int
    bytes: int
    sha256: str
    replays: int  # replays started; the last one may be partial
    period_s: int  # shift from one replay to the next
    first_receive_s: int
    last_receive_s: int
    source_lines: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "path": None if self.path is None else str(self.path),
            "lines": self.lines,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "replays": self.replays,
            "period_s": self.period_s,
            "first_receive_s": self.first_receive_s,
            "last_receive_s": self.last_receive_s,
            "source_lines": dict(self.source_lines),
        }


def checksum(text: bytes) -> bytes:
    """NMEA checksum of `text` (the characters between the start mark and `*`): two
    uppercase hex digits."""
    return b"%02X" % reduce(xor, text, 0)


def _read_lines(path: Path) -> list[bytes]:
    with open(path, "rb") as probe:
        gz = probe.read(2) == GZIP_MAGIC
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        return [raw.rstrip(b"\r\n") for raw in f]


def _split_trailer(sentence: bytes) -> tuple[bytes, int | None]:
    """`!AIVDM,...,0*30,1327664821` -> (`!AIVDM,...,0*30`, 1327664821)."""
    star = sentence.rfind(b"*")
    if star < 0 or sentence[star + 3 : star + 4] != b",":
        return sentence, None
    value = sentence[star + 4 :]
    return (sentence[: star + 3], int(value)) if value.isdigit() else (sentence, None)


def _parse_tagged(line: bytes) -> tuple[bytes, bytes, int, int, bytes] | None:
    """(text before the c: value, text after it, time in seconds, scale, rest of line), or
    None when the tag block is broken or has no usable `c:`."""
    end = line.find(b"\\", 1)
    star = line.rfind(b"*", 0, end)
    if end < 0 or star < 0:
        return None
    fields = line[1:star]
    start = 0 if fields.startswith(b"c:") else fields.find(b",c:") + 1
    if start == 0 and not fields.startswith(b"c:"):
        return None
    stop = fields.find(b",", start)
    stop = len(fields) if stop < 0 else stop
    value = fields[start + 2 : stop]
    if not value.isdigit():
        return None
    stamp = int(value)
    scale = 1000 if stamp > _MAX_EPOCH_S else 1
    return fields[: start + 2], fields[stop:], stamp // scale, scale, line[end + 1 :]


def _is_ais(sentence: bytes) -> bool:
    return sentence[:1] == b"!" and sentence[3:6] in (b"VDM", b"VDO")


def _prepare(raw_lines: list[bytes]) -> list[_Line]:
    """Every line of one capture with its receive time in the capture."""
    trailer_times = [t for t in (_split_trailer(r)[1] for r in raw_lines if r[:1] == b"!") if t is not None]
    tag_times = [p[2] for p in (_parse_tagged(r) for r in raw_lines if r[:1] == b"\\") if p is not None]
    known = trailer_times[:1] or tag_times[:1]
    current = known[0] if known else UNTIMED_START_S
    out: list[_Line] = []
    for index, raw in enumerate(raw_lines):
        if not known:
            current = UNTIMED_START_S + index // _UNTIMED_LINES_PER_S
        if raw[:1] == b"\\":
            parsed = _parse_tagged(raw)
            if parsed is None:
                out.append(_Line("verbatim", current, sentence=raw))
                continue
            head, tail, current, scale, rest = parsed
            sentence, trailer_s = _split_trailer(rest)
            out.append(_Line("tagged", current, head, tail, sentence, trailer_s is not None, scale))
        elif _is_ais(raw):
            sentence, trailer_s = _split_trailer(raw)
            current = trailer_s if trailer_s is not None else current
            out.append(_Line("ais", current, sentence=sentence, trailer=trailer_s is not None))
        else:
            out.append(_Line("verbatim", current, sentence=raw))
    return out


class _Replayer:
    """Renders the lines of one capture at a given time shift; caches tag blocks, which
    repeat from line to line (the same second, the same group field)."""

    def __init__(self, lines: list[_Line]) -> None:
        self.lines = lines
        self._tags: dict[tuple[bytes, bytes, int], bytes] = {}

    def _tag(self, head: bytes, tail: bytes, stamp: int) -> bytes:
        key = (head, tail, stamp)
        tag = self._tags.get(key)
        if tag is None:
            if len(self._tags) > 50_000:
                self._tags.clear()
            text = b"%s%d%s" % (head, stamp, tail)
            tag = self._tags[key] = b"\\%s*%s\\" % (text, checksum(text))
        return tag

    def render(self, line: _Line, shift_s: int) -> bytes:
        if line.kind == "verbatim":
            return line.sentence
        t = line.time_s + shift_s
        trailer = b",%d" % t if line.trailer else b""
        if line.kind == "tagged":
            return self._tag(line.head, line.tail, t * line.time_scale) + line.sentence + trailer
        return self._tag(b"c:", b"", t) + line.sentence + trailer


def _period_s(captures: Sequence[list[_Line]]) -> int:
    """The shift between replays: longer than every capture's time span, in whole minutes."""
    span = max((max(x.time_s for x in c) - min(x.time_s for x in c) for c in captures if c), default=0)
    return (span // _PERIOD_STEP_S + 1) * _PERIOD_STEP_S


def _captures(sources: Sequence[Path]) -> list[list[_Line]]:
    if not sources:
        raise ValueError("a corpus needs at least one source capture")
    return [_prepare(_read_lines(Path(s))) for s in sources]


def iter_corpus(
    sources: Sequence[Path], lines: int, *, start_s: int | None = None, stats: dict[str, Any] | None = None
) -> Iterator[bytes]:
    """The corpus line by line (without line endings).

    Replay k plays every source in order with its times shifted by k periods. With `start_s`,
    each source is first moved so its earliest receive time is `start_s`; otherwise replay 0
    keeps the captures' own times. `stats`, if given, receives replays, period_s and the first
    and last receive time, and the line count of each source."""
    if lines < 0:
        raise ValueError(f"lines must be zero or more, got {lines}")
    captures = _captures(sources)
    if not any(captures):
        raise ValueError("the source captures hold no lines")
    period = _period_s(captures)
    if stats is not None:
        stats["source_lines"] = {str(s): len(c) for s, c in zip(sources, captures, strict=True)}
    bases = [0 if start_s is None or not c else start_s - min(x.time_s for x in c) for c in captures]
    replayers = [_Replayer(c) for c in captures]
    written, replay = 0, 0
    first, last = None, None
    while written < lines:
        for replayer, base in zip(replayers, bases, strict=True):
            shift = base + replay * period
            for line in replayer.lines:
                if written >= lines:
                    break
                yield replayer.render(line, shift)
                written += 1
                if line.kind != "verbatim":
                    t = line.time_s + shift
                    first = t if first is None or t < first else first
                    last = t if last is None or t > last else last
        replay += 1
    if stats is not None:
        stats.update(replays=replay, period_s=period, first_receive_s=first or 0, last_receive_s=last or 0)


def corpus_lines(sources: Sequence[Path], lines: int, *, start_s: int | None = None) -> list[bytes]:
    """The corpus in memory, for tests and quick runs (about 70 bytes a line)."""
    return list(iter_corpus(sources, lines, start_s=start_s))


def _open_output(out: Path, compress: bool) -> BinaryIO:
    raw = open(out, "wb")  # noqa: SIM115 (closed by the caller through the returned file)
    if not compress:
        return raw
    # mtime=0 and no file name in the header: the same corpus gives the same bytes.
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1)  # type: ignore[return-value]


def build_corpus(
    sources: Sequence[Path],
    lines: int,
    out: Path,
    *,
    start_s: int | None = None,
    compress: bool | None = None,
) -> CorpusInfo:
    """Write a corpus of exactly `lines` lines to `out` (gzip when `compress`, or by default
    when the name ends in .gz). See `iter_corpus` for how the replays are made."""
    compress = out.suffix == ".gz" if compress is None else compress
    stats: dict[str, Any] = {}
    digest = hashlib.sha256()
    size = 0
    count = 0
    f = _open_output(out, compress)
    raw = f.fileobj if isinstance(f, gzip.GzipFile) else f
    try:
        chunk: list[bytes] = []
        for line in iter_corpus(sources, lines, start_s=start_s, stats=stats):
            chunk.append(line)
            if len(chunk) >= 10_000:
                size += _write(f, chunk, digest)
                count += len(chunk)
                chunk = []
        size += _write(f, chunk, digest)
        count += len(chunk)
    finally:
        f.close()
        if raw is not f and raw is not None:
            raw.close()
    return CorpusInfo(
        out,
        count,
        size,
        digest.hexdigest(),
        stats.get("replays", 0),
        stats.get("period_s", 0),
        stats.get("first_receive_s", 0),
        stats.get("last_receive_s", 0),
        stats.get("source_lines", {}),
    )


def _write(f: BinaryIO, chunk: list[bytes], digest: Any) -> int:
    """Write lines with their endings; the digest and size are of the uncompressed text."""
    if not chunk:
        return 0
    data = b"\n".join(chunk) + b"\n"
    digest.update(data)
    f.write(data)
    return len(data)


__all__ = ["CorpusInfo", "build_corpus", "checksum", "corpus_lines", "iter_corpus"]
