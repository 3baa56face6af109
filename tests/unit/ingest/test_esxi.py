"""ESXi shell.log: one process row per command, across the line forms ESXi releases write."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from hopguard.ingest.base import detect_format, read_head
from hopguard.ingest.esxi import EsxiShellFormat
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[2] / "data" / "esxi"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def rows(store: Store) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = store.query("SELECT * FROM process ORDER BY record").to_pylist()
    return out


def test_sniff(tmp_path: Path) -> None:
    for path in (DATA / "mixed.log", EXAMPLES / "esx-02-shell.log"):
        head, _ = read_head(path)
        assert detect_format(path, head) is EsxiShellFormat
    assert not EsxiShellFormat.sniff(
        b"Nov 20 09:14:03 app-07 sshd[811]: Accepted publickey for root\n", tmp_path / "x")
    assert not EsxiShellFormat.sniff(
        b"type=EXECVE msg=audit(1795166043.000:1): argc=1 a0=\"ls\"\n", tmp_path / "x")


def test_mixed_forms(ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    res = ingest(DATA / "mixed.log")
    assert res.format == "esxi-shell"
    # no syslog prefix, an impossible date, a shell line with no command
    assert [e.location.line for e in res.stats.shown] == [8, 9, 10]
    assert res.stats.skipped == {"esxi session line": 3, "esxi hostd line": 1}
    got = [(r["record"], r["host"], r["pid"], r["user"], r["image"], r["command_line"])
           for r in rows(store)]
    assert got == [
        (1, None, 35671, "root", "ls", "ls -la /vmfs/volumes"),
        (2, None, 2099541, "root", "nc", "nc -l -p 8000 -e /bin/sh"),
        (3, None, 2099541, "root", "socat", "socat TCP-LISTEN:9000,fork TCP:10.10.5.9:22"),
        (4, "esx-02.lab.local", 2099541, "dcui", "vim-cmd", "'vim-cmd' hostsvc/enable_ssh"),
        (11, "esx-03", 2100000, "root", "perl", "perl -e 'print 1'"),
    ]
    first = rows(store)[0]
    assert first["platform"] == "esxi" and first["source"] == "esxi"
    assert first["ts"].isoformat() == "2019-01-15T10:21:34"
    assert rows(store)[1]["ts"].isoformat() == "2026-11-20T11:05:00.123000"


def test_example_story(ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    res = ingest(EXAMPLES / "esx-02-shell.log")
    assert res.stats.errors == 0
    by_image = {r["image"]: r for r in rows(store)}
    nc = by_image["nc"]
    assert nc["user"] == "root" and nc["ts"].isoformat() == "2026-11-20T11:05:00.123000"
    assert "-e /bin/sh" in nc["command_line"]
    assert "TCP:203.0.113.66:443" in by_image["/tmp/socat"]["command_line"]


def test_gzip(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "shell.log.gz"
    p.write_bytes(gzip.compress((DATA / "mixed.log").read_bytes()))
    res = ingest(p)
    assert res.format == "esxi-shell" and res.stats.rows == 5 and res.stats.errors == 3


def test_crlf_and_bad_utf8(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "shell.log"
    p.write_bytes(b"2026-11-20T11:05:00Z shell[1]: [root]: echo \xff\xfe\r\n"
                  b"2026-11-20T11:05:01Z shell[1]: [root]: ls\r\n")
    res = ingest(p)
    assert res.stats.errors == 0
    assert [r["command_line"] for r in rows(store)] == ["echo \ufffd\ufffd", "ls"]


def test_odd_pid_field(tmp_path: Path, ingest, store: Store) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "shell.log"
    p.write_text("<14>1 2026-11-20T11:05:00Z esx-02 shell ² - - [root]: ls\n"
                 "<14>1 2026-11-20T11:05:01Z esx-02 shell 99999999999999999999 - - [root]: id\n",
                 encoding="utf-8")
    res = ingest(p)
    assert res.stats.errors == 0
    assert [(r["pid"], r["image"]) for r in rows(store)] == [(None, "ls"), (None, "id")]
