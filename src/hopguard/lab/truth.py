"""Ground truth of a lab run, written from what the scenario actually started."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


@dataclass(slots=True, kw_only=True)
class Relay:
    """One host that takes traffic in on one port and sends it on (the contract's entities)."""

    relay: str
    host: str
    client: str
    in_port: int
    upstream: str
    up_port: int
    tool: str
    kind: str  # "process" (a relaying program) or "kernel" (DNAT)
    pid: int | None
    user: str
    start: str
    end: str
    # "in": the client connected to relay:in_port. "out": the relay connected to client:in_port
    # and the traffic comes back down that connection (ssh -R, reverse tunnels).
    in_dir: str = "in"


@dataclass(slots=True, kw_only=True)
class Proxy:
    proxy: str
    host: str
    port: int
    protocol: str  # socks4, socks5, http-connect, http-forward
    tool: str
    sanctioned: bool
    pid: int | None
    start: str
    end: str


@dataclass(slots=True, kw_only=True)
class Fronting:
    """A client reaching ``hidden_host`` through an edge that it names ``front_sni`` in TLS."""

    client: str
    edge: str
    front_sni: str
    hidden_host: str
    origin: str
    requests: int
    start: str
    end: str


@dataclass(slots=True, kw_only=True)
class ToolRun:
    host: str
    ip: str
    argv: list[str]
    user: str
    pid: int
    start: str
    end: str


@dataclass(slots=True)
class Truth:
    scenario: str
    run_id: str
    seed: int
    started: str = ""
    ended: str = ""
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    benign_hosts: list[str] = field(default_factory=list)
    relays: list[Relay] = field(default_factory=list)
    chains: list[list[str]] = field(default_factory=list)
    proxies: list[Proxy] = field(default_factory=list)
    tools: list[ToolRun] = field(default_factory=list)
    fronting: list[Fronting] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
