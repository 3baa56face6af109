"""SSH protocol version exchange for passive monitoring (RFC 4253 §4.2).

Theory of operation
-------------------
Each side of an SSH connection starts by sending an identification string, one line::

    SSH-protoversion-softwareversion SP comments CR LF

(the SP and comments are optional). The line is at most 255 bytes including CR LF and must not
contain NUL. The *server* may send other lines of text before it (RFC 4253 §4.2: "The server
MAY send other lines of data before sending the version string"); they never start with
``SSH-``. A client may not. Old implementations end the line with a bare LF, which RFC 4253
asks us to accept for compatibility, so lines are split on LF and a CR before it is dropped.

An :class:`SshSession` keeps one small state per direction: the unconsumed bytes and whether
that side's identification was seen. It reports an :class:`SshIdent` per side and is ``done``
once both were seen; what follows (the binary packet protocol, from KEXINIT on) is not its
business. Bytes of a side that already identified itself are dropped, not buffered.

Text is decoded as UTF-8 with ``\\xHH`` escapes, as Zeek's ssh.log ``client``/``server``
fields read back, and ``text`` is the whole line without its line end, as Zeek logs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from hopguard.parsers.base import MAX_BUFFER, ORIG, RESP, Malformed

__all__ = ["MAX_IDENT", "SshIdent", "SshSession", "looks_like_ssh"]

# RFC 4253 §4.2: "The maximum length of the string is 255 characters, including the Carriage
# Return and Line Feed."
MAX_IDENT: Final = 255
# Lines the server sends before its identification: no limit in the RFC; OpenSSH's client
# accepts lines of up to 8 KiB. The total before the identification is bounded by MAX_BUFFER.
MAX_PRE_LINE: Final = 8192

_PREFIX: Final = b"SSH-"
# protoversion and softwareversion are printable US-ASCII without whitespace or "-"; the
# software part is parsed more loosely (up to the first SP) because real servers put "-" in it.
_IDENT: Final = re.compile(rb"SSH-([^-\s]+)-([^ ]+)(?: (.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class SshIdent:
    """One side's identification string."""

    direction: int
    text: str  # the whole line without CR LF, e.g. "SSH-2.0-OpenSSH_9.6 Ubuntu-3"
    proto_version: str  # "2.0", "1.99" (a server that speaks 1.x and 2.0) or "1.5"
    software: str  # softwareversion, e.g. "OpenSSH_9.6"
    comments: str | None  # what follows the first SP, if anything
    offset: int  # where the line starts in that direction's stream


class _SideState:
    __slots__ = ("base", "buf", "done", "pos")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # start of the current, unfinished line
        self.base = 0  # stream offset of buf[0]
        self.done = False  # identification seen


class SshSession:
    """The identification exchange of one SSH connection."""

    def __init__(self) -> None:
        self.done = False
        self._sides = (_SideState(), _SideState())

    def feed(self, direction: int, data: bytes) -> list[object]:
        if direction != ORIG and direction != RESP:
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        side = self._sides[direction]
        if self.done or side.done or not data:
            return []
        side.buf += data
        events: list[object] = []
        self._lines(direction, side, events)
        if side.pos:
            del side.buf[: side.pos]
            side.base += side.pos
            side.pos = 0
        if side.done:
            side.buf = bytearray()  # the binary packet protocol follows: not ours to keep
        self.done = self.done or all(s.done for s in self._sides)
        return events

    def _fail(self, events: list[object], direction: int, offset: int, reason: str) -> None:
        events.append(Malformed(direction=direction, offset=offset, reason=reason))
        self.done = True

    def _lines(self, direction: int, side: _SideState, events: list[object]) -> None:
        buf = side.buf
        while True:
            start = side.pos
            offset = side.base + start
            nl = buf.find(b"\n", start)
            is_ident = buf[start: start + 4] == _PREFIX[: len(buf) - start]
            if nl < 0:
                # Check what we can before the line is complete, so a stream that is not SSH
                # is rejected at once rather than after a few KiB.
                pending = len(buf) - start
                if direction == ORIG and not is_ident:
                    self._fail(events, direction, offset, "client did not start with SSH-")
                elif is_ident and pending > MAX_IDENT:
                    self._fail(events, direction, offset, "identification longer than 255 bytes")
                elif pending > MAX_PRE_LINE:
                    self._fail(events, direction, offset, "line before SSH- too long")
                elif start + pending > MAX_BUFFER:
                    self._fail(events, direction, offset, "no identification within 64 KiB")
                return
            if nl + 1 - start >= 4 and is_ident:
                self._ident(direction, side, bytes(buf[start:nl + 1]), offset, events)
                side.pos = nl + 1
                return
            if direction == ORIG:
                # RFC 4253 §4.2 allows other lines from the server only.
                self._fail(events, direction, offset, "client did not start with SSH-")
                return
            if nl + 1 - start > MAX_PRE_LINE:
                self._fail(events, direction, offset, "line before SSH- too long")
                return
            side.pos = nl + 1
            if side.base + side.pos > MAX_BUFFER:
                self._fail(events, direction, offset, "no identification within 64 KiB")
                return

    def _ident(self, direction: int, side: _SideState, line: bytes, offset: int,
               events: list[object]) -> None:
        if len(line) > MAX_IDENT:
            self._fail(events, direction, offset, "identification longer than 255 bytes")
            return
        text = line[:-1]
        if text.endswith(b"\r"):
            text = text[:-1]
        if b"\x00" in text:
            self._fail(events, direction, offset, "NUL in identification")
            return
        m = _IDENT.fullmatch(text)
        if m is None:
            self._fail(events, direction, offset, "invalid identification string")
            return
        comments = m.group(3)
        events.append(SshIdent(
            direction=direction, text=_text(text), proto_version=_text(m.group(1)),
            software=_text(m.group(2)), comments=None if comments is None else _text(comments),
            offset=offset))
        side.done = True


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def looks_like_ssh(head: bytes) -> bool:
    """Whether ``head`` can start one side of an SSH connection.

    True when it starts with ``SSH-`` or is a prefix of it, or when a line starting with
    ``SSH-`` follows a few lines of printable text (a server's pre-identification lines).
    """
    head = bytes(head[:MAX_BUFFER])  # also accepts a memoryview
    if head[:4] == _PREFIX[: len(head)]:
        return True
    start = 0
    for _ in range(8):
        nl = head.find(b"\n", start)
        if nl < 0:
            return False
        line = head[start:nl]
        if any(b < 0x20 and b not in (0x09, 0x0D) for b in line):
            return False
        start = nl + 1
        if head[start: start + 4] == _PREFIX:
            return True
    return False
