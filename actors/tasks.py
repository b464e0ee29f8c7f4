"""The decode task: stateless, fanned out over the cluster, one batch per call."""

from __future__ import annotations

from typing import Any

import ray

from breakwater.decode import BatchDecoder
from breakwater.framing import LineBatch


@ray.remote(max_retries=3)
def decode_batch(batch: LineBatch, n_shards: int, strict_tag_blocks: bool, max_clock_skew_s: float) -> tuple[Any, ...]:
    """Returns (counts, rejected examples) and then one ReportBatch per shard, as separate
    objects: the driver hands each shard's object to its writer without fetching it."""
    decoder = BatchDecoder(n_shards, strict_tag_blocks=strict_tag_blocks, max_clock_skew_s=max_clock_skew_s)
    decoded = decoder.decode(batch)
    return ((decoded.counts, decoded.rejected_examples), *decoded.shards)


@ray.remote
def warm_up() -> bool:
    """Nothing but the imports a decode task needs, on a worker of its own."""
    return BatchDecoder(1).n_shards == 1
