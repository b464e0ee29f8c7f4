"""The benchmark harness, `python -m jobs.bench` (the command and its scenarios: `__main__`).

One concern per module: `corpus` (large inputs replayed from the real captures), `scratch`
(throw-away databases and Redis prefixes), `sampling` (memory and metrics while a job runs),
`runners` (the contenders as processes), `scenarios`, `outage`, `fastpath`, `dlq_scale` and
`soak` (what is measured; the soak and stress scenarios serve live feeds with `feed_server`,
drive the job with `live_job` and hold the stores to a fault-free run with `reference`),
`machine` (what it ran on). `stages` is a command of its own (`python -m jobs.bench.stages`):
each pipeline stage's rate alone, for docs/SCALING.md. Only this package's root holds what they
all share: where the project is, and the progress line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project: the jobs run from here, with it on PYTHONPATH


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the final report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
