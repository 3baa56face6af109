"""A finding (or an incident) with its evidence chain, back to the raw input.

Theory of operation: :func:`resolve` turns an id, or a prefix of at least six characters, into
exactly one finding or incident, and refuses ambiguity by listing the candidates. For a finding,
:func:`explain_finding` follows each evidence record to the stored rows: a ``uid`` names one
connection, so every network table holding that uid contributes its rows (the flow, its TLS
handshake, its HTTP request, the proxy CONNECT inside it ...); an ``event`` ``"<file_id>:<record>"``
names one endpoint record, looked up in the table the evidence names (else process, netconn and
config_change). Every row carries ``file_id`` + ``record``, so each is shown with the path of the
input file (``source_file``) and the record within it: the analyst can open the raw line. Lookups
are batched per table (one query per table for all the uids of a finding), and evidence lists are
short (capped by ``analyze.max_evidence``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from hopguard.errors import ConfigError
from hopguard.model import TABLES
from hopguard.report.findings import (
    INCIDENT_FACTS,
    FindingView,
    clean,
    findings_by_id,
    incident_doc,
    iso,
)
from hopguard.store import Store

MIN_PREFIX = 6
UID_TABLES = ("flow", "proxy", "tls", "http", "dns", "ssh", "tunnel", "alert")
EVENT_TABLES = ("process", "netconn", "config_change")

# the columns worth one line, per table (after time and 5-tuple)
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "flow": ("proto", "service", "duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts",
             "state", "history"),
    "proxy": ("protocol", "target_host", "target_ip", "target_port", "auth_method", "user",
              "outcome"),
    "tls": ("version", "sni", "alpn", "ja3", "ja4", "established", "cert_subject"),
    "http": ("method", "host", "uri", "status", "user_agent", "is_proxy_request", "proxied"),
    "dns": ("proto", "query", "qtype", "rcode", "answers"),
    "ssh": ("version", "client", "server", "auth_success", "direction", "hassh"),
    "tunnel": ("tunnel_type", "action"),
    "alert": ("signature_id", "signature", "category", "action", "severity"),
    "process": ("host", "pid", "ppid", "user", "image", "command_line", "parent_image"),
    "netconn": ("host", "pid", "image", "direction", "proto", "dst_host"),
    "config_change": ("host", "source", "action", "object", "detail", "user"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRow:
    """One stored row behind an evidence record, and where it was read from."""

    table: str
    row: dict[str, Any]
    source: str | None  # the input file's path

    def line(self) -> str:
        """Time, 5-tuple and the key fields on one line."""
        r = self.row
        parts = [iso(r.get("ts")) or "-", self.table]
        if r.get("src_ip") is not None or r.get("dst_ip") is not None:
            parts.append(f"{_endpoint(r.get('src_ip'), r.get('src_port'))} -> "
                         f"{_endpoint(r.get('dst_ip'), r.get('dst_port'))}")
        for name in KEY_FIELDS.get(self.table, ()):
            v = r.get(name)
            if v is None or v == "" or v == []:
                continue
            if isinstance(v, float):
                v = f"{v:.3f}".rstrip("0").rstrip(".")
            elif isinstance(v, list):
                v = ",".join(str(x) for x in v)
            parts.append(f"{name}={v}")
        where = self.source or f"file {r.get('file_id')}"
        parts.append(f"[{where}#{r.get('record')}]")
        return clean("  ".join(str(p) for p in parts))

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "source": self.source,
                **{k: iso(v) if k == "ts" else v for k, v in self.row.items()}}


def _endpoint(ip: Any, port: Any) -> str:
    ip = "?" if ip is None else str(ip)
    if ":" in ip:
        ip = f"[{ip}]"
    return ip if port is None else f"{ip}:{port}"


@dataclass(slots=True, kw_only=True)
class EvidenceTrail:
    evidence: dict[str, Any]
    rows: list[StoredRow] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class ExplainedFinding:
    finding: FindingView
    trails: list[EvidenceTrail]

    def as_dict(self) -> dict[str, Any]:
        return {"finding": self.finding.doc, "incident": self.finding.incident,
                "evidence": [{**t.evidence, "rows": [r.as_dict() for r in t.rows]}
                             for t in self.trails]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolved:
    kind: str  # finding | incident
    id: str


def resolve(store: Store, ident: str) -> Resolved:
    """The one finding or incident whose id is ``ident`` or starts with it."""
    want = ident.strip().lower()
    if len(want) < MIN_PREFIX:
        raise ConfigError(f"id {ident!r} is too short: give at least {MIN_PREFIX} characters")
    hits = store.query(
        "SELECT 'finding' AS kind, id, title FROM finding WHERE starts_with(id, ?) "
        "UNION ALL SELECT 'incident', id, title FROM incident WHERE starts_with(id, ?) "
        "ORDER BY kind, id", [want, want]).to_pylist()
    exact = [h for h in hits if h["id"] == want]
    if len(exact) == 1:
        hits = exact
    if not hits:
        raise ConfigError(f"no finding or incident has an id starting with {ident!r} "
                          "(list them with 'hopguard findings')")
    if len(hits) > 1:
        listed = "; ".join(f"{h['kind']} {h['id']} ({clean(h['title'])})" for h in hits[:10])
        more = f"; and {len(hits) - 10} more" if len(hits) > 10 else ""
        raise ConfigError(f"id prefix {ident!r} is ambiguous, it matches {len(hits)}: "
                          f"{listed}{more}")
    return Resolved(kind=hits[0]["kind"], id=hits[0]["id"])


def _event_key(text: Any) -> tuple[int, int] | None:
    """``"<file_id>:<record>"`` as two numbers, or None when it is not that."""
    if not isinstance(text, str):
        return None
    file_id, sep, record = text.partition(":")
    try:
        return (int(file_id), int(record)) if sep else None
    except ValueError:
        return None


def explain_finding(store: Store, finding: FindingView) -> ExplainedFinding:
    evidence = finding.doc["evidence"]
    trails = [EvidenceTrail(evidence=e) for e in evidence]
    uids = sorted({str(e["uid"]) for e in evidence if e.get("uid")})
    by_uid: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    if uids:
        for name in UID_TABLES:
            for row in store.query(f'SELECT * FROM "{name}" WHERE list_contains(?, uid) '
                                   "ORDER BY ts, record", [uids]).to_pylist():
                by_uid.setdefault(row["uid"], []).append((name, row))
    found: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for i, e in enumerate(evidence):
        if e.get("uid"):
            # the network tables in a fixed order (flow first), each in time order
            rows = by_uid.get(str(e["uid"]), [])
            found[i] = sorted(rows, key=lambda tr: UID_TABLES.index(tr[0]))
            continue
        key = _event_key(e.get("event"))
        if key is None:
            continue
        named = e.get("table")
        tables = [named] if named in TABLES and named not in ("finding", "incident") \
            else list(EVENT_TABLES)
        for name in tables:
            rows = store.query(f'SELECT * FROM "{name}" WHERE file_id = ? AND record = ? '
                               "ORDER BY ts", list(key)).to_pylist()
            found.setdefault(i, []).extend((name, r) for r in rows)
    file_ids = sorted({r["file_id"] for rows in found.values() for _, r in rows
                       if r.get("file_id") is not None})
    paths = source_paths(store, file_ids)
    for i, rows in found.items():
        trails[i].rows = [StoredRow(table=name, row=r, source=paths.get(r.get("file_id", -1)))
                          for name, r in rows]
    return ExplainedFinding(finding=finding, trails=trails)


def source_paths(store: Store, file_ids: Sequence[int]) -> dict[int, str]:
    if not file_ids:
        return {}
    rows = store.query("SELECT id, path FROM source_file WHERE list_contains(?, id)",
                       [list(file_ids)]).to_pylist()
    return {int(r["id"]): str(r["path"]) for r in rows}


def incident_of(store: Store, incident_id: str) -> tuple[dict[str, Any], list[FindingView]]:
    """An incident and its findings in its order (strongest first)."""
    rows = store.query("SELECT * FROM incident WHERE id = ?", [incident_id]).to_pylist()
    if not rows:
        raise ConfigError(f"no incident {incident_id!r}")
    inc = incident_doc(rows[0])
    by_id = findings_by_id(store, inc["findings"])
    return inc, [by_id[i] for i in inc["findings"] if i in by_id]


# -- text --------------------------------------------------------------------------------

def _indent(text: str, prefix: str = "    ") -> Iterator[str]:
    for line in (text or "").splitlines() or [""]:
        yield prefix + clean(line)


def finding_lines(ex: ExplainedFinding) -> Iterator[str]:
    d = ex.finding.doc
    yield clean(f"finding {d['id']}  [{d['severity']}]  {d['detector']}")
    yield clean(f"  {d['title']}")
    yield clean(f"  ATT&CK {d['technique'] or '-'}  strategy {d['strategy'] or '-'}  "
                f"confidence {d['confidence']:.2f}"
                + ("  sanctioned (declared infrastructure)" if d["sanctioned"] else ""))
    yield clean(f"  seen {d['first_seen']} .. {d['last_seen']}"
                + (f"  incident {ex.finding.incident}" if ex.finding.incident else ""))
    yield clean(f"  hosts: {', '.join(ex.finding.hosts) or '-'}")
    yield clean("  entities: " + orjson.dumps(d["entities"], option=orjson.OPT_SORT_KEYS)
                .decode())
    yield "  explanation:"
    yield from _indent(d["explanation"])
    yield f"  evidence ({len(ex.trails)} records):"
    for n, t in enumerate(ex.trails, 1):
        e = t.evidence
        ref = (f"uid {e['uid']}" if e.get("uid") else
               f"event {e['event']}" if e.get("event") else "")
        table = e.get("table") or ""
        head = " ".join(p for p in (table, ref) if p)
        yield clean(f"   {n:>2}. {head}: {e.get('summary', '')}" if head
                    else f"   {n:>2}. {e.get('summary', '')}")
        if not t.rows and e.get("event") and not e.get("uid") \
                and _event_key(e["event"]) is None:
            yield "       (not a <file_id>:<record> reference: nothing to look up)"
        elif not t.rows and (e.get("uid") or e.get("event")):
            yield "       (no stored row: the input may have been removed from the store)"
        for r in t.rows:
            yield "       " + r.line()
    mit = d["mitigation"]
    yield clean("  mitigation: " + (", ".join(str(i) for i in mit.get("ids", [])) or "-"))
    for a in mit.get("actions", []):
        if isinstance(a, dict):
            yield clean(f"    [{a.get('kind', '')}]")
            yield from _indent(str(a.get("text", "")), "      ")


def incident_lines(inc: dict[str, Any], explained: Sequence[ExplainedFinding]) -> Iterator[str]:
    yield clean(f"incident {inc['id']}  [{inc['severity']}]  risk {inc['risk']:.0f}  "
                f"{inc['kind']} {inc['key']}")
    yield clean(f"  {inc['title']}")
    yield clean(f"  seen {inc['first_seen']} .. {inc['last_seen']}  techniques "
                f"{', '.join(inc['techniques']) or '-'}"
                + ("  sanctioned" if inc["sanctioned"] else ""))
    yield clean(f"  hosts: {', '.join(inc['hosts']) or '-'}")
    for key in INCIDENT_FACTS:
        if inc.get(key):
            yield clean(f"  {key.replace('_', ' ')}: {'; '.join(inc[key])}")
    yield f"  {len(explained)} findings, strongest first"
    for ex in explained:
        yield ""
        yield from finding_lines(ex)
