"""The findings contract and what every detector shares.

Theory of operation: a detector is a function ``(Context) -> Iterable[Finding]`` registered under
a dotted name with :func:`detector`. It reads the store through ``ctx.sql`` (DuckDB, columnar; no
per-row Python over whole tables), and builds :class:`Finding` values whose entities follow the
contract in ARCHITECTURE.md. ``run.py`` runs the detectors in registration order, marks findings
about declared infrastructure as sanctioned, gives each its stable id and writes them in one
transaction. Detectors may leave intermediate results for later ones in ``ctx.cache`` (the relay
pairs that the chain detector walks, for example) and say what they left out (excluded busy
services, saturated time buckets) in ``ctx.notes``, which the CLI and the report show.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from hopguard.config import Settings

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# The ranges that are internal when [inventory] networks is empty.
DEFAULT_INTERNAL = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                    "127.0.0.0/8", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10")


@dataclass(slots=True, kw_only=True)
class Evidence:
    """One stored record that supports a finding: enough to find it again."""

    table: str
    uid: str | None = None  # network rows
    event: str | None = None  # other rows: "<file_id>:<record>"
    summary: str = ""

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"table": self.table}
        if self.uid is not None:
            d["uid"] = self.uid
        if self.event is not None:
            d["event"] = self.event
        d["summary"] = self.summary
        return d


@dataclass(slots=True, kw_only=True)
class Action:
    """A concrete step that would stop what the finding shows."""

    kind: str  # nft, ips, gateway, inventory, host
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text}


@dataclass(slots=True, kw_only=True)
class Mitigation:
    ids: list[str]  # ATT&CK mitigation ids (M1037, M1031, M1020 ...)
    actions: list[Action] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "actions": [a.as_dict() for a in self.actions]}


@dataclass(slots=True, kw_only=True)
class Finding:
    detector: str
    title: str
    technique: str
    strategy: str
    severity: str
    confidence: float
    first_seen: datetime  # naive UTC, like every stored timestamp
    last_seen: datetime
    entities: dict[str, Any]
    evidence: list[Evidence]
    explanation: str
    mitigation: Mitigation
    sanctioned: bool = False
    hosts: list[str] = field(default_factory=list)  # every address involved (for grouping)
    sensor: str = ""
    id: str = ""  # set by finalize()
    incident: str | None = None
    evidence_total: int = 0  # before the evidence list was capped

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside 0..1")

    def finalize(self, id_bucket: float, max_evidence: int) -> None:
        """Give the finding its stable id and cap its evidence list."""
        bucket = int(self.first_seen.replace(tzinfo=UTC).timestamp() // id_bucket)
        key = orjson.dumps([self.detector, self.entities, bucket], option=orjson.OPT_SORT_KEYS)
        self.id = hashlib.sha256(key).hexdigest()[:20]
        self.evidence_total = max(self.evidence_total, len(self.evidence))
        if len(self.evidence) > max_evidence:
            self.evidence = self.evidence[:max_evidence]
        if not self.hosts:
            self.hosts = entity_hosts(self.entities)

    def as_row(self) -> dict[str, Any]:
        """The finding as a row of the ``finding`` table."""
        evidence = [e.as_dict() for e in self.evidence]
        if self.evidence_total > len(evidence):
            evidence.append({"table": "", "summary": f"{self.evidence_total - len(evidence)} "
                             "more records not listed"})
        return {
            "ts": self.first_seen, "sensor": self.sensor or None, "file_id": None,
            "record": None, "id": self.id, "detector": self.detector, "title": self.title,
            "technique": self.technique, "strategy": self.strategy, "severity": self.severity,
            "confidence": round(self.confidence, 3), "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "entities": orjson.dumps(self.entities, option=orjson.OPT_SORT_KEYS).decode(),
            "evidence": orjson.dumps(evidence).decode(), "explanation": self.explanation,
            "mitigation": orjson.dumps(self.mitigation.as_dict()).decode(),
            "sanctioned": self.sanctioned, "hosts": self.hosts, "incident": self.incident,
        }


    @staticmethod
    def from_row(row: dict[str, Any]) -> Finding:
        """A stored finding back as a value (what correlate/ and the report read)."""
        mit = orjson.loads(row["mitigation"] or "{}")
        listed = orjson.loads(row["evidence"] or "[]")
        ev = [e for e in listed if e.get("table")]
        more = sum(int(e["summary"].split()[0]) for e in listed
                   if not e.get("table") and e.get("summary", "").split()[:1][0:1]
                   and e["summary"].split()[0].isdigit())
        return Finding(
            detector=row["detector"], title=row["title"], technique=row["technique"],
            strategy=row["strategy"] or "", severity=row["severity"],
            confidence=float(row["confidence"] or 0.0), first_seen=row["first_seen"],
            last_seen=row["last_seen"], entities=orjson.loads(row["entities"] or "{}"),
            evidence=[Evidence(table=e["table"], uid=e.get("uid"), event=e.get("event"),
                               summary=e.get("summary", "")) for e in ev],
            explanation=row["explanation"] or "",
            mitigation=Mitigation(ids=list(mit.get("ids", [])), actions=[
                Action(kind=a["kind"], text=a["text"]) for a in mit.get("actions", [])]),
            sanctioned=bool(row["sanctioned"]), hosts=list(row["hosts"] or []),
            sensor=row["sensor"] or "", id=row["id"], incident=row["incident"],
            evidence_total=len(ev) + more)


_HOST_KEYS = ("relay", "client", "upstream", "proxy", "host", "hub", "src", "dst", "server",
              "target_ip", "edge")


def entity_hosts(entities: dict[str, Any]) -> list[str]:
    """The addresses named in a finding's entities, in first-mention order."""
    seen: list[str] = []
    for key in _HOST_KEYS:
        v = entities.get(key)
        if isinstance(v, str) and v and v not in seen and is_ip(v):
            seen.append(v)
    for v in entities.get("chain", []) or []:
        if isinstance(v, str) and v not in seen:
            seen.append(v)
    for v in entities.get("clients", []) or []:
        if isinstance(v, str) and v not in seen and is_ip(v):
            seen.append(v)
    return seen


# -- what detectors share when they write findings ------------------------------------------------

def is_ip(text: str | None) -> bool:
    """An IPv4 or IPv6 address (brackets around a v6 one allowed)."""
    if not text:
        return False
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def is_v6(text: str | None) -> bool:
    """Looks like IPv6 (has a colon): enough to pick nft's ``ip6`` and the ``[v6]:port`` form."""
    return bool(text) and ":" in str(text)


def hostport(host: object, port: object) -> str:
    """``host:port``, or ``[v6]:port``."""
    text = str(host)
    return f"[{text}]:{port}" if is_v6(text) else f"{text}:{port}"


def nft_drop_rule(src: str | None, dst: str | None, port: int | None,
                  proto: str = "tcp") -> str:
    """``nft add rule inet filter forward [saddr] [daddr] [dport] drop``, each address in its
    own family."""
    parts = ["nft add rule inet filter forward"]
    if src:
        parts.append(f"{'ip6' if is_v6(src) else 'ip'} saddr {src}")
    if dst:
        parts.append(f"{'ip6' if is_v6(dst) else 'ip'} daddr {dst}")
    if port:
        parts.append(f"{proto} dport {port}")
    parts.append("drop")
    return " ".join(parts)


def lower_severity(severity: str, floor: str = "info") -> str:
    """One step down, not below ``floor``."""
    return SEVERITIES[max(SEVERITY_RANK[floor], SEVERITY_RANK[severity] - 1)]


def severity_for(confidence: float, *, high: float = 0.8, medium: float = 0.5,
                 low: float = 0.25) -> str:
    if confidence >= high:
        return "high"
    if confidence >= medium:
        return "medium"
    if confidence >= low:
        return "low"
    return "info"


# -- the inventory -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Endpoint:
    """``host`` or ``host:port`` from the inventory (port None: every port)."""

    host: str
    port: int | None

    @staticmethod
    def parse(text: str) -> Endpoint:
        text = text.strip()
        if text.startswith("["):  # [v6]:port
            host, _, rest = text[1:].partition("]")
            port = rest.lstrip(":")
            return Endpoint(host, int(port) if port else None)
        if text.count(":") == 1:
            host, _, port = text.partition(":")
            return Endpoint(host, int(port))
        return Endpoint(text, None)

    def matches(self, host: str | None, port: int | None) -> bool:
        return host == self.host and (self.port is None or port is None or port == self.port)


@dataclass(slots=True)
class Inventory:
    proxies: list[Endpoint]
    relays: list[Endpoint]
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]

    @classmethod
    def from_settings(cls, settings: Settings) -> Inventory:
        from hopguard.errors import ConfigError
        try:
            proxies = [Endpoint.parse(p) for p in settings.inventory.proxies]
            relays = [Endpoint.parse(p) for p in settings.inventory.relays]
        except ValueError as exc:
            raise ConfigError(f"inventory: bad host:port ({exc})") from None
        try:
            nets = [ipaddress.ip_network(n, strict=False)
                    for n in settings.inventory.networks or DEFAULT_INTERNAL]
        except ValueError as exc:
            raise ConfigError(f"inventory.networks: {exc}") from None
        return cls(proxies, relays, nets)

    def is_proxy(self, host: str | None, port: int | None = None) -> bool:
        return any(e.matches(host, port) for e in self.proxies)

    def is_relay(self, host: str | None, port: int | None = None) -> bool:
        return any(e.matches(host, port) for e in self.relays) or self.is_proxy(host, port)

    def is_internal(self, ip: str | None) -> bool:
        if not ip:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self.networks if n.version == addr.version)

    def internal_sql(self) -> str:
        """A DuckDB expression over ``ip`` (VARCHAR) that is true for internal addresses,
        vectorised: IPv4 as a number compared with each range, IPv6 by prefix."""
        v4, v6 = [], []
        for n in self.networks:
            if n.version == 4:
                lo, hi = int(n.network_address), int(n.broadcast_address)
                v4.append(f"v4 BETWEEN {lo} AND {hi}")
            else:
                v6.append(f"({_v6_prefix_sql(n)})")
        return ("coalesce(CASE WHEN ip LIKE '%:%' THEN " + (" OR ".join(v6) or "false")
                + " ELSE " + (" OR ".join(v4) or "false") + " END, false)")

    def define_macros(self, con: duckdb.DuckDBPyConnection) -> None:
        """``hg_ipv4(ip)`` (the address as a number) and ``hg_internal(ip)`` on ``con``."""
        con.execute(f"CREATE OR REPLACE TEMP MACRO hg_ipv4(ip) AS {IPV4_NUM}")
        con.execute("CREATE OR REPLACE TEMP MACRO hg_internal(ip) AS "
                    + self.internal_sql().replace("v4 BETWEEN", "hg_ipv4(ip) BETWEEN"))


IPV4_NUM = ("TRY_CAST(split_part(ip, '.', 1) AS BIGINT) * 16777216 + "
            "TRY_CAST(split_part(ip, '.', 2) AS BIGINT) * 65536 + "
            "TRY_CAST(split_part(ip, '.', 3) AS BIGINT) * 256 + "
            "TRY_CAST(split_part(ip, '.', 4) AS BIGINT)")


def _v6_prefix_sql(net: ipaddress.IPv6Network) -> str:
    """Match an IPv6 prefix on the leading groups of the text form. Compressed text keeps every
    group before its '::', which covers the default ranges (fc00::/7, fe80::/10, ::1) and any
    prefix whose groups are written out; a group compressed away compares as no match."""
    if net.prefixlen == 128:
        return f"ip = '{net.network_address.compressed}'"
    groups = net.network_address.exploded.split(":")[:(net.prefixlen + 15) // 16]
    conds = []
    for i, group in enumerate(groups):
        bits = min(16, net.prefixlen - 16 * i)
        mask = (0xFFFF << (16 - bits)) & 0xFFFF
        conds.append(f"(TRY_CAST(('0x' || nullif(split_part(ip, ':', {i + 1}), '')) AS INTEGER)"
                     f" & {mask}) = {int(group, 16) & mask}")
    return "(" + " AND ".join(conds) + ")"


# -- the context and the registry ------------------------------------------------------------

@dataclass(slots=True)
class Context:
    con: duckdb.DuckDBPyConnection
    settings: Settings
    inventory: Inventory
    cache: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pa.Table:
        rel = self.con.sql(query, params=list(params) if params else None)
        return rel.to_arrow_table() if rel is not None else pa.table({})

    def rows(self, query: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.sql(query, params).to_pylist()
        return result

    def execute(self, query: str, params: Sequence[Any] | None = None) -> None:
        self.con.execute(query, list(params) if params else [])

    def addresses(self) -> str:
        """Name of a temp table ``(ip VARCHAR, internal BOOLEAN)`` over every address in the
        network tables, built on first use. Classifying the distinct addresses once and joining
        is far cheaper than ``hg_internal(ip)`` per row on millions of flows."""
        if "hg_addr" not in self.cache:
            self.execute(
                "CREATE OR REPLACE TEMP TABLE hg_addr AS SELECT ip, hg_internal(ip) AS internal "
                "FROM (SELECT src_ip AS ip FROM flow UNION SELECT dst_ip FROM flow "
                "UNION SELECT src_ip FROM proxy UNION SELECT dst_ip FROM proxy "
                "UNION SELECT target_ip FROM proxy UNION SELECT src_ip FROM tls "
                "UNION SELECT dst_ip FROM tls UNION SELECT src_ip FROM http "
                "UNION SELECT dst_ip FROM http) WHERE ip IS NOT NULL")
            self.cache["hg_addr"] = True
        return "hg_addr"

    def note(self, text: str) -> None:
        """Something the user should know about what this run left out."""
        self.notes.append(text)


DetectorFn = Callable[[Context], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    summary: str
    technique: str
    fn: DetectorFn
    tables: tuple[str, ...]


DETECTORS: dict[str, Detector] = {}


def detector(name: str, *, summary: str, technique: str,
             tables: tuple[str, ...]) -> Callable[[DetectorFn], DetectorFn]:
    """Register a detector (run in registration order; a later one may use an earlier one's
    ``ctx.cache``)."""
    def wrap(fn: DetectorFn) -> DetectorFn:
        DETECTORS[name] = Detector(name, summary, technique, fn, tables)
        return fn
    return wrap


def ts_of(value: Any) -> datetime:
    """A stored timestamp (naive UTC datetime) or epoch seconds as a naive UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo else value
    return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)
