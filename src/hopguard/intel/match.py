"""An in-process indicator index for the inline paths (TLS gateway, IPS) and the CLI.

Theory of operation. ``IntelIndex`` is built once from rows of the ``indicator`` table and then
answers "which indicators cover this address / name / fingerprint?" in a microsecond or two,
hit or miss. Nothing in the lookup path parses configuration or touches Arrow:

Addresses
    A query is parsed with ``socket.inet_pton`` (C, strict: no leading zeros in a dotted quad,
    no zone id); the packed big-endian bytes are the key (they sort like the integers, and
    skipping ``int.from_bytes`` saves a third of a lookup). An IPv4-mapped IPv6 address
    (``::ffff:a.b.c.d``, RFC 4291 section 2.5.5.2) *is* the IPv4 address and is looked up as
    one; an indicator written that way (``::ffff:102:304``, ``::ffff:102:300/120``) is indexed
    as IPv4 too. Single addresses (/32, /128) sit in a dict. Networks are turned into
    *elementary intervals*: CIDR blocks never partially overlap (two blocks are nested or
    disjoint), so the start and end points of all blocks cut the address space into at most
    ``2n + 1`` intervals, each covered by one fixed chain of nested blocks (narrowest first).
    IPv6 keeps a sorted list of interval starts and answers with one ``bisect``. IPv4 first
    indexes a 65,536-entry list by the address's first two bytes: a /16 that no boundary cuts
    (most of them) holds its chain directly, the others a short list of their own boundaries
    to bisect. So a containment query costs one list index (and rarely a tiny bisect) whatever
    the mix of prefix lengths, instead of one dict probe per prefix length present, and
    overlapping networks from two feeds are all reported: identical blocks share a node,
    nested blocks appear in each other's chains.
Domains
    Two dicts: names that match when the query *equals* them (``exact`` and ``suffix``
    indicators) and names that match when the query lies strictly *below* them (``suffix`` and
    ``subdomains``). A query is lower-cased, loses a trailing dot (IDNA-encoded when not ASCII)
    and then probes the first dict with the whole name and the second with the text after each
    dot: ``a.b.example.com`` probes ``b.example.com``, ``example.com`` and ``com``.
Fingerprints and URLs
    A dict from the lower-case JA3/JA3S/JA4 value (the exact URL text for ``url``) to rows.

Dict values and chains hold *row numbers*; a :class:`Hit` is materialised from the retained
Arrow columns on first use and cached, so building the index from two million rows costs about
a dict insert per row (no per-row objects) and later hits on the same indicator are free.
``at`` drops indicators whose ``expires`` is before it (NULL never expires; ``at=None`` does
not look at expiry). The index is immutable after construction; concurrent lookups from
several threads are safe (the cache fill is idempotent).
"""

from __future__ import annotations

import gc
import logging
import socket
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hopguard.intel.model import (
    MATCHES,
    Indicator,
    batch_of,
    fingerprint_kind,
    hash_value,
    indicator_id,
)

logger = logging.getLogger(__name__)

Rows = tuple[int, ...]
# Per /16 cut by interval boundaries: the boundaries inside it and the chains from its start.
Buckets = dict[int, tuple[list[bytes], list[Rows]]]

_AF4, _AF6 = socket.AF_INET, socket.AF_INET6
_pton = socket.inet_pton
# The first 96 bits of an IPv4-mapped IPv6 address (RFC 4291 section 2.5.5.2).
_MAPPED = bytes(10) + b"\xff\xff"
_FINGERPRINTS = ("ja3", "ja3s", "ja4")
_NO_ROWS: Rows = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """One indicator that matched a lookup (the fields of its ``indicator`` row)."""

    id: str
    feed: str
    kind: str
    value: str
    prefix: int | None
    match: str
    category: str
    label: str
    confidence: float
    source: str
    first_seen: datetime | None
    last_seen: datetime | None
    expires: datetime | None


_HIT_FIELDS = Hit.__dataclass_fields__.keys()
# What a Hit holds when the table has no such column (the Indicator defaults).
_DEFAULTS: dict[str, Any] = {"prefix": None, "match": "exact", "category": "",
                             "label": "", "confidence": 0.5, "source": "", "first_seen": None,
                             "last_seen": None, "expires": None}


def _cover_chains(nets: dict[tuple[int, int], Rows], width: int
                  ) -> tuple[list[int], list[Rows]]:
    """Elementary intervals of a set of CIDR blocks ``(network, prefix) -> rows``: sorted
    interval starts and, per interval, the rows of every block covering it, narrowest first.

    Blocks sorted by (start, prefix) arrive outermost first; a stack holds the open blocks
    (each with its full chain). A block that starts at or after the top's end closes the top
    and the interval from that end on is covered by the parent's chain again. Points are
    emitted in non-decreasing order; a later point at the same address replaces the earlier.
    """
    bounds: list[int] = [0]
    chains: list[Rows] = [_NO_ROWS]
    stack: list[tuple[int, Rows]] = []

    def emit(at: int, chain: Rows) -> None:
        if bounds[-1] == at:
            chains[-1] = chain
        else:
            bounds.append(at)
            chains.append(chain)

    for (start, plen), rows in sorted(nets.items()):
        while stack and stack[-1][0] <= start:
            end, _ = stack.pop()
            emit(end, stack[-1][1] if stack else _NO_ROWS)
        chain = rows + (stack[-1][1] if stack else _NO_ROWS)
        stack.append((start + (1 << (width - plen)), chain))
        emit(start, chain)
    while stack:
        end, _ = stack.pop()
        emit(end, stack[-1][1] if stack else _NO_ROWS)
    if bounds[-1] >> width:  # the end of the address space starts nothing
        del bounds[-1], chains[-1]
    return bounds, chains


def _packed(bounds: list[int], width: int) -> list[bytes]:
    return [b.to_bytes(width // 8, "big") for b in bounds]


def _buckets(bounds: list[int], chains: list[Rows]) -> tuple[list[Rows | None], Buckets]:
    """Elementary intervals of IPv4 split by the first 16 bits of the address: the chain of a
    /16 that no interval boundary cuts (most of them), else ``None`` and the /16's own short
    list of boundaries and chains. One list index replaces the first ~16 steps of a bisect,
    each of which is a cache miss on a big list of Python objects."""
    top: list[Rows | None] = []
    cut: Buckets = {}
    i, n = 0, len(bounds)
    for bucket in range(1 << 16):
        lo, hi = bucket << 16, (bucket + 1) << 16
        while i + 1 < n and bounds[i + 1] <= lo:
            i += 1
        j = i  # interval i covers lo; j the last one starting inside this /16
        while j + 1 < n and bounds[j + 1] < hi:
            j += 1
        if j == i:
            top.append(chains[i])
        else:
            top.append(None)
            cut[bucket] = (_packed(bounds[i + 1:j + 1], 32), chains[i:j + 1])
    return top, cut


def _group(keys: list[Any], rows: list[int], dup_keys: list[Any], dup_rows: list[int]
           ) -> dict[Any, Rows]:
    """``key -> rows``. Rows whose value is unique go in with one C-level ``dict(zip())``; the
    few whose value repeats (the same address in two feeds) are added one by one. Two values
    that differ as text but not as keys (``1.2.3.4`` and ``::ffff:1.2.3.4``) are caught by the
    size check and regrouped the slow way."""
    out: dict[Any, Rows] = dict(zip(keys, zip(rows, strict=True), strict=True))
    if len(out) < len(keys):
        out = {}
        dup_keys, dup_rows = keys + dup_keys, rows + dup_rows
    for key, row in zip(dup_keys, dup_rows, strict=True):
        out[key] = (*out.get(key, _NO_ROWS), row)
    return out


class IntelIndex:
    """Indicators indexed for microsecond lookups (see the module docstring)."""

    def __init__(self, tbl: pa.Table, feed: str) -> None:
        tbl = tbl.select([name for name in tbl.column_names if name in _HIT_FIELDS])
        columns = {name: tbl.column(name) for name in tbl.column_names}
        self._cols = columns
        # Hits are read from the record batches (aligned columns): indexing a plain Array is
        # twice as fast as indexing a ChunkedArray of many chunks.
        batches = tbl.to_batches()
        self._starts = list(accumulate((len(b) for b in batches[:-1]), initial=0))
        self._batches = [list(zip(b.schema.names, b.columns, strict=True)) for b in batches]
        self._feed = feed
        self._rows = len(columns["value"])
        self._cache: list[Hit | None] = [None] * self._rows
        exp = columns.get("expires")
        self._expiring = exp is not None and exp.null_count < len(exp)
        self.skipped = 0  # rows whose value is not a canonical indicator of their kind
        self._exact4: dict[bytes, Rows] = {}
        self._exact6: dict[bytes, Rows] = {}
        self._top4: list[Rows | None] = [_NO_ROWS] * (1 << 16)
        self._cut4: Buckets = {}
        self._bounds6: list[bytes] = [bytes(16)]
        self._chains6: list[Rows] = [_NO_ROWS]
        self._dself: dict[str, Rows] = {}
        self._dbelow: dict[str, Rows] = {}
        self._fp: dict[str, Rows] = {}
        self._url: dict[str, Rows] = {}
        self._build()

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_table(cls, tbl: pa.Table, *, feed: str = "") -> IntelIndex:
        """From rows with (a subset of) the ``indicator`` table's columns; ``kind`` and ``value``
        are required. A missing or NULL ``id`` is computed with ``indicator_id`` when a hit
        needs it; ``feed`` names the feed of a table without a feed column."""
        missing = {"kind", "value"} - set(tbl.column_names)
        if missing:
            raise ValueError(f"an indicator table needs the columns {sorted(missing)}")
        return cls(tbl, feed)

    @classmethod
    def from_indicators(cls, feed: str, items: Iterable[Indicator]) -> IntelIndex:
        """From Indicator values of one feed (tests, the CLI, small inline lists)."""
        return cls.from_table(batch_of(list(items)), feed=feed)

    def _where(self, kinds: tuple[str, ...], matches: tuple[str | None, ...] = ()
               ) -> tuple[list[int], list[str], set[int]]:
        """Row numbers and (non-NULL) values of the rows of some kinds (and domain matches:
        ``None`` stands for a NULL or absent ``match``, read as exact), and the rows among them
        whose value occurs more than once."""
        cols = self._cols
        mask = pc.and_(pc.is_in(cols["kind"], value_set=pa.array(kinds, pa.string())),
                       pc.is_valid(cols["value"]))
        if matches:
            have = cols.get("match")
            if have is None:
                if None not in matches:
                    return [], [], set()
            else:
                named = pc.is_in(have, value_set=pa.array([m for m in matches if m], pa.string()))
                if None in matches:
                    named = pc.or_(named, pc.is_null(have))
                mask = pc.and_(mask, named)
        rows = pc.indices_nonzero(pc.fill_null(mask, False))
        values = pc.take(cols["value"], rows)
        counts = pc.value_counts(values)
        repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        dups: set[int] = set()
        if len(repeated):
            at = pc.indices_nonzero(pc.is_in(values, value_set=repeated))
            dups = set(pc.take(rows, at).to_pylist())
        return rows.to_pylist(), values.to_pylist(), dups

    def _build(self) -> None:
        enabled = gc.isenabled()
        # Millions of small tuples would trigger the cyclic collector thousands of times
        # (each pass walking everything allocated so far); nothing built here is cyclic.
        gc.disable()
        try:
            self._build_ip()
            self._dself = self._grouped(("domain",), ("exact", "suffix", None))
            self._dbelow = self._grouped(("domain",), ("suffix", "subdomains"))
            self._fp = self._grouped(_FINGERPRINTS, lower=True)
            self._url = self._grouped(("url",))
        finally:
            if enabled:
                gc.enable()
        kind, match = self._cols["kind"], self._cols.get("match")
        if match is not None:  # domains with a match this index does not know
            odd = pc.and_(pc.equal(kind, "domain"),
                          pc.invert(pc.is_in(match, value_set=pa.array(MATCHES, pa.string()))))
            self.skipped += pc.sum(odd).as_py() or 0
        logger.debug("intel index: %d rows (%d skipped), %d v4 and %d v6 addresses, %d v4 /16s "
                     "cut by networks, %d v6 intervals", self._rows, self.skipped,
                     len(self._exact4), len(self._exact6), len(self._cut4), len(self._bounds6))

    def _grouped(self, kinds: tuple[str, ...], matches: tuple[str | None, ...] = (),
                 *, lower: bool = False) -> dict[str, Rows]:
        rows, values, dups = self._where(kinds, matches)
        if lower:
            values = [v.lower() for v in values]
        if not dups:
            return _group(values, rows, [], [])
        keys: list[str] = []
        krows: list[int] = []
        dkeys: list[str] = []
        drows: list[int] = []
        for row, value in zip(rows, values, strict=True):
            if row in dups:
                dkeys.append(value)
                drows.append(row)
            else:
                keys.append(value)
                krows.append(row)
        return _group(keys, krows, dkeys, drows)

    def _build_ip(self) -> None:
        lists: dict[int, tuple[list[bytes], list[int], list[bytes], list[int]]] = {
            4: ([], [], [], []), 6: ([], [], [], [])}
        keys4, rows4, dkeys4, drows4 = lists[4]
        nets4: dict[tuple[int, int], Rows] = {}
        nets6: dict[tuple[int, int], Rows] = {}
        skipped = 0
        rows, values, dups = self._where(("ip",))
        for row, value in zip(rows, values, strict=True):
            if "/" not in value and ":" not in value:  # most rows: one IPv4 address
                try:
                    key = _pton(_AF4, value)
                except (OSError, ValueError):
                    skipped += 1
                    continue
                if row in dups:
                    dkeys4.append(key)
                    drows4.append(row)
                else:
                    keys4.append(key)
                    rows4.append(row)
                continue
            addr, slash, plen_text = value.partition("/")
            try:
                if ":" in addr:
                    width, packed = 128, _pton(_AF6, addr)
                else:
                    width, packed = 32, _pton(_AF4, addr)
                plen = int(plen_text) if slash else width
            except (OSError, ValueError):
                skipped += 1
                continue
            if not 0 <= plen <= width:
                skipped += 1
                continue
            if width == 128 and plen >= 96 and packed[:12] == _MAPPED:
                width, plen, packed = 32, plen - 96, packed[12:]
            if plen == width:  # one address; the slow path of _group sorts out aliases
                _, _, dkeys, drows = lists[4 if width == 32 else 6]
                dkeys.append(packed)
                drows.append(row)
                continue
            host_bits = width - plen
            net = (int.from_bytes(packed, "big") >> host_bits << host_bits, plen)
            nets = nets4 if width == 32 else nets6
            nets[net] = (*nets.get(net, _NO_ROWS), row)
        self._exact4 = _group(*lists[4])
        self._exact6 = _group(*lists[6])
        self._top4, self._cut4 = _buckets(*_cover_chains(nets4, 32))
        bounds6, self._chains6 = _cover_chains(nets6, 128)
        self._bounds6 = _packed(bounds6, 128)
        self.skipped += skipped

    # -- lookups ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._rows

    def ip(self, addr: str, at: datetime | None = None) -> list[Hit]:
        """Indicators equal to or containing an address (IPv4 or IPv6; an IPv4-mapped IPv6
        address is its IPv4 address); exact addresses first, then networks narrowest first.
        Anything that is not an address matches nothing."""
        try:
            if ":" in addr:
                packed = _pton(_AF6, addr)
                if packed[:12] != _MAPPED:
                    rows = self._exact6.get(packed, _NO_ROWS) + self._chains6[
                        bisect_right(self._bounds6, packed) - 1]
                    return self._hits(rows, at) if rows else []
                packed = packed[12:]
            else:
                packed = _pton(_AF4, addr)
        except (OSError, ValueError, TypeError):
            return []
        bucket = packed[0] << 8 | packed[1]
        chain = self._top4[bucket]
        if chain is None:
            bounds, chains = self._cut4[bucket]
            chain = chains[bisect_right(bounds, packed)]
        rows = self._exact4.get(packed, _NO_ROWS) + chain
        return self._hits(rows, at) if rows else []

    def domain(self, name: str, at: datetime | None = None) -> list[Hit]:
        """Indicators matching a DNS name: ``exact`` the name itself, ``suffix`` the name and
        below, ``subdomains`` strictly below. Case and one or more trailing dots are ignored."""
        if not name.isascii():
            try:
                name = name.rstrip(".").encode("idna").decode("ascii")
            except UnicodeError:
                return []
        name = name.lower().rstrip(".")
        rows = self._dself.get(name, _NO_ROWS)
        below = self._dbelow
        dot = name.find(".")
        while dot >= 0:
            more = below.get(name[dot + 1:])
            if more:
                rows += more
            dot = name.find(".", dot + 1)
        return self._hits(rows, at) if rows else []

    def fingerprint(self, value: str, at: datetime | None = None, *,
                    kind: str | None = None) -> list[Hit]:
        """Indicators of a JA3, JA3S or JA4 fingerprint (case-insensitive); a JA3 and a JA3S
        look alike, so ``kind`` restricts the answer when the caller knows which it has."""
        rows = self._fp.get(value.strip().lower())
        if not rows:
            return []
        hits = self._hits(rows, at)
        return hits if kind is None else [h for h in hits if h.kind == kind]

    def url(self, value: str, at: datetime | None = None) -> list[Hit]:
        """Indicators of exactly this URL."""
        rows = self._url.get(value.strip())
        return self._hits(rows, at) if rows else []

    def lookup(self, value: str, at: datetime | None = None) -> list[Hit]:
        """Guess what ``value`` is (URL, address, fingerprint or domain name) and look it up."""
        text = value.strip()
        if not text:
            return []
        if "://" in text:
            return self.url(text, at)
        if ":" in text or text.replace(".", "").isdigit():
            return self.ip(text, at)
        if len(text) in (32, 36):  # the lengths of a JA3/JA3S hash and of a JA4 fingerprint
            try:
                return self.fingerprint(hash_value(fingerprint_kind(text), text), at)
            except ValueError:
                pass
        return self.domain(text, at)

    # -- hits ---------------------------------------------------------------------------

    def _hits(self, rows: Rows, at: datetime | None) -> list[Hit]:
        cache = self._cache
        hits: list[Hit] = []
        for row in rows:
            hit = cache[row]
            if hit is None:
                hit = cache[row] = self._hit(row)
            hits.append(hit)
        if at is None or not self._expiring:
            return hits
        if at.tzinfo is not None:  # the store's timestamps are naive UTC
            at = at.astimezone(UTC).replace(tzinfo=None)
        return [h for h in hits if h.expires is None or h.expires >= at]

    def _hit(self, row: int) -> Hit:
        at = bisect_right(self._starts, row) - 1
        row -= self._starts[at]
        fields: dict[str, Any] = dict.fromkeys(_HIT_FIELDS)
        for name, col in self._batches[at]:
            fields[name] = col[row].as_py()
        if fields["feed"] is None:
            fields["feed"] = self._feed
        for name, default in _DEFAULTS.items():
            if fields[name] is None:
                fields[name] = default
        if not fields["id"]:
            fields["id"] = indicator_id(fields["feed"], fields["kind"], fields["value"],
                                        fields["match"])
        return Hit(**fields)
