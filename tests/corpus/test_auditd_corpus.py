"""auditd reader against real audit logs recorded by others (read in place, never copied).

elastic+go-libaudit: the raw audit.log samples of its parser tests (benign; some files are
collections of single records, one per record type, rather than whole events). OTRF: an atomic
Linux recording (inside a zip archive, extracted to a temporary directory). The expected values
below were checked by reading each file.
"""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hopguard.store import Store

pytestmark = pytest.mark.corpus

LIBAUDIT = "elastic+go-libaudit"
RAW_LOGS = [
    "auparse/testdata/audit-rhel6.log",
    "auparse/testdata/audit-rhel7.log",
    "auparse/testdata/audit-ubuntu16.log",
    "auparse/testdata/test3.log",
    "testdata/lost_messages.log",
    "testdata/out_of_order.log",
    "testdata/rollover.log",
]
OTRF_ARP = "OTRF+Security-Datasets/datasets/atomic/linux/discovery/host/sh_arp_cache.zip"


def _file(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the endpoint corpus")
    return path


def _rows(store: Store, table: str, file_id: int) -> list[dict[str, Any]]:
    return store.query(f'SELECT * FROM "{table}" WHERE file_id = ? ORDER BY record, ts',
                       [file_id]).to_pylist()


def _file_id(store: Store, path: Path) -> int:
    t = store.query("SELECT id FROM source_file WHERE path = ?", [str(path)]).to_pylist()
    return int(t[0]["id"]) if t else -1


def _ts(epoch: str) -> datetime:
    whole, frac = epoch.split(".")
    return datetime.fromtimestamp(int(whole), UTC).replace(microsecond=int(frac) * 1000,
                                                       tzinfo=None)


@pytest.mark.parametrize("rel", RAW_LOGS)
def test_libaudit_logs_ingest_without_traceback(endpoint_corpus: Path, ingest: Any,
                                                rel: str) -> None:
    path = _file(endpoint_corpus / LIBAUDIT, rel)
    res = ingest(path)
    assert res.format == "auditd"
    for err in res.stats.shown:
        assert err.location.line is not None
    if rel.endswith("audit-ubuntu16.log"):
        # two USER_LOGIN and an AVC: nothing of a stored kind, reported as such
        assert res.failure is not None and "nothing usable" in res.failure.message
        assert res.stats.skipped == {"auditd USER_LOGIN event": 2, "auditd AVC event": 1}
    else:
        assert res.failure is None and res.stats.rows > 0
    if rel.endswith("audit-rhel7.log"):
        # line 31 is "type=UNKNOWN[1329] msg=?": the only record without a stamp
        assert res.stats.errors == 1 and res.stats.shown[0].location.line == 31
    else:
        assert res.stats.errors == 0


def test_libaudit_rhel7_spot_checks(endpoint_corpus: Path, ingest: Any, store: Store) -> None:
    path = _file(endpoint_corpus / LIBAUDIT, "auparse/testdata/audit-rhel7.log")
    ingest(path)
    procs = {r["record"]: r for r in _rows(store, "process", _file_id(store, path))}
    # event 479: CWD on line 10, EXECVE on 15, PATH on 19 (no SYSCALL in this sample)
    auditctl = procs[10]
    assert auditctl["command_line"] == "auditctl -a exit,always -F arch=b32 -S execve"
    assert auditctl["image"] == "/sbin/auditctl"  # from PATH item 0, for want of exe=
    assert auditctl["cwd"] == "/home/andrew_kroh"
    assert auditctl["ts"] == _ts("1481077231.371")
    # line 48: jq with a hex-encoded JSON argument (it has newlines and quotes)
    assert procs[48]["command_line"].startswith('jq . "{\n        \\"dev\\": \\"08:01\\",')
    # event 17: NETFILTER_CFG (line 18) with its SYSCALL (line 27) from modprobe at boot
    (nf,) = _rows(store, "config_change", _file_id(store, path))
    assert (nf["record"], nf["object"], nf["detail"], nf["pid"], nf["image"], nf["user"]) == \
        (18, "filter/ip", "entries=0", 391, "/usr/bin/kmod", "0")


def test_libaudit_out_of_order_spot_checks(endpoint_corpus: Path, ingest: Any,
                                           store: Store) -> None:
    path = _file(endpoint_corpus / LIBAUDIT, "testdata/out_of_order.log")
    res = ingest(path)
    fid = _file_id(store, path)
    procs = _rows(store, "process", fid)
    assert [(r["record"], r["pid"], r["ppid"], r["image"], r["command_line"], r["user"], r["cwd"])
            for r in procs] == [
        (3, 13393, 12041, "/usr/bin/grep", "grep --color=auto mapping", "1000",
         "/home/andrew_kroh"),
        (8, 13392, 12041, "/usr/bin/cat", "cat securitybeat", "1000", "/home/andrew_kroh"),
    ]
    assert procs[0]["ts"] == _ts("1492037291.036")
    # line 1: a non-blocking connect (exit=-115) by a deleted python binary (hex exe=)
    (conn,) = _rows(store, "netconn", fid)
    assert (conn["record"], conn["pid"], conn["image"], conn["direction"], conn["dst_ip"],
            conn["dst_port"]) == (1, 1172, "/usr/bin/python2.7;58d1ccfb (deleted)", "outbound",
                                  "169.254.169.254", 80)
    # event 61 connects a unix socket (public/pickup); event 62 is an accept with no SOCKADDR
    assert res.stats.skipped == {"auditd non-IP socket event": 1,
                                 "auditd accept without SOCKADDR": 1}


def test_libaudit_rollover_and_sudo(endpoint_corpus: Path, ingest: Any, store: Store) -> None:
    path = _file(endpoint_corpus / LIBAUDIT, "testdata/rollover.log")
    ingest(path)
    (cat,) = _rows(store, "process", _file_id(store, path))
    # serial 4294967295, just before the counter wraps to 0; only its SYSCALL is in the file
    assert (cat["record"], cat["pid"], cat["image"], cat["command_line"]) == \
        (2, 13392, "/usr/bin/cat", None)
    path = _file(endpoint_corpus / LIBAUDIT, "auparse/testdata/audit-rhel6.log")
    ingest(path)
    (sudo,) = _rows(store, "process", _file_id(store, path))
    assert (sudo["event_code"], sudo["pid"], sudo["user"], sudo["cwd"], sudo["command_line"]) == \
        ("USER_CMD", 3027, "497", "/",
         "/usr/lib64/nagios/plugins/check_asterisk_sip_peers -p 107")


def test_otrf_arp_cache(endpoint_corpus: Path, ingest: Any, store: Store,
                        tmp_path: Path) -> None:
    archive = _file(endpoint_corpus, OTRF_ARP)
    with zipfile.ZipFile(archive) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".log")]
        path = Path(zf.extract(name, tmp_path))
    res = ingest(path)
    assert res.format == "auditd" and res.stats.errors == 0
    procs = _rows(store, "process", _file_id(store, path))
    assert [(r["pid"], r["ppid"], r["image"], r["command_line"], r["user"], r["cwd"])
            for r in procs] == [
        (1631, 29002, "/usr/sbin/arp", "arp -a", "1000", "/home/wardog"),
        (1632, 29002, "/bin/grep", "grep -v ^?", "1000", "/home/wardog"),
    ]
    assert procs[0]["ts"] == _ts("1604994496.155")
