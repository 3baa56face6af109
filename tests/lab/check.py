"""Check a lab run's truth.json against its own capture and audit.log."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path
from typing import Any

from hopguard.ingest.pipeline import ingest_file
from hopguard.lab.truth import Truth
from hopguard.store import Store
from tests.lab.conftest import syns

FILES = ("capture.pcap", "audit.log", "nft-monitor.log", "truth.json")


def check_run(out: Path) -> dict[str, Any]:
    for name in FILES:
        assert (out / name).is_file(), f"{name} missing"
    truth = Truth.read(out / "truth.json")
    seen = syns(out / "capture.pcap")
    pairs = {(s, d, dp) for s, _, d, dp in seen}
    with_ports = set(seen)

    for r in truth["relays"]:
        if r.get("in_dir", "in") == "out":  # the relay opened the connection it is fed by
            assert (r["relay"], r["client"], r["in_port"]) in pairs, f"reverse inbound leg of {r}"
        else:
            assert (r["client"], r["relay"], r["in_port"]) in pairs, f"inbound leg of {r}"
        if r["kind"] == "kernel":
            # a DNAT forward keeps the client's address and port on the outbound leg
            inbound = {sp for s, sp, d, dp in with_ports
                       if (s, d, dp) == (r["client"], r["relay"], r["in_port"])}
            outbound = {sp for s, sp, d, dp in with_ports
                        if (s, d, dp) == (r["client"], r["upstream"], r["up_port"])}
            assert inbound & outbound, f"forwarded leg of {r}"
        else:
            assert (r["relay"], r["upstream"], r["up_port"]) in pairs, f"outbound leg of {r}"
    lan = {h["ip"] for h in truth["hosts"].values() if h["side"] == "lan"}
    for chain in truth["chains"]:
        assert len(chain) >= 3, chain
        for a, b in itertools.pairwise(chain):
            if a in lan:  # the LAN span sees every hop that starts on the LAN
                assert any(s == a and d == b for s, d, _ in pairs), f"hop {a} -> {b} of {chain}"
    loopback = [p for p in truth["proxies"] if ipaddress.ip_address(p["proxy"]).is_loopback]
    for p in truth["proxies"]:
        if p in loopback:  # never on the LAN span: its bind() in audit.log is checked below
            continue
        assert any(d == p["proxy"] and dp == p["port"] for _, d, dp in pairs), f"proxy {p}"

    store = Store.open(":memory:")
    try:
        result = ingest_file(store, out / "audit.log", sensor="lab")
        assert result.failure is None, result.failure
        for tool in truth["tools"]:
            rows = store.query(
                "SELECT host, command_line FROM process WHERE pid = ? AND host = ?",
                [tool["pid"], tool["host"]]).to_pylist()
            exe = Path(tool["argv"][0]).name
            assert any(exe in (r["command_line"] or "") for r in rows), \
                f"no execve of {exe} (pid {tool['pid']}) on {tool['host']} in audit.log"
        for p in loopback:
            rows = store.query(
                "SELECT 1 FROM netconn WHERE host = ? AND pid = ? AND direction = 'listen' "
                "AND dst_ip = ? AND dst_port = ?", [p["host"], p["pid"], p["proxy"], p["port"]]
            ).to_pylist()
            assert rows, f"no bind of loopback proxy {p} in audit.log"
    finally:
        store.close()
    return truth
