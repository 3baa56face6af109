"""intel.* detectors over a real store: imported feeds matched against flows, proxy requests,
TLS, HTTP and DNS, with the feed's confidence and source carried into each finding."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hopguard.intel.store import import_feed
from hopguard.store import Store
from tests.unit.analytics.util import at, findings, put, run

CLIENT, OTHER, SERVER = "10.1.0.5", "10.1.0.6", "10.1.9.9"
RELAY, EXIT, NET_HOST, C2 = "198.51.100.23", "203.0.113.93", "192.0.2.77", "203.0.113.66"

CONSENSUS = f"""network-status-version 3
vote-status consensus
valid-after 2025-11-24 15:00:00
fresh-until 2025-11-24 16:00:00
valid-until 2025-11-24 18:00:00
r guardOne {"A" * 27} {"B" * 27} 2025-11-24 12:00:00 {RELAY} 9001 0
s Fast Guard Running Stable Valid
r exitOne {"C" * 27} {"D" * 27} 2025-11-24 12:00:00 {EXIT} 443 0
s Exit Fast Running Valid
directory-footer
"""


@pytest.fixture()
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


def feed(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def flow(uid: str, ts: float, src: str, dst: str, port: int) -> dict[str, object]:
    return {"uid": uid, "ts": ts, "src_ip": src, "src_port": 40000 + int(ts) % 1000,
            "dst_ip": dst, "dst_port": port, "proto": "tcp", "src_bytes": 900,
            "dst_bytes": 5000}


def by_detector(store: Store, name: str) -> list[dict[str, object]]:
    return [f for f in findings(store) if f["detector"] == name]


def test_flows_to_a_consensus_relay_exactly(store: Store, tmp_path: Path) -> None:
    import_feed(store, feed(tmp_path, "consensus", CONSENSUS), fmt="tor-consensus")
    put(store, "flow", [flow("a1", 10, CLIENT, RELAY, 9001), flow("a2", 70, CLIENT, RELAY, 9001),
                        flow("b1", 20, CLIENT, "198.51.100.24", 9001),  # not listed
                        flow("c1", 30, OTHER, EXIT, 443)])
    run(store, "intel")
    got = {(f["entities"]["client"], f["entities"]["indicator"]): f
           for f in by_detector(store, "intel.tor")}
    assert set(got) == {(CLIENT, RELAY), (OTHER, EXIT)}
    guard = got[(CLIENT, RELAY)]
    assert {e["uid"] for e in guard["evidence"]} == {"a1", "a2"}
    assert guard["entities"]["categories"] == ["tor_relay"]
    assert guard["entities"]["feeds"] == ["consensus"]
    assert guard["technique"] == "T1090.003"
    assert "guardOne" in guard["explanation"] and "consensus" in guard["explanation"]
    assert got[(OTHER, EXIT)]["entities"]["categories"] == ["tor_exit"]
    assert not by_detector(store, "intel.ioc")


def test_inbound_from_an_exit_is_low(store: Store, tmp_path: Path) -> None:
    import_feed(store, feed(tmp_path, "consensus", CONSENSUS), fmt="tor-consensus")
    put(store, "flow", [flow("i1", 10, EXIT, SERVER, 443)])
    run(store, "intel", overrides=("inventory.networks=['10.0.0.0/8']",))
    (f,) = by_detector(store, "intel.tor")
    assert f["entities"]["client"] == EXIT and f["entities"]["server"] == SERVER
    assert f["entities"]["direction"] == "in" and f["severity"] == "low"
    run(store, "intel", overrides=("inventory.networks=['10.0.0.0/8']", "intel.inbound=false"))
    assert not by_detector(store, "intel.tor")


def test_cidr_ioc_and_confidence_from_the_import(store: Store, tmp_path: Path) -> None:
    import_feed(store, feed(tmp_path, "c2.txt", "# c2 ranges\n192.0.2.0/24\n"), fmt="ip-list",
                options=_options(category="c2", confidence=0.9, source="vendor report 7"))
    put(store, "flow", [flow("x1", 5, CLIENT, NET_HOST, 443), flow("x2", 6, CLIENT, "192.0.3.1",
                                                                    443)])
    run(store, "intel")
    (f,) = by_detector(store, "intel.ioc")
    assert f["entities"]["indicator"] == NET_HOST and f["severity"] == "high"
    assert f["entities"]["sources"] == ["vendor report 7"]
    assert f["confidence"] == pytest.approx(0.9)
    assert [e["uid"] for e in f["evidence"]] == ["x1"]


def test_min_confidence_drops_weak_indicators(store: Store, tmp_path: Path) -> None:
    import_feed(store, feed(tmp_path, "weak.txt", f"{C2}\n"), fmt="ip-list",
                options=_options(confidence=0.2))
    put(store, "flow", [flow("w1", 5, CLIENT, C2, 443)])
    run(store, "intel")
    (f,) = by_detector(store, "intel.ioc")
    assert f["severity"] in ("info", "low")
    run(store, "intel", overrides=("intel.min_confidence=0.5",))
    assert not by_detector(store, "intel.ioc")


def test_domains_in_sni_host_dns_and_proxy_targets(store: Store, tmp_path: Path) -> None:
    import_feed(store, feed(tmp_path, "bad-domains.txt", "*.evil.example\nexact.example\n"),
                fmt="domain-list", options=_options(category="c2", confidence=0.8))
    put(store, "tls", [{"uid": "t1", "ts": 10, "src_ip": CLIENT, "dst_ip": C2, "dst_port": 443,
                        "sni": "a.Evil.Example."},
                       {"uid": "t2", "ts": 11, "src_ip": CLIENT, "dst_ip": C2, "dst_port": 443,
                        "sni": "evil.example"}])  # the bare name: *.x matches below x only
    put(store, "http", [{"uid": "h1", "ts": 12, "src_ip": OTHER, "dst_ip": C2, "dst_port": 80,
                         "method": "GET", "host": "exact.example:8080"}])
    put(store, "dns", [{"uid": "d1", "ts": 13, "src_ip": OTHER, "dst_ip": "10.1.0.2",
                        "query": "deep.b.evil.example", "answers": [C2]}])
    put(store, "proxy", [{"uid": "p1", "ts": 14, "src_ip": CLIENT, "dst_ip": "10.1.0.3",
                          "dst_port": 3128, "protocol": "http-connect",
                          "target_host": "x.evil.example", "target_port": 443}])
    run(store, "intel")
    got = {(f["entities"]["client"], f["entities"]["indicator"]):
           {e["uid"] for e in f["evidence"]} for f in by_detector(store, "intel.ioc")}
    assert got == {(CLIENT, "a.evil.example"): {"t1"}, (OTHER, "exact.example"): {"h1"},
                   (OTHER, "deep.b.evil.example"): {"d1"}, (CLIENT, "x.evil.example"): {"p1"}}
    dns_only = [f for f in by_detector(store, "intel.ioc")
                if f["entities"]["indicator"] == "deep.b.evil.example"]
    assert dns_only[0]["confidence"] < 0.8  # a lookup without a connection counts less


def test_expiry_limits_matching_to_earlier_events(store: Store, tmp_path: Path) -> None:
    expires = at(100).isoformat()
    import_feed(store, feed(tmp_path, "short.txt", f"{C2}\n"), fmt="ip-list",
                options=_options(expires=at(100)))
    put(store, "flow", [flow("e1", 50, CLIENT, C2, 443), flow("e2", 500, CLIENT, C2, 443)])
    run(store, "intel")
    (f,) = by_detector(store, "intel.ioc")
    assert {e["uid"] for e in f["evidence"]} == {"e1"}, expires
    run(store, "intel", overrides=("intel.expiry_grace=1000",))
    (f,) = by_detector(store, "intel.ioc")
    assert {e["uid"] for e in f["evidence"]} == {"e1", "e2"}


def test_two_feeds_listing_one_address_make_one_finding(store: Store, tmp_path: Path) -> None:
    import_feed(store, feed(tmp_path, "a.txt", f"{C2}\n"), fmt="ip-list",
                options=_options(category="c2", confidence=0.6, source="A"))
    import_feed(store, feed(tmp_path, "b.txt", f"{C2}/32\n"), fmt="ip-list",
                options=_options(category="c2", confidence=0.95, source="B"))
    put(store, "flow", [flow("m1", 5, CLIENT, C2, 443)])
    run(store, "intel")
    (f,) = by_detector(store, "intel.ioc")
    assert f["entities"]["feeds"] == ["a", "b"] and f["entities"]["sources"] == ["A", "B"]
    assert f["confidence"] == pytest.approx(0.95)


def test_fingerprints_from_a_feed(store: Store, tmp_path: Path) -> None:
    ja3 = "e7d705a3286e19ea42f587b344ee6865"
    import_feed(store, feed(tmp_path, "ja3.csv", f"ja3_md5,label\n{ja3},old tor client\n"),
                fmt="fingerprint-csv", options=_options(category="tor_relay", confidence=0.7))
    put(store, "tls", [{"uid": "f1", "ts": 5, "src_ip": CLIENT, "dst_ip": C2, "dst_port": 443,
                        "ja3": ja3.upper()}])
    run(store, "intel")
    (f,) = by_detector(store, "intel.fingerprint")
    assert f["entities"]["indicator"] == ja3 and f["severity"] in ("low", "medium")
    assert not by_detector(store, "intel.tor")


def test_seed_vpn_services_without_any_import(store: Store) -> None:
    from hopguard.intel.seeds import seed_indicators
    seeds = seed_indicators().to_pylist()
    vpn = next(r for r in seeds if r["category"] in ("vpn", "proxy") and r["kind"] == "domain")
    name = ("api." + vpn["value"]) if vpn["match"] != "exact" else vpn["value"]
    put(store, "tls", [{"uid": "v1", "ts": 5, "src_ip": CLIENT, "dst_ip": C2, "dst_port": 443,
                        "sni": name}])
    run(store, "intel")
    (f,) = by_detector(store, "intel.vpn")
    assert f["entities"]["feeds"] == ["seed"] and f["entities"]["sources"]
    run(store, "intel", overrides=("intel.seeds=false",))
    assert not by_detector(store, "intel.vpn")


def test_nothing_to_match_is_quiet(store: Store) -> None:
    put(store, "flow", [flow("n1", 5, CLIENT, C2, 443)])
    report = run(store, "intel", overrides=("intel.seeds=false",))
    assert not findings(store, "intel.")
    assert not report.failed


def _options(**kw: object):  # type: ignore[no-untyped-def]
    from hopguard.intel.feeds import FeedOptions
    return FeedOptions(**kw)  # type: ignore[arg-type]


def test_an_indicator_many_clients_touch_is_one_finding(store: Store, tmp_path: Path) -> None:
    import_feed(store, feed(tmp_path, "wide.txt", f"{C2}\n"), fmt="ip-list",
                options=_options(category="c2", confidence=0.95))
    put(store, "flow", [flow(f"u{i}", i, f"10.2.0.{i}", C2, 443) for i in range(1, 9)])
    run(store, "intel", overrides=("intel.max_clients=5",))
    (f,) = by_detector(store, "intel.ioc")
    assert f["entities"]["clients"] == 8 and len(f["entities"]["client_sample"]) == 8
    assert f["severity"] == "medium" and len(f["evidence"]) == 8
    run(store, "intel", overrides=("intel.max_clients=8",))
    assert len(by_detector(store, "intel.ioc")) == 8
