"""Findings grouped into incidents, with a risk score.

Theory of operation: a chain finding makes a *chain incident* that also takes every finding
about a host on that path (the relays that make up the chain, the proxies and tunnels on its
hops). Every other finding joins the *host incident* of its primary host (the relay, the proxy,
the hub, else the first host it names), split where the host is quiet for longer than
``correlate.incident_gap``. Risk is 0-100: the strongest finding's severity and confidence set the
base, each further distinct detector on the same incident adds corroboration (independent
evidence of the same activity), and an incident made only of sanctioned findings is capped low.
Findings are pure values here: the runner stores the incidents and each finding's incident id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hopguard.analytics.base import SEVERITIES, SEVERITY_RANK, Finding
from hopguard.config import Settings

_BASE = {"info": 5.0, "low": 20.0, "medium": 45.0, "high": 70.0, "critical": 90.0}
_PRIMARY_KEYS = ("relay", "proxy", "hub", "host", "client", "src")


def primary_of(entities: dict[str, Any], hosts: Sequence[str]) -> str:
    """The host a finding is about: the relay, the proxy, the hub ... else its first host."""
    for key in _PRIMARY_KEYS:
        v = entities.get(key)
        if isinstance(v, str) and v:
            return v
    return hosts[0] if hosts else "?"


def primary_host(f: Finding) -> str:
    return primary_of(f.entities, f.hosts)


@dataclass(slots=True)
class _Group:
    kind: str
    key: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def first(self) -> datetime:
        return min(f.first_seen for f in self.findings)

    @property
    def last(self) -> datetime:
        return max(f.last_seen for f in self.findings)


def risk(findings: Sequence[Finding]) -> float:
    """0-100 from the strongest finding, raised by each further independent detector."""
    live = [f for f in findings if not f.sanctioned] or list(findings)
    top = max(live, key=lambda f: (SEVERITY_RANK[f.severity], f.confidence))
    score = _BASE[top.severity] + 10.0 * top.confidence
    detectors = {f.detector for f in live} - {top.detector}
    score += min(25.0, 8.0 * len(detectors))
    if all(f.sanctioned for f in findings):
        score = min(score, 15.0)
    return round(min(100.0, score), 1)


def _severity_of(score: float) -> str:
    if score >= 85:
        return "critical"
    if score >= 65:
        return "high"
    if score >= 40:
        return "medium"
    if score >= 15:
        return "low"
    return "info"


def correlate(findings: Sequence[Finding], settings: Settings) -> list[dict[str, Any]]:
    """Group ``findings`` into incidents (sets each finding's ``incident``) and return the
    incident rows for the ``incident`` table, riskiest first."""
    gap = settings.correlate.incident_gap
    groups: list[_Group] = []
    on_chain: dict[str, _Group] = {}
    for f in sorted(findings, key=lambda f: f.first_seen):
        chain = f.entities.get("chain")
        if f.detector.startswith("chain.") and isinstance(chain, list) and chain:
            g = _Group("chain", " > ".join(chain), [f])
            groups.append(g)
            for h in chain[1:-1]:  # the relays on the path
                on_chain.setdefault(h, g)
    by_host: dict[str, list[_Group]] = {}
    for f in sorted(findings, key=lambda f: f.first_seen):
        if f.detector.startswith("chain.") and f.entities.get("chain"):
            continue
        host = primary_host(f)
        chain_group = on_chain.get(host)
        if chain_group is not None and f.first_seen <= chain_group.last and \
                f.last_seen >= chain_group.first:
            chain_group.findings.append(f)
            continue
        series = by_host.setdefault(host, [])
        if series and (f.first_seen - series[-1].last).total_seconds() <= gap:
            series[-1].findings.append(f)
        else:
            g = _Group("host", host, [f])
            series.append(g)
            groups.append(g)
    rows: list[dict[str, Any]] = []
    for g in groups:
        score = risk(g.findings)
        ordered = sorted(g.findings, key=lambda f: (-SEVERITY_RANK[f.severity], -f.confidence))
        ident = hashlib.sha256(
            f"{g.kind}|{g.key}|{min(f.id for f in g.findings)}".encode()).hexdigest()[:16]
        for f in g.findings:
            f.incident = ident
        hosts: list[str] = []
        for f in ordered:
            hosts.extend(h for h in f.hosts if h not in hosts)
        top = ordered[0]
        title = (f"Relay chain {g.key}" if g.kind == "chain"
                 else f"{g.key}: {top.title}" + (f" (+{len(ordered) - 1} more)"
                                                 if len(ordered) > 1 else ""))
        rows.append({
            "ts": g.first, "sensor": top.sensor or None, "file_id": None, "record": None,
            "id": ident, "title": title, "kind": g.kind, "key": g.key, "risk": score,
            "severity": _severity_of(score), "first_seen": g.first, "last_seen": g.last,
            "hosts": hosts, "techniques": sorted({f.technique for f in g.findings}),
            "findings": [f.id for f in ordered],
            "sanctioned": all(f.sanctioned for f in g.findings),
        })
    rows.sort(key=lambda r: -float(r["risk"]))
    return rows


__all__ = ["SEVERITIES", "correlate", "primary_host", "primary_of", "risk"]
