"""Security 4624 (logon) into netconn: RDP and network logons from an address, in every shape.

Each test writes real event lines in one of the JSON-lines shapes the Windows reader accepts
(OTRF/flat, Winlogbeat, Winlogbeat with ECS renames, NXLog), ingests them into an in-memory
store and reads the netconn rows back; the EVTX path is checked on the real DE_RDP_Tunneling
recording when the endpoint corpus is present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from hopguard.ingest.windows import HANDLERS, SECURITY
from hopguard.store import Store

COLUMNS = ("record", "host", "direction", "proto", "src_ip", "src_port", "dst_ip", "dst_port",
           "image", "pid", "user", "event_code", "source", "platform")


def netconn(store: Store) -> list[dict[str, Any]]:
    cols = ", ".join(COLUMNS)
    return store.query(f"SELECT {cols} FROM netconn ORDER BY record").to_pylist()


def write(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    path = tmp_path / "security.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path


def flat(n: int, logon_type: str, ip: str, port: str = "49164", **extra: str) -> dict[str, Any]:
    return {"@timestamp": f"2026-11-20T10:0{n}:00.000Z", "Hostname": "WIN-FS01",
            "Channel": "Security", "EventID": 4624,
            "SourceName": "Microsoft-Windows-Security-Auditing",
            "TargetUserName": "bob", "TargetDomainName": "CORP", "LogonType": logon_type,
            "IpAddress": ip, "IpPort": port, "ProcessName": "C:\\Windows\\System32\\winlogon.exe",
            "ProcessId": "0x658", **extra}


def test_4624_is_mapped() -> None:
    assert HANDLERS[(SECURITY, 4624)][0] == "netconn"


def test_flat_rdp_and_network_logons(tmp_path: Path, store: Store, ingest: Any) -> None:
    path = write(tmp_path, [
        flat(1, "10", "127.0.0.1"),           # RDP through a tunnel: kept, dst_port 3389
        flat(2, "3", "10.0.2.17", "49168"),   # network logon from an address: kept
        flat(3, "3", "-", "-"),               # network logon without an address: skipped
        flat(4, "2", "127.0.0.1"),            # interactive: skipped
        flat(5, "5", "-", "-"),               # service: skipped
    ])
    result = ingest(path)
    assert result.failure is None and result.stats.errors == 0
    got = netconn(store)
    assert [r["record"] for r in got] == [1, 2]
    rdp, net = got
    assert rdp == {"record": 1, "host": "WIN-FS01", "direction": "inbound", "proto": "tcp",
                   "src_ip": "127.0.0.1", "src_port": 49164, "dst_ip": None, "dst_port": 3389,
                   "image": "C:\\Windows\\System32\\winlogon.exe", "pid": 0x658,
                   "user": "CORP\\bob", "event_code": "4624", "source": "security",
                   "platform": "windows"}
    assert (net["src_ip"], net["src_port"], net["dst_port"]) == ("10.0.2.17", 49168, None)
    assert result.stats.skipped == {"security event 4624": 3}


def test_winlogbeat_with_ecs_renames(tmp_path: Path, store: Store, ingest: Any) -> None:
    plain = {"@timestamp": "2026-11-20T10:01:00.000Z",
             "winlog": {"channel": "Security", "event_id": "4624", "computer_name": "fs01",
                        "event_data": {"LogonType": "10", "IpAddress": "::1", "IpPort": "0",
                                       "TargetUserName": "alice", "TargetDomainName": "CORP",
                                       "ProcessName": "C:\\Windows\\System32\\svchost.exe",
                                       "ProcessId": "0x3e8"}}}
    # The Elastic pipeline moved the address and the names out of event_data into ECS fields
    # and the logon type into winlog.logon.type (as a name).
    renamed = {"@timestamp": "2026-11-20T10:02:00.000Z",
               "source": {"ip": "192.0.2.5", "port": 50001},
               "user": {"name": "carol", "domain": "CORP"},
               "process": {"executable": "C:\\Windows\\System32\\lsass.exe", "pid": 700},
               "winlog": {"channel": "Security", "event_id": 4624, "computer_name": "fs01",
                          "logon": {"type": "RemoteInteractive"},
                          "event_data": {"SubjectUserName": "-"}}}
    result = ingest(write(tmp_path, [plain, renamed]))
    assert result.failure is None and result.stats.errors == 0
    got = netconn(store)
    assert [(r["src_ip"], r["src_port"], r["dst_port"], r["user"], r["pid"]) for r in got] == [
        ("::1", 0, 3389, "CORP\\alice", 0x3e8),
        ("192.0.2.5", 50001, 3389, "CORP\\carol", 700)]
    assert got[1]["image"] == "C:\\Windows\\System32\\lsass.exe"


def test_nxlog_process_id_read_back_from_message(tmp_path: Path, store: Store,
                                                 ingest: Any) -> None:
    # NXLog clobbers the event's ProcessId with its own ProcessID (case-insensitive merge).
    event = flat(1, "10", "127.0.0.2", EventReceivedTime="2026-11-20 10:01:00",
                 SourceModuleType="im_msvistalog",
                 Message="An account was successfully logged on.\r\n\r\nProcess Information:"
                         "\r\n\tProcess ID:\t\t0x658\r\n\tProcess Name:\t\tC:\\x.exe")
    event["ProcessID"] = 4321
    del event["ProcessId"]
    result = ingest(write(tmp_path, [event]))
    assert result.failure is None and result.stats.errors == 0
    (row,) = netconn(store)
    assert (row["pid"], row["src_ip"], row["dst_port"]) == (0x658, "127.0.0.2", 3389)


def test_bad_values_are_located_not_fatal(tmp_path: Path, store: Store, ingest: Any) -> None:
    result = ingest(write(tmp_path, [flat(1, "10", "127.0.0.1", "99999"),
                                     flat(2, "ten", "10.0.0.1"),
                                     {**flat(3, "3", "10.0.0.9"), "LogonType": None}]))
    assert result.failure is None
    got = netconn(store)
    assert [(r["record"], r["src_port"]) for r in got] == [(1, None)]
    assert result.stats.errors == 1
    assert "IpPort" in result.stats.shown[0].message
    assert result.stats.shown[0].location.line == 1
    assert result.stats.skipped == {"security event 4624": 2}


def test_evtx_rdp_tunnel_recording(endpoint_corpus: Path, store: Store, ingest: Any) -> None:
    path = endpoint_corpus / "sbousseaden+EVTX-ATTACK-SAMPLES" / "Command and Control" / \
        "DE_RDP_Tunneling_4624.evtx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    result = ingest(path)
    assert result.failure is None and result.stats.errors == 0
    got = {r["record"]: r for r in netconn(store)}
    assert sorted(got) == [5315, 5322, 5323]
    p5 = got[5315]
    assert (p5["src_ip"], p5["src_port"], p5["dst_port"], p5["user"], p5["host"]) == (
        "127.0.0.1", 49164, 3389, "PC02\\IEUser", "PC02.example.corp")
    assert p5["image"] == "C:\\Windows\\System32\\winlogon.exe"
    assert result.stats.skipped["security event 4624"] == 15  # types 0, 2, 5, 3 w/o address
