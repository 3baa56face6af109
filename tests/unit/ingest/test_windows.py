"""Windows event logs: sniffing, every mapped event id in each JSON-lines shape, damage, EVTX."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from hopguard.errors import SourceLocation
from hopguard.ingest.base import IngestContext, RowSink, read_head
from hopguard.ingest.pipeline import FileResult
from hopguard.ingest.values import iso_to_us
from hopguard.ingest.windows import (
    EVTX_CHUNK_SIZE,
    EVTX_HEADER_SIZE,
    HANDLERS,
    LAYOUT,
    WindowsFormat,
    _dns_answers,
    _Mapper,
    _TimeParser,
    scan_chunks,
)
from hopguard.store import Store

DATA = Path(__file__).resolve().parents[2] / "data" / "windows"
WINLOGBEAT = DATA / "winlogbeat.jsonl"
NXLOG = DATA / "nxlog.jsonl"
OTRF = DATA / "otrf.jsonl"
ENDPOINT = Path(__file__).resolve().parents[4] / "shared" / "data" / "endpoint"
PANACHE = ENDPOINT / "sbousseaden+EVTX-ATTACK-SAMPLES" / "AutomatedTestingTools" / \
    "panache_sysmon_vs_EDRTestingScript.evtx"


def rows(store: Store, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    return store.query(sql, params).to_pylist()


def one(store: Store, table: str, record: int) -> dict[str, Any]:
    found = rows(store, f'SELECT * FROM "{table}" WHERE record = ?', [record])
    assert len(found) == 1, found
    return found[0]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def messages(result: FileResult) -> dict[int | None, str]:
    return {e.location.line: e.message for e in result.stats.shown}


@pytest.fixture
def panache() -> Path:
    if not PANACHE.is_file():
        pytest.skip(f"endpoint corpus not found at {ENDPOINT}")
    return PANACHE


# -- sniff ------------------------------------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"ElfFile\x00" + bytes(100),
    WINLOGBEAT.read_bytes()[:4000],
    NXLOG.read_bytes()[:4000],
    OTRF.read_bytes()[:4000],
    b'{"winlog.event_id": "1", "winlog.channel": "Security", "@timestamp": "x"}\n',
    b'{"broken\n{"EventID": 4688, "Channel": "Security"}\n',
])
def test_sniff_claims_windows(head: bytes) -> None:
    assert WindowsFormat.sniff(head, Path("x"))


@pytest.mark.parametrize("head", [
    b'{"timestamp": "2026-11-20T10:00:00Z", "event_type": "flow", "EventID": 1, "Channel": "x"}\n',
    b'{"ts": 1.0, "uid": "C1", "id.orig_h": "10.0.0.1"}\n',
    b'{"_path": "conn", "ts": 1.0}\n',
    b'{"eventMessage": "hello", "EventID": 1, "Channel": "x"}\n',
    b'{"message": "not windows"}\n',
    b"#separator \\x09\n",
    b"type=SYSCALL msg=audit(1.0:1): arch=c000003e\n",
    b"[1, 2]\n",
    b"",
])
def test_sniff_rejects_others(head: bytes) -> None:
    assert not WindowsFormat.sniff(head, Path("x"))


def test_detected_by_pipeline(ingest: Any) -> None:
    assert ingest(WINLOGBEAT).format == "windows"


# -- Winlogbeat / Elastic Agent ---------------------------------------------------------------

@pytest.fixture
def beat(store: Store, ingest: Any) -> FileResult:
    return ingest(WINLOGBEAT, max_shown=50)  # type: ignore[no-any-return]


def test_beat_sysmon_process(store: Store, beat: FileResult) -> None:
    row = one(store, "process", 1)
    assert row["ts"] == ts("2026-11-20T10:02:11.417")
    assert row["image"] == "C:\\Windows\\System32\\netsh.exe"
    assert row["command_line"].startswith("netsh interface portproxy add v4tov4 listenport=3390")
    assert row["user"] == "CORP\\svc_backup"
    assert (row["pid"], row["ppid"]) == (4812, 3020)
    assert row["parent_image"] == "C:\\Windows\\System32\\cmd.exe"
    assert row["parent_command_line"] == '"C:\\Windows\\system32\\cmd.exe"'
    assert row["cwd"] == "C:\\Users\\svc_backup\\"
    assert row["process_guid"] == "{5a1b2c3d-0a0b-6745-0000-0000004812}"
    assert row["parent_guid"] == "{5a1b2c3d-0a0b-6745-0000-0000003020}"
    assert (row["host"], row["platform"], row["source"], row["event_code"]) == (
        "WIN-FS01.corp.local", "windows", "sysmon", "1")
    assert row["sensor"] == "test"


def test_beat_sysmon_registry(store: Store, beat: FileResult) -> None:
    row = one(store, "config_change", 2)
    assert (row["source"], row["action"], row["event_code"]) == ("registry", "SetValue", "13")
    assert row["object"] == \
        "HKLM\\System\\CurrentControlSet\\Services\\PortProxy\\v4tov4\\tcp\\0.0.0.0/3390"
    assert row["detail"] == "10.10.5.9/3389"
    assert (row["image"], row["pid"], row["user"]) == (
        "C:\\Windows\\System32\\netsh.exe", 4812, "CORP\\svc_backup")
    create = one(store, "config_change", 7)
    assert (create["action"], create["event_code"], create["detail"]) == ("CreateKey", "12", None)
    rename = one(store, "config_change", 8)
    assert (rename["action"], rename["event_code"]) == ("RenameKey", "14")
    assert rename["detail"] == "HKCU\\Software\\Example\\New"


def test_beat_sysmon_netconn(store: Store, beat: FileResult) -> None:
    out = one(store, "netconn", 3)
    assert out["ts"] == ts("2026-11-20T10:03:02.500")
    assert (out["direction"], out["proto"]) == ("outbound", "tcp")
    assert (out["src_ip"], out["src_port"], out["dst_ip"], out["dst_port"]) == (
        "10.10.3.21", 52114, "10.10.5.9", 3389)
    assert out["dst_host"] == "db-05.corp.local"
    assert (out["image"], out["pid"], out["user"]) == ("System", 4, "NT AUTHORITY\\SYSTEM")
    assert out["process_guid"] == "{5a1b2c3d-0a0b-6745-0000-0000000004}"
    assert (out["source"], out["event_code"]) == ("sysmon", "3")
    inbound = one(store, "netconn", 4)
    assert inbound["ts"] == ts("2026-11-20T10:03:01.998765")
    assert (inbound["direction"], inbound["dst_port"], inbound["dst_host"]) == (
        "inbound", 3390, None)


def test_beat_sysmon_dns(store: Store, beat: FileResult) -> None:
    row = one(store, "dns", 5)
    assert row["query"] == "update.example.com"
    assert row["answers"] == ["edge.example.net", "203.0.113.10", "2001:db8::10"]
    assert row["rcode"] == "NOERROR"
    assert (row["pid"], row["image"], row["host"]) == (
        1200, "C:\\Windows\\System32\\svchost.exe", "WIN-FS01.corp.local")
    assert row["uid"] is None
    nx = one(store, "dns", 6)
    assert (nx["rcode"], nx["answers"]) == ("NXDOMAIN", None)


def test_beat_security_4688(store: Store, beat: FileResult) -> None:
    row = one(store, "process", 10)
    assert (row["source"], row["event_code"]) == ("security", "4688")
    assert (row["pid"], row["ppid"]) == (0x12CC, 0xBCC)
    assert row["user"] == "CORP\\svc_backup"
    assert row["image"] == "C:\\Windows\\System32\\netsh.exe"
    assert row["command_line"] == "netsh interface portproxy show all"
    assert row["parent_image"] == "C:\\Windows\\System32\\cmd.exe"


def test_beat_security_5156(store: Store, beat: FileResult) -> None:
    row = one(store, "netconn", 11)
    assert (row["source"], row["event_code"], row["direction"], row["proto"]) == (
        "security", "5156", "inbound", "tcp")
    assert (row["src_ip"], row["src_port"], row["dst_ip"], row["dst_port"]) == (
        "10.10.1.42", 61002, "10.10.3.21", 3390)
    assert (row["pid"], row["image"]) == (
        1016, "\\device\\harddiskvolume2\\windows\\system32\\svchost.exe")


def test_beat_ecs_renamed_fields(store: Store, beat: FileResult) -> None:
    row = one(store, "process", 15)
    assert (row["image"], row["command_line"], row["pid"], row["ppid"]) == (
        "C:\\Windows\\System32\\ipconfig.exe", "ipconfig /all", 5120, 3020)
    assert (row["parent_image"], row["cwd"], row["user"]) == (
        "C:\\Windows\\System32\\cmd.exe", "C:\\Users\\alice\\", "CORP\\alice")


def test_beat_counts_and_skips(beat: FileResult) -> None:
    assert beat.failure is None
    assert beat.stats.added == {"process": 4, "config_change": 3, "netconn": 4, "dns": 2}
    assert beat.stats.skipped == {"sysmon event 5": 1, "security event 4624": 1}
    assert beat.stats.records == 20  # the blank line is not a record


def test_beat_bad_lines_are_located(store: Store, beat: FileResult) -> None:
    assert beat.stats.errors == 7
    got = messages(beat)
    assert got[13].startswith("not JSON")
    assert got[14] == "field ProcessId: 'four' is not an integer (stored as unset)"
    assert got[16].startswith("bad timestamp")
    assert got[17] == "not a JSON object"
    assert got[18].startswith("not a Windows event")
    assert got[19].startswith("event id 'one'")
    assert got[21].startswith("field SourcePort: '70000' is not a port number")
    assert all(e.location.path == str(WINLOGBEAT) for e in beat.stats.shown)
    # bad values: the rest of the row is kept
    kept = one(store, "process", 14)
    assert (kept["pid"], kept["ppid"], kept["image"]) == (
        None, 3020, "C:\\Windows\\System32\\whoami.exe")
    port = one(store, "netconn", 21)
    assert (port["src_port"], port["dst_port"], port["proto"]) == (None, 53, "udp")


def test_gzip_same_rows(tmp_path: Path, store: Store, ingest: Any) -> None:
    gz = tmp_path / "winlogbeat.jsonl.gz"
    gz.write_bytes(gzip.compress(WINLOGBEAT.read_bytes()))
    result = ingest(gz)
    assert result.format == "windows"
    assert result.stats.added == {"process": 4, "config_change": 3, "netconn": 4, "dns": 2}
    assert one(store, "process", 1)["pid"] == 4812


def test_truncated_gzip_keeps_complete_lines(tmp_path: Path, store: Store, ingest: Any) -> None:
    # big enough that the first 64 KiB (what the format is recognised by) survive the cut
    good = b"".join(WINLOGBEAT.read_bytes().splitlines(keepends=True)[:12])  # no bad lines
    data = gzip.compress(good * 300)
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(data[: len(data) * 2 // 3])
    result = ingest(gz, max_shown=50)
    assert result.failure is None and result.stats.rows > 0
    assert result.stats.errors == 1
    damage = result.stats.shown[0]
    assert "gzip stream" in damage.message and damage.location.offset is not None


def test_dotted_key_export(tmp_path: Path, store: Store, ingest: Any) -> None:
    line = {"@timestamp": "2026-11-20T10:02:11.417Z", "winlog.channel":
            "Microsoft-Windows-Sysmon/Operational", "winlog.event_id": 1,
            "winlog.computer_name": "WIN-FS01", "winlog.event_data.Image": "C:\\x.exe",
            "winlog.event_data.ProcessId": "77", "winlog.event_data.CommandLine": "x --y"}
    path = tmp_path / "dotted.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n")
    result = ingest(path)
    assert result.stats.added == {"process": 1}
    row = one(store, "process", 1)
    assert (row["image"], row["pid"], row["command_line"], row["host"]) == (
        "C:\\x.exe", 77, "x --y", "WIN-FS01")


def test_epoch_millis_timestamp(tmp_path: Path, store: Store, ingest: Any) -> None:
    millis = iso_to_us("2026-11-20T10:02:11.417Z") // 1000
    line = {"@timestamp": millis, "winlog": {
        "channel": "Security", "event_id": 4688, "event_data": {"NewProcessId": "0x10"}}}
    path = tmp_path / "ms.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n")
    ingest(path)
    assert one(store, "process", 1)["ts"] == ts("2026-11-20T10:02:11.417")


# -- NXLog and OTRF ---------------------------------------------------------------------------

def test_nxlog(store: Store, ingest: Any) -> None:
    result = ingest(NXLOG)
    assert result.failure is None and result.stats.errors == 0
    assert result.stats.skipped == {"sysmon event 7": 1}
    proc = one(store, "process", 1)
    # NXLog's own ProcessID (3080, the logging service) overwrote Sysmon's ProcessId: the pid
    # comes back from the rendered message.
    assert (proc["pid"], proc["ppid"], proc["user"]) == (4812, 3020, "CORP\\svc_backup")
    assert proc["ts"] == ts("2026-11-20T10:02:11")  # EventTime without a zone: taken as UTC
    assert proc["host"] == "WIN-FS01.corp.local"
    reg = one(store, "config_change", 2)
    assert (reg["action"], reg["pid"], reg["detail"]) == ("SetValue", 4812, "10.10.5.9/3389")
    assert reg["ts"] == ts("2026-11-20T10:02:11.431")
    sec = one(store, "process", 3)
    assert (sec["pid"], sec["ppid"], sec["user"]) == (0x12CC, 0xBCC, "CORP\\svc_backup")
    wfp = one(store, "netconn", 4)  # channel "security" in lower case
    assert (wfp["pid"], wfp["direction"], wfp["proto"], wfp["dst_port"]) == (
        1248, "outbound", "udp", 123)


def test_otrf(store: Store, ingest: Any) -> None:
    result = ingest(OTRF)
    assert result.failure is None and result.stats.errors == 0
    assert result.stats.added == {"process": 2, "netconn": 1, "dns": 1, "config_change": 1}
    assert result.stats.skipped == {"security event 4658": 1}
    proc = one(store, "process", 1)
    assert (proc["pid"], proc["host"], proc["ts"]) == (
        4812, "WIN-FS01", ts("2026-11-20T10:02:11.417"))
    sec = one(store, "process", 2)
    assert (sec["pid"], sec["ppid"], sec["ts"]) == (0x12CC, 0xBCC, ts("2026-11-20T10:06:00.100"))
    wfp = one(store, "netconn", 3)
    assert (wfp["pid"], wfp["direction"], wfp["src_ip"], wfp["dst_port"]) == (
        1016, "inbound", "10.10.1.42", 3390)
    dns = one(store, "dns", 4)
    assert dns["answers"] == ["edge.example.net", "203.0.113.10"]
    proxy = one(store, "config_change", 6)
    assert (proxy["source"], proxy["action"], proxy["event_code"]) == ("wininet", "set", "5600")
    assert proxy["detail"] == "proxy=http://proxy-01.corp.local:3128 bypass=<local>"
    assert (proxy["user"], proxy["pid"]) == ("S-1-5-21-1-2-3-1107", 2200)


# -- small pieces -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "2026-11-20T10:02:11Z", "2026-11-20T10:02:11.4Z", "2026-11-20T10:02:11.417Z",
    "2026-11-20T10:02:11.123456789Z", "2026-11-20 10:02:11.5Z", "2026-11-20T10:02:11+02:00",
    "2026-11-20 10:02:11", "2019-07-29T21:32:55.583667Z",
])
def test_time_parser_agrees_with_iso_to_us(text: str) -> None:
    parse = _TimeParser()
    assert parse(text) == iso_to_us(text)
    assert parse(text) == iso_to_us(text)  # second time from the cache


@pytest.mark.parametrize("text", ["2026-13-20T10:02:11Z", "garbage-not-a-time-Z", "",
                                  "2026-11-20T10:02:11.4²Z", "2026-11-20T25:02:11.4Z"])
def test_time_parser_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        _TimeParser()(text)


@pytest.mark.parametrize(("value", "expected"), [
    ("type:  5 a.example;::ffff:192.0.2.1;", ["a.example", "192.0.2.1"]),
    ("::ffff:192.0.2.1;::ffff:192.0.2.2", ["192.0.2.1", "192.0.2.2"]),
    ("2001:db8::1;", ["2001:db8::1"]),
    ("-", None), ("", None), (None, None), ("type: 12", None),
    (["a", 1, "b"], ["a", "b"]),
])
def test_dns_answers(value: object, expected: list[str] | None) -> None:
    assert _dns_answers(value) == expected


def test_mapper_integers() -> None:
    sink = RowSink(write=lambda *_: None, file_id=1, sensor="s", path="p")
    m = _Mapper(sink, "p")
    m.line = 3
    assert m.integer("0x12cc", "f") == 0x12CC
    assert m.integer(" 17 ", "f") == 17
    assert m.integer(-5, "f") == -5
    assert m.integer("-", "f") is None
    assert m.integer(None, "f") is None
    assert sink.stats.errors == 0
    assert m.integer(1 << 64, "f") is None
    assert m.integer("9" * 30, "f") is None
    assert m.integer(True, "f") is None
    assert m.integer({"a": 1}, "f") is None
    assert m.port("65535", "p") == 65535
    assert m.port(-1, "p") is None
    assert m.port("0x50", "p") == 80
    assert sink.stats.errors == 5
    assert sink.stats.shown[0].location == SourceLocation(path="p", line=3)


# -- EVTX -------------------------------------------------------------------------------------

def test_evtx_maps_sysmon(store: Store, ingest: Any, panache: Path) -> None:
    result = ingest(panache)
    assert result.format == "windows" and result.failure is None
    assert result.stats.errors == 0
    proc = one(store, "process", 4955)
    assert proc["command_line"].startswith("netsh  interface portproxy add v4tov4")
    # the event time is Event/System/TimeCreated/@SystemTime
    assert proc["ts"] == ts("2019-07-29T21:34:00.460197")
    assert proc["host"] == "MSEDGEWIN10"


def test_evtx_gzip(tmp_path: Path, store: Store, ingest: Any, panache: Path) -> None:
    gz = tmp_path / "panache.evtx.gz"
    gz.write_bytes(gzip.compress(panache.read_bytes()))
    result = ingest(gz)
    assert result.failure is None and result.stats.errors == 0
    assert one(store, "config_change", 4957)["action"] == "SetValue"


def test_evtx_damaged_chunk(tmp_path: Path, store: Store, ingest: Any, panache: Path) -> None:
    """Bytes damaged inside the third chunk: that chunk's records are lost and reported at the
    chunk's offset; the records of the other chunks, P2's among them, are stored."""
    copy = tmp_path / "damaged.evtx"
    shutil.copyfile(panache, copy)
    chunks = scan_chunks(copy)
    assert [c.offset for c in chunks] == [
        EVTX_HEADER_SIZE + i * EVTX_CHUNK_SIZE for i in range(len(chunks))]
    third = chunks[2].offset
    data = bytearray(copy.read_bytes())
    assert data[third:third + 8] == b"ElfChnk\x00"
    for i in range(third + 0x400, third + 0x600):
        data[i] ^= 0x5A
    copy.write_bytes(bytes(data))

    clean = ingest(panache)
    result = ingest(copy, max_shown=20)
    assert result.failure is None
    assert 0 < result.stats.records < clean.stats.records
    assert result.stats.errors >= 1
    first = result.stats.shown[0]
    assert first.location.offset == third
    assert first.location.path == str(copy)
    assert "unreadable EVTX data" in first.message
    # P2's records sit in the second chunk and survive
    assert len(rows(store, "SELECT * FROM process WHERE record = 4955 AND file_id = ?",
                    [store.find_file(_sha(copy)).id])) == 1  # type: ignore[union-attr]


def test_evtx_damaged_chunk_header(tmp_path: Path, ingest: Any, panache: Path) -> None:
    data = bytearray(panache.read_bytes())
    second = EVTX_HEADER_SIZE + EVTX_CHUNK_SIZE
    data[second:second + 8] = b"XXXXXXXX"
    copy = tmp_path / "bad-header.evtx"
    copy.write_bytes(bytes(data))
    result = ingest(copy)
    assert result.failure is None and result.stats.rows > 0
    assert result.stats.shown[0].location.offset == second


def test_evtx_truncated(tmp_path: Path, ingest: Any, panache: Path) -> None:
    copy = tmp_path / "cut.evtx"
    copy.write_bytes(panache.read_bytes()[: EVTX_HEADER_SIZE + EVTX_CHUNK_SIZE + 5000])
    result = ingest(copy, max_shown=20)
    assert result.failure is None and result.stats.rows > 0
    cut = [e for e in result.stats.shown if "truncated" in e.message]
    assert len(cut) == 1 and cut[0].location.offset == EVTX_HEADER_SIZE + EVTX_CHUNK_SIZE


def test_evtx_bad_file_header_fails_cleanly(tmp_path: Path, ingest: Any, panache: Path) -> None:
    data = bytearray(panache.read_bytes())
    data[8:64] = bytes(56)  # keep the magic (so it is sniffed), zero the rest of the header
    data[0:8] = b"ElfFile\x00"
    copy = tmp_path / "header.evtx"
    copy.write_bytes(bytes(data))
    result = ingest(copy)
    # evtx either reads it anyway or reports it; never a traceback
    assert result.failure is None or result.failure.location is not None


def test_not_evtx_after_magic(tmp_path: Path, ingest: Any) -> None:
    path = tmp_path / "junk.evtx"
    path.write_bytes(b"ElfFile\x00" + b"\xff" * 5000)
    result = ingest(path)
    assert result.failure is not None
    assert result.failure.location is not None


def _sha(path: Path) -> str:
    from hopguard.ingest.pipeline import sha256_file

    return sha256_file(path)


# -- the batch writer -------------------------------------------------------------------------

def test_layout_matches_model() -> None:
    from hopguard.model import table

    for name, layout in LAYOUT.items():
        assert len(set(layout)) == len(layout)
        assert set(layout) <= set(table(name).names) - {"sensor", "file_id"}, name
    for table_name, _handler in HANDLERS.values():
        assert table_name in LAYOUT


def test_without_store_rows_go_through_the_sink() -> None:
    """read() called without a store (ctx.store None) gives the same rows via RowSink.add."""
    written: dict[str, int] = {}
    sink = RowSink(write=lambda name, t: written.__setitem__(name, written.get(name, 0) +
                                                            t.num_rows),
                   file_id=7, sensor="s", path=str(WINLOGBEAT), max_shown=50)
    head, gz = read_head(WINLOGBEAT)
    WindowsFormat().read(IngestContext(path=WINLOGBEAT, gzipped=gz, head=head), sink)
    sink.flush()
    assert written == {"process": 4, "config_change": 3, "netconn": 4, "dns": 2}
    assert sink.stats.added == written and sink.stats.errors == 7


def test_batch_with_a_bad_value_is_salvaged(monkeypatch: pytest.MonkeyPatch, store: Store,
                                            ingest: Any) -> None:
    """A handler bug (a value Arrow refuses) costs only the bad row, which is reported."""
    import hopguard.ingest.windows as windows

    good = windows.HANDLERS[(windows.SYSMON, 22)][1]

    def buggy(m: Any, ed: Any, t: int, record: int | None, host: str | None) -> tuple[Any, ...]:
        row = good(m, ed, t, record, host)
        return (*row[:7], "not a pid", *row[8:]) if record == 6 else row

    monkeypatch.setitem(windows.HANDLERS, (windows.SYSMON, 22), ("dns", buggy))
    result = ingest(WINLOGBEAT, max_shown=50)
    assert result.stats.added["dns"] == 1 and one(store, "dns", 5)["query"] == "update.example.com"
    assert any(e.location.line == 6 and "wrong type" in e.message for e in result.stats.shown)
