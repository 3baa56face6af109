"""Elastic Common Schema reader: every container shape, every mapping, repairs, damage, sniffing."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.ingest.base import FORMATS, detect_format, read_head
from hopguard.ingest.ecs import EcsFormat, join_args, parse_text
from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "examples"
MAC = ROOT.parent / "shared" / "data" / "endpoint" / "sbousseaden+macOS-ATTACK-DATASET"


def rows(store: Store, sql: str) -> list[dict[str, Any]]:
    return store.query(sql).to_pylist()


def lines_of(result: FileResult) -> dict[int | None, str]:
    return {e.location.line: e.message for e in result.stats.shown}


# Two Elastic Endpoint process starts as Endpoint 7.10 writes them (trimmed), one end event.
EXEC: dict[str, Any] = {
    "@timestamp": "2021-01-02T21:12:21.973006Z",
    "agent": {"type": "endpoint", "version": "7.10.1"},
    "data_stream": {"dataset": "endpoint.events.process"},
    "event": {"kind": "event", "module": "endpoint", "action": "exec",
              "category": ["process"], "type": ["start"],
              "dataset": "endpoint.events.process"},
    "host": {"hostname": "mac-01.local", "name": "mac-01.local",
             "os": {"family": "macos", "platform": "macos", "name": "macOS"}},
    "process": {"pid": 1203, "executable": "/usr/sbin/systemsetup",
                "command_line": "systemsetup -setremotelogin on",
                "args": ["systemsetup", "-setremotelogin", "on"],
                "working_directory": "/Users/sisi", "entity_id": "E-1203",
                "parent": {"pid": 925, "executable": "/bin/bash", "entity_id": "E-925",
                           "args": ["bash", "-c", "echo 'it''s here'"]}},
    "user": {"name": "sisi", "id": 501},
}
FORK: dict[str, Any] = copy.deepcopy(EXEC)
FORK["@timestamp"] = "2021-01-02T21:12:22Z"
FORK["event"]["action"] = "fork"
FORK["process"] = {"pid": 1204, "executable": "/usr/bin/ssh",
                   "args": ["ssh", "-o StrictHostKeyChecking=no", "10.0.2.15"],
                   "parent": {"pid": 1203, "command_line": "python x.py"}}
END: dict[str, Any] = copy.deepcopy(EXEC)
END["event"]["action"] = "end"
END["event"]["type"] = ["end"]


def hit(doc: dict[str, Any], i: int = 1) -> dict[str, Any]:
    return {"_index": ".ds-logs-endpoint.events.process-default-000001", "_id": f"id{i}",
            "_score": None, "_source": doc}


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def ndjson(*docs: dict[str, Any]) -> str:
    return "".join(json.dumps(d) + "\n" for d in docs)


# -- shapes -----------------------------------------------------------------------------------

def test_ndjson_records_are_line_numbers(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    result = ingest(write(tmp_path, "e.ndjson", ndjson(EXEC) + "\n" + ndjson(END, FORK)))
    assert result.format == "ecs" and result.failure is None and result.stats.errors == 0
    assert result.stats.added == {"process": 2}
    assert result.stats.skipped == {"ecs process end": 1}
    got = rows(store, "SELECT record, pid, event_code FROM process ORDER BY record")
    assert got == [{"record": 1, "pid": 1203, "event_code": "exec"},
                   {"record": 4, "pid": 1204, "event_code": "fork"}]


@pytest.mark.parametrize(("name", "text", "records"), [
    ("pretty-doc", json.dumps(EXEC, indent=2), [1]),
    ("pretty-hit", json.dumps(hit(EXEC), indent="\t"), [1]),
    ("array", json.dumps([EXEC, END, FORK], indent=2), [1, 3]),
    ("array-one-line", json.dumps([hit(EXEC), hit(FORK, 2)]), [1, 2]),
    ("search-response", json.dumps({"took": 3, "hits": {"total": {"value": 3}, "hits": [
        hit(EXEC), hit(END, 2), hit(FORK, 3)]}}, indent=2), [1, 3]),
    ("eql-response", json.dumps({"is_partial": False, "hits": {"events": [
        hit(EXEC), hit(FORK, 2)]}}, indent=2).replace("\n", "\r\n"), [1, 2]),
    ("eql-sequence", json.dumps({"hits": {"sequences": [{"events": [hit(EXEC), hit(FORK)]}]}},
                                indent=2), [1, 2]),
    # hits copied out of a response: objects separated by commas, no brackets
    ("concatenated", json.dumps(hit(EXEC), indent=2) + ",\n" + json.dumps(hit(END), indent=2)
     + "\n\n" + json.dumps(hit(FORK), indent=2), [1, 3]),
])
def test_document_stream_shapes(name: str, text: str, records: list[int], tmp_path: Path,
                                store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    result = ingest(write(tmp_path, f"{name}.json", text))
    assert result.format == "ecs", name
    assert result.failure is None and result.stats.errors == 0, result.stats.shown
    got = rows(store, "SELECT record, pid FROM process ORDER BY record")
    assert [r["record"] for r in got] == records
    assert got[0]["pid"] == 1203


def test_dotted_keys_are_unflattened(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    flat = {"@timestamp": "2026-11-20T10:00:00Z", "event.category": "process",
            "event.type": "start", "event.module": "endpoint", "process.pid": 7,
            "process.executable": "/bin/ls", "host.name": "h1", "host.os.type": "linux"}
    result = ingest(write(tmp_path, "flat.ndjson", ndjson(flat)))
    assert result.stats.added == {"process": 1}
    got = rows(store, "SELECT pid, image, host, platform FROM process")
    assert got == [{"pid": 7, "image": "/bin/ls", "host": "h1", "platform": "linux"}]


# -- mappings ---------------------------------------------------------------------------------

def test_process_mapping(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    ingest(write(tmp_path, "p.ndjson", ndjson(EXEC, FORK)))
    got = {r["pid"]: r for r in rows(store, "SELECT * FROM process")}
    r = got[1203]
    assert str(r["ts"]) == "2021-01-02 21:12:21.973006"
    assert (r["host"], r["platform"], r["source"], r["event_code"]) == \
        ("mac-01.local", "macos", "elastic-endpoint", "exec")
    assert (r["image"], r["command_line"], r["user"], r["ppid"]) == \
        ("/usr/sbin/systemsetup", "systemsetup -setremotelogin on", "sisi", 925)
    assert (r["parent_image"], r["cwd"], r["process_guid"], r["parent_guid"]) == \
        ("/bin/bash", "/Users/sisi", "E-1203", "E-925")
    # no parent command_line: the args, quoted for a POSIX shell
    assert r["parent_command_line"] == "bash -c 'echo '\"'\"'it'\"'\"''\"'\"'s here'\"'\"''"
    f = got[1204]
    assert f["command_line"] == "ssh '-o StrictHostKeyChecking=no' 10.0.2.15"
    assert f["parent_command_line"] == "python x.py" and f["ppid"] == 1203
    assert str(f["ts"]) == "2021-01-02 21:12:22"


def test_windows_args_quoting_and_generic_source(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    doc = {"@timestamp": 1700000000123, "ecs": {"version": "8.11.0"},
           "event": {"category": "process", "type": ["start", "info"], "module": "sysmon2",
                     "code": "1"},
           "host": {"hostname": "WIN-7", "os": {"type": "windows"}},
           "user": {"name": "alice", "domain": "CORP"},
           "process": {"pid": "4242", "executable": "C:\\Windows\\System32\\netsh.exe",
                       "args": ["netsh", "interface", "portproxy", "add", "v4tov4",
                                "listenport=8080", "connectaddress=10.0.0.1", "a b"]}}
    result = ingest(write(tmp_path, "w.ndjson", ndjson(doc)))
    assert result.stats.added == {"process": 1} and result.stats.errors == 0
    r = rows(store, "SELECT * FROM process")[0]
    assert r["command_line"] == ("netsh interface portproxy add v4tov4 listenport=8080 "
                                 "connectaddress=10.0.0.1 \"a b\"")
    assert (r["user"], r["host"], r["platform"], r["source"], r["event_code"], r["pid"]) == \
        ("CORP\\alice", "WIN-7", "windows", "sysmon2", "1", 4242)
    assert str(r["ts"]) == "2023-11-14 22:13:20.123000"


def _net(action: str | None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@timestamp": "2026-11-20T10:00:00.5Z", "agent": {"type": "endpoint"},
        "event": {"category": ["network"], "type": ["start"], "module": "endpoint"},
        "host": {"name": "lin-3", "os": {"type": "linux"}},
        "process": {"pid": 55, "executable": "/usr/bin/socat", "entity_id": "S55",
                    "parent": {"pid": 1}},
        "user": {"name": "root"},
        "network": {"transport": "TCP"},
        "source": {"ip": "10.0.0.5", "port": 40000},
        "destination": {"ip": "203.0.113.9", "port": 443, "domain": "c2.example"}}
    if action is not None:
        doc["event"]["action"] = action
    for key, value in extra.items():
        doc[key] = value
    return doc


def test_netconn_mapping(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    docs = [
        _net("connection_attempted"),
        _net("connection_accepted", source={"ip": "198.51.100.7", "port": 5555},
             destination={"ip": "10.0.0.5", "port": 8080}),
        _net("bind", destination={}, source={"ip": "0.0.0.0", "port": 1080}),
        _net(None, network={"direction": "egress", "transport": "udp"}),
        _net(None, network={"direction": "ingress"}),
        _net("disconnect_received"),
        {**_net("connection_attempted"), "process": {"name": "x"}},  # no pid, no executable
    ]
    result = ingest(write(tmp_path, "n.ndjson", ndjson(*docs)))
    assert result.stats.added == {"netconn": 5} and result.stats.errors == 0
    assert result.stats.skipped == {
        "ecs network disconnect_received": 1,
        "ecs network event without a process (not endpoint telemetry)": 1}
    got = {r["record"]: r for r in rows(store, "SELECT * FROM netconn")}
    assert (got[1]["direction"], got[1]["proto"], got[1]["dst_ip"], got[1]["dst_port"],
            got[1]["dst_host"], got[1]["src_port"]) == \
        ("outbound", "tcp", "203.0.113.9", 443, "c2.example", 40000)
    assert (got[1]["image"], got[1]["pid"], got[1]["ppid"], got[1]["user"],
            got[1]["process_guid"], got[1]["source"], got[1]["event_code"]) == \
        ("/usr/bin/socat", 55, 1, "root", "S55", "elastic-endpoint", "connection_attempted")
    assert (got[2]["direction"], got[2]["src_ip"], got[2]["dst_port"]) == \
        ("inbound", "198.51.100.7", 8080)
    # a bind names the local address only: kept as dst, like auditd's listen rows
    assert (got[3]["direction"], got[3]["dst_ip"], got[3]["dst_port"], got[3]["src_ip"]) == \
        ("listen", "0.0.0.0", 1080, None)
    assert (got[4]["direction"], got[4]["proto"]) == ("outbound", "udp")
    assert got[5]["direction"] == "inbound"


def test_registry_mapping_is_shaped_like_sysmon(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    base: dict[str, Any] = {
        "@timestamp": "2026-11-20T10:00:00Z", "agent": {"type": "endpoint"},
        "event": {"category": ["registry"], "type": ["change"], "action": "modification"},
        "host": {"name": "WIN-2", "os": {"type": "windows"}},
        "process": {"pid": 812, "executable": "C:\\Windows\\System32\\netsh.exe"},
        "user": {"name": "SYSTEM", "domain": "NT AUTHORITY"},
        "registry": {"path": "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\"
                             "PortProxy\\v4tov4\\tcp\\0.0.0.0/8080",
                     "value": "0.0.0.0/8080",
                     "data": {"strings": ["192.168.1.1/8000"], "type": "REG_SZ"}}}
    deleted = copy.deepcopy(base)
    deleted["event"].update(type=["deletion"], action="deletion")
    deleted["registry"] = {"path": "HKEY_USERS\\S-1-5-21\\Software\\X"}
    result = ingest(write(tmp_path, "r.ndjson", ndjson(base, deleted)))
    assert result.stats.added == {"config_change": 2} and result.stats.errors == 0
    got = {r["record"]: r for r in rows(store, "SELECT * FROM config_change")}
    assert (got[1]["source"], got[1]["action"], got[1]["event_code"]) == \
        ("registry", "SetValue", "modification")
    assert got[1]["object"] == \
        "HKLM\\SYSTEM\\CurrentControlSet\\Services\\PortProxy\\v4tov4\\tcp\\0.0.0.0/8080"
    assert (got[1]["detail"], got[1]["pid"], got[1]["user"], got[1]["platform"]) == \
        ("192.168.1.1/8000", 812, "NT AUTHORITY\\SYSTEM", "windows")
    assert (got[2]["action"], got[2]["object"], got[2]["detail"]) == \
        ("DeleteKey", "HKU\\S-1-5-21\\Software\\X", None)


def test_dns_mapping(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    doc: dict[str, Any] = {
        "@timestamp": "2026-11-20T10:00:01Z", "agent": {"type": "endpoint"},
        "event": {"category": ["network"], "type": ["protocol", "info"],
                  "action": "lookup_result"},
        "host": {"name": "WIN-2", "os": {"type": "windows"}},
        "process": {"pid": 900, "executable": "C:\\x\\chisel.exe"},
        "dns": {"question": {"name": "relay.example.net", "type": "A"},
                "resolved_ip": ["203.0.113.80"]}}
    asked = copy.deepcopy(doc)
    asked["event"]["action"] = "lookup_requested"
    packet = {"@timestamp": "2026-11-20T10:00:02Z",
              "event": {"category": ["network"], "dataset": "dns"},
              "network": {"transport": "udp"}, "source": {"ip": "10.0.0.5", "port": 5353},
              "destination": {"ip": "10.0.0.2", "port": 53},
              "dns": {"id": 4100, "response_code": "nxdomain",
                      "question": {"name": "nope.example"},
                      "answers": [{"data": "a.example"}, {"name": "x"}]}}
    result = ingest(write(tmp_path, "d.ndjson", ndjson(doc, asked, packet)))
    assert result.stats.added == {"dns": 2} and result.stats.errors == 0
    assert result.stats.skipped == {"ecs dns lookup_requested (its lookup_result is stored)": 1}
    got = {r["record"]: r for r in rows(store, "SELECT * FROM dns")}
    assert (got[1]["query"], got[1]["answers"], got[1]["pid"], got[1]["image"],
            got[1]["host"]) == \
        ("relay.example.net", ["203.0.113.80"], 900, "C:\\x\\chisel.exe", "WIN-2")
    assert (got[3]["query"], got[3]["answers"], got[3]["rcode"], got[3]["trans_id"],
            got[3]["dst_port"], got[3]["proto"]) == \
        ("nope.example", ["a.example"], "NXDOMAIN", 4100, 53, "udp")


def test_other_documents_are_counted_by_category(tmp_path: Path, ingest) -> None:  # type: ignore[no-untyped-def]
    file_ev = {**EXEC, "event": {"category": ["file"], "type": ["change"], "module": "endpoint"}}
    winlog = {**EXEC, "winlog": {"event_id": "1",
                                 "channel": "Microsoft-Windows-Sysmon/Operational"}}
    bare = {"@timestamp": "2026-11-20T10:00:00Z", "agent": {"type": "endpoint"}}
    result = ingest(write(tmp_path, "o.ndjson", ndjson(EXEC, file_ev, file_ev, winlog, bare)))
    assert result.stats.added == {"process": 1}
    assert result.stats.skipped == {
        "ecs file event": 2, "ecs uncategorised event": 1,
        "ecs windows event log document (read by the windows format)": 1}


# -- repairs and damage -------------------------------------------------------------------------

def test_trailing_comma_in_a_hit_is_repaired_and_counted(tmp_path: Path, store: Store,
                                                         ingest) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(hit(FORK), indent="\t").replace('"10.0.2.15"\n', '"10.0.2.15",\n')
    assert '"10.0.2.15",\n\t\t\t]' in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)
    result = ingest(write(tmp_path, "comma.json", text))
    assert result.failure is None and result.stats.errors == 0
    assert result.stats.added == {"process": 1}
    assert result.stats.skipped == {"ecs document repaired (stored): trailing comma": 1}
    got = rows(store, "SELECT command_line FROM process")
    assert got == [{"command_line": "ssh '-o StrictHostKeyChecking=no' 10.0.2.15"}]


def test_kibana_console_triple_quoted_string(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(hit(EXEC), indent=2).replace(
        '"systemsetup -setremotelogin on"', '"""osascript -e "say \\"hi\\"" """', 1)
    result = ingest(write(tmp_path, "console.json", text))
    assert result.stats.skipped == {"ecs document repaired (stored): triple-quoted string": 1}
    assert rows(store, "SELECT command_line FROM process") == \
        [{"command_line": 'osascript -e "say \\"hi\\"" '}]


def test_parse_text_strict_first() -> None:
    assert parse_text(b'{"a": [1, 2]}') == ({"a": [1, 2]}, [])
    assert parse_text(b'{"a": [1, 2,], "s": ",]"}') == ({"a": [1, 2], "s": ",]"},
                                                          ["trailing comma"])
    with pytest.raises(ValueError):
        parse_text(b'{"a": [1, 2')


def test_truncated_file_keeps_what_came_before(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    first = json.dumps(hit(EXEC), indent=2)
    second = json.dumps(hit(FORK, 2), indent=2)
    text = first + "\n" + second[: len(second) // 2]
    result = ingest(write(tmp_path, "cut.json", text))
    assert result.failure is None and result.stats.added == {"process": 1}
    start = first.count("\n") + 2
    assert lines_of(result) == {
        start: "incomplete document at the end of the file (truncated?)"}


def test_damaged_document_does_not_swallow_the_next(tmp_path: Path, store: Store,
                                                    ingest) -> None:  # type: ignore[no-untyped-def]
    first = json.dumps(hit(EXEC), indent=2)
    broken = json.dumps(hit(END, 2), indent=2)
    broken = broken[: broken.index('"process"')] + '"process": {"pid": 3\n'  # never closes
    third = json.dumps(hit(FORK, 3), indent=2)
    text = first + "\n" + broken + third + "\n"
    result = ingest(write(tmp_path, "mid.json", text))
    assert result.stats.added == {"process": 2} and result.stats.errors == 1
    broken_line = first.count("\n") + 2
    msg = lines_of(result)[broken_line]
    assert msg.startswith("incomplete document (it never closes; the next one starts at line")
    got = rows(store, "SELECT record, pid FROM process ORDER BY record")
    assert got == [{"record": 1, "pid": 1203}, {"record": 2, "pid": 1204}]


def test_garbage_lines_between_good_ones(tmp_path: Path, store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    nd = ndjson(EXEC) + "not json at all\n" + '{"half": \n' + "[1, 2]\n" + ndjson(FORK) + \
        '{"@timestamp": "yesterday", "event": {"category": "process", "type": "start"}}\n' + \
        json.dumps({**EXEC, "process": {"pid": "abc", "executable": ["a", "b"]}}) + "\n"
    result = ingest(write(tmp_path, "g.ndjson", nd), max_shown=20)
    assert result.failure is None
    assert result.stats.added == {"process": 3}  # line 7: bad values are NULL, row kept
    msgs = lines_of(result)
    assert set(msgs) == {2, 3, 4, 6, 7}
    assert msgs[2].startswith("not JSON") and msgs[3].startswith("not JSON")
    assert msgs[4] == "not a JSON object"
    assert msgs[6] == "bad @timestamp 'yesterday'"
    assert msgs[7].startswith("field process.pid: 'abc' is not an integer")
    assert result.stats.errors == 7  # line 4: one per array element; line 7: two bad fields
    got = rows(store, "SELECT record, pid, image FROM process ORDER BY record")
    assert got == [{"record": 1, "pid": 1203, "image": "/usr/sbin/systemsetup"},
                   {"record": 5, "pid": 1204, "image": "/usr/bin/ssh"},
                   {"record": 7, "pid": None, "image": None}]

    pretty = json.dumps(EXEC, indent=2) + "\n-- garbage --\n" + json.dumps(FORK, indent=2)
    result = ingest(write(tmp_path, "g.json", pretty))
    assert result.stats.added == {"process": 2}
    garbage_line = json.dumps(EXEC, indent=2).count("\n") + 2
    assert lines_of(result) == {garbage_line: "not a JSON document: '-- garbage --'"}


# -- sniffing ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "fmt"), [
    (EXAMPLES / "hq-span-eve.json", "eve"),
    (DATA / "eve" / "sample.json", "eve"),
    (EXAMPLES / "windows-fs01-sysmon.jsonl", "windows"),
    (DATA / "windows" / "winlogbeat.jsonl", "windows"),
    (DATA / "windows" / "nxlog.jsonl", "windows"),
    (DATA / "zeek" / "socks.log", "zeek"),
    (EXAMPLES / "mac-alice-unified.ndjson", "macos-unifiedlog"),
])
def test_sniff_leaves_other_formats_alone(path: Path, fmt: str) -> None:
    head, _ = read_head(path)
    assert not EcsFormat.sniff(head, path)
    assert detect_format(path, head).name == fmt


def test_sniff_claims_ecs_shapes() -> None:
    endpoint_with_winlog_word = {**EXEC, "message": "winlog"}
    generic = {"@timestamp": "x", "event": {"category": ["process"]}, "process": {"pid": 1}}
    for head in (ndjson(EXEC).encode(), json.dumps(hit(EXEC), indent=2).encode(),
                 json.dumps([generic]).encode(), ndjson(endpoint_with_winlog_word).encode(),
                 json.dumps({"hits": {"hits": [hit(EXEC)]}}).encode()):
        assert EcsFormat.sniff(head, Path("x")), head[:80]
        assert detect_format(Path("x"), head) is FORMATS["ecs"]
    # a first document longer than the sniffed head: endpoint markers in its text
    big = json.dumps({**hit(EXEC), "pad": "x" * 70_000}, indent=2).encode()[:65536]
    assert EcsFormat.sniff(big, Path("x"))
    for head in (ndjson({**EXEC, "winlog": {"event_id": 1}}).encode(),
                 ndjson({"@timestamp": "x", "event": {"dataset": "hopguard.flow"},
                         "source": {"ip": "1.2.3.4"}}).encode(),
                 b"plain text\n", b"[1, 2, 3]\n"):
        assert not EcsFormat.sniff(head, Path("x")), head[:80]


def test_join_args() -> None:
    assert join_args(["a b", "c"], "macos") == "'a b' c"
    assert join_args(["a b", 'c"d'], "windows") == '"a b" c\\"d'


# -- the real macOS samples ---------------------------------------------------------------------

def test_real_elastic_endpoint_macos_sample(store: Store, ingest) -> None:  # type: ignore[no-untyped-def]
    path = MAC / "Lateral Movement" / "lateral_movement_ssh_from_python_procexec.json"
    if not path.is_file():
        pytest.skip(f"endpoint corpus not found at {MAC}")
    result = ingest(path)
    assert result.format == "ecs" and result.stats.errors == 0
    assert result.stats.added == {"process": 1}
    assert result.stats.skipped == {"ecs document repaired (stored): trailing comma": 1}
    r = rows(store, "SELECT * FROM process")[0]
    assert (r["host"], r["platform"], r["image"], r["command_line"], r["user"]) == \
        ("Sisis-MacBook-Pro.local", "macos", "/usr/bin/ssh",
         "ssh -o StrictHostKeyChecking=no 10.0.2.15", "sisi")
    assert r["parent_image"].endswith("/MacOS/Python") and r["record"] == 1


# -- property: mutated input never raises ---------------------------------------------------------

SEED = (ndjson(EXEC, END, FORK) + json.dumps([hit(EXEC), hit(_net("connection_attempted"))],
                                             indent=2)).encode()
mutations = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=25)


def _mutate(data: bytes, cut: int, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[: cut % (len(data) + 1)])
    for pos, value in changes:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


def _ingest_bytes(data: bytes) -> FileResult:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.json"
        path.write_bytes(data)
        s = Store.open(":memory:")
        try:
            return ingest_file(s, path, sensor="prop", fmt="ecs", max_shown=1000)
        finally:
            s.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cut=st.integers(min_value=0), changes=mutations, pretty=st.booleans())
def test_mutated_input_never_raises(cut: int, changes: list[tuple[int, int]],
                                    pretty: bool) -> None:
    seed = json.dumps([hit(EXEC), hit(FORK)], indent=2).encode() if pretty else SEED
    result = _ingest_bytes(_mutate(seed, cut, changes))
    if result.failure is not None:
        assert result.failure.location is not None and result.stats.rows == 0
    else:
        assert result.stats.rows > 0
    for err in result.stats.shown:
        loc = err.location
        assert loc.line is not None or loc.offset is not None or loc.record is not None, err
