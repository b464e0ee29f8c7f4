"""What the SQL store holds about its deployment (`breakwater_settings`): the digest of the
admin token that destructive vessel operations require."""

from __future__ import annotations

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError

from breakwater.admin import ADMIN_TOKEN_DIGEST
from breakwater.errors import ConfigError
from breakwater.stores import schema
from breakwater.stores.base import mask_url
from breakwater.stores.engine import DATABASE_SETTING, make_engine


def save_admin_digest(url: str, digest: str | None, *, timeout_s: float) -> None:
    """Replace the stored digest (None removes it: admin operations are then refused)."""
    engine = make_engine(url, timeout_s=timeout_s)
    table = schema.deployment_settings
    try:
        with engine.begin() as conn:
            conn.execute(delete(table).where(table.c.name == ADMIN_TOKEN_DIGEST))
            if digest is not None:
                conn.execute(table.insert().values(name=ADMIN_TOKEN_DIGEST, value=digest))
    except SQLAlchemyError as e:
        raise ConfigError(DATABASE_SETTING, f"cannot record the admin token in {mask_url(url)}: {e}") from e
    finally:
        engine.dispose()


def load_admin_digest(engine: Engine) -> str | None:
    table = schema.deployment_settings
    with engine.connect() as conn:
        value = conn.execute(select(table.c.value).where(table.c.name == ADMIN_TOKEN_DIGEST)).scalar()
    return None if value is None else str(value)
