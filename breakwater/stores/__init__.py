"""Stores: the SQL database (history, vessels, latest state) and Redis (the live picture)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from breakwater.stores.base import SINK_DB, SINK_REDIS, Sink, WriteResult, mask_url

if TYPE_CHECKING:
    from breakwater.config import Settings

__all__ = ["SINK_DB", "SINK_REDIS", "Sink", "WriteResult", "check_stores", "mask_url", "open_sinks", "sink_names"]


def sink_names(settings: Settings) -> list[str]:
    return [SINK_DB, SINK_REDIS] if settings.redis_url else [SINK_DB]


def open_sinks(settings: Settings) -> list[Sink]:
    """The sinks a writer writes to, in order: the database first, then Redis if configured."""
    from breakwater.stores.sql import SqlSink

    sinks: list[Sink] = [SqlSink(settings.database_url, timeout_s=settings.store_timeout_s)]
    if settings.redis_url:
        from breakwater.stores.redis import RedisSink

        sinks.append(
            RedisSink(
                settings.redis_url,
                prefix=settings.redis_prefix,
                buckets=settings.redis_buckets,
                stream_maxlen=settings.redis_stream_maxlen,
                timeout_s=settings.redis_timeout_s,
            )
        )
    return sinks


def check_stores(settings: Settings) -> None:
    """Connect to every configured store and bring the SQL schema up to date.

    Called once at start-up: an unreachable server stops the job here with a ConfigError
    that names the setting and the cause, before any work is done."""
    from breakwater.stores.engine import check_database

    check_database(settings.database_url, timeout_s=settings.store_timeout_s)
    if settings.redis_url:
        from breakwater.stores.redis import check_redis

        check_redis(settings.redis_url, timeout_s=settings.redis_timeout_s)
