"""Starting or joining Ray the same way in every shell.

Ray reads RAY_AUTH_MODE once, when `ray` is imported, and the processes a new cluster starts
(its GCS, raylet, workers) read it again from the environment they inherit. When the two
disagree, `ray.init()` fails with InvalidAuthToken or waits for a GCS that never answers. So
the mode is settled here, right before `ray.init`, and the driver's cached copy of it is
refreshed whenever it changes (what Ray itself does when it turns token auth on by default):

    RAY_AUTH_MODE unset      token (a new cluster writes ~/.ray/auth_token; a cluster joined
                             by address uses the token found there or in RAY_AUTH_TOKEN)
    RAY_AUTH_MODE=token      token
    RAY_AUTH_MODE=disabled   respected: the operator asked for a cluster without auth

Joining by address checks first that something answers there, so a wrong or stopped address
costs one line within `timeout_s`, not Ray's own minute of retries.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

import ray

from breakwater.errors import ConfigError

log = logging.getLogger("breakwater.session")

AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"
ADDRESS_SETTING = "RAY_ADDRESS (--address, BREAKWATER_RAY_ADDRESS)"


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    log_to_driver: bool = True,
    timeout_s: float = 30.0,
    dashboard: bool = False,
) -> None:
    """Join the cluster at `address`, or start a local one when it is None: without Ray's
    dashboard unless `dashboard` (it costs start-up time, dies with the job, and would take
    port 8265 from a `ray start --head` on the same machine).

    ConfigError (naming RAY_ADDRESS) when the cluster cannot be reached or refuses us."""
    if ray.is_initialized():
        return
    settle_auth_mode(joining=address is not None)
    kwargs: dict[str, Any] = {"log_to_driver": log_to_driver, "configure_logging": False}
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, **kwargs)
        return
    _check_reachable(address, timeout_s)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(ADDRESS_SETTING, f"cannot join the Ray cluster at {address}: {first}") from e


def settle_auth_mode(*, joining: bool) -> str:
    """Make the mode this process uses and the one its children inherit the same; returns it."""
    from ray._raylet import (  # type: ignore[attr-defined]  # pinned: ray==2.60.0
        AuthenticationMode,
        AuthenticationTokenLoader,
        Config,
        get_authentication_mode,
    )

    wanted = os.environ.get(AUTH_MODE_VARIABLE, "").strip().lower()
    if not wanted:
        has_token = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
        # A new cluster gets token auth; a joined one without any token to present cannot use it.
        wanted = "token" if (not joining or has_token) else "disabled"
    os.environ[AUTH_MODE_VARIABLE] = wanted
    driver_uses_token = get_authentication_mode() == AuthenticationMode.TOKEN
    if driver_uses_token != (wanted == "token"):
        Config.initialize("")  # re-read RAY_AUTH_MODE: the value read at import is stale
    return wanted


def _check_reachable(address: str, timeout_s: float) -> None:
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None or parts.port is None:
        raise ConfigError(ADDRESS_SETTING, f"{address!r} is not host:port")
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(ADDRESS_SETTING, f"no Ray cluster answers at {address}: {reason}") from e
