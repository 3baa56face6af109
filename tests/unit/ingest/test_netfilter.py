"""nft monitor and iptables-save: config_change rows, generation attribution, located damage."""

from __future__ import annotations

import gzip
import os
from datetime import UTC
from pathlib import Path
from typing import Any

from hopguard.ingest.base import detect_format, read_head
from hopguard.ingest.netfilter import IptablesSaveFormat, NftMonitorFormat
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[2] / "data" / "netfilter"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MTIME = 1_795_000_000  # 2026-11-18T08:26:40Z


def rows(store: Store) -> list[dict[str, Any]]:
    sql = "SELECT * FROM config_change ORDER BY file_id, record"
    out: list[dict[str, Any]] = store.query(sql).to_pylist()
    return out


def test_sniff(tmp_path: Path) -> None:
    cases = {DATA / "monitor-plain.log": NftMonitorFormat,
             EXAMPLES / "app-07-nft-monitor.log": NftMonitorFormat,
             DATA / "iptables-multi.txt": IptablesSaveFormat,
             EXAMPLES / "app-07-iptables-save.txt": IptablesSaveFormat}
    for path, cls in cases.items():
        head, _ = read_head(path)
        assert detect_format(path, head) is cls, path
    x = tmp_path / "x"
    assert IptablesSaveFormat.sniff(b"*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", x)
    assert not IptablesSaveFormat.sniff(b"*bold* text\nmore\n", x)
    # an nft ruleset listing and a shell script are not monitor output
    assert not NftMonitorFormat.sniff(b"table ip nat {\n\tchain PREROUTING {\n", x)
    assert not NftMonitorFormat.sniff(b"#!/bin/sh\nnft add rule ip nat x\necho hi\n", x)
    assert not NftMonitorFormat.sniff(b"add some sugar\nthen stir\n", x)


def test_nft_example(ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    res = ingest(EXAMPLES / "app-07-nft-monitor.log")
    assert res.format == "nft-monitor" and res.stats.errors == 0
    dnat = [r for r in rows(store) if r["detail"] and "dnat to 10.10.5.9:22" in r["detail"]]
    assert len(dnat) == 1
    r = dnat[0]
    assert (r["source"], r["action"], r["object"], r["event_code"]) == (
        "nft", "add", "ip nat PREROUTING", "rule")
    assert r["detail"] == "tcp dport 2222 dnat to 10.10.5.9:22 # handle 3"
    # the generation line that follows the changes names the process
    assert (r["pid"], r["image"]) == (4321, "nft")
    assert r["ts"].isoformat() == "2026-11-20T09:40:00"
    assert r["platform"] == "linux" and r["host"] is None


def test_nft_plain_uses_mtime(ingest, store: Store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "monitor.log"
    p.write_bytes((DATA / "monitor-plain.log").read_bytes())
    os.utime(p, (MTIME, MTIME))
    res = ingest(p)
    assert [e.location.line for e in res.stats.shown] == [8, 9]  # bogus line, rule w/o chain
    assert res.stats.skipped == {"nft trace": 1}
    got = [(r["record"], r["action"], r["event_code"], r["object"], r["pid"], r["image"])
           for r in rows(store)]
    assert got == [
        (1, "add", "table", "inet filter", 800, "nft"),
        (2, "add", "chain", "inet filter forward", 800, "nft"),
        (3, "add", "rule", "inet filter forward", 800, "nft"),
        (5, "add", "set", "ip nat targets", None, None),  # "# new generation 4" names nobody
        (6, "add", "element", "ip nat targets", None, None),
        (7, "replace", "rule", "ip nat PREROUTING", None, None),
        (10, "flush", "ruleset", "ruleset", None, None),
        (13, "delete", "rule", "ip nat PREROUTING", None, None),  # no generation line yet
    ]
    # the store holds naive UTC
    assert {r["ts"].replace(tzinfo=UTC).timestamp() for r in rows(store)} == {MTIME}
    assert rows(store)[-1]["detail"] == "handle 5"


def test_nft_ts_prefix_forms(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "m.log"
    p.write_text("2026-11-20T09:40:00.250000+0000 add table ip nat\n"
                 "2026-11-20 10:40:00,5+01:00 add chain ip nat OUT\n"
                 "2026-99-20T09:40:00Z add table ip raw\n"
                 "2026-11-20T09:40:01Z # new generation 2 by process 99 (iptables-nft)\n")
    res = ingest(p)
    assert [e.location.line for e in res.stats.shown] == [3]
    assert [(r["ts"].isoformat(), r["pid"], r["image"]) for r in rows(store)] == [
        ("2026-11-20T09:40:00.250000", 99, "iptables-nft"),
        ("2026-11-20T09:40:00.500000", 99, "iptables-nft")]


def test_iptables_example(ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    res = ingest(EXAMPLES / "app-07-iptables-save.txt")
    assert res.format == "iptables-save" and res.stats.errors == 0
    dnat = [r for r in rows(store) if "DNAT" in r["detail"]]
    assert len(dnat) == 1
    assert (dnat[0]["source"], dnat[0]["action"], dnat[0]["object"]) == (
        "iptables", "snapshot", "nat PREROUTING")
    assert dnat[0]["detail"] == (
        "-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.10.5.9:22")
    assert dnat[0]["ts"].isoformat() == "2026-11-20T09:40:30"
    assert dnat[0]["event_code"] == "iptables-save"


def test_iptables_multi(ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    res = ingest(DATA / "iptables-multi.txt")
    # "-X something", "*nat" before COMMIT of *filter, *nat never committed (last line)
    assert [e.location.line for e in res.stats.shown] == [13, 14, 15]
    got = [(r["record"], r["ts"].isoformat(), r["object"], r["event_code"], r["detail"])
           for r in rows(store)]
    assert got == [
        (5, "2026-11-20T08:00:00", "nat PREROUTING", "iptables-save",
         "-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 3128"),
        (12, "2026-11-20T09:00:00", "filter FORWARD", "ip6tables-save",
         "-A FORWARD -s 2001:db8::/32 -j ACCEPT"),
        (15, "2026-11-20T09:00:00", "nat PREROUTING", "ip6tables-save",
         "-A PREROUTING -p tcp --dport 2222 -j DNAT --to-destination 10.10.5.9:22"),
    ]


def test_iptables_without_header_and_gzip(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "rules.v4.gz"
    p.write_bytes(gzip.compress(b"*nat\n:PREROUTING ACCEPT [0:0]\n"
                                b"-A PREROUTING -j DNAT --to-destination 10.0.0.1\n"
                                b"COMMIT\n-A OUTSIDE -j ACCEPT\n"))
    os.utime(p, (MTIME, MTIME))
    res = ingest(p)
    assert res.format == "iptables-save"
    assert [(e.location.line, e.message) for e in res.stats.shown] == [
        (5, "rule or chain outside a table (no *table line before it)")]
    assert [r["ts"].replace(tzinfo=UTC).timestamp() for r in rows(store)] == [MTIME]
    assert rows(store)[0]["event_code"] is None


def test_nft_gzip(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "m.log.gz"
    p.write_bytes(gzip.compress((EXAMPLES / "app-07-nft-monitor.log").read_bytes()))
    res = ingest(p)
    assert res.format == "nft-monitor" and res.stats.added == {"config_change": 8}


def test_nft_monitor_streams_of_several_hosts(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "nft-monitor.log"
    log.write_text(
        "2026-11-20T09:40:00.000001+00:00 host=app-07 add table ip lab\n"
        "2026-11-20T09:40:00.000002+00:00 host=router add rule ip nat post oifname eth1 "
        "masquerade\n"
        "2026-11-20T09:40:00.000003+00:00 host=app-07 # new generation 4 by process 77 (nft)\n"
        "2026-11-20T09:40:00.000004+00:00 host=router # new generation 9 by process 88 (nft)\n")
    result = ingest(log)
    assert result.failure is None and result.stats.errors == 0
    got = store.query("SELECT host, pid, action, object FROM config_change ORDER BY host"
                      ).to_pylist()
    assert got == [
        {"host": "app-07", "pid": 77, "action": "add", "object": "ip lab"},
        {"host": "router", "pid": 88, "action": "add", "object": "ip nat post"}]
