"""Score a lab run's findings against its truth.json: what was planted and found (recall), what
was reported at medium or higher and is real (precision), and findings about benign hosts.

A planted item is found when a finding names it the way the contract says:
- a relay by its five entities;
- a chain by its path (a one-relay chain through a CDN edge, whose onward leg no sensor sees,
  by the fronting finding that names its client and edge);
- an unsanctioned proxy by (proxy, port) at medium or higher, the sanctioned proxy by a finding
  marked sanctioned;
- domain fronting by a fronting.* finding naming the client;
- a beacon by a proxy.beacon finding naming the client and the inner target;
- a Tor client by an intel.tor finding naming the client and the relay the run's consensus
  lists (the feeds a run writes under ``intel/`` are imported before the detectors run).
A medium+ finding is true when it matches a planted item or is about a host the scenario used
(not in ``benign_hosts``); it is a false alarm when its primary host is benign.

The endpoint side (``endpoint_score``): every proxy, relay or tunnel tool the scenario ran
(``truth.json`` "tools", classified by :func:`proxy_tools`; plain clients such as curl, a plain
ssh login, dig or ``ip route`` are not proxy tools) must give an endpoint finding (``endpoint.*``
or ``config.*``) on its host that names its pid or its binary; and each planted relay's network
finding must share its incident with an endpoint finding about the relay host or its client.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopguard.analytics.base import SEVERITY_RANK
from hopguard.analytics.run import analyze
from hopguard.config import load_settings
from hopguard.correlate import primary_of
from hopguard.ingest.pipeline import ingest_file
from hopguard.intel.store import import_feed
from hopguard.store import Store
from tests.unit.analytics.util import findings as stored_findings

MEDIUM = SEVERITY_RANK["medium"]


@dataclass(slots=True)
class Score:
    scenario: str
    planted: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    alarms: int = 0  # medium+ findings
    true_alarms: int = 0
    benign_alarms: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return 1.0 if not self.planted else 1 - len(self.missed) / len(self.planted)

    @property
    def precision(self) -> float:
        return 1.0 if not self.alarms else self.true_alarms / self.alarms

    def line(self) -> str:
        found = len(self.planted) - len(self.missed)
        return (f"{self.scenario:22} recall {self.recall:.2f} ({found}/{len(self.planted)})"
                f"  precision {self.precision:.2f} ({self.true_alarms}/"
                f"{self.alarms} medium+)" + (f"  missed: {self.missed}" if self.missed else "")
                + (f"  benign alarms: {self.benign_alarms}" if self.benign_alarms else ""))


def _relay_key(e: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(e.get(k) for k in ("relay", "client", "in_port", "upstream", "up_port"))


def planted_items(truth: dict[str, Any]) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for r in truth["relays"]:
        items.append(("relay", _relay_key(r)))
    for c in truth["chains"]:
        items.append(("chain", tuple(c)))
    for p in truth["proxies"]:
        if ipaddress.ip_address(p["proxy"]).is_loopback:
            # ssh -D on the client's own loopback: no packet of it crosses a network sensor;
            # the endpoint side (the listening ssh process) is the endpoint analytics' to find
            continue
        items.append(("sanctioned-proxy" if p["sanctioned"] else "proxy", (p["proxy"], p["port"])))
    for fr in truth["fronting"]:
        items.append(("fronting", fr["client"]))
    for note in truth["notes"]:
        n = json.loads(note) if note.startswith("{") else {}
        if n.get("kind") == "beacon":
            items.append(("beacon", (n.get("client"), n.get("inner_destination"))))
        if n.get("kind") == "tor-relay":
            items.append(("tor", (n.get("client"), n.get("relay"))))
    return list(dict.fromkeys(items))


def matches(kind: str, key: Any, f: dict[str, Any]) -> bool:
    e, det = f["entities"], f["detector"]
    if kind == "relay":
        return det == "bridge.relay" and _relay_key(e) == key
    if kind == "chain":
        if det.startswith("chain.") and tuple(e.get("chain", ())) == key:
            return True
        # client -> CDN edge -> hidden origin: the edge's onward leg crosses no sensor; the
        # fronting finding names the client and the edge, and the Host it asked the edge for
        return (len(key) == 3 and det.startswith("fronting.") and e.get("client") == key[0]
                and e.get("edge") == key[1])
    if kind == "proxy":
        return (det.startswith("proxy.") and (e.get("proxy"), e.get("port")) == key
                and SEVERITY_RANK[f["severity"]] >= MEDIUM and not f["sanctioned"])
    if kind == "sanctioned-proxy":
        return (e.get("proxy"), e.get("port")) == key and bool(f["sanctioned"])
    if kind == "fronting":
        return det.startswith("fronting.") and e.get("client") == key
    if kind == "beacon":
        client, target = key
        return (det == "proxy.beacon" and e.get("client") == client
                and str(target or "").split(":")[0] in str(e.get("target", "")))
    if kind == "tor":
        client, relay = key
        return (det == "intel.tor" and e.get("client") == client
                and e.get("indicator") == relay)
    raise ValueError(kind)


def score(scenario: str, truth: dict[str, Any], findings: list[dict[str, Any]]) -> Score:
    s = Score(scenario)
    benign = {truth["hosts"][h]["ip"] for h in truth["benign_hosts"] if h in truth["hosts"]}
    items = planted_items(truth)
    for kind, key in items:
        label = f"{kind} {key}"
        s.planted.append(label)
        if not any(matches(kind, key, f) for f in findings):
            s.missed.append(label)
    for f in findings:
        if SEVERITY_RANK[f["severity"]] < MEDIUM or f["sanctioned"]:
            continue
        s.alarms += 1
        primary = primary_of(f["entities"], f["hosts"] or [])
        if any(matches(kind, key, f) for kind, key in items) or primary not in benign:
            s.true_alarms += 1
        if primary in benign:
            s.benign_alarms.append(f"{f['detector']} {primary}: {f['title']}")
    return s


def run_files(out: Path) -> list[Path]:
    """The files of a lab run that hopguard ingests (truth.json and the config are not data;
    an empty nft-monitor.log says no ruleset changed and is no format)."""
    return sorted(p for p in out.iterdir() if p.is_file() and p.stat().st_size
                  and p.name not in ("truth.json", "hopguard.toml"))


def run_feeds(out: Path) -> list[Path]:
    """The threat-intel feeds a lab run wrote (a scenario's hand-made Tor consensus)."""
    return sorted(p for p in (out / "intel").glob("*") if p.is_file())


_HUNTED: dict[Path, tuple[list[dict[str, Any]], list[str]]] = {}


def hunt(out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """What `hopguard hunt --config out/hopguard.toml out/` stores, as finding dicts, plus the
    analyzer's notes (computed once per run directory: several tests score the same run)."""
    if out not in _HUNTED:
        _HUNTED[out] = _hunt(out)
    return _HUNTED[out]


def _hunt(out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    settings = load_settings(out / "hopguard.toml", (), environ={},
                             layers=[out / "hopguard.toml"])
    store = Store.open(":memory:")
    try:
        for path in run_files(out):
            result = ingest_file(store, path, sensor="lab")
            assert result.failure is None, f"{path.name}: {result.failure}"
        for feed in run_feeds(out):
            stats = import_feed(store, feed)
            assert not stats.errors, stats.shown
        report = analyze(store, settings)
        assert not report.failed, report.failed
        return stored_findings(store), report.notes
    finally:
        store.close()


# -- the endpoint side ------------------------------------------------------------------------

_ALWAYS = {"socat", "microsocks", "danted", "sockd", "tinyproxy", "stunnel", "stunnel4",
           "proxychains", "proxychains4", "sshuttle", "chisel", "gost", "frpc", "frps"}


def proxy_tools(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools of a run that set up a proxy, relay, tunnel or port forward (the ones an
    endpoint rule must name), from what each really exec'd."""
    out = []
    for t in truth["tools"]:
        argv = [str(a) for a in t["argv"]]
        name = Path(argv[0]).name if argv else ""
        line = " ".join(argv)
        if (name in _ALWAYS
                or (name == "ncat" and any(a in argv for a in ("--broker", "--listen", "-l",
                                                                 "--sh-exec", "--proxy")))
                or (name == "ssh" and any(a in ("-L", "-R", "-D", "-w") for a in argv))
                or (name == "ssh" and "ProxyCommand=" in line)
                or (name == "nft" and any(w in argv for w in ("dnat", "redirect", "masquerade")))
                or (name == "sysctl" and "forward" in line and line.rstrip().endswith("=1"))):
            out.append(t)
    return out


def is_endpoint_finding(f: dict[str, Any]) -> bool:
    return str(f["detector"]).startswith(("endpoint.", "config."))


def names_tool(f: dict[str, Any], tool: dict[str, Any]) -> bool:
    """An endpoint finding on the tool's host naming its pid or its binary."""
    e = f["entities"]
    if not is_endpoint_finding(f) or e.get("host") != tool["host"]:
        return False
    if e.get("pid") is not None and int(e["pid"]) == int(tool["pid"]):
        return True
    binary = Path(str(tool["argv"][0])).name
    text = f"{e.get('process', '')} {e.get('command_line', '')} {e.get('change', '')}"
    return binary in text


@dataclass(slots=True)
class EndpointScore:
    scenario: str
    tools: list[str] = field(default_factory=list)
    missed_tools: list[str] = field(default_factory=list)
    relays: list[str] = field(default_factory=list)
    unmerged: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.scenario:22} tools {len(self.tools) - len(self.missed_tools)}/"
                f"{len(self.tools)}  relays merged with endpoint evidence "
                f"{len(self.relays) - len(self.unmerged)}/{len(self.relays)}"
                + (f"  missed tools: {self.missed_tools}" if self.missed_tools else "")
                + (f"  unmerged: {self.unmerged}" if self.unmerged else ""))


def endpoint_score(scenario: str, truth: dict[str, Any],
                   findings: list[dict[str, Any]]) -> EndpointScore:
    s = EndpointScore(scenario)
    for tool in proxy_tools(truth):
        label = f"{tool['host']}:{Path(str(tool['argv'][0])).name}({tool['pid']})"
        s.tools.append(label)
        if not any(names_tool(f, tool) for f in findings):
            s.missed_tools.append(label)
    ip_host = {h["ip"]: name for name, h in truth["hosts"].items()}
    for r in truth["relays"]:
        label = f"{r['relay']}:{r['in_port']} ({r.get('tool', '?')})"
        s.relays.append(label)
        incidents = {f["incident"] for f in findings
                     if matches("relay", _relay_key(r), f) and f["incident"]}
        sides = {ip_host.get(r["relay"]), ip_host.get(r["client"])}
        merged = any(f["incident"] in incidents and is_endpoint_finding(f)
                     and f["entities"].get("host") in sides for f in findings)
        if not merged:
            s.unmerged.append(label)
    return s
