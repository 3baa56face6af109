"""VMware ESXi ``/var/log/shell.log``: commands typed in the ESXi Shell (local or over SSH).

Theory of operation. ESXi's shell (busybox ash) logs every command line through syslog as
``shell[PID]: [USER]: COMMAND``, where PID is the *shell's* pid. The line prefix differs by
release and by how the file was collected:

* ESXi 5-6:   ``2019-01-15T10:21:34Z shell[2099541]: [root]: ls``
* ESXi 7-8:   ``2026-11-20T11:05:00.123Z In(14) shell[2099541]: [root]: nc -l -p 8000``
  (``In(14)`` is the severity with its syslog number: Em Al Cr Er Wa No In Db)
* forwarded:  ``2026-11-20T11:05:00.123Z esx-02 In(14) shell[2099541]: [root]: ...`` (a host name
  before the program) or RFC 5424 ``<14>1 2026-11-20T11:05:00.123Z esx-02 shell 2099541 - - ...``

Each command becomes one ``process`` row: ``pid`` = the shell pid (the command's own pid is
not logged, so several rows share it), ``user`` from ``[USER]``, ``command_line`` the text as
typed, ``image`` its first word (a shell builtin or a pipeline's first program, not a resolved
path), ``host`` the forwarded host name or NULL. Session lines (``Interactive shell session
started``, ``ESXShell: ...``, ``SSH session was opened for 'root@10.0.0.9'``) carry no command
and are counted as skipped; so are other programs' lines in a forwarded stream. A line whose
prefix cannot be read is a located error.

Out of scope: ``hostd.log``, ``auth.log``, ``vmkernel.log`` (no command lines; use other
formats when they exist). ESXi writes times in UTC.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import ClassVar

from hopguard.errors import SourceLocation
from hopguard.ingest.base import Format, IngestContext, RowSink, head_lines, iter_lines, register
from hopguard.ingest.values import iso_to_us

logger = logging.getLogger(__name__)

PLATFORM = "esxi"
SOURCE = "esxi"

_TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
_SEV = r"(?:Em|Al|Cr|Er|Wa|No|In|Db)\(\d{1,3}\)"
# BSD-style syslog as ESXi writes it locally, optionally with a host name (forwarded copies).
_LINE = re.compile(
    rf"^(?P<ts>{_TS})\s+(?:(?P<host>(?!{_SEV})[^\s\[:]+)\s+(?=(?:{_SEV}\s+)?[\w.-]+(?:\[|:)))?"
    rf"(?:{_SEV}\s+)?(?P<prog>[\w.-]+)(?:\[(?P<pid>\d{{1,10}})\])?:\s?(?P<msg>.*)$")
# RFC 5424: <PRI>1 TS HOST APP PROCID MSGID SD MSG
_LINE_5424 = re.compile(
    rf"^<\d{{1,3}}>1\s+(?P<ts>{_TS})\s+(?P<host>\S+)\s+(?P<prog>\S+)\s+(?P<pid>\S+)\s+\S+\s+"
    r"(?:-|(?:\[.*?\])+)\s?(?P<msg>.*)$")
_TS_PREFIX = re.compile(rf"^(?:<\d{{1,3}}>1\s+)?{_TS}\s")
_SESSION = re.compile(r"\bSSH session\b|\bESXi? ?Shell\b|\bshell session\b", re.IGNORECASE)
_COMMAND = re.compile(r"^\[(?P<user>[^\]\s]*)\]:\s?(?P<cmd>.*)$")
_SNIFF = re.compile(
    rb"^(?:<\d{1,3}>1\s+)?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*\s+(?:\S+\s+)?"
    rb"(?:(?:Em|Al|Cr|Er|Wa|No|In|Db)\(\d{1,3}\)\s+)?(?:shell(?:\[\d+\]:|\s+\d+\s)|ESXShell:)")


@register
class EsxiShellFormat(Format):
    name: ClassVar[str] = "esxi-shell"
    description: ClassVar[str] = "VMware ESXi /var/log/shell.log (commands run in the ESXi Shell)"
    tables: ClassVar[tuple[str, ...]] = ("process",)

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        lines = head_lines(head, 50)
        if not lines:
            return False
        hits = sum(1 for ln in lines[:20] if _SNIFF.match(ln))
        # a forwarded stream mixes programs: enough that the shell is a real share of it
        return hits >= 1 and (hits * 4 >= min(len(lines), 20) or _SNIFF.match(lines[0]) is not None)

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        path = str(ctx.path)
        for lineno, raw in iter_lines(ctx, sink):
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            sink.record_seen()
            where = SourceLocation(path=path, line=lineno)
            m = _LINE_5424.match(text) if text.startswith("<") else _LINE.match(text)
            if m is None:
                if _TS_PREFIX.match(text) and _SESSION.search(text):
                    sink.skip("esxi session line")  # "SSH session was opened for 'root@...'"
                    continue
                sink.error(where, "not an ESXi syslog line (timestamp program[pid]: message)")
                continue
            try:
                ts = iso_to_us(m.group("ts"))
            except (ValueError, OverflowError) as exc:
                sink.error(where, f"bad timestamp {m.group('ts')!r}: {exc}")
                continue
            prog = m.group("prog")
            msg = m.group("msg")
            if prog != "shell":
                sink.skip("esxi session line" if prog == "ESXShell" else f"esxi {prog} line")
                continue
            cm = _COMMAND.match(msg)
            if cm is None:
                sink.skip("esxi session line")  # "Interactive shell session started" ...
                continue
            cmd = cm.group("cmd").strip()
            if not cmd:
                sink.error(where, "shell line without a command")
                continue
            pid_s = m.group("pid")
            pid = None
            if pid_s is not None and pid_s.isdecimal() and len(pid_s) <= 10:
                pid = int(pid_s)  # RFC 5424 PROCID is free text ("-" when absent)
            host = m.group("host")
            sink.add("process", {
                "ts": ts, "record": lineno, "host": host if host and host != "-" else None,
                "platform": PLATFORM, "source": SOURCE, "pid": pid,
                "user": cm.group("user") or None, "command_line": cmd,
                "image": _first_word(cmd), "event_code": "shell"})


def _first_word(cmd: str) -> str:
    word = cmd.split(None, 1)[0]
    if len(word) > 1 and word[0] in "'\"" and word[-1] == word[0]:
        word = word[1:-1]
    return word
