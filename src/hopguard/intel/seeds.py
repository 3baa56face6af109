"""The shipped seed lists: tunnel services, CDN front ends, VPN and proxy services, Tor facts and
fingerprint priors that hopguard knows without any feed.

Theory of operation: the lists are data, not code. Each is a tab-separated file in
``hopguard/rules/intel/`` (package data, read with :mod:`importlib.resources`): ``#`` comment
lines at the top say what the columns mean, then one header line names the columns, then one
fact a row. Every row carries a ``source`` column that says where the fact comes from; the rows
were written by us from those public facts.

Reading a file is a small parser with the house's three outcomes per line: a row, nothing (a
comment or blank line), or a located error (``rules/intel/<file>:<line>``). Values are checked
with the canonical normalisers of :mod:`hopguard.intel.model` and must already *be* canonical
(``Example.COM`` is an error, not a silent fix), so the files stay diffable and a row means
exactly what it says. A bad row never stops the rest of the file: :func:`parse_seed` returns the
good rows and the errors. The accessors below read the shipped files once (cached) and refuse a
file with any error, because shipped data with an error is a bug that a unit test must catch.

Two kinds of users read the lists:

- the existing detectors, through typed accessors: :func:`tunnel_services` (tunnel.service),
  :func:`cdn_domains` (fronting.*), :func:`fingerprint_priors` (tunnel.fingerprint),
  :func:`tor_patterns` (tunnel.tor) and :func:`tor_ports` (the default of ``tunnel.tor_ports``);
- the intel matcher, through :func:`seed_indicators`: every row that names an address, a domain
  or a fingerprint as one Arrow table in :data:`hopguard.intel.model.BATCH_SCHEMA`, matched by
  ``analytics/intel.py`` as the built-in feed ``seed``.

Seed indicators, by file (``detail`` is ``seed:<file>``, ``source`` the row's source, ``record``
its line):

==========================  =========================  ==========================================
file                        category                   confidence
==========================  =========================  ==========================================
tunnel_services.tsv         tunnel                     agent 0.6, edge 0.4 (label: the service)
cdn_domains.tsv             cdn                        0.2: context, not a finding (the provider)
vpn_proxy_services.tsv      the row's (vpn or proxy)   the row's (0.3 where it is also a website)
tor.tsv authorities         tor_relay (ip)             0.9 (label: the row's meaning)
tor.tsv domains             tor_relay (domain)         0.6: Tor's own names, onion, tor2web
fingerprints.tsv            the row's (tunnel, c2 ...) the row's prior, 0.1-0.3
==========================  =========================  ==========================================

Tor's domains take ``tor_relay`` because that category is the Tor family the matcher reports as
``intel.tor`` (T1090.003); none of them is a relay address. Ports and SNI/certificate patterns
are facts for tunnel.tor, not indicators.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TypeVar

import pyarrow as pa

from hopguard.errors import InputError, SourceLocation
from hopguard.intel.model import (
    BATCH_SCHEMA,
    CATEGORIES,
    Indicator,
    batch_of,
    domain_value,
    hash_value,
    ip_value,
)

SEED_DIR = ("rules", "intel")
FEED = "seed"

TUNNEL_FILE = "tunnel_services.tsv"
CDN_FILE = "cdn_domains.tsv"
VPN_FILE = "vpn_proxy_services.tsv"
TOR_FILE = "tor.tsv"
FINGERPRINT_FILE = "fingerprints.tsv"

# Header line of each file, in column order.
COLUMNS: dict[str, tuple[str, ...]] = {
    TUNNEL_FILE: ("suffix", "service", "kind", "match", "source"),
    CDN_FILE: ("suffix", "provider", "source"),
    VPN_FILE: ("suffix", "service", "category", "match", "confidence", "source"),
    TOR_FILE: ("kind", "value", "meaning", "source"),
    FINGERPRINT_FILE: ("fingerprint", "kind", "label", "category", "confidence", "source"),
}
FILES = tuple(COLUMNS)

TUNNEL_KINDS = ("agent", "edge")
SEED_MATCHES = ("suffix", "exact")  # the list files' vocabulary (model.MATCHES has more)
VPN_CATEGORIES = ("vpn", "proxy")
TOR_KINDS = ("port", "directory_authority", "domain", "sni_pattern", "cert_pattern")
CERT_FIELDS = ("issuer", "subject")
FINGERPRINT_KINDS = ("ja3", "ja3s", "ja4")
CLIENT_FINGERPRINTS = ("ja3", "ja4")  # what a ClientHello carries (tunnel.fingerprint's priors)
PRIOR_RANGE = (0.1, 0.3)  # fingerprints are priors: never strong evidence on their own

# Seed indicator confidence where the file has no confidence column (see the module docstring).
TUNNEL_CONFIDENCE = {"agent": 0.6, "edge": 0.4}
CDN_CONFIDENCE = 0.2
TOR_AUTHORITY_CONFIDENCE = 0.9
TOR_DOMAIN_CONFIDENCE = 0.6

MAX_FIELD = 400  # characters in one field: a row is a fact, not a document


# -- rows ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class TunnelService:
    """A tunnel or reverse-proxy service name (tunnel_services.tsv)."""

    suffix: str
    service: str
    kind: str  # agent | edge
    match: str  # suffix | exact
    source: str
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CdnDomain:
    """A CDN / multi-tenant front-end suffix (cdn_domains.tsv)."""

    suffix: str
    provider: str
    source: str
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VpnProxyService:
    """A name a VPN or proxy service's client contacts (vpn_proxy_services.tsv)."""

    suffix: str
    service: str
    category: str  # vpn | proxy
    match: str  # suffix | exact
    confidence: float
    source: str
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TorFact:
    """One Tor fact (tor.tsv). ``value`` is canonical for its kind: a port's digits, an address,
    a domain without its leading dot (``match`` says suffix or exact), a pattern as written."""

    kind: str
    value: str
    meaning: str
    source: str
    line: int
    match: str = "exact"  # domains: suffix for ".name" rows
    prefix: int | None = None  # directory authorities: 32 or 128
    field: str = ""  # cert patterns: issuer | subject


@dataclass(frozen=True, slots=True, kw_only=True)
class FingerprintPrior:
    """A TLS fingerprint prior (fingerprints.tsv)."""

    fingerprint: str
    kind: str  # ja3 | ja3s | ja4
    label: str
    category: str
    confidence: float
    source: str
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TorPatterns:
    """The regular expressions tunnel.tor applies (anchored, Python/RE2 syntax)."""

    sni: str
    issuer: str
    subject: str


Row = TunnelService | CdnDomain | VpnProxyService | TorFact | FingerprintPrior
R = TypeVar("R", TunnelService, CdnDomain, VpnProxyService, TorFact, FingerprintPrior)


# -- parsing ------------------------------------------------------------------------------------

def seed_path(name: str) -> str:
    """How errors name a shipped file: its path inside the package."""
    return "/".join((*SEED_DIR, name))


def read_text(name: str) -> str:
    """The text of a shipped seed file."""
    if name not in COLUMNS:
        raise ValueError(f"no seed list named {name!r} (known: {', '.join(FILES)})")
    return resources.files("hopguard").joinpath(*SEED_DIR, name).read_text("utf-8")


def _records(name: str, text: str,
             errors: list[InputError]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, {column: field})`` per data line, after the header; structural errors go to
    ``errors`` located at their line."""
    path, columns = seed_path(name), COLUMNS[name]
    header_seen = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        where = SourceLocation(path=path, line=number)
        if not header_seen:
            if tuple(f.strip() for f in fields) != columns:
                errors.append(InputError(
                    f"header must be {'<TAB>'.join(columns)}, found {line[:120]!r}", where))
                return  # without the right header no row can be read by name
            header_seen = True
            continue
        if len(fields) != len(columns):
            errors.append(InputError(
                f"{len(fields)} tab-separated fields, expected {len(columns)} "
                f"({', '.join(columns)})", where))
            continue
        values = [f.strip() for f in fields]
        if any(len(v) > MAX_FIELD for v in values):
            errors.append(InputError(f"a field is longer than {MAX_FIELD} characters", where))
            continue
        yield number, dict(zip(columns, values, strict=True))
    if not header_seen:
        errors.append(InputError("no header line", SourceLocation(path=path)))


def _need(rec: dict[str, str], column: str) -> str:
    value = rec[column]
    if not value:
        raise ValueError(f"empty {column}")
    return value


def _choice(rec: dict[str, str], column: str, allowed: Sequence[str]) -> str:
    value = _need(rec, column)
    if value not in allowed:
        raise ValueError(f"{column} {value!r} is not one of {', '.join(allowed)}")
    return value


def _confidence(rec: dict[str, str], low: float = 0.0, high: float = 1.0) -> float:
    text = _need(rec, "confidence")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"confidence {text!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"confidence {value} outside {low}-{high}")
    return value


def _name(rec: dict[str, str], column: str) -> str:
    """A bare DNS name already in canonical form (no leading '.'/'*.', lower case, ASCII)."""
    text = _need(rec, column)
    value, match = domain_value(text)
    if match != "exact":
        raise ValueError(f"{column} {text!r}: write the bare name; the match column says how "
                         "it matches")
    if value != text:
        raise ValueError(f"{column} {text!r} is not canonical: write {value!r}")
    return value


def _tunnel(rec: dict[str, str], line: int) -> TunnelService:
    return TunnelService(suffix=_name(rec, "suffix"), service=_need(rec, "service"),
                         kind=_choice(rec, "kind", TUNNEL_KINDS),
                         match=_choice(rec, "match", SEED_MATCHES), source=_need(rec, "source"),
                         line=line)


def _cdn(rec: dict[str, str], line: int) -> CdnDomain:
    return CdnDomain(suffix=_name(rec, "suffix"), provider=_need(rec, "provider"),
                     source=_need(rec, "source"), line=line)


def _vpn(rec: dict[str, str], line: int) -> VpnProxyService:
    return VpnProxyService(suffix=_name(rec, "suffix"), service=_need(rec, "service"),
                           category=_choice(rec, "category", VPN_CATEGORIES),
                           match=_choice(rec, "match", SEED_MATCHES),
                           confidence=_confidence(rec), source=_need(rec, "source"), line=line)


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    if not (text.startswith("^") and text.endswith("$")):
        # the SQL side uses full matches; an anchored pattern means the same in both engines
        raise ValueError(f"pattern {text!r} must be anchored with ^ and $")
    if "'" in text:
        raise ValueError("a pattern may not contain a quote (it is embedded in SQL)")
    return text


def _tor(rec: dict[str, str], line: int) -> TorFact:
    kind = _choice(rec, "kind", TOR_KINDS)
    text, meaning, source = _need(rec, "value"), _need(rec, "meaning"), _need(rec, "source")
    if kind == "port":
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"port {text!r} is not a TCP port")
        return TorFact(kind=kind, value=str(int(text)), meaning=meaning, source=source,
                       line=line)
    if kind == "directory_authority":
        value, prefix = ip_value(text)
        if "/" in text or prefix != ipaddress.ip_address(value).max_prefixlen:
            raise ValueError(f"directory authority {text!r} must be one address")
        if value != text:
            raise ValueError(f"address {text!r} is not canonical: write {value!r}")
        return TorFact(kind=kind, value=value, prefix=prefix, meaning=meaning, source=source,
                       line=line)
    if kind == "domain":
        value, match = domain_value(text)
        canonical = ("." if match == "suffix" else "") + value
        if match == "subdomains" or canonical != text:
            raise ValueError(f"domain {text!r}: write '.name' (the name and below) or 'name'")
        return TorFact(kind=kind, value=value, match=match, meaning=meaning, source=source,
                       line=line)
    if kind == "sni_pattern":
        return TorFact(kind=kind, value=_regex(text), meaning=meaning, source=source,
                       line=line)
    field, sep, pattern = text.partition(":")
    if not sep or field not in CERT_FIELDS:
        raise ValueError(f"cert pattern {text!r} must be 'issuer:REGEX' or 'subject:REGEX'")
    return TorFact(kind=kind, value=_regex(pattern), field=field, meaning=meaning,
                   source=source, line=line)


def _fingerprint(rec: dict[str, str], line: int) -> FingerprintPrior:
    kind = _choice(rec, "kind", FINGERPRINT_KINDS)
    text = _need(rec, "fingerprint")
    value = hash_value(kind, text)
    if value != text:
        raise ValueError(f"fingerprint {text!r} is not canonical: write {value!r}")
    return FingerprintPrior(fingerprint=value, kind=kind, label=_need(rec, "label"),
                            category=_choice(rec, "category", CATEGORIES),
                            confidence=_confidence(rec, *PRIOR_RANGE),
                            source=_need(rec, "source"), line=line)


def _key(row: Row) -> tuple[str, ...]:
    """What may appear once per file."""
    if isinstance(row, TunnelService | CdnDomain):
        return (row.suffix,)  # the detectors' suffix tables hold one row per suffix
    if isinstance(row, VpnProxyService):
        return (row.suffix, row.match)
    if isinstance(row, TorFact):
        return (row.kind, row.field or row.value) if row.kind == "cert_pattern" else (
            row.kind, row.value)
    return (row.kind, row.fingerprint)


_BUILDERS: dict[str, Callable[[dict[str, str], int], Row]] = {
    TUNNEL_FILE: _tunnel, CDN_FILE: _cdn, VPN_FILE: _vpn, TOR_FILE: _tor,
    FINGERPRINT_FILE: _fingerprint,
}


def parse_seed(name: str, text: str) -> tuple[list[Row], list[InputError]]:
    """Parse one seed file's text: ``(rows, errors)``, every error located ``file:line``; a bad
    line is reported and skipped, the rest is still read."""
    if name not in COLUMNS:
        raise ValueError(f"no seed list named {name!r} (known: {', '.join(FILES)})")
    build = _BUILDERS[name]
    rows: list[Row] = []
    errors: list[InputError] = []
    first: dict[tuple[str, ...], int] = {}
    for line, rec in _records(name, text, errors):
        where = SourceLocation(path=seed_path(name), line=line)
        try:
            row = build(rec, line)
        except (ValueError, UnicodeError) as exc:  # the normalisers' refusal, located
            errors.append(InputError(str(exc), where))
            continue
        key = _key(row)
        if key in first:
            errors.append(InputError(f"duplicate of line {first[key]} ({' '.join(key)})", where))
            continue
        first[key] = line
        rows.append(row)
    return rows, errors


def check_seeds() -> list[InputError]:
    """Every error in every shipped seed file (empty when the shipped data is sound)."""
    errors: list[InputError] = []
    for name in FILES:
        errors.extend(parse_seed(name, read_text(name))[1])
    return errors


@lru_cache(maxsize=len(COLUMNS))
def _shipped(name: str) -> tuple[Row, ...]:
    rows, errors = parse_seed(name, read_text(name))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"shipped seed list is broken: {errors[0].message}{more}",
                         errors[0].location)
    return tuple(rows)


def _typed(name: str, cls: type[R]) -> tuple[R, ...]:
    # one builder per file, so the filter keeps every row; it only tells the type checker
    return tuple(r for r in _shipped(name) if isinstance(r, cls))


# -- accessors for the detectors ------------------------------------------------------------------

def tunnel_services() -> tuple[TunnelService, ...]:
    """The tunnel-service names, in file order."""
    return _typed(TUNNEL_FILE, TunnelService)


def cdn_domains() -> tuple[CdnDomain, ...]:
    """The CDN front-end suffixes, in file order."""
    return _typed(CDN_FILE, CdnDomain)


def vpn_proxy_services() -> tuple[VpnProxyService, ...]:
    """The VPN and proxy service names, in file order."""
    return _typed(VPN_FILE, VpnProxyService)


def tor_facts() -> tuple[TorFact, ...]:
    """Every Tor fact, in file order."""
    return _typed(TOR_FILE, TorFact)


def fingerprints() -> tuple[FingerprintPrior, ...]:
    """Every fingerprint prior (client and server), in file order."""
    return _typed(FINGERPRINT_FILE, FingerprintPrior)


def fingerprint_priors() -> dict[str, str]:
    """``{fingerprint: label}`` of the client fingerprints (JA3, JA4) tunnel.fingerprint matches
    against ClientHellos; server fingerprints (JA3S) are indicators only."""
    return {p.fingerprint: p.label for p in fingerprints() if p.kind in CLIENT_FINGERPRINTS}


def tor_ports() -> tuple[int, ...]:
    """The Tor ports, ascending (the default of ``tunnel.tor_ports`` lists the same)."""
    return tuple(sorted(int(f.value) for f in tor_facts() if f.kind == "port"))


def tor_patterns() -> TorPatterns:
    """The SNI and relay-certificate patterns of tunnel.tor."""
    facts = tor_facts()
    sni = [f.value for f in facts if f.kind == "sni_pattern"]
    cert = {f.field: f.value for f in facts if f.kind == "cert_pattern"}
    if len(sni) != 1 or set(cert) != set(CERT_FIELDS):
        raise InputError("tor.tsv must hold one sni_pattern and one issuer and one subject "
                         "cert_pattern", SourceLocation(path=seed_path(TOR_FILE)))
    return TorPatterns(sni=sni[0], issuer=cert["issuer"], subject=cert["subject"])


# -- seed indicators ------------------------------------------------------------------------------

def _indicators() -> Iterator[Indicator]:
    for t in tunnel_services():
        yield Indicator(kind="domain", value=t.suffix, match=t.match, category="tunnel",
                        label=t.service, confidence=TUNNEL_CONFIDENCE[t.kind], source=t.source,
                        detail=f"seed:{TUNNEL_FILE}", line=t.line)
    for c in cdn_domains():
        yield Indicator(kind="domain", value=c.suffix, match="suffix", category="cdn",
                        label=c.provider, confidence=CDN_CONFIDENCE, source=c.source,
                        detail=f"seed:{CDN_FILE}", line=c.line)
    for v in vpn_proxy_services():
        yield Indicator(kind="domain", value=v.suffix, match=v.match, category=v.category,
                        label=v.service, confidence=v.confidence, source=v.source,
                        detail=f"seed:{VPN_FILE}", line=v.line)
    for f in tor_facts():
        if f.kind == "directory_authority":
            yield Indicator(kind="ip", value=f.value, prefix=f.prefix, category="tor_relay",
                            label=f.meaning, confidence=TOR_AUTHORITY_CONFIDENCE,
                            source=f.source, detail=f"seed:{TOR_FILE}", line=f.line)
        elif f.kind == "domain":
            yield Indicator(kind="domain", value=f.value, match=f.match, category="tor_relay",
                            label=f.meaning, confidence=TOR_DOMAIN_CONFIDENCE, source=f.source,
                            detail=f"seed:{TOR_FILE}", line=f.line)
    for p in fingerprints():
        yield Indicator(kind=p.kind, value=p.fingerprint, category=p.category, label=p.label,
                        confidence=p.confidence, source=p.source,
                        detail=f"seed:{FINGERPRINT_FILE}", line=p.line)


@lru_cache(maxsize=1)
def seed_indicators() -> pa.Table:
    """Every seed row that is an indicator, as one table in ``BATCH_SCHEMA`` (see the module
    docstring for the category and confidence each file gives)."""
    table = batch_of(list(_indicators()))
    assert table.schema.equals(BATCH_SCHEMA)
    return table
