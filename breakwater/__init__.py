"""Breakwater: AIS ingestion that keeps every vessel's latest state and history while its stores fail.

The public API. `import breakwater` does not import Ray: the plain classes here run and
test without a cluster; `actors/` and `jobs/` put them on one.
"""

from breakwater.breaker import BreakerConfig, BreakerState, CircuitBreaker
from breakwater.client import Client
from breakwater.config import Settings, load_settings
from breakwater.dead_letters import DeadLetterConfig, DeadLetterQueue
from breakwater.decode import BatchDecoder
from breakwater.errors import (
    AdminAuthError,
    BreakwaterError,
    ConfigError,
    NotFoundError,
    NotRunningError,
    PoisonRecord,
    SourceError,
    StoreError,
    StoreUnavailable,
)
from breakwater.framing import LineBatch, Reader
from breakwater.models import (
    FieldOrigin,
    OtherMessage,
    PositionReport,
    StaticReport,
    StoreCounts,
    TrackPoint,
    Vessel,
    VesselState,
)
from breakwater.retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    # errors
    "AdminAuthError",
    # reading and decoding, usable on their own
    "BatchDecoder",
    # resilience
    "BreakerConfig",
    "BreakerState",
    "BreakwaterError",
    "CircuitBreaker",
    # querying and operating
    "Client",
    "ConfigError",
    "DeadLetterConfig",
    "DeadLetterQueue",
    "FieldOrigin",
    "LineBatch",
    "NotFoundError",
    "NotRunningError",
    # what queries return
    "OtherMessage",
    "PoisonRecord",
    "PositionReport",
    "Reader",
    "RetryPolicy",
    "Settings",
    "SourceError",
    "StaticReport",
    "StoreCounts",
    "StoreError",
    "StoreUnavailable",
    "TrackPoint",
    "Vessel",
    "VesselState",
    "load_settings",
]
