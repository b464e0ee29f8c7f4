"""Entry points for `ray job submit` (and plain `python -m`): ingest, DLQ retry, benchmarks."""
