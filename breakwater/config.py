"""Every setting of Breakwater in one typed object, validated before anything starts.

Values come from, highest priority first: command-line flags, environment variables
`BREAKWATER_<SETTING>` (nested ones with `__`: `BREAKWATER_BREAKER__RESET_TIMEOUT_S=10`), a
config file (YAML or TOML, `--config` or `BREAKWATER_CONFIG`), then the defaults here.

A bad value stops the program at once with one line that names the setting:

    BREAKWATER_REDIS_URL (--redis-url): not a redis:// URL: 'redis//localhost'
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from breakwater import plausibility
from breakwater.breaker import BreakerConfig
from breakwater.dead_letters import DeadLetterConfig
from breakwater.decode import DEFAULT_MAX_CLOCK_SKEW_S
from breakwater.errors import ConfigError
from breakwater.fusion import DEFAULT_MAX_DRIFT_S
from breakwater.fusion import DEFAULT_WINDOW_S as DEFAULT_FUSION_WINDOW_S
from breakwater.retry import RetryPolicy
from breakwater.stores.base import mask_url

ENV_PREFIX = "BREAKWATER_"
DEFAULT_DATABASE_URL = "sqlite:///breakwater.sqlite3"
_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]*$")


class Settings(BaseSettings):
    """The settings of an ingest job, the retry job, the client and the CLI."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL, description="history and vessels: sqlite:///path or postgresql://..."
    )
    redis_url: str | None = Field(
        None, description="latest state and geo queries: redis://host:port/db; unset for none"
    )
    redis_prefix: str = Field("", description="key prefix for this deployment (prod:, staging:)")
    redis_buckets: int = Field(16, ge=1, le=1024, description="hash-tag buckets the vessel keys spread over")
    redis_stream_maxlen: int = Field(0, ge=0, description="capped stream of latest-state updates; 0 turns it off")
    store_timeout_s: float = Field(5.0, gt=0, description="connect and statement timeout of every database call")
    redis_timeout_s: float = Field(1.0, gt=0, description="connect and reply timeout of every Redis call")

    namespace: str = Field("breakwater", min_length=1, description="Ray namespace of the named actors")
    deployment: str | None = Field(
        None, min_length=1, description="this deployment's name (default: the namespace); see breakwater.deployment"
    )
    ray_address: str | None = Field(
        None, description="the deployment's Ray cluster (host:port) for jobs and operations; RAY_ADDRESS wins"
    )
    ray_dashboard: bool = Field(
        False,
        description="start Ray's dashboard with the local cluster a job starts for itself "
        "(`ray start` clusters have their own)",
    )
    ray_timeout_s: float = Field(60.0, gt=0, description="longest wait for any one Ray call or for joining a cluster")
    drain_timeout_s: float = Field(3600.0, gt=0, description="longest wait for a whole drain run by the scheduler")
    queue_wait_s: float = Field(
        600.0, gt=0, description="how long a writer keeps trying a dead-letter queue that does not answer"
    )
    writers: int = Field(2, ge=1, le=256, description="persistence actors (MMSI shards)")
    batch_lines: int = Field(5000, ge=1, description="lines per batch handed to a decode task")
    # 100 ms: on live feeds at 10,000 msg/s the receive-to-visible p99 was 234 ms (Redis) and
    # 271 ms (SQL) with it, 730 and 1,107 ms with 500 (docs/BENCHMARKS.md, streaming); files are
    # cut by size.
    flush_interval_ms: int = Field(100, ge=1, description="a live feed's batch is cut after this long")
    feed_silence_s: float = Field(
        120.0, ge=0, description="a connected TCP feed that sends nothing for this long is reconnected; 0: never"
    )
    max_batches_in_flight: int = Field(4, ge=1, description="batches submitted and not yet written")
    decode_num_cpus: float = Field(1.0, gt=0, description="CPUs a decode task reserves")
    strict_tag_blocks: bool = Field(False, description="reject lines whose tag block checksum fails")
    max_clock_skew_s: float = Field(
        DEFAULT_MAX_CLOCK_SKEW_S,
        gt=0,
        description="seconds a receive time may lie ahead of the ingest clock; further is flagged clock_ahead"
        " (kept in history, moves no latest state)",
    )
    max_speed_kn: float = Field(
        plausibility.DEFAULT_MAX_SPEED_KN,
        gt=0,
        description="a position implying a higher speed from the vessel's previous fix is flagged too_fast",
    )
    max_clock_drift_s: float = Field(
        DEFAULT_MAX_DRIFT_S,
        gt=0,
        description="a receiver's time for a transmission three or more receivers heard may be this far from"
        " their median; further fails its clock check",
    )
    demotion_failure_ratio: float = Field(
        plausibility.DEFAULT_FAILURE_RATIO,
        gt=0,
        le=1,
        description="a receiver with this share of failed checks over demotion_window_s is demoted; below half"
        " of it, restored",
    )
    demotion_window_s: float = Field(
        plausibility.DEFAULT_WINDOW_S, gt=0, description="the time over which a receiver's checks are counted"
    )
    fusion_window_s: float = Field(
        DEFAULT_FUSION_WINDOW_S,
        ge=0,
        description="seconds between two receivers' copies of one transmission (same MMSI and payload) for them"
        " to be stored as one report with both receivers; 0 stores every copy",
    )
    fragment_timeout_lines: int = Field(1000, ge=1, description="lines a multi-sentence group may wait")
    fragment_timeout_s: float = Field(60.0, gt=0, description="seconds a multi-sentence group may wait")

    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    breaker_report_interval_s: float = Field(1.0, gt=0, description="how often writers report outcomes")
    dlq: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    scheduler: bool = Field(True, description="the ingest job starts the retry scheduler")

    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds to")
    metrics_port: int | None = Field(
        9464, ge=0, le=65535, description="endpoint port; 0 picks a free one, none turns it off"
    )
    metrics_token: SecretStr | None = Field(None, description="bearer token the metrics endpoint requires")
    metrics_push_interval_s: float = Field(1.0, gt=0, description="how often every part ships its metric deltas")
    admin_token: SecretStr | None = Field(None, description="secret that destructive admin operations require")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        from breakwater.stores.engine import validate_url

        return validate_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^(redis|rediss|unix)://[^/]", value):
            raise ValueError(f"not a redis:// URL: {mask_url(value)!r}")
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _redis_prefix(cls, value: str) -> str:
        if not _PREFIX_PATTERN.match(value) or "{" in value or "}" in value:
            raise ValueError(f"{value!r} may hold only letters, digits and _ . : -")
        return value

    @model_validator(mode="after")
    def _journal_per_deployment(self) -> Settings:
        """Unless a journal is named, each deployment journals under its own folder: two on
        one machine (same OS user) never share dead letters or breaker states."""
        if "path" in self.dlq.model_fields_set:
            return self
        from breakwater.dead_letters import default_journal_path
        from breakwater.deployment import Deployment

        default = default_journal_path()
        path = default.parent / Deployment.of(self).slug / default.name
        # Settings are frozen once built; this is still building them.
        object.__setattr__(self, "dlq", self.dlq.model_copy(update={"path": path}))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    def describe(self) -> dict[str, Any]:
        """The settings as an operator may see them: passwords and tokens masked."""
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.database_url)
        if self.redis_url:
            data["redis_url"] = mask_url(self.redis_url)
        return data


def _setting_name(loc: tuple[Any, ...]) -> str:
    path = [str(p) for p in loc if not str(p).startswith("function-")]
    env = ENV_PREFIX + "__".join(p.upper() for p in path)
    flag = "--" + "-".join(path).replace("_", "-").replace(".", "-")
    return f"{env} ({flag})"


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("BREAKWATER_CONFIG (--config)", f"cannot read {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError("BREAKWATER_CONFIG (--config)", f"{path} is not valid: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("BREAKWATER_CONFIG (--config)", f"{path} must hold a mapping of settings")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> Settings:
    """Settings from flags (`overrides`, None values ignored), environment and config file.

    Raises ConfigError naming the first bad setting."""
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = config_file or os.environ.get(ENV_PREFIX + "CONFIG")
    file_values = read_config_file(Path(path)) if path else {}
    env_values = _environment_values()
    try:
        # Environment over file: fold them here, so nested keys merge instead of replacing.
        return Settings.model_validate(_merge(_merge(file_values, env_values), flags))
    except ValidationError as e:
        first = e.errors()[0]
        value = first.get("input")
        secret = any("token" in str(part) for part in first["loc"])
        shown = "" if isinstance(value, dict) or value is None or secret else f" (got {mask_url(str(value))[:80]!r})"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(_setting_name(first["loc"]), f"{message}{shown}") from e


def _environment_values() -> dict[str, Any]:
    """BREAKWATER_* variables as a nested dict (pydantic validates the strings)."""
    values: dict[str, Any] = {}
    for name, value in os.environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = _parse_env(value)
    return values


def _parse_env(value: str) -> Any:
    """`none` or an empty value unsets an optional setting; everything else stays a string."""
    return None if value.strip().lower() in ("", "none", "null") else value
