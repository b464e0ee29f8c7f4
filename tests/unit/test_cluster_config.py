"""cluster.yaml passes the checks `ray up` runs, without starting anything."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "cluster.yaml").read_text()))


def validate(config: dict[str, object]) -> None:
    # Private API of the pinned Ray version (2.60): the same checks as `ray up`.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_config_is_valid() -> None:
    validate(load())


def test_the_validator_would_catch_a_broken_config() -> None:
    config = load()
    config["provider"] = {"type": "local"}  # no head_ip
    with pytest.raises(Exception, match="head_ip"):
        validate(config)


def test_the_head_keeps_token_auth_and_exports_metrics() -> None:
    head = " ".join(load()["head_start_ray_commands"])  # type: ignore[arg-type]
    assert "RAY_AUTH_MODE=token" in head
    assert "--metrics-export-port=8080" in head
    assert "RAY_JOB_STOP_WAIT_TIME_S" in head


def test_the_dashboard_is_installed_where_rays_grafana_looks(tmp_path: Path) -> None:
    from actors.dashboards import DASHBOARD, install_dashboard

    assert install_dashboard(tmp_path) is None  # Ray runs without its dashboard: nothing to do
    folder = tmp_path / "metrics" / "grafana" / "dashboards"
    folder.mkdir(parents=True)
    installed = install_dashboard(tmp_path)
    assert installed == folder / "breakwater-dashboard.json"
    assert installed.read_bytes() == DASHBOARD.read_bytes()
