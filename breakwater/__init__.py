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
    NotRunningError,
    PoisonRecord,
    SourceError,
    StoreError,
    StoreUnavailable,
)
from breakwater.framing import LineBatch, Reader
from breakwater.models import (
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
    # querying and operating
    "Client",
    "Settings",
    "load_settings",
    # what queries return
    "OtherMessage",
    "PositionReport",
    "StaticReport",
    "StoreCounts",
    "TrackPoint",
    "Vessel",
    "VesselState",
    # reading and decoding, usable on their own
    "BatchDecoder",
    "LineBatch",
    "Reader",
    # resilience
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "DeadLetterConfig",
    "DeadLetterQueue",
    "RetryPolicy",
    # errors
    "AdminAuthError",
    "BreakwaterError",
    "ConfigError",
    "NotRunningError",
    "PoisonRecord",
    "SourceError",
    "StoreError",
    "StoreUnavailable",
]
