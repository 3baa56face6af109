"""Linux auditd ``audit.log`` (raw and enriched log_format) into process, netconn, config_change.

Theory of operation. The kernel (and a few user-space programs) report one *event* as several
*records*, one per line, that share the stamp ``msg=audit(<seconds>.<millis>:<serial>)``::

    node=app-07 type=SYSCALL msg=audit(1700000000.123:4567): arch=c000003e syscall=59 ...
    node=app-07 type=EXECVE msg=audit(1700000000.123:4567): argc=2 a0="ls" a1="-l"
    node=app-07 type=CWD msg=audit(1700000000.123:4567): cwd="/tmp"
    node=app-07 type=PATH msg=audit(1700000000.123:4567): item=0 name="/usr/bin/ls" ...
    node=app-07 type=PROCTITLE msg=audit(1700000000.123:4567): proctitle=6C73002D6C
    node=app-07 type=EOE msg=audit(1700000000.123:4567):

The reader is a small state machine over lines with one piece of state, the table of *open
events* keyed by (node, stamp):

* A line is split cheaply (``str.find``, no regex) into node, record type, stamp and the rest.
  A line without ``type=`` or ``msg=audit(<stamp>)`` is a located error; the ``----`` and
  ``time->...`` separators that ``ausearch`` prints between events are ignored.
* The record is appended to its open event (opening one if needed). Records of one event are
  normally adjacent, but auditd's dispatcher may interleave events, and serials restart after a
  reboot, hence the key includes the full stamp and the node.
* An event is *closed* (turned into rows) at its ``EOE`` record, when it is the oldest open event
  and the table exceeds ``MAX_OPEN_EVENTS`` (older kernels and user-space messages write no EOE,
  so eviction is the normal way those close), and at the end of the input (in arrival order).
* Closing parses the fields of only the records we use: an event is a process start (execve
  SYSCALL or an EXECVE record), a socket event (connect/accept/accept4/bind/listen with a
  SOCKADDR), or a firewall change (NETFILTER_CFG records); anything else is counted as skipped.
  Field damage (bad hex, a non-numeric pid) is reported at the record's line and the event is
  still stored with that value unset (or raw, for text).

Field encoding (kernel ``audit_log_untrustedstring``): text fields are written ``"quoted"`` when
they contain only printable ASCII other than space and ``"``, otherwise as upper-case hex with no
quotes; ``(null)`` and ``?`` mean absent. Long EXECVE arguments are split as ``aN_len=<n>
aN[0]=.. aN[1]=..``, and a large argv spans several EXECVE records of the same event. The
enriched log_format (auditd >= 2.8) appends a ``\\x1d`` (GS) byte and interpreted fields with
upper-case names (``UID="root"``, ``SYSCALL=execve``); we use ``UID`` and ``SYSCALL`` from those.
SOCKADDR ``saddr`` is the raw ``struct sockaddr`` in hex (family in host byte order, which is
little-endian on every architecture we map; port and address in network order).

Socket events (docs/formats/auditd.md has the full mapping): a connect is kept when it
succeeded or is a non-blocking connect in progress (exit=-115, EINPROGRESS); other failures are
counted. Only AF_INET/AF_INET6 SOCKADDRs make rows; listen() and most accept() calls carry no
SOCKADDR (audit logs addresses copied *into* the kernel) and are counted, so a listener shows
as its bind(), stored with direction 'listen' and the local address in dst_ip/dst_port. proto
is 'tcp' because the log does not say the socket type.

``record`` of every row is the line number of the event's first line (not the audit serial,
which repeats after a reboot and across nodes). ``host`` is the ``node=`` prefix when present,
else NULL (the sink's ``sensor`` still says where the file came from).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final

from hopguard.errors import SourceLocation
from hopguard.ingest.base import Format, IngestContext, Row, RowSink, iter_lines, register

logger = logging.getLogger(__name__)

MAX_OPEN_EVENTS: Final = 10_000  # events awaiting their EOE; the oldest is closed beyond this

_UNSET_ID: Final = "4294967295"  # (uid_t)-1: "unset" (kernel threads, daemons before login)
_EINPROGRESS: Final = "-115"  # non-blocking connect in progress: a real connection attempt

# Syscall numbers per audit arch (AUDIT_ARCH_* in include/uapi/linux/audit.h) for the calls we
# read. A log without arch= (hand-written, filtered) is read as x86_64.
_X86_64: Final = "c000003e"
_SYSCALLS: Final[dict[str, dict[str, str]]] = {
    _X86_64: {"59": "execve", "322": "execveat", "42": "connect", "43": "accept",
              "288": "accept4", "49": "bind", "50": "listen"},
    "c00000b7": {"221": "execve", "281": "execveat", "203": "connect", "202": "accept",  # arm64
                 "242": "accept4", "200": "bind", "201": "listen"},
    "40000003": {"11": "execve", "358": "execveat", "362": "connect", "364": "accept4",  # i386
                 "361": "bind", "363": "listen", "102": "socketcall"},
    "40000028": {"11": "execve", "387": "execveat", "283": "connect", "285": "accept",  # arm
                 "366": "accept4", "282": "bind", "284": "listen"},
}
# i386 socketcall(2): a0 is the call number (hex, as every aN of SYSCALL).
_SOCKETCALL: Final = {"2": "bind", "3": "connect", "4": "listen", "5": "accept", "12": "accept4"}

_EXEC_CALLS: Final = frozenset({"execve", "execveat"})
_DIRECTION: Final = {"connect": "outbound", "accept": "inbound", "accept4": "inbound",
                     "bind": "listen", "listen": "listen"}
_WANTED: Final = _EXEC_CALLS | frozenset(_DIRECTION)

# Linux address families (include/linux/socket.h) and netfilter families (NFPROTO_*), named
# as nft(8) names them.
_AF_INET: Final = 2
_AF_INET6: Final = 10
_NFPROTO: Final = {"0": "unspec", "1": "inet", "2": "ip", "3": "arp", "5": "netdev",
                   "7": "bridge", "10": "ip6"}

_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_NEEDS_QUOTES: Final = re.compile(r'[\s"]')


class _FieldError(ValueError):
    """A field value that cannot be decoded (reported at its line; the event goes on)."""


# -- value decoding -------------------------------------------------------------------------

def _fields(text: str) -> dict[str, str]:
    """``k=v k=v`` (raw and enriched parts alike) into a dict; the first of a repeated key wins.

    Kernel text values never contain spaces (those are hex-encoded), so splitting on spaces is
    exact for the records we read; user-space ``msg='...'`` records are never parsed here.
    """
    if "\x1d" in text:
        text = text.replace("\x1d", " ")
    out: dict[str, str] = {}
    for tok in text.split(" "):
        k, sep, v = tok.partition("=")
        if sep and k not in out:
            out[k] = v
    return out


def _get(text: str, key: str) -> str | None:
    """The value of one field, ``key`` given as " name=" (records start with a space).

    A cheap alternative to ``_fields`` when one or two fields are needed; exact for kernel
    records, whose values never contain a space.
    """
    i = text.find(key)
    if i < 0:
        return None
    i += len(key)
    j = text.find(" ", i)
    value = text[i:] if j < 0 else text[i:j]
    gs = value.find("\x1d")
    return value if gs < 0 else value[:gs]


def _unhex(value: str) -> bytes:
    if len(value) % 2 or not _HEX_DIGITS.issuperset(value):
        raise _FieldError(f"neither quoted nor hex: {value[:40]!r}")
    return bytes.fromhex(value)


def _text_bytes(value: str) -> bytes | None:
    """An untrusted-string field as bytes: quoted, hex, or absent."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].encode("utf-8", "surrogateescape")
    if value in ("(null)", "?", ""):
        return None
    return _unhex(value)


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]  # the common case, without a round trip through bytes
    raw = _text_bytes(value)
    return None if raw is None else raw.decode("utf-8", "replace")


def _int(value: str | None) -> int | None:
    if value is None or value in ("", "?", "(none)"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise _FieldError(f"not a number: {value[:40]!r}") from None
    if not -(1 << 63) <= n < (1 << 63):
        raise _FieldError(f"number out of range: {value[:40]!r}")
    return n


def _id_name(value: str | None) -> str | None:
    """A numeric uid, or an enriched name; None when unset."""
    if value is None:
        return None
    if value[:1] == '"':
        value = value[1:-1] if len(value) >= 2 and value[-1] == '"' else value[1:]
    if value in ("", _UNSET_ID, "unset", "?", "(null)"):
        return None
    return value


def _quote_arg(arg: str) -> str:
    # Quote only what needs it so that command lines stay greppable (TCP-LISTEN:8443).
    if arg and _NEEDS_QUOTES.search(arg) is None:
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def join_argv(argv: list[str]) -> str:
    """argv as one command line: arguments joined with spaces; any with space quoted."""
    return " ".join(_quote_arg(a) for a in argv)


def decode_sockaddr(hexstr: str) -> tuple[int, str | None, int | None]:
    """SOCKADDR ``saddr`` hex to (family, address, port); address/port None unless IPv4/IPv6.

    Raises _FieldError for bad hex or a truncated inet address.
    """
    raw = _unhex(hexstr)
    if len(raw) < 2:
        raise _FieldError("sockaddr shorter than its family field")
    family = int.from_bytes(raw[0:2], "little")
    if family == _AF_INET:
        if len(raw) < 8:
            raise _FieldError(f"AF_INET sockaddr of {len(raw)} bytes")
        return family, str(ipaddress.IPv4Address(raw[4:8])), int.from_bytes(raw[2:4], "big")
    if family == _AF_INET6:
        if len(raw) < 24:
            raise _FieldError(f"AF_INET6 sockaddr of {len(raw)} bytes")
        addr = ipaddress.IPv6Address(raw[8:24])
        mapped = addr.ipv4_mapped  # ::ffff:a.b.c.d: written as IPv4 to match network logs
        return family, str(mapped or addr), int.from_bytes(raw[2:4], "big")
    return family, None, None


def parse_stamp(stamp: str) -> int | None:
    """``<seconds>.<millis>:<serial>`` to microseconds since the epoch; None if malformed."""
    secs, _, serial = stamp.partition(":")
    whole, _, frac = secs.partition(".")
    if not (serial.isascii() and serial.isdigit() and whole.isascii() and whole.isdigit()):
        return None
    if frac and not (frac.isascii() and frac.isdigit()):
        return None
    if len(whole) > 11:  # past the year 5000: not a clock reading
        return None
    return int(whole) * 1_000_000 + (int(frac[:6].ljust(6, "0")) if frac else 0)


_SYSCALL_KEYS: Final = tuple((k, f" {k}=") for k in (
    "arch", "syscall", "success", "exit", "a0", "ppid", "pid", "uid", "exe"))
_ENRICHED_KEYS: Final = (("UID", " UID="), ("SYSCALL", " SYSCALL="))
# The kernel's layout of a SYSCALL record (kernel/auditsc.c, audit_log_exit): position in
# rest.split(" ") -> (prefix, our key) for the fields we use. rest starts with a space, hence
# position 0 is empty.
_SYSCALL_LAYOUT: Final = ((1, "arch="), (2, "syscall="), (3, "success="), (4, "exit="),
                          (5, "a0="), (10, "ppid="), (11, "pid="), (13, "uid="), (24, "exe="))


def _syscall_fields(rest: str) -> dict[str, str]:
    """The SYSCALL fields we use (about a third of them).

    Hand-tuned: this runs once per SYSCALL event we keep. The fast path takes fields by
    position when the record has the kernel's layout (checked by prefix); otherwise each key
    is searched, in the kernel's order, each search starting where the last value ended.
    """
    out: dict[str, str] = {}
    parts = rest.split(" ", 25)
    tail = parts[-1]
    if len(parts) == 26:
        for i, prefix in _SYSCALL_LAYOUT:
            part = parts[i]
            if not part.startswith(prefix):
                out.clear()
                break
            out[prefix[:-1]] = part[len(prefix):]
        exe = out.get("exe")
        if exe is not None and "\x1d" in exe:  # exe= last before the enriched fields
            out["exe"] = exe[:exe.find("\x1d")]
            tail = exe
    if not out:
        tail = rest
        find = rest.find
        pos = 0
        for k, probe in _SYSCALL_KEYS:
            i = find(probe, pos)
            if i < 0:
                i = find(probe)
                if i < 0:
                    continue
            i += len(probe)
            j = find(" ", i)
            if j < 0:
                j = len(rest)
            v = rest[i:j]
            gs = v.find("\x1d")
            out[k] = v if gs < 0 else v[:gs]
            pos = j
    if "\x1d" in tail:
        tail = tail.replace("\x1d", " ")
        for k, probe in _ENRICHED_KEYS:
            found = _get(tail, probe)
            if found is not None:
                out[k] = found
    return out


def _syscall_name(rest: str) -> str | None:
    """The name of a SYSCALL record's call (enriched SYSCALL= wins; else by arch and number)."""
    enriched = _get(rest, " SYSCALL=") if "\x1d" in rest else None
    if enriched:
        return enriched
    table = _SYSCALLS.get((_get(rest, " arch=") or _X86_64).lower(), _SYSCALLS[_X86_64])
    name = table.get(_get(rest, " syscall=") or "")
    if name == "socketcall":
        return _SOCKETCALL.get((_get(rest, " a0=") or "").lower())
    return name


# -- events ---------------------------------------------------------------------------------

@dataclass(slots=True)
class _EventState:
    """The records of one open event, in arrival order."""

    node: str | None
    stamp: str
    first_line: int
    records: list[tuple[int, str, str]] = field(default_factory=list)  # (line, type, rest)
    ts: int | None = None  # microseconds, set when the event is closed


class AuditAssembler:
    """The sans-IO core: feed numbered lines, get rows in ``sink``; call ``finish`` at EOF."""

    def __init__(self, sink: RowSink, path: str, *, max_open: int = MAX_OPEN_EVENTS) -> None:
        self.sink = sink
        self.path = path
        self.max_open = max_open
        self.open: dict[tuple[str | None, str], _EventState] = {}
        self._order: deque[tuple[tuple[str | None, str], _EventState]] = deque()
        self._last: _EventState | None = None  # the event of the previous line, if still open

    def _error(self, line: int, message: str) -> None:
        self.sink.error(SourceLocation(path=self.path, line=line), message)

    # -- lines --------------------------------------------------------------------------

    def feed(self, lineno: int, raw: bytes) -> None:
        # The hot path: a few str.find calls and one dict lookup per line. The stamp is checked
        # only when it opens an event; the other records of the event repeat the same text.
        line = raw.decode("utf-8", "replace")
        node: str | None = None
        if line[:5] == "node=":
            sp = line.find(" ")
            if sp < 0:
                self._error(lineno, "node= without a record")
                return
            node = line[5:sp] or None
            line = line[sp + 1:].lstrip(" ")
        if line[:5] != "type=":
            if line[:4] == "----" or line[:6] == "time->" or not line.strip():
                return  # ausearch's event separators and blank lines
            self._error(lineno, "not an audit record (no type=)")
            return
        i = line.find(" msg=audit(", 5)
        j = line.find(")", i + 11) if i >= 0 else -1
        if j < 0:
            self._error(lineno, "no msg=audit(<time>:<serial>) stamp")
            return
        stamp = line[i + 11:j]
        last = self._last
        if last is not None and last.stamp == stamp and last.node == node:
            ev = last  # the usual case: the next record of the event just seen
        else:
            key = (node, stamp)
            found = self.open.get(key)
            if found is None:
                ev = _EventState(node, stamp, lineno, [])
                self.open[key] = ev
                order = self._order
                order.append((key, ev))
                if len(self.open) > self.max_open:
                    self._evict_oldest()
                elif len(order) > 2 * self.max_open:
                    self._order = deque(self.open.items())  # drop the entries of closed events
            else:
                ev = found
            self._last = ev
        rtype = line[5:i]
        if rtype == "EOE":
            self._last = None
            del self.open[(node, stamp)]
            self._close(ev)
            return
        # keep the text after "):" (it starts with a space, which _get relies on)
        ev.records.append((lineno, rtype, line[j + 2:] if line.startswith(":", j + 1) else
                           line[j + 1:]))

    def _evict_oldest(self) -> None:
        # _order holds every event opened, oldest first; entries of events already closed at
        # their EOE are stale and dropped here (and by compaction, so the deque stays bounded).
        # A dict alone would do, but next(iter(dict)) degrades when its head was deleted.
        order, open_ = self._order, self.open
        while order:
            key, ev = order.popleft()
            if open_.get(key) is ev:
                del open_[key]
                if self._last is ev:
                    self._last = None
                self._close(ev)
                return

    def finish(self) -> None:
        pending, self.open = self.open, {}
        self._order.clear()
        self._last = None
        for ev in pending.values():
            self._close(ev)

    # -- events -------------------------------------------------------------------------

    def _close(self, ev: _EventState) -> None:
        if not ev.records:
            return  # a lone EOE (its event was evicted earlier): nothing to say
        self.sink.record_seen()
        ev.ts = parse_stamp(ev.stamp)
        if ev.ts is None:
            # checked here, once per event, rather than per line: records with the same bad
            # stamp were grouped and are reported (and dropped) together
            n = len(ev.records)
            more = f" (and {n - 1} more records with it)" if n > 1 else ""
            self._error(ev.first_line, f"bad audit stamp {ev.stamp[:40]!r}{more}")
            return
        syscall_rec: tuple[int, str, str] | None = None
        has_execve = has_nf = False
        for rec in ev.records:
            t = rec[1]
            if t == "SYSCALL":
                if syscall_rec is None:
                    syscall_rec = rec
            elif t == "EXECVE":
                has_execve = True
            elif t == "NETFILTER_CFG":
                has_nf = True
        if syscall_rec is None and not (has_execve or has_nf):
            first = ev.records[0]
            if first[1] == "USER_CMD":
                self._user_cmd(ev, first)
            else:
                self.sink.skip(f"auditd {first[1]} event")
            return
        sc: dict[str, str] = {}
        name: str | None = None
        if syscall_rec is not None:
            name = _syscall_name(syscall_rec[2])
            if not (has_execve or has_nf or name in _WANTED):
                self.sink.skip("auditd SYSCALL event (other syscall)")
                return
            sc = _syscall_fields(syscall_rec[2])
        if has_execve or name in _EXEC_CALLS:
            self._process(ev, syscall_rec, sc)
        elif has_nf:
            self._netfilter(ev, syscall_rec, sc)
        elif name is not None and name in _DIRECTION:
            self._netconn(ev, syscall_rec, sc, name)
        else:
            self.sink.skip("auditd SYSCALL event (other syscall)")

    def _common(self, ev: _EventState, syscall_rec: tuple[int, str, str] | None,
                sc: dict[str, str]) -> Row:
        """Columns every row of the event shares: time, host, and the SYSCALL's subject."""
        row: Row = {"ts": ev.ts, "host": ev.node, "platform": "linux", "record": ev.first_line}
        if syscall_rec is None:
            return row
        line = syscall_rec[0]
        for col, key in (("pid", "pid"), ("ppid", "ppid")):
            try:
                row[col] = _int(sc.get(key))
            except _FieldError as exc:
                self._error(line, f"SYSCALL {key}: {exc}")
        try:
            row["image"] = _text(sc.get("exe"))
        except _FieldError as exc:
            self._error(line, f"SYSCALL exe: {exc}")
            row["image"] = sc.get("exe")
        row["user"] = _id_name(sc.get("UID")) or _id_name(sc.get("uid"))
        return row

    def _process(self, ev: _EventState, syscall_rec: tuple[int, str, str] | None,
                 sc: dict[str, str]) -> None:
        if syscall_rec is not None and sc.get("success", "yes") != "yes":
            self.sink.skip("auditd failed execve")
            return
        row = self._common(ev, syscall_rec, sc)
        execve: dict[str, str] = {}
        execve_line = 0
        title_rec: tuple[int, str, str] | None = None
        path_rec: tuple[int, str, str] | None = None
        for rec in ev.records:
            line, t, rest = rec
            if t == "EXECVE":
                # A large argv spans several EXECVE records: merge them (argc is in the first).
                for k, v in _fields(rest).items():
                    execve.setdefault(k, v)
                execve_line = execve_line or line
            elif t == "CWD" and "cwd" not in row:
                try:
                    row["cwd"] = _text(_get(rest, " cwd="))
                except _FieldError as exc:
                    self._error(line, f"CWD: {exc}")
            elif t == "PROCTITLE" and title_rec is None:
                title_rec = rec
            elif t == "PATH" and path_rec is None and _get(rest, " item=") == "0":
                path_rec = rec
        argv = self._argv(execve, execve_line) if execve else None
        title: list[str] | None = None
        if not argv and title_rec is not None:
            # PROCTITLE: the argv as NUL-separated bytes, cut by the kernel at 128 bytes
            try:
                raw = _text_bytes(_get(title_rec[2], " proctitle=") or "")
            except _FieldError as exc:
                self._error(title_rec[0], f"PROCTITLE: {exc}")
                raw = None
            if raw is not None:
                title = [a.decode("utf-8", "replace") for a in raw.split(b"\0")]
                while title and not title[-1]:
                    title.pop()
        if row.get("image") is None and path_rec is not None:
            # no exe= (no SYSCALL in the log): the executed file, when named absolutely
            try:
                path0 = _text(_get(path_rec[2], " name="))
            except _FieldError as exc:
                self._error(path_rec[0], f"PATH: {exc}")
                path0 = None
            if path0 is not None and path0.startswith("/"):
                row["image"] = path0
        cmd = argv if argv else title
        row["command_line"] = join_argv(cmd) if cmd else None
        row["source"] = "auditd"
        row["event_code"] = "EXECVE"
        self.sink.add("process", row)

    def _user_cmd(self, ev: _EventState, rec: tuple[int, str, str]) -> None:
        # sudo's record (always written, even without execve rules): the command as typed,
        # by the invoking user, inside the user-space message msg='cwd=.. cmd=.. res=..'.
        line, _, rest = rec
        f = _fields(rest.replace("msg='", "", 1))
        if f.get("res", "success").rstrip("'") not in ("success", "1"):
            self.sink.skip("auditd failed USER_CMD")
            return
        row: Row = {"ts": ev.ts, "host": ev.node, "platform": "linux", "record": ev.first_line,
                    "source": "auditd", "event_code": "USER_CMD"}
        try:
            row["pid"] = _int(f.get("pid"))
            row["user"] = _id_name(f.get("UID")) or _id_name(f.get("uid"))
            row["cwd"] = _text(f.get("cwd"))
            row["command_line"] = _text(f.get("cmd"))
        except _FieldError as exc:
            self._error(line, f"USER_CMD: {exc}")
        self.sink.add("process", row)

    def _argv(self, f: dict[str, str], line: int) -> list[str]:
        try:
            argc = _int(f.get("argc"))
        except _FieldError as exc:
            self._error(line, f"EXECVE argc: {exc}")
            argc = None
        argv: list[str] = []
        i = 0
        while argc is None or i < argc:
            key = f"a{i}"
            value = f.get(key)
            try:
                if value is not None:
                    raw = _text_bytes(value)
                elif f"{key}_len" in f:
                    # a long argument, split into chunks a<i>[0], a<i>[1], ... (each quoted or hex)
                    parts: list[bytes] = []
                    n = 0
                    while (chunk := f.get(f"{key}[{n}]")) is not None:
                        parts.append(_text_bytes(chunk) or b"")
                        n += 1
                    raw = b"".join(parts)
                else:
                    break  # argc larger than what was logged (the kernel drops what won't fit)
            except _FieldError as exc:
                self._error(line, f"EXECVE {key}: {exc}")
                raw = (value or "").encode()
            argv.append("" if raw is None else raw.decode("utf-8", "replace"))
            i += 1
        return argv

    def _netconn(self, ev: _EventState, syscall_rec: tuple[int, str, str] | None,
                 sc: dict[str, str], name: str) -> None:
        success = sc.get("success", "yes")
        if success != "yes" and not (name == "connect" and sc.get("exit") == _EINPROGRESS):
            self.sink.skip(f"auditd failed {name}")
            return
        saddr: str | None = None
        saddr_line = 0
        for line, t, rest in ev.records:
            if t == "SOCKADDR":
                saddr = _fields(rest).get("saddr")
                saddr_line = line
                break
        if saddr is None:
            # listen() has no address; accept() peers are copied *out* of the kernel, which
            # audit does not log: without a SOCKADDR we cannot even tell TCP from a unix socket.
            self.sink.skip(f"auditd {name} without SOCKADDR")
            return
        try:
            _family, addr, port = decode_sockaddr(saddr)
        except _FieldError as exc:
            self._error(saddr_line, f"SOCKADDR: {exc}")
            return
        if addr is None:
            self.sink.skip("auditd non-IP socket event")
            return
        direction = _DIRECTION[name]
        if direction == "listen" and port == 0:
            self.sink.skip("auditd bind to port 0")
            return
        row = self._common(ev, syscall_rec, sc)
        # netconn keeps ppid: a forked child (socat fork, sshd session) has no EXECVE of its own
        row["direction"] = direction
        row["proto"] = "tcp"
        if direction == "inbound":
            row["src_ip"], row["src_port"] = addr, port
        else:  # outbound: the peer; listen: the local address the peer will connect to
            row["dst_ip"], row["dst_port"] = addr, port
        row["source"] = "auditd"
        row["event_code"] = name
        self.sink.add("netconn", row)

    def _netfilter(self, ev: _EventState, syscall_rec: tuple[int, str, str] | None,
                   sc: dict[str, str]) -> None:
        base = self._common(ev, syscall_rec, sc)
        base.pop("ppid", None)
        for line, t, rest in ev.records:
            if t != "NETFILTER_CFG":
                continue
            f = _fields(rest)
            row = dict(base)
            if row.get("pid") is None:  # kernels >= 5.13 log the subject in the record too
                try:
                    row["pid"] = _int(f.get("pid"))
                except _FieldError as exc:
                    self._error(line, f"NETFILTER_CFG pid: {exc}")
            table, _, gen = f.get("table", "?").partition(":")
            family = f.get("family", "?")
            row["object"] = f"{table}/{_NFPROTO.get(family, family)}"
            detail = f"entries={f.get('entries', '?')}"
            row["detail"] = f"{detail} gen={gen}" if gen else detail
            row["action"] = f.get("op")
            row["source"] = "netfilter"
            row["event_code"] = "NETFILTER_CFG"
            self.sink.add("config_change", row)


# -- format ---------------------------------------------------------------------------------

def _looks_like_record(line: bytes) -> bool:
    if line.startswith(b"node="):
        sp = line.find(b" ")
        line = line[sp + 1:] if sp > 0 else b""
    return line.startswith(b"type=") and b" msg=audit(" in line


@register
class AuditdFormat(Format):
    name: ClassVar[str] = "auditd"
    description: ClassVar[str] = "Linux auditd audit.log (raw or enriched, optional node=)"
    tables: ClassVar[tuple[str, ...]] = ("process", "netconn", "config_change")

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        # Most of the first substantive lines must be audit records (one damaged line is
        # tolerated); the last line of the head may be cut and is not judged.
        lines = head.split(b"\n")
        if len(lines) > 1:
            lines = lines[:-1]
        seen = hits = 0
        for line in lines:
            s = line.strip()
            if not s or s.startswith((b"----", b"time->")):
                continue
            seen += 1
            hits += _looks_like_record(s)
            if seen >= 20:
                break
        return hits > 0 and hits * 2 > seen

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        asm = AuditAssembler(sink, str(ctx.path))
        feed = asm.feed
        for lineno, line in iter_lines(ctx, sink):
            feed(lineno, line)
        asm.finish()
