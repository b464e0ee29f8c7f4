"""Who may do destructive things: a configured admin token, compared in constant time.

Clearing the dead-letter queue, clearing or redriving the dead-letter store, forcing a
breaker, and deleting or purging vessels change what Breakwater holds or does. They need
the admin token (BREAKWATER_ADMIN_TOKEN where the cluster runs, --admin-token or the same
variable where the client runs), and every attempt is logged with who asked.
"""

from __future__ import annotations

import getpass
import hmac
import logging

from pydantic import SecretStr

from breakwater.errors import AdminAuthError

log = logging.getLogger("breakwater.admin")


def who_am_i() -> str:
    """The name logged with an admin request: the local user, unless the caller says more."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class AdminGuard:
    def __init__(self, token: SecretStr | str | None) -> None:
        if isinstance(token, SecretStr):
            token = token.get_secret_value()
        self._token = token or None

    def check(self, presented: str | None, operation: str, requested_by: str) -> None:
        """Return if `presented` is the admin token; log and raise AdminAuthError if not."""
        if self._token is None:
            log.warning("admin %s by %s refused: no admin token is configured", operation, requested_by)
            raise AdminAuthError(
                f"{operation} needs an admin token, and none is configured: "
                "set BREAKWATER_ADMIN_TOKEN where Breakwater runs"
            )
        if presented is None or not hmac.compare_digest(presented.encode(), self._token.encode()):
            log.warning("admin %s by %s refused: wrong or missing admin token", operation, requested_by)
            raise AdminAuthError(f"{operation} refused: wrong or missing admin token (--admin-token)")
        log.warning("admin %s by %s", operation, requested_by)
