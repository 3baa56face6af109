"""Indicators: the one value type every feed reader yields and every matcher consumes.

Theory of operation: a reader turns a feed's records into :class:`Indicator` values whose
``value`` is already canonical (the normalisers below), so the store and the matchers compare
plain strings: an address or network in ``ipaddress``'s compressed form, a lower-case ASCII
(IDNA) domain without a trailing dot, a lower-case fingerprint. Canonical values make
re-importing a feed an update of the same rows (the row id hashes feed, kind, value and match)
and let the DuckDB matcher join on equality.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from hopguard.model.tables import F64, I32, I64, STR, TS

KINDS = ("ip", "domain", "url", "ja3", "ja3s", "ja4")
CATEGORIES = ("tor_relay", "tor_exit", "vpn", "proxy", "tunnel", "cdn", "c2", "ioc")
MATCHES = ("exact", "suffix", "subdomains")

# A DNS label: letters, digits, hyphen and underscore (SRV and DMARC names carry one).
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_JA3 = re.compile(r"^[0-9a-f]{32}$")
# JA4 (a_b_c): protocol t/q/d, TLS version, SNI d/i, 2-digit cipher and extension counts, ALPN
# first and last characters; then two 12-hex truncated hashes.
_JA4 = re.compile(r"^[tqd][0-9a-z]{2}[di][0-9]{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Indicator:
    """One indicator as a feed states it (see the ``indicator`` table for each field)."""

    kind: str
    value: str
    category: str
    prefix: int | None = None
    match: str = "exact"
    label: str = ""
    confidence: float = 0.5
    source: str = ""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    expires: datetime | None = None
    detail: str = ""
    line: int = 0  # where in the feed (line, or record number for JSON documents)


# What a reader yields: indicator columns without the ones the store fills in (id, feed, ts).
BATCH_SCHEMA = pa.schema([
    ("kind", STR), ("value", STR), ("prefix", I32), ("match", STR), ("category", STR),
    ("label", STR), ("confidence", F64), ("source", STR), ("first_seen", TS),
    ("last_seen", TS), ("expires", TS), ("detail", STR), ("record", I64)])


def batch_of(items: Sequence[Indicator]) -> pa.Table:
    """Indicators as one Arrow table in BATCH_SCHEMA (for readers that build objects)."""
    cols: dict[str, list[object]] = {name: [] for name in BATCH_SCHEMA.names}
    for it in items:
        cols["kind"].append(it.kind)
        cols["value"].append(it.value)
        cols["prefix"].append(it.prefix)
        cols["match"].append(it.match)
        cols["category"].append(it.category)
        cols["label"].append(it.label)
        cols["confidence"].append(it.confidence)
        cols["source"].append(it.source)
        cols["first_seen"].append(it.first_seen)
        cols["last_seen"].append(it.last_seen)
        cols["expires"].append(it.expires)
        cols["detail"].append(it.detail)
        cols["record"].append(it.line)
    return pa.table(cols, schema=BATCH_SCHEMA)


def indicator_id(feed: str, kind: str, value: str, match: str) -> str:
    """The row id the store gives an indicator: the first 16 hex digits of the MD5 of
    ``feed|kind|value|match`` (DuckDB computes the same with ``md5(concat_ws('|', ...))``)."""
    return hashlib.md5(f"{feed}|{kind}|{value}|{match}".encode(), usedforsecurity=False
                       ).hexdigest()[:16]


def ip_value(text: str) -> tuple[str, int]:
    """``(canonical address or network, prefix length)``; host bits of a network are cleared
    (``10.1.2.3/8`` is ``10.0.0.0/8``). Raises ValueError for anything else."""
    text = text.strip()
    if "/" in text:
        net = ipaddress.ip_network(text, strict=False)
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address), net.prefixlen
        return str(net), net.prefixlen
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    return str(addr), addr.max_prefixlen


def domain_value(text: str) -> tuple[str, str]:
    """``(canonical domain, match)``: ``*.example.com`` matches names below example.com only
    (subdomains), ``.example.com`` the name and below (suffix), ``example.com`` exactly.
    Non-ASCII names are IDNA-encoded. Raises ValueError for what is not a domain name."""
    text = text.strip().rstrip(".").lower()
    match = "exact"
    if text.startswith("*."):
        text, match = text[2:], "subdomains"
    elif text.startswith("."):
        text, match = text[1:], "suffix"
    if not text.isascii():
        text = text.encode("idna").decode("ascii")
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"not a domain name: {text!r}")
    if labels[-1].isdigit():
        raise ValueError(f"an address, not a domain name: {text!r}")
    return text, match


def hash_value(kind: str, text: str) -> str:
    """A canonical JA3/JA3S (32 hex) or JA4 fingerprint; raises ValueError otherwise."""
    value = text.strip().lower()
    if kind in ("ja3", "ja3s"):
        if not _JA3.match(value):
            raise ValueError(f"not a {kind.upper()} hash (32 hex digits): {text.strip()!r}")
        return value
    if kind == "ja4":
        if not _JA4.match(value):
            raise ValueError(f"not a JA4 fingerprint: {text.strip()!r}")
        return value
    raise ValueError(f"unknown fingerprint kind {kind!r}")


def fingerprint_kind(text: str) -> str:
    """``ja4`` or ``ja3`` by shape (a JA3 and a JA3S look alike: callers that know say so)."""
    return "ja4" if "_" in text else "ja3"


def as_indicator_rows(batch: pa.Table, feed: str) -> pa.Table:
    """A reader's batch with the ``id`` and ``feed`` columns the store would give it (for
    indicators that are matched without being stored: the seed lists)."""
    kinds, values, matches = (batch.column(n).to_pylist() for n in ("kind", "value", "match"))
    ids = [indicator_id(feed, str(k), str(v), str(m))
           for k, v, m in zip(kinds, values, matches, strict=True)]
    return batch.append_column("id", pa.array(ids, STR)).append_column(
        "feed", pa.array([feed] * batch.num_rows, STR))
