"""Who may do destructive things: the deployment's admin token, checked where the data is.

Clearing the dead-letter queue, clearing or redriving the dead-letter store, forcing a
breaker, and deleting, restoring or purging vessels change what Breakwater holds or does.
The token that is *required* is the deployment's: BREAKWATER_ADMIN_TOKEN where the ingest
job runs. The cluster's actors hold it; so does the store itself, as a SHA-256 digest that the
ingest job writes (the SQL store's `breakwater_settings`, the dead-letter journal), so a
cluster-less store checks operators with no help from the caller. The token that is
*presented* is the operator's `--admin-token`: the caller's own environment never decides.
Every attempt is logged with who asked, as the checking side sees it.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import os
import socket
from typing import TYPE_CHECKING

from pydantic import SecretStr

from breakwater.errors import AdminAuthError

if TYPE_CHECKING:
    from breakwater.config import Settings
    from breakwater.journal import Snapshots

log = logging.getLogger("breakwater.admin")

ADMIN_TOKEN_DIGEST = "admin_token_sha256"


def token_digest(token: SecretStr | str | None) -> str | None:
    """The SHA-256 of a token (hex), the form in which stores keep it; None for no token."""
    if isinstance(token, SecretStr):
        token = token.get_secret_value()
    if not token:
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def who_am_i() -> str:
    """The OS user, host and process asking, as this process sees itself."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class AdminGuard:
    """Checks a presented token against the digest of the required one, in constant time."""

    def __init__(self, required_digest: str | None) -> None:
        self._digest = required_digest or None

    @classmethod
    def from_token(cls, token: SecretStr | str | None) -> AdminGuard:
        return cls(token_digest(token))

    @property
    def configured(self) -> bool:
        return self._digest is not None

    def check(self, presented: str | None, operation: str, requested_by: str) -> None:
        """Return if `presented` is the admin token; log and raise AdminAuthError if not."""
        if self._digest is None:
            log.warning("admin %s by %s refused: no admin token is configured", operation, requested_by)
            raise AdminAuthError(
                f"{operation} needs the deployment's admin token, and it has none: "
                "set BREAKWATER_ADMIN_TOKEN where the ingest job runs"
            )
        presented_digest = token_digest(presented) or ""
        if not hmac.compare_digest(presented_digest.encode(), self._digest.encode()):
            log.warning("admin %s by %s refused: wrong or missing admin token", operation, requested_by)
            raise AdminAuthError(f"{operation} refused: wrong or missing admin token (--admin-token)")
        log.warning("admin %s by %s", operation, requested_by)


def journal_guard(snapshots: Snapshots) -> AdminGuard:
    """The guard of what the journal holds (dead letters, breakers): the digest the ingest job
    saved there, read at each check so a newer job's token applies at once."""
    saved = snapshots.load("deployment", ADMIN_TOKEN_DIGEST)
    return AdminGuard(saved.get("sha256") if saved else None)


def publish_admin_token(settings: Settings) -> None:
    """Write the digest of this deployment's admin token (none: no admin operations) into the
    stores it operates on, where every later check reads it. Only the ingest job calls this:
    it runs with the deployment's own settings."""
    from breakwater.journal import Snapshots
    from breakwater.stores.deployment import save_admin_digest

    digest = token_digest(settings.admin_token)
    save_admin_digest(settings.database_url, digest, timeout_s=settings.store_timeout_s)
    snapshots = Snapshots(settings.dlq.path)
    try:
        snapshots.save("deployment", ADMIN_TOKEN_DIGEST, {"sha256": digest})
    finally:
        snapshots.close()
