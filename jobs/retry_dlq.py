"""The dead-letter retry job: `python -m jobs.retry_dlq` (for cron or `ray job submit`).

    python -m jobs.retry_dlq                 one drain of what is due, then exit
    python -m jobs.retry_dlq --force         drain everything now, whatever its schedule
    python -m jobs.retry_dlq --every 300     keep a detached scheduler draining every 300 s

With a Breakwater cluster running (RAY_ADDRESS, or a cluster on this machine) the drain goes
through its actors, so its breakers and queue are shared. With none, it opens the journal
file itself and drains with no Ray at all: a local run's cluster ends with its job, and its
dead letters must still reach the stores. It takes the same store settings as the ingest job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading

from jobs.common import EXIT_OK, add_settings_flags, fail, settings_from_args, setup_logging

log = logging.getLogger("breakwater.retry_dlq")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.retry_dlq", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="retry every waiting record now")
    parser.add_argument("--sink", help="only this sink's records (db or redis)")
    parser.add_argument("--every", type=float, metavar="SECONDS", help="run a detached scheduler with this interval")
    parser.add_argument(
        "--local", action="store_true", help="drain in this process from the journal, even if a cluster runs"
    )
    add_settings_flags(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from breakwater.errors import BreakwaterError, NotRunningError
    from breakwater.operations import LocalOperations, Operations
    from breakwater.stores import check_stores

    try:
        if args.every is not None:
            args.set.append(f"retry.interval_s={args.every}")
        settings = settings_from_args(args)
        setup_logging(settings.log_level)
        check_stores(settings)
    except BreakwaterError as e:
        return fail(e)
    if args.every is not None:
        return run_scheduler(settings, args)
    ops: Operations
    if args.local:
        ops = LocalOperations(settings)
    else:
        try:
            from actors.operations import ClusterOperations

            ops = ClusterOperations(settings, args.address)
        except NotRunningError:
            log.info("no Breakwater cluster is running: draining %s in this process", settings.dlq.path)
            ops = LocalOperations(settings)
    try:
        report = ops.drain(force=args.force, sink=args.sink)
        stats = ops.dlq_stats()
    finally:
        ops.close()
    print(json.dumps({"drained": report, "queue": {k: stats[k] for k in ("waiting", "dead", "by_sink")}}, indent=2))
    return EXIT_OK


def run_scheduler(settings: object, args: argparse.Namespace) -> int:
    """Start the detached scheduler. On a cluster this process may leave; a local cluster
    ends with its driver, so here the process stays until it is stopped."""
    import os

    from actors.handles import Services, init_ray

    joined = bool(args.address or os.environ.get("RAY_ADDRESS"))
    init_ray(args.address)
    Services.start(settings, scheduler=True)  # type: ignore[arg-type]
    interval = settings.retry.interval_s  # type: ignore[attr-defined]
    if joined:
        print(f"retry scheduler runs detached on the cluster, every {interval:g} s")
        return EXIT_OK
    print(f"retry scheduler runs in a local cluster, every {interval:g} s; Ctrl-C stops it")
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
