"""macOS unified log as written by ``log show --style ndjson`` (or ``log stream --style ndjson``).

Theory of operation. Each line is one JSON object: a log entry with ``timestamp`` (local time
with its UTC offset, microseconds), ``eventMessage``, ``processImagePath``, ``processID``,
``userID``, ``subsystem``, ``category``, ``senderImagePath`` and more. ``log`` may print a
non-JSON header (up to three lines, ``Filtering the log data using ...``) before the entries
and a summary after them (``{"count":N,"finished":1}`` or text); those are skipped quietly. A
non-JSON line *between* entries, or a line that starts like JSON but does not parse, is a
located error.

The unified log is not an audit trail: it has no process-start event, no command lines (except
what a program chooses to log, such as ``sudo``'s ``COMMAND=``), no host name and no parent
process. What we derive, per entry:

* ``process``: every (pid, image) that logged anything is a process that existed; it becomes one
  row (``event_code='first_seen'``, ``ts`` = its first entry, an upper bound on its start).
  launchd's ``Successfully spawned NAME[PID]`` and ``... spawned with pid PID`` give a real start
  (``'launchd_spawn'``, parent launchd, pid 1), and sudo's ``COMMAND=`` gives a command line
  (``'sudo'``, parent sudo, user = the run-as user). These sources describe the same process in
  different ways, so rows are buffered until the end of the file and merged: one process yields
  one row. A sudo row learns its pid from the first entry of a new process with the same image
  path within ``SUDO_MERGE_US`` of the sudo line.
* ``config_change``: a message naming a ``networksetup`` proxy verb (``-setwebproxy`` ...) is a
  change with ``source='networksetup'``; a ``configd`` / SystemConfiguration message naming a
  proxy key (``HTTPProxy``, ``SOCKSProxy``, ``ProxyAutoConfigURLString`` ...) or a changed
  ``Proxy`` in ``network changed:`` is a change with ``source='configd'``. A proxy password in a
  ``networksetup`` argument list is replaced by ``<redacted>``.
* ``netconn``: a ``com.apple.network`` (libnetwork, ``nw_*``) message about an established
  connection (connected / ready / finish_connect) with a literal IP address and port. Addresses
  are usually ``<private>`` unless private data logging is enabled; those entries yield nothing.
  One row per (pid, connection id ``[C12]``, destination).

Every other entry is counted as skipped. ``host`` is NULL (the sensor name is stored apart).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import orjson

from hopguard.errors import SourceLocation
from hopguard.ingest.base import (
    Format,
    IngestContext,
    Row,
    RowSink,
    iter_lines,
    parse_json_object,
    register,
)
from hopguard.ingest.values import iso_to_us

logger = logging.getLogger(__name__)

PLATFORM = "macos"
SOURCE = "macos"
SUDO_MERGE_US = 5_000_000  # a sudo'd command logs its first entry within seconds of sudo
MAX_PENDING_PROCESSES = 200_000  # buffered process rows; beyond it they are flushed unmerged
MAX_PENDING_SUDO = 64
MAX_NETCONN_KEYS = 200_000  # connection ids remembered for de-duplication
MAX_HEADER_LINES = 3  # non-JSON lines before the first entry that are taken for a header
MAX_PENDING_JUNK = 200  # non-JSON lines remembered while deciding summary vs damage

# -- message patterns (compiled once) -----------------------------------------------------

# launchd (subsystem com.apple.xpc.launchd): "Successfully spawned mdworker_shared[61532] because
# ipc (mach)" and "[system/com.apple.foo [61532]:] xpcproxy spawned with pid 61532".
_SPAWNED_NAME = re.compile(r"\bSuccessfully spawned (?P<name>[^\s\[\]]+)\[(?P<pid>\d{1,10})\]")
_SPAWNED_PID = re.compile(r"\bspawned with pid (?P<pid>\d{1,10})")
# sudo(8) via syslog: "alice : TTY=ttys001 ; PWD=/Users/alice ; USER=root ; COMMAND=/usr/bin/x"
_SUDO = re.compile(r"^\s*(?P<user>[^\s:]+) : (?:.*?; )?USER=(?P<runas>[^\s;]+) ; "
                   r"(?:.*?; )?COMMAND=(?P<cmd>.+)$")

# networksetup verbs that change proxies -> the SystemConfiguration key they write
# (networksetup(8); keys from SCSchemaDefinitions.h, kSCPropNetProxies*).
_NS_VERBS: dict[str, str] = {
    "setwebproxy": "HTTPProxy",
    "setsecurewebproxy": "HTTPSProxy",
    "setsocksfirewallproxy": "SOCKSProxy",
    "setftpproxy": "FTPProxy",
    "setstreamingproxy": "RTSPProxy",
    "setgopherproxy": "GopherProxy",
    "setautoproxyurl": "ProxyAutoConfigURLString",
    "setwebproxystate": "HTTPEnable",
    "setsecurewebproxystate": "HTTPSEnable",
    "setsocksfirewallproxystate": "SOCKSEnable",
    "setftpproxystate": "FTPEnable",
    "setstreamingproxystate": "RTSPEnable",
    "setgopherproxystate": "GopherEnable",
    "setautoproxystate": "ProxyAutoConfigEnable",
    "setproxyautodiscovery": "ProxyAutoDiscoveryEnable",
    "setproxybypassdomains": "ExceptionsList",
    "setpassiveftp": "FTPPassive",
}
_NS_VERB = re.compile(r"(?<![\w-])-(" + "|".join(sorted(_NS_VERBS, key=len, reverse=True))
                      + r")\b", re.IGNORECASE)
_NS_WITH_AUTH = {"setwebproxy", "setsecurewebproxy", "setsocksfirewallproxy", "setftpproxy",
                 "setstreamingproxy", "setgopherproxy"}
# "<service> <host> <port> on <user> <password>": the password is the last word.
_NS_PASSWORD = re.compile(r"^(?P<pre>.*?\s\d{1,5}\s+on\s+\S+\s+)(?P<pw>\S+)", re.IGNORECASE)
_SC_KEYS = re.compile(
    r"\b(HTTPProxy|HTTPSProxy|SOCKSProxy|FTPProxy|RTSPProxy|GopherProxy|ProxyAutoConfigURLString"
    r"|ProxyAutoConfigEnable|ProxyAutoDiscoveryEnable|HTTPEnable|HTTPSEnable|SOCKSEnable"
    r"|ExceptionsList|Proxies)\b")
# configd IPMonitor: "network changed: v4(en0:10.10.1.60) DNS Proxy! SMB" (a mark = changed)
_CONFIGD_PROXY_CHANGED = re.compile(r"network changed:.*\bProxy[+\-!*]")

# libnetwork: "[C12]", "[C12.1.1 203.0.113.80:443 ready socket-flow ...]"
_CONN_ID = re.compile(r"\[C(\d+)(?:\.\d+)*[\s\]]")
_ESTABLISHED = re.compile(r"\b(?:connected|ready|finish_connect|established)\b", re.IGNORECASE)
_NOT_ESTABLISHED = re.compile(r"\b(?:fail(?:ed|ure)?|cancel(?:led)?|refused|not connected"
                              r"|disconnected|timed out)\b", re.IGNORECASE)
_ENDPOINT = re.compile(
    r"(?P<v4>(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}):(?P<p4>\d{1,5})\b"
    r"|\[(?P<v6b>[0-9A-Fa-f:.]+(?:%\w+)?)\]:(?P<p6b>\d{1,5})\b"
    r"|(?<![\w:.])(?P<v6d>[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]*:[0-9A-Fa-f.]*?)\.(?P<p6d>\d{1,5})\b")
_SRC_HINT = re.compile(r"(?:local|from|src|source)[:=]?\s*$", re.IGNORECASE)
_PROTO = re.compile(r"\b(tcp|udp|quic)\b", re.IGNORECASE)

_HEADER_PREFIXES = (b"Filtering the log data", b"Skipping info and debug", b"Timestamp",
                    b"Log ", b"Activity ", b"---", b"===", b"Ran out of", b"Total ")


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _int_field(obj: dict[str, Any], key: str) -> int | None:
    v = obj.get(key)
    if isinstance(v, str) and v.strip().isdecimal() and len(v.strip()) <= 18:
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63:
        return v
    return None


def _str_field(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    return v if isinstance(v, str) else ""


# -- process rows, buffered and merged ----------------------------------------------------

@dataclass(slots=True)
class _ProcessState:
    """Process rows of one file, merged across the ways the log reveals a process."""

    rows: list[Row] = field(default_factory=list)
    by_pid: dict[int, list[Row]] = field(default_factory=dict)
    sudo_pending: list[Row] = field(default_factory=list)  # sudo'd commands without a pid

    def _index(self, row: Row) -> None:
        self.rows.append(row)
        pid = row.get("pid")
        if isinstance(pid, int):
            self.by_pid.setdefault(pid, []).append(row)

    def _find(self, pid: int, name: str | None) -> Row | None:
        """A known row of this pid whose image has this base name (or is unknown)."""
        for row in self.by_pid.get(pid, ()):
            image = row.get("image")
            if image is None or name is None:
                return row
            known = _basename(image)
            # launchd reports the process name, which the kernel truncates (MAXCOMLEN)
            if known == name or (len(known) >= 15 and name.startswith(known)) or (
                    len(name) >= 15 and known.startswith(name)):
                return row
        return None

    def seen(self, *, pid: int, image: str, ts: int, record: int, user: str | None) -> bool:
        """The process (pid, image) logged an entry; True if that is news."""
        row = self._find(pid, _basename(image))
        if row is not None:
            if not str(row.get("image") or "").startswith("/"):
                row["image"] = image  # a full path beats launchd's bare name
            if row.get("user") is None:
                row["user"] = user
            return False
        for cand in self.sudo_pending:
            if cand["image"] == image and 0 <= ts - cand["ts"] <= SUDO_MERGE_US:
                self.sudo_pending.remove(cand)
                cand["pid"] = pid
                self.by_pid.setdefault(pid, []).append(cand)
                return True
        self._index({"ts": ts, "record": record, "platform": PLATFORM, "source": SOURCE,
                     "pid": pid, "image": image, "user": user, "event_code": "first_seen"})
        return True

    def spawned(self, *, pid: int, name: str | None, ts: int, record: int) -> bool:
        """launchd started pid (name known or not)."""
        row = self._find(pid, name)
        if row is not None:
            # the process logged before launchd's message was written: keep one row, but it
            # is a real start now
            row["ppid"] = 1
            row["parent_image"] = "/sbin/launchd"
            row["event_code"] = "launchd_spawn"
            return False
        self._index({"ts": ts, "record": record, "platform": PLATFORM, "source": SOURCE,
                     "pid": pid, "image": name, "ppid": 1, "parent_image": "/sbin/launchd",
                     "event_code": "launchd_spawn"})
        return True

    def sudo(self, *, command: str, runas: str, sudo_pid: int | None, sudo_image: str, ts: int,
             record: int) -> None:
        image = command.split(None, 1)[0] if command.strip() else None
        row: Row = {"ts": ts, "record": record, "platform": PLATFORM, "source": SOURCE,
                    "image": image, "command_line": command, "user": runas, "ppid": sudo_pid,
                    "parent_image": sudo_image, "event_code": "sudo"}
        self.rows.append(row)
        if image is not None:
            self.sudo_pending.append(row)
            del self.sudo_pending[:-MAX_PENDING_SUDO]

    def flush_if_full(self, sink: RowSink) -> None:
        if len(self.rows) >= MAX_PENDING_PROCESSES:
            self.flush(sink)

    def flush(self, sink: RowSink) -> None:
        for row in self.rows:
            sink.add("process", row)
        self.rows.clear()
        self.by_pid.clear()
        self.sudo_pending.clear()


# -- message interpretation ---------------------------------------------------------------

def _networksetup_change(message: str) -> tuple[str, str, str] | None:
    """(action, object, detail) for a message naming a networksetup proxy verb."""
    m = _NS_VERB.search(message)
    if m is None:
        return None
    verb = m.group(1).lower()
    key = _NS_VERBS[verb]
    rest = message[m.end():]
    service = _service_name(rest)
    obj = f"{service}/Proxies/{key}" if service else f"Proxies/{key}"
    return verb, obj, redact_proxy_password(message)


def redact_proxy_password(text: str) -> str:
    """``networksetup -setwebproxy SERVICE HOST PORT on USER PASSWORD``: hide the password."""
    m = _NS_VERB.search(text)
    if m is None or m.group(1).lower() not in _NS_WITH_AUTH:
        return text
    rest = text[m.end():]
    pm = _NS_PASSWORD.match(rest)
    if pm is None:
        return text
    return text[:m.end()] + pm.group("pre") + "<redacted>" + rest[pm.end():]


_VALUE_TOKEN = re.compile(r"^(?:on|off|empty|\d+|[\w-]+(?:\.[\w-]+)+|[0-9A-Fa-f:]+:[0-9A-Fa-f:]*"
                          r"|\w+://\S*|\*\S*)$", re.IGNORECASE)


def _service_name(rest: str) -> str | None:
    """The network service argument: quoted, or the words before the first value-like word."""
    s = rest.strip()
    if not s:
        return None
    if s[0] in "'\"":
        end = s.find(s[0], 1)
        return s[1:end] if end > 1 else None
    words = s.split()
    names: list[str] = []
    for i, w in enumerate(words):
        if i > 0 and _VALUE_TOKEN.match(w):
            break
        names.append(w)
    return " ".join(names) or None


def _configd_change(message: str) -> str | None:
    """The object a configd / SystemConfiguration message changed, if it is about proxies."""
    keys = _SC_KEYS.findall(message)
    specific = [k for k in keys if k != "Proxies"]
    if specific:
        return f"Proxies/{specific[0]}"
    if keys:
        return "Proxies"
    if _CONFIGD_PROXY_CHANGED.search(message):
        return "Proxies"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Endpoints:
    src_ip: str | None
    src_port: int | None
    dst_ip: str
    dst_port: int


def _endpoints(message: str) -> _Endpoints | None:
    src: tuple[str, int] | None = None
    dst: tuple[str, int] | None = None
    for m in _ENDPOINT.finditer(message):
        addr = m.group("v4") or m.group("v6b") or m.group("v6d")
        port_s = m.group("p4") or m.group("p6b") or m.group("p6d")
        if addr is None or port_s is None:
            continue
        try:
            ip = str(ipaddress.ip_address(addr.split("%", 1)[0]))
        except ValueError:
            continue
        port = int(port_s)
        if port > 65535:
            continue
        before = message[max(0, m.start() - 12):m.start()]
        after = message[m.end():m.end() + 3]
        if (_SRC_HINT.search(before) or after == "<->") and src is None:
            src = (ip, port)
        elif dst is None:
            dst = (ip, port)
    if dst is None:
        return None
    return _Endpoints(src_ip=src[0] if src else None, src_port=src[1] if src else None,
                      dst_ip=dst[0], dst_port=dst[1])


# -- the format ---------------------------------------------------------------------------

@register
class MacUnifiedLogFormat(Format):
    name: ClassVar[str] = "macos-unifiedlog"
    description: ClassVar[str] = "macOS unified log, `log show --style ndjson`"
    tables: ClassVar[tuple[str, ...]] = ("process", "config_change", "netconn")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        lines = head.splitlines()
        if len(head) >= 65536 and lines:
            lines = lines[:-1]  # the last line of a full head may be cut
        header = 0
        for line in lines[:50]:
            s = line.strip()
            if not s:
                continue
            if not s.startswith(b"{"):
                header += 1
                if s.startswith(_HEADER_PREFIXES) or header <= MAX_HEADER_LINES:
                    continue
                return False
            try:
                obj = orjson.loads(s)
            except orjson.JSONDecodeError:
                return False
            return (isinstance(obj, dict) and "eventMessage" in obj and "timestamp" in obj
                    and ("processImagePath" in obj or "machTimestamp" in obj))
        return False

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        _Reader(ctx, sink).run()


class _Reader:
    def __init__(self, ctx: IngestContext, sink: RowSink) -> None:
        self.sink = sink
        self.ctx = ctx
        self.path = str(ctx.path)
        self.procs = _ProcessState()
        self.conns: set[tuple[int | None, int, str, int]] = set()
        self.entries = 0
        self.header_lines = 0
        # other non-JSON lines: a trailing summary, unless an entry follows
        self.junk: list[int] = []
        self.junk_dropped = 0

    def run(self) -> None:
        for lineno, line in iter_lines(self.ctx, self.sink):
            s = line.strip()
            if not s:
                continue
            if not s.startswith(b"{"):
                self._non_json(lineno, s)
                continue
            self.sink.record_seen()
            where = SourceLocation(path=self.path, line=lineno)
            obj = parse_json_object(s, where, self.sink)
            if obj is None:
                continue
            if "timestamp" not in obj and set(obj) <= {"count", "finished"}:
                self.sink.skip("macos log summary")
                continue
            self._junk_was_damage()
            self._entry(obj, lineno, where)
            self.procs.flush_if_full(self.sink)
        if self.junk or self.junk_dropped:
            self.sink.skip("macos log summary", len(self.junk) + self.junk_dropped)
        self.procs.flush(self.sink)

    def _non_json(self, lineno: int, s: bytes) -> None:
        if s.startswith(_HEADER_PREFIXES) or (
                self.entries == 0 and self.header_lines < MAX_HEADER_LINES):
            self.header_lines += 1
            self.sink.skip("macos log header")
            return
        if len(self.junk) < MAX_PENDING_JUNK:
            self.junk.append(lineno)
        else:
            self.junk_dropped += 1

    def _junk_was_damage(self) -> None:
        """An entry follows non-JSON lines: they were not a trailing summary."""
        for lineno in self.junk:
            self.sink.record_seen()
            self.sink.error(SourceLocation(path=self.path, line=lineno),
                            "not a JSON log entry")
        if self.junk_dropped:
            self.sink.record_seen(self.junk_dropped)
            self.sink.error(SourceLocation(path=self.path, line=self.junk[-1]),
                            f"and {self.junk_dropped} more lines that are not JSON log entries")
        self.junk.clear()
        self.junk_dropped = 0

    def _entry(self, obj: dict[str, Any], lineno: int, where: SourceLocation) -> None:
        raw_ts = obj.get("timestamp")
        try:
            if not isinstance(raw_ts, str):
                raise ValueError("missing")
            ts = iso_to_us(raw_ts)
        except (ValueError, OverflowError) as exc:
            self.sink.error(where, f"bad or missing timestamp {str(raw_ts)[:40]!r}: {exc}")
            return
        self.entries += 1
        message = _str_field(obj, "eventMessage")
        image = _str_field(obj, "processImagePath")
        pid = _int_field(obj, "processID")
        uid = _int_field(obj, "userID")
        user = str(uid) if uid is not None else None
        subsystem = _str_field(obj, "subsystem")
        category = _str_field(obj, "category")
        base = _basename(image)
        useful = False

        if pid is not None and pid > 0 and image:
            useful |= self.procs.seen(pid=pid, image=image, ts=ts, record=lineno, user=user)

        if subsystem == "com.apple.xpc.launchd" or base == "launchd":
            m = _SPAWNED_NAME.search(message)
            if m is not None:
                useful |= self.procs.spawned(pid=int(m.group("pid")), name=m.group("name"),
                                             ts=ts, record=lineno)
            else:
                m = _SPAWNED_PID.search(message)
                if m is not None:
                    useful |= self.procs.spawned(pid=int(m.group("pid")), name=None, ts=ts,
                                                 record=lineno)

        # who made a change: the entry's process, or for sudo the command it ran
        code = f"{subsystem}:{category}" if subsystem else None
        actor_user, actor_pid, actor_image = user, pid, image or None
        if base == "sudo":
            sm = _SUDO.match(message)
            if sm is not None:
                command = redact_proxy_password(sm.group("cmd").strip())
                self.procs.sudo(command=command, runas=sm.group("runas"), sudo_pid=pid,
                                sudo_image=image, ts=ts, record=lineno)
                useful = True
                actor_user, actor_pid, code = sm.group("runas"), None, "sudo"
                actor_image = command.split(None, 1)[0] if command else None

        change = _networksetup_change(message)
        if change is not None:
            action, obj_name, detail = change
            self.sink.add("config_change", {
                "ts": ts, "record": lineno, "platform": PLATFORM, "source": "networksetup",
                "action": action, "object": obj_name, "detail": detail, "user": actor_user,
                "pid": actor_pid, "image": actor_image, "event_code": code})
            useful = True
        elif base == "configd" or subsystem == "com.apple.SystemConfiguration":
            obj_changed = _configd_change(message)
            if obj_changed is not None:
                self.sink.add("config_change", {
                    "ts": ts, "record": lineno, "platform": PLATFORM, "source": "configd",
                    "action": "change", "object": obj_changed, "detail": message,
                    "user": user, "pid": pid, "image": image or None, "event_code": code})
                useful = True

        if (subsystem == "com.apple.network" or message.startswith("nw_")) and \
                self._netconn(message, ts, lineno, pid, image, user, code):
            useful = True

        if not useful:
            self.sink.skip("macos log entry (nothing new)")

    def _netconn(self, message: str, ts: int, lineno: int, pid: int | None, image: str,
                 user: str | None, code: str | None) -> bool:
        if not _ESTABLISHED.search(message) or _NOT_ESTABLISHED.search(message):
            return False
        ends = _endpoints(message)
        if ends is None:
            return False
        cid = _CONN_ID.search(message)
        if cid is not None:
            key = (pid, int(cid.group(1)), ends.dst_ip, ends.dst_port)
            if key in self.conns:
                return False
            if len(self.conns) >= MAX_NETCONN_KEYS:
                self.conns.clear()  # bounded: at worst a long-lived connection repeats
            self.conns.add(key)
        pm = _PROTO.search(message)
        proto = None
        if pm is not None:
            proto = "udp" if pm.group(1).lower() == "quic" else pm.group(1).lower()
        self.sink.add("netconn", {
            "ts": ts, "record": lineno, "platform": PLATFORM, "source": SOURCE,
            "pid": pid, "image": image or None, "user": user, "direction": "outbound",
            "proto": proto, "src_ip": ends.src_ip, "src_port": ends.src_port,
            "dst_ip": ends.dst_ip, "dst_port": ends.dst_port, "event_code": code})
        return True
