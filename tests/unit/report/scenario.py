"""A small stored scenario for the report tests: a three-relay chain, a sanctioned proxy, a
fronting finding whose SNI is hostile markup, and an endpoint finding with event evidence.

Findings are built with the detectors' own value types (analytics.base) and grouped by the real
correlate(), then written the way analytics.run stores them; the telemetry rows they cite are
written inside real ``Store.file`` transactions, so ``source_file`` holds their input paths.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from hopguard.analytics.base import Action, Evidence, Finding, Mitigation
from hopguard.correlate import correlate
from hopguard.model import arrow_schema
from hopguard.store import Store
from tests.unit.analytics.util import at, put, settings

ORIGIN, RELAY1, RELAY2, DEST = "10.10.0.20", "10.10.0.30", "10.10.0.40", "203.0.113.50"
CHAIN = [ORIGIN, RELAY1, RELAY2, DEST]
HOSTILE_SNI = "<script>alert('sni')</script>.example"
PCAP = "/lab/chain/capture.pcap"
AUDIT = "/lab/chain/audit.log"
NFT = "nft add rule inet filter forward ip saddr 10.10.0.20 ip daddr 10.10.0.30 tcp dport 1080 drop"


def _flow(uid: str, t: float, src: str, sport: int, dst: str, dport: int, record: int,
          file_id: int, nbytes: int = 52_000) -> dict[str, object]:
    return {"ts": t, "uid": uid, "src_ip": src, "src_port": sport, "dst_ip": dst,
            "dst_port": dport, "proto": "tcp", "duration": 30.5, "src_bytes": nbytes,
            "dst_bytes": nbytes * 3, "state": "SF", "file_id": file_id, "record": record}


def _telemetry(store: Store) -> tuple[int, int]:
    with store.file(path=PCAP, sha256="a" * 64, size=1, fmt="pcap", sensor="lab") as pcap:
        put(store, "flow", [
            _flow("C1hop", 0.0, ORIGIN, 50000, RELAY1, 1080, 11, pcap),
            _flow("C2hop", 0.2, RELAY1, 41000, RELAY2, 2222, 12, pcap),
            _flow("C3hop", 0.4, RELAY2, 42000, DEST, 443, 13, pcap),
            _flow("C4tls", 5.0, "10.10.0.21", 51000, "198.51.100.7", 443, 14, pcap),
        ])
        put(store, "tls", [{"ts": 5.1, "uid": "C4tls", "src_ip": "10.10.0.21", "src_port": 51000,
                            "dst_ip": "198.51.100.7", "dst_port": 443, "sni": HOSTILE_SNI,
                            "version": "TLSv1.3", "file_id": pcap, "record": 15}])
        store.finish_file(pcap, rows=5, errors=0, skipped=0)
    with store.file(path=AUDIT, sha256="b" * 64, size=1, fmt="auditd", sensor="lab") as audit:
        put(store, "process", [{"ts": 1.0, "host": "relay1", "platform": "linux", "pid": 4242,
                                "image": "/usr/bin/socat",
                                "command_line": "socat TCP-LISTEN:1080,fork TCP:10.10.0.40:2222",
                                "user": "root", "file_id": audit, "record": 42}])
        store.finish_file(audit, rows=1, errors=0, skipped=0)
    return pcap, audit


def findings(audit: int) -> list[Finding]:
    mit = Mitigation(ids=["M1037", "M1031"], actions=[
        Action(kind="nft", text=NFT),
        Action(kind="ips", text='alert tcp 10.10.0.20 any -> 10.10.0.30 1080 (msg:"relay"; '
               "sid:9000001; rev:1;)")])
    relay1 = Finding(
        detector="bridge.relay", title=f"{RELAY1} relays {ORIGIN} to {RELAY2}:2222",
        technique="T1090.001", strategy="DET0445/AN1230", severity="high", confidence=0.9,
        first_seen=at(0), last_seen=at(30),
        entities={"relay": RELAY1, "client": ORIGIN, "in_port": 1080, "upstream": RELAY2,
                  "up_port": 2222, "kind": "socat"},
        evidence=[Evidence(table="flow", uid="C1hop", summary="inbound leg 52000 B"),
                  Evidence(table="flow", uid="C2hop", summary="outbound leg 0.2 s later"),
                  Evidence(table="process", event=f"{audit}:42", summary="socat listener")],
        explanation="outbound leg started 0.20 s after the inbound one; byte ratio 1.00",
        mitigation=mit)
    relay2 = Finding(
        detector="bridge.relay", title=f"{RELAY2} relays {RELAY1} to {DEST}:443",
        technique="T1090.001", strategy="DET0445/AN1230", severity="high", confidence=0.85,
        first_seen=at(0.2), last_seen=at(30),
        entities={"relay": RELAY2, "client": RELAY1, "in_port": 2222, "upstream": DEST,
                  "up_port": 443},
        evidence=[Evidence(table="flow", uid="C2hop", summary="inbound"),
                  Evidence(table="flow", uid="C3hop", summary="outbound")],
        explanation="outbound leg 0.20 s after inbound; byte ratio 1.00", mitigation=mit)
    chain = Finding(
        detector="chain.multihop", title="3-hop relay chain to " + DEST,
        technique="T1090.003", strategy="DET0445/AN1230", severity="critical", confidence=0.9,
        first_seen=at(0), last_seen=at(30), entities={"chain": CHAIN},
        evidence=[Evidence(table="flow", uid=u, summary=f"hop {i + 1}")
                  for i, u in enumerate(("C1hop", "C2hop", "C3hop"))],
        explanation="three relays in sequence, each 0.2 s after the previous", mitigation=mit)
    sanctioned = Finding(
        detector="proxy.http", title="HTTP proxy 10.10.0.5:3128", technique="T1090",
        strategy="", severity="low", confidence=0.6, first_seen=at(100), last_seen=at(200),
        entities={"proxy": "10.10.0.5", "port": 3128, "target": "example.org"},
        evidence=[], explanation="12 CONNECT requests", mitigation=Mitigation(ids=["M1037"]),
        sanctioned=True)
    fronting = Finding(
        detector="fronting.sni_host", title=f"SNI {HOSTILE_SNI} differs from Host",
        technique="T1090.004", strategy="", severity="medium", confidence=0.6,
        first_seen=at(5), last_seen=at(6),
        entities={"src": "10.10.0.21", "dst": "198.51.100.7", "sni": HOSTILE_SNI},
        evidence=[Evidence(table="tls", uid="C4tls", summary=f"sni={HOSTILE_SNI}")],
        explanation=f"TLS SNI {HOSTILE_SNI} but HTTP Host c2.invalid",
        mitigation=Mitigation(ids=["M1031"], actions=[Action(
            kind="gateway", text=f"deny tls.sni == \"{HOSTILE_SNI}\"")]))
    found = [relay1, relay2, chain, sanctioned, fronting]
    for f in found:
        f.finalize(86400.0, 25)
    return found


def seed(store: Store) -> dict[str, Finding]:
    """Telemetry, findings and incidents into ``store``; the findings by detector/role."""
    _, audit = _telemetry(store)
    found = findings(audit)
    incidents = correlate(found, settings())
    store.write("finding", pa.Table.from_pylist([f.as_row() for f in found],
                                                schema=arrow_schema("finding")))
    store.write("incident", pa.Table.from_pylist(incidents, schema=arrow_schema("incident")))
    names = ("relay1", "relay2", "chain", "sanctioned", "fronting")
    return dict(zip(names, found, strict=True))


def seed_file(path: Path) -> dict[str, Finding]:
    with Store.open(path) as store:
        return seed(store)
