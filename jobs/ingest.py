"""The ingest job: `python -m jobs.ingest SOURCE...` (or `breakwater ingest`, or `ray job submit`).

Reads every source, decodes on the cluster, writes through the breakers, and prints the
conservation summary; exits 0 only when every line and every report is accounted for.

    python -m jobs.ingest data/kystverket-2019-tagblock.nmea
    python -m jobs.ingest --database-url postgresql://postgres@127.0.0.1/ais \\
        --redis-url redis://127.0.0.1:6379/0 feed.nmea.gz tcp://receiver:4001
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

from jobs.common import EXIT_NOT_BALANCED, EXIT_OK, add_settings_flags, fail, settings_from_args, setup_logging

log = logging.getLogger("breakwater.ingest")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.ingest", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources", nargs="+", help="files (plain or gzip), - for stdin, tcp://host:port and udp://host:port feeds"
    )
    parser.add_argument("--summary-json", type=Path, help="also write the summary as JSON to this file")
    parser.add_argument("--job-id", help="name of this job in the dead-letter queue (default: time + random)")
    parser.add_argument("--no-scheduler", action="store_true", help="do not start the retry scheduler")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray cluster (default: all)")
    add_settings_flags(parser)
    return parser.parse_args(argv)


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class _Progress:
    """A rich progress line on a terminal: lines read, messages, batches in flight."""

    def __init__(self) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True)
        self.task = self.progress.add_task("starting")

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, counts: Counter[str], in_flight: int) -> None:
        self.progress.update(
            self.task,
            description=(
                f"decoded {counts.get('lines_decoded', 0):,} lines, "
                f"{counts.get('messages_decoded', 0):,} messages; {in_flight} batches in flight"
            ),
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from breakwater.admin import publish_admin_token
    from breakwater.errors import BreakwaterError
    from breakwater.sources import open_source
    from breakwater.stores import check_stores

    try:
        settings = settings_from_args(args)
        setup_logging(settings.log_level)
        sources = [open_source(spec, silence_s=settings.feed_silence_s) for spec in args.sources]
        check_stores(settings)
        publish_admin_token(settings)
    except BreakwaterError as e:
        return fail(e)
    return run(settings, sources, args)


def run(settings: Any, sources: list[Any], args: argparse.Namespace) -> int:
    from actors.handles import RayCluster, Services
    from actors.session import init_ray
    from breakwater.errors import BreakwaterError, ClusterTimeout
    from breakwater.pipeline import Ingest, ReaderOptions
    from breakwater.runtime import named_address

    job_id = args.job_id or new_job_id()
    try:
        address = named_address(args.address, settings.ray_address)
        init_ray(address, num_cpus=args.num_cpus, timeout_s=settings.ray_timeout_s, dashboard=settings.ray_dashboard)
        services = Services.start(settings, scheduler=settings.scheduler and not args.no_scheduler)
    except BreakwaterError as e:
        return fail(e)
    endpoint = services.metrics.endpoint()
    if "port" in endpoint:
        log.info("metrics: http://%s:%s/metrics/prometheus", endpoint["host"], endpoint["port"])
    cluster = RayCluster(services, job_id)
    cluster.warm_up()
    ingest = Ingest(
        cluster,
        job_id=job_id,
        max_in_flight=settings.max_batches_in_flight,
        reader=ReaderOptions(
            settings.batch_lines,
            settings.flush_interval_ms / 1000,
            settings.fragment_timeout_lines,
            settings.fragment_timeout_s,
        ),
        metrics_interval_s=settings.metrics_push_interval_s,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d: finishing the batches in flight, then stopping", signum)
        ingest.stop.set()

    if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        if sys.stdout.isatty() and not args.no_progress:
            with _Progress() as progress:
                ingest.on_progress = progress.update
                summary = ingest.run(sources)
        else:
            summary = ingest.run(sources)
    except ClusterTimeout as e:  # an actor stopped answering for good: what was not acknowledged is not counted
        print(f"breakwater: the job stopped, {e}", file=sys.stderr)
        return EXIT_NOT_BALANCED
    cluster.close()
    print(summary.render())
    if args.summary_json:
        args.summary_json.write_text(json.dumps(summary.as_dict(), indent=2))
    return EXIT_OK if summary.ok else EXIT_NOT_BALANCED


if __name__ == "__main__":
    sys.exit(main())
