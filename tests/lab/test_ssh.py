"""The SSH tunnel scenarios: who relays, in which direction its legs go, and what the recordings
show of it (beyond the generic truth-vs-recordings check of test_lab.py).

Each scenario runs once per test session, shared with the other lab tests (lab/conftest.py)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.lab.truth import Truth
from hopguard.store import Store
from tests.lab.conftest import syns

pytestmark = [pytest.mark.lab, pytest.mark.root]

WS42, WS51, APP, DB = "10.10.1.42", "10.10.1.51", "10.10.2.7", "10.10.5.9"
WEB, C2, VPS = "203.0.113.10", "203.0.113.66", "203.0.113.77"


@dataclass
class Run:
    out: Path
    truth: dict[str, Any]
    syns: list[tuple[str, int, str, int]]
    store: Store

    def pairs(self) -> set[tuple[str, str, int]]:
        return {(s, d, dp) for s, _, d, dp in self.syns}

    def count(self, src: str, dst: str, dport: int) -> int:
        return sum(1 for s, _, d, dp in self.syns if (s, d, dp) == (src, dst, dport))

    def netconn(self, host: str, pid: int) -> set[tuple[str, str, int]]:
        rows = self.store.query(
            "SELECT direction, dst_ip, dst_port FROM netconn WHERE host = ? AND pid = ?",
            [host, pid]).to_pylist()
        return {(r["direction"], r["dst_ip"], r["dst_port"]) for r in rows}

    def listeners(self, host: str, port: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.store.query(
            "SELECT pid, image, dst_ip FROM netconn WHERE host = ? AND direction = 'listen' "
            "AND dst_port = ?", [host, port]).to_pylist()
        return rows

    def execs(self, host: str, pid: int) -> list[str]:
        rows = self.store.query("SELECT command_line FROM process WHERE host = ? AND pid = ?",
                                [host, pid]).to_pylist()
        return [r["command_line"] or "" for r in rows]

    def tool(self) -> dict[str, Any]:
        [tool] = self.truth["tools"]
        return dict(tool)


@pytest.fixture(scope="module")
def lab_run(scenario_run: Callable[[str], Path]) -> Iterator[Callable[[str], Run]]:
    """The session's shared run of a scenario (tests/lab/conftest.py), its audit and nft
    changes in a store."""
    done: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in done:
            out = scenario_run(name)
            store = Store.open(":memory:")
            for f in ("audit.log", "nft-monitor.log"):
                if (out / f).stat().st_size:
                    result = ingest_file(store, out / f, sensor="lab")
                    assert result.failure is None, result.failure
            done[name] = Run(out, Truth.read(out / "truth.json"), syns(out / "capture.pcap"),
                             store)
        return done[name]

    yield get
    for run in done.values():
        run.store.close()


def relays(run: Run) -> list[tuple[str, str, str, int, str, int, str]]:
    return [(r["relay"], r["host"], r["client"], r["in_port"], r["upstream"], r["up_port"],
             r["tool"]) for r in run.truth["relays"]]


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_local_forward_relays_at_the_ssh_server(lab_run: Callable[[str], Run]) -> None:
    run = lab_run("ssh-local-forward")
    assert relays(run) == [(APP, "app-07", WS42, 22, DB, 22, "sshd")]
    tool, relay = run.tool(), run.truth["relays"][0]
    assert tool["host"] == "ws-042" and "-L" in tool["argv"] and "8022:10.10.5.9:22" in tool["argv"]
    # the client opens the SSH connection and the local listener, nothing else on the network
    conns = run.netconn("ws-042", tool["pid"])
    assert ("outbound", APP, 22) in conns
    assert ("listen", "127.0.0.1", 8022) in conns
    assert ("outbound", DB, 22) not in conns
    # the relaying process is sshd's per-connection re-exec on app-07, not the client
    assert relay["pid"] != tool["pid"]
    assert any("sshd" in c and "-R" in c.split() for c in run.execs("app-07", relay["pid"]))
    assert ("outbound", DB, 22) in run.netconn("app-07", relay["pid"])
    # on the wire: one SSH connection in, several forwarded sessions out, none ws-042 → db-09
    assert run.count(WS42, APP, 22) == 1
    assert run.count(APP, DB, 22) >= 2
    assert (WS42, DB, 22) not in run.pairs()
    assert ts(run.truth["started"]) <= ts(relay["start"]) < ts(relay["end"]) \
        <= ts(run.truth["ended"])


def test_remote_forward_relays_at_the_ssh_client(lab_run: Callable[[str], Run]) -> None:
    run = lab_run("ssh-remote-forward")
    assert relays(run) == [(WS42, "ws-042", APP, 22, C2, 443, "ssh")]
    tool, relay = run.tool(), run.truth["relays"][0]
    assert relay["pid"] == tool["pid"] and "-R" in tool["argv"]
    assert any(n.startswith("reverse inbound leg:") and WS42 in n for n in run.truth["notes"])
    # the relay's inbound leg is its own connection to app-07:22, the SYN goes relay → client
    assert run.count(WS42, APP, 22) == 1
    assert not any(s == APP and d == WS42 for s, d, _ in run.pairs())
    # outbound leg: the ssh client itself connects to the C2, once per beacon
    assert ("outbound", C2, 443) in run.netconn("ws-042", tool["pid"])
    assert run.count(WS42, C2, 443) >= 2
    # the beacons enter at sshd's listener on app-07's loopback, which the LAN never sees
    listeners = run.listeners("app-07", 8443)
    assert listeners and {r["dst_ip"] for r in listeners} <= {"127.0.0.1", "::1"}
    assert all(r["image"] == "/usr/sbin/sshd" for r in listeners)
    assert not any(dp == 8443 for _, _, dp in run.pairs())


def test_dynamic_socks_proxy_on_loopback(lab_run: Callable[[str], Run]) -> None:
    run = lab_run("ssh-dynamic-socks")
    tool = run.tool()
    socks = [p for p in run.truth["proxies"] if not p["sanctioned"]]
    assert [(p["proxy"], p["host"], p["port"], p["protocol"], p["tool"], p["pid"])
            for p in socks] == [("127.0.0.1", "ws-042", 1080, "socks5", "ssh", tool["pid"])]
    # the proxy's evidence is host-side: the ssh client binds loopback:1080; no LAN SYN to it
    assert ("listen", "127.0.0.1", 1080) in run.netconn("ws-042", tool["pid"])
    assert not any(dp == 1080 for _, _, dp in run.pairs())
    # app-07's sshd session relays every target, one relay row per upstream, same process
    assert sorted(relays(run)) == sorted([(APP, "app-07", WS42, 22, WEB, 443, "sshd"),
                                          (APP, "app-07", WS42, 22, DB, 22, "sshd")])
    [pid] = {r["pid"] for r in run.truth["relays"]}
    assert {("outbound", WEB, 443), ("outbound", DB, 22)} <= run.netconn("app-07", pid)
    assert run.count(APP, WEB, 443) >= 1 and run.count(APP, DB, 22) >= 1
    # the targets are never reached from ws-042 itself
    assert (WS42, WEB, 443) not in run.pairs() and (WS42, DB, 22) not in run.pairs()


def test_reverse_tunnel_inside_out(lab_run: Callable[[str], Run]) -> None:
    run = lab_run("reverse-tunnel")
    assert run.truth["hosts"]["vps"] == {"ip": VPS, "side": "inet"}
    assert relays(run) == [(APP, "app-07", VPS, 22, DB, 22, "ssh")]
    tool, relay = run.tool(), run.truth["relays"][0]
    assert relay["pid"] == tool["pid"] and tool["host"] == "app-07"
    assert any(n.startswith("reverse inbound leg:") and APP in n for n in run.truth["notes"])
    # one connection out to the VPS (seen before NAT), nothing from the internet comes in
    assert run.count(APP, VPS, 22) == 1
    assert not any(s.startswith("203.0.113.") for s, _, _ in run.pairs())
    # the ssh client itself makes every connection to db-09
    assert {("outbound", VPS, 22), ("outbound", DB, 22)} <= run.netconn("app-07", tool["pid"])
    assert run.count(APP, DB, 22) >= 2
    # the forward's listener is sshd on the VPS's loopback
    listeners = run.listeners("vps", 2222)
    assert listeners and {r["dst_ip"] for r in listeners} <= {"127.0.0.1", "::1"}


def test_sshuttle_redirects_with_nft(lab_run: Callable[[str], Run]) -> None:
    run = lab_run("sshuttle")
    assert relays(run) == [(APP, "app-07", WS51, 22, DB, 22, "sshuttle")]
    tool, relay = run.tool(), run.truth["relays"][0]
    assert tool["host"] == "ws-051" and "ws-051" not in run.truth["benign_hosts"]
    assert any("sshuttle" in c for c in run.execs("ws-051", tool["pid"]))
    # the relay is sshuttle's server, a python3 started through sshd on app-07
    assert any("python3" in c and "assembler.py" in c for c in run.execs("app-07", relay["pid"]))
    assert ("outbound", DB, 22) in run.netconn("app-07", relay["pid"])
    # nft-monitor.log has the redirect going in and the table going away, on ws-051
    rows = run.store.query(
        "SELECT epoch(ts) AS t, action, object, detail FROM config_change "
        "WHERE host = 'ws-051' ORDER BY ts").to_pylist()
    added = [r["t"] for r in rows if r["action"] == "add"
             and "redirect to :12300" in (r["detail"] or "")]
    deleted = [r["t"] for r in rows if r["action"] == "delete"
               and r["object"] == "inet sshuttle-ipv4-12300" and r["detail"] is None]
    assert len(added) == 1 and len(deleted) == 1 and added[0] < deleted[0]
    # while the redirect is in place, ws-051 never connects to db-09 itself: app-07 does
    direct = timed_syns(run.out / "capture.pcap", WS51, DB, 22)
    assert not [t for t in direct if added[0] < t < deleted[0] - 0.2]
    assert run.count(WS51, APP, 22) == 1
    assert run.count(APP, DB, 22) >= 2


def timed_syns(pcap: Path, src: str, dst: str, dport: int) -> list[float]:
    """Times of the SYNs src → dst:dport in a capture."""
    out = subprocess.run(["tcpdump", "-tt", "-nr", str(pcap),
                          f"src host {src} and dst host {dst} and dst port {dport} and "
                          "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0"],
                         capture_output=True, text=True).stdout
    return [float(m[1]) for m in re.finditer(r"^(\d+\.\d+) IP ", out, re.M)]
