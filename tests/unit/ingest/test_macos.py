"""macOS unified log NDJSON: process, config_change and netconn rows; damage is located."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from hopguard.ingest.base import detect_format, read_head
from hopguard.ingest.macos import MacUnifiedLogFormat, redact_proxy_password
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[2] / "data" / "macos"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
US = 1_000_000


def rows(store: Store, table: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = store.query(f"SELECT * FROM {table} ORDER BY record").to_pylist()
    return out


def entry(ts: str, msg: str, image: str, pid: int, **kw: Any) -> str:
    obj = {"timestamp": f"2026-11-20 {ts}+0000", "eventMessage": msg, "processImagePath": image,
           "processID": pid, "userID": kw.pop("uid", 501), "machTimestamp": 1, "traceID": 1,
           "eventType": "logEvent", "messageType": "Default", **kw}
    return json.dumps(obj)


def test_sniff(tmp_path: Path) -> None:
    head, _ = read_head(DATA / "mixed.ndjson")
    assert MacUnifiedLogFormat.sniff(head, DATA / "mixed.ndjson")
    assert detect_format(DATA / "mixed.ndjson", head) is MacUnifiedLogFormat
    # Elastic Endpoint JSON (the macOS corpus) and Zeek JSON are not unified log
    assert not MacUnifiedLogFormat.sniff(b'{"@timestamp":"2020-01-01T00:00:00Z","event":{}}\n',
                                         tmp_path / "x.json")
    assert not MacUnifiedLogFormat.sniff(b'{"ts":1.0,"uid":"C1","id.orig_h":"1.2.3.4"}\n',
                                         tmp_path / "conn.log")


def test_mixed_file(ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    res = ingest(DATA / "mixed.ndjson")
    assert res.format == "macos-unifiedlog"
    # cut JSON, bad timestamp, an array, stray text between entries: located, rest stored
    assert res.stats.errors == 4
    assert [e.location.line for e in res.stats.shown] == [5, 6, 7, 11]
    assert res.stats.skipped["macos log header"] == 1
    assert res.stats.skipped["macos log summary"] == 1

    procs = {(r["pid"], r["image"]): r for r in rows(store, "process")}
    # curl: launchd's spawn message and curl's own entries are one row, with its full path
    curl = procs[(700, "/usr/bin/curl")]
    assert curl["event_code"] == "launchd_spawn" and curl["ppid"] == 1
    assert curl["platform"] == "macos" and curl["source"] == "macos" and curl["host"] is None
    assert curl["record"] == 2
    assert curl["ts"].isoformat() == "2026-11-20T11:00:00.000001"  # -0800 converted to UTC
    # "xpcproxy spawned with pid 720" learns its image from the process's own entry
    assert procs[(720, "/Users/bob/Library/Agents/agent")]["event_code"] == "launchd_spawn"
    # sudo's COMMAND= gives the command line; the pid comes from networksetup's first entry
    ns = procs[(711, "/usr/sbin/networksetup")]
    assert ns["event_code"] == "sudo" and ns["user"] == "root" and ns["ppid"] == 710
    assert ns["parent_image"] == "/usr/bin/sudo"
    assert "s3cret" not in ns["command_line"] and "<redacted>" in ns["command_line"]
    assert (0, "/kernel") not in procs
    assert len(procs) == len(rows(store, "process"))  # one row per process

    conns = rows(store, "netconn")
    assert [(c["dst_ip"], c["dst_port"]) for c in conns] == [("192.0.2.10", 443),
                                                             ("2001:db8::7", 8443)]
    first = conns[0]
    assert (first["src_ip"], first["src_port"], first["pid"], first["user"]) == (
        "10.0.0.5", 61000, 700, "501")
    assert first["direction"] == "outbound" and first["image"] == "/usr/bin/curl"

    changes = rows(store, "config_change")
    assert [(c["source"], c["action"], c["object"]) for c in changes] == [
        ("networksetup", "setsocksfirewallproxy", "USB 10/100 LAN/Proxies/SOCKSProxy"),
        ("configd", "change", "Proxies/HTTPProxy"),
    ]
    assert "s3cret" not in changes[0]["detail"]
    assert changes[0]["image"] == "/usr/sbin/networksetup" and changes[0]["user"] == "root"


def test_example_story(ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    res = ingest(EXAMPLES / "mac-alice-unified.ndjson")
    assert res.stats.errors == 0
    changes = rows(store, "config_change")
    web = [c for c in changes if c["action"] == "setwebproxy"]
    assert len(web) == 1
    assert web[0]["ts"].isoformat() == "2026-11-20T11:05:00.118276"
    assert "203.0.113.80 8080" in web[0]["detail"]
    assert any(c["dst_ip"] == "203.0.113.80" and c["dst_port"] == 8080
               for c in rows(store, "netconn"))


def test_gzip_and_truncated_gzip(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    lines = [entry(f"10:00:{i:02d}.000000", "hello", f"/usr/bin/tool{i}", 100 + i)
             for i in range(40)]
    data = ("\n".join(lines) + "\n").encode()
    gz = tmp_path / "u.ndjson.gz"
    gz.write_bytes(gzip.compress(data))
    res = ingest(gz)
    assert res.format == "macos-unifiedlog" and res.stats.errors == 0
    assert res.stats.added == {"process": 40}

    cut = tmp_path / "cut.ndjson.gz"
    blob = gzip.compress(data * 50)
    cut.write_bytes(blob[: len(blob) // 2])
    res = ingest(cut)
    assert res.failure is None and res.stats.rows > 0
    assert res.stats.errors >= 1
    assert any("gzip stream is truncated" in e.message for e in res.stats.shown)


def test_trailing_text_is_a_summary(tmp_path: Path, ingest) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "t.ndjson"
    p.write_text(entry("10:00:00.000000", "x", "/bin/ls", 5) + "\n"
                 + "Log      - Default:          1\n" + "Total      1\n")
    res = ingest(p)
    assert res.stats.errors == 0 and res.stats.rows == 1


def test_process_dedup_and_pid_reuse(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "d.ndjson"
    p.write_text("\n".join([
        entry("10:00:00.000000", "a", "/usr/bin/ssh", 300),
        entry("10:00:01.000000", "b", "/usr/bin/ssh", 300),
        entry("10:00:02.000000", "c", "/usr/bin/nc", 300),  # pid reused by another image
    ]) + "\n")
    ingest(p)
    assert [(r["pid"], r["image"], r["record"]) for r in rows(store, "process")] == [
        (300, "/usr/bin/ssh", 1), (300, "/usr/bin/nc", 3)]


def test_networksetup_verbs_and_redaction() -> None:
    msg = "networksetup -setwebproxy Wi-Fi proxy.example 8080 on alice hunter2"
    assert redact_proxy_password(msg) == (
        "networksetup -setwebproxy Wi-Fi proxy.example 8080 on alice <redacted>")
    assert redact_proxy_password("networksetup -setwebproxy Wi-Fi 1.2.3.4 80") == (
        "networksetup -setwebproxy Wi-Fi 1.2.3.4 80")
    assert redact_proxy_password("networksetup -setwebproxystate Wi-Fi on") == (
        "networksetup -setwebproxystate Wi-Fi on")


def test_networksetup_objects(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "n.ndjson"
    msgs = ["/usr/sbin/networksetup -setautoproxyurl Ethernet http://pac.example/p.pac",
            "/usr/sbin/networksetup -setwebproxystate Wi-Fi off",
            "/usr/sbin/networksetup -getwebproxy Wi-Fi"]  # a read: no change
    p.write_text("\n".join(entry(f"10:00:0{i}.000000", m, "/usr/sbin/networksetup", 50 + i)
                           for i, m in enumerate(msgs)) + "\n")
    ingest(p)
    assert [(c["action"], c["object"]) for c in rows(store, "config_change")] == [
        ("setautoproxyurl", "Ethernet/Proxies/ProxyAutoConfigURLString"),
        ("setwebproxystate", "Wi-Fi/Proxies/HTTPEnable")]


def test_long_leading_junk_is_reported(tmp_path: Path, ingest) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "j.ndjson"
    p.write_text("header one\nheader two\nheader three\nnot a header\n"
                 + entry("10:00:00.000000", "x", "/bin/ls", 5) + "\n")
    res = ingest(p, fmt="macos-unifiedlog")  # four non-JSON lines: the sniffer says no
    assert res.stats.skipped["macos log header"] == 3
    assert [e.location.line for e in res.stats.shown] == [4]
    assert res.stats.rows == 1
