"""fronting.* detectors: rows in a real in-memory store, and the lab's domain-fronting run."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store
from tests.conftest import ROOT
from tests.unit.analytics.util import findings, put, run

C1, C2, C3, EDGE = "10.1.0.5", "10.1.0.6", "10.1.0.7", "198.51.100.90"


def conn(uid: str, ts: float, src: str, dst: str = EDGE, **kw: object) -> dict[str, object]:
    return {"uid": uid, "ts": ts, "src_ip": src, "src_port": 40000 + int(ts), "dst_ip": dst,
            "dst_port": 443, **kw}


def test_sni_host_mismatch_and_normalisation(store: Store) -> None:
    put(store, "tls", [
        conn("A", 0, C1, sni="cdn-front.example.net"),
        conn("B", 1, C2, sni="cdn-front.example.net"),
        conn("C", 2, C2, sni="WWW.Example.COM."),  # same name after normalisation
        conn("D", 3, C2, sni="img.example.com"),  # same registered domain
        conn("E", 4, C3, sni="target.example.org"),  # CONNECT: Host is the proxy target
        conn("F", 5, C3, sni="x.example.io"),  # NULL Host
        conn("G", 6, C3, sni=None),
    ])
    put(store, "http", [
        conn("A", 0.1, C1, host="hidden-c2.example.org", method="GET", uri="/beacon"),
        conn("B", 1.1, C2, host="cdn-front.example.net", method="GET", uri="/"),
        conn("C", 2.1, C2, host="www.example.com:443", method="GET", uri="/"),
        conn("D", 3.1, C2, host="www.example.com", method="GET", uri="/"),
        conn("E", 4.1, C3, host="proxy.example.net:3128", method="CONNECT"),
        conn("F", 5.1, C3, host=None, method="GET"),
        conn("G", 6.1, C3, host="y.example.io", method="GET"),
    ])
    run(store, "fronting.sni_host")
    (f,) = findings(store, "fronting.sni_host")
    assert f["entities"] == {"client": C1, "edge": EDGE, "sni": "cdn-front.example.net",
                             "host": "hidden-c2.example.org"}
    # 0.7 mismatch + 0.1: the same edge serves the front name honestly to C2
    assert f["confidence"] == 0.8 and f["severity"] == "high"
    assert f["technique"] == "T1090.004" and f["strategy"].startswith("DET0196")
    assert [e["uid"] for e in f["evidence"]] == ["A"]
    assert "M1020" in f["mitigation"]["ids"]


def test_empty_sni_to_cdn(store: Store) -> None:
    put(store, "tls", [
        conn("A", 0, C2, sni="d111abc.cloudfront.net"),  # makes EDGE a CloudFront address
        conn("B", 1, C1, sni=""),
        conn("C", 2, C3, sni=None),
        conn("D", 3, C3, dst="198.51.100.7", sni=None),  # no CDN: nothing
    ])
    put(store, "http", [conn("C", 2.1, C3, host="hidden.example.org", method="GET")])
    put(store, "dns", [{"uid": "Q", "ts": 0, "src_ip": C1, "query": "a.example.com",
                        "answers": ["a.example.com.edgekey.net", "203.0.113.77"]}])
    put(store, "tls", [conn("E", 4, C1, dst="203.0.113.77", sni=None)])
    run(store, "fronting.empty_sni")
    got = {(f["entities"]["client"], f["entities"]["edge"]): f
           for f in findings(store, "fronting.empty_sni")}
    assert set(got) == {(C1, EDGE), (C3, EDGE), (C1, "203.0.113.77")}
    assert got[(C1, EDGE)]["severity"] == "low"
    assert got[(C3, EDGE)]["confidence"] == 0.85 and got[(C3, EDGE)]["severity"] == "high"
    assert got[(C1, "203.0.113.77")]["entities"]["provider"] == "akamai"  # by the CNAME


def test_multi_sni_rare_fingerprint(store: Store) -> None:
    rows = [conn(f"M{i}", i, C1, dst="198.51.100.7", sni=f"site{i}.example{i}.com",
                 ja4="t13d1111_rare_fp") for i in range(5)]
    # a browser fingerprint shared by two clients: common software, not reported
    rows += [conn(f"B{i}", i, C2 if i % 2 else C3, dst="198.51.100.8",
                  sni=f"s{i}.other{i}.com", ja4="t13d1516h2_browser") for i in range(6)]
    # one site's many names on its own address: not fronting
    rows += [conn(f"S{i}", i, C2, dst="198.51.100.9", sni=f"n{i}.one.com", ja3="abc")
             for i in range(6)]
    put(store, "tls", rows)
    run(store, "fronting.multi_sni")
    (f,) = findings(store, "fronting.multi_sni")
    assert f["entities"] == {"client": C1, "fingerprint": "t13d1111_rare_fp",
                             "cdn": "address 198.51.100.7"}
    assert f["severity"] == "low" and f["confidence"] == 0.44
    run(store, "fronting.multi_sni", overrides=("fronting.min_snis=6",))
    assert findings(store, "fronting.multi_sni") == []


def test_empty_tables(store: Store) -> None:
    assert run(store, "fronting").findings == []


# -- the lab's domain-fronting scenario ------------------------------------------------------

def _truth_ips(out: Path) -> tuple[str, str]:
    truth = json.loads((out / "truth.json").read_text())
    return truth["hosts"]["ws-042"]["ip"], truth["hosts"]["ws-051"]["ip"]


def _check_lab(out: Path) -> None:
    store = Store.open(":memory:")
    try:
        capture = next(p for p in (out / "capture.pcap", out / "capture.pcap.gz") if p.exists())
        for path in (capture, out / "edge-eve.json"):
            ingest_file(store, path, sensor="lab")
        run(store, "fronting")
        got = findings(store, "fronting")
    finally:
        store.close()
    ws042, ws051 = _truth_ips(out)
    hits = [f for f in got if f["detector"] == "fronting.sni_host"]
    assert len(hits) == 1, got
    f = hits[0]
    assert f["entities"]["client"] == ws042
    assert (f["entities"]["sni"], f["entities"]["host"]) == ("cdn-front.example.net",
                                                             "hidden-c2.example.org")
    assert f["severity"] == "high"
    assert "(NAT)" in f["explanation"]  # the edge saw the router's address
    assert all(ws051 not in x["hosts"] for x in got)


LAB = Path(os.environ.get("HOPGUARD_FRONTING_LAB", str(ROOT / "examples/lab/domain-fronting")))


@pytest.mark.skipif(not (LAB / "edge-eve.json").exists(),
                    reason="no edge-eve.json in the lab data (make lab-data regenerates it)")
def test_lab_domain_fronting_data() -> None:
    _check_lab(LAB)


@pytest.mark.lab
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="lab runs need root")
def test_lab_domain_fronting_fresh_run() -> None:
    from hopguard.lab.run import run_scenario
    with tempfile.TemporaryDirectory() as tmp:
        run_scenario("domain-fronting", Path(tmp), duration=8)
        _check_lab(Path(tmp))
