"""The reader: framing lines, joining multi-sentence messages, cutting batches."""

from __future__ import annotations

from functools import reduce
from operator import xor
from pathlib import Path

import pytest

from breakwater import accounting as acc
from breakwater.framing import MAX_LINE_BYTES, PLACE_SPAN, LineBatch, Reader, SourceStamp, place_key
from tests.conftest import read_lines

# Real sentences from the Kystverket capture: a two-sentence type 5 with tag blocks.
PART1 = (
    b"\\g:1-2-9999,c:1565218798*53\\!BSVDM,2,1,3,A,53nPnh800000ha@J2218UH60U@4hT6000000000t2PD33t?P008000000000,0*72"
)
PART2 = b"\\g:2-2-9999,c:1565218798*53\\!BSVDM,2,2,3,A,00000000000,2*3E"
SINGLE = b"\\c:1565218798*53\\!BSVDM,1,1,,A,13mb9U0P00PRk8fT5nw>4?wj2006,0*5D"
# AMSA: a plain sentence, and a multi-sentence group on channel B.
AMSA_SINGLE = b"!AIVDM,1,1,,A,17P@<J?P00blFWmjG@5a5?v62<10,0*27"
B_PART1 = b"!AIVDM,2,1,5,B,53nPnh800000ha@J2218UH60U@4hT6000000000t2PD33t?P008000000000,0*7D"
B_PART2 = b"!AIVDM,2,2,5,B,00000000000,2*26"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def feed_all(reader: Reader, lines: list[bytes]) -> list[LineBatch]:
    batches = [b for line in lines if (b := reader.feed(line)) is not None]
    last = reader.close()
    return batches + ([last] if last else [])


def accounted(reader: Reader) -> int:
    c = reader.counts
    return c[acc.LINES_FORWARDED] + acc.rejected_total(c) + reader.pending_lines


def test_single_sentences_pass_through_with_their_tag_blocks() -> None:
    reader = Reader("test")
    batches = feed_all(reader, [SINGLE + b"\r\n", AMSA_SINGLE + b"\n"])
    assert [b.messages for b in batches] == [[SINGLE, AMSA_SINGLE]]
    assert batches[0].line_count == 2
    assert reader.counts[acc.LINES_READ] == 2 == accounted(reader)


def test_fragments_are_joined_in_order_into_one_message() -> None:
    reader = Reader("test")
    batches = feed_all(reader, [PART1, PART2])
    assert batches[0].messages == [PART1 + b"\n" + PART2]
    assert batches[0].line_count == 2


def test_a_group_split_by_a_batch_cut_is_emitted_whole_in_the_next_batch() -> None:
    reader = Reader("test", max_lines=2)
    batches = feed_all(reader, [SINGLE, PART1, AMSA_SINGLE, PART2, SINGLE])
    # PART1 waits while the first batch (SINGLE, AMSA_SINGLE) is cut without it.
    assert batches[0].messages == [SINGLE, AMSA_SINGLE]
    assert batches[1].messages == [PART1 + b"\n" + PART2]
    assert batches[2].messages == [SINGLE]
    assert sum(b.line_count for b in batches) == 5
    assert reader.pending_lines == 0


def test_batches_cut_within_one_millisecond_get_distinct_read_times() -> None:
    """A message without a time of its own is stamped with its batch's read time: the same
    payload in two batches must stay two reports, however fast the batches are cut."""
    clock = Clock()
    reader = Reader("test", max_lines=1, clock=clock)
    batches = feed_all(reader, [AMSA_SINGLE, AMSA_SINGLE, AMSA_SINGLE])
    assert [b.read_ms for b in batches] == [int(clock.now * 1000) + i for i in range(3)]


def test_groups_on_interleaved_channels_are_told_apart() -> None:
    reader = Reader("test")
    batches = feed_all(reader, [PART1, B_PART1, PART2, B_PART2])
    assert batches[0].messages == [PART1 + b"\n" + PART2, B_PART1 + b"\n" + B_PART2]
    assert acc.rejected_total(reader.counts) == 0


def test_a_second_fragment_without_its_first_is_an_orphan() -> None:
    reader = Reader("test")
    batches = feed_all(reader, [PART2, SINGLE])
    assert batches[0].messages == [SINGLE]
    assert reader.counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 1
    assert reader.rejected_examples[acc.REASON_ORPHAN_FRAGMENT] == PART2
    assert accounted(reader) == 2


def test_a_group_restarted_before_it_completed_orphans_the_old_fragments() -> None:
    reader = Reader("test")
    batches = feed_all(reader, [PART1, PART1, PART2])
    assert batches[0].messages == [PART1 + b"\n" + PART2]
    assert reader.counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 1
    assert accounted(reader) == 3


def test_fragments_still_waiting_are_counted_then_orphaned_at_the_end() -> None:
    reader = Reader("test")
    assert reader.feed(PART1) is None
    assert reader.pending_lines == 1
    assert reader.counts[acc.LINES_READ] == 1 == accounted(reader)
    assert reader.close() is None
    assert reader.pending_lines == 0
    assert reader.counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 1


def test_a_group_waiting_too_many_lines_is_orphaned() -> None:
    reader = Reader("test", fragment_timeout_lines=3)
    lines = [PART1, SINGLE, SINGLE, SINGLE, SINGLE, B_PART1, PART2]
    feed_all(reader, lines)
    # PART1 expired when B_PART1 started a group 5 lines later; PART2 then has no group.
    assert reader.counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 3
    assert accounted(reader) == len(lines)


def test_a_group_waiting_too_long_is_orphaned_on_tick() -> None:
    clock = Clock()
    reader = Reader("test", fragment_timeout_s=60, clock=clock)
    reader.feed(PART1)
    clock.now += 61
    reader.tick()
    assert reader.pending_lines == 0
    assert reader.counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 1


def test_every_reader_rejection_reason_is_counted() -> None:
    reader = Reader("test")
    lines = [
        b"",  # empty
        b"   \r",  # blank
        b"$GPGGA,114702.51,3304.27,S,15143.92,E,1,09,0.9,30.0,M,0.0,M,,*6E",  # not AIS
        b"$BSALR,,006,V,V,general failure*62",  # not AIS
        b"!AIALR,1,2,3*00",  # an AIS talker, not a VDM/VDO sentence
        b"!BSVDM,1,1,,A",  # truncated
        b"garbage line",
        b"\\c:1565218798*53 no end of tag block",
        b"!AIVDM,X,1,,A,payload,0*00",  # a fragment count that is not a number
        b"garbage \x00\xff line",  # bytes outside printable ASCII
        AMSA_SINGLE[:20] + b"\t" + AMSA_SINGLE[20:],  # a tab inside: only at the ends is it blank
        AMSA_SINGLE + b"0" * MAX_LINE_BYTES,
    ]
    batches = feed_all(reader, lines)
    assert batches == []
    c = reader.counts
    assert c[acc.rejected(acc.REASON_EMPTY)] == 2
    assert c[acc.rejected(acc.REASON_NOT_AIS)] == 3
    assert c[acc.rejected(acc.REASON_MALFORMED)] == 4
    assert c[acc.rejected(acc.REASON_NOT_PRINTABLE)] == 2
    assert c[acc.rejected(acc.REASON_TOO_LONG)] == 1
    assert accounted(reader) == len(lines)


def test_batches_are_cut_by_size() -> None:
    reader = Reader("test", max_lines=3)
    batches = feed_all(reader, [AMSA_SINGLE] * 7)
    assert [b.line_count for b in batches] == [3, 3, 1]
    assert [b.seq for b in batches] == [0, 1, 2]


def test_batches_are_cut_by_time_on_a_live_feed() -> None:
    clock = Clock()
    reader = Reader("feed", max_lines=1000, flush_interval_s=0.5, clock=clock)
    reader.feed(AMSA_SINGLE)
    assert reader.tick() is None
    clock.now += 0.6
    batch = reader.tick()
    assert batch is not None and batch.messages == [AMSA_SINGLE]
    assert batch.read_ms == int(clock.now * 1000)
    assert reader.tick() is None  # nothing new to cut


@pytest.mark.parametrize(
    ("bad_part2", "reason"),
    [
        (PART2[:-8] + b"\x00" + PART2[-8:], acc.REASON_NOT_PRINTABLE),  # a NUL in the payload's end
        (PART2[:-8] + b"0" * MAX_LINE_BYTES + PART2[-8:], acc.REASON_TOO_LONG),
    ],
)
def test_a_corrupt_fragment_orphans_its_waiting_group_at_once(bad_part2: bytes, reason: str) -> None:
    reader = Reader("test")
    batches = feed_all(reader, [PART1, bad_part2, B_PART1, B_PART2])
    assert [b.messages for b in batches] == [[B_PART1 + b"\n" + B_PART2]]
    c = reader.counts
    assert c[acc.rejected(reason)] == 1
    assert c[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 1
    assert reader.rejected_examples[acc.REASON_ORPHAN_FRAGMENT] == PART1
    assert accounted(reader) == 4


def test_a_bad_byte_in_the_group_fields_still_orphans_the_group_when_the_next_fragment_comes() -> None:
    # A NUL in the channel field hides which group the line belonged to; the group is
    # orphaned as soon as a later fragment shows that one in between was lost.
    part1 = b"!AIVDM,3,1,7,A,55NBRl01s2<m<HhsR20ThU>0000000000000000,0*00"
    part2 = b"!AIVDM,3,2,7,\x00A,0000000000000000000000000000000000000000,0*00"
    part3 = b"!AIVDM,3,3,7,A,0000000000,2*00"
    reader = Reader("test")
    for line in (part1, part2, part3):
        assert reader.feed(line) is None
    assert reader.pending_lines == 0  # nothing waits for a fragment that was thrown away
    c = reader.counts
    assert c[acc.rejected(acc.REASON_NOT_PRINTABLE)] == 1
    assert c[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 2
    assert accounted(reader) == 3


def test_a_duplicated_fragment_does_not_orphan_its_group() -> None:
    part1 = b"!AIVDM,3,1,7,A,55NBRl01s2<m<HhsR20ThU>0000000000000000,0*00"
    part2 = b"!AIVDM,3,2,7,A,0000000000000000000000000000000000000000,0*00"
    part3 = b"!AIVDM,3,3,7,A,0000000000,2*00"
    reader = Reader("test")
    batches = feed_all(reader, [part1, part2, part2, part3])
    assert [b.messages for b in batches] == [[b"\n".join([part1, part2, part3])]]
    assert reader.counts[acc.rejected(acc.REASON_ORPHAN_FRAGMENT)] == 1  # the repeated line only
    assert accounted(reader) == 4


def test_a_100_kb_line_is_rejected_by_its_length_and_the_batch_around_it_is_unchanged(amsa_path: Path) -> None:
    lines = read_lines(amsa_path)[:3000]
    huge = b"!AIVDM,1,1,,A," + b"0" * 100_000 + b",0*26"
    clean = feed_all(Reader("amsa", max_lines=700), lines)
    reader = Reader("amsa", max_lines=700)
    with_huge = feed_all(reader, [*lines[:1500], huge, *lines[1500:]])
    assert [b.messages for b in with_huge] == [b.messages for b in clean]
    assert reader.counts[acc.rejected(acc.REASON_TOO_LONG)] == 1
    assert len(reader.rejected_examples[acc.REASON_TOO_LONG]) == 200  # an example, not the line
    assert accounted(reader) == len(lines) + 1


def test_a_nul_in_a_tag_block_field_is_rejected_before_any_store_sees_it() -> None:
    # Issue 10: a NUL in the station field reached PostgreSQL, which refuses NUL in text.
    tag = b"s:2573\x00535,c:1565218798"
    line = b"\\" + tag + b"*%02X\\" % reduce(xor, tag, 0) + SINGLE.split(b"\\")[-1]
    reader = Reader("test")
    assert [b.messages for b in feed_all(reader, [line, SINGLE])] == [[SINGLE]]
    assert reader.counts[acc.rejected(acc.REASON_NOT_PRINTABLE)] == 1
    assert reader.rejected_examples[acc.REASON_NOT_PRINTABLE] == line


def test_each_message_carries_the_line_it_starts_on() -> None:
    reader = Reader("test")
    batches = feed_all(reader, [b"garbage", SINGLE, PART1, AMSA_SINGLE, PART2, b"", SINGLE])
    assert batches[0].messages == [SINGLE, AMSA_SINGLE, PART1 + b"\n" + PART2, SINGLE]
    assert batches[0].line_nos == [2, 4, 3, 7]


def test_a_files_time_less_messages_are_placed_by_its_stamp_and_line() -> None:
    stamp = SourceStamp(time_ms=1_700_000_000_123, key=42)
    reader = Reader("a.nmea", max_lines=2, stamp=stamp)
    batches = feed_all(reader, [AMSA_SINGLE, B_PART1, B_PART2, AMSA_SINGLE])
    places = [b.place(i) for b in batches for i in range(len(b.messages))]
    # The same on every read of the file whatever the read time; in file order.
    assert places == [(stamp.time_ms, 42 * PLACE_SPAN + n) for n in (1, 2, 4)]
    assert all(b.stamp == stamp for b in batches)


def test_a_live_feeds_time_less_messages_are_placed_by_read_time_and_line() -> None:
    clock = Clock()
    reader = Reader("tcp://127.0.0.1:1", max_lines=2, clock=clock)
    first = feed_all(reader, [AMSA_SINGLE, AMSA_SINGLE])[0]
    time_ms, digest = first.place(1)
    assert time_ms == first.read_ms == 1_000_000_000
    assert digest == place_key(b"tcp://127.0.0.1:1") * PLACE_SPAN + 2 < 10**13
