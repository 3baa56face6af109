"""Proxy scenarios: what each one records, checked against its own capture, audit and logs
beyond the generic check (tests/lab/check.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store
from tests.lab.check import check_run
from tests.lab.conftest import leftovers, syns

pytestmark = [pytest.mark.lab, pytest.mark.root]

APP, DB, WS, WS51, C2, WEB = ("10.10.2.7", "10.10.5.9", "10.10.1.42", "10.10.1.51",
                              "203.0.113.66", "203.0.113.10")


def run(name: str, out: Path) -> dict[str, Any]:
    from hopguard.lab.run import run_scenario
    before = leftovers()
    run_scenario(name, out, duration=8, keep_logs=True)
    truth = check_run(out)
    assert leftovers() == before
    for n in truth["notes"]:
        assert isinstance(json.loads(n)["kind"], str), n
    return truth


def exe(tool: dict[str, Any]) -> str:
    return Path(tool["argv"][0]).name


def notes(truth: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [d for d in map(json.loads, truth["notes"]) if d["kind"] == kind]


def payload_count(pcap: Path, bpf: str) -> int:
    """Packets of a capture that match a BPF filter."""
    out = subprocess.run(["tcpdump", "-nr", str(pcap), bpf], capture_output=True,
                         text=True).stdout
    return len(out.splitlines())


def ascii_payloads(pcap: Path, bpf: str) -> str:
    return subprocess.run(["tcpdump", "-nAr", str(pcap), bpf], capture_output=True,
                          text=True, errors="replace").stdout


def first_byte(value: int) -> str:
    """BPF: the first TCP payload byte equals value."""
    return f"tcp[((tcp[12] & 0xf0) >> 2)] = {value}"


def outbound(out: Path, host: str) -> list[dict[str, Any]]:
    """Outbound connects of a lab host, from audit.log."""
    store = Store.open(":memory:")
    try:
        ingest_file(store, out / "audit.log", sensor="lab")
        rows: list[dict[str, Any]] = store.query(
            "SELECT pid, dst_ip, dst_port FROM netconn WHERE host = ? AND direction = "
            "'outbound'", [host]).to_pylist()
        return rows
    finally:
        store.close()


def edge_log(out: Path) -> list[dict[str, Any]]:
    [log] = (out / "logs").glob("edge-edge-*.log")
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_socks_servers(tmp_path: Path) -> None:
    truth = run("socks-servers", tmp_path)
    assert {(p["proxy"], p["port"], p["protocol"], p["tool"], p["sanctioned"])
            for p in truth["proxies"] if not p["sanctioned"]} == {
        (APP, 1080, "socks5", "microsocks", False), (DB, 1080, "socks4", "danted", False),
        (DB, 1080, "socks5", "danted", False)}
    assert {(r["relay"], r["client"], r["upstream"], r["up_port"], r["tool"], r["user"])
            for r in truth["relays"]} == {
        (APP, WS, C2, 443, "microsocks", "www-data"), (APP, WS, DB, 22, "microsocks", "www-data"),
        (DB, WS, WEB, 443, "danted", "nobody"), (DB, WS, APP, 22, "danted", "nobody"),
        (DB, WS, C2, 443, "danted", "nobody")}
    assert "db-09" not in truth["benign_hosts"]
    pcap = tmp_path / "capture.pcap"
    # both SOCKS versions really went to dante, and SOCKS5 to microsocks
    assert payload_count(pcap, f"dst host {DB} and dst port 1080 and {first_byte(4)}") >= 1
    assert payload_count(pcap, f"dst host {DB} and dst port 1080 and {first_byte(5)}") >= 1
    assert payload_count(pcap, f"dst host {APP} and dst port 1080 and {first_byte(5)}") >= 1
    # the relaying connects are the servers' own (microsocks: one process; dante: its children)
    micro = next(t["pid"] for t in truth["tools"] if exe(t) == "microsocks")
    assert {(r["dst_ip"], r["dst_port"]) for r in outbound(tmp_path, "app-07")
            if r["pid"] == micro} >= {(C2, 443), (DB, 22)}
    assert {(r["dst_ip"], r["dst_port"]) for r in outbound(tmp_path, "db-09")} \
        >= {(WEB, 443), (APP, 22), (C2, 443)}


def test_connect_abuse(tmp_path: Path) -> None:
    truth = run("connect-abuse", tmp_path)
    [p] = [p for p in truth["proxies"] if not p["sanctioned"]]
    assert (p["proxy"], p["port"], p["protocol"], p["tool"]) == (APP, 8888, "http-connect",
                                                                 "tinyproxy")
    assert {(r["upstream"], r["up_port"]) for r in truth["relays"]} == {(DB, 22), (C2, 8443)}
    text = ascii_payloads(tmp_path / "capture.pcap", f"dst host {APP} and dst port 8888")
    assert f"CONNECT {DB}:22 HTTP/1." in text
    assert "CONNECT c2.example.net:8443 HTTP/1." in text
    assert any(exe(t) == "ssh" and t["host"] == "ws-042" for t in truth["tools"])


def test_proxychains_two_hops(tmp_path: Path) -> None:
    truth = run("proxychains-two-hops", tmp_path)
    assert truth["chains"] == [[WS, APP, "203.0.113.80", C2]]
    assert truth["hosts"]["hop2"] == {"ip": "203.0.113.80", "side": "inet"}
    [r] = truth["relays"]
    assert (r["relay"], r["client"], r["upstream"], r["up_port"]) == (APP, WS, "203.0.113.80",
                                                                      1080)
    [ext] = notes(truth, "external-relay")
    assert (ext["relay"], ext["client"], ext["upstream"], ext["up_port"]) == (
        "203.0.113.80", APP, C2, 443)
    # the second hop's connects to the C2 are in its audit trail (the LAN never sees them)
    assert any(c["pid"] == ext["pid"] and (c["dst_ip"], c["dst_port"]) == (C2, 443)
               for c in outbound(tmp_path, "hop2"))
    # ws-042 never talked to anything but the first hop
    assert not [s for s in syns(tmp_path / "capture.pcap") if s[0] == WS and s[2] == C2]
    assert any(exe(t) == "proxychains4" for t in truth["tools"])


def test_three_hop_chain(tmp_path: Path) -> None:
    truth = run("three-hop-chain", tmp_path)
    assert truth["chains"] == [[WS, APP, DB, C2]]
    socat, sshd = truth["relays"]
    assert (socat["relay"], socat["in_port"], socat["upstream"], socat["up_port"],
            socat["tool"]) == (APP, 2222, DB, 22, "socat")
    assert (sshd["relay"], sshd["client"], sshd["upstream"], sshd["up_port"], sshd["tool"]) \
        == (DB, APP, C2, 443, "sshd")
    # the pid recorded for the forwarding end is the one that connects to the C2
    assert sshd["pid"] is not None
    assert any(c["pid"] == sshd["pid"] and (c["dst_ip"], c["dst_port"]) == (C2, 443)
               for c in outbound(tmp_path, "db-09"))
    assert "db-09" not in truth["benign_hosts"]


def test_proxy_beacon(tmp_path: Path) -> None:
    truth = run("proxy-beacon", tmp_path)
    [b] = notes(truth, "beacon")
    assert (b["client"], b["proxy"], b["inner_destination"]) == (WS, "10.10.0.5:3128",
                                                                 "c2.example.net:443")
    assert b["count"] >= 3 and len(b["pids"]) == b["count"]
    assert all(1.2 <= g <= 3.5 for g in b["gaps_s"]), b["gaps_s"]
    assert {t["pid"] for t in truth["tools"]} >= set(b["pids"])
    assert not truth["relays"] and [p["sanctioned"] for p in truth["proxies"]] == [True]
    text = ascii_payloads(tmp_path / "capture.pcap",
                          f"src host {WS} and dst host 10.10.0.5 and dst port 3128")
    assert text.count("CONNECT c2.example.net:443") == b["count"]
    # ws-042 never connects to the C2 itself
    assert not [s for s in syns(tmp_path / "capture.pcap") if s[0] == WS and s[2] == C2]


def test_domain_fronting(tmp_path: Path) -> None:
    truth = run("domain-fronting", tmp_path)
    [f] = notes(truth, "domain-fronting")
    assert (f["front_sni"], f["hidden_host"], f["edge"]) == (
        "cdn-front.example.net", "hidden-c2.example.org", "203.0.113.90")
    assert truth["chains"] == [[WS, "203.0.113.90", C2]]
    seen = [r for r in edge_log(tmp_path) if "route" in r]
    fronted = [r for r in seen if r["route"] == "origin"]
    cover = [r for r in seen if r["route"] == "site"]
    assert len(fronted) == f["requests"] and len(cover) == f["cover_requests"] >= 1
    assert all((r["sni"], r["host"], r["status"]) == ("cdn-front.example.net",
                                                     "hidden-c2.example.org", 200)
               for r in fronted)
    assert all(r["sni"] == r["host"] == "cdn-front.example.net" for r in cover)
    pcap = tmp_path / "capture.pcap"
    hello = ascii_payloads(pcap, f"src host {WS} and dst host 203.0.113.90 and dst port 443")
    assert "cdn-front.example.net" in hello  # the SNI is in the clear
    assert "hidden-c2" not in ascii_payloads(pcap, "tcp")  # the Host never is
    assert any(c["dst_ip"] == C2 for c in outbound(tmp_path, "edge"))


def test_fronting_is_in_truth(tmp_path: Path) -> None:
    from hopguard.lab.run import run_scenario
    from hopguard.lab.truth import Truth
    run_scenario("domain-fronting", tmp_path, duration=6)
    fronting = Truth.read(tmp_path / "truth.json")["fronting"]
    assert len(fronting) == 1
    f = fronting[0]
    assert (f["front_sni"], f["hidden_host"], f["client"]) == (
        "cdn-front.example.net", "hidden-c2.example.org", "10.10.1.42")
    assert f["requests"] >= 1
