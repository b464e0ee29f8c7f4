"""The job summary: the conservation numbers of ARCHITECTURE.md, as text and as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from breakwater import accounting as acc


@dataclass
class IngestSummary:
    job_id: str
    counts: Counter[str]
    sinks: list[str]
    dead_letters: dict[str, acc.DeadLetterTally]
    rejected_examples: dict[str, str]
    elapsed_s: float
    errors: list[str]

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
            "elapsed_s": round(self.elapsed_s, 3),
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
            "sinks": sinks,
            "rejected_examples": self.rejected_examples,
        }

    def render(self) -> str:
        """The summary as an operator reads it at the end of a job."""
        d = self.as_dict()
        lines = d["lines"]
        verdict = "ok: every line and every report is accounted for" if self.ok else "NOT BALANCED"
        out = [
            f"Breakwater ingest {self.job_id}: {verdict}",
            f"  lines read        {lines['read']:>10,} = decoded {lines['decoded']:,} + rejected "
            f"{lines['rejected']:,} + fragments waiting {lines['pending']:,}",
        ]
        if d["rejected"]:
            out.append("    rejected: " + ", ".join(f"{k} {v:,}" for k, v in d["rejected"].items()))
        if d["warnings"]:
            out.append("    warnings: " + ", ".join(f"{k} {v:,}" for k, v in d["warnings"].items()))
        reports = ", ".join(f"{k} {v:,}" for k, v in d["reports"].items())
        out.append(f"  messages decoded  {d['messages_decoded']:>10,}   reports: {reports or 'none'}")
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
        out.append(f"  elapsed {self.elapsed_s:.2f} s ({rate:,.0f} lines/s)")
        out.extend(f"  ERROR {e}" for e in self.errors)
        return "\n".join(out)
