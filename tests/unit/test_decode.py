"""Decoding real sentences into normalized reports, and every decode-time rejection."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pyais.encode import encode_dict

from breakwater import accounting as acc
from breakwater.decode import BatchDecoder, DecodedBatch, epoch_ms, parse_tag_block
from breakwater.framing import LineBatch, Reader
from breakwater.models import OtherMessage, PositionReport, StaticReport
from breakwater.reports import FLAG, FLAG_CLOCK_AHEAD, RECEIVED_MS, TIME_SOURCE, newest_per_vessel, shard_of
from breakwater.sources import FileSource
from breakwater.write_model import positioned
from tests.unit.test_framing import feed_all

READ_MS = 1_800_000_000_000
CLASS_A = b"\\c:1565218798*53\\!BSVDM,1,1,,A,33mkDd1000QbddT`LhTnCiKh0Dfr,0*68"
CLASS_B = b"\\c:1565218798*53\\!BSVDM,1,1,,A,B3m9b300CP5qek8W0iJ:Owu5kP06,0*11"
PART_A = b"\\c:1565218798*53\\!BSVDM,1,1,,B,H3m<kW0lu8LDq=@`E8pD0000000,2*24"
PART_B = b"!=IVDM,1,1,,A,H7P9kl4j1=3PPPP=8lpikP108230,0*69"
STATIC_5 = b"!ABVDM,1,1,0,2,57PBtv01sb5IH`PR221LE986222222222222220l28?554000:kQEhhDm31H20DPSmD`880,2*40"
BASE_STATION = b"!ASVDO,1,1,4,A,4@4k0W1uhMcfsbf=MQkvWTW00000,0*0D"
TRAILER = b"!AIVDM,1,1,,A,17P@<J?P00blFWmjG@5a5?v62<10,0*27,1327664821"
MULTI = (
    b"\\g:1-2-9999,c:1565218798*53\\!BSVDM,2,1,3,A,53nPnh800000ha@J2218UH60U@4hT6000000000t2PD33t?P008000000000,0*72\n"
    b"\\g:2-2-9999,c:1565218798*53\\!BSVDM,2,2,3,A,00000000000,2*3E"
)
T_1565218798 = datetime(2019, 8, 7, 22, 59, 58, tzinfo=UTC)


def decode(*messages: bytes, strict: bool = False, shards: int = 1) -> DecodedBatch:
    batch = LineBatch("test.nmea", 0, READ_MS, list(messages), sum(m.count(b"\n") + 1 for m in messages))
    batch.line_nos = list(range(1, len(messages) + 1))
    return BatchDecoder(shards, strict_tag_blocks=strict).decode(batch)


def only_report(decoded: DecodedBatch) -> PositionReport | StaticReport | OtherMessage:
    shard = decoded.shards[0]
    assert len(shard) == 1, shard
    if shard.positions:
        return PositionReport.from_row(shard.positions[0], shard.source)
    if shard.statics:
        return StaticReport.from_row(shard.statics[0], shard.source)
    return OtherMessage.from_row(shard.others[0], shard.source)


def test_class_a_position_with_tag_block_time() -> None:
    report = only_report(decode(CLASS_A))
    assert report == PositionReport(
        mmsi=257742000,
        received_at=T_1565218798,
        digest=report.digest,
        msg_type=3,
        lat=70.690378,
        lon=23.308617,
        sog_kn=0.0,
        cog_deg=161.5,
        heading_deg=45,
        nav_status=1,
        rot_deg_min=0.0,
        station=None,
        time_source="tag_block",
        source="test.nmea",
    )


def test_class_b_position_heading_not_available() -> None:
    report = only_report(decode(CLASS_B))
    assert report == PositionReport(
        mmsi=257059340,
        received_at=T_1565218798,
        digest=report.digest,
        msg_type=18,
        lat=60.18521,
        lon=5.157077,
        sog_kn=7.8,
        cog_deg=221.5,
        heading_deg=None,
        nav_status=None,
        rot_deg_min=None,
        time_source="tag_block",
        source="test.nmea",
    )


def test_static_and_voyage_data() -> None:
    report = only_report(decode(STATIC_5))
    assert report == StaticReport(
        mmsi=503627000,
        received_at=datetime.fromtimestamp(READ_MS / 1000, UTC),
        digest=report.digest,
        msg_type=5,
        imo=8104022,
        callsign="VJHH",
        name="WERRA",
        ship_type=52,
        to_bow_m=17,
        to_stern_m=15,
        to_port_m=5,
        to_starboard_m=5,
        eta=None,
        draught_m=4.3,
        destination="NEWCASTLE HARBOUR",
        time_source="ingest",
        source="test.nmea",
    )


def test_class_b_static_parts_a_and_b() -> None:
    a = only_report(decode(PART_A))
    b = only_report(decode(PART_B))
    assert isinstance(a, StaticReport) and isinstance(b, StaticReport)
    assert (a.mmsi, a.name, a.callsign, a.ship_type) == (257110940, "MORGENSTJERNE", None, None)
    assert (b.mmsi, b.name, b.callsign, b.ship_type) == (503477200, None, "MH4813", 50)
    assert (b.to_bow_m, b.to_stern_m, b.to_port_m, b.to_starboard_m) == (8, 8, 2, 3)


def test_multi_sentence_message_decodes_once_for_both_lines() -> None:
    decoded = decode(MULTI)
    report = only_report(decoded)
    assert isinstance(report, StaticReport)
    assert report.msg_type == 5 and report.received_at == T_1565218798
    assert decoded.counts[acc.LINES_DECODED] == 2
    assert decoded.counts[acc.MESSAGES_DECODED] == 1


def test_trailing_epoch_is_the_receive_time() -> None:
    report = only_report(decode(TRAILER))
    assert report.received_at == datetime(2012, 1, 27, 11, 47, 1, tzinfo=UTC) == datetime.fromtimestamp(1327664821, UTC)
    assert report.time_source == "trailer"
    assert report.mmsi == 503581800


def test_without_any_time_the_read_time_is_used() -> None:
    report = only_report(decode(TRAILER.rsplit(b",", 1)[0]))
    assert report.time_source == "ingest"
    assert report.received_at == datetime.fromtimestamp(READ_MS / 1000, UTC)


def test_station_comes_from_the_tag_block() -> None:
    tag = b"s:2573535,c:1565218798"
    checksum = f"{_xor(tag):02X}".encode()
    report = only_report(decode(b"\\" + tag + b"*" + checksum + b"\\" + CLASS_A.split(b"\\")[-1]))
    assert report.station == "2573535"


def _xor(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def test_types_not_normalized_yet_are_kept_whole() -> None:
    report = only_report(decode(BASE_STATION))
    assert isinstance(report, OtherMessage)
    assert (report.mmsi, report.msg_type, report.nmea) == (5030044, 4, BASE_STATION.decode())


def test_type_19_gives_a_position_and_static_data() -> None:
    sentence = encode_dict(
        {
            "type": 19,
            "mmsi": 257123450,
            "speed": 12.3,
            "lon": 10.5,
            "lat": 59.9,
            "course": 90.0,
            "heading": 91,
            "shipname": "BREAKWATER TEST",
            "ship_type": 37,
            "to_bow": 10,
            "to_stern": 5,
            "to_port": 2,
            "to_starboard": 3,
        },
    )
    decoded = decode(b"\n".join(s.encode() for s in sentence))
    shard = decoded.shards[0]
    position = PositionReport.from_row(shard.positions[0])
    static = StaticReport.from_row(shard.statics[0])
    assert (position.lat, position.lon, position.sog_kn, position.cog_deg, position.heading_deg) == (
        59.9,
        10.5,
        12.3,
        90.0,
        91,
    )
    assert (static.name, static.ship_type, static.to_bow_m, static.to_starboard_m) == ("BREAKWATER TEST", 37, 10, 3)
    assert decoded.counts[acc.MESSAGES_DECODED] == 1
    assert decoded.counts[acc.reports("position")] == decoded.counts[acc.reports("static")] == 1


def test_long_range_type_27_not_available_values() -> None:
    sentence = encode_dict(
        {"type": 27, "mmsi": 257123450, "lon": 181, "lat": 91, "speed": 63, "course": 511, "status": 15}
    )
    report = only_report(decode(sentence[0].encode()))
    assert isinstance(report, PositionReport)
    assert (report.lat, report.lon, report.sog_kn, report.cog_deg, report.nav_status) == (None, None, None, None, None)


def test_reports_are_sharded_by_mmsi() -> None:
    decoded = decode(CLASS_A, CLASS_B, STATIC_5, shards=3)
    for i, shard in enumerate(decoded.shards):
        for row in [*shard.positions, *shard.statics, *shard.others]:
            assert shard_of(row[0], 3) == i
    assert sum(len(s) for s in decoded.shards) == 3


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (CLASS_A[:-2] + b"00", acc.REASON_BAD_CHECKSUM),
        (b"!=IVDM,1,1,,B,H7P9kl4j1=cm58FL6il<w`G00`3F,0*1D", acc.REASON_BAD_CHECKSUM),
        (b"\\c:1565218798\\" + CLASS_A.split(b"\\")[-1], acc.REASON_BAD_TAG_BLOCK),  # no checksum at all
        (b"!AIVDM,1,1,,A,17P@<J?P00blFWmjG@5a5?v62<10", acc.REASON_MALFORMED),  # no checksum field
        (b"!AIVDM,1,1,,A,,0*26", acc.REASON_UNDECODABLE),  # empty payload
        (encode_dict({"type": 1, "mmsi": 123456789, "lat": 10, "lon": 10})[0].encode(), acc.REASON_INVALID_MMSI),
        (encode_dict({"type": 1, "mmsi": 0, "lat": 10, "lon": 10})[0].encode(), acc.REASON_INVALID_MMSI),
    ],
)
def test_decode_rejections_are_counted_with_their_reason(line: bytes, reason: str) -> None:
    decoded = decode(line, CLASS_A)
    assert decoded.counts[acc.rejected(reason)] == 1
    assert decoded.counts[acc.MESSAGES_DECODED] == 1  # the job goes on with the next message
    assert reason in decoded.rejected_examples


def test_a_bad_fragment_rejects_every_line_of_its_message() -> None:
    bad = MULTI.replace(b"0*72", b"0*00")
    decoded = decode(bad)
    assert decoded.counts == Counter({acc.rejected(acc.REASON_BAD_CHECKSUM): 2})


def test_tag_block_checksum_mismatch_is_a_warning_unless_strict() -> None:
    lenient = decode(MULTI)
    assert lenient.counts[acc.WARN_TAG_BLOCK_CHECKSUM] == 2  # Kystverket adds g: after the checksum
    assert lenient.counts[acc.MESSAGES_DECODED] == 1
    strict = decode(MULTI, strict=True)
    assert strict.counts[acc.rejected(acc.REASON_BAD_TAG_BLOCK)] == 2


def test_tag_block_parsing() -> None:
    body = b"s:2573535,c:1565218798"
    info = parse_tag_block(body + b"*%02X" % _xor(body))
    assert (info.parsed, info.checksum_ok, info.received_ms, info.station) == (True, True, 1565218798000, "2573535")
    assert parse_tag_block(body + b"*00").checksum_ok is False
    assert parse_tag_block(body).parsed is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1565218798", 1565218798000),  # seconds
        (b"1565218798123", 1565218798123),  # milliseconds
        (b"1565218798.5", 1565218798500),
        (b"12", None),  # not a plausible time
        (b"x", None),
    ],
)
def test_epoch_ms(text: bytes, expected: int | None) -> None:
    assert epoch_ms(text) == expected


def test_shards_are_balanced_on_a_real_capture(amsa_path) -> None:  # type: ignore[no-untyped-def]
    """MMSIs end in 0 far more often than chance: sharding by MMSI modulo 2 put 85% of the
    AMSA capture's reports on one writer. The hash keeps each writer within 40-60%."""
    from breakwater.framing import Reader
    from tests.conftest import read_lines

    reader = Reader("amsa", max_lines=50_000)
    for line in read_lines(amsa_path):
        reader.feed(line)
    batch = reader.close()
    assert batch is not None
    sizes = [len(s) for s in BatchDecoder(2).decode(batch).shards]
    assert all(0.4 < n / sum(sizes) < 0.6 for n in sizes), sizes


def sentence(body: bytes) -> bytes:
    """`!<body>*hh` with its checksum computed: the corruption in it is one no checksum sees."""
    return b"!" + body + b"*%02X" % _xor(body)


AMSA_BODY = b"AIVDM,1,1,,A,17P@<J?P00blFWmjG@5a5?v62<10,0"  # TRAILER's sentence


@pytest.mark.parametrize("char", [b"X", b"^", b"_", b"x", b"~", b"!", b" ", b"\\"])
def test_a_payload_character_outside_the_6_bit_alphabet_is_rejected(char: bytes) -> None:
    # pyais turns any byte into six bits: "X" decoded as if it were "P", "x" as "h", ...
    line = sentence(AMSA_BODY.replace(b"blF", b"b" + char + b"F"))
    decoded = decode(line, CLASS_A)
    assert decoded.counts[acc.rejected(acc.REASON_BAD_PAYLOAD)] == 1
    assert decoded.counts[acc.MESSAGES_DECODED] == 1
    assert decoded.rejected_examples[acc.REASON_BAD_PAYLOAD] == line


@pytest.mark.parametrize(
    "line",
    [
        sentence(AMSA_BODY[:-1] + b"X"),  # pyais reads a fill field it cannot parse as 0
        sentence(AMSA_BODY[:-1] + b"05"),
        sentence(AMSA_BODY[:-1]),  # no fill field at all
        sentence(b"AIVDM,1,1,,A,,2"),  # fill bits without a payload to pad
    ],
)
def test_fill_bits_that_cannot_be_are_rejected(line: bytes) -> None:
    decoded = decode(line)
    assert decoded.counts == Counter({acc.rejected(acc.REASON_BAD_PAYLOAD): 1})


def test_fill_bits_before_the_last_fragment_reject_the_whole_message() -> None:
    first, second = MULTI.split(b"\n")
    tag, _, body = first[1:].partition(b"\\!")
    first = b"\\" + tag + b"\\" + sentence(body.rpartition(b"*")[0][:-1] + b"2")
    assert decode(first + b"\n" + second).counts == Counter({acc.rejected(acc.REASON_BAD_PAYLOAD): 2})


def test_pad_bits_that_are_not_zero_are_kept_as_real_transmitters_send_them() -> None:
    # Types 20 and 21 from the AMSA capture, with non-zero pad bits (107 such lines there).
    type_20 = b"!BSVDO,1,1,,A,D04k0kP<QNfp000000000000001,2*1B"
    type_21 = b"!AIVDM,1,1,,B,E>lsouHpqP000000000000000004cRn9tKBU`10888QJ`gwwh1,4*10"
    decoded = decode(type_20, type_21)
    assert decoded.counts[acc.MESSAGES_DECODED] == 2
    assert [row[3] for row in decoded.shards[0].others] == [20, 21]


# The ingest clock of the receive-time tests: 2026-11-29T16:00:00Z, injected into the reader,
# which stamps it on the batch (`read_ms`) that the decoder holds receive times against.
NOW_S = 1_795_968_000
CLASS_A_SENTENCE = CLASS_A.split(b"\\")[-1]


def tagged(c: int, nmea: bytes = CLASS_A_SENTENCE) -> bytes:
    tag = b"c:%d" % c
    return b"\\" + tag + b"*%02X" % _xor(tag) + b"\\" + nmea


def read_and_decode(lines: list[bytes], **decoder: Any) -> DecodedBatch:
    reader = Reader("feed", clock=lambda: float(NOW_S))
    for line in lines:
        assert reader.feed(line) is None
    batch = reader.close()
    assert batch is not None and batch.read_ms == NOW_S * 1000
    return BatchDecoder(1, **decoder).decode(batch)


def test_one_bad_clock_does_not_pin_a_vessel() -> None:
    """Issue 10: a tag block with `c:2334337317` (2043) became the vessel's latest state, and
    every later genuine report was ignored as older. It is kept now, flagged, and moves nothing."""
    decoded = read_and_decode([tagged(NOW_S - 120), tagged(2_334_337_317), tagged(NOW_S - 60)])
    assert decoded.counts[acc.flagged(FLAG_CLOCK_AHEAD)] == 1
    assert acc.rejected_total(decoded.counts) == 0
    positions = decoded.shards[0].positions
    assert [(row[RECEIVED_MS], row[FLAG]) for row in positions] == [
        ((NOW_S - 120) * 1000, None),
        (2_334_337_317_000, FLAG_CLOCK_AHEAD),
        ((NOW_S - 60) * 1000, None),
    ]
    (latest,) = newest_per_vessel(positioned(positions))
    assert (latest[0], latest[1]) == (257742000, (NOW_S - 60) * 1000)


@pytest.mark.parametrize(
    "line",
    [
        tagged(2_334_337_317_000),  # the same time in milliseconds
        tagged(NOW_S + 301),
        TRAILER.rsplit(b",", 1)[0] + b",%d" % (NOW_S + 3600),  # an AMSA-style trailer
    ],
)
def test_a_receive_time_ahead_of_the_ingest_clock_is_flagged(line: bytes) -> None:
    decoded = read_and_decode([line, tagged(NOW_S - 1)])
    assert decoded.counts[acc.flagged(FLAG_CLOCK_AHEAD)] == 1
    assert decoded.counts[acc.MESSAGES_DECODED] == 2
    assert [row[FLAG] for row in decoded.shards[0].positions] == [FLAG_CLOCK_AHEAD, None]


def test_the_allowed_clock_skew_is_a_setting() -> None:
    at_limit, beyond = tagged(NOW_S + 300), tagged(NOW_S + 301)
    default = read_and_decode([at_limit, beyond])
    assert [row[FLAG] for row in default.shards[0].positions] == [None, FLAG_CLOCK_AHEAD]
    wider = read_and_decode([at_limit, beyond], max_clock_skew_s=3600.0)
    assert [row[FLAG] for row in wider.shards[0].positions] == [None, None]
    assert wider.counts[acc.flagged(FLAG_CLOCK_AHEAD)] == 0
    with pytest.raises(ValueError, match="max_clock_skew_s must be above 0 seconds, got 0"):
        BatchDecoder(1, max_clock_skew_s=0)


def test_a_clock_ahead_on_a_first_fragment_flags_the_whole_message() -> None:
    first, second = MULTI.split(b"\n")
    tag = b"g:1-2-9999,c:%d" % (NOW_S + 3600)
    ahead = first.replace(b"g:1-2-9999,c:1565218798*53", tag + b"*%02X" % _xor(tag))
    decoded = read_and_decode([ahead, second])
    assert decoded.counts[acc.LINES_DECODED] == 2
    assert decoded.counts[acc.flagged(FLAG_CLOCK_AHEAD)] == 1
    assert [row[FLAG] for row in decoded.shards[0].statics] == [FLAG_CLOCK_AHEAD]


def test_a_file_without_receive_times_keeps_file_order_and_the_same_identities_on_every_read(tmp_path: Path) -> None:
    """Two reports of one vessel without receive times: the later line is the newer report,
    whatever their payloads' CRCs, and a second read of the file gives the same rows."""
    first = encode_dict({"type": 1, "mmsi": 257000001, "lat": 60.0, "lon": 5.0}, talker_id="AI")[0]
    second = encode_dict({"type": 1, "mmsi": 257000001, "lat": 60.5, "lon": 5.5}, talker_id="AI")[0]
    for lines in ([first, second], [second, first]):
        path = tmp_path / "capture.nmea"
        path.write_text("\n".join(lines) + "\n")
        reads = []
        for read_at in (1_800_000_000.0, 1_800_000_999.0):
            reader = Reader(str(path), stamp=FileSource(path).stamp, clock=lambda t=read_at: t)
            decoded = BatchDecoder(1).decode(feed_all(reader, [line.encode() for line in lines])[0])
            reads.append(decoded.shards[0].positions)
        assert reads[0] == reads[1]
        rows = reads[0]
        assert [r[RECEIVED_MS] for r in rows] == [path.stat().st_mtime_ns // 1_000_000] * 2
        assert {r[TIME_SOURCE] for r in rows} == {"file"}
        newest = newest_per_vessel(rows)[0]
        assert newest == rows[1], "the later line is the newer report"
