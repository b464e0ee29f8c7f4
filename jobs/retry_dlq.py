"""The dead-letter retry job: `python -m jobs.retry_dlq` (for cron or `ray job submit`).

    python -m jobs.retry_dlq                 one drain of what is due, then exit
    python -m jobs.retry_dlq --force         drain everything now, whatever its schedule
    python -m jobs.retry_dlq --every 300     keep a detached scheduler draining every 300 s

With a cluster named (--address, RAY_ADDRESS or the `ray_address` setting) the drain goes
through that cluster's actors, so its breakers and queue are shared; a named cluster that does
not answer is an error, never a reason to use another. With none named, it opens the journal
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
from typing import TYPE_CHECKING

from jobs.common import EXIT_OK, add_settings_flags, fail, settings_from_args, setup_logging

if TYPE_CHECKING:
    from breakwater.config import Settings

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
    from breakwater.runtime import load_runtime, named_address
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
    address = named_address(args.address, settings.ray_address)
    if args.local or address is None:
        ops = LocalOperations(settings)
    else:
        try:
            ops = load_runtime().cluster_operations(settings, address)
        except NotRunningError:
            log.info("no Breakwater actors on the cluster at %s: draining %s here", address, settings.dlq.path)
            ops = LocalOperations(settings)
        except BreakwaterError as e:
            return fail(e)
    try:
        report = ops.drain(force=args.force, sink=args.sink)
        stats = ops.dlq_stats()
    except BreakwaterError as e:
        return fail(e)
    finally:
        ops.close()
    print(json.dumps({"drained": report, "queue": {k: stats[k] for k in ("waiting", "dead", "by_sink")}}, indent=2))
    return EXIT_OK


def run_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    """Start the detached scheduler. On a cluster this process may leave; a local cluster
    ends with its driver, so here the process stays until it is stopped."""
    from actors.handles import Services
    from actors.session import init_ray
    from breakwater.errors import BreakwaterError
    from breakwater.runtime import named_address

    address = named_address(args.address, settings.ray_address)
    try:
        init_ray(address, timeout_s=settings.ray_timeout_s, dashboard=settings.ray_dashboard)
        Services.start(settings, scheduler=True)
    except BreakwaterError as e:
        return fail(e)
    joined = address is not None
    interval = settings.retry.interval_s
    if joined:
        print(f"retry scheduler runs detached on the cluster, every {interval:g} s")
        return EXIT_OK
    print(f"retry scheduler runs in a local cluster, every {interval:g} s; Ctrl-C stops it")
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
