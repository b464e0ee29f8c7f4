"""Flags every job shares, turned into Settings; and how a job reports a bad setting."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import yaml

from breakwater.config import Settings, load_settings
from breakwater.errors import BreakwaterError

EXIT_OK, EXIT_NOT_BALANCED, EXIT_CONFIG = 0, 1, 2


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("settings (also BREAKWATER_<SETTING> variables and --config)")
    g.add_argument("--config", help="YAML or TOML file of settings")
    g.add_argument("--database-url", help="sqlite:///path (default ./breakwater.sqlite3) or postgresql://...")
    g.add_argument("--redis-url", help="redis://host:port/db for the live picture (default: none)")
    g.add_argument("--redis-prefix", help="key prefix of this deployment in Redis, e.g. prod:")
    g.add_argument("--writers", type=int, help="persistence actors (MMSI shards), default 2")
    g.add_argument("--batch-lines", type=int, help="lines per decode batch, default 5000")
    g.add_argument("--max-batches-in-flight", type=int, help="bound on batches in flight, default 4")
    g.add_argument("--dlq-path", help="dead-letter journal (default ~/.local/state/breakwater/dead-letters.sqlite3)")
    g.add_argument("--metrics-port", type=int, help="Prometheus endpoint port, default 9464 (0: any free port)")
    g.add_argument("--metrics-host", help="address the endpoint binds to, default 127.0.0.1")
    g.add_argument("--namespace", help="Ray namespace of Breakwater's actors, default breakwater")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting, nested with dots: --set breaker.reset_timeout_s=10",
    )
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")


def _nested(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BreakwaterError(f"--set {pair}: expected KEY=VALUE")
        target = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = yaml.safe_load(value) if value else None
    return out


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = _nested(args.set)
    simple = (
        "database_url",
        "redis_url",
        "redis_prefix",
        "writers",
        "batch_lines",
        "max_batches_in_flight",
        "namespace",
        "metrics_port",
        "metrics_host",
    )
    for name in simple:
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if args.dlq_path:
        overrides.setdefault("dlq", {})["path"] = args.dlq_path
    return load_settings(overrides, args.config)


def fail(error: BaseException) -> int:
    """One line on stderr, naming what to fix; the exit code for a configuration error."""
    print(f"breakwater: {error}", file=sys.stderr)
    return EXIT_CONFIG


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("ray", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
