"""The job summary: the conservation numbers of docs/ARCHITECTURE.md, and how every source ended,
as text and as JSON.

A job is ok only when every source was read to its end (or stopped on request), and the
numbers add up. Anything else is an error the summary names, and the job exits non-zero.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from breakwater import accounting as acc
from breakwater.reports import FLAGS

# How the reading of a source ended.
READ_TO_END = "end"
STOPPED = "stopped"  # stopped on request (SIGTERM, `ray job stop`): not an error
NOT_STARTED = "not started"  # the job was stopped before the source's turn came
FAILED = "failed"  # the source could not be read to its end: an error

# The printed summary shows one example line per rejection reason, cut to this many
# characters (the JSON keeps the whole example, as the reader or decoder recorded it).
EXAMPLE_LINE_CHARS = 100


@dataclass(frozen=True)
class SourceEnd:
    """How one source's reading ended. `lines_read` counts the lines it gave, every one of
    them accounted for in the summary, also when the source failed after them."""

    name: str
    lines_read: int
    ended: str
    error: str | None = None  # with FAILED: the cause, naming the source

    @property
    def problem(self) -> str | None:
        """The summary's error about this source, or None when there is nothing wrong."""
        if self.ended == FAILED:
            return f"source {self.error} (after {self.lines_read:,} lines)"
        if self.ended == READ_TO_END and not self.lines_read:
            return f"source {self.name}: no lines in it"
        return None


def example_text(raw: bytes) -> str:
    """A rejected line as JSON keeps it: ASCII as it is, any other byte as \\xNN."""
    return raw.decode("ascii", "backslashreplace")


def printable(text: str) -> str:
    """Text a terminal shows as it is: control characters (a tab, an escape, the newline
    between the sentences of a message) as \\xNN."""
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in text)


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second, with a Z: what an operator reads and pastes."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class IngestSummary:
    job_id: str
    counts: Counter[str]
    sinks: list[str]
    dead_letters: dict[str, acc.DeadLetterTally]
    rejected_examples: dict[str, str]
    elapsed_s: float
    sources: list[SourceEnd]
    started_at: datetime | None = None  # wall clock, UTC: when reading began and ended
    finished_at: datetime | None = None

    @property
    def conservation_errors(self) -> list[str]:
        return acc.conservation_errors(self.counts, self.sinks, self.dead_letters)

    @property
    def source_errors(self) -> list[str]:
        return [s.problem for s in self.sources if s.problem is not None]

    @property
    def errors(self) -> list[str]:
        """Everything that keeps the job from being ok: sources first, then the numbers."""
        return self.source_errors + self.conservation_errors

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        sinks = {}
        for name in self.sinks:
            tally = self.dead_letters.get(name, acc.DeadLetterTally())
            sinks[name] = {
                "received": self.counts.get(acc.sink(name, "received"), 0),
                "written": self.counts.get(acc.sink(name, acc.OUTCOME_WRITTEN), 0),
                "duplicates": self.counts.get(acc.sink(name, acc.OUTCOME_DUPLICATE), 0),
                "dead_letter_queue": self.counts.get(acc.sink(name, acc.OUTCOME_DLQ), 0),
                "dlq_waiting": tally.waiting,
                "dlq_dead": tally.dead,
                "retried_written": tally.retried_written,
                "retried_duplicates": tally.retried_duplicates,
            }
        c = self.counts
        return {
            "job_id": self.job_id,
            "ok": self.ok,
            "errors": self.errors,
            "started_at": iso_utc(self.started_at),
            "finished_at": iso_utc(self.finished_at),
            "elapsed_s": round(self.elapsed_s, 3),
            "sources": [asdict(s) for s in self.sources],
            "lines": {
                "read": c.get(acc.LINES_READ, 0),
                "decoded": c.get(acc.LINES_DECODED, 0),
                "rejected": acc.rejected_total(c),
                "pending": c.get(acc.LINES_PENDING, 0),
            },
            "rejected": {r: c.get(acc.rejected(r), 0) for r in acc.REJECT_REASONS if c.get(acc.rejected(r))},
            "warnings": {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("warnings.")},
            "messages_decoded": c.get(acc.MESSAGES_DECODED, 0),
            "reports": {k.split(".", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("reports.")},
            "fused_copies": c.get(acc.FUSED_COPIES, 0),
            "flagged": {f: c.get(acc.flagged(f), 0) for f in FLAGS if c.get(acc.flagged(f))},
            "receivers": {"demoted": c.get(acc.DEMOTIONS, 0), "restored": c.get(acc.RESTORATIONS, 0)},
            "sinks": sinks,
            "rejected_examples": self.rejected_examples,
        }

    def _verdict(self) -> str:
        if self.conservation_errors:
            return "NOT BALANCED"
        if self.source_errors:
            return "INCOMPLETE: every line read is accounted for, but input is missing or could not be read"
        return "ok: every line and every report is accounted for"

    def _examples(self, reasons: list[str]) -> list[str]:
        out = []
        for reason in reasons:
            if reason not in self.rejected_examples:
                continue
            head = f"      {reason + ':':<17}"
            example = printable(self.rejected_examples[reason]) or "(a blank line)"
            room = EXAMPLE_LINE_CHARS - len(head)
            if len(example) > room:
                example = example[: room - 3] + "..."
            out.append(head + example)
        return out

    def _stops(self) -> str | None:
        stopped = [f"{s.name} after {s.lines_read:,} lines" for s in self.sources if s.ended == STOPPED]
        stopped += [f"{s.name} not started" for s in self.sources if s.ended == NOT_STARTED]
        return "  stopped on request: " + ", ".join(stopped) if stopped else None

    def render(self) -> str:
        """The summary as an operator reads it at the end of a job."""
        d = self.as_dict()
        lines = d["lines"]
        out = [
            f"Breakwater ingest {self.job_id}: {self._verdict()}",
            f"  lines read        {lines['read']:>10,} = decoded {lines['decoded']:,} + rejected "
            f"{lines['rejected']:,} + fragments waiting {lines['pending']:,}",
        ]
        if d["rejected"]:
            out.append("    rejected: " + ", ".join(f"{k} {v:,}" for k, v in d["rejected"].items()))
            out.extend(self._examples(list(d["rejected"])))
        if d["warnings"]:
            out.append("    warnings: " + ", ".join(f"{k} {v:,}" for k, v in d["warnings"].items()))
        reports = ", ".join(f"{k} {v:,}" for k, v in d["reports"].items())
        out.append(f"  messages decoded  {d['messages_decoded']:>10,}   reports: {reports or 'none'}")
        if d["fused_copies"]:
            out.append(
                f"  fused copies      {d['fused_copies']:>10,}   other receivers' copies of stored reports, "
                "kept as their receptions"
            )
        if d["flagged"]:
            out.append(
                f"  flagged           {sum(d['flagged'].values()):>10,}   kept in history, moving no latest state: "
                + ", ".join(f"{k} {v:,}" for k, v in d["flagged"].items())
            )
        if any(d["receivers"].values()):
            out.append(
                f"  receivers         demoted {d['receivers']['demoted']:,}, restored {d['receivers']['restored']:,}"
                " (by the writers; breakwater sources shows each)"
            )
        for name, s in d["sinks"].items():
            out.append(
                f"  sink {name:<6}       {s['received']:>10,} = written {s['written']:,} + duplicates "
                f"{s['duplicates']:,} + dead-letter queue {s['dead_letter_queue']:,}"
            )
            if s["dead_letter_queue"]:
                out.append(
                    f"    dead-letter queue: waiting {s['dlq_waiting']:,}, dead {s['dlq_dead']:,}, "
                    f"retried and written {s['retried_written']:,}, already there {s['retried_duplicates']:,}"
                )
        rate = lines["read"] / self.elapsed_s if self.elapsed_s else 0.0
        span = f", {d['started_at']} to {d['finished_at']}" if self.started_at and self.finished_at else ""
        out.append(f"  elapsed {self.elapsed_s:.2f} s ({rate:,.0f} lines/s){span}")
        stops = self._stops()
        if stops:
            out.append(stops)
        out.extend(f"  ERROR {e}" for e in self.errors)
        return "\n".join(out)
