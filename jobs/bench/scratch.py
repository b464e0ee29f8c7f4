"""Scratch stores: every measurement gets a fresh, empty database and Redis key prefix.

A database `bw_bench_<run>_<label>` is created on the server of `--database-url` and dropped
at the end, and a prefix `bench<run><label>:` is deleted at the end, so no run pays for
another's rows and nothing is left behind (unless `--keep`).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from jobs.bench import log


class Scratch:
    """Fresh databases and Redis prefixes for one bench run, all removed by `close`."""

    def __init__(self, database_url: str, redis_url: str, *, keep: bool = False) -> None:
        for url in (database_url, redis_url):
            if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
                raise SystemExit(f"jobs.bench only talks to 127.0.0.1, not {urlsplit(url).hostname}")
        self.admin_url = database_url
        self.redis_url = redis_url
        self.run_id = secrets.token_hex(3)
        self.keep = keep
        self.databases: list[str] = []
        self.prefixes: list[str] = []

    def database(self, label: str) -> str:
        import psycopg

        name = f"bw_bench_{self.run_id}_{label}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return urlsplit(self.admin_url)._replace(path=f"/{name}").geturl()

    def prefix(self, label: str) -> str:
        prefix = f"bench{self.run_id}{label}:"
        self.prefixes.append(prefix)
        return prefix

    def contents(self, database_url: str, prefix: str) -> dict[str, Any]:
        """Rows per table and keys under the prefix: what a run left in the stores."""
        import psycopg
        import redis

        with psycopg.connect(database_url) as conn:
            tables = [
                r[0]
                for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY tablename")
            ]
            rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]
        client = redis.Redis.from_url(self.redis_url)
        keys = vessels = geo = 0
        for key in client.scan_iter(match=f"{prefix}*", count=2000):
            keys += 1
            if b":vessel:" in key:
                vessels += 1
            elif key.endswith(b":geo"):
                geo += int(client.zcard(key))
        client.close()
        return {"sql_rows": rows, "redis_keys": keys, "redis_vessel_keys": vessels, "redis_geo_members": geo}

    def close(self) -> None:
        if self.keep:
            log(f"kept scratch databases {self.databases} and Redis prefixes {self.prefixes}")
            return
        # Nothing made, nothing to drop: a run of the fastpath scenario alone needs no server.
        if self.databases:
            self._drop_databases()
        if self.prefixes:
            self._delete_prefixes()

    def _drop_databases(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _delete_prefixes(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        for prefix in self.prefixes:
            batch = []
            for key in client.scan_iter(match=f"{prefix}*", count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
        client.close()
