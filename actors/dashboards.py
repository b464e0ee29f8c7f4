"""Putting Breakwater's Grafana dashboard where Ray's bundled Grafana finds it.

Ray's generated dashboards never show custom metrics. Ray's Grafana provisioning loads every
JSON file in `<session dir>/metrics/grafana/dashboards`, so the metrics actor (on the head
node) copies `deploy/grafana/breakwater-dashboard.json` there when the folder exists (it
does when Ray runs its dashboard). With any other Grafana, import the file by hand.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("breakwater.actors.dashboards")

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "breakwater-dashboard.json"


def install_dashboard(session_dir: Path, dashboard: Path = DASHBOARD) -> Path | None:
    """Copy the dashboard into the session's Grafana provisioning folder; the copy's path,
    or None when there is no such folder (Ray runs without its dashboard) or no file."""
    target_dir = session_dir / "metrics" / "grafana" / "dashboards"
    if not target_dir.is_dir():
        log.info("no Grafana provisioning folder in %s: dashboard not installed", session_dir)
        return None
    if not dashboard.is_file():
        log.warning("dashboard file %s is missing (installed without deploy/?)", dashboard)
        return None
    target = target_dir / dashboard.name
    shutil.copyfile(dashboard, target)
    log.info("Grafana dashboard installed at %s", target)
    return target
