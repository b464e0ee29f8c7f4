"""Input validation where input enters (issue 10), on fuzzed copies of the real captures.

A NUL inside a sentence passes its checksum (it XORs as nothing) and pyais maps any byte to
six bits, so before the reader checked for printable ASCII, 972 of the issue's 1,414
NUL-injected lines decoded into reports the capture does not hold (vessels moved across the
ocean); of this file's 1,414 (seed 10), 1,359 pass their checksum and the old code decoded
1,031. Control bytes, bytes of 0x80 and more and invalid UTF-8 are the same corruption (the
old code decoded a few of each, where they hit an AMSA receive-time trailer). Every such line
must end as a counted rejection, and the lines around it must decode exactly as without it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from functools import reduce
from operator import xor
from pathlib import Path
from typing import Any

import pytest

from breakwater import accounting as acc
from breakwater.breaker import BreakerConfig, CircuitBreaker
from breakwater.config import load_settings
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue
from breakwater.decode import BatchDecoder
from breakwater.errors import ConfigError
from breakwater.framing import Reader
from breakwater.gate import SinkGate
from breakwater.pipeline import Ingest, ReaderOptions
from breakwater.reports import FLAG, FLAG_CLOCK_AHEAD
from breakwater.writer import ShardWriter
from tests.conftest import read_lines
from tests.unit.fakes import InProcessCluster, ListSource, MemorySink

# The ingest clock of every run here: 2026-11-29T16:00:00Z, injected into the reader, whose
# batches carry it (`read_ms`) to the decoder. The AMSA capture's receive times are of 2012.
INGEST_S = 1_795_968_000.0
FUZZED_LINES = 1_414  # as many as the fuzzed file held


def ingest(lines: list[bytes], *, now_s: float = INGEST_S) -> tuple[Counter[str], list[tuple[Any, ...]]]:
    """Reader and decoder over `lines`: the counts (checked for conservation) and every row."""
    reader = Reader("fuzzed", max_lines=2000, clock=lambda: now_s)
    batches = [b for line in lines if (b := reader.feed(line)) is not None]
    if (last := reader.close()) is not None:
        batches.append(last)
    decoder = BatchDecoder(1)
    counts: Counter[str] = Counter(reader.counts)
    rows: list[tuple[Any, ...]] = []
    for batch in batches:
        decoded = decoder.decode(batch)
        counts.update(decoded.counts)
        for shard in decoded.shards:
            rows += shard.positions + shard.statics + shard.others
    counts[acc.LINES_PENDING] = reader.pending_lines
    assert acc.conservation_errors(counts, []) == []
    return counts, rows


@pytest.fixture(scope="module")
def capture(amsa_path: Path) -> tuple[list[bytes], Counter[str], list[tuple[Any, ...]]]:
    lines = read_lines(amsa_path)
    counts, rows = ingest(lines)
    return lines, counts, rows


def decodable_single_sentences(lines: list[bytes], n: int, rng: random.Random) -> list[int]:
    """Indexes of `n` one-sentence AIS lines, chosen at random, each decoding on its own."""
    candidates = [i for i, line in enumerate(lines) if b"VDM,1,1," in line or b"VDO,1,1," in line]
    rng.shuffle(candidates)
    chosen: list[int] = []
    for i in candidates:
        if ingest([lines[i]])[0][acc.MESSAGES_DECODED] == 1:
            chosen.append(i)
            if len(chosen) == n:
                return sorted(chosen)
    raise AssertionError(f"the capture holds only {len(chosen)} decodable one-sentence lines")


def _nul(rng: random.Random) -> bytes:
    return b"\x00"


def _control(rng: random.Random) -> bytes:
    return bytes([rng.choice([*range(1, 0x20), 0x7F])])


def _high_byte(rng: random.Random) -> bytes:
    return bytes([rng.randint(0x80, 0xFF)])


def _invalid_utf8(rng: random.Random) -> bytes:
    # a lone continuation byte, a cut two-byte sequence, an encoded surrogate, an overlong NUL,
    # bytes UTF-8 never uses
    return rng.choice([b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"\xff\xfe", b"\xf8\x88\x80\x80\x80"])


def _utf8_text(rng: random.Random) -> bytes:
    return rng.choice(["é", "°", "Ø", "\u00a0"]).encode()  # valid UTF-8, still not ASCII


def checksum_holds(line: bytes) -> bool:
    """The sentence's own checksum (XOR of the bytes between "!" and "*") matches."""
    sentence = line.rpartition(b"\\")[2]
    body, star, rest = sentence[1:].partition(b"*")
    return bool(star) and f"{reduce(xor, body, 0):02X}".encode() == rest[:2]


def inserted(line: bytes, junk: bytes, rng: random.Random) -> bytes:
    """`junk` at a random place inside `line` (whitespace at either end would be a line ending)."""
    at = rng.randint(1, len(line) - 1)
    return line[:at] + junk + line[at:]


@pytest.mark.parametrize(
    ("seed", "junk"),
    [(10, _nul), (11, _control), (12, _high_byte), (13, _invalid_utf8), (14, _utf8_text)],
    ids=["nul", "control_byte", "byte_0x80_or_more", "invalid_utf8", "utf8_text"],
)
def test_a_corrupt_byte_anywhere_in_a_real_sentence_is_rejected_before_its_checksum(
    seed: int, junk: Callable[[random.Random], bytes], capture: tuple[list[bytes], Counter[str], list[Any]]
) -> None:
    lines, clean_counts, clean_rows = capture
    rng = random.Random(seed)
    fuzzed = {i: inserted(lines[i], junk(rng), rng) for i in decodable_single_sentences(lines, FUZZED_LINES, rng)}

    if junk is _nul:  # the checksum cannot see it: only the reader's byte check does
        assert sum(map(checksum_holds, fuzzed.values())) == 1_359
    for line in fuzzed.values():  # alone: not one decodes, each is counted under its reason
        counts, rows = ingest([line])
        assert (counts[acc.rejected(acc.REASON_NOT_PRINTABLE)], counts[acc.LINES_DECODED], rows) == (1, 0, [])

    counts, rows = ingest([fuzzed.get(i, line) for i, line in enumerate(lines)])
    assert counts[acc.rejected(acc.REASON_NOT_PRINTABLE)] == FUZZED_LINES
    assert counts[acc.MESSAGES_DECODED] == clean_counts[acc.MESSAGES_DECODED] - FUZZED_LINES
    assert counts[acc.LINES_READ] == clean_counts[acc.LINES_READ] == len(lines)
    # No report that the capture does not hold: no vessel moved, nothing invented. Receive
    # times are left out: a report without its own takes its batch's read time, and the
    # rejected lines shift where batches are cut.
    assert Counter(map(untimed, rows)) <= Counter(map(untimed, clean_rows))
    assert len(rows) < len(clean_rows)


def untimed(row: Any) -> tuple[Any, ...]:
    """A stored row without its receive time (the second field)."""
    return (row[0], *row[2:])


def two_sentence_groups(lines: list[bytes]) -> Iterator[int]:
    """Indexes of first fragments whose second fragment follows on the next line."""
    for i in range(len(lines) - 1):
        first, second = (line.rpartition(b"\\")[2].split(b",") for line in lines[i : i + 2])
        if first[1:3] == [b"2", b"1"] and second[1:3] == [b"2", b"2"] and first[3:5] == second[3:5]:
            yield i


def test_a_corrupt_fragment_rejects_its_whole_group_with_a_count(kystverket_path: Path) -> None:
    # The Kystverket capture: 123 two-sentence messages (the AMSA one has a handful).
    lines = read_lines(kystverket_path)
    clean_counts, clean_rows = ingest(lines)
    rng = random.Random(15)
    groups = [i for i in two_sentence_groups(lines) if ingest(lines[i : i + 2])[0][acc.MESSAGES_DECODED] == 1]
    picked = sorted(rng.sample(groups, 100))
    corpus = list(lines)
    for i in picked:
        at = i + rng.randint(0, 1)  # the first or the second fragment
        corpus[at] = inserted(corpus[at], b"\x00", rng)

    counts, rows = ingest(corpus)
    assert counts[acc.rejected(acc.REASON_NOT_PRINTABLE)] == 100
    # the other fragment of each group is orphaned, and counted as such
    orphans = clean_counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)]
    assert counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == orphans + 100
    assert counts[acc.LINES_PENDING] == 0
    assert counts[acc.MESSAGES_DECODED] == clean_counts[acc.MESSAGES_DECODED] - 100
    assert Counter(map(tuple, rows)) <= Counter(map(tuple, clean_rows))


def tagged(c: int, nmea: bytes) -> bytes:
    tag = b"c:%d" % c
    return b"\\" + tag + b"*%02X" % reduce(xor, tag, 0) + b"\\" + nmea


def test_the_job_summary_counts_and_shows_each_new_reason(tmp_path: Path, amsa_path: Path) -> None:
    queue = DeadLetterQueue(DeadLetterConfig(path=tmp_path / "dlq.sqlite3"))
    db = MemorySink("db")
    writers = [ShardWriter([db], {"db": SinkGate(CircuitBreaker("db", BreakerConfig()))}, queue, job_id="job")]
    lines = read_lines(amsa_path)[:2000]
    body = b"AIVDM,1,1,,A,17P@<J?P00blFWmjG@5a5?v62<10,0"
    corrupt = [
        lines[2][:20] + b"\x00" + lines[2][20:],
        b"!AIVDM,1,1,,A," + b"0" * 100_000 + b",0*26",
        b"!" + body.replace(b"blF", b"bXF") + b"*%02X" % reduce(xor, body.replace(b"blF", b"bXF"), 0),
        tagged(2_334_337_317, b"!BSVDM,1,1,,A,33mkDd1000QbddT`LhTnCiKh0Dfr,0*68"),  # the year 2043
    ]
    loop = Ingest(InProcessCluster(writers, queue, "job"), job_id="job", reader=ReaderOptions(max_lines=300))
    summary = loop.run([ListSource("feed", [*lines[:1000], *corrupt, *lines[1000:]])])
    clean = Ingest(InProcessCluster(writers, queue, "job"), job_id="clean", reader=ReaderOptions(max_lines=300)).run(
        [ListSource("feed", lines)]
    )

    assert summary.ok and summary.errors == []
    new = {"not_printable": 1, "too_long": 1, "bad_payload": 1}
    assert summary.as_dict()["rejected"] == {**clean.as_dict()["rejected"], **new}
    assert summary.as_dict()["messages_decoded"] == clean.as_dict()["messages_decoded"] + 1  # the year 2043
    assert summary.as_dict()["flagged"] == {"clock_ahead": 1}
    text = summary.render().splitlines()
    assert "      not_printable:   " + lines[2][:20].decode() + "\\x00" + lines[2][20:].decode() in text
    assert "      too_long:        !AIVDM,1,1,,A," + "0" * 60 + "..." in text  # cut at 100
    assert "      bad_payload:     !AIVDM,1,1,,A,17P@<J?P00bXFWmjG@5a5?v62<10,0*13" in text
    assert "  flagged                    1   kept in history, moving no latest state: clock_ahead 1" in text
    # The year 2043 is in the history, flagged; it is no vessel's newest plausible report.
    (kept,) = [row for row in db.rows.values() if row[1] > 2_000_000_000_000]
    assert kept[FLAG] == FLAG_CLOCK_AHEAD


def test_the_clock_skew_is_a_setting_above_zero_seconds() -> None:
    assert load_settings().max_clock_skew_s == 300.0
    assert load_settings({"max_clock_skew_s": "30"}).max_clock_skew_s == 30.0
    with pytest.raises(ConfigError) as error:
        load_settings({"max_clock_skew_s": 0})
    assert (
        str(error.value) == "BREAKWATER_MAX_CLOCK_SKEW_S (--max-clock-skew-s): Input should be greater than 0 (got '0')"
    )
