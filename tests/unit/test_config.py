"""Settings from flags, environment and file; a bad one stops everything with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from breakwater.config import load_settings
from breakwater.errors import ConfigError
from breakwater.stores.base import mask_url, redact


def test_defaults_are_the_embedded_store() -> None:
    s = load_settings()
    assert s.database_url == "sqlite:///breakwater.sqlite3"
    assert s.redis_url is None
    assert s.breaker.failure_threshold == 5 and s.retry.interval_s == 300 and s.retry.max_attempts == 5


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "breakwater.yaml"
    config.write_text("redis_prefix: 'file:'\nwriters: 7\nbreaker:\n  reset_timeout_s: 11\n  failure_threshold: 9\n")
    monkeypatch.setenv("BREAKWATER_REDIS_PREFIX", "env:")
    monkeypatch.setenv("BREAKWATER_BREAKER__RESET_TIMEOUT_S", "12")
    s = load_settings({"writers": 3, "redis_url": None}, config)
    assert s.redis_prefix == "env:"  # environment over file
    assert s.writers == 3  # flag over file
    assert s.breaker.reset_timeout_s == 12  # environment, nested
    assert s.breaker.failure_threshold == 9  # file, nested, kept beside the env value


def test_toml_config_file(tmp_path: Path) -> None:
    config = tmp_path / "breakwater.toml"
    config.write_text('database_url = "postgresql://postgres@127.0.0.1/ais"\n[retry]\nmax_attempts = 2\n')
    s = load_settings(config_file=config)
    assert s.database_url == "postgresql+psycopg://postgres@127.0.0.1/ais"
    assert s.retry.max_attempts == 2


@pytest.mark.parametrize(
    ("overrides", "env", "setting"),
    [
        ({"redis_url": "redis//localhost"}, {}, "BREAKWATER_REDIS_URL (--redis-url)"),
        ({"database_url": "mysql://root@localhost/x"}, {}, "BREAKWATER_DATABASE_URL (--database-url)"),
        ({}, {"BREAKWATER_WRITERS": "zero"}, "BREAKWATER_WRITERS (--writers)"),
        (
            {},
            {"BREAKWATER_BREAKER__RESET_TIMEOUT_S": "-1"},
            "BREAKWATER_BREAKER__RESET_TIMEOUT_S (--breaker-reset-timeout-s)",
        ),
        ({"redis_prefix": "a{b}"}, {}, "BREAKWATER_REDIS_PREFIX (--redis-prefix)"),
        ({}, {"BREAKWATER_NO_SUCH_THING": "1"}, "BREAKWATER_NO_SUCH_THING (--no-such-thing)"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(
    overrides: dict[str, object], env: dict[str, str], setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as error:
        load_settings(overrides)
    message = str(error.value)
    assert message.startswith(setting + ":")
    assert "\n" not in message


def test_an_unreadable_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^BREAKWATER_CONFIG \(--config\): cannot read"):
        load_settings(config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("writers: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid"):
        load_settings(config_file=bad)


def test_passwords_never_show() -> None:
    url = "postgresql://ais:hunter2@db.example:5432/ais"
    s = load_settings({"database_url": url, "redis_url": "redis://:topsecret@127.0.0.1:6379/0", "admin_token": "tok3n"})
    described = str(s.describe())
    assert "hunter2" not in described and "topsecret" not in described and "tok3n" not in described
    assert mask_url(url) == "postgresql://ais:***@db.example:5432/ais"
    assert redact("password authentication failed: hunter2", url) == "password authentication failed: ***"
    with pytest.raises(ConfigError) as error:
        load_settings({"redis_url": "http://:topsecret@host"})
    assert "topsecret" not in str(error.value)
