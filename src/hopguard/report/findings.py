"""Stored findings for people (a console table) and for tools (JSON lines, plain or ECS).

Theory of operation: the ``finding`` table keeps entities, evidence and mitigation as JSON text.
:func:`load_findings` filters and orders in SQL (severity rank, then first seen) and turns each row
into the contract object of ARCHITECTURE.md "Findings": the fourteen contract keys in contract
order, the JSON columns decoded and every time ISO 8601 UTC with a 'Z'. Everything downstream
(the table, JSON lines, the HTML report, ``explain``) works on those objects, so each output shows
the same thing. Rows written by a broken producer (bad JSON, NULLs, unknown severities) are shown
as they are, never an exception: a report must not be lost to one bad row.

Findings carry attacker-controlled text (SNI, user agents, host names). The console renderers
pass it as :class:`rich.text.Text` (never markup) with control characters made visible, so a
planted ``[red]`` or an ANSI escape cannot restyle or rewrite the analyst's terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson
from rich.table import Table
from rich.text import Text

from hopguard.store import Store

SEVERITIES = ("info", "low", "medium", "high", "critical")  # as analytics.base.SEVERITIES
SEVERITY_STYLE = {"critical": "bold white on red", "high": "bold red", "medium": "yellow",
                  "low": "cyan", "info": "dim"}

# The contract's keys, in the contract's order (ARCHITECTURE.md "Findings").
CONTRACT_KEYS = ("id", "detector", "title", "technique", "strategy", "severity", "confidence",
                 "first_seen", "last_seen", "entities", "evidence", "explanation", "mitigation",
                 "sanctioned")
INCIDENT_KEYS = ("id", "title", "kind", "key", "risk", "severity", "first_seen", "last_seen",
                 "hosts", "techniques", "findings", "sanctioned")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingFilter:
    """Which findings to show. ``None`` or empty means "any"."""

    severity: str | None = None  # the minimum
    detector: str = ""  # a name prefix: "proxy" selects proxy.socks, proxy.hub ...
    host: str = ""  # one of the finding's hosts
    incident: str = ""  # an incident id or a prefix of one
    sanctioned: bool | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters."""
        conds: list[str] = []
        params: list[Any] = []
        if self.severity:
            conds.append(f"{_RANK_SQL} >= ?")
            params.append(SEVERITIES.index(self.severity))
        if self.detector:
            conds.append("starts_with(detector, ?)")
            params.append(self.detector)
        if self.host:
            conds.append("list_contains(hosts, ?)")
            params.append(self.host)
        if self.incident:
            conds.append("starts_with(incident, ?)")
            params.append(self.incident.lower())
        if self.sanctioned is not None:
            conds.append("coalesce(sanctioned, false) = ?")
            params.append(self.sanctioned)
        return (" AND ".join(conds) or "true"), params


# an unknown severity ranks below info: shown unless a minimum is asked for
_RANK_SQL = ("coalesce(list_position(['info', 'low', 'medium', 'high', 'critical'], severity) - 1,"
             " -1)")


def iso(value: Any) -> str | None:
    """A stored (naive UTC) timestamp as ISO 8601 with 'Z', always to the microsecond as
    report/ecs.py writes it: one fixed width, so the text sorts as the times do."""
    if not isinstance(value, datetime):
        return None if value is None else str(value)
    text: str = value.replace(tzinfo=None).isoformat(timespec="microseconds")
    return text + "Z"


def _decode(text: Any, default: Any) -> Any:
    """A JSON column's value; text that is not the expected JSON is kept under ``_raw``."""
    if text is None or text == "":
        return default
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"_raw": str(text)} if isinstance(default, dict) else [{"_raw": str(text)}]
    return value if isinstance(value, type(default)) else default


def contract(row: dict[str, Any]) -> dict[str, Any]:
    """One ``finding`` row as the contract's JSON object."""
    mitigation = _decode(row.get("mitigation"), {})
    mitigation.setdefault("ids", [])
    mitigation.setdefault("actions", [])
    confidence = row.get("confidence")
    return {
        "id": row.get("id") or "",
        "detector": row.get("detector") or "",
        "title": row.get("title") or "",
        "technique": row.get("technique") or "",
        "strategy": row.get("strategy") or "",
        "severity": row.get("severity") or "info",
        "confidence": float(confidence) if confidence is not None else 0.0,
        "first_seen": iso(row.get("first_seen")),
        "last_seen": iso(row.get("last_seen")),
        "entities": _decode(row.get("entities"), {}),
        "evidence": [e for e in _decode(row.get("evidence"), []) if isinstance(e, dict)],
        "explanation": row.get("explanation") or "",
        "mitigation": mitigation,
        "sanctioned": bool(row.get("sanctioned")),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingView:
    """A finding as the contract says, plus what grouping needs (not part of the JSON)."""

    doc: dict[str, Any]
    hosts: tuple[str, ...]
    incident: str | None

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def severity(self) -> str:
        return str(self.doc["severity"])


def _view(row: dict[str, Any]) -> FindingView:
    return FindingView(doc=contract(row), hosts=tuple(h for h in row.get("hosts") or [] if h),
                       incident=row.get("incident"))


def load_findings(store: Store, flt: FindingFilter | None = None) -> list[FindingView]:
    """Findings matching ``flt``, most severe first, then by first seen."""
    where, params = (flt or FindingFilter()).where()
    rows = store.query(
        f"SELECT * FROM finding WHERE {where} "
        f"ORDER BY {_RANK_SQL} DESC, first_seen NULLS LAST, id", params).to_pylist()
    return [_view(r) for r in rows]


def findings_by_id(store: Store, ids: Sequence[str]) -> dict[str, FindingView]:
    if not ids:
        return {}
    rows = store.query("SELECT * FROM finding WHERE list_contains(?, id)", [list(ids)])
    return {v.id: v for v in (_view(r) for r in rows.to_pylist())}


def incident_doc(row: dict[str, Any]) -> dict[str, Any]:
    risk = row.get("risk")
    return {
        "id": row.get("id") or "", "title": row.get("title") or "",
        "kind": row.get("kind") or "host", "key": row.get("key") or "",
        "risk": float(risk) if risk is not None else 0.0,
        "severity": row.get("severity") or "info",
        "first_seen": iso(row.get("first_seen")), "last_seen": iso(row.get("last_seen")),
        "hosts": [h for h in row.get("hosts") or [] if h],
        "techniques": [t for t in row.get("techniques") or [] if t],
        "findings": [f for f in row.get("findings") or [] if f],
        "sanctioned": bool(row.get("sanctioned")),
        **{k: [v for v in row.get(k) or [] if v] for k in INCIDENT_FACTS},
    }


# what an incident names beyond its findings (correlate._facts), in the order reports show them
INCIDENT_FACTS = ("host_names", "tools", "processes", "users", "changes", "legs")


def load_incidents(store: Store, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Incidents (all, or those with these ids), riskiest first."""
    if ids is None:
        rows = store.query("SELECT * FROM incident ORDER BY risk DESC NULLS LAST, id")
    else:
        rows = store.query("SELECT * FROM incident WHERE list_contains(?, id) "
                           "ORDER BY risk DESC NULLS LAST, id", [sorted(set(ids))])
    return [incident_doc(r) for r in rows.to_pylist()]


# -- outputs ------------------------------------------------------------------------------

def clean(text: Any) -> str:
    """Text for a terminal: control characters (ANSI escapes, carriage returns) made visible."""
    s = "" if text is None else str(text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def severity_text(severity: str) -> Text:
    return Text(clean(severity), style=SEVERITY_STYLE.get(severity, ""))


def findings_table(findings: Sequence[FindingView], *, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for name, kw in (("severity", {}), ("id", {"no_wrap": True}), ("detector", {}),
                     ("technique", {}), ("title", {"overflow": "fold"}),
                     ("hosts", {"overflow": "fold"}), ("first seen (UTC)", {"no_wrap": True}),
                     ("conf", {"justify": "right"}), ("incident", {"no_wrap": True})):
        table.add_column(name, **kw)
    for f in findings:
        d = f.doc
        title_text = Text(clean(d["title"]))
        if d["sanctioned"]:
            title_text.append(" (sanctioned)", style="dim")
        table.add_row(severity_text(f.severity), Text(clean(f.id[:12])),
                      Text(clean(d["detector"])), Text(clean(d["technique"])), title_text,
                      Text(clean(", ".join(f.hosts))),
                      Text(clean((d["first_seen"] or "").replace("T", " ")[:23])),
                      Text(f"{d['confidence']:.2f}"), Text(clean((f.incident or "")[:8])))
    return table


def _dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)


def jsonl_lines(findings: Iterable[FindingView], *, ecs: bool = False) -> Iterator[bytes]:
    """One JSON object per finding (with its newline): the contract, or ECS field names."""
    if not ecs:
        for f in findings:
            yield _dumps(f.doc) + b"\n"
        return
    from hopguard.report.ecs import to_ecs
    for f in findings:
        row = {**f.doc, "hosts": list(f.hosts), "incident": f.incident}
        for doc in to_ecs("finding", [row]):
            doc["event"]["kind"] = "alert"
            yield _dumps(doc) + b"\n"


def write_jsonl(findings: Iterable[FindingView], target: IO[bytes], *, ecs: bool = False) -> int:
    n = 0
    for line in jsonl_lines(findings, ecs=ecs):
        target.write(line)
        n += 1
    return n
