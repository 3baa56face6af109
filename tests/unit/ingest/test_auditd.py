"""auditd audit.log: event reassembly and the mapping to process, netconn and config_change."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from hopguard.ingest.auditd import (
    AuditAssembler,
    AuditdFormat,
    decode_sockaddr,
    join_argv,
    parse_stamp,
)
from hopguard.ingest.base import RowSink
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[2] / "data" / "auditd"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "app-07-audit.log"


def rows(store: Store, table: str, order: str = "record, ts") -> list[dict[str, Any]]:
    return store.query(
        f'SELECT * EXCLUDE (sensor, file_id) FROM "{table}" ORDER BY {order}').to_pylist()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=None)


def test_sniff() -> None:
    p = Path("audit.log")
    assert AuditdFormat.sniff(b"type=DAEMON_START msg=audit(1700000000.001:1): auditd start\n", p)
    assert AuditdFormat.sniff(b"node=a type=EOE msg=audit(1700000000.001:1): \n", p)
    assert AuditdFormat.sniff(b"----\ntime->Tue Nov 14 22:13:20 2023\n"
                              b"type=EOE msg=audit(1700000000.001:1): \n", p)
    assert not AuditdFormat.sniff(b'{"type": "x", "msg": "audit(1:2)"}\n', p)
    assert not AuditdFormat.sniff(b"#separator \\x09\n#path\tconn\n", p)
    assert not AuditdFormat.sniff(b"", p)


def test_helpers() -> None:
    assert parse_stamp("1700000000.123:4567") == 1_700_000_000_123_000
    assert parse_stamp("1700000000:1") == 1_700_000_000_000_000
    assert parse_stamp("17x.1:2") is None
    assert parse_stamp("1.1:") is None
    assert join_argv(["sh", "-c", 'echo "a b"', ""]) == 'sh -c "echo \\"a b\\"" ""'
    assert decode_sockaddr("0200115C0A0A00050000000000000000") == (2, "10.10.0.5", 4444)
    assert decode_sockaddr("01002F746D70") == (1, None, None)


def test_execve_quoted_hex_proctitle_and_long_args(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "execve.log")
    assert res.failure is None and res.stats.errors == 0
    assert res.stats.skipped == {"auditd failed execve": 1}
    got = rows(store, "process")
    assert [r["record"] for r in got] == [1, 7, 10]
    sh, py_title, py_long = got
    assert sh == {
        "ts": at("2023-11-14T22:13:20.123"), "record": 1, "host": "web-1", "platform": "linux",
        "pid": 11, "ppid": 10, "image": "/usr/bin/dash",
        "command_line": 'sh -c "echo hi there"',  # a2 was hex because it has spaces
        "user": "1000", "parent_image": None, "parent_command_line": None,
        "cwd": "/home/u/my dir", "process_guid": None, "parent_guid": None,
        "source": "auditd", "event_code": "EXECVE"}
    # aarch64 execve (221) without an EXECVE record: the argv comes from PROCTITLE
    assert (py_title["pid"], py_title["user"], py_title["command_line"]) == \
        (12, "0", "python3 -m http.server")
    assert py_title["ts"] == at("2023-11-14T22:13:21.500")
    # a1 split as a1_len/a1[0]/a1[1], a2 in a second EXECVE record; no node= means no host
    assert py_long["command_line"] == "python3 \"print('long argument!!')\" --flag"
    assert py_long["host"] is None and py_long["cwd"] == "/srv"


def test_interleaved_events_and_missing_eoe(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "interleaved.log")
    assert res.stats.errors == 0
    assert res.stats.records == 4  # three execs and one USER_LOGIN
    got = {r["pid"]: r for r in rows(store, "process")}
    assert got[21]["command_line"] == "socat TCP-LISTEN:8443,fork TCP:203.0.113.66:443"
    assert got[21]["cwd"] == "/var/www"  # its CWD came after the other event's EOE
    assert got[21]["record"] == 1
    assert got[22]["command_line"] == "curl http://example.org/"
    assert got[23]["command_line"] == "id"  # no EOE: closed at end of file
    assert res.stats.skipped == {"auditd USER_LOGIN event": 1}


def _sink(added: list[tuple[str, dict[str, Any]]]) -> RowSink:
    sink = RowSink(write=lambda name, t: None, file_id=1, sensor="s", path="mem")

    def add(table: str, row: dict[str, Any]) -> None:
        added.append((table, row))

    sink.add = add  # type: ignore[method-assign]
    return sink


def test_open_events_are_bounded() -> None:
    added: list[tuple[str, dict[str, Any]]] = []
    asm = AuditAssembler(_sink(added), "mem", max_open=2)
    for serial in range(5):
        asm.feed(serial + 1, (f"type=SYSCALL msg=audit(1700000000.000:{serial}): arch=c000003e "
                              f"syscall=59 success=yes exit=0 pid={serial}").encode())
    # the three oldest were evicted (closed) as soon as a third event was open
    assert [r["pid"] for _, r in added] == [0, 1, 2]
    assert len(asm.open) == 2
    asm.finish()
    assert [r["pid"] for _, r in added] == [0, 1, 2, 3, 4]


def test_enriched_names_and_gs_separator(store: Store, ingest: Any, tmp_path: Path) -> None:
    p = tmp_path / "enriched.log"
    p.write_bytes(
        b"node=h1 type=SYSCALL msg=audit(1700000000.5:9): arch=c000003e syscall=59 success=yes "
        b"exit=0 ppid=1 pid=77 auid=1000 uid=1000 comm=\"nc\" exe=\"/usr/bin/nc\" key=(null)"
        b"\x1dARCH=x86_64 SYSCALL=execve AUID=\"alice\" UID=\"alice\" GID=\"alice\"\n"
        b"node=h1 type=EXECVE msg=audit(1700000000.5:9): argc=3 a0=\"nc\" a1=\"-l\" a2=\"4444\"\n"
        b"node=h1 type=SYSCALL msg=audit(1700000000.6:10): arch=c000003e syscall=42 "
        b"success=yes exit=0 pid=77 uid=0 exe=\"/usr/bin/nc\"\x1dARCH=x86_64 SYSCALL=connect "
        b"UID=\"root\"\n"
        b"node=h1 type=SOCKADDR msg=audit(1700000000.6:10): saddr=02000050C0A800010000000000000000"
        b"\x1dSADDR={ saddr_fam=inet laddr=192.168.0.1 lport=80 }\n")
    res = ingest(p)
    assert res.stats.errors == 0
    (proc,) = rows(store, "process")
    assert (proc["host"], proc["user"], proc["command_line"]) == ("h1", "alice", "nc -l 4444")
    (conn,) = rows(store, "netconn")
    assert (conn["user"], conn["dst_ip"], conn["dst_port"]) == ("root", "192.168.0.1", 80)


def test_netconn_ipv4_ipv6_and_what_is_skipped(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "net.log")
    assert res.stats.errors == 0
    assert res.stats.skipped == {
        "auditd failed connect": 1,  # ECONNREFUSED: no connection was made
        "auditd non-IP socket event": 1,  # AF_UNIX
        "auditd listen without SOCKADDR": 1,
        "auditd accept without SOCKADDR": 1,
    }
    got = rows(store, "netconn")
    view = [(r["event_code"], r["direction"], r["pid"], r["image"], r["src_ip"], r["src_port"],
             r["dst_ip"], r["dst_port"], r["proto"]) for r in got]
    assert view == [
        ("connect", "outbound", 31, "/usr/bin/socat", None, None, "203.0.113.66", 443, "tcp"),
        # success=no exit=-115 (EINPROGRESS): a non-blocking connect, kept
        ("connect", "outbound", 32, "/usr/bin/curl", None, None, "10.10.0.5", 3128, "tcp"),
        ("accept4", "inbound", 31, "/usr/bin/socat", "2001:db8::5", 51000, None, None, "tcp"),
        ("bind", "listen", 31, "/usr/bin/socat", None, None, "::", 8443, "tcp"),
        ("bind", "listen", 34, "/usr/sbin/nginx", None, None, "10.1.2.3", 80, "tcp"),
        ("connect", "outbound", 36, "/usr/bin/wget", None, None, "198.51.100.7", 8080, "tcp"),
    ]
    assert got[0]["user"] == "33" and got[0]["platform"] == "linux"
    assert got[0]["ts"] == at("2023-11-14T22:16:40")


def test_netfilter_cfg(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "netfilter.log")
    assert res.stats.errors == 0
    got = rows(store, "config_change", "record, action")
    view = [(r["record"], r["source"], r["action"], r["object"], r["detail"], r["pid"],
             r["image"], r["user"], r["event_code"]) for r in got]
    assert view == [
        # an old kernel's record, with its SYSCALL (modprobe at boot)
        (1, "netfilter", None, "filter/ip", "entries=0", 391, "/usr/bin/kmod", "0",
         "NETFILTER_CFG"),
        # one nft transaction: two changes, both paired with the nft SYSCALL
        (3, "netfilter", "nft_register_chain", "nat/ip", "entries=1 gen=7", 3412,
         "/usr/sbin/nft", "0", "NETFILTER_CFG"),
        (3, "netfilter", "nft_register_rule", "nat/ip", "entries=1 gen=7", 3412,
         "/usr/sbin/nft", "0", "NETFILTER_CFG"),
        # no SYSCALL in the event: pid from the record itself
        (9, "netfilter", "nft_unregister_rule", "filter/ip6", "entries=3 gen=8", 3413, None,
         None, "NETFILTER_CFG"),
    ]


def test_malformed_lines_are_located_and_the_rest_stored(store: Store, ingest: Any) -> None:
    res = ingest(DATA / "malformed.log")
    assert res.failure is None
    assert res.stats.errors == 4
    where = sorted((e.location.line, e.message.split(":")[0]) for e in res.stats.shown)
    assert where == [(3, "not an audit record (no type=)"), (4, "bad audit stamp 'not-a-time"),
                     (6, "EXECVE a1"), (7, "no msg=audit(<time>")]
    got = rows(store, "process")
    assert [(r["pid"], r["command_line"]) for r in got] == [
        (41, "ls"), (43, "cat ZZ0A"), (44, "id")]  # the bad hex arg is kept as written


def test_gzip_input(store: Store, ingest: Any, tmp_path: Path) -> None:
    gz = tmp_path / "audit.log.1.gz"
    with (DATA / "execve.log").open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    res = ingest(gz)
    assert res.format == "auditd" and res.stats.errors == 0
    assert rows(store, "process")[0]["command_line"] == 'sh -c "echo hi there"'


def test_truncated_gzip_keeps_complete_lines(store: Store, ingest: Any, tmp_path: Path) -> None:
    data = (DATA / "execve.log").read_bytes() * 200
    gz = tmp_path / "cut.gz"
    gz.write_bytes(gzip.compress(data)[:-200])
    res = ingest(gz)
    assert res.failure is None and res.stats.errors >= 1
    assert "gzip stream" in res.stats.shown[-1].message
    assert res.stats.added["process"] > 100


def test_ausearch_separators_are_ignored(store: Store, ingest: Any, tmp_path: Path) -> None:
    p = tmp_path / "ausearch.txt"
    body = (DATA / "interleaved.log").read_text().splitlines()
    p.write_text("----\ntime->Tue Nov 14 22:15:00 2023\n" + "\n".join(body[:7]) + "\n")
    res = ingest(p)
    assert res.stats.errors == 0 and res.stats.added == {"process": 2}


def test_example_story(store: Store, ingest: Any) -> None:
    res = ingest(EXAMPLE)
    assert res.stats.errors == 0
    procs = rows(store, "process")
    assert {r["host"] for r in procs} == {"app-07"}
    (socat,) = [r for r in procs if r["image"] == "/usr/bin/socat"]
    assert socat["pid"] == 4242 and socat["user"] == "www-data"
    assert socat["ts"] == at("2026-11-20T09:14:03.004")
    assert socat["command_line"] == "socat TCP-LISTEN:8443,fork,reuseaddr TCP:203.0.113.66:443"
    (micro,) = [r for r in procs if r["command_line"] == "./microsocks -p 1080"]
    assert micro["pid"] == 5120 and micro["user"] == "www-data"
    assert micro["ts"] == at("2026-11-20T10:30:00.002")
    assert any(r["command_line"] == "sysctl -w net.ipv4.ip_forward=1" and r["user"] == "root"
               for r in procs)
    conns = {(r["pid"], r["direction"], r["src_ip"] or r["dst_ip"], r["src_port"] or r["dst_port"])
             for r in rows(store, "netconn")}
    assert {(4242, "listen", "0.0.0.0", 8443), (4242, "inbound", "10.10.1.42", 51544),
            (4243, "outbound", "203.0.113.66", 443), (5120, "listen", "0.0.0.0", 1080)} <= conns
    (nat,) = rows(store, "config_change")
    assert (nat["action"], nat["object"], nat["image"], nat["user"]) == \
        ("nft_register_rule", "nat/ip", "/usr/sbin/nft", "root")
    assert nat["ts"] == at("2026-11-20T09:40:00.065")


@pytest.mark.parametrize("line", [
    b"", b"node=", b"node=x", b"type=", b"type=X msg=audit(", b"type=X msg=audit()",
    b"type=X msg=audit(1.2:3", b"type=X msg=audit(1.2:3):", b"\xff\xfe type=SYSCALL",
    b"type=SYSCALL msg=audit(1.2:3): syscall=59 pid=x ppid= exe=4 uid=",
    b"type=SOCKADDR msg=audit(1.2:4): saddr=0200", b"type=EXECVE msg=audit(1.2:5): argc=z a0=",
])
def test_fragments_never_raise(line: bytes) -> None:
    added: list[tuple[str, dict[str, Any]]] = []
    sink = _sink(added)
    asm = AuditAssembler(sink, "mem")
    asm.feed(1, line)
    asm.finish()
    for _table, row in added:
        pa.array([row.get("pid")], type=pa.int64())
