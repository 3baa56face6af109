"""Feed readers: threat-intelligence files in, Arrow batches of canonical indicators out.

Theory of operation. ``read_feed(path, fmt, options, error)`` picks the reader for ``fmt`` (one
of :data:`FORMATS`; ``sniff`` guesses it from a file's first bytes) and yields tables in
``intel.model.BATCH_SCHEMA`` of at most :data:`BATCH_ROWS` rows. Every value in them is already
canonical (``ip_value``, ``domain_value``, ``hash_value``), so the store can upsert by id and
the matchers can join on plain equality. A reader has three outcomes per record: indicators, a
located *error* (``error(SourceLocation, message)``: the record cannot be used; the rest of
the file goes on), or a located *note* (``note``: the record is valid but deliberately not
imported, such as a revoked STIX indicator or a MISP attribute without ``to_ids``). A file that
is not the format at all gives one error and no rows; no reader raises for bad input.

Where the facts come from. Options (:class:`FeedOptions`) override what a feed says for every
row it yields; unset options leave the feed's own values or the reader's defaults. The readers
for structured feeds live next door (``tor.py``: consensus, microdesc consensus, TorDNSEL,
Onionoo; ``stix.py``; ``misp.py``) and use the helpers here (:class:`ReadContext`,
``parse_time``, ``category_from_words``, ``url_indicators``, ``batches``).

The plain lists (``ip-list``, ``domain-list``) are the large ones (blocklists of a million
lines), and calling ``ipaddress`` or ``domain_value`` per line costs 4-20 us. So they take a
vectorised *fast path*: the file is cut into blocks of whole lines, each block becomes one Arrow
string column, and ``pyarrow.compute`` regexes (RE2) split off comments and accept the shapes
that are canonical as written: a dotted-quad IPv4 address without leading zeros, optionally
with a prefix length whose host bits are then cleared with numpy; an IPv6 address already in
RFC 5952 form; an ASCII domain (lower-cased), bare or after a ``*.``, ``.``, ``||`` or
hosts-file prefix. Of the ip lines the fast regexes reject, only the first field goes
through Python (IPv6 through the C library's inet_pton/inet_ntop, the rest through the
model's normaliser, which writes the error message); rejected domain lines go through
``domain_list_line`` whole. The Python reference readers (``ip_list_line``,
``domain_list_line``) define the result: a property test holds the fast path to them line
for line, so it is purely an optimisation.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
import socket
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from hopguard.errors import ConfigError, SourceLocation
from hopguard.intel.model import (
    BATCH_SCHEMA,
    CATEGORIES,
    MATCHES,
    Indicator,
    batch_of,
    domain_value,
    fingerprint_kind,
    hash_value,
    ip_value,
)

logger = logging.getLogger(__name__)

FORMATS = ("tor-consensus", "tor-microdesc", "tordnsel", "onionoo", "ip-list", "domain-list",
           "fingerprint-csv", "stix", "misp")
_DESCRIPTIONS = {
    "tor-consensus": "Tor consensus (dir-spec v3): relay addresses, tor_exit when Exit and "
                     "not BadExit",
    "tor-microdesc": "Tor microdesc-flavour consensus (the same, r lines without a digest)",
    "tordnsel": "TorDNSEL exit list (ExitNode/ExitAddress lines): observed exits, tor_exit",
    "onionoo": "Onionoo details document (JSON): relays' OR and exit addresses",
    "ip-list": "one IPv4/IPv6 address or CIDR network per line; # and ; comments, ip,comment CSV",
    "domain-list": "one domain per line: name, *.name, .name, hosts-file and adblock ||name^",
    "fingerprint-csv": "JA3/JA3S/JA4 fingerprints as CSV with a label (abuse.ch SSLBL JA3 shape)",
    "stix": "STIX 2.1 bundle: indicator patterns on IPv4/IPv6 addresses, domain names, URLs",
    "misp": "MISP event JSON: ip, domain, hostname, url and ja3 attributes flagged to_ids",
}
BATCH_ROWS = 100_000
# Plain lists are read in blocks of whole lines: bounded memory, and big enough that the
# per-block cost of the Arrow calls is small next to the per-line cost.
BLOCK_BYTES = 8 << 20
MAX_LINE_BYTES = 1 << 20  # a longer "line" is not a list entry (and must not grow a buffer)
# TorDNSEL and Onionoo say when an exit was last seen, not how long that holds. Exit lists are
# refreshed hourly and a relay leaves the consensus within hours of going away, so two days
# covers a missed refresh or two without keeping departed relays for long.
TOR_LIFETIME = timedelta(days=2)
TOR_CONFIDENCE = 0.9  # published by the Tor directory authorities / Tor Project's exit scanner
LIST_CONFIDENCE = 0.5
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"

ErrorSink = Callable[[SourceLocation, str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedOptions:
    """What the importer says about a feed; ``None`` leaves what the feed (or the reader's
    default) says. A set value applies to every row the feed yields."""

    category: str | None = None  # one of intel.model.CATEGORIES
    confidence: float | None = None  # 0.0-1.0
    source: str | None = None
    label: str | None = None
    expires: datetime | None = None  # naive UTC, or aware (converted)
    # How plain domain entries ("example.com", hosts-file names) match: exact (the default),
    # suffix (the name and below) or subdomains. Entries that say it ("*.x", ".x", "||x^")
    # keep their own.
    domain_match: str | None = None
    # MISP: import only attributes flagged for detection (``to_ids``), as MISP's own IDS
    # exports do; the others are skipped and counted as notes.
    require_to_ids: bool = True

    def __post_init__(self) -> None:
        if self.category is not None and self.category not in CATEGORIES:
            raise ConfigError(f"unknown indicator category {self.category!r} "
                              f"(one of {', '.join(CATEGORIES)})")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ConfigError(f"confidence must be between 0 and 1, not {self.confidence}")
        if self.domain_match is not None and self.domain_match not in MATCHES:
            raise ConfigError(f"unknown domain match {self.domain_match!r} "
                              f"(one of {', '.join(MATCHES)})")


def _log_note(location: SourceLocation, message: str) -> None:
    logger.debug("skipped at %s: %s", location, message)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadContext:
    """One read of one file: where it is, the importer's options, the error and note sinks."""

    path: Path
    options: FeedOptions
    error: ErrorSink
    note: ErrorSink = _log_note

    def at_line(self, line: int) -> SourceLocation:
        return SourceLocation(path=str(self.path), line=line)

    def at_record(self, record: int) -> SourceLocation:
        return SourceLocation(path=str(self.path), record=record)

    def whole(self) -> SourceLocation:
        return SourceLocation(path=str(self.path))

    def make(self, *, kind: str, value: str, category: str, line: int, prefix: int | None = None,
             match: str = "exact", label: str = "", confidence: float = LIST_CONFIDENCE,
             source: str = "", first_seen: datetime | None = None,
             last_seen: datetime | None = None, expires: datetime | None = None,
             detail: str = "") -> Indicator:
        """An indicator with the importer's options laid over what the feed says."""
        o = self.options
        return Indicator(
            kind=kind, value=value, prefix=prefix, match=match,
            category=o.category if o.category is not None else category,
            label=o.label if o.label is not None else label,
            confidence=o.confidence if o.confidence is not None else confidence,
            source=o.source if o.source is not None else source,
            first_seen=first_seen, last_seen=last_seen,
            expires=utc(o.expires) if o.expires is not None else expires,
            detail=detail, line=line)


# -- shared helpers -----------------------------------------------------------------------

def utc(dt: datetime) -> datetime:
    """A datetime as naive UTC (the store's convention); naive input is taken as UTC."""
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


_ZONE = re.compile(r"%[^/]*")


def address_value(text: str) -> tuple[str, int]:
    """``model.ip_value`` with an IPv6 zone (``fe80::1%eth0/64``) dropped from networks too
    (ip_value drops it from addresses only, and a zone is local to the host that wrote it).
    Raises ValueError."""
    t = text.strip()
    if "%" in t and "/" in t:
        t = _ZONE.sub("", t, count=1)
    return ip_value(t)


_EPOCH = datetime(1970, 1, 1)


def parse_time(text: str | int | float) -> datetime:
    """Naive UTC from ISO 8601 (``T`` or space, optional fraction, ``Z`` or offset) or epoch
    seconds (as a number or digits, as MISP writes them). Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError(f"not a time: {text!r}")
    if isinstance(text, int | float):
        return _EPOCH + timedelta(seconds=float(text))
    s = text.strip()
    if s.isdigit() and len(s) <= 12:
        return _EPOCH + timedelta(seconds=int(s))
    try:
        return utc(datetime.fromisoformat(s))
    except ValueError:
        raise ValueError(f"not a time: {s[:60]!r}") from None
    except OverflowError:  # an offset that pushes the year out of range
        raise ValueError(f"time out of range: {s[:60]!r}") from None


# Words in tags, labels and names that say what an indicator is. Tokens are the runs of
# letters, digits and '&' of the lower-cased text ("tor-exit-node" -> tor, exit, node).
_TOKEN = re.compile(r"[a-z0-9&]+")
_PROXY_WORDS = frozenset({"proxy", "proxies", "socks", "socks4", "socks5", "anonymizer"})
_TUNNEL_WORDS = frozenset({"tunnel", "tunnels", "tunneling", "tunnelling"})
_C2_WORDS = frozenset({"c2", "c&c", "cnc", "c2c"})


def category_from_words(texts: Iterable[str]) -> str | None:
    """The category a tag, label or name states by keyword, or None. Tor wins over the
    others (an address tagged "tor" and "c2" is most usefully a Tor node); "tor" is a relay
    unless "exit" is said too."""
    tokens: set[str] = set()
    phrases: list[str] = []
    for text in texts:
        words = _TOKEN.findall(text.lower())
        tokens.update(words)
        phrases.append(" ".join(words))
    if "tor" in tokens:
        return "tor_exit" if "exit" in tokens or "exits" in tokens else "tor_relay"
    if tokens & _C2_WORDS or ("botnet" in tokens and "cc" in tokens) or any(
            "command and control" in p for p in phrases):
        return "c2"
    if any("vpn" in t for t in tokens):
        return "vpn"
    if tokens & _PROXY_WORDS:
        return "proxy"
    if tokens & _TUNNEL_WORDS:
        return "tunnel"
    if "cdn" in tokens:
        return "cdn"
    return None


def host_indicator(host: str) -> tuple[str, str, int | None]:
    """``(kind, canonical value, prefix)`` of a host: an ip when it is an address literal,
    otherwise a domain (exact). Raises ValueError."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        value, prefix = address_value(h)
    except ValueError:
        return "domain", domain_value(h)[0], None
    if "/" in h:
        raise ValueError(f"a network is not a host: {host!r}")
    return "ip", value, prefix


def url_indicators(text: str) -> tuple[str, tuple[str, str, int | None]]:
    """A URL as ``(url value, host indicator)``: the URL with its scheme and host lower-cased
    (the rest is case-sensitive and kept), and the host as :func:`host_indicator` gives it
    (a matcher that sees only host names, such as TLS SNI or DNS, still matches). A URL
    without a scheme is read as ``http://``. Raises ValueError."""
    s = text.strip()
    if not s or any(c in s for c in " \t\r\n"):
        raise ValueError(f"not a URL: {s[:80]!r}")
    full = s if "://" in s else "http://" + s
    parts = urlsplit(full)
    host = parts.hostname
    if not parts.scheme or not host:
        raise ValueError(f"not a URL (no host): {s[:80]!r}")
    ind = host_indicator(host)
    if "://" in s:
        scheme, rest = s.split("://", 1)
        head, sep, tail = rest.partition("/")
        value = f"{scheme.lower()}://{head.lower()}{sep}{tail}"
    else:
        head, sep, tail = s.partition("/")
        value = f"{head.lower()}{sep}{tail}"
    return value, ind


def batches(items: Iterable[Indicator]) -> Iterator[pa.Table]:
    """Indicators in BATCH_SCHEMA tables of at most BATCH_ROWS rows."""
    chunk: list[Indicator] = []
    for it in items:
        chunk.append(it)
        if len(chunk) >= BATCH_ROWS:
            yield batch_of(chunk)
            chunk = []
    if chunk:
        yield batch_of(chunk)


def open_binary(path: Path) -> IO[bytes]:
    """The file for reading, gzip-decompressed when it starts with the gzip magic."""
    f = path.open("rb")
    if f.read(2) == GZIP_MAGIC:
        f.close()
        return cast(IO[bytes], gzip.open(path, "rb"))
    f.seek(0)
    return f


_READ_ERRORS = (OSError, EOFError, zlib.error)


def read_document(ctx: ReadContext) -> bytes | None:
    """The whole (decompressed) file, or None after one located error."""
    try:
        with open_binary(ctx.path) as f:
            data = f.read()
    except _READ_ERRORS as exc:
        ctx.error(ctx.whole(), f"cannot read the file: {exc}")
        return None
    return data[3:] if data.startswith(BOM) else data


def read_json(ctx: ReadContext) -> tuple[bool, Any]:
    """``(True, document)`` of a JSON feed, or ``(False, None)`` after one located error (the
    file cannot be read or is not JSON)."""
    data = read_document(ctx)
    if data is None:
        return False, None
    try:
        return True, orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        ctx.error(ctx.at_line(getattr(exc, "lineno", 1) or 1), f"not JSON: {exc}")
        return False, None


def text_lines(ctx: ReadContext) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a text feed (UTF-8, undecodable bytes replaced; line ends
    and a byte-order mark removed). A line longer than MAX_LINE_BYTES is one error and is
    skipped; a read failure is one located error and the end."""
    n = 0
    try:
        with open_binary(ctx.path) as f:
            while raw := f.readline(MAX_LINE_BYTES):
                n += 1
                if not raw.endswith(b"\n") and len(raw) >= MAX_LINE_BYTES:
                    ctx.error(ctx.at_line(n), f"line longer than {MAX_LINE_BYTES} bytes: "
                              "skipped")
                    while (more := f.readline(MAX_LINE_BYTES)) and not more.endswith(b"\n"):
                        pass
                    continue
                if n == 1 and raw.startswith(BOM):
                    raw = raw[3:]
                yield n, raw.decode("utf-8", "replace").rstrip("\r\n")
    except _READ_ERRORS as exc:
        ctx.error(ctx.at_line(n + 1), f"cannot read further: {exc}")


# -- plain lists: reference normalisers ----------------------------------------------------

_TRIM = " \t\r"
# ip-list: the first field ends at whitespace or a separator ('#' and ';' start comments, ','
# separates CSV columns); what follows, less leading separators, is kept as the label.
_IP_SEP = " \t#;,"
_IP_SEP_CLASS = "[ \t#;,]"
_IP_BODY_END = r"[ \t#;,].*$"
# A first line like "ip,comment" or "address" is a CSV header, not a broken entry.
_HEADER = re.compile(r"^[\"']?[A-Za-z][A-Za-z0-9_ -]*[\"']?$")
_IP_BODY_END_RE = re.compile(_IP_BODY_END)

# domain-list: '#' starts a comment at the start of a line or after whitespace (adblock
# element-hiding rules such as "example.com##.ad" contain '#' and are not domains).
_DOMAIN_COMMENT = re.compile(r"[ \t]#")
_SPACES = re.compile(r"[ \t]+")
# Names hosts files map for the machine itself (the standard /etc/hosts preamble); they are
# not indicators and are dropped wherever they appear.
HOSTS_BOILERPLATE = frozenset({
    "localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
    "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
    "ip6-allhosts", "0.0.0.0"})


def ip_list_line(text: str) -> tuple[str, int, str] | None:
    """One ip-list line as ``(canonical value, prefix, label)``, or None for a blank or
    comment line. The label is the text after the address and its separator (a trailing
    comment or the other CSV columns). Raises ValueError for a line that is not an address.
    This is the reference the vectorised path must agree with."""
    s = text.strip(_TRIM)
    body = _IP_BODY_END_RE.sub("", s, count=1)
    if not body:
        return None
    label = s[len(body):].lstrip(_IP_SEP)
    try:
        value, prefix = address_value(body.strip("\"'"))
    except ValueError:
        raise ValueError(f"not an IP address or network: {body[:80]!r}") from None
    return value, prefix, label


def _is_address(token: str) -> bool:
    try:
        address_value(token)
    except ValueError:
        return False
    return "/" not in token


def domain_list_line(text: str, default_match: str = "exact"
                     ) -> tuple[list[tuple[str, str]], str] | None:
    """One domain-list line as ``([(canonical domain, match), ...], label)``, or None for a
    blank, comment (``#``, ``;``, ``!``) or adblock header (``[Adblock Plus 2.0]``) line.

    Forms: ``example.com`` (``default_match``), ``*.example.com`` (subdomains),
    ``.example.com`` (suffix), ``||example.com^`` with optional ``$options`` (adblock: the name
    and below, so suffix), and hosts-file lines ``0.0.0.0 a.example b.example`` (one entry per
    name, ``default_match``). hosts-file preamble names (localhost...) give no entries. Raises
    ValueError for a line that is none of these (a URL, an adblock exception or path rule,
    two names without an address, a hosts-file line with a bad name). The label is the text
    of a trailing `` # comment``. This is the reference the vectorised path must agree
    with."""
    got = _domain_entries(text, default_match)
    if got is None:
        return None
    entries, label, problem = got
    if problem is not None:
        raise ValueError(problem)
    return entries, label


def _domain_entries(text: str, default_match: str
                    ) -> tuple[list[tuple[str, str]], str, str | None] | None:
    """``domain_list_line`` that also returns the good names of a hosts-file line with a bad
    one: ``(entries, label, error message or None)``."""
    s = text.strip(_TRIM)
    if not s or s[0] in "#;!" or (s[0] == "[" and s[-1] == "]"):
        return None
    m = _DOMAIN_COMMENT.search(s)
    if m is None:
        body, label = s, ""
    else:
        body, label = s[:m.start()].rstrip(" \t"), s[m.end():].strip(_TRIM)
    tokens = _SPACES.split(body)
    out: list[tuple[str, str]] = []
    if len(tokens) >= 2 and _is_address(tokens[0]):  # hosts file: address, then names
        bad: list[str] = []
        for name in tokens[1:]:
            try:
                value, match = domain_value(name)
            except ValueError:
                bad.append(name)
                continue
            if value not in HOSTS_BOILERPLATE:
                out.append((value, default_match if match == "exact" else match))
        problem = None
        if bad:
            problem = "not a domain name: " + ", ".join(repr(b[:80]) for b in bad[:5]) + (
                f" (the other {len(out)} names on the line were read)" if out else "")
        return out, label, problem
    try:
        if len(tokens) > 1:
            raise ValueError(f"more than one name and no address in front: {body[:80]!r}")
        token = tokens[0]
        if token.startswith("@@"):
            raise ValueError(f"an adblock exception rule, not an indicator: {token[:80]!r}")
        if token.startswith("||"):
            rest = token[2:].split("$", 1)[0].rstrip("^")
            if not rest or rest[0] in ".*" or any(c in rest for c in "/^*|:"):
                raise ValueError(f"an adblock rule that is not a plain domain: {token[:80]!r}")
            value, _ = domain_value(rest)
            match = "suffix"
        else:
            if "://" in token or "/" in token:
                raise ValueError(f"a URL or path, not a domain name: {token[:80]!r}")
            value, match = domain_value(token)
            if match == "exact":
                match = default_match
    except ValueError as exc:
        return [], label, str(exc)
    if value in HOSTS_BOILERPLATE:
        return [], label, None
    return [(value, match)], label, None


# -- plain lists: blocks and the vectorised path -------------------------------------------

@dataclass(slots=True)
class _ListState:
    """Mutable state across the blocks of one list file."""

    first_data_line: int | None = None


def _blocks(ctx: ReadContext) -> Iterator[tuple[int, str]]:
    """``(number of the first line, text of whole lines joined by '\\n')`` per block."""
    line = 1
    carry = b""
    skipping = False  # inside a line longer than MAX_LINE_BYTES: drop up to its end
    first = True
    try:
        with open_binary(ctx.path) as f:
            while True:
                block = f.read(BLOCK_BYTES)
                if first:
                    first = False
                    if block.startswith(BOM):
                        block = block[3:]
                    if b"\x00" in block[:65536]:
                        ctx.error(ctx.at_line(1), "binary data (NUL bytes), not a text list")
                        return
                if not block:
                    if carry and not skipping:
                        yield line, carry.decode("utf-8", "replace")
                    return
                buf = carry + block
                cut = buf.rfind(b"\n")
                if skipping:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        carry = b""
                        continue
                    buf, cut, skipping = buf[nl + 1:], cut - nl - 1, False
                    line += 1
                if cut < 0:
                    if len(buf) > MAX_LINE_BYTES:
                        ctx.error(ctx.at_line(line),
                                  f"line longer than {MAX_LINE_BYTES} bytes: skipped")
                        skipping, carry = True, b""
                    else:
                        carry = buf
                    continue
                piece, carry = buf[:cut], buf[cut + 1:]
                yield line, piece.decode("utf-8", "replace")
                line += piece.count(b"\n") + 1
    except _READ_ERRORS as exc:
        ctx.error(ctx.at_line(line), f"cannot read further: {exc}")


def _split_lines(text: str) -> pa.Array:
    return pc.list_flatten(pc.split_pattern(pa.array([text], pa.string()), "\n"))


def _trim(arr: pa.Array, chars: str = _TRIM) -> pa.Array:
    return pc.utf8_trim(arr, characters=chars)


def _const(value: object, n: int, typ: pa.DataType) -> pa.Array:
    if value is None:
        return pa.nulls(n, typ)
    return pa.repeat(pa.scalar(value, typ), n)


def _fast_table(ctx: ReadContext, *, kind: str, values: pa.Array, prefixes: pa.Array | None,
                matches: pa.Array | str, labels: pa.Array, records: np.ndarray,
                category: str, source: str) -> pa.Table:
    """A BATCH_SCHEMA table for rows the vectorised path accepted (options laid over)."""
    o = ctx.options
    n = len(values)
    match_col = _const(matches, n, pa.string()) if isinstance(matches, str) else matches
    label_col = _const(o.label, n, pa.string()) if o.label is not None else labels
    expires = utc(o.expires) if o.expires is not None else None
    cols = {
        "kind": _const(kind, n, pa.string()),
        "value": values.cast(pa.string()),
        "prefix": prefixes if prefixes is not None else pa.nulls(n, pa.int32()),
        "match": match_col.cast(pa.string()),
        "category": _const(o.category or category, n, pa.string()),
        "label": label_col.cast(pa.string()),
        "confidence": _const(o.confidence if o.confidence is not None else LIST_CONFIDENCE,
                             n, pa.float64()),
        "source": _const(o.source if o.source is not None else source, n, pa.string()),
        "first_seen": pa.nulls(n, pa.timestamp("us")),
        "last_seen": pa.nulls(n, pa.timestamp("us")),
        "expires": _const(expires, n, pa.timestamp("us")),
        "detail": _const("", n, pa.string()),
        "record": pa.array(records, pa.int64()),
    }
    return pa.table(cols, schema=BATCH_SCHEMA)


def _replace_where(arr: pa.Array, mask: pa.Array, pattern: str,
                   otherwise: str | None = None) -> pa.Array:
    """``arr`` with the first match of ``pattern`` removed in the rows ``mask`` selects (the
    other rows keep their text, or become ``otherwise``). Regex replacement is the costly
    step, so it only runs on the rows that need it."""
    base = arr if otherwise is None else _const(otherwise, len(arr), pa.string())
    if not pc.any(mask).as_py():
        return base
    done = pc.replace_substring_regex(pc.filter(arr, mask), pattern, "", max_replacements=1)
    return pc.replace_with_mask(base, mask, done)


def _slices(table: pa.Table) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, BATCH_ROWS):
        yield table.slice(start, BATCH_ROWS)


def _mask_indices(mask: pa.Array) -> np.ndarray:
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_FAST = rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(?:3[0-2]|[12]?[0-9]))?$"


# IPv6 written the way ipaddress writes it (RFC 5952): lower-case groups without leading
# zeros, and "::" for the one run of two or more zero groups when no other zero groups touch.
# Addresses starting with "::" (loopback, IPv4-mapped: written differently by Python 3.13)
# and anything else go the Python way.
_HEX = r"(?:0|[1-9a-f][0-9a-f]{0,3})"
_V6_FULL = rf"^{_HEX}(?::{_HEX}){{7}}$"
_V6_SHORT = rf"^{_HEX}(?::{_HEX}){{0,5}}::(?:{_HEX}(?::{_HEX}){{0,5}})?$"
_V6_ZERO_RUN = r"(?:^|:)0:0(?::|$)|(?:^|:)0::|::0(?::|$)"


def _v6_canonical(texts: pa.Array) -> pa.Array:
    """Which texts are IPv6 addresses already in canonical form (see _V6_SHORT)."""
    colon = pc.match_substring(texts, ":")
    if not pc.any(colon).as_py():
        return colon
    short = pc.match_substring_regex(texts, _V6_SHORT)
    # groups in a "::" form: one per colon, less one when it ends in "::"; at most six, so
    # that "::" stands for two or more zero groups
    groups = pc.subtract(pc.count_substring(texts, ":"),
                         pc.cast(pc.ends_with(texts, "::"), pa.int32()))
    short = pc.and_(short, pc.less_equal(groups, 6))
    form = pc.or_(short, pc.match_substring_regex(texts, _V6_FULL))
    return pc.and_(pc.and_(colon, form),
                   pc.invert(pc.match_substring_regex(texts, _V6_ZERO_RUN)))


def _v4_networks(texts: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Canonical ``a.b.c.d/n`` (host bits cleared; /32 as the bare address) and prefixes for
    dotted-quad texts with a prefix that the fast regex accepted."""
    parts = pc.split_pattern(texts, "/", max_splits=1)
    prefix = pc.cast(pc.list_element(parts, 1), pa.int64()).to_numpy()
    quads = pc.split_pattern(pc.list_element(parts, 0), ".")
    octets = pc.cast(pc.list_flatten(quads), pa.int64()).to_numpy().reshape(-1, 4).astype(
        np.uint64)
    addr = (octets[:, 0] << 24) | (octets[:, 1] << 16) | (octets[:, 2] << 8) | octets[:, 3]
    mask = (np.uint64(0xFFFFFFFF) << (32 - prefix).astype(np.uint64)) & np.uint64(0xFFFFFFFF)
    net = addr & mask
    dotted = pc.binary_join_element_wise(
        *[pc.cast(pa.array((net >> np.uint64(s)) & np.uint64(255)), pa.string())
          for s in (24, 16, 8, 0)], ".")
    with_len = pc.binary_join_element_wise(dotted, pc.cast(pa.array(prefix), pa.string()), "/")
    full = pa.array(prefix == 32)
    return pc.if_else(full, dotted, with_len), pa.array(prefix, pa.int32())


def _ip_block(ctx: ReadContext, state: _ListState, first_line: int, text: str, *,
              fast: bool = True) -> Iterator[pa.Table]:
    """The indicators of one block of an ip list (the fast path, then the rejected lines)."""
    lines = _split_lines(text)
    s = _trim(lines)
    body, label_all = _ip_fields(s)
    data = pc.not_equal(body, "")
    data_at = _mask_indices(data)
    if state.first_data_line is None and len(data_at):
        state.first_data_line = first_line + int(data_at[0])
    source = str(ctx.path)
    accept = pc.and_(data, pc.or_(pc.match_substring_regex(body, _V4_FAST),
                                  _v6_canonical(body))) if fast else None
    if accept is not None and pc.any(accept).as_py():
        rows = _mask_indices(accept)
        b = pc.filter(body, accept)
        lbl = pc.filter(label_all, accept)
        slash = pc.match_substring(b, "/")  # only IPv4 networks are accepted here
        prefixes = pc.if_else(pc.match_substring(b, ":"), 128, 32).cast(pa.int32())
        if pc.any(slash).as_py():
            nets, lens = _v4_networks(pc.filter(b, slash))
            b = pc.replace_with_mask(b, slash, nets)
            prefixes = pc.replace_with_mask(prefixes, slash, lens)
        yield from _slices(_fast_table(
            ctx, kind="ip", values=b, prefixes=prefixes, matches="exact", labels=lbl,
            records=rows + first_line, category="ioc", source=source))
        rest = pc.and_(data, pc.invert(accept))
    else:
        rest = data
    rest_at = _mask_indices(rest)
    if not len(rest_at):
        return
    if not fast:  # the reference: whole lines through ip_list_line
        slow: list[Indicator] = []
        for i, raw in zip(rest_at, pc.filter(s, rest).to_pylist(), strict=True):
            n = first_line + int(i)
            try:
                got = ip_list_line(raw)
            except ValueError as exc:
                if not _is_header(state, n, _IP_BODY_END_RE.sub("", raw, count=1)):
                    ctx.error(ctx.at_line(n), str(exc))
                continue
            if got is not None:
                value, prefix, label = got
                slow.append(ctx.make(kind="ip", value=value, prefix=prefix, category="ioc",
                                     label=label, source=source, line=n))
        yield from batches(slow)
        return
    # The rest of the fast path: body and label split off by the same regexes for all rows,
    # and only the address itself canonicalised in Python (IPv6 by the C library, see
    # _ip_text), straight into columns.
    rest_labels = pc.filter(label_all, rest).to_pylist()
    values: list[str] = []
    prefixes_out: list[int] = []
    labels: list[str] = []
    records: list[int] = []
    for i, b, label in zip(rest_at, pc.filter(body, rest).to_pylist(), rest_labels,
                           strict=True):
        n = first_line + int(i)
        try:
            value, prefix = _ip_text(b)
        except ValueError as exc:
            if not _is_header(state, n, b):
                ctx.error(ctx.at_line(n), str(exc))
            continue
        values.append(value)
        prefixes_out.append(prefix)
        labels.append(label)
        records.append(n)
    if values:
        yield from _slices(_fast_table(
            ctx, kind="ip", values=pa.array(values, pa.string()),
            prefixes=pa.array(prefixes_out, pa.int32()), matches="exact",
            labels=pa.array(labels, pa.string()), records=np.array(records, np.int64),
            category="ioc", source=source))


def _ip_fields(s: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(first field, label) of trimmed ip-list lines, as ``ip_list_line`` splits them. Most
    lines are a bare address, so the split only runs where a separator is."""
    has_sep = pc.match_substring_regex(s, _IP_SEP_CLASS)
    if not pc.any(has_sep).as_py():
        return s, _const("", len(s), pa.string())
    parts = pc.split_pattern_regex(pc.filter(s, has_sep), _IP_SEP_CLASS, max_splits=1)
    body = pc.replace_with_mask(s, has_sep, pc.list_element(parts, 0))
    label = pc.replace_with_mask(_const("", len(s), pa.string()), has_sep,
                                 pc.utf8_ltrim(pc.list_element(parts, 1), characters=_IP_SEP))
    return body, label


def _is_header(state: _ListState, line: int, body: str) -> bool:
    """A first data line such as ``ip,comment`` is a CSV header, not a broken entry."""
    return line == state.first_data_line and _HEADER.match(body) is not None


def _ip_text(body: str) -> tuple[str, int]:
    """``address_value`` of an ip-list line's first field (quotes stripped). A plain IPv6 address
    goes through inet_pton/inet_ntop, ten times faster than ``ipaddress``; glibc's inet_ntop
    writes the RFC 5952 form ``ipaddress`` does (lower case, the first longest run of two or
    more zero groups as ``::``) except for embedded IPv4, which is left to ``ipaddress``.
    The property tests hold the two to the same output."""
    text = body.strip("\"'")
    if ":" in text and "/" not in text and "%" not in text and "." not in text:
        try:
            out = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
        except OSError:
            pass
        else:
            if "." not in out:
                return out, 128
    try:
        return address_value(text)
    except ValueError:
        raise ValueError(f"not an IP address or network: {body[:80]!r}") from None


_LABEL_RE = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN_FAST = rf"^(?:{_LABEL_RE}\.)*{_LABEL_RE}$"
_DOMAIN_MARK = r"^(?:\*\.|\.|\|\||(?:0\.0\.0\.0|127\.0\.0\.1)[ \t]+)"


def _domain_block(ctx: ReadContext, first_line: int, text: str, *,
                  fast: bool = True) -> Iterator[pa.Table]:
    """The indicators of one block of a domain list (the fast path, then the rest)."""
    default_match = ctx.options.domain_match or "exact"
    lines = _split_lines(text)
    s = _trim(lines)
    skip = pc.or_(pc.or_(pc.equal(s, ""), pc.match_substring_regex(s, r"^[#;!]")),
                  pc.and_(pc.starts_with(s, "["), pc.ends_with(s, "]")))
    data = pc.invert(skip)
    source = str(ctx.path)
    accept = None
    if fast and pc.any(data).as_py():
        has_comment = pc.match_substring_regex(s, r"[ \t]#")
        body = pc.utf8_rtrim(_replace_where(s, has_comment, r"[ \t]#.*$"), characters=" \t")
        low = pc.ascii_lower(body)
        # Strip the entry's marker: "*." / "||" / "." by position, a hosts-file address by
        # regex on the few lines that have one.
        star = pc.starts_with(low, "*.")
        adblock = pc.starts_with(low, "||")
        dot = pc.starts_with(low, ".")
        hosts = pc.match_substring_regex(low, r"^(?:0\.0\.0\.0|127\.0\.0\.1)[ \t]")
        name = pc.if_else(pc.or_(star, adblock), pc.utf8_slice_codeunits(low, 2),
                          pc.if_else(dot, pc.utf8_slice_codeunits(low, 1), low))
        name = _replace_where(name, hosts, _DOMAIN_MARK)
        name = pc.if_else(adblock, pc.utf8_rtrim(name, characters="^"), name)
        name = pc.utf8_rtrim(name, characters=".")
        good = pc.and_(pc.match_substring_regex(name, _DOMAIN_FAST),
                       pc.less_equal(pc.binary_length(name), 253))
        good = pc.and_(good, pc.invert(pc.match_substring_regex(name, r"(?:^|\.)[0-9]+$")))
        accept = pc.and_(data, good)
        boiler = pc.and_(accept, pc.is_in(name, value_set=pa.array(sorted(HOSTS_BOILERPLATE))))
        keep = pc.and_(accept, pc.invert(boiler))
        if pc.any(keep).as_py():
            rows = _mask_indices(keep)
            match = pc.if_else(star, "subdomains",
                               pc.if_else(pc.or_(dot, adblock), "suffix", default_match))
            kept = pc.filter(s, keep)
            comment = _trim(_replace_where(kept, pc.filter(has_comment, keep), r"^.*?[ \t]#",
                                           otherwise=""))
            yield from _slices(_fast_table(
                ctx, kind="domain", values=pc.filter(name, keep), prefixes=None,
                matches=pc.filter(match, keep), labels=comment,
                records=rows + first_line, category="ioc", source=source))
    rest = data if accept is None else pc.and_(data, pc.invert(accept))
    slow: list[Indicator] = []
    for i, raw in zip(_mask_indices(rest), pc.filter(s, rest).to_pylist(), strict=True):
        n = first_line + int(i)
        got = _domain_entries(raw, default_match)
        if got is None:
            continue
        entries, label, problem = got
        if problem is not None:
            ctx.error(ctx.at_line(n), problem)
        for value, match in entries:
            slow.append(ctx.make(kind="domain", value=value, match=match, category="ioc",
                                 label=label, source=source, line=n))
    yield from batches(slow)


def _read_ip_list(ctx: ReadContext) -> Iterator[pa.Table]:
    """ip-list: one IPv4/IPv6 address or CIDR network per line. ``#`` and ``;`` start
    comments; blank lines are skipped; text after the address (a trailing comment, or the
    other columns of an ``ip,comment`` CSV line) becomes the label; a first line such as
    ``ip,comment`` is a header. Category ioc unless the options say otherwise."""
    state = _ListState()
    for first_line, text in _blocks(ctx):
        yield from _ip_block(ctx, state, first_line, text)


def _read_domain_list(ctx: ReadContext) -> Iterator[pa.Table]:
    """domain-list: one domain per line in the forms :func:`domain_list_line` reads; the
    text of a trailing ``# comment`` becomes the label. Category ioc unless the options say
    otherwise; plain entries match exactly unless ``FeedOptions.domain_match`` says."""
    for first_line, text in _blocks(ctx):
        yield from _domain_block(ctx, first_line, text)


# -- fingerprint CSV -----------------------------------------------------------------------

_JA3_SHAPE = re.compile(r"^[0-9A-Fa-f]{32}$")
_JA4_SHAPE = re.compile(r"^[tqdTQD][0-9A-Za-z]{2}[diDI][0-9]{4}[0-9A-Za-z]{2}_[0-9A-Fa-f]{12}_"
                        r"[0-9A-Fa-f]{12}$")
_DATE_SHAPE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?)?$")
_FP_NAMES = ("ja3", "ja4", "fingerprint", "hash", "md5", "digest")
_LABEL_NAMES = ("label", "reason", "name", "desc", "malware", "family", "threat", "tool",
                "comment", "application", "client", "software", "tag")


def _fp_shaped(value: str) -> bool:
    v = value.strip()
    return bool(_JA3_SHAPE.match(v) or _JA4_SHAPE.match(v))


@dataclass(frozen=True, slots=True)
class _CsvRoles:
    """Which column holds what, from a header (None: find by value shape per row)."""

    fingerprint: int | None = None
    kind: str | None = None  # ja3, ja3s or ja4 as the fingerprint column's name says
    kind_column: int | None = None  # a per-row type/kind column
    label: int | None = None
    first_seen: int | None = None
    last_seen: int | None = None
    category: int | None = None
    confidence: int | None = None


def _roles_from_header(names: list[str]) -> _CsvRoles | None:
    low = [n.strip().strip("#").strip().lower() for n in names]
    fp = next((i for i, n in enumerate(low) if any(w in n for w in _FP_NAMES)), None)
    if fp is None:
        return None
    name = low[fp]
    kind = "ja3s" if "ja3s" in name else "ja4" if "ja4" in name else "ja3" if "ja3" in name \
        else None

    def find(pred: Callable[[str], bool]) -> int | None:
        return next((i for i, n in enumerate(low) if i != fp and pred(n)), None)

    kind_column = find(lambda n: n in ("type", "kind", "fingerprint_type"))
    first_seen, last_seen = find(lambda n: "first" in n), find(lambda n: "last" in n)
    category, confidence = find(lambda n: n == "category"), find(lambda n: "confidence" in n)
    taken = {fp, kind_column, first_seen, last_seen, category, confidence}
    label = find(lambda n: any(w in n for w in _LABEL_NAMES))
    if label is None:  # else the first column with no other role
        label = next((i for i in range(len(low)) if i not in taken), None)
    return _CsvRoles(fingerprint=fp, kind=kind, kind_column=kind_column, label=label,
                     first_seen=first_seen, last_seen=last_seen, category=category,
                     confidence=confidence)


def _delimiter(line: str) -> str:
    for d in (",", "\t", ";"):
        if d in line:
            return d
    return ","


def _read_fingerprint_csv(ctx: ReadContext) -> Iterator[pa.Table]:
    """fingerprint-csv: JA3, JA3S or JA4 fingerprints, one per row, with optional label and
    first/last-seen columns. Comments start with ``#``; a header (a first row, or a comment
    line such as abuse.ch SSLBL's ``# ja3_md5,Firstseen,Lastseen,Listingreason``) names the
    columns; without one the fingerprint is the first field shaped like one, dates are the
    date-shaped fields in order and the label the first other text. The kind is the
    header's (``ja3s`` columns) or the value's shape (JA3 and JA3S hashes look alike: a
    list of server hashes needs a header that says ja3s). Category: a category column, else
    keywords in the label (:func:`category_from_words`), else ioc."""
    yield from batches(_fingerprint_rows(ctx))


def _csv_fields(line: str, delimiter: str) -> list[str]:
    """One CSV row; ValueError for what the csv module rejects (a stray CR, say)."""
    try:
        return next(csv.reader([line], delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        raise ValueError(f"not a CSV row: {exc}") from None


def _comment_header(line: str) -> _CsvRoles | None:
    """Column roles from a comment line that is a header (SSLBL's "# ja3_md5,Firstseen,...")."""
    try:
        fields = _csv_fields(line.lstrip("# "), ",")
    except ValueError:
        return None
    if any(_fp_shaped(f) for f in fields):
        return None
    return _roles_from_header(fields)


def _fingerprint_rows(ctx: ReadContext) -> Iterator[Indicator]:
    roles: _CsvRoles | None = None
    delim = ","
    started = False
    source = str(ctx.path)
    for n, line in text_lines(ctx):
        s = line.strip()
        if not s:
            continue
        try:
            if s.startswith("#"):
                if not started and "," in s:
                    roles = _comment_header(s) or roles
                continue
            fields = _csv_fields(s, delim if started else _delimiter(s))
            if not started:
                started = True
                delim = _delimiter(s)
                if not any(_fp_shaped(f) for f in fields):
                    found = _roles_from_header(fields)
                    if found is not None:
                        roles = found
                        continue
            yield _fingerprint_row(ctx, roles, fields, n, source)
        except ValueError as exc:
            ctx.error(ctx.at_line(n), str(exc))


def _fingerprint_row(ctx: ReadContext, roles: _CsvRoles | None, fields: list[str], n: int,
                     source: str) -> Indicator:
    def col(i: int | None) -> str:
        return fields[i].strip() if i is not None and i < len(fields) else ""

    fp = roles.fingerprint if roles is not None else None
    if fp is None or fp >= len(fields):
        fp = next((i for i, f in enumerate(fields) if _fp_shaped(f)), None)
        if fp is None:
            raise ValueError("no JA3 or JA4 fingerprint in the row")
    raw = fields[fp].strip()
    kind = roles.kind if roles is not None and roles.kind is not None else None
    if roles is not None and roles.kind_column is not None:
        k = col(roles.kind_column).lower()
        kind = k if k in ("ja3", "ja3s", "ja4") else kind
    kind = kind or fingerprint_kind(raw)
    value = hash_value(kind, raw)
    first = last = None
    label = ""
    category = None
    confidence = LIST_CONFIDENCE
    if roles is not None and roles.fingerprint is not None:
        label = col(roles.label)
        first = _maybe_time(col(roles.first_seen))
        last = _maybe_time(col(roles.last_seen))
        c = col(roles.category).lower()
        category = c if c in CATEGORIES else None
        conf = col(roles.confidence)
        if conf:
            confidence = _confidence_value(conf)
    else:
        dates = [t for i, f in enumerate(fields) if i != fp
                 if (t := _maybe_time(f.strip())) is not None]
        first = dates[0] if dates else None
        last = dates[1] if len(dates) > 1 else first
        label = next((f.strip() for i, f in enumerate(fields) if i != fp and f.strip()
                      and not _DATE_SHAPE.match(f.strip())
                      and not f.strip().replace(".", "", 1).isdigit()), "")
    category = category or category_from_words([label]) or "ioc"
    return ctx.make(kind=kind, value=value, category=category, label=label, source=source,
                    confidence=confidence, first_seen=first, last_seen=last, line=n)


def _maybe_time(text: str) -> datetime | None:
    if not text or not _DATE_SHAPE.match(text):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def _confidence_value(text: str) -> float:
    """A confidence as 0-1 (a value above 1 is read as a percentage)."""
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"not a confidence: {text[:40]!r}") from None
    if v != v or v < 0 or v > 100:
        raise ValueError(f"confidence out of range: {text[:40]!r}")
    return v / 100 if v > 1 else v


# -- sniffing ------------------------------------------------------------------------------

_JSON_MISP = re.compile(r'^\s*\[?\s*\{\s*"(?:Event|response)"\s*:')
_JSON_STIX = re.compile(r'"type"\s*:\s*"(?:bundle|indicator)"')
_JSON_EVENT = re.compile(r'"Event"\s*:\s*\{')
_HOSTS_LINE = re.compile(r"^(?:0\.0\.0\.0|127\.0\.0\.1|::1?)[ \t]+[A-Za-z0-9_.-]*[A-Za-z]")


def _classify_line(s: str) -> str | None:
    """"fp", "ip", "domain", "other", or None for lines that say nothing (comments)."""
    if not s or s[0] in "#;!" or (s[0] == "[" and s[-1] == "]"):
        return None
    fields = re.split(r"[,\t;]", s)
    if any(_fp_shaped(f.strip().strip("\"'")) for f in fields):
        return "fp"
    if _HOSTS_LINE.match(s):
        return "domain"
    try:
        if ip_list_line(s) is not None:
            return "ip"
    except ValueError:
        pass
    try:
        if domain_list_line(s) is not None:
            return "domain"
    except ValueError:
        pass
    return "other"


def sniff(path: Path, head: bytes) -> str | None:
    """The feed format of a file from its first bytes (gzip is looked through), or None when
    unsure. Tor documents by their first keyword line, JSON feeds by their tell-tale keys, and
    lists by their first non-comment lines: one kind must make up two in five of them and
    outnumber the next kind three to one."""
    data = head
    if data.startswith(GZIP_MAGIC):
        try:
            data = zlib.decompressobj(wbits=31).decompress(data, 1 << 20)
        except zlib.error:
            return None
    if data.startswith(BOM):
        data = data[3:]
    text = data.decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        if '"relays_published"' in stripped or '"bridges_published"' in stripped:
            return "onionoo"
        if _JSON_MISP.match(stripped):
            return "misp"
        if _JSON_STIX.search(stripped):
            return "stix"
        if _JSON_EVENT.search(stripped):
            return "misp"
        return None
    lines = text.split("\n")
    if len(lines) > 1 and not text.endswith("\n"):
        lines = lines[:-1]  # the head may end inside a line
    keyword = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("@")]
    if keyword and keyword[0].startswith("network-status-version 3"):
        return "tor-microdesc" if keyword[0].split()[2:3] == ["microdesc"] else "tor-consensus"
    if any(ln.startswith("ExitNode ") for ln in keyword[:10]):
        return "tordnsel"
    counts: dict[str, int] = {}
    seen = 0
    for ln in lines:
        kind = _classify_line(ln.strip(_TRIM))
        if kind is None:
            continue
        counts[kind] = counts.get(kind, 0) + 1
        seen += 1
        if seen >= 200:
            break
    if not seen:
        return None
    ranked = sorted(("fp", "ip", "domain"), key=lambda k: counts.get(k, 0), reverse=True)
    best, runner_up = counts.get(ranked[0], 0), counts.get(ranked[1], 0)
    if best * 5 < seen * 2 or best < 3 * runner_up:
        return None
    return {"fp": "fingerprint-csv", "ip": "ip-list", "domain": "domain-list"}[ranked[0]]


# -- dispatch ------------------------------------------------------------------------------

Reader = Callable[[ReadContext], Iterator[pa.Table]]


def _reader(fmt: str) -> Reader:
    # The structured readers import this module's helpers, and stix2patterns (an ANTLR
    # grammar) takes ~30 ms to import: load them on use.
    if fmt in ("tor-consensus", "tor-microdesc"):
        from hopguard.intel import tor
        return tor.read_consensus
    if fmt == "tordnsel":
        from hopguard.intel import tor
        return tor.read_tordnsel
    if fmt == "onionoo":
        from hopguard.intel import tor
        return tor.read_onionoo
    if fmt == "stix":
        from hopguard.intel import stix
        return stix.read_stix
    if fmt == "misp":
        from hopguard.intel import misp
        return misp.read_misp
    return {"ip-list": _read_ip_list, "domain-list": _read_domain_list,
            "fingerprint-csv": _read_fingerprint_csv}[fmt]


def describe(fmt: str) -> str:
    """One line on what the reader for ``fmt`` reads (``hopguard intel formats``)."""
    return _DESCRIPTIONS[fmt]


def read_feed(path: Path, fmt: str, options: FeedOptions, error: ErrorSink, *,
              note: ErrorSink | None = None) -> Iterator[pa.Table]:
    """Indicators of ``path`` read as ``fmt``, in BATCH_SCHEMA tables of at most BATCH_ROWS
    rows. ``error(location, message)`` is called for each record that cannot be used and
    ``note(location, message)`` (default: a debug log line) for each valid record that is
    deliberately skipped (revoked, benign, not for detection, deleted, an unsupported
    pattern). Raises ConfigError only for an unknown ``fmt``."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown feed format {fmt!r} (one of {', '.join(FORMATS)})")
    ctx = ReadContext(path=path, options=options, error=error, note=note or _log_note)
    try:  # a file we cannot open is one error here, not one per reader
        with open_binary(path) as f:
            f.read(1)
    except _READ_ERRORS as exc:
        error(ctx.whole(), f"cannot read the file: {exc}")
        return iter(())
    return _reader(fmt)(ctx)


__all__ = ["BATCH_ROWS", "FORMATS", "FeedOptions", "ReadContext", "address_value",
           "category_from_words", "describe", "domain_list_line", "host_indicator",
           "ip_list_line", "parse_time", "read_feed", "sniff", "url_indicators", "utc"]
