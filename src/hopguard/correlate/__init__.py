"""Findings grouped into incidents, with a risk score.

Theory of operation: a chain finding makes a *chain incident* that also takes every finding
about a host on that path (the relays that make up the chain, the proxies and tunnels on its
hops). Every other finding joins the *host incident* of its primary host (the relay, the proxy,
the hub, else the first host it names), split where the host is quiet for longer than
``correlate.incident_gap``. Risk is 0-100: the strongest finding's severity and confidence set the
base, each further distinct detector on the same incident adds corroboration (independent
evidence of the same activity), and an incident made only of sanctioned findings is capped low.
Findings are pure values here: the runner stores the incidents and each finding's incident id.

Endpoint findings (``endpoint.*`` from process, connection and registry events; ``config.*``
from configuration changes) name a machine and, where the telemetry ties the name to an
address, that address (``entities["ip"]``; ``analytics/hosts.py``). They are placed after the
network findings, so that the tool, the process, the user and the change that set a relay up
join the incident of the relay they set up: the network relay with the same legs (a process
relay), a chain that address relays for, the incident keyed by that address, a chain it starts,
or one whose relay or proxy has that address as its client (``ssh -L`` runs on the client; its
relay is the server), within ``correlate.endpoint_window`` of the network findings. The one
whose addresses the command line names most wins, then the closest relation in that order, an
unsanctioned incident before a sanctioned one, the nearest in time. Otherwise they make an
incident of their own. An incident where host and wire agree is worth more than either alone:
risk gains a fixed bonus when both kinds are in it, and the incident names its tools,
processes, users, changes and legs.
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
_PRIMARY_KEYS = ("relay", "proxy", "hub", "ip", "client", "src", "host")
_ENDPOINT_FAMILIES = ("endpoint.", "config.")
# risk added when endpoint and network findings describe the same activity
_AGREEMENT_BONUS = 12.0


def is_endpoint(f: Finding) -> bool:
    """A finding from host telemetry (process, registry, configuration) rather than the wire."""
    return f.detector.startswith(_ENDPOINT_FAMILIES)


def primary_of(entities: dict[str, Any], hosts: Sequence[str]) -> str:
    """The host a finding is about: the relay, the proxy, the hub, an endpoint's address ...
    else its first host (an endpoint whose address is unknown is keyed by its name)."""
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
    # the group's relay/proxy clients, computed once endpoint findings are being placed (only
    # network findings count, and those are all in place by then)
    clients: set[str] | None = None

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
    if any(is_endpoint(f) for f in live) and not all(is_endpoint(f) for f in live):
        score += _AGREEMENT_BONUS
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


def _near(f: Finding, g: _Group, window: float) -> bool:
    """``f`` lies within ``window`` seconds of the group's time span."""
    return ((f.first_seen - g.last).total_seconds() <= window
            and (g.first - f.last_seen).total_seconds() <= window)


def _clients_of(g: _Group) -> set[str]:
    """Addresses that use the relays and proxies of a group (where a client-side tool runs)."""
    if g.clients is not None:
        return g.clients
    out: set[str] = set()
    for f in g.findings:
        if is_endpoint(f):
            continue
        for key in ("client", "clients"):
            v = f.entities.get(key)
            if isinstance(v, str):
                out.add(v)
            elif isinstance(v, list):
                out.update(x for x in v if isinstance(x, str))
    g.clients = out
    return out


def _mentions(f: Finding, g: _Group, host: str) -> int:
    """How many other addresses of the group the endpoint finding's command line, change or
    object names (``ssh -L 8022:10.10.5.9:22 root@10.10.2.7`` names the relay and its
    upstream)."""
    text = " ".join(str(f.entities.get(k) or "") for k in ("command_line", "change", "detail",
                                                           "object"))
    if not text.strip():
        return 0
    others = {h for x in g.findings if not is_endpoint(x) for h in x.hosts} - {host}
    if g.kind == "chain":
        others |= set(g.key.split(" > ")) - {host}
    return sum(1 for h in others if h and h in text)


_RELAY_KEY = ("relay", "client", "in_port", "upstream", "up_port")


def _same_relay(f: Finding, g: _Group) -> bool:
    """A process relay (endpoint.relay) and a network relay pair with the same legs."""
    if not all(f.entities.get(k) is not None for k in ("relay", "upstream")):
        return False
    key = tuple(f.entities.get(k) for k in _RELAY_KEY)
    return any(not is_endpoint(x) and tuple(x.entities.get(k) for k in _RELAY_KEY) == key
               for x in g.findings)


def _relation(f: Finding, g: _Group, host: str, window: float, gap: float) -> int:
    """How closely an endpoint finding on ``host`` relates to a network incident (0: not)."""
    if _same_relay(f, g) and _near(f, g, max(window, gap)):
        return 5
    if g.kind == "chain" and _near(f, g, window):
        path = g.key.split(" > ")
        if host in path[1:-1]:
            return 4  # a relay on the path
        if host == path[0]:
            return 2  # where the chain starts (proxychains, ssh -L on the client)
    if g.kind == "host" and g.key == host and _near(f, g, max(window, gap)):
        return 3
    if g.kind == "host" and host in _clients_of(g) and _near(f, g, window):
        return 1
    return 0


def _place_endpoint(f: Finding, host: str, groups: list[_Group],
                    by_host: dict[str, list[_Group]], window: float, gap: float) -> None:
    """Put an endpoint finding with the network activity it explains (see the module doc).

    Candidates, near in time: the network relay with the same legs (a process relay), a chain
    the host relays for, the host's own incident, a chain it starts, an incident whose relay or
    proxy it is a client of. The finding goes to the one whose addresses its command line names
    most, else the closest relation in that order, an unsanctioned one before a sanctioned one,
    then the nearest in time."""
    best: tuple[tuple[int, int, int, float], _Group] | None = None
    for g in groups:
        if all(is_endpoint(x) for x in g.findings):
            continue
        relation = _relation(f, g, host, window, gap)
        if not relation:
            continue
        distance = max(0.0, (g.first - f.last_seen).total_seconds(),
                       (f.first_seen - g.last).total_seconds())
        rank = (_mentions(f, g, host), relation,
                int(not all(x.sanctioned for x in g.findings)), -distance)
        if best is None or rank > best[0]:
            best = (rank, g)
    if best is not None:
        best[1].findings.append(f)
        return
    series = by_host.setdefault(host, [])
    for g in series:  # an endpoint-only incident of this host
        if _near(f, g, gap):
            g.findings.append(f)
            return
    g = _Group("host", host, [f])
    series.append(g)
    groups.append(g)


def _facts(findings: Sequence[Finding]) -> dict[str, list[str]]:
    """What the incident's findings name: host names, tools, processes, users, changes, legs."""
    facts: dict[str, list[str]] = {k: [] for k in (
        "host_names", "tools", "processes", "users", "changes", "legs")}

    def add(key: str, value: object) -> None:
        if isinstance(value, str) and value and value not in facts[key]:
            facts[key].append(value)

    for f in findings:
        e = f.entities
        if is_endpoint(f):
            add("host_names", e.get("host"))
            add("tools", e.get("tool"))
            if e.get("process"):
                proc = str(e["process"])
                if e.get("pid") is not None:
                    proc += f" (pid {e['pid']})"
                if e.get("user"):
                    proc += f" as {e['user']}"
                add("processes", proc)
            add("users", e.get("user"))
            if f.detector.startswith("config."):
                add("changes", f"{e.get('host') or '?'}: {e.get('change') or f.title}")
        if "relay" in e and "client" in e and not f.detector.startswith("endpoint."):
            up = e.get("upstream")
            leg = f"{e['client']} > {e['relay']}:{e.get('in_port', '?')}"
            if up:
                leg += f" > {up}:{e.get('up_port', '?')}"
            add("legs", leg)
        chain = e.get("chain")
        if f.detector.startswith("chain.") and isinstance(chain, list):
            add("legs", " > ".join(str(h) for h in chain))
    return facts


def _title(g: _Group, ordered: Sequence[Finding], facts: dict[str, list[str]]) -> str:
    if g.kind == "chain":
        title = f"Relay chain {g.key}"
    else:
        title = f"{g.key}: {ordered[0].title}" + (
            f" (+{len(ordered) - 1} more)" if len(ordered) > 1 else "")
    if facts["tools"] and any(not is_endpoint(f) for f in g.findings):
        who = f" by {', '.join(facts['users'][:2])}" if facts["users"] else ""
        title += f"; set up with {', '.join(facts['tools'][:3])}{who}"
    return title


def correlate(findings: Sequence[Finding], settings: Settings) -> list[dict[str, Any]]:
    """Group ``findings`` into incidents (sets each finding's ``incident``) and return the
    incident rows for the ``incident`` table, riskiest first."""
    gap = settings.correlate.incident_gap
    window = settings.correlate.endpoint_window
    groups: list[_Group] = []
    on_chain: dict[str, _Group] = {}
    ordered_in = sorted(findings, key=lambda f: f.first_seen)
    for f in ordered_in:
        chain = f.entities.get("chain")
        if f.detector.startswith("chain.") and isinstance(chain, list) and chain:
            g = _Group("chain", " > ".join(chain), [f])
            groups.append(g)
            for h in chain[1:-1]:  # the relays on the path
                on_chain.setdefault(h, g)
    by_host: dict[str, list[_Group]] = {}
    endpoint: list[Finding] = []
    for f in ordered_in:
        if f.detector.startswith("chain.") and f.entities.get("chain"):
            continue
        if is_endpoint(f):
            endpoint.append(f)
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
    for f in endpoint:
        _place_endpoint(f, primary_host(f), groups, by_host, window, gap)
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
        facts = _facts(ordered)
        rows.append({
            "ts": g.first, "sensor": top.sensor or None, "file_id": None, "record": None,
            "id": ident, "title": _title(g, ordered, facts), "kind": g.kind, "key": g.key,
            "risk": score, "severity": _severity_of(score), "first_seen": g.first,
            "last_seen": g.last, "hosts": hosts,
            "techniques": sorted({f.technique for f in g.findings}),
            "findings": [f.id for f in ordered],
            "sanctioned": all(f.sanctioned for f in g.findings), **facts,
        })
    rows.sort(key=lambda r: -float(r["risk"]))
    return rows


__all__ = ["SEVERITIES", "correlate", "is_endpoint", "primary_host", "primary_of", "risk"]
