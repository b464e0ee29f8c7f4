"""Per-stage rates on one node: `python -m jobs.bench.stages --lines N [--json out.json]`.

Each stage of an ingest runs alone, in this process, over the same corpus (the real captures
replayed, `jobs.bench.corpus`), with the project's own code, so its rate is what one core
gives that stage and nothing else; docs/SCALING.md turns these rates into nodes.

    read        `sources.FileSource` line by line                     (lines)
    frame       the same, each line into `framing.Reader`             (lines in, messages out)
    decode      `decode.BatchDecoder.decode` per batch, a new decoder per batch as each decode
                task makes one: pyais, checks, normalization, the split into shards
    normalize   only the `normalize` row builders, on the very arguments `decode` gave them
                (recorded during one decode pass); decode minus this is pyais and the checks
    ray_task    a batch of lines to a Ray task and a count back: the driver's hand-off
    ray_actor   a shard of reports to a Ray actor and a count back: the hop to a writer
    redis       `RedisSink.prepare` + `write` per shard: latest state, GEO index
    postgres    `SqlSink.write` per shard: history, latest positions, vessels, one transaction
    sqlite      the same into a SQLite file (the embedded default)
    dlq         `DeadLetterQueue.enqueue` of every shard, as if its sink's breaker were open

Rates are per second of the stage's own work (`time.perf_counter`), the median of `--repeat`
passes, each store pass into a fresh scratch database, key prefix or file. Beside them, the CPU
seconds this process spent (`time.process_time`), which other programs on a shared machine
inflate far less than the wall time; a store's server and a Ray worker are not in them.
`msgs_per_s` is the corpus's decoded messages over the stage's time for the whole corpus,
so every stage is in the same unit and the slowest one is the limit. The stores run on the
same machine and take CPU of their own, which a store's wall-time rate includes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from breakwater import accounting as acc
from breakwater import decode as decode_module
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue, Failure
from breakwater.decode import BatchDecoder, DecodedBatch
from breakwater.framing import LineBatch, Reader
from breakwater.normalize import ROW_BUILDERS
from breakwater.reports import KIND_OTHER, KIND_POSITION, KIND_STATIC, ReportBatch
from breakwater.sources import FileSource
from breakwater.stores.base import SINK_DB, WriteResult
from breakwater.writer import restrict, rows_by_kind
from jobs.bench import log

WORLD_SENTENCES_PER_S = 19_000  # the world's AIS volume, terrestrial and satellite, roughly
IN_FLIGHT = 4  # the ingest job's default max_batches_in_flight


@dataclass
class StageResult:
    """One stage: what it handled in one pass of the corpus and how long each pass took.
    `counts` holds the stage's own counts (messages in and out, reports) for the cross-checks."""

    name: str
    unit: str  # what `items` counts: lines, messages, reports
    items: int
    batches: int  # the calls a pass made: batches of lines or shards of reports
    seconds: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: list[float] = field(default_factory=list)  # this process's; a store's server is not in it
    server_cpu_seconds: list[float] = field(default_factory=list)  # the store server's, where it can be read

    def summary(self, corpus_messages: int) -> dict[str, Any]:
        """`msgs_per_s` is the corpus's decoded messages over this stage's time for the whole
        corpus: one unit for every stage, so the smallest is the limit."""
        s = median_s(self.seconds)
        return {
            "unit": self.unit,
            "items": self.items,
            "batches": self.batches,
            **self.counts,
            "seconds": [round(x, 4) for x in self.seconds],
            "median_s": round(s, 4),
            "items_per_s": rate(self.items, s),
            "msgs_per_s": rate(corpus_messages, s),
            "us_per_message": per_item_us(s, corpus_messages),
            "ms_per_batch": round(s * 1000 / self.batches, 3) if self.batches else None,
            "cpu_median_s": round(median_s(self.cpu_seconds), 4) if self.cpu_seconds else None,
            "msgs_per_cpu_s": rate(corpus_messages, median_s(self.cpu_seconds)) if any(self.cpu_seconds) else None,
            "server_cpu_s": [round(x, 4) for x in self.server_cpu_seconds] or None,
            "msgs_per_server_cpu_s": (
                rate(corpus_messages, median_s(self.server_cpu_seconds)) if any(self.server_cpu_seconds) else None
            ),
            **self.extra,
        }


# -- plain arithmetic (tests/unit/test_bench_stages.py) ------------------------------------------


def median_s(seconds: list[float]) -> float:
    """The median pass: the machine is shared, and one slow pass should not decide."""
    if not seconds:
        raise ValueError("a stage needs at least one timed pass")
    return float(statistics.median(seconds))


def rate(items: int, seconds: float) -> float:
    """Items per second, 0 for nothing done; a pass too short to time is an error, not infinity."""
    if seconds <= 0:
        raise ValueError(f"a timed pass must take some time, got {seconds} s")
    return round(items / seconds, 1)


def per_item_us(seconds: float, items: int) -> float | None:
    return round(seconds * 1e6 / items, 3) if items else None


def cores_needed(target_msgs_per_s: float, msgs_per_s_per_core: float) -> int:
    """Processes (a core each) of one stage that `target_msgs_per_s` takes, if it scales out
    evenly; at least 1."""
    if msgs_per_s_per_core <= 0:
        raise ValueError("a stage's rate must be positive")
    return max(1, math.ceil(target_msgs_per_s / msgs_per_s_per_core))


def messages_for_sentences(sentences_per_s: float, lines_decoded: int, messages_decoded: int) -> float:
    """AIS sentences/s as messages/s: multi-sentence messages (type 5 is two) make fewer
    messages than sentences, by the corpus's own ratio."""
    if messages_decoded <= 0 or lines_decoded < messages_decoded:
        raise ValueError(f"{lines_decoded} lines cannot decode into {messages_decoded} messages")
    return sentences_per_s * messages_decoded / lines_decoded


def disagreements(stages: dict[str, dict[str, Any]], lines: int) -> list[str]:
    """Every count that should equal another and does not: the stages saw the same corpus."""
    out = []

    def same(what: str, *pairs: tuple[str, Any]) -> None:
        if len({v for _, v in pairs}) != 1:
            out.append(f"{what}: " + ", ".join(f"{k}={v}" for k, v in pairs))

    s = stages
    same("lines", ("corpus", lines), ("read", s["read"]["items"]), ("frame", s["frame"]["items"]))
    same(
        "framed messages",
        ("frame", s["frame"]["messages_out"]),
        ("decode", s["decode"]["items"]),
        ("ray_task", s["ray_task"]["items"]),
    )
    same("decoded messages", ("decode", s["decode"]["messages_decoded"]), ("normalize", s["normalize"]["items"]))
    same("reports", *((k, s[k]["reports"]) for k in ("decode", "normalize", "ray_actor", "postgres", "sqlite", "dlq")))
    same("reports for Redis", ("decode", s["decode"]["reports_for_redis"]), ("redis", s["redis"]["reports"]))
    return out


def capacity(stages: dict[str, dict[str, Any]], targets: dict[str, float]) -> dict[str, dict[str, int]]:
    """Per target (messages/s): cores of each stage, at this machine's one-core rates."""
    return {
        label: {name: cores_needed(target, st["msgs_per_s"]) for name, st in stages.items()}
        for label, target in targets.items()
    }


# -- the stages in this process -----------------------------------------------------------------


class _Stopwatch:
    """Wall and CPU seconds of each timed pass, and a store server's CPU seconds when a
    `server_cpu` reading (cumulative seconds, or None where it cannot be read) is given."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.server_cpu_seconds: list[float] = []

    @contextmanager
    def timing(self, server_cpu: Callable[[], float | None] | None = None) -> Iterator[None]:
        server = server_cpu() if server_cpu else None
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds.append(time.perf_counter() - wall)
        self.cpu_seconds.append(time.process_time() - cpu)
        after = server_cpu() if server_cpu else None
        if server is not None and after is not None:
            self.server_cpu_seconds.append(after - server)

    def result(
        self, name: str, unit: str, items: int, batches: int, counts: dict[str, int] | None = None
    ) -> StageResult:
        return StageResult(
            name, unit, items, batches, self.seconds, counts or {}, {}, self.cpu_seconds, self.server_cpu_seconds
        )


def _timed(repeat: int, one_pass: Callable[[int], Any]) -> tuple[_Stopwatch, Any]:
    watch, result = _Stopwatch(), None
    for r in range(repeat):
        with watch.timing():
            result = one_pass(r)
    return watch, result


def stage_read(corpus: Path, repeat: int, batch_lines: int) -> StageResult:
    def one(_r: int) -> int:
        return sum(1 for _ in FileSource(corpus).lines(threading.Event()))

    watch, n = _timed(repeat, one)
    return watch.result("read", "lines", n, math.ceil(n / batch_lines))


def stage_frame(corpus: Path, repeat: int, batch_lines: int) -> tuple[StageResult, list[LineBatch]]:
    """What the driver's reader thread does (`pipeline._SourceThread`), without the queue."""

    def one(_r: int) -> tuple[Reader, list[LineBatch]]:
        reader, cut = Reader(str(corpus), max_lines=batch_lines), []
        for line in FileSource(corpus).lines(threading.Event()):
            batch = reader.feed(line) if line is not None else reader.tick()  # as the pipeline does
            if batch is not None:
                cut.append(batch)
        last = reader.close()
        return reader, cut + ([last] if last is not None else [])

    watch, (reader, batches) = _timed(repeat, one)
    counts = {
        "messages_out": sum(len(b.messages) for b in batches),
        "lines_rejected": sum(v for k, v in reader.counts.items() if k.startswith("rejected")),
    }
    return watch.result("frame", "lines", reader.counts[acc.LINES_READ], len(batches), counts), batches


def stage_decode(batches: list[LineBatch], repeat: int, shards: int) -> tuple[StageResult, list[DecodedBatch]]:
    watch, decoded = _timed(repeat, lambda _r: [BatchDecoder(shards).decode(b) for b in batches])
    total: Counter[str] = Counter()
    for d in decoded:
        total.update(d.counts)
    counts = {
        "messages_decoded": total[acc.MESSAGES_DECODED],
        "lines_decoded": total[acc.LINES_DECODED],
        "reports": sum(total[acc.reports(k)] for k in (KIND_POSITION, KIND_STATIC, KIND_OTHER)),
        "reports_for_redis": total[acc.reports(KIND_POSITION)] + total[acc.reports(KIND_STATIC)],
    }
    items = sum(len(b.messages) for b in batches)
    return watch.result("decode", "messages", items, len(batches), counts), decoded


_Call = tuple[Callable[..., Any], tuple[Any, ...]]


@contextmanager
def _recording_builders(calls: list[_Call]) -> Iterator[None]:
    """While inside, every call `decode` makes to a normalize row builder is recorded with its
    arguments; the builders are put back on the way out, whatever happens."""
    namespace = vars(decode_module)  # decode calls `other_row` by its module-level name
    saved, saved_other = dict(ROW_BUILDERS), namespace["other_row"]

    def recorder(builder: Callable[..., Any]) -> Callable[..., Any]:
        def record(*args: Any) -> Any:
            calls.append((builder, args))
            return builder(*args)

        return record

    try:
        for msg_type, builder in saved.items():
            ROW_BUILDERS[msg_type] = recorder(builder)
        namespace["other_row"] = recorder(saved_other)
        yield
    finally:
        ROW_BUILDERS.update(saved)
        namespace["other_row"] = saved_other


def stage_normalize(batches: list[LineBatch], repeat: int, shards: int) -> StageResult:
    calls: list[_Call] = []
    with _recording_builders(calls):
        for batch in batches:
            BatchDecoder(shards).decode(batch)

    def one(_r: int) -> tuple[int, int]:
        messages = rows = 0
        for builder, args in calls:
            try:
                result = builder(*args)
            except (AttributeError, TypeError, ValueError):  # what decode counts as undecodable
                continue
            messages += 1
            rows += len(result) if isinstance(result, list) else 1
        return messages, rows

    watch, (messages, rows) = _timed(repeat, one)
    return watch.result("normalize", "messages", messages, len(batches), {"reports": rows})


def shard_batches(decoded: list[DecodedBatch]) -> list[ReportBatch]:
    """What the writers get: every non-empty shard of every decoded batch."""
    return [shard for d in decoded for shard in d.shards if len(shard)]


ServerCpu = Callable[[Any], float | None]  # a sink's store server's CPU seconds so far


def _sink_pass(
    sink: Any, shards: list[ReportBatch], watch: _Stopwatch, server_cpu: ServerCpu | None
) -> tuple[int, int]:
    """Reports received and reports written, as a writer's lane does it (`writer.restrict`
    to the sink's kinds, `prepare`, `write`), timed on `watch`."""
    received = written = 0
    parts = [restrict(shard, sink.kinds) for shard in shards]
    with watch.timing(None if server_cpu is None else lambda: server_cpu(sink)):
        for part in parts:
            prepared, superseded = sink.prepare(part)
            result = sink.write(prepared) if len(prepared) else WriteResult(0, 0)
            received += len(part)
            written += result.written
            if result.written + result.duplicates + superseded != len(part):
                raise AssertionError(f"{sink.name} accounted for {result} + {superseded} of {len(part)} reports")
    return received, written


def stage_sink(
    name: str, open_sink: Callable[[int], Any], shards: list[ReportBatch], repeat: int, server_cpu: ServerCpu | None
) -> StageResult:
    """`open_sink(r)` opens the sink over a fresh, empty store for pass r (not timed)."""
    watch, received, written = _Stopwatch(), 0, 0
    for r in range(repeat):
        sink = open_sink(r)
        try:
            received, written = _sink_pass(sink, shards, watch, server_cpu)
        finally:
            sink.close()
    return watch.result(name, "reports", received, len(shards), {"reports": received, "written": written})


def stage_dlq(shards: list[ReportBatch], repeat: int, tmp: Path) -> StageResult:
    """Every shard journaled whole, into a fresh journal per pass: the worst case, every
    sink's breaker open. In a cluster this runs in the dead-letters actor on the head node."""
    failure = Failure("StoreUnavailable", "jobs.bench.stages", "OPEN", time.time())
    watch, taken = _Stopwatch(), 0
    for r in range(repeat):
        queue = DeadLetterQueue(DeadLetterConfig(path=tmp / f"stages-dlq-{r}.sqlite3"))
        taken = 0
        try:
            with watch.timing():
                for i, part in enumerate(shards):
                    result = queue.enqueue(
                        SINK_DB, rows_by_kind(part), source=part.source, job_id="bench-stages",
                        batch_id=f"stages:{i}", read_ms=part.read_ms, failure=failure,
                    )  # fmt: skip
                    taken += result.accepted + result.duplicates
        finally:
            queue.close()
    return watch.result("dlq", "reports", taken, len(shards), {"reports": taken})


# -- the Ray hand-off ----------------------------------------------------------------------------


def _messages_of(batch: LineBatch) -> int:
    """The remote end of the driver's hand-off: the batch arrives, a count goes back."""
    return len(batch.messages)


class _ReportTaker:
    """The remote end of the hop to a writer: a shard arrives, a count goes back."""

    def take(self, batch: ReportBatch) -> int:
        return len(batch)


def _through_ray(submit: Callable[[Any], Any], items: list[Any], repeat: int) -> tuple[_Stopwatch, list[float], int]:
    """Pipelined passes (at most IN_FLIGHT outstanding, as the ingest job keeps them), then
    one pass of round trips awaited one at a time: the passes' stopwatch (the driver's CPU
    only), the seconds of each lone round trip, and the count the remote end returned."""
    import ray

    # Every worker a pass will use is up, with the code imported, before any clock runs.
    ray.get([submit(items[0]) for _ in range(IN_FLIGHT)])
    watch, total = _Stopwatch(), 0
    for _ in range(repeat):
        pending: list[Any] = []
        total = 0
        with watch.timing():
            for item in items:
                if len(pending) >= IN_FLIGHT:
                    total += ray.get(pending.pop(0))
                pending.append(submit(item))
            total += sum(ray.get(pending))
    trips = []
    for item in items:
        started = time.perf_counter()
        ray.get(submit(item))
        trips.append(time.perf_counter() - started)
    return watch, trips, total


@contextmanager
def _ray_session() -> Iterator[None]:
    """A private local cluster, or the one this process already joined (left running)."""
    import ray

    from actors.session import init_ray

    started_here = not ray.is_initialized()
    if started_here:
        init_ray(None, log_to_driver=False)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def stages_ray(batches: list[LineBatch], shards: list[ReportBatch], repeat: int) -> list[StageResult]:
    import ray

    with _ray_session():
        task = ray.remote(max_retries=0)(_messages_of)
        taker: Any = ray.remote(_ReportTaker).options(num_cpus=0).remote()
        results = []
        for name, unit, submit, items in (
            ("ray_task", "messages", task.remote, batches),
            ("ray_actor", "reports", taker.take.remote, shards),
        ):
            watch, trips, total = _through_ray(submit, items, repeat)
            result = watch.result(name, unit, total, len(items), {"reports": total} if unit == "reports" else {})
            result.extra = {
                "round_trip_ms_p50": round(statistics.median(trips) * 1000, 3),
                "round_trip_ms_max": round(max(trips) * 1000, 3),
                "in_flight": IN_FLIGHT,
            }
            results.append(result)
        ray.kill(taker)
    return results


# -- the store servers' CPU ----------------------------------------------------------------------


def _process_cpu_s(pid: int) -> float | None:
    """User and system CPU seconds of a process on this machine, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_backend_cpu_s(admin_url: str) -> ServerCpu:
    """CPU seconds of the PostgreSQL backends serving a SQL sink's database (its pool's
    connections, named `breakwater`), read from /proc: exact, since no one else uses a
    scratch database, and 0 before its first write opens them."""

    def read(sink: Any) -> float | None:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'breakwater'",
                (sink.engine.url.database,),
            ).fetchall()
        found = [_process_cpu_s(int(pid)) for (pid,) in rows]
        return None if any(x is None for x in found) else sum(x for x in found if x is not None)

    return read


def redis_server_cpu_s(sink: Any) -> float | None:
    """The whole Redis server's CPU seconds (INFO cpu): other clients of a shared server are in it."""
    info = sink.client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# -- the command ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.bench.stages", description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=200_000, help="corpus lines, default 200000")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per stage (medians reported), default 3")
    p.add_argument("--batch-lines", type=int, default=5000, help="lines per batch, the ingest default 5000")
    p.add_argument("--shards", type=int, default=2, help="MMSI shards (writers), the ingest default 2")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args(argv)
    for name in ("lines", "repeat", "batch_lines", "shards"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def _store_stages(args: argparse.Namespace, shards: list[ReportBatch], tmp: Path, scratch: Any) -> list[StageResult]:
    from breakwater.stores.engine import check_database
    from breakwater.stores.redis import RedisSink
    from breakwater.stores.sql import SqlSink

    def redis(r: int) -> Any:
        return RedisSink(args.redis_url, prefix=scratch.prefix(f"stages{r}"))

    def sql(url: str) -> Any:
        check_database(url, timeout_s=30.0)  # the schema, as an ingest job creates it
        return SqlSink(url, timeout_s=30.0)

    out = []
    for name, open_sink, server_cpu in (
        ("redis", redis, redis_server_cpu_s),
        ("postgres", lambda r: sql(scratch.database(f"stages{r}")), postgres_backend_cpu_s(args.database_url)),
        ("sqlite", lambda r: sql(f"sqlite:///{tmp / f'stages-{r}.sqlite3'}"), None),
    ):
        log(f"stages: {name}")
        out.append(stage_sink(name, open_sink, shards, args.repeat, server_cpu))
    log("stages: dlq")
    out.append(stage_dlq(shards, args.repeat, tmp))
    return out


def run(args: argparse.Namespace, tmp: Path, scratch: Any) -> dict[str, Any]:
    from jobs.bench.machine import machine_info
    from jobs.bench.scenarios import make_corpus

    results: dict[str, Any] = {
        "run_id": scratch.run_id,  # names its scratch databases and Redis prefixes, all removed at the end
        "machine": machine_info(scratch),
        "load_average_start": os.getloadavg(),
    }
    corpus, info = make_corpus(args.lines, tmp)
    log("stages: read, frame, decode, normalize")
    found = [stage_read(corpus, args.repeat, args.batch_lines)]
    frame, batches = stage_frame(corpus, args.repeat, args.batch_lines)
    decode, decoded = stage_decode(batches, args.repeat, args.shards)
    found += [frame, decode, stage_normalize(batches, args.repeat, args.shards)]
    shards = shard_batches(decoded)
    log("stages: the Ray hand-off")
    found += stages_ray(batches, shards, args.repeat)
    found += _store_stages(args, shards, tmp, scratch)
    messages = decode.counts["messages_decoded"]
    stages = {st.name: st.summary(messages) for st in found}
    world = messages_for_sentences(WORLD_SENTENCES_PER_S, decode.counts["lines_decoded"], messages)
    targets = {"world": world, "world_x10": world * 10}
    results.update(
        corpus=info,
        lines=args.lines,
        repeat=args.repeat,
        batch_lines=args.batch_lines,
        shards=args.shards,
        messages_decoded=messages,
        stages=stages,
        disagreements=disagreements(stages, args.lines),
        targets_msgs_per_s={k: round(v, 1) for k, v in targets.items()},
        cores_needed=capacity(stages, targets),
        load_average_end=os.getloadavg(),
    )
    return results


def console_report(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        f"{results['lines']:,} lines, {results['messages_decoded']:,} messages decoded; {m['cpu_count']} CPUs; "
        f"load average {_load(results['load_average_start'])} at the start, {_load(results['load_average_end'])} "
        f"at the end; medians of {results['repeat']}",
        f"{'stage':11}{'msg/s':>11}{'msg/cpu-s':>11}{'server':>11}{'items/s':>12} {'unit':9}{'ms/batch':>10}",
    ]
    for name, st in results["stages"].items():
        out.append(
            f"{name:11}{st['msgs_per_s']:>11,.0f}{st['msgs_per_cpu_s'] or 0:>11,.0f}"
            f"{st['msgs_per_server_cpu_s'] or 0:>11,.0f}{st['items_per_s']:>12,.0f} {st['unit']:9}"
            f"{st['ms_per_batch']:>10.2f}"
        )
    out.append("msg/cpu-s: per CPU second of this process; server: per CPU second of the store's server")
    for name in ("ray_task", "ray_actor"):
        st = results["stages"][name]
        out.append(f"{name}: one round trip awaited alone: p50 {st['round_trip_ms_p50']} ms a batch")
    t = results["targets_msgs_per_s"]
    for label, cores in results["cores_needed"].items():
        out.append(
            f"cores per stage for {label} ({t[label]:,.0f} msg/s): " + ", ".join(f"{k} {v}" for k, v in cores.items())
        )
    out.append(
        "counts agree" if not results["disagreements"] else "COUNTS DISAGREE: " + "; ".join(results["disagreements"])
    )
    return "\n".join(out)


def _load(values: Any) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    from jobs.bench.scratch import Scratch

    args = parse_args(argv)
    scratch = Scratch(args.database_url, args.redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="bwstages-"))
    try:
        results = run(args, tmp, scratch)
    finally:
        scratch.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=_jsonable))
    print(console_report(results))
    return 1 if results["disagreements"] else 0


def _jsonable(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else str(value)


if __name__ == "__main__":
    sys.exit(main())
