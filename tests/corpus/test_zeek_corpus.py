"""Every Zeek log in the public corpus: the store holds exactly its records, fields spot-checked.

The corpus holds Zeek's own test baselines (zeek/testing/btest/Baseline). Their timestamps are
canonicalised to 'XXXXXXXXXX.XXXXXX' by Zeek's test tool, so those values are reported as bad
and stored as NULL; every record must still be stored. Logs of kinds hopguard does not store
(notice, netcontrol, websocket, ...) must be refused with a clear message, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hopguard.errors import InputError
from hopguard.ingest.pipeline import ingest_file
from hopguard.ingest.zeek import KINDS, _cut_header, parse_header
from hopguard.store import Store

pytestmark = pytest.mark.corpus


def _records(path: Path) -> tuple[str | None, int]:
    """(log kind, number of data records) read independently of hopguard's readers."""
    lines = path.read_bytes().splitlines()
    h = parse_header(lines)
    kind = h.path or None
    data = [ln for ln in lines[h.lines:] if ln and not ln.startswith(b"#")]
    if kind is None and lines:
        first = next((ln for ln in lines if not ln.startswith(b"#")), b"")
        if _cut_header(first) is not None:
            kind = path.name.split(".")[0]
            data = data[1:] if data and data[0] == first else data
    return kind, len(data)


def test_every_zeek_log(public_corpus: Path) -> None:
    logs = sorted((public_corpus / "zeek").rglob("*.log"))
    assert len(logs) > 100
    store = Store.open(":memory:")
    stored = refused = 0
    seen_hash: dict[str, int] = {}
    for log in logs:
        kind, n = _records(log)
        result = ingest_file(store, log, sensor="corpus")
        if kind in KINDS and n > 0:
            if result.duplicate_of is not None:
                rows_of_earlier = seen_hash[result.duplicate_of]
                assert rows_of_earlier == n, log
                continue
            assert result.failure is None, (log, result.failure)
            table = KINDS[kind].table
            assert result.stats.added == {table: n}, log
            file_id = store.query("SELECT id FROM source_file WHERE path = ?",
                                  [str(log)]).to_pylist()[0]["id"]
            got = store.query(f"SELECT count(*) AS n FROM {table} WHERE file_id = ?",
                              [file_id]).to_pylist()[0]["n"]
            assert got == n, log
            seen_hash[str(log)] = n
            stored += 1
        else:
            assert result.failure is None or isinstance(result.failure, InputError), log
            if result.failure is not None:
                assert str(log) in str(result.failure)
                refused += 1
    assert stored >= 60 and refused >= 10
    print(f"\nzeek corpus: {stored} logs stored record for record, {refused} refused")


def _one(store: Store, sql: str) -> dict[str, object]:
    got = store.query(sql).to_pylist()
    assert len(got) == 1, got
    return got[0]


def test_spot_checks(public_corpus: Path) -> None:
    base = public_corpus / "zeek/testing/btest/Baseline"
    store = Store.open(":memory:")
    for rel in ("scripts.base.protocols.socks.trace2/socks.log",
                "scripts.base.protocols.socks.socks-auth/socks.log",
                "core.tunnels.gre/ssh.log", "core.tunnels.gre/dns.log",
                "scripts.base.protocols.ssl.basic/x509.log"):
        assert ingest_file(store, base / rel, sensor="c").failure is None
    socks = _one(store, "SELECT * FROM proxy WHERE target_host = 'www.google.com'")
    assert (socks["src_ip"], socks["dst_port"], socks["protocol"], socks["target_port"],
            socks["outcome"]) == ("10.0.0.50", 1080, "socks5", 443, "succeeded")
    auth = _one(store, "SELECT * FROM proxy WHERE user = 'bob'")
    assert auth["auth_method"] == "username/password" and auth["target_ip"] == "192.168.0.2"
    ssh = store.query("SELECT * FROM ssh").to_pylist()
    assert ssh and all(r["version"] == 2 for r in ssh) and ssh[0]["client"]
    dns = store.query("SELECT query, qtype, answers FROM dns WHERE query IS NOT NULL").to_pylist()
    assert dns and all(isinstance(r["answers"], list) or r["answers"] is None for r in dns)
    x509 = store.query("SELECT subject, not_before, key_length FROM x509").to_pylist()
    assert any(r["subject"] and "CN=" in str(r["subject"]) for r in x509)
    assert all(r["not_before"] is not None for r in x509)
