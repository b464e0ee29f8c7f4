"""Breakwater: AIS ingestion that keeps every vessel's latest state and history while its stores fail."""
