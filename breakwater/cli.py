"""The `breakwater` command: ingest, query, operate, watch.

    breakwater ingest data/kystverket-2019-tagblock.nmea
    breakwater latest 257123000
    breakwater track 257123000 --start 2019-08-07T22:00:00Z --limit 100
    breakwater nearby 59.9 10.7 --radius-km 5
    breakwater dlq stats
    breakwater status --url http://127.0.0.1:9464

Store options (--database-url, --redis-url, ...) come before the command, or from the same
BREAKWATER_* variables and config file as the jobs. Add --json for machine-readable output.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, TypeAdapter
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperOption

from breakwater.admin import AdminGuard, who_am_i
from breakwater.client import Client
from breakwater.config import Settings, load_settings
from breakwater.errors import BreakwaterError, ConfigError
from breakwater.runtime import load_runtime
from breakwater.stores.engine import store_version
from breakwater.stores.schema import LATEST_VERSION

if TYPE_CHECKING:
    from sqlalchemy import Engine

# No command is a usage error ("Missing command.", exit 2, on stderr), not the help: typer's
# no_args_is_help prints the help to stdout.
app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
dlq_app = typer.Typer(help="The dead-letter queue: inspect, retry, clear, redrive.")
app.add_typer(dlq_app, name="dlq")
schema_app = typer.Typer(help="The SQL store's schema version; downgrade it to roll a release back.")
app.add_typer(schema_app, name="schema")
console = Console()
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@dataclass
class Options:
    overrides: dict[str, Any]
    config: str | None
    address: str | None
    admin_token: str | None
    as_json: bool
    _client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(load_settings(self.overrides, self.config), ray_address=self.address)
        return self._client


def _options(ctx: typer.Context) -> Options:
    return ctx.ensure_object(Options)  # type: ignore[no-any-return]


@app.callback()
def _main(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option(help="sqlite:///path or postgresql://...")] = None,
    redis_url: Annotated[str | None, typer.Option(help="redis://host:port/db")] = None,
    redis_prefix: Annotated[str | None, typer.Option(help="key prefix of the deployment")] = None,
    dlq_path: Annotated[str | None, typer.Option(help="dead-letter journal file")] = None,
    config: Annotated[str | None, typer.Option(help="YAML or TOML settings file")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address for operations")] = None,
    namespace: Annotated[str | None, typer.Option(help="Ray namespace of Breakwater's actors")] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(help="the admin token to present; the deployment's BREAKWATER_ADMIN_TOKEN decides"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "namespace": namespace,
    }
    if dlq_path:
        overrides["dlq"] = {"path": dlq_path}
    ctx.obj = Options(overrides, config, address, admin_token, as_json)


# -- arguments ---------------------------------------------------------------------------------

_NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class NumberArguments(TyperCommand):
    """A command whose arguments may be negative numbers: in `nearby -33.86 151.2` the first
    is a latitude, where click would read an option `-3`. Options (with the value of those
    that take one) go first, then "--", then the arguments in the order they were given, so
    a mistyped option is still reported as one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's private click Context
        valued = {
            name
            for param in self.get_params(ctx)
            if isinstance(param, TyperOption) and not (param.is_flag or param.count)
            for name in (*param.opts, *param.secondary_opts)
        }
        options: list[str] = []
        arguments: list[str] = []
        tokens = iter(args)
        for token in tokens:
            if token == "--":
                arguments.extend(tokens)
            elif token.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(token):
                options.append(token)
                if token in valued:  # `--limit 5`; `--limit=5` is one token
                    options.extend(itertools.islice(tokens, 1))
            else:
                arguments.append(token)
        return super().parse_args(ctx, [*options, "--", *arguments])


def parse_mmsi(text: str) -> int:
    """An MMSI as typed: nine digits, of which leading zeros (base stations are 00MIDxxxx)
    may be left out."""
    if not re.fullmatch(r"\d{1,9}", text) or int(text) == 0:
        raise typer.BadParameter(f"MMSI must be a 9-digit number, 000000001 to 999999999, not {text!r}")
    return int(text)


Mmsi = Annotated[int, typer.Argument(parser=parse_mmsi, metavar="MMSI", help="the vessel's 9-digit MMSI")]

# -- output ------------------------------------------------------------------------------------

# The columns of each table, most important first: a table keeps those that fit the terminal
# (--json has every field). Cells of WRAPPING columns wrap; every other cell shows whole.
VESSEL_COLUMNS = (
    *("mmsi", "lat", "lon", "distance_km", "name", "received_at", "sog_kn", "cog_deg"),
    *("heading_deg", "nav_status", "callsign", "ship_type", "msg_type", "source"),
)
TRACK_COLUMNS = (
    *("received_at", "lat", "lon", "sog_kn", "cog_deg", "msg_type", "heading_deg", "nav_status", "receivers"),
)
DEAD_LETTER_COLUMNS = (
    *("id", "sink", "kind", "attempts", "next_retry_at", "dead_at", "last_error", "dead_reason"),
    *("key", "first_failed_at", "read_at", "source"),
)
BREAKER_COLUMNS = ("sink", "state", "epoch", "forced", "retry_at", "trips")
WRAPPING = frozenset({"name", "source", "last_error", "dead_reason", "key", "receivers"})
WRAP_MIN_WIDTH = 12
_TIME = TypeAdapter(datetime)


def _iso(epoch_s: float) -> str:
    """The form pydantic gives the models' times: ISO 8601, UTC, with "Z"."""
    return str(_TIME.dump_python(datetime.fromtimestamp(epoch_s, UTC), mode="json"))


def _readable(data: Any) -> Any:
    """`data` with epoch times made ISO 8601: the journal's `..._at` (and a history entry's
    `at`) in seconds, a batch's `read_ms` in milliseconds (shown as `read_at`)."""
    if isinstance(data, list):
        return [_readable(item) for item in data]
    if not isinstance(data, dict):
        return data
    shown: dict[str, Any] = {}
    for key, value in data.items():
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and (key == "at" or key.endswith("_at")):
            shown[key] = _iso(value)
        elif is_number and key == "read_ms":
            shown["read_at"] = _iso(value / 1000)
        else:
            shown[key] = _readable(value)
    return shown


def _print(opts: Options, value: Any, title: str = "", columns: Sequence[str] = ()) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, list):
        data = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    else:
        data = value
    data = _readable(data)
    if opts.as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    if data is None:
        console.print("[yellow]not found[/yellow]")
    elif isinstance(data, list) and data and isinstance(data[0], dict):
        console.print(table_of(data, columns or tuple(data[0]), title, console.width))
    elif isinstance(data, list):
        console.print(f"[dim]{title}: none[/dim]" if title else "none")
    else:
        console.print_json(json.dumps(data, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def table_of(rows: list[dict[str, Any]], columns: Sequence[str], title: str, width: int) -> Table:
    """The rows as a table no wider than `width`: the first of `columns` always, then each
    one that still fits (a WRAPPING column needs WRAP_MIN_WIDTH), none that is empty."""
    cells = {c: [_cell(row.get(c)) for row in rows] for c in columns}
    kept: list[str] = []
    used = 1  # the left border; each column adds its cells, two spaces of padding and a border
    for c in columns:
        if not any(cells[c]):
            continue
        need = max(cell_len(c), *(cell_len(text) for text in cells[c]))
        if c in WRAPPING:
            need = min(need, WRAP_MIN_WIDTH)
        if not kept or used + need + 3 <= width:
            kept.append(c)
            used += need + 3
    table = Table(title=title or None)
    for c in kept:
        table.add_column(c, no_wrap=c not in WRAPPING, overflow="fold")
    for i in range(len(rows)):
        table.add_row(*(Text(cells[c][i]) for c in kept))
    return table


# -- jobs --------------------------------------------------------------------------------------


@app.command(context_settings=PASS_THROUGH)
def ingest(ctx: typer.Context) -> None:
    """Run the ingest job (same arguments as python -m jobs.ingest; try `breakwater ingest -h`)."""
    raise typer.Exit(load_runtime().run_job("ingest", ctx.args or ["--help"]))


@app.command(context_settings=PASS_THROUGH)
def retry(ctx: typer.Context) -> None:
    """Run the dead-letter retry job (same arguments as python -m jobs.retry_dlq)."""
    raise typer.Exit(load_runtime().run_job("retry", ctx.args))


# -- queries -----------------------------------------------------------------------------------


@app.command(cls=NumberArguments)
def latest(ctx: typer.Context, mmsi: Mmsi) -> None:
    """A vessel's latest state."""
    opts = _options(ctx)
    _print(opts, opts.client().latest(mmsi))


@app.command(cls=NumberArguments)
def track(
    ctx: typer.Context,
    mmsi: Mmsi,
    start: Annotated[datetime | None, typer.Option(help="from this time (UTC), e.g. 2019-08-07T22:00:00")] = None,
    end: Annotated[datetime | None, typer.Option(help="until this time (UTC)")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many points")] = None,
) -> None:
    """A vessel's positions between two times, oldest first."""
    opts = _options(ctx)
    _print(opts, opts.client().track(mmsi, _utc(start), _utc(end), limit), f"track of {mmsi}", TRACK_COLUMNS)


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@app.command(cls=NumberArguments)
def vessel(ctx: typer.Context, mmsi: Mmsi) -> None:
    """A vessel's static and voyage data."""
    opts = _options(ctx)
    _print(opts, opts.client().vessel(mmsi))


@app.command()
def counts(ctx: typer.Context) -> None:
    """How much the store holds."""
    opts = _options(ctx)
    _print(opts, opts.client().counts())


@app.command(cls=NumberArguments)
def nearby(
    ctx: typer.Context,
    lat: float,
    lon: float,
    radius_km: Annotated[float, typer.Option(help="search radius, km")] = 10.0,
    limit: int = 100,
) -> None:
    """Vessels within a radius of a point, nearest first."""
    opts = _options(ctx)
    _print(opts, opts.client().nearby(lat, lon, radius_km, limit), "nearby vessels", VESSEL_COLUMNS)


@app.command(cls=NumberArguments)
def box(ctx: typer.Context, south: float, west: float, north: float, east: float, limit: int = 1000) -> None:
    """Vessels inside a box of latitudes and longitudes."""
    opts = _options(ctx)
    _print(opts, opts.client().in_box(south, west, north, east, limit), "vessels in the box", VESSEL_COLUMNS)


# -- vessels -----------------------------------------------------------------------------------


@app.command("delete-vessel")
def delete_vessel(ctx: typer.Context, mmsi: int) -> None:
    """Hide a vessel from every query (soft delete; needs the admin token)."""
    opts = _options(ctx)
    _print(opts, {"mmsi": mmsi, "deleted": opts.client().delete_vessel(mmsi, admin_token=opts.admin_token)})


@app.command("restore-vessel")
def restore_vessel(ctx: typer.Context, mmsi: int) -> None:
    """Undo a soft delete (needs the admin token)."""
    opts = _options(ctx)
    _print(opts, {"mmsi": mmsi, "restored": opts.client().restore_vessel(mmsi, admin_token=opts.admin_token)})


@app.command("purge-deleted")
def purge_deleted(
    ctx: typer.Context, yes: Annotated[bool, typer.Option("--yes", help="really delete")] = False
) -> None:
    """Delete every row of the soft-deleted vessels for good (needs --yes and the admin token)."""
    opts = _options(ctx)
    _print(opts, opts.client().purge_deleted(confirm=yes, admin_token=opts.admin_token))


# -- backup and restore ------------------------------------------------------------------------


@app.command("backup")
def backup_command(ctx: typer.Context, path: Annotated[Path, typer.Argument(help="a new directory")]) -> None:
    """Back up the SQL store and the dead-letter journal, consistently, while jobs run."""
    from breakwater.backup import backup, describe

    opts = _options(ctx)
    manifest = backup(load_settings(opts.overrides, opts.config), path)
    _report(opts, manifest, describe(manifest, f"backed up to {path}:"))


@app.command("restore")
def restore_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="a directory written by `breakwater backup`")],
    yes: Annotated[bool, typer.Option("--yes", help="really restore")] = False,
) -> None:
    """Restore a backup into empty stores (needs --yes; the stores' admin token cannot apply:
    empty stores have none)."""
    from breakwater.backup import describe, restore

    opts = _options(ctx)
    if not yes:
        raise ValueError("restoring writes into the stores: pass --yes")
    result = restore(load_settings(opts.overrides, opts.config), path)
    _report(opts, result, describe(result, f"restored {path} into"))


def _report(opts: Options, result: dict[str, Any], lines: list[str]) -> None:
    if opts.as_json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))


# -- schema ------------------------------------------------------------------------------------


@schema_app.callback(invoke_without_command=True)
def schema_versions(ctx: typer.Context) -> None:
    """Print the store's schema version and this release's."""
    if ctx.invoked_subcommand is not None:
        return
    opts = _options(ctx)
    settings = load_settings(opts.overrides, opts.config)
    with _sql_engine(settings) as engine:
        store = store_version(engine, settings.database_url)
    if store == LATEST_VERSION:
        meaning = "the same"
    elif store < LATEST_VERSION:
        meaning = "older: an ingest job of this release upgrades it when it starts"
    else:
        meaning = "newer than this release: use the release that upgraded it"
    lines = [f"store schema version {store}", f"this release's schema version {LATEST_VERSION} ({meaning})"]
    _report(opts, {"store": store, "release": LATEST_VERSION}, lines)


@schema_app.command("downgrade")
def schema_downgrade(
    ctx: typer.Context,
    version: Annotated[
        int, typer.Argument(metavar="N", min=1, max=LATEST_VERSION, help="the schema version to go back to")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="really downgrade")] = False,
    force: Annotated[bool, typer.Option("--force", help="even if soft-deleted vessels would be shown again")] = False,
) -> None:
    """Take the store's schema down to version N (needs --yes and the admin token).

    For rolling back to a release that knows version N: stop the jobs first. Every history row
    is kept; soft-deleted vessels are refused unless --force."""
    from sqlalchemy.exc import SQLAlchemyError

    from breakwater.stores.engine import driver_reason
    from breakwater.stores.schema import SchemaError, downgrade

    opts = _options(ctx)
    if not yes:
        raise ValueError("downgrading changes the store's schema: stop the jobs, back it up, then pass --yes")
    settings = load_settings(opts.overrides, opts.config)
    with _sql_engine(settings) as engine:
        store = store_version(engine, settings.database_url)
        if store == version:
            unchanged = f"the store is at schema version {store} already: nothing changed"
            _report(opts, {"before": store, "after": store, "notes": []}, [unchanged])
            return
        _schema_guard(settings, engine, store).check(opts.admin_token, f"schema downgrade to {version}", who_am_i())
        try:
            done = downgrade(engine, version, force=force)
        except SQLAlchemyError as e:  # a lock not granted in time, a lost connection: rolled back
            cause = driver_reason(settings.database_url, e)
            raise SchemaError(f"the downgrade failed and changed nothing: {cause}") from e
    lines = [f"schema downgraded from version {done.before} to {done.after}", *done.notes]
    _report(opts, {"before": done.before, "after": done.after, "notes": list(done.notes)}, lines)


@contextmanager
def _sql_engine(settings: Settings) -> Iterator[Engine]:
    """The SQL store the settings name; never a new one (a missing SQLite file is an error)."""
    from breakwater.stores.engine import make_engine

    engine = make_engine(settings.database_url, timeout_s=settings.store_timeout_s, create=False)
    try:
        yield engine
    finally:
        engine.dispose()


def _schema_guard(settings: Settings, engine: Engine, version: int) -> AdminGuard:
    """The store decides who may change it: the digest in `breakwater_settings` (version 3 on),
    or, in a store from before that table, the digest the same ingest job saved in the
    dead-letter journal. The caller's own settings never decide."""
    from breakwater.admin import journal_guard
    from breakwater.journal import Snapshots
    from breakwater.stores.deployment import load_admin_digest

    if version >= 3:  # the version that added breakwater_settings
        return AdminGuard(load_admin_digest(engine))
    if not settings.dlq.path.is_file():  # looking never creates a journal
        return AdminGuard(None)
    snapshots = Snapshots(settings.dlq.path)
    try:
        return journal_guard(snapshots)
    finally:
        snapshots.close()


# -- dead-letter queue and breakers -------------------------------------------------------------


@dlq_app.command("stats")
def dlq_stats(ctx: typer.Context) -> None:
    """Sizes, oldest record, counts by sink and by error."""
    opts = _options(ctx)
    _print(opts, opts.client().dlq_stats())


@dlq_app.command("peek")
def dlq_peek(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("-n", help="how many")] = 10,
    sink: str | None = None,
    dead: Annotated[bool, typer.Option(help="the dead-letter store instead of the queue")] = False,
) -> None:
    """Show records without removing them."""
    opts = _options(ctx)
    letters = opts.client().dlq_peek(n, sink=sink, dead=dead)
    if not opts.as_json:  # the table has no room for the history: its last entry says enough
        letters = [{**x, "last_error": _last_error(x.get("history") or [])} for x in letters]
    _print(opts, letters, "dead letters", DEAD_LETTER_COLUMNS)


def _last_error(history: list[dict[str, Any]]) -> str | None:
    return f"{history[-1].get('error')}: {history[-1].get('message')}" if history else None


@dlq_app.command("retry")
def dlq_retry(ctx: typer.Context, sink: str | None = None) -> None:
    """Retry every waiting record now, through the breakers."""
    opts = _options(ctx)
    _print(opts, opts.client().dlq_retry_now(sink=sink))


@dlq_app.command("clear")
def dlq_clear(ctx: typer.Context, sink: str | None = None, yes: Annotated[bool, typer.Option("--yes")] = False) -> None:
    """Delete waiting records (needs --yes and the admin token)."""
    opts = _options(ctx)
    _print(opts, {"cleared": opts.client().dlq_clear(confirm=yes, admin_token=opts.admin_token, sink=sink)})


@dlq_app.command("clear-dead")
def dlq_clear_dead(
    ctx: typer.Context, sink: str | None = None, yes: Annotated[bool, typer.Option("--yes")] = False
) -> None:
    """Delete dead records (needs --yes and the admin token)."""
    opts = _options(ctx)
    _print(opts, {"cleared": opts.client().dlq_clear_dead(confirm=yes, admin_token=opts.admin_token, sink=sink)})


@dlq_app.command("redrive")
def dlq_redrive(ctx: typer.Context, sink: str | None = None) -> None:
    """Move dead records back into the queue, due now (needs the admin token)."""
    opts = _options(ctx)
    _print(opts, {"redriven": opts.client().dlq_redrive(admin_token=opts.admin_token, sink=sink)})


@app.command()
def breakers(ctx: typer.Context) -> None:
    """Every sink's breaker: state, epoch, trips."""
    opts = _options(ctx)
    _print(opts, opts.client().breakers(), "breakers", BREAKER_COLUMNS)


@app.command()
def breaker(
    ctx: typer.Context, sink: str, state: Annotated[str, typer.Argument(help="open, closed or release")]
) -> None:
    """Force a sink's breaker open or closed, or release it (needs the admin token)."""
    opts = _options(ctx)
    if state not in ("open", "closed", "release"):
        raise ConfigError("state", f"{state!r}: use open, closed or release")
    _print(opts, opts.client().force_breaker(sink, state, admin_token=opts.admin_token))


@app.command()
def status(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="the metrics endpoint")] = "http://127.0.0.1:9464",
    token: Annotated[str | None, typer.Option(envvar="BREAKWATER_METRICS_TOKEN", help="bearer token")] = None,
    once: Annotated[bool, typer.Option(help="print once and exit")] = False,
    interval_s: Annotated[float, typer.Option(help="refresh interval")] = 2.0,
) -> None:
    """A live view of throughput, breakers and the dead-letter queue, from the metrics endpoint."""
    from breakwater.status import watch

    opts = _options(ctx)
    raise typer.Exit(watch(url, token, once=once, interval_s=interval_s, as_json=opts.as_json))


@app.command()
def sources(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(help="the metrics endpoint")] = "http://127.0.0.1:9464",
    token: Annotated[str | None, typer.Option(envvar="BREAKWATER_METRICS_TOKEN", help="bearer token")] = None,
) -> None:
    """Every live feed of the running job (up or down, last line, lines, messages, rejections,
    fused copies and its duplicate ratio, reconnects, silences, kernel drops) and every
    receiver the writers check (trusted or demoted, checks failed by check, demotions)."""
    from breakwater.status import RECEIVER_COLUMNS, SOURCE_COLUMNS, fetch, receiver_rows, source_rows

    opts = _options(ctx)
    summary = fetch(url, token)
    feeds, receivers = source_rows(summary), receiver_rows(summary)
    if opts.as_json:
        _print(opts, {"feeds": feeds, "receivers": receivers})
        return
    _print(opts, feeds, "live sources", SOURCE_COLUMNS)
    _print(opts, receivers, "receivers", RECEIVER_COLUMNS)


@app.command("rebuild-redis")
def rebuild_redis_command(ctx: typer.Context) -> None:
    """Rebuild every vessel's Redis state and GEO index from the SQL store (after a Redis
    loss or flush); newer wins, so it is safe while an ingest runs and safe to repeat."""
    from breakwater.rebuild import rebuild_redis

    opts = _options(ctx)
    counts = rebuild_redis(load_settings(opts.overrides, opts.config))
    _print(opts, counts.as_dict())


@app.command()
def settings(ctx: typer.Context) -> None:
    """The effective settings, passwords masked."""
    opts = _options(ctx)
    print(json.dumps(load_settings(opts.overrides, opts.config).describe(), indent=2))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a usage error or a bad setting, 1 for other
    errors)."""
    try:
        result = app(args=argv, prog_name="breakwater", standalone_mode=False)
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        print("breakwater: aborted", file=sys.stderr)
        return 1
    except typer.TyperException as e:
        # Usage errors (exit code 2): since 0.29 typer raises its own copy of click's
        # exceptions, whose `show` prints the usage line, a hint and the reason.
        show = getattr(e, "show", None)
        if callable(show):
            show()
        else:
            print(f"breakwater: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except ConfigError as e:
        print(f"breakwater: {e}", file=sys.stderr)
        return 2
    except (BreakwaterError, ValueError) as e:
        print(f"breakwater: {e}", file=sys.stderr)
        return 1
    return int(result or 0)
