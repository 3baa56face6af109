"""proxy.socks / proxy.connect / proxy.forward / proxy.server / proxy.beacon / proxy.hub on rows
in a real in-memory store (positive and negative cases), and on the lab captures against their
truth.json."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store
from tests.unit.analytics.util import findings, put, run

LAB = Path(__file__).resolve().parents[3] / "examples" / "lab"
_uid = itertools.count(1)
SANCTIONED = ("inventory.proxies=['10.0.0.5:3128']",)


def hs(client: str | None, proxy: str, port: int | None, t: float, *,
       protocol: str | None = "socks5",
       host: str | None = None, ip: str | None = None, tport: int | None = 443,
       outcome: str | None = "succeeded", user: str | None = None,
       uid: str | None = None) -> dict[str, Any]:
    return {"uid": uid or f"P{next(_uid)}", "ts": t, "src_ip": client, "src_port": 40000,
            "dst_ip": proxy, "dst_port": port, "protocol": protocol, "target_host": host,
            "target_ip": ip, "target_port": tport, "outcome": outcome, "user": user}


def connect(client: str, t: float, host: str, tport: int = 443, *, proxy: str = "10.0.0.5",
            port: int = 3128, outcome: str = "200 Connection established",
            uid: str | None = None, user: str | None = None) -> dict[str, Any]:
    return hs(client, proxy, port, t, protocol="http-connect", host=host, tport=tport,
              outcome=outcome, uid=uid, user=user)


def by_target(store: Store, prefix: str) -> dict[str, dict[str, Any]]:
    return {f["entities"]["target"]: f for f in findings(store, prefix)}


# -- handshakes ---------------------------------------------------------------------------------

def test_plain_connect_through_sanctioned_proxy_is_reported_and_not_above_low(
        store: Store) -> None:
    put(store, "proxy", [connect("10.0.1.51", t, "www.example.com") for t in (0, 30, 90)])
    run(store, "proxy.connect", overrides=SANCTIONED)
    got = findings(store, "proxy.connect")
    assert len(got) == 1
    f = got[0]
    assert f["entities"] == {"proxy": "10.0.0.5", "port": 3128, "client": "10.0.1.51",
                             "target": "www.example.com:443", "protocol": ["http-connect"]}
    assert f["sanctioned"] is True
    assert f["severity"] == "info"
    assert "3 HTTP CONNECT handshake(s)" in f["explanation"]
    assert len(f["evidence"]) == 3 and f["evidence"][0]["table"] == "proxy"
    kinds = {a["kind"] for a in f["mitigation"]["actions"]}
    assert {"gateway", "ips"} <= kinds


def test_connect_to_ssh_through_undeclared_proxy_is_tunnelling(store: Store) -> None:
    put(store, "proxy", [connect("10.0.1.42", 5, "10.0.5.9", 22, proxy="10.0.2.7", port=8888)])
    run(store, "proxy.connect", overrides=SANCTIONED)
    f = by_target(store, "proxy.connect")["10.0.5.9:22"]
    # non-web port 0.35 + pivot to an internal target 0.3 + proxy port 0.15 + undeclared 0.25
    assert f["severity"] == "high" and not f["sanctioned"]
    assert f["technique"] == "T1572"
    assert "not a web port" in f["explanation"] and "pivot" in f["explanation"]
    nft = [a["text"] for a in f["mitigation"]["actions"] if a["kind"] == "nft"]
    assert nft == ["nft add rule inet filter forward ip saddr 10.0.1.42 ip daddr 10.0.2.7 "
                   "tcp dport 8888 drop"]


def test_socks_findings_name_every_target_and_score_them(store: Store) -> None:
    put(store, "proxy", [
        hs("10.0.1.42", "10.0.2.7", 1080, 1, host="c2.example.net"),
        hs("10.0.1.42", "10.0.2.7", 1080, 2, host="c2.example.net"),
        hs("10.0.1.42", "10.0.2.7", 1080, 3, ip="10.0.5.9", tport=22),
        hs("10.0.1.42", "10.0.2.7", 1080, 4, host="abcdefghijklmnop.onion", tport=80),
        hs("10.0.1.42", "10.0.2.7", 1080, 5, protocol="socks4", ip="203.0.113.10"),
    ])
    run(store, "proxy.socks")
    got = by_target(store, "proxy.socks")
    assert set(got) == {"c2.example.net:443", "10.0.5.9:22", "abcdefghijklmnop.onion:80",
                        "203.0.113.10:443"}
    assert got["c2.example.net:443"]["severity"] == "info"
    assert "2 SOCKS handshake(s)" in got["c2.example.net:443"]["explanation"]
    assert got["10.0.5.9:22"]["severity"] == "medium"
    assert got["10.0.5.9:22"]["entities"]["target_ip"] == "10.0.5.9"
    onion = got["abcdefghijklmnop.onion:80"]
    assert onion["technique"] == "T1090.003" and onion["severity"] == "medium"
    ips = next(a["text"] for a in onion["mitigation"]["actions"] if a["kind"] == "ips")
    assert 'content:"|05 01 00 03 16|"; content:"abcdefghijklmnop.onion"' in ips
    socks4 = next(a["text"] for a in got["203.0.113.10:443"]["mitigation"]["actions"]
              if a["kind"] == "ips")
    assert 'content:"|04 01 01 bb cb 00 71 0a|"; depth:8' in socks4


def test_password_spraying_through_a_proxy(store: Store) -> None:
    rows = [connect("10.0.1.42", i, "intranet.example.com", proxy="10.0.2.7", port=3128,
                    outcome="407 Proxy Authentication Required", user=f"user{i}")
            for i in range(5)]
    put(store, "proxy", rows)
    run(store, "proxy.connect")
    f = findings(store, "proxy.connect")[0]
    assert "5 failed authentications (5 user names)" in f["explanation"]
    assert f["severity"] == "medium"


def test_two_refusals_are_noted_but_not_spraying(store: Store) -> None:
    put(store, "proxy", [hs("10.0.1.42", "10.0.2.7", 1080, i, host="a.example", tport=443,
                            outcome="connection refused") for i in range(2)])
    run(store, "proxy.socks")
    f = findings(store, "proxy.socks")[0]
    assert "2 refused handshake(s)" in f["explanation"]
    assert "spraying" not in f["explanation"] and f["severity"] == "info"


def test_inner_sni_differs_from_requested_name(store: Store) -> None:
    put(store, "proxy", [connect("10.0.1.42", 1, "www.example.com", uid="CX1"),
                         connect("10.0.1.42", 2, "docs.example.org", uid="CX2")])
    put(store, "tls", [{"uid": "CX1", "ts": 1.1, "src_ip": "10.0.1.42", "dst_ip": "10.0.0.5",
                        "dst_port": 3128, "sni": "hidden-c2.example.org"},
                       {"uid": "CX2", "ts": 2.1, "src_ip": "10.0.1.42", "dst_ip": "10.0.0.5",
                        "dst_port": 3128, "sni": "docs.example.org"}])
    run(store, "proxy.connect")
    got = by_target(store, "proxy.connect")
    assert "hidden-c2.example.org differs" in got["www.example.com:443"]["explanation"]
    assert got["www.example.com:443"]["technique"] == "T1090.004"
    assert got["www.example.com:443"]["severity"] == "medium"
    assert "differs" not in got["docs.example.org:443"]["explanation"]
    assert got["docs.example.org:443"]["severity"] == "info"


def test_forward_proxy_requests_are_their_own_detector(store: Store) -> None:
    put(store, "proxy", [hs("10.0.1.51", "10.0.0.5", 3128, 1, protocol="http-forward",
                            host="bro.org", tport=80, outcome="200 OK")])
    run(store, "proxy", overrides=SANCTIONED)
    assert [f["detector"] for f in findings(store, "proxy.")] == ["proxy.forward"]


def test_odd_rows_do_not_crash_and_are_still_reported(store: Store) -> None:
    put(store, "proxy", [
        hs(None, "10.0.2.7", 1080, 1, host=None, ip=None, tport=None, outcome=None),
        hs("10.0.1.42", "10.0.2.7", None, 2, protocol=None, host="x.example"),
        hs("10.0.1.42", "2001:db8::7", 1080, 3, ip="2001:db8::99", tport=8443),
        {"ts": 4},  # nothing but a time
    ])
    run(store, "proxy")
    targets = {f["entities"]["target"] for f in findings(store, "proxy.socks")}
    assert {"unknown", "x.example:443", "[2001:db8::99]:8443"} <= targets
    v6 = [f for f in findings(store, "proxy.socks") if f["entities"]["proxy"] == "2001:db8::7"]
    assert any("ip6 daddr 2001:db8::7" in a["text"] for a in v6[0]["mitigation"]["actions"])


def test_empty_store_runs_every_proxy_detector(store: Store) -> None:
    report = run(store, "proxy")
    assert {r.name for r in report.runs} >= {"proxy.socks", "proxy.connect", "proxy.forward",
                                             "proxy.server", "proxy.beacon", "proxy.hub"}
    assert findings(store, "proxy") == []


# -- proxy.server -------------------------------------------------------------------------------

def test_undeclared_internal_proxy_server(store: Store) -> None:
    put(store, "proxy", [
        hs("10.0.1.42", "10.0.2.7", 1080, 10, host="c2.example.net"),
        hs("10.0.1.43", "10.0.2.7", 1080, 20, ip="10.0.5.9", tport=22),
        connect("10.0.1.42", 15, "www.example.com"),  # the declared proxy
        hs("10.0.1.42", "203.0.113.80", 1080, 30, host="c2.example.net"),  # external proxy
        hs("127.0.0.1", "127.0.0.1", 1080, 40, host="c2.example.net"),  # loopback
        hs("10.0.1.42", "10.0.7.7", 1080, 50, host="c2.example.net", outcome=None),
    ])
    report = run(store, "proxy.server", overrides=SANCTIONED)
    got = {(f["entities"]["proxy"], f["entities"]["port"]): f
           for f in findings(store, "proxy.server")}
    assert set(got) == {("10.0.2.7", 1080), ("10.0.7.7", 1080)}
    f = got[("10.0.2.7", 1080)]
    assert f["severity"] == "medium" and f["technique"] == "T1090.001"
    assert f["entities"]["n_clients"] == 2 and f["entities"]["n_targets"] == 2
    assert "pivot" in f["explanation"] and "first seen" in f["explanation"]
    assert got[("10.0.7.7", 1080)]["severity"] == "low"  # no reply: weaker
    assert any("declared proxy" in n for n in report.notes)


# -- proxy.beacon -------------------------------------------------------------------------------

def _beacon_rows(client: str, host: str, n: int, period: float, jitter: float,
                 seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    t, rows = 100.0, []
    for _ in range(n):
        rows.append(connect(client, t, host))
        t += period * (1 + rng.uniform(-jitter, jitter))
    return rows


def test_beacon_through_sanctioned_proxy_is_found_and_not_sanctioned(store: Store) -> None:
    rng = random.Random(3)
    browsing: list[dict[str, Any]] = []
    for burst in (200.0, 1500.0, 4000.0):  # three bursts of page loads, then quiet
        browsing += [connect("10.0.1.51", burst + rng.uniform(0, 20), "news.example.org")
                     for _ in range(6)]
    put(store, "proxy", _beacon_rows("10.0.1.42", "c2.example.net", 30, 60.0, 0.3) + browsing)
    run(store, "proxy.beacon", overrides=SANCTIONED)
    got = findings(store, "proxy.beacon")
    assert [f["entities"]["client"] for f in got] == ["10.0.1.42"]
    f = got[0]
    assert f["entities"]["target"] == "c2.example.net:443"
    assert f["entities"]["via"] == ["10.0.0.5:3128"]
    assert f["sanctioned"] is False and f["severity"] in ("medium", "high")
    assert 50 < f["entities"]["interval"] < 70
    assert "Beacon score" in f["explanation"]


def test_beacon_needs_enough_connections(store: Store) -> None:
    put(store, "proxy", _beacon_rows("10.0.1.42", "c2.example.net", 7, 60.0, 0.05))
    run(store, "proxy.beacon")
    assert findings(store, "proxy.beacon") == []
    run(store, "proxy.beacon", overrides=("proxy.beacon_min_connections=5",))
    assert len(findings(store, "proxy.beacon")) == 1


def test_beacon_attributed_through_x_forwarded_for(store: Store) -> None:
    rows = []
    for i in range(12):
        rows.append({"uid": f"H{i}", "ts": 1000.0 + 300.0 * i + (i % 3), "src_ip": "10.0.0.5",
                     "src_port": 50000 + i, "dst_ip": "203.0.113.66", "dst_port": 80,
                     "method": "GET", "host": "c2.example.net", "uri": "/poll",
                     "x_forwarded_for": "10.0.1.77, 10.0.0.5"})
    put(store, "http", rows)
    run(store, "proxy.beacon")
    got = findings(store, "proxy.beacon")
    assert len(got) == 1
    assert got[0]["entities"]["client"] == "10.0.1.77"
    assert got[0]["entities"]["target"] == "c2.example.net:80"


# -- proxy.hub ----------------------------------------------------------------------------------

def _flow(src: str, dst: str, dport: int, t: float, dur: float) -> dict[str, Any]:
    return {"uid": f"F{next(_uid)}", "ts": t, "duration": dur, "src_ip": src, "src_port": 40000,
            "dst_ip": dst, "dst_port": dport, "proto": "tcp", "src_bytes": 500,
            "dst_bytes": 5000, "state": "SF"}


def _hub_flows(hub: str, in_port: int, out_port: int, *, coupled: bool) -> list[dict[str, Any]]:
    rows = []
    for i in range(6):  # six internal clients, each holding a 20 s connection
        t = 100.0 * i
        rows.append(_flow(f"10.0.1.{10 + i}", hub, in_port, t, 20.0))
        for j in range(2):  # each leads to two external destinations
            start = t + 1 + j if coupled else t + 50 + j
            rows.append(_flow(hub, f"198.51.100.{10 + 2 * i + j}", out_port, start, 5.0))
    return rows


def test_hub_with_overlapping_fan_in_and_fan_out(store: Store) -> None:
    put(store, "flow", _hub_flows("10.0.3.3", 8081, 443, coupled=True))
    put(store, "proxy", [hs("10.0.1.10", "10.0.3.3", 8081, 0.5, host="x.example")])
    run(store, "proxy.server", "proxy.hub")
    got = findings(store, "proxy.hub")
    assert len(got) == 1
    f = got[0]
    assert f["entities"]["hub"] == "10.0.3.3" and f["entities"]["destinations"] == 12
    assert len(f["entities"]["clients"]) == 6 and f["entities"]["in_ports"] == [8081]
    assert f["severity"] == "high"  # it also answers SOCKS
    assert "12 external destinations" in f["explanation"]


def test_hub_without_overlap_is_not_reported(store: Store) -> None:
    put(store, "flow", _hub_flows("10.0.3.3", 8081, 443, coupled=False))
    run(store, "proxy.hub")
    assert findings(store, "proxy.hub") == []


def test_resolver_and_declared_relay_are_not_hubs(store: Store) -> None:
    put(store, "flow", _hub_flows("10.0.0.2", 53, 53, coupled=True)
        + _hub_flows("10.0.0.9", 8081, 443, coupled=True))
    run(store, "proxy.hub", overrides=("inventory.relays=['10.0.0.9']",))
    assert findings(store, "proxy.hub") == []
    run(store, "proxy.hub")
    assert [f["entities"]["hub"] for f in findings(store, "proxy.hub")] == ["10.0.0.9"]
    assert findings(store, "proxy.hub")[0]["severity"] == "medium"


# -- lab captures -------------------------------------------------------------------------------

def test_lab_socks_servers(store: Store) -> None:
    lab = LAB / "socks-servers"
    if not (lab / "capture.pcap.gz").is_file():
        pytest.skip("lab example missing")
    truth = json.loads((lab / "truth.json").read_text())
    ingest_file(store, lab / "capture.pcap.gz", sensor="lab")
    run(store, "proxy", overrides=("inventory.proxies=['10.10.0.5:3128']",))
    servers = {(f["entities"]["proxy"], f["entities"]["port"]): f
               for f in findings(store, "proxy.server")}
    for p in truth["proxies"]:
        key = (p["proxy"], p["port"])
        if p["sanctioned"]:
            assert key not in servers
        else:
            assert servers[key]["severity"] in ("medium", "high"), key
    for f in findings(store, "proxy."):
        if f["entities"].get("proxy") == "10.10.0.5":
            assert f["sanctioned"] and f["severity"] in ("info", "low")
    # every planted SOCKS flow is reported with its target
    flows = next(json.loads(n) for n in truth["notes"] if "socks-flows" in n)["flows"]
    socks = findings(store, "proxy.socks")
    for fl in flows:
        proxy, _, port = fl["proxy"].rpartition(":")
        tip, _, tport = fl["target"].rpartition(":")
        hits = [f for f in socks if f["entities"]["proxy"] == proxy
                and f["entities"]["port"] == int(port) and f["entities"]["client"] == fl["client"]
                and (f["entities"].get("target_ip") == tip
                     or f["entities"]["target"].endswith(f":{tport}"))]
        assert hits, fl
    ssh = [f for f in socks if f["entities"]["target"].endswith(":22")]
    assert len(ssh) == 2 and all(f["severity"] in ("medium", "high") for f in ssh)
