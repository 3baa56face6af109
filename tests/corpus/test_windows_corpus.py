"""Windows event logs against the endpoint corpus (third-party EVTX recordings, read in place)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store

pytestmark = pytest.mark.corpus

P2 = ("sbousseaden+EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
      "panache_sysmon_vs_EDRTestingScript.evtx")
P3 = ("mdecrevoisier+EVTX-to-MITRE-Attack/TA0011-Command and Control/T1572-Protocol tunneling/"
      "ID4688-netsh RDP port forwarding abuse.evtx")
P4 = "sbousseaden+EVTX-ATTACK-SAMPLES/Command and Control/DE_sysmon-3-rdp-tun.evtx"
P10 = ("mdecrevoisier+EVTX-to-MITRE-Attack/TA0011-Command and Control/T1090-Proxy/"
       "ID5600-proxy configuration changed.evtx")


def rows(store: Store, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    return store.query(sql, params).to_pylist()


def one(store: Store, table: str, record: int) -> dict[str, Any]:
    found = rows(store, f'SELECT * FROM "{table}" WHERE record = ?', [record])
    assert len(found) == 1, found
    return found[0]


def test_p2_netsh_portproxy_and_registry(endpoint_corpus: Path, store: Store,
                                         ingest: Any) -> None:
    result = ingest(endpoint_corpus / P2)
    assert result.format == "windows" and result.failure is None and result.stats.errors == 0
    proc = one(store, "process", 4955)
    assert proc["command_line"] == ("netsh  interface portproxy add v4tov4 listenport=8080 "
                                    "listenaddress=0.0.0.0 connectport=8000 "
                                    "connectaddress=192.168.1.1")
    assert proc["image"].lower().endswith("\\netsh.exe")
    assert (proc["source"], proc["event_code"], proc["platform"]) == ("sysmon", "1", "windows")
    assert proc["host"] == "MSEDGEWIN10" and proc["pid"] is not None and proc["ppid"] is not None
    reg = one(store, "config_change", 4957)
    assert (reg["source"], reg["action"], reg["event_code"]) == ("registry", "SetValue", "13")
    assert reg["object"] == \
        "HKLM\\System\\CurrentControlSet\\Services\\PortProxy\\v4tov4\\tcp\\0.0.0.0/8080"
    assert reg["detail"] == "192.168.1.1/8000"
    assert reg["pid"] == proc["pid"]
    delete = one(store, "config_change", 4958)
    assert delete["object"] == reg["object"]
    assert delete["action"] in ("DeleteValue", "DeleteKey")


def test_p3_three_4688(endpoint_corpus: Path, store: Store, ingest: Any) -> None:
    result = ingest(endpoint_corpus / P3)
    assert result.failure is None and result.stats.errors == 0
    got = rows(store, "SELECT * FROM process WHERE event_code = '4688' ORDER BY record")
    assert [r["record"] for r in got] == [1953363, 1953364, 1953365]
    assert got[0]["command_line"] == \
        "netsh  I p a v l=8001 listena=0.0.0.0 connectp=3389 c=1.1.1.1"
    assert got[1]["command_line"].startswith("netsh  interface portproxy add v4tov4")
    assert got[2]["command_line"] == "netsh  interface portproxy reset"
    for r in got:
        assert r["source"] == "security"
        assert r["image"].lower().endswith("\\netsh.exe")
        assert r["user"] and "\\" in r["user"]
        assert r["pid"] is not None and r["ppid"] is not None
        assert r["host"] == "fs01.offsec.lan"
    assert [r["ts"] for r in got] == sorted(r["ts"] for r in got)


def test_p4_plink_process_and_netconn(endpoint_corpus: Path, store: Store, ingest: Any) -> None:
    result = ingest(endpoint_corpus / P4)
    assert result.failure is None and result.stats.errors == 0
    proc = one(store, "process", 1940899)
    assert proc["command_line"].startswith("plink.exe  10.0.2.18 -P 80 -C -R "
                                           "127.0.0.3:4444:127.0.0.2:3389")
    out = one(store, "netconn", 1940900)
    assert (out["direction"], out["proto"], out["dst_ip"], out["dst_port"]) == (
        "outbound", "tcp", "10.0.2.18", 80)
    assert (out["pid"], out["process_guid"], out["image"]) == (
        proc["pid"], proc["process_guid"], proc["image"])
    rdp = one(store, "netconn", 1940901)
    assert (rdp["src_ip"], rdp["dst_ip"], rdp["dst_port"]) == ("127.0.0.1", "127.0.0.2", 3389)


def test_p10_wininet_proxy(endpoint_corpus: Path, store: Store, ingest: Any) -> None:
    result = ingest(endpoint_corpus / P10)
    assert result.failure is None
    got = {r["record"]: r for r in rows(
        store, "SELECT * FROM config_change WHERE source = 'wininet'")}
    assert got[5]["action"] == "set" and "http://hacker-proxy.lan:123" in got[5]["detail"]
    assert got[7]["action"] == "reset"
    assert got[8]["detail"] == "pac=http://hacker-bypass.com/"


def test_every_evtx_ingests(endpoint_corpus: Path, store: Store) -> None:
    """116 EVTX files at the time of writing: 100 with rows (896 in all), 16 holding only event
    ids hopguard does not store (4624, 4625, Sysmon 7/10 ...), none with a bad record."""
    files = sorted(endpoint_corpus.rglob("*.evtx"))
    assert len(files) >= 100
    stored = empty = duplicates = rows_total = 0
    for path in files:
        result = ingest_file(store, path, sensor="corpus")
        assert result.format == "windows", path
        if result.duplicate_of is not None:
            duplicates += 1
        elif result.failure is not None:
            assert "nothing usable: no records" in result.failure.message, (path, result.failure)
            assert result.stats.records > 0 and result.stats.skipped
            empty += 1
        else:
            assert result.stats.errors == 0, (path, result.stats.shown)
            stored += 1
            rows_total += result.stats.rows
    assert stored + empty + duplicates == len(files)
    assert stored >= 90 and rows_total >= 800, (stored, empty, duplicates, rows_total)
    counts = store.counts()
    assert counts["process"] > 0 and counts["netconn"] > 0 and counts["config_change"] > 0
