"""Imports every format module so that each registers itself (order = detection order)."""

from hopguard.ingest import zeek  # noqa: F401

