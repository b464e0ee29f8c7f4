"""Counting every line and every report, and checking that the numbers add up.

docs/ARCHITECTURE.md invariant 1, in the names used here:

    lines_read      = lines_decoded + sum(rejected.<reason>) + lines_pending
    lines_forwarded = lines_decoded + rejected lines that the decode tasks found
    reports.<kind>  = what decoding produced (a type 19 message gives a position and a static)
    for every sink:
    sink.<s>.received = written + duplicates + dlq_waiting + dead_lettered + retried_written
                        + retried_duplicates

Counts travel as `collections.Counter[str]` with the keys below: they merge with `+=`,
pickle small, and turn into JSON as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LINES_READ = "lines_read"
LINES_FORWARDED = "lines_forwarded"  # handed to decode tasks inside complete messages
LINES_DECODED = "lines_decoded"  # lines of messages that decoded into reports
LINES_PENDING = "lines_pending"  # fragments still waiting for their group
MESSAGES_DECODED = "messages_decoded"
# Reports that were another receiver's copy of a stored report (breakwater.fusion): each is a
# reception record for the sinks that keep them, a duplicate for the others.
FUSED_COPIES = "fused_copies"
# Receivers demoted and restored by the writers (breakwater.plausibility), each writer for itself.
DEMOTIONS = "receivers.demoted"
RESTORATIONS = "receivers.restored"

REASON_EMPTY = "empty"
REASON_MALFORMED = "malformed"  # truncated, garbage, structurally not NMEA
REASON_NOT_PRINTABLE = "not_printable"  # a byte outside printable ASCII: NUL, >= 0x80, invalid UTF-8
REASON_TOO_LONG = "too_long"  # longer than framing.MAX_LINE_BYTES: garbage, never scanned further
REASON_NOT_AIS = "not_ais"  # a valid-looking NMEA sentence that is not VDM/VDO ($GPGGA ...)
REASON_BAD_CHECKSUM = "bad_checksum"
REASON_BAD_TAG_BLOCK = "bad_tag_block"  # tag block with a wrong or missing checksum
REASON_ORPHAN_FRAGMENT = "orphan_fragment"  # a fragment whose group never completed
REASON_BAD_PAYLOAD = "bad_payload"  # payload outside the 6-bit alphabet, or an impossible fill-bit count
REASON_UNDECODABLE = "undecodable"  # checksum fine, but the AIS payload does not decode
REASON_INVALID_MMSI = "invalid_mmsi"
# Lines that were used, with something an operator may want to know about.
WARN_TAG_BLOCK_CHECKSUM = "warnings.tag_block_checksum"  # used anyway unless strict_tag_blocks

REJECT_REASONS = (
    REASON_EMPTY,
    REASON_MALFORMED,
    REASON_NOT_PRINTABLE,
    REASON_TOO_LONG,
    REASON_NOT_AIS,
    REASON_BAD_CHECKSUM,
    REASON_BAD_TAG_BLOCK,
    REASON_ORPHAN_FRAGMENT,
    REASON_BAD_PAYLOAD,
    REASON_UNDECODABLE,
    REASON_INVALID_MMSI,
)

# What happened to a report at one sink.
OUTCOME_WRITTEN = "written"  # the store changed
OUTCOME_DUPLICATE = "duplicates"  # no change: the same or a newer report was there already
OUTCOME_DLQ = "dlq"  # handed to the dead-letter queue (store failed, or breaker open)
SINK_OUTCOMES = (OUTCOME_WRITTEN, OUTCOME_DUPLICATE, OUTCOME_DLQ)


def rejected(reason: str) -> str:
    return f"rejected.{reason}"


def flagged(reason: str) -> str:
    """Reports kept in history with a flag (`reports.FLAGS`): counted, never rejected."""
    return f"flagged.{reason}"


def reports(kind: str) -> str:
    return f"reports.{kind}"


def sink(name: str, outcome: str) -> str:
    return f"sink.{name}.{outcome}"


def rejected_total(counts: Mapping[str, int]) -> int:
    return sum(counts.get(rejected(r), 0) for r in REJECT_REASONS)


@dataclass(frozen=True)
class DeadLetterTally:
    """What became of one job's records in the dead-letter queue, per sink, at summary time."""

    waiting: int = 0
    dead: int = 0
    retried_written: int = 0
    retried_duplicates: int = 0

    @property
    def total(self) -> int:
        return self.waiting + self.dead + self.retried_written + self.retried_duplicates


def sink_received(counts: Mapping[str, int], name: str) -> int:
    return counts.get(sink(name, "received"), 0)


def conservation_errors(
    counts: Mapping[str, int],
    sinks: Iterable[str],
    dead_letters: Mapping[str, DeadLetterTally] | None = None,
) -> list[str]:
    """Every equation of invariant 1 that does not hold, as a sentence; empty when all do."""
    errors: list[str] = []
    read = counts.get(LINES_READ, 0)
    accounted = counts.get(LINES_DECODED, 0) + rejected_total(counts) + counts.get(LINES_PENDING, 0)
    if read != accounted:
        errors.append(f"lines: read {read} != decoded + rejected + pending {accounted}")
    dead_letters = dead_letters or {}
    for name in sinks:
        received = sink_received(counts, name)
        dlq = counts.get(sink(name, OUTCOME_DLQ), 0)
        tally = dead_letters.get(name, DeadLetterTally())
        if dlq != tally.total:
            errors.append(f"sink {name}: {dlq} sent to the dead-letter queue but it accounts for {tally.total}")
        outcome = counts.get(sink(name, OUTCOME_WRITTEN), 0) + counts.get(sink(name, OUTCOME_DUPLICATE), 0)
        if received != outcome + dlq:
            errors.append(
                f"sink {name}: received {received} != written + duplicates + dead-letter queue {outcome + dlq}"
            )
    return errors


def merge(total: Counter[str], *parts: Mapping[str, int]) -> Counter[str]:
    for part in parts:
        total.update(part)
    return total
