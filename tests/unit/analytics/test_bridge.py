"""bridge.relay on synthetic flows in a real store (pairs, near misses, bounds, timing, DNAT,
multiplexed legs) and on the lab captures against their truth.json."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store
from tests.unit.analytics.util import findings, put, run

LAB = Path(__file__).resolve().parents[3] / "examples" / "lab"
_uid = itertools.count(1)


def flow(src: str, sport: int, dst: str, dport: int, t: float, dur: float, ob: int, rb: int,
         **kw: Any) -> dict[str, Any]:
    row = {"uid": kw.pop("uid", f"C{next(_uid)}"), "ts": t, "duration": dur, "src_ip": src,
           "src_port": sport, "dst_ip": dst, "dst_port": dport, "proto": "tcp",
           "src_bytes": ob, "dst_bytes": rb, "state": "SF"}
    row.update(kw)
    return row


def relay_pair(t: float, *, client: str = "10.0.1.42", relay: str = "10.0.2.7",
               up: str = "203.0.113.66", in_port: int = 8443, up_port: int = 443,
               dt: float = 0.003, ob: int = 732, rb: int = 1546, out_ob: int | None = None,
               out_rb: int | None = None, dur: float = 0.05) -> list[dict[str, Any]]:
    return [flow(client, 44000 + int(t), relay, in_port, t, dur, ob, rb),
            flow(relay, 50000 + int(t), up, up_port, t + dt, dur - dt,
                 ob if out_ob is None else out_ob, rb if out_rb is None else out_rb)]


def relays(store: Store) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {(f["entities"]["relay"], f["entities"]["client"], f["entities"]["in_port"],
             f["entities"]["upstream"], f["entities"]["up_port"]): f
            for f in findings(store, "bridge.relay")}


KEY = ("10.0.2.7", "10.0.1.42", 8443, "203.0.113.66", 443)


def test_pairs_aggregate_into_one_finding(store: Store) -> None:
    put(store, "flow", relay_pair(0) + relay_pair(10) + relay_pair(20, ob=700, rb=1500))
    run(store, "bridge.relay")
    got = relays(store)
    assert list(got) == [KEY]
    f = got[KEY]
    assert f["entities"]["pairs"] == 3 and f["entities"]["kind"] == "process"
    assert f["technique"] == "T1090.001" and f["strategy"] == "DET0445/AN1230"
    assert len(f["evidence"]) == 6
    assert f["evidence"][0]["summary"].startswith(
        "10.0.1.42:44000 -> 10.0.2.7:8443 732/1546 B | 10.0.2.7:50000 -> 203.0.113.66:443 "
        "732/1546 B, +3.0 ms")
    assert "+3.0 ms" in f["evidence"][1]["summary"]
    assert f["severity"] == "medium" and f["confidence"] == pytest.approx(0.75)
    texts = [a["text"] for a in f["mitigation"]["actions"]]
    assert "on 10.0.2.7: nft add rule inet filter input ip saddr 10.0.1.42 tcp dport 8443 drop" \
        in texts
    assert any(t.startswith("drop tcp 10.0.1.42 any -> 10.0.2.7 8443 (") for t in texts)


@pytest.mark.parametrize("case", ["late", "ratio", "same_peer", "no_overlap", "null_duration"])
def test_near_misses_are_rejected(store: Store, case: str) -> None:
    rows = {
        "late": relay_pair(0, dt=2.5, dur=5.0),
        "ratio": relay_pair(0, out_ob=732, out_rb=9000),
        "same_peer": relay_pair(0, up="10.0.1.42"),
        "no_overlap": relay_pair(0, dt=0.5, dur=0.2),
        "null_duration": [dict(r, duration=None) for r in relay_pair(0)],
    }[case]
    put(store, "flow", rows)
    run(store, "bridge.relay")
    assert relays(store) == {}


def test_slack_accepts_handshake_overhead_on_one_leg_only(store: Store) -> None:
    # TLS terminated on the relay: ~3 KB more on the inbound leg in both directions
    put(store, "flow", relay_pair(0, ob=3900, rb=4800, out_ob=732, out_rb=1546))
    put(store, "flow", relay_pair(100, relay="10.0.2.8", ob=3900, rb=1000, out_ob=732,
                                  out_rb=4800))  # inbound larger one way, smaller the other
    run(store, "bridge.relay")
    got = relays(store)
    assert list(got) == [KEY]
    assert got[KEY]["severity"] == "low"  # slack alone is weak evidence
    assert "slack" in got[KEY]["explanation"]


def test_busy_service_is_excluded_and_noted(store: Store) -> None:
    rows = relay_pair(0, relay="10.0.0.5", in_port=3128)
    rows += [flow(f"10.0.3.{i}", 40000 + i, "10.0.0.5", 3128, 100 + i, 0.1, 800, 3000)
             for i in range(60)]
    put(store, "flow", rows + relay_pair(500))
    report = run(store, "bridge.relay")
    assert list(relays(store)) == [KEY]
    note = next(n for n in report.notes if "busy services" in n)
    assert "61 inbound flows to 1 busy services" in note and "10.0.0.5:3128 (61 sources)" in note


def test_saturated_bucket_is_skipped_and_noted(store: Store) -> None:
    rows = relay_pair(0.1)
    rows += [flow("10.0.2.7", 30000 + i, f"198.51.100.{i % 200}", 80, 0.2 + i * 0.001, 0.05,
                  100, 100) for i in range(10)]
    put(store, "flow", rows + relay_pair(500))
    report = run(store, "bridge.relay", overrides=("relay.cap=5",))
    assert relays(store)[KEY]["entities"]["pairs"] == 1  # the t=500 pair only
    note = next(n for n in report.notes if "saturated" in n)
    assert "1 saturated (host, 2 s) buckets with 11 outbound flows" in note
    assert "10.0.2.7 (1 buckets)" in note


def _sketch(start: float, offsets: list[float]) -> list[float]:
    return [start + o for o in offsets]


def test_timing_rescues_pairs_with_different_bytes(store: Store) -> None:
    ons = [0.0, 1.0, 2.5, 4.0, 6.0]
    # compression on the relay: the outbound leg moves a third of the bytes
    i = flow("10.0.1.42", 44001, "10.0.2.7", 8443, 0.0, 8.0, 30000, 90000,
             src_bursts=ons, dst_bursts=_sketch(0.04, ons))
    o = flow("10.0.2.7", 50001, "203.0.113.66", 443, 0.002, 7.9, 10000, 30000,
             src_bursts=_sketch(0.002, ons), dst_bursts=_sketch(0.03, ons))
    # the same bytes story without coincident timing: rejected
    i2 = flow("10.0.1.43", 44002, "10.0.2.9", 8443, 100.0, 8.0, 30000, 90000,
              src_bursts=_sketch(100, ons), dst_bursts=_sketch(100.04, ons))
    o2 = flow("10.0.2.9", 50002, "203.0.113.66", 443, 100.002, 7.9, 10000, 30000,
              src_bursts=_sketch(100.002, [0.0, 0.7, 3.1, 5.0, 7.5]),
              dst_bursts=_sketch(100.03, [0.3, 1.6, 3.3, 5.3, 7.7]))
    put(store, "flow", [i, o, i2, o2])
    run(store, "bridge.relay")
    got = relays(store)
    assert list(got) == [KEY]
    f = got[KEY]
    assert "ON/OFF timing confirmed 1 of 1 (best coincidence ratio 1.00, 1 rescued" \
        in f["explanation"]
    assert f["confidence"] == pytest.approx(0.9)


def test_kernel_dnat_is_named(store: Store) -> None:
    rows = []
    for k, t in enumerate((0.0, 2.0, 4.0)):
        rows.append(flow("10.0.1.42", 32842 + k, "10.0.2.7", 2222, t, 1.3, 3757, 3789))
        rows.append(flow("10.0.1.42", 32842 + k, "10.0.5.9", 22, t + 0.0001, 1.3, 3757, 3789))
    put(store, "flow", rows)
    run(store, "bridge.relay")
    got = relays(store)
    key = ("10.0.2.7", "10.0.1.42", 2222, "10.0.5.9", 22)
    assert list(got) == [key]
    f = got[key]
    assert f["entities"]["kind"] == "kernel" and f["entities"]["pairs"] == 3
    assert "kernel DNAT" in f["title"] and f["strategy"] == "DET0445/AN1233"
    assert f["evidence"][0]["summary"].startswith(
        "10.0.1.42:32842 -> 10.0.2.7:2222 3757/3789 B | 10.0.1.42:32842 -> 10.0.5.9:22")


def test_multiplexed_leg_carries_shorter_legs(store: Store) -> None:
    resumes = [0.0, 1.3, 2.5, 4.2, 5.9]
    long = flow("10.0.2.7", 53536, "10.0.5.9", 22, 0.0, 8.0, 9000, 12000,
                src_bursts=resumes, dst_bursts=_sketch(0.001, resumes))
    legs = [flow("10.0.5.9", 40600 + k, "203.0.113.66", 443, r + 0.0003, 0.05, 732, 1545,
                 src_bursts=[r + 0.0003], dst_bursts=[r + 0.001])
            for k, r in enumerate(resumes[1:])]
    put(store, "flow", [long, *legs])
    run(store, "bridge.relay")
    got = relays(store)
    key = ("10.0.5.9", "10.0.2.7", 22, "203.0.113.66", 443)
    assert list(got) == [key]
    assert got[key]["entities"]["kind"] == "multiplexed" and got[key]["entities"]["pairs"] == 4


def test_reverse_leg_to_the_declared_proxy_is_own_web_use(store: Store) -> None:
    """A workstation holds an ssh session it opened (as ssh -R would) and browses through a
    proxy right after each answer of the session: the shape of a reverse tunnel to that
    service, unless the service is the declared proxy (the workstation's own web use)."""
    resumes = [0.0, 1.3, 2.5, 4.2, 5.9]
    long = flow("10.0.1.42", 53536, "10.0.2.7", 22, 0.0, 8.0, 12000, 9000,
                src_bursts=_sketch(0.001, resumes), dst_bursts=resumes)
    legs = [flow("10.0.1.42", 40600 + k, "10.0.0.5", 3128, r + 0.0003, 0.05, 700, 1500,
                 src_bursts=[r + 0.0003], dst_bursts=[r + 0.001])
            for k, r in enumerate(resumes[1:])]
    put(store, "flow", [long, *legs])
    run(store, "bridge.relay")  # no inventory: the proxy is just another service
    got = relays(store)
    key = ("10.0.1.42", "10.0.2.7", 22, "10.0.0.5", 3128)
    assert list(got) == [key] and got[key]["entities"]["kind"] == "reverse"
    store.con.execute("DELETE FROM finding")
    run(store, "bridge.relay", overrides=("inventory.proxies=['10.0.0.5:3128']",))
    assert relays(store) == {}


def test_bad_input_does_not_crash(store: Store) -> None:
    put(store, "flow", [flow("10.0.1.1", 1, "10.0.2.2", 2, 0.0, -1.0, 0, 5),
                        flow("10.0.1.1", 1, "10.0.2.2", 2, 0.0, 1.0, 5, 5, src_ip=None),
                        flow("10.0.2.2", 3, "10.0.3.3", 4, 0.1, 1.0, 5, 5, src_bursts=[],
                             dst_bursts=None, proto=None)])
    run(store, "bridge.relay", "chain.multihop")
    assert findings(store) == []
    run(store, "bridge.relay")  # an empty store too, after the rows are gone
    store.con.execute("DELETE FROM flow")
    run(store, "bridge.relay", "chain.multihop")
    assert findings(store) == []


# -- the lab captures -----------------------------------------------------------------------

SCENARIOS = ("socat-relay", "nft-dnat", "three-hop-chain", "socks-servers")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lab_truth_relays_are_found(store: Store, scenario: str) -> None:
    d = LAB / scenario
    truth = json.loads((d / "truth.json").read_text())
    ingest_file(store, d / "capture.pcap.gz", sensor="lab")
    run(store, "bridge.relay", "chain.multihop",
        overrides=("inventory.proxies=['10.10.0.5:3128']",))
    got = relays(store)
    for r in truth["relays"]:
        key = (r["relay"], r["client"], r["in_port"], r["upstream"], r["up_port"])
        assert key in got, (scenario, key, list(got))
        if r["kind"] == "kernel":
            assert got[key]["entities"]["kind"] == "kernel"
    benign = {truth["hosts"][h]["ip"] for h in truth["benign_hosts"]}
    for key, f in got.items():
        if key[0] in benign:
            assert f["sanctioned"] and f["severity"] == "low", f["title"]
            assert key[0] == "10.10.0.5"
    chains = [f["entities"]["chain"] for f in findings(store, "chain.multihop")]
    assert chains == truth["chains"]


@pytest.mark.parametrize(("source", "kinds"), [
    ("zeek/conn.log", {("10.10.2.7", "10.10.1.42", 8443, "203.0.113.66", 443, "process"),
                       ("10.10.2.7", "10.10.1.42", 2222, "10.10.5.9", 22, "kernel")}),
    ("hq-span-eve.json", {("10.10.2.7", "10.10.1.42", 8443, "203.0.113.66", 443, "process"),
                          ("10.10.2.7", "10.10.1.51", 1080, "10.10.5.9", 445, "process"),
                          ("10.10.2.7", "10.10.1.51", 1080, "198.51.100.77", 443, "process")}),
])
def test_relays_from_flow_logs(store: Store, source: str,
                               kinds: set[tuple[Any, ...]]) -> None:
    """The same detector over other sensors' flow records (Zeek conn.log, Suricata EVE flow):
    no activity sketches there, so pairs rest on timing windows and bytes alone."""
    path = Path(__file__).resolve().parents[3] / "examples" / source
    assert ingest_file(store, path, sensor="test").failure is None
    report = run(store, "bridge", overrides=("inventory.proxies=['10.10.0.5:3128']",))
    got = {(e["relay"], e["client"], e["in_port"], e["upstream"], e["up_port"], e["kind"])
           for e in (f["entities"] for f in findings(store, "bridge.relay"))
           if e["relay"] != "10.10.0.5"}
    assert got == kinds
    assert any("activity sketches" in n for n in report.notes)
