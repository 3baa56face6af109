"""A self-contained HTML report: one file to mail or archive, openable offline.

Theory of operation: :func:`build_report` gathers what the report shows from the store (findings
through the same :func:`~hopguard.report.findings.load_findings` as the console, their incidents
riskiest first, the ingested inputs from ``source_file`` and the time range the data covers);
:func:`render_html` fills ``templates/report.html.j2``. Chain incidents are drawn as an inline SVG
path laid out here (:func:`chain_diagram`): a box per host in path order, an arrow per hop labelled
with the port the next host was reached on, and each relay's kind (the detector that saw it, or
the ``kind`` its finding names) under its box. Ports and kinds come from the chain finding's own
entities when it carries them (``ports``, ``hops``) and otherwise from the relay and proxy
findings of the same incident.

Jinja2 with autoescaping on is used rather than string building because every value here may be
attacker-controlled (SNI, user agents, host names, URIs) and autoescaping makes escaping the
default instead of something each line of code must remember; it also keeps the markup in one
readable template. The report has no external resources at all: CSS and SVG are inline and there
is no script, so it renders the same offline and leaks nothing when opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
from jinja2 import Environment, StrictUndefined

from hopguard import __version__
from hopguard.model import TABLES
from hopguard.report.findings import (
    SEVERITIES,
    FindingFilter,
    FindingView,
    findings_by_id,
    iso,
    load_findings,
    load_incidents,
)
from hopguard.store import Store

TEMPLATE = "report.html.j2"

# layout of a chain diagram (SVG user units)
_BOX_H = 44
_GAP = 110  # room between boxes for the arrow and its port label
_PAD = 12
_CHAR_W = 7.4  # monospace 12px


@dataclass(frozen=True, slots=True, kw_only=True)
class Box:
    x: float
    y: float
    w: float
    h: float
    label: str  # the address
    role: str  # client, relay kind, destination


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrow:
    x1: float
    x2: float
    y: float
    label: str  # ":port" or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainDiagram:
    ident: str
    width: float
    height: float
    boxes: tuple[Box, ...]
    arrows: tuple[Arrow, ...]


@dataclass(slots=True, kw_only=True)
class ReportData:
    title: str
    generated: str
    store: str
    findings: list[FindingView]
    incidents: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    first: str | None
    last: str | None
    notes: list[str] = field(default_factory=list)
    diagrams: dict[str, ChainDiagram] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(reversed(SEVERITIES), 0)
        for f in self.findings:
            c[f.severity] = c.get(f.severity, 0) + 1
        return c


def _port(v: Any) -> int | None:
    try:
        return int(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None


def hop_details(chain: Sequence[str], members: Sequence[FindingView]
                ) -> tuple[list[int | None], dict[str, str]]:
    """Per hop the destination port, per relay host its kind, from an incident's findings."""
    ports: list[int | None] = [None] * max(0, len(chain) - 1)
    kinds: dict[str, str] = {}
    for f in members:
        e = f.doc["entities"]
        if isinstance(e.get("chain"), list) and list(e["chain"]) == list(chain):
            listed = e.get("ports")
            if isinstance(listed, list):
                for i, p in enumerate(listed[:len(ports)]):
                    ports[i] = ports[i] or _port(p)
            for r in e.get("relays") or []:  # [{relay, kind}] in path order
                if isinstance(r, dict) and r.get("relay") in chain[1:-1] and r.get("kind"):
                    kinds.setdefault(str(r["relay"]), str(r["kind"]))
            dest = e.get("destination")  # "ip:port" of the last hop
            if ports and isinstance(dest, str) and dest.rpartition(":")[0].strip("[]") \
                    == chain[-1]:
                ports[-1] = ports[-1] or _port(dest.rpartition(":")[2])
            hops = e.get("hops")
            if isinstance(hops, list):
                for i, h in enumerate(hops[:len(ports)]):
                    if isinstance(h, dict):
                        ports[i] = ports[i] or _port(h.get("port", h.get("dst_port")))
                        if h.get("kind") and i + 1 < len(chain) - 1:
                            kinds.setdefault(chain[i + 1], str(h["kind"]))
    for f in members:
        e = f.doc["entities"]
        kind = str(e.get("kind") or e.get("protocol") or f.doc["detector"])
        relay = e.get("relay") or e.get("proxy")
        if not isinstance(relay, str) or relay not in chain:
            continue
        kinds.setdefault(relay, kind)
        i = chain.index(relay)
        if i > 0 and ports[i - 1] is None:  # the hop into the relay
            client = e.get("client")
            if client in (None, chain[i - 1]):
                ports[i - 1] = _port(e.get("in_port", e.get("port")))
        if i < len(ports) and ports[i] is None and e.get("upstream") in (None, chain[i + 1]):
            ports[i] = _port(e.get("up_port"))
    return ports, kinds


def chain_diagram(ident: str, chain: Sequence[str], members: Sequence[FindingView]
                  ) -> ChainDiagram:
    ports, kinds = hop_details(chain, members)
    boxes: list[Box] = []
    arrows: list[Arrow] = []
    x = float(_PAD)
    y = 30.0
    for i, host in enumerate(chain):
        if i == 0:
            role = "origin"
        elif i == len(chain) - 1:
            role = "destination"
        else:
            role = kinds.get(host, "relay")
        w = max(120.0, _CHAR_W * max(len(host), len(role)) + 20)
        boxes.append(Box(x=x, y=y, w=w, h=_BOX_H, label=host, role=role))
        if i < len(chain) - 1:
            p = ports[i]
            arrows.append(Arrow(x1=x + w, x2=x + w + _GAP, y=y + _BOX_H / 2,
                                label=f":{p}" if p is not None else ""))
            x += w + _GAP
        else:
            x += w
    return ChainDiagram(ident=ident, width=x + _PAD, height=y + _BOX_H + 30,
                        boxes=tuple(boxes), arrows=tuple(arrows))


def _chain_of(inc: dict[str, Any], members: Sequence[FindingView]) -> list[str]:
    for f in members:
        c = f.doc["entities"].get("chain")
        if f.doc["detector"].startswith("chain.") and isinstance(c, list) and c:
            return [str(h) for h in c]
    return [h.strip() for h in str(inc["key"]).split(">") if h.strip()]


def _data_range(store: Store) -> tuple[str | None, str | None]:
    """The first and last event time over every telemetry table (min/max use column stats)."""
    parts = " UNION ALL ".join(f'SELECT min(ts) AS lo, max(ts) AS hi FROM "{n}"'
                               for n in TABLES if n not in ("finding", "incident"))
    row = store.query(f"SELECT min(lo) AS lo, max(hi) AS hi FROM ({parts})").to_pylist()[0]
    return iso(row["lo"]), iso(row["hi"])


def build_report(store: Store, flt: FindingFilter | None = None, *,
                 notes: Sequence[str] | None = None, title: str = "hopguard report",
                 now: datetime | None = None) -> ReportData:
    if notes is None:
        from hopguard.analytics.run import stored_notes
        notes = stored_notes(store)
    findings = load_findings(store, flt)
    shown = {f.id for f in findings}
    wanted = {f.incident for f in findings if f.incident}
    incidents = load_incidents(store, wanted) if flt is not None else load_incidents(store)
    diagrams: dict[str, ChainDiagram] = {}
    by_id = {f.id: f for f in findings}
    missing = [i for inc in incidents for i in inc["findings"] if i not in by_id]
    by_id.update(findings_by_id(store, missing))
    for inc in incidents:
        inc["shown"] = [i for i in inc["findings"] if i in shown]
        if inc["kind"] == "chain":
            members = [by_id[i] for i in inc["findings"] if i in by_id]
            chain = _chain_of(inc, members)
            if len(chain) >= 2:
                diagrams[inc["id"]] = chain_diagram(inc["id"], chain, members)
    sources = store.query("SELECT id, path, format, sensor, rows, errors, ingested_at "
                          "FROM source_file ORDER BY id").to_pylist()
    for s in sources:
        s["ingested_at"] = iso(s["ingested_at"])
    first, last = _data_range(store)
    generated = iso((now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0))
    return ReportData(title=title, generated=generated or "", store=store.path,
                      findings=findings, incidents=incidents, sources=sources, first=first,
                      last=last, notes=list(notes or []), diagrams=diagrams)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _entity(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


def _environment() -> Environment:
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["json"] = _json
    env.filters["entity"] = _entity
    return env


def render_html(data: ReportData) -> str:
    source = resources.files("hopguard.report").joinpath("templates", TEMPLATE).read_text(
        encoding="utf-8")
    template = _environment().from_string(source)
    return template.render(r=data, severities=list(reversed(SEVERITIES)), version=__version__)
