"""Windows event logs: Sysmon, Security 4624/4688/5156 and WinINet 5600, from EVTX or JSON lines.

Theory of operation. Every input, whatever its container, is reduced to the same five things
before any mapping happens: the channel, the event id, the event data (a mapping of the
``<EventData><Data Name=...>`` names to values), the time the event log recorded, and the
computer name. One table, ``HANDLERS``, keyed by ``(channel in lower case, event id)``, says which
function turns that event data into a row of which model table; everything else is counted with
``sink.skip`` and not stored. A handler may also decline an event it understands but does not
want (Security 4624 logons other than RDP and network logons from an address) by counting it
with ``sink.skip`` and returning ``None``.

Security 4624 (an account logged on) becomes an *inbound* ``netconn`` row, because what matters
for proxy detection is where a remote logon came from: LogonType 10 (RemoteInteractive, i.e.
RDP; ``dst_port`` 3389) always, LogonType 3 (network) only when it carries an ``IpAddress``.
``src_ip``/``src_port`` are ``IpAddress``/``IpPort``, ``user`` is
``TargetDomainName\\TargetUserName``, ``image`` is ``ProcessName``. An RDP logon from a
loopback address is the target side of RDP through a tunnel (ssh -L, plink -R, portproxy).

Containers:

* **EVTX** (magic ``ElfFile\\0``): read with the ``evtx`` package (``records_json``). The time
  is ``Event/System/TimeCreated/@SystemTime``, never the per-record timestamp ``evtx`` reports
  beside the data (it is not the event time, and 1601-01-01 for some records). ``record`` is
  ``Event/System/EventRecordID``. ``evtx`` raises ``RuntimeError`` for a record or a chunk it
  cannot decode and carries on with the next one when asked again, so each ``next()`` is
  guarded on its own; the error is located at the chunk's byte offset (EVTX: a 4096-byte file
  header, then 64 KiB chunks starting with ``ElfChnk\\0`` whose header holds the range of record
  numbers inside it), which we learn from a cheap scan of chunk headers before parsing.
* **Winlogbeat / Elastic Agent JSON lines**: ``winlog.channel``, ``winlog.event_id`` (int or
  string), ``winlog.event_data.*``, ``winlog.computer_name``, ``@timestamp``. With Winlogbeat's
  sysmon module or the Elastic Agent pipeline some event-data fields are *renamed* to ECS fields
  (``process.executable``, ``destination.ip`` ...); when the key field of an event is missing
  from ``event_data``, the ECS fields fill in (``_ECS``). Exports with dotted keys
  (``"winlog.event_id": ...``) are unflattened first.
* **NXLog and OTRF Security-Datasets JSON lines** ("flat"): ``EventID``, ``Channel``,
  ``Hostname`` and the event data at the top level. The time is the first of ``@timestamp``,
  ``TimeCreated``, ``EventTime``, ``UtcTime`` that parses; a time without a zone is taken as UTC.
  NXLog (``im_msvistalog``, recognised by ``SourceModuleType``/``EventReceivedTime``) merges
  field names case-insensitively, so its own ``ProcessID`` and ``EventType`` overwrite the
  event's ``ProcessId`` and Sysmon's registry ``EventType``; for those few fields the value is
  read back from the rendered ``Message`` (``_NXLOG_FIXES``).

JSON ``record`` is the line number. Parsers never raise on bad records: an unreadable line or
record is reported with its location and skipped; a field with a bad value (a pid that is not a
number, a port out of range) is reported and stored as NULL, the rest of the row is kept.

Hot path. Sysmon JSON lines must ingest at tens of thousands of events per second, so the
per-event work is: one ``orjson.loads``, a handful of dict lookups, one dict dispatch, a cached
timestamp parse (``_TimeParser``), and type checks with ``type(x) is ...`` before any conversion.
No regular expression runs per field; the only ones run on NXLog messages for a clobbered field
and on EVTX error messages. Handlers return rows as tuples in a fixed column order (``LAYOUT``)
that ``RowSink.emit`` turns into Arrow batches; that replaced one dict per row plus
``RowSink.add`` and made Sysmon JSON ingest about 30% faster.
"""

from __future__ import annotations

import gzip
import logging
import re
import struct
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

import orjson

from hopguard.errors import SourceLocation
from hopguard.ingest.base import (
    Format,
    IngestContext,
    RowSink,
    iter_lines,
    open_binary,
    register,
)
from hopguard.ingest.values import dig, is_windows_event, iso_to_us, to_int, unflatten

logger = logging.getLogger(__name__)

SYSMON = "microsoft-windows-sysmon/operational"
SECURITY = "security"
WININET = "microsoft-windows-wininet-config/proxyconfigchanged"
_CHANNEL_LABEL = {SYSMON: "sysmon", SECURITY: "security", WININET: "wininet"}

EVTX_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
EVTX_HEADER_SIZE = 4096
EVTX_CHUNK_SIZE = 64 * 1024
# A damaged file can make evtx report an error per record; beyond this many in a row we stop.
MAX_CONSECUTIVE_EVTX_ERRORS = 10_000

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_MAX_EPOCH_MS = 253_402_300_800_000  # 10000-01-01: beyond it, not a time
_IANA_PROTO = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
# WFP renders the direction of 5156 as a message-table reference (%%14592 = "Inbound").
_WFP_DIRECTION = {"%%14592": "inbound", "%%14593": "outbound",
                  "inbound": "inbound", "outbound": "outbound"}
# Sysmon EID 22 QueryStatus is a Win32 / DNS API status; DNS_ERROR_RCODE_* are 9000 + rcode.
_DNS_STATUS = {0: "NOERROR", 9001: "FORMERR", 9002: "SERVFAIL", 9003: "NXDOMAIN",
               9004: "NOTIMP", 9005: "REFUSED", 9501: "NOERROR",  # DNS_INFO_NO_RECORDS
               1460: "TIMEOUT", 123: "INVALID_NAME"}
_REGISTRY_DEFAULT_ACTION = {13: "SetValue", 14: "RenameKey"}


class _Mapper:
    """Per-file state for the event handlers: where the current event is, for error reports."""

    __slots__ = ("line", "path", "record", "sink")

    def __init__(self, sink: RowSink, path: str) -> None:
        self.sink = sink
        self.path = path
        self.line: int | None = None
        self.record: int | None = None

    def where(self) -> SourceLocation:
        if self.line is not None:
            return SourceLocation(path=self.path, line=self.line)
        return SourceLocation(path=self.path, record=self.record)

    def bad(self, field: str, value: object, what: str) -> None:
        self.sink.error(self.where(), f"field {field}: {str(value)[:60]!r} is not {what} "
                                      "(stored as unset)")

    def integer(self, value: object, field: str) -> int | None:
        # Fast paths first: Winlogbeat sends every event-data value as a decimal string, EVTX
        # and NXLog send ints. At most 18 ASCII digits always fit a BIGINT.
        if type(value) is str:
            if value.isdigit() and len(value) < 19 and value.isascii():
                return int(value)
        elif type(value) is int:
            if _I64_MIN <= value <= _I64_MAX:
                return value
            self.bad(field, value, "an integer")
            return None
        elif value is None:
            return None
        try:
            v = to_int(_text(value))  # hex (Security 4688), '-', signs, spaces
        except ValueError:
            pass
        else:
            if v is None or _I64_MIN <= v <= _I64_MAX:
                return v
        self.bad(field, value, "an integer")
        return None

    def port(self, value: object, field: str) -> int | None:
        v: int | None
        if type(value) is str:
            if value.isdigit() and len(value) < 6 and value.isascii():
                v = int(value)
                if v <= 65535:
                    return v
                self.bad(field, value, "a port number")
                return None
            if value == "" or value == "-":
                return None
        elif type(value) is int:
            if 0 <= value <= 65535:
                return value
            self.bad(field, value, "a port number")
            return None
        elif value is None:
            return None
        try:
            v = to_int(_text(value))
        except ValueError:
            v = -1
        if v is not None and not 0 <= v <= 65535:
            self.bad(field, value, "a port number")
            return None
        return v


def _text(v: object) -> str | None:
    """A string column value from whatever JSON gave us (EVTX ints, #text objects ...)."""
    if v is None or type(v) is str:
        return v
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is int or type(v) is float:
        return str(v)
    if type(v) is dict and "#text" in v:
        return _text(v["#text"])
    return orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()


def _opt(v: object) -> str | None:
    """Like _text, but Windows' placeholders for "nothing" ('', '-') become NULL."""
    s = _text(v)
    return None if s == "" or s == "-" else s


def _bool(v: object) -> bool | None:
    if type(v) is bool:
        return v
    if type(v) is str:
        s = v.strip().lower()
        if s in ("true", "1"):
            return True
        if s in ("false", "0"):
            return False
    return None


# -- handlers: event data -> row ------------------------------------------------------------

# Each handler returns one row as a tuple in its table's LAYOUT order (not a dict): rows are
# buffered as tuples and turned into Arrow columns with one C-level zip(*rows) per batch, which
# costs a fraction of building a dict per row and copying it column by column (see RowSink.emit).
Handler = Callable[[_Mapper, Mapping[str, Any], int, int | None, str | None],
                   tuple[Any, ...] | None]

_HEAD = ("ts", "record", "host", "platform", "source", "event_code")
LAYOUT: dict[str, tuple[str, ...]] = {
    "process": (*_HEAD, "image", "command_line", "user", "pid", "ppid", "parent_image",
                "parent_command_line", "cwd", "process_guid", "parent_guid"),
    "netconn": (*_HEAD, "direction", "proto", "src_ip", "src_port", "dst_ip", "dst_port",
                "dst_host", "image", "pid", "user", "process_guid"),
    "config_change": (*_HEAD, "action", "object", "detail", "image", "pid", "user"),
    "dns": ("ts", "record", "host", "platform", "query", "answers", "rcode", "pid", "image"),
}

# Hand-inlined for speed (these run once per event): ``v if type(v := g(k)) is str else
# _text(v)`` is _text(g(k)) without a call in the common case; the _opt variant also sends
# '' and '-' to _opt (which makes them NULL).


def _sysmon_process(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                    host: str | None) -> tuple[Any, ...]:
    g = ed.get
    return (
        ts, record, host, "windows", "sysmon", "1",
        v if type(v := g("Image")) is str else _text(v),
        v if type(v := g("CommandLine")) is str else _text(v),
        v if type(v := g("User")) is str and v != "-" and v else _opt(v),
        m.integer(g("ProcessId"), "ProcessId"),
        m.integer(g("ParentProcessId"), "ParentProcessId"),
        v if type(v := g("ParentImage")) is str and v != "-" and v else _opt(v),
        v if type(v := g("ParentCommandLine")) is str and v != "-" and v else _opt(v),
        v if type(v := g("CurrentDirectory")) is str and v != "-" and v else _opt(v),
        v if type(v := g("ProcessGuid")) is str and v != "-" and v else _opt(v),
        v if type(v := g("ParentProcessGuid")) is str and v != "-" and v else _opt(v),
    )


def _sysmon_netconn(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                    host: str | None) -> tuple[Any, ...]:
    g = ed.get
    initiated = g("Initiated")
    if initiated == "true" or initiated is True:
        direction: str | None = "outbound"
    elif initiated == "false" or initiated is False:
        direction = "inbound"
    else:
        b = _bool(initiated)
        direction = None if b is None else ("outbound" if b else "inbound")
    proto = g("Protocol")
    if proto != "tcp" and proto != "udp":
        proto = _opt(proto)
        proto = proto.lower() if proto else None
    return (
        ts, record, host, "windows", "sysmon", "3", direction, proto,
        v if type(v := g("SourceIp")) is str and v != "-" and v else _opt(v),
        m.port(g("SourcePort"), "SourcePort"),
        v if type(v := g("DestinationIp")) is str and v != "-" and v else _opt(v),
        m.port(g("DestinationPort"), "DestinationPort"),
        v if type(v := g("DestinationHostname")) is str and v != "-" and v else _opt(v),
        v if type(v := g("Image")) is str else _text(v),
        m.integer(g("ProcessId"), "ProcessId"),
        v if type(v := g("User")) is str and v != "-" and v else _opt(v),
        v if type(v := g("ProcessGuid")) is str and v != "-" and v else _opt(v),
    )


def _sysmon_registry(code: int) -> Handler:
    event_code = str(code)
    default_action = _REGISTRY_DEFAULT_ACTION.get(code)

    def handler(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                host: str | None) -> tuple[Any, ...]:
        g = ed.get
        detail = g("Details")
        if detail is None:
            detail = g("NewName")  # EID 14 (RenameKey)
        return (
            ts, record, host, "windows", "registry", event_code,
            v if type(v := g("EventType")) is str and v != "-" and v else
            (_opt(v) or default_action),
            v if type(v := g("TargetObject")) is str else _text(v),
            detail if type(detail) is str else _text(detail),
            v if type(v := g("Image")) is str else _text(v),
            m.integer(g("ProcessId"), "ProcessId"),
            v if type(v := g("User")) is str and v != "-" and v else _opt(v),
        )

    return handler


def _sysmon_dns(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                host: str | None) -> tuple[Any, ...]:
    g = ed.get
    status = g("QueryStatus")
    if status == "0" or status == 0:
        rcode: str | None = "NOERROR"
    elif status is None:
        rcode = None
    else:
        code = m.integer(status, "QueryStatus")
        rcode = None if code is None else _DNS_STATUS.get(code, str(code))
    return (
        ts, record, host, "windows",
        v if type(v := g("QueryName")) is str else _text(v),
        _dns_answers(g("QueryResults")),
        rcode,
        m.integer(g("ProcessId"), "ProcessId"),
        v if type(v := g("Image")) is str else _text(v),
    )


def _dns_answers(value: object) -> list[str] | None:
    """Sysmon's QueryResults: ``type:  5 cname.example;::ffff:192.0.2.1;2001:db8::1;``.

    Entries of record types other than A/AAAA are ``type:  N data``: keep the data. IPv4
    answers come IPv4-mapped (``::ffff:a.b.c.d``): keep the IPv4 address.
    """
    if type(value) is list:  # ECS dns.answers, already split (see _ecs_answers)
        return [a for a in value if type(a) is str] or None
    s = _text(value)
    if not s or s == "-":
        return None
    out = []
    for part in s.split(";"):
        part = part.strip()
        if not part:
            continue
        if part.startswith("type:"):
            bits = part.split()
            if len(bits) < 3:
                continue
            part = bits[-1]
        elif part.startswith("::ffff:") and "." in part:
            part = part[7:]
        out.append(part)
    return out or None


def _security_process(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                      host: str | None) -> tuple[Any, ...]:
    g = ed.get
    user, domain = _opt(g("SubjectUserName")), _opt(g("SubjectDomainName"))
    return (
        ts, record, host, "windows", "security", "4688",
        _text(g("NewProcessName")),
        _opt(g("CommandLine")),
        f"{domain}\\{user}" if domain and user else user,
        m.integer(g("NewProcessId"), "NewProcessId"),
        m.integer(g("ProcessId"), "ProcessId"),
        _opt(g("ParentProcessName")),
        None, None, None, None,  # 4688 has no parent command line, cwd or GUIDs
    )


def _security_wfp(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                  host: str | None) -> tuple[Any, ...]:
    g = ed.get
    direction = _text(g("Direction"))
    if direction is not None:
        direction = _WFP_DIRECTION.get(direction.strip().lower(), direction)
    proto = None
    if g("Protocol") is not None:
        num = m.integer(g("Protocol"), "Protocol")
        proto = None if num is None else _IANA_PROTO.get(num, str(num))
    pid = g("ProcessID")
    return (
        ts, record, host, "windows", "security", "5156", direction, proto,
        _opt(g("SourceAddress")), m.port(g("SourcePort"), "SourcePort"),
        _opt(g("DestAddress")), m.port(g("DestPort"), "DestPort"),
        None,  # no destination name in 5156
        _text(g("Application")),
        m.integer(g("ProcessId") if pid is None else pid, "ProcessID"),
        None, None,  # no user, no process GUID
    )


# 4624 LogonType: Winlogbeat's security module may send the name instead of the number.
_LOGON_TYPE_NAMES = {"network": 3, "remoteinteractive": 10}
_RDP_PORT = 3389


def _security_logon(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                    host: str | None) -> tuple[Any, ...] | None:
    """4624: an RDP logon (type 10), or a network logon (type 3) from an address; else skipped."""
    g = ed.get
    raw = g("LogonType")
    logon_type: int | None
    if type(raw) is str and not raw.strip().isdigit():
        logon_type = _LOGON_TYPE_NAMES.get(raw.strip().lower())
    else:
        logon_type = m.integer(raw, "LogonType")
    src_ip = _opt(g("IpAddress"))
    if logon_type == 3 and src_ip is not None:
        dst_port: int | None = None
    elif logon_type == 10:
        dst_port = _RDP_PORT
    else:
        m.sink.skip("security event 4624")  # the same label as any other skipped event
        return None
    user, domain = _opt(g("TargetUserName")), _opt(g("TargetDomainName"))
    return (
        ts, record, host, "windows", "security", "4624", "inbound", "tcp",
        src_ip, m.port(g("IpPort"), "IpPort"),
        None, dst_port,  # the event names the client, not the address it connected to
        None,
        _opt(g("ProcessName")),
        m.integer(g("ProcessId"), "ProcessId"),
        f"{domain}\\{user}" if domain and user else user,
        None,
    )


def _wininet_proxy(m: _Mapper, ed: Mapping[str, Any], ts: int, record: int | None,
                   host: str | None) -> tuple[Any, ...]:
    """WinINet 5600: the per-user system proxy (what "Internet Options" and netsh winhttp
    import set). Not a registry event, so source='wininet'; a proxy or a PAC URL = 'set'."""
    g = ed.get
    proxy, bypass = _opt(g("pwszProxy")), _opt(g("pwszProxyBypass"))
    pac, auto = _opt(g("pwszAutoConfigUrl")), _bool(g("fAutoDetect"))
    parts = [f"{k}={v}" for k, v in (("proxy", proxy), ("bypass", bypass), ("pac", pac)) if v]
    if auto:
        parts.append("autodetect=true")
    return (
        ts, record, host, "windows", "wininet", "5600",
        "set" if proxy or pac else "reset",
        "WinINet proxy settings",
        " ".join(parts) or None,
        None,  # no image: 5600 names only the pid
        m.integer(g("_pid"), "ProcessID"),
        _opt(g("_user")),
    )


HANDLERS: dict[tuple[str, int], tuple[str, Handler]] = {
    (SYSMON, 1): ("process", _sysmon_process),
    (SYSMON, 3): ("netconn", _sysmon_netconn),
    (SYSMON, 12): ("config_change", _sysmon_registry(12)),
    (SYSMON, 13): ("config_change", _sysmon_registry(13)),
    (SYSMON, 14): ("config_change", _sysmon_registry(14)),
    (SYSMON, 22): ("dns", _sysmon_dns),
    (SECURITY, 4624): ("netconn", _security_logon),
    (SECURITY, 4688): ("process", _security_process),
    (SECURITY, 5156): ("netconn", _security_wfp),
    (WININET, 5600): ("config_change", _wininet_proxy),
}

# Winlogbeat's sysmon module and Elastic Agent rename some event-data fields to ECS fields.
# (event-data name, ECS path) per event; used only when the event's key field is missing.
_ECS_PROCESS = (("Image", "process.executable"), ("ProcessId", "process.pid"),
                ("ProcessGuid", "process.entity_id"))
_ECS: dict[tuple[str, int], tuple[str, tuple[tuple[str, str], ...]]] = {
    (SYSMON, 1): ("Image", (
        *_ECS_PROCESS, ("CommandLine", "process.command_line"),
        ("CurrentDirectory", "process.working_directory"),
        ("ParentProcessId", "process.parent.pid"), ("ParentImage", "process.parent.executable"),
        ("ParentCommandLine", "process.parent.command_line"),
        ("ParentProcessGuid", "process.parent.entity_id"))),
    (SYSMON, 3): ("DestinationIp", (
        *_ECS_PROCESS, ("Protocol", "network.transport"), ("SourceIp", "source.ip"),
        ("SourcePort", "source.port"), ("DestinationIp", "destination.ip"),
        ("DestinationPort", "destination.port"), ("DestinationHostname", "destination.domain"))),
    (SYSMON, 12): ("TargetObject", (*_ECS_PROCESS, ("TargetObject", "registry.path"))),
    (SYSMON, 13): ("TargetObject", (*_ECS_PROCESS, ("TargetObject", "registry.path"))),
    (SYSMON, 14): ("TargetObject", (*_ECS_PROCESS, ("TargetObject", "registry.path"))),
    (SYSMON, 22): ("QueryName", (*_ECS_PROCESS, ("QueryName", "dns.question.name"))),
    (SECURITY, 4624): ("IpAddress", (
        ("IpAddress", "source.ip"), ("IpPort", "source.port"), ("LogonType", "winlog.logon.type"),
        ("TargetUserName", "user.name"), ("TargetDomainName", "user.domain"),
        ("ProcessName", "process.executable"), ("ProcessId", "process.pid"))),
    (SECURITY, 4688): ("NewProcessName", (
        ("NewProcessName", "process.executable"), ("NewProcessId", "process.pid"),
        ("CommandLine", "process.command_line"), ("ProcessId", "process.parent.pid"),
        ("ParentProcessName", "process.parent.executable"))),
}

_SYSMON_PID = re.compile(r"^ProcessId: (\d+)", re.M)
_SYSMON_EVENT_TYPE = re.compile(r"^EventType: (\w+)", re.M)
_NXLOG_FIXES: dict[tuple[str, int], tuple[tuple[str, re.Pattern[str]], ...]] = {
    (SYSMON, 1): (("ProcessId", _SYSMON_PID),),
    (SYSMON, 3): (("ProcessId", _SYSMON_PID),),
    (SYSMON, 12): (("ProcessId", _SYSMON_PID), ("EventType", _SYSMON_EVENT_TYPE)),
    (SYSMON, 13): (("ProcessId", _SYSMON_PID), ("EventType", _SYSMON_EVENT_TYPE)),
    (SYSMON, 14): (("ProcessId", _SYSMON_PID), ("EventType", _SYSMON_EVENT_TYPE)),
    (SYSMON, 22): (("ProcessId", _SYSMON_PID),),
    (SECURITY, 4624): (("ProcessId", re.compile(
        r"Process Information:\s*Process ID:\s*(0x[0-9a-fA-F]+)")),),
    (SECURITY, 4688): (("ProcessId", re.compile(r"Creator Process ID:\s*(0x[0-9a-fA-F]+)")),),
    (SECURITY, 5156): (("ProcessID", re.compile(r"Process ID:\s*(\d+)")),),
}


def _ecs_fill(obj: Mapping[str, Any], ed: Mapping[str, Any], key: tuple[str, int]) -> \
        Mapping[str, Any]:
    spec = _ECS.get(key)
    if spec is None or ed.get(spec[0]) is not None:
        return ed
    out = dict(ed)
    for name, path in spec[1]:
        if out.get(name) is None:
            v = dig(obj, path)
            if v is not None:
                out[name] = v
    if key[0] == SYSMON:
        if out.get("User") is None:
            name, domain = dig(obj, "user.name"), dig(obj, "user.domain")
            if type(name) is str:
                out["User"] = f"{domain}\\{name}" if type(domain) is str else name
        if key[1] == 3 and out.get("Initiated") is None:
            direction = dig(obj, "network.direction")
            if direction in ("egress", "outbound"):
                out["Initiated"] = True
            elif direction in ("ingress", "inbound"):
                out["Initiated"] = False
        elif key[1] == 22 and out.get("QueryResults") is None:
            answers = dig(obj, "dns.answers")
            if type(answers) is list:
                out["QueryResults"] = [a.get("data") for a in answers if type(a) is dict]
        elif key[1] in (12, 13, 14) and out.get("Details") is None:
            strings = dig(obj, "registry.data.strings")
            if type(strings) is list and strings:
                out["Details"] = strings[0]
    return out


def _event_id(v: object) -> int | None:
    if type(v) is int:
        return v
    if type(v) is dict:  # EVTX: {"#text": 4688, "#attributes": {"Qualifiers": ...}}
        return _event_id(v.get("#text"))
    if type(v) is str:
        try:
            return int(v)
        except ValueError:
            return None
    return None


class _TimeParser:
    """ISO 8601 to epoch microseconds, with the whole-second prefix cached.

    Event logs arrive in time order with many events per second, so ``2026-11-20T10:02:11``
    repeats; only the fraction is parsed per event. Anything unusual goes to ``iso_to_us``.
    """

    __slots__ = ("_cache",)
    MAX_CACHE = 4096

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        n = len(s)
        if n >= 20 and s[-1] == "Z" and s[4] == "-" and s[10] in "T ":
            head = s[:19]
            base = self._cache.get(head)
            if base is None:
                base = iso_to_us(head)  # ValueError on garbage, as for any other form
                if len(self._cache) >= self.MAX_CACHE:
                    self._cache.clear()
                self._cache[head] = base
            if n == 20:
                return base
            frac = s[20:-1]
            if s[19] == "." and frac.isdigit() and frac.isascii():
                k = len(frac)
                return base + (int(frac) * _FRACTION_SCALE[k] if k <= 6 else int(frac[:6]))
        return iso_to_us(s)


_FRACTION_SCALE = (0, 100_000, 10_000, 1_000, 100, 10, 1)  # "4" -> 400000 us, "417" -> 417000


# -- the format ---------------------------------------------------------------------------

@register
class WindowsFormat(Format):
    name: ClassVar[str] = "windows"
    description: ClassVar[str] = (
        "Windows event logs (Sysmon 1/3/12/13/14/22, Security 4624/4688/5156, WinINet 5600): "
        "EVTX, or JSON lines from Winlogbeat, Elastic Agent, NXLog or OTRF Security-Datasets")
    tables: ClassVar[tuple[str, ...]] = ("process", "netconn", "config_change", "dns")
    binary: ClassVar[bool] = True

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if head.startswith(EVTX_MAGIC):
            return True
        looked = 0
        for line in head.splitlines():
            line = line.strip()
            if not line:
                continue
            looked += 1
            if looked > 10:
                return False
            if not line.startswith(b"{"):
                return False
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a damaged (or, at the end of head, cut) line: look at the next
            if type(obj) is not dict:
                return False
            if "event_type" in obj or "eventMessage" in obj or "_path" in obj or \
                    ("ts" in obj and "uid" in obj):
                return False  # Suricata EVE, macOS unified log, Zeek JSON
            return is_windows_event(obj)
        return False

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        reader: _EvtxReader | _JsonLinesReader = (
            _EvtxReader(ctx, sink) if ctx.head.startswith(EVTX_MAGIC) else
            _JsonLinesReader(ctx, sink))
        reader.run()
        reader.out.flush_all()


class _Emitter:
    """Rows as LAYOUT tuples into ``RowSink.emit`` (no dict per row on the hot path)."""

    __slots__ = ("sink",)

    def __init__(self, sink: RowSink) -> None:
        self.sink = sink

    def emit(self, table_name: str, values: tuple[Any, ...]) -> None:
        self.sink.emit(table_name, LAYOUT[table_name], values)

    def flush_all(self) -> None:
        self.sink.flush()


class _Dispatcher:
    """What both containers share: dispatch one normalised event to its handler."""

    def __init__(self, ctx: IngestContext, sink: RowSink) -> None:
        self.ctx = ctx
        self.sink = sink
        self.m = _Mapper(sink, str(ctx.path))
        self.parse_time = _TimeParser()
        self.out = _Emitter(sink)
        self._channel_lower: dict[str, str] = {}
        self._eids: dict[str, int] = {}
        self.seen = 0

    def channel_key(self, channel: object) -> str:
        if type(channel) is not str:
            return ""
        key = self._channel_lower.get(channel)
        if key is None:
            key = channel.lower()
            if len(self._channel_lower) < 1024:
                self._channel_lower[channel] = key
        return key

    def skip(self, channel: str, raw_channel: object, eid: int) -> None:
        label = _CHANNEL_LABEL.get(channel)
        if label is None:
            label = str(raw_channel)[:80] if raw_channel else "no channel"
        self.sink.skip(f"{label} event {eid}")


# -- JSON lines -------------------------------------------------------------------------------

class _JsonLinesReader(_Dispatcher):
    def run(self) -> None:
        try:
            self._run()
        finally:
            self.sink.record_seen(self.seen)  # counted locally: one call per file, not per line

    def _run(self) -> None:
        # Hot loop: everything it touches is bound to a local first.
        sink, m = self.sink, self.m
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        handlers, ecs, parse_time = HANDLERS, _ECS, self.parse_time
        channels, eids = self._channel_lower, self._eids
        emit, error = self.out.emit, sink.error
        path = str(self.ctx.path)
        seen = 0
        try:
            for lineno, line in iter_lines(self.ctx, sink):
                if not line or line.isspace():
                    continue
                seen += 1
                m.line = lineno
                try:
                    obj = loads(line)
                except decode_error as exc:
                    error(SourceLocation(path=path, line=lineno), f"not JSON: {exc}")
                    continue
                if type(obj) is not dict:
                    error(SourceLocation(path=path, line=lineno), "not a JSON object")
                    continue
                wl: Any = obj.get("winlog")
                if wl is None and "winlog.event_id" in obj:
                    obj = unflatten(obj)
                    wl = obj.get("winlog")
                beat = type(wl) is dict
                nxlog = False
                if beat:
                    raw_eid = wl.get("event_id")
                    raw_channel = wl.get("channel")
                    ed = wl.get("event_data")
                    if type(ed) is not dict:
                        ed = {}
                    host = wl.get("computer_name")
                    if host is None:
                        host = dig(obj, "host.name")
                    raw_ts = obj.get("@timestamp")
                elif "EventID" in obj:
                    raw_eid = obj["EventID"]
                    raw_channel = obj.get("Channel")
                    ed = obj
                    host = obj.get("Hostname")
                    if host is None:
                        host = obj.get("Computer")
                    raw_ts = obj.get("@timestamp") or obj.get("TimeCreated") or \
                        obj.get("EventTime") or obj.get("UtcTime")
                    nxlog = "SourceModuleType" in obj or "EventReceivedTime" in obj
                else:
                    error(SourceLocation(path=path, line=lineno),
                          "not a Windows event (no winlog.event_id or EventID)")
                    continue
                if type(raw_eid) is int:
                    eid: int = raw_eid
                else:
                    cached = eids.get(raw_eid) if type(raw_eid) is str else None
                    if cached is None:
                        cached = _event_id(raw_eid)
                        if cached is None:
                            error(SourceLocation(path=path, line=lineno),
                                  f"event id {str(raw_eid)[:40]!r} is not a number")
                            continue
                        if type(raw_eid) is str and len(eids) < 4096:
                            eids[raw_eid] = cached
                    eid = cached
                channel = channels.get(raw_channel) if type(raw_channel) is str else None
                if channel is None:
                    channel = self.channel_key(raw_channel)
                key = (channel, eid)
                target = handlers.get(key)
                if target is None:
                    self.skip(channel, raw_channel, eid)
                    continue
                if type(raw_ts) is str:
                    try:
                        ts = parse_time(raw_ts)
                    except ValueError:
                        error(SourceLocation(path=path, line=lineno),
                              f"bad timestamp {raw_ts[:40]!r}")
                        continue
                elif type(raw_ts) is int and 0 < raw_ts < _MAX_EPOCH_MS:
                    ts = raw_ts * 1000  # epoch milliseconds, as Elasticsearch exports dates
                else:
                    error(SourceLocation(path=path, line=lineno), "no timestamp")
                    continue
                if beat:
                    spec = ecs.get(key)
                    if spec is not None and ed.get(spec[0]) is None:
                        ed = _ecs_fill(obj, ed, key)
                    if channel == WININET:
                        ed = {**ed, "_user": dig(wl, "user.identifier"),
                              "_pid": dig(wl, "process.pid")}
                else:
                    if nxlog:
                        ed = _nxlog_fix(obj, key)
                    if channel == WININET:
                        ed = {**ed, "_user": obj.get("UserID"), "_pid": obj.get("ProcessID")}
                table_name, handler = target
                row = handler(m, ed, ts, lineno, host if type(host) is str else _text(host))
                if row is not None:
                    emit(table_name, row)
        finally:
            self.seen = seen


def _nxlog_fix(obj: dict[str, Any], key: tuple[str, int]) -> Mapping[str, Any]:
    fixes = _NXLOG_FIXES.get(key)
    message = obj.get("Message")
    if fixes is None or type(message) is not str:
        return obj
    out = dict(obj)
    for name, rx in fixes:
        found = rx.search(message)
        if found is not None:
            out[name] = found.group(1)
    return out


# -- EVTX ---------------------------------------------------------------------------------

class _Chunk:
    __slots__ = ("first", "last", "offset")

    def __init__(self, offset: int, first: int, last: int) -> None:
        self.offset = offset
        self.first = first
        self.last = last


def scan_chunks(path: Path, sink: RowSink | None = None) -> list[_Chunk]:
    """Chunk offsets and the record numbers each chunk header claims (to locate damage).

    Chunk header (libevtx documentation, "Windows XML Event Log format" 2.2): magic at 0, first
    and last event record number (u64) at 8 and 16. A damaged header gives nonsense numbers;
    that only makes a location less precise. A last chunk shorter than 64 KiB is truncated.
    """
    chunks: list[_Chunk] = []
    size = path.stat().st_size
    with path.open("rb") as fh:
        offset = EVTX_HEADER_SIZE
        while offset < size:
            fh.seek(offset)
            head = fh.read(24)
            if len(head) == 24 and head[:8] == CHUNK_MAGIC:
                first, last = struct.unpack_from("<QQ", head, 8)
                chunks.append(_Chunk(offset, first, last))
                if sink is not None and offset + EVTX_CHUNK_SIZE > size:
                    sink.error(SourceLocation(path=str(path), offset=offset),
                               f"EVTX file is truncated: the last chunk has "
                               f"{size - offset} of {EVTX_CHUNK_SIZE} bytes; its records are "
                               "missing")
            offset += EVTX_CHUNK_SIZE
    return chunks


_EVTX_CHUNK_ERR = re.compile(r"chunk number (\d+)")
_EVTX_RECORD_ERR = re.compile(r"record (?:number |IDs )(\d+)")


class _EvtxReader(_Dispatcher):
    def run(self) -> None:
        ctx = self.ctx
        if not ctx.gzipped:
            self.chunks = scan_chunks(ctx.path, self.sink)
            self._parse(ctx.path)
            if ctx.progress is not None:
                ctx.progress(ctx.path.stat().st_size)
            return
        # evtx needs a seekable input; a gzip stream is not one. Decompress to a temporary file
        # (bounded by disk, not memory); a damaged gzip stream keeps what came before the damage.
        with tempfile.NamedTemporaryFile(prefix="hopguard-", suffix=".evtx") as tmp:
            if self._gunzip(tmp):
                tmp.flush()
                self.chunks = scan_chunks(Path(tmp.name))
                self._parse(Path(tmp.name))

    def _gunzip(self, out: IO[bytes]) -> bool:
        fh, raw = open_binary(self.ctx)
        try:
            while True:
                try:
                    block = fh.read(1 << 20)
                except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
                    self.sink.error(SourceLocation(path=str(self.ctx.path), offset=raw.consumed),
                                    f"gzip stream is damaged: {exc}; reading what came before")
                    break
                if not block:
                    break
                out.write(block)
        finally:
            fh.close()
        return out.tell() > 0

    def _parse(self, evtx_path: Path) -> None:
        import evtx  # imported here: JSON-lines users should not pay for loading it

        sink = self.sink
        path = str(self.ctx.path)
        try:
            parser = evtx.PyEvtxParser(str(evtx_path))
            records = parser.records_json()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # RuntimeError, OSError, or a Rust panic (a BaseException)
            sink.error(SourceLocation(path=path, offset=0),
                       f"not a readable EVTX file: {_first_line(exc)}")
            return
        last_header_id: int | None = None
        last_record_id: int | None = None
        consecutive = 0
        while True:
            try:
                rec = next(records)
            except StopIteration:
                break
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise
            except BaseException as exc:  # RuntimeError, or a Rust panic (a BaseException)
                consecutive += 1
                self._evtx_error(exc, last_header_id, last_record_id)
                if consecutive >= MAX_CONSECUTIVE_EVTX_ERRORS:
                    sink.error(SourceLocation(path=path, record=last_record_id),
                               f"giving up after {consecutive} unreadable EVTX records in a row")
                    break
                continue
            consecutive = 0
            if type(rec) is not dict:
                continue
            header_id = rec.get("event_record_id")
            if type(header_id) is int:
                last_header_id = header_id
            sink.record_seen()
            rid = self._record(rec)
            if rid is not None:
                last_record_id = rid

    def _record(self, rec: dict[str, Any]) -> int | None:
        """Map one record; returns its EventRecordID."""
        sink, m = self.sink, self.m
        header_id = rec.get("event_record_id")
        m.line = None
        m.record = header_id if type(header_id) is int else None
        try:
            doc = orjson.loads(rec["data"])
            event = doc["Event"]
            system = event["System"]
        except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
            sink.error(m.where(), f"EVTX record without Event/System: {exc}")
            return None
        if type(system) is not dict:
            sink.error(m.where(), "EVTX record without Event/System")
            return None
        rid = system.get("EventRecordID")
        if type(rid) is int and _I64_MIN <= rid <= _I64_MAX:
            m.record = rid
        raw_eid = system.get("EventID")
        eid = _event_id(raw_eid)
        if eid is None:
            sink.error(m.where(), f"event id {str(raw_eid)[:40]!r} is not a number")
            return m.record
        raw_channel = system.get("Channel")
        channel = self.channel_key(raw_channel)
        key = (channel, eid)
        target = HANDLERS.get(key)
        if target is None:
            self.skip(channel, raw_channel, eid)
            return m.record
        raw_ts = dig(system, "TimeCreated.#attributes.SystemTime")
        if type(raw_ts) is not str:
            sink.error(m.where(), "no TimeCreated/@SystemTime")
            return m.record
        try:
            ts = self.parse_time(raw_ts)
        except ValueError:
            sink.error(m.where(), f"bad TimeCreated/@SystemTime {raw_ts[:40]!r}")
            return m.record
        ed = event.get("EventData")
        if type(ed) is not dict:
            user_data = event.get("UserData")
            ed = next((v for v in user_data.values() if type(v) is dict), {}) \
                if type(user_data) is dict else {}
        if channel == WININET:
            ed = {**ed, "_user": dig(system, "Security.#attributes.UserID"),
                  "_pid": dig(system, "Execution.#attributes.ProcessID")}
        table_name, handler = target
        row = handler(m, ed, ts, m.record, _text(system.get("Computer")))
        if row is not None:
            self.out.emit(table_name, row)
        return m.record

    def _evtx_error(self, exc: BaseException, last_header_id: int | None,
                    last_record_id: int | None) -> None:
        """Locate an evtx decoding error: the chunk's byte offset when we can tell it."""
        path = str(self.ctx.path)
        msg = _first_line(exc)
        offset: int | None = None
        record: int | None = None
        found = _EVTX_CHUNK_ERR.search(msg)
        if found is not None:
            offset = EVTX_HEADER_SIZE + int(found.group(1)) * EVTX_CHUNK_SIZE
        else:
            found = _EVTX_RECORD_ERR.search(msg)
            record = int(found.group(1)) if found is not None else (
                last_header_id + 1 if last_header_id is not None else None)
            if record is not None:
                for chunk in self.chunks:
                    if chunk.first <= record <= chunk.last:
                        offset = chunk.offset
                        break
        after = f" after record {last_record_id}" if last_record_id is not None else ""
        where = SourceLocation(path=path, offset=offset, record=record)
        self.sink.error(where, f"unreadable EVTX data{after}: {msg}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
