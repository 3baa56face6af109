"""Imports every format module so that each registers itself (order = detection order)."""

from hopguard.ingest import (  # noqa: F401
    auditd,
    ecs,
    esxi,
    eve,
    macos,
    netfilter,
    pcap,
    windows,
    zeek,
)
