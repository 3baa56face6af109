"""Zeek TSV and JSON logs: values, both read paths, damage reporting."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from hopguard.errors import InputError
from hopguard.ingest.zeek import parse_header, unescape
from hopguard.store import Store
from tests.conftest import DATA

ZEEK = DATA / "zeek"


def rows(store: Store, sql: str) -> list[dict[str, object]]:
    return store.query(sql).to_pylist()


def test_unescape_hex_and_backslash() -> None:
    assert unescape(b"a\\x09b") == "a\tb"
    assert unescape(b"\\x2c,\\\\") == ",,\\"
    assert unescape(b"caf\xc3\xa9") == "café"


def test_header_directives() -> None:
    h = parse_header((ZEEK / "conn.log").read_bytes().splitlines())
    assert h.separator == b"\t" and h.set_separator == b"," and h.path == "conn"
    assert h.fields is not None and h.fields[:3] == ["ts", "uid", "id.orig_h"]
    assert h.types is not None and h.types[0] == "time" and h.lines == 8


@pytest.mark.parametrize("fast", [True, False])
def test_conn_values(store: Store, ingest, fast: bool) -> None:  # type: ignore[no-untyped-def]
    result = ingest(ZEEK / "conn.log", fast_zeek_tsv=fast)
    assert result.failure is None and result.stats.errors == 0
    assert result.stats.added == {"flow": 4}
    got = rows(store, "SELECT * FROM flow ORDER BY uid")
    first = got[0]
    assert str(first["ts"]) == "2026-11-20 09:00:00.123456"
    assert (first["src_ip"], first["src_port"], first["dst_ip"], first["dst_port"]) == (
        "10.10.1.42", 51000, "10.10.2.7", 8443)
    assert (first["src_bytes"], first["dst_bytes"], first["src_pkts"], first["dst_pkts"]) == (
        1200, 56000, 20, 45)
    assert first["state"] == "SF" and first["local_orig"] is True and first["duration"] == 12.5
    assert first["tunnel_parents"] == [] and first["service"] is None
    assert got[1]["tunnel_parents"] == ["Ct1", "Ct2"] and got[1]["local_resp"] is False
    assert got[3]["duration"] is None and got[3]["state"] == "S0"
    assert {r["sensor"] for r in got} == {"test"}


def test_fast_and_line_paths_store_identical_rows(tmp_path: Path) -> None:
    tables = {}
    for fast in (True, False):
        s = Store.open(":memory:")
        from hopguard.ingest.pipeline import ingest_file
        for name in ("conn.log", "http.log"):
            ingest_file(s, ZEEK / name, sensor="x", fast_zeek_tsv=fast)
        tables[fast] = (
            rows(s, "SELECT * EXCLUDE (record, file_id) FROM flow ORDER BY uid"),
            rows(s, "SELECT * EXCLUDE (record, file_id) FROM http ORDER BY uid"))
        s.close()
    assert tables[True] == tables[False]


def test_http_proxy_fields(store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(ZEEK / "http.log")
    got = {r["uid"]: r for r in rows(store, "SELECT * FROM http")}
    assert got["Ch1"]["method"] == "CONNECT" and got["Ch1"]["is_proxy_request"] is True
    assert got["Ch2"]["uri"] == "http://www.example.com/a\tb"  # \x09 unescaped
    assert got["Ch2"]["is_proxy_request"] is True
    assert got["Ch2"]["via"] == "1.1 proxy-01" and got["Ch2"]["x_forwarded_for"] == "10.10.1.42"
    assert got["Ch3"]["is_proxy_request"] is False and got["Ch3"]["user_agent"] == ""
    assert got["Ch3"]["content_type"] == "text/html"


def test_json_socks_with_iso_and_epoch_times(store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    result = ingest(ZEEK / "socks.log")
    assert result.stats.added == {"proxy": 2} and result.stats.errors == 0
    got = {r["uid"]: r for r in rows(store, "SELECT * FROM proxy")}
    assert got["Cs1"]["protocol"] == "socks5" and got["Cs1"]["target_host"] == "files.corp.example"
    assert got["Cs1"]["auth_method"] == "username/password" and got["Cs1"]["user"] == "bob"
    assert got["Cs2"]["protocol"] == "socks4" and got["Cs2"]["target_ip"] == "10.10.5.9"
    assert str(got["Cs2"]["ts"]) == "2026-11-20 09:43:21.250000"
    assert got["Cs1"]["record"] == 1 and got["Cs2"]["record"] == 2


def test_broken_line_in_the_middle(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    lines = (ZEEK / "conn.log").read_text().splitlines(keepends=True)
    lines[9] = lines[9][:40] + "\n"  # the second record, cut short
    lines[10] = lines[10].replace("\t0.001\t", "\tslow\t")  # a bad interval value
    bad = tmp_path / "conn.log"
    bad.write_text("".join(lines))
    result = ingest(bad)
    assert result.failure is None
    # the short line is skipped; the bad value becomes NULL and the record is kept
    assert result.stats.added == {"flow": 3}
    assert result.stats.errors == 2
    where = sorted(str(e.location) for e in result.stats.shown)
    assert where == [f"{bad}:10", f"{bad}:11"]
    assert "expected 21 fields, found 5" in result.stats.shown[0].message
    assert rows(store, "SELECT duration FROM flow WHERE uid = 'Ca3'") == [{"duration": None}]


def test_truncated_gzip_keeps_complete_lines(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    body = (ZEEK / "conn.log").read_bytes()
    head, recs = body.split(b"\n1795165200.123456", 1)
    big = head + b"".join(b"\n1795165200.123456" + recs.split(b"\n#close")[0].split(b"\n")[0]
                          .replace(b"Ca1", f"C{i}".encode()) for i in range(20000)) + b"\n"
    gz = gzip.compress(big)
    damaged = tmp_path / "conn.log.gz"
    damaged.write_bytes(gz[: len(gz) * 2 // 3])
    result = ingest(damaged)
    assert result.failure is None
    n = result.stats.added["flow"]
    assert 0 < n < 20000
    assert result.stats.errors == 1
    loc = result.stats.shown[0].location
    assert loc.path == str(damaged) and loc.offset is not None and loc.offset > 0
    assert "gzip stream is truncated" in result.stats.shown[0].message
    assert rows(store, "SELECT count(*) AS n FROM flow") == [{"n": n}]


def test_gzip_whole(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    gz = tmp_path / "conn.log.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write((ZEEK / "conn.log").read_bytes())
    result = ingest(gz)
    assert result.stats.added == {"flow": 4} and result.stats.errors == 0


def test_zeek_cut_output(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    cut = tmp_path / "whatever.txt"
    cut.write_text("uid\tid.orig_h\tid.resp_h\tid.resp_p\tconn_state\thistory\n"
                   "C1\t10.0.0.1\t10.0.0.2\t22\tSF\tShAdDaFf\n")
    result = ingest(cut)
    assert result.stats.added == {"flow": 1}
    assert rows(store, "SELECT uid, dst_port, state FROM flow") == [
        {"uid": "C1", "dst_port": 22, "state": "SF"}]


def test_unsupported_log_kind_is_reported(tmp_path: Path, ingest) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "notice.log"
    log.write_text("#separator \\x09\n#path\tnotice\n#fields\tts\tnote\n#types\ttime\tenum\n"
                   "1.0\tSSL::Invalid_Server_Cert\n")
    result = ingest(log)
    assert isinstance(result.failure, InputError)
    assert "'notice' is not one hopguard stores" in str(result.failure)


def test_same_file_twice_is_stored_once(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    copy = tmp_path / "renamed.log"
    shutil.copy(ZEEK / "conn.log", copy)
    first = ingest(ZEEK / "conn.log")
    second = ingest(copy)
    assert first.stats.rows == 4
    assert second.duplicate_of == str(ZEEK / "conn.log") and second.stats.rows == 0
    assert store.counts()["flow"] == 4
