"""SOCKS 4, 4a and 5 handshakes for passive monitoring (SOCKS4 protocol note, SOCKS4A note,
RFC 1928, RFC 1929, RFC 1961).

Theory of operation
-------------------
A SOCKS handshake is a strict alternation of small binary messages, so a :class:`SocksSession`
is a single cursor (:class:`_Step`) over the expected sequence, with one byte buffer per
direction. The first byte the client sends picks the version:

SOCKS4 / 4a (client speaks first, one round trip)::

    client: VN=4 CD DSTPORT(2) DSTIP(4) USERID NUL [HOSTNAME NUL if DSTIP is 0.0.0.x, x != 0]
    server: VN=0 CD DSTPORT(2) DSTIP(4)            CD 90 granted, 91-93 refused

SOCKS5 (RFC 1928)::

    client: VER=5 NMETHODS METHODS...               greeting (§3)
    server: VER=5 METHOD                            method selection; 0xFF refuses all
    [client: VER=1 ULEN UNAME PLEN PASSWD           RFC 1929 sub-negotiation if METHOD = 2
     server: VER=1 STATUS]                          0 = success
    client: VER=5 CMD RSV ATYP DST.ADDR DST.PORT    request (§4)
    server: VER=5 REP RSV ATYP BND.ADDR BND.PORT    reply (§6)

Clients often send a message before the answer to the previous one has arrived (greeting and
request in one segment when only "no authentication" is offered; a TLS hello right after a
SOCKS4 request). Bytes of a direction that is not due are therefore kept, unparsed, until the
cursor reaches them; the ``done`` flag and :class:`TunnelOpened` hand whatever is left over to
the next parser. A successful CONNECT (or the second reply of a BIND, RFC 1928 §4) ends the
handshake with :class:`TunnelOpened`; a refusal, a successful UDP ASSOCIATE (its TCP connection
carries nothing more) or an authentication method we cannot follow (GSSAPI, RFC 1961, may wrap
every later message) ends the session without one.

Strings (user names, host names) are decoded as UTF-8 with ``\\xHH`` escapes, as Zeek's logs
read back. Reply outcomes use the exact wording of Zeek's ``SOCKS::v4_status`` and
``SOCKS::v5_status`` tables (base/protocols/socks/consts.zeek) so rows built from a capture
and rows read from Zeek's socks.log agree. The password of RFC 1929 is never kept: only whether
one was sent.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Final

from hopguard.parsers.base import (
    MAX_BUFFER,
    NEED_DATA,
    ORIG,
    RESP,
    Malformed,
    NeedData,
    TunnelOpened,
)

__all__ = [
    "SOCKS4_STATUS",
    "SOCKS5_METHODS",
    "SOCKS5_STATUS",
    "SocksAuthResult",
    "SocksMethodSelected",
    "SocksReply",
    "SocksRequest",
    "SocksSession",
    "looks_like_socks",
]

# Zeek's SOCKS::v4_status (the SOCKS4 note calls 91 "request rejected or failed"; Zeek's
# wording is kept so outcomes compare equal across sources).
SOCKS4_STATUS: Final = {
    0x5A: "succeeded",
    0x5B: "general SOCKS server failure",
    0x5C: "request failed because client is not running identd",
    0x5D: "request failed because client's identd could not confirm the user ID string in "
          "the request",
}
# Zeek's SOCKS::v5_status, i.e. RFC 1928 §6 REP values with Zeek's capitalisation.
SOCKS5_STATUS: Final = {
    0: "succeeded",
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "Network unreachable",
    4: "Host unreachable",
    5: "Connection refused",
    6: "TTL expired",
    7: "Command not supported",
    8: "Address type not supported",
}
# RFC 1928 §3 METHOD values (IANA "SOCKS Methods" registry), short names for the proxy table.
SOCKS5_METHODS: Final = {
    0x00: "none",
    0x01: "gssapi",
    0x02: "username/password",
    0x03: "chap",
    0x05: "challenge-response",
    0x06: "ssl",
    0x07: "nds",
    0x08: "multi-auth",
    0x09: "json",
    0xFF: "no acceptable methods",
}
_COMMANDS: Final = {1: "connect", 2: "bind", 3: "udp_associate"}
_CONNECT, _BIND = 1, 2

# No standard bounds these; they keep a hostile peer from making us buffer a stream while
# hunting for a NUL. Host names are at most 255 octets anyway (RFC 1035 §2.3.4).
MAX_V4_FIELD: Final = 1024
# The sniffer is stricter: a real user id or host name fits in 255 bytes.
_SNIFF_FIELD: Final = 255


def _status_name(table: dict[int, str], code: int) -> str:
    return table.get(code, f"unknown-{code}")


def _method_name(code: int) -> str:
    if code in SOCKS5_METHODS:
        return SOCKS5_METHODS[code]
    if 0x80 <= code <= 0xFE:
        return f"private-{code}"  # "reserved for private methods" (RFC 1928 §3)
    return f"unknown-{code}"


def _text(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True, kw_only=True)
class SocksMethodSelected:
    """SOCKS5 only: the server picked ``method`` from what the client ``offered`` (§3)."""

    offered: tuple[str, ...]
    method: str
    code: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SocksAuthResult:
    """SOCKS5 only: the outcome of RFC 1929 username/password authentication."""

    user: str
    password_present: bool
    succeeded: bool
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SocksRequest:
    """A client's request: where it asks the proxy to connect (or bind, or relay UDP)."""

    version: int  # 4 or 5
    protocol: str  # "socks4", "socks4a" or "socks5"
    command: str  # "connect", "bind", "udp_associate" or "unknown-N"
    target_host: str | None  # a name (SOCKS4a, or SOCKS5 ATYP 3)
    target_ip: str | None  # an address (SOCKS4, or SOCKS5 ATYP 1 or 4)
    target_port: int
    user: str | None  # SOCKS4 USERID or RFC 1929 UNAME; None when empty or absent
    auth_method: str | None  # SOCKS5 method name (SOCKS5_METHODS); None for SOCKS4
    password_present: bool
    offset: int  # where the request starts in the client's stream


@dataclass(frozen=True, slots=True, kw_only=True)
class SocksReply:
    """The server's reply to a request (for BIND there are two, RFC 1928 §4)."""

    version: int
    code: int
    succeeded: bool
    outcome: str  # Zeek's wording, as in socks.log's ``status``
    bound_host: str | None  # a name (SOCKS5 ATYP 3 only)
    bound_ip: str | None
    bound_port: int
    offset: int


class _Step(enum.Enum):
    """Which message is due next, and from which side."""

    START = (ORIG, "version byte")
    V4_REQUEST = (ORIG, "SOCKS4 request")
    V4_REPLY = (RESP, "SOCKS4 reply")
    V5_GREETING = (ORIG, "SOCKS5 greeting")
    V5_METHOD = (RESP, "SOCKS5 method selection")
    V5_USERPASS = (ORIG, "RFC 1929 request")
    V5_AUTH_STATUS = (RESP, "RFC 1929 status")
    V5_REQUEST = (ORIG, "SOCKS5 request")
    V5_REPLY = (RESP, "SOCKS5 reply")

    @property
    def direction(self) -> int:
        d: int = self.value[0]
        return d


class _StreamState:
    """One direction's unconsumed bytes, ``buf[pos:]``, and its stream offset."""

    __slots__ = ("base", "buf", "pos")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.base = 0

    def compact(self) -> None:
        if self.pos:
            del self.buf[: self.pos]
            self.base += self.pos
            self.pos = 0


# Each message parser takes (buffer, start) and returns (value, end), NEED_DATA when the bytes
# so far are a valid prefix, or a reason string when they cannot be that message.

_V4Request = tuple[int, int, bytes, bytes, bytes | None]  # cmd, port, ip4, userid, hostname


def _cstring(buf: bytearray, start: int, limit: int) -> tuple[bytes, int] | NeedData | str:
    """A NUL-terminated string at ``start`` of at most ``limit`` bytes before the NUL."""
    nul = buf.find(b"\x00", start, start + limit + 1)
    if nul < 0:
        return NEED_DATA if len(buf) - start <= limit else "string without NUL"
    return bytes(buf[start:nul]), nul + 1


def _parse_v4_request(buf: bytearray, i: int) -> tuple[_V4Request, int] | NeedData | str:
    if len(buf) - i < 8:
        return NEED_DATA
    if buf[i] != 4:
        return "not SOCKS4"
    cmd = buf[i + 1]
    port = int.from_bytes(buf[i + 2: i + 4], "big")
    ip4 = bytes(buf[i + 4: i + 8])
    user = _cstring(buf, i + 8, MAX_V4_FIELD)
    if not isinstance(user, tuple):
        return user if isinstance(user, NeedData) else "SOCKS4 USERID too long"
    userid, end = user
    hostname: bytes | None = None
    # SOCKS4A: DSTIP 0.0.0.x with x non-zero means "the host name follows the USERID".
    if ip4[:3] == b"\x00\x00\x00" and ip4[3] != 0:
        host = _cstring(buf, end, MAX_V4_FIELD)
        if not isinstance(host, tuple):
            return host if isinstance(host, NeedData) else "SOCKS4A host name too long"
        hostname, end = host
    return (cmd, port, ip4, userid, hostname), end


def _parse_v4_reply(buf: bytearray, i: int) -> tuple[tuple[int, int, bytes], int] | NeedData | str:
    if len(buf) - i < 8:
        return NEED_DATA
    # VN is 0 in the SOCKS4 note; some servers echo 4. Anything else is not a SOCKS4 reply.
    if buf[i] not in (0, 4):
        return "SOCKS4 reply version is not 0"
    port = int.from_bytes(buf[i + 2: i + 4], "big")
    return (buf[i + 1], port, bytes(buf[i + 4: i + 8])), i + 8


def _parse_address(buf: bytearray, i: int
                   ) -> tuple[tuple[str | None, str | None, int], int] | NeedData | str:
    """ATYP ADDR PORT of RFC 1928 §4/§5 at ``i`` (ATYP included): (name, ip, port), end."""
    if len(buf) - i < 1:
        return NEED_DATA
    atyp = buf[i]
    if atyp == 1:  # IPv4: 4 octets
        n, start = 4, i + 1
    elif atyp == 4:  # IPv6: 16 octets
        n, start = 16, i + 1
    elif atyp == 3:  # domain name: one length octet, then the name, no NUL
        if len(buf) - i < 2:
            return NEED_DATA
        n, start = buf[i + 1], i + 2
    else:
        return f"unknown address type {atyp}"
    end = start + n + 2
    if len(buf) < end:
        return NEED_DATA
    raw = bytes(buf[start: start + n])
    port = int.from_bytes(buf[start + n: end], "big")
    if atyp == 3:
        return (_text(raw), None, port), end
    ip = ipaddress.IPv4Address(raw) if atyp == 1 else ipaddress.IPv6Address(raw)
    return (None, str(ip), port), end


def _parse_v5_greeting(buf: bytearray, i: int) -> tuple[bytes, int] | NeedData | str:
    if len(buf) - i < 2:
        return NEED_DATA
    if buf[i] != 5:
        return "not SOCKS5"
    end = i + 2 + buf[i + 1]
    if len(buf) < end:
        return NEED_DATA
    return bytes(buf[i + 2: end]), end


def _parse_userpass(buf: bytearray, i: int) -> tuple[tuple[bytes, bool], int] | NeedData | str:
    # RFC 1929 §2: VER=1 ULEN UNAME PLEN PASSWD. Some clients wrongly send VER=5.
    if len(buf) - i < 2:
        return NEED_DATA
    if buf[i] not in (1, 5):
        return "RFC 1929 request version is not 1"
    ulen = buf[i + 1]
    if len(buf) - i < 3 + ulen:
        return NEED_DATA
    plen = buf[i + 2 + ulen]
    end = i + 3 + ulen + plen
    if len(buf) < end:
        return NEED_DATA
    return (bytes(buf[i + 2: i + 2 + ulen]), plen > 0), end


def _parse_v5_request(buf: bytearray, i: int
                      ) -> tuple[tuple[int, int, tuple[str | None, str | None, int]], int] \
        | NeedData | str:
    # RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT (RSV should be 0; not checked).
    if len(buf) - i < 3:
        return NEED_DATA
    if buf[i] != 5:
        return "SOCKS5 message version is not 5"
    addr = _parse_address(buf, i + 3)
    if not isinstance(addr, tuple):
        return addr
    return (buf[i], buf[i + 1], addr[0]), addr[1]


class SocksSession:
    """One SOCKS connection; see the module docstring for the message sequence."""

    def __init__(self) -> None:
        self.done = False
        self._streams = (_StreamState(), _StreamState())
        self._step = _Step.START
        self._command = 0
        self._offered: tuple[str, ...] = ()
        self._method: str | None = None
        self._user: str | None = None
        self._password_present = False
        self._replies = 0  # replies seen to the current request (BIND gets two)

    def feed(self, direction: int, data: bytes) -> list[object]:
        if direction != ORIG and direction != RESP:
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        if self.done or not data:
            return []
        self._streams[direction].buf += data
        events: list[object] = []
        # Run the cursor as far as the buffered bytes allow; a message in one direction can
        # release bytes already waiting in the other.
        while not self.done and self._advance(events):
            pass
        for d, st in enumerate(self._streams):
            st.compact()
            if not self.done and len(st.buf) > MAX_BUFFER:
                self._fail(events, d, st.base, "more than 64 KiB sent out of turn")
        return events

    def _fail(self, events: list[object], direction: int, offset: int, reason: str) -> None:
        events.append(Malformed(direction=direction, offset=offset, reason=reason))
        self.done = True

    def _advance(self, events: list[object]) -> bool:
        """Try to parse the message that is due; True if the cursor moved."""
        step = self._step
        st = self._streams[step.direction]
        buf, i = st.buf, st.pos
        offset = st.base + i
        if step is _Step.START:
            if len(buf) <= i:
                return False
            if buf[i] == 4:
                self._step = _Step.V4_REQUEST
            elif buf[i] == 5:
                self._step = _Step.V5_GREETING
            else:
                self._fail(events, ORIG, offset, "first byte is not SOCKS version 4 or 5")
                return False
            return True

        if step is _Step.V4_REQUEST:
            r4 = _parse_v4_request(buf, i)
            if not isinstance(r4, tuple):
                return self._no_message(r4, events, offset)
            st.pos = r4[1]
            self._on_v4_request(r4[0], offset, events)
        elif step is _Step.V4_REPLY:
            p4 = _parse_v4_reply(buf, i)
            if not isinstance(p4, tuple):
                return self._no_message(p4, events, offset)
            st.pos = p4[1]
            self._on_v4_reply(p4[0], offset, events)
        elif step is _Step.V5_GREETING:
            g = _parse_v5_greeting(buf, i)
            if not isinstance(g, tuple):
                return self._no_message(g, events, offset)
            st.pos = g[1]
            self._offered = tuple(_method_name(m) for m in g[0])
            self._step = _Step.V5_METHOD
        elif step is _Step.V5_METHOD or step is _Step.V5_AUTH_STATUS:
            # Both are two octets: VER and METHOD (RFC 1928 §3) or STATUS (RFC 1929 §2).
            if len(buf) - i < 2:
                return False
            st.pos = i + 2
            if step is _Step.V5_METHOD:
                self._on_v5_method(buf[i], buf[i + 1], offset, events)
            else:
                self._on_v5_auth_status(buf[i + 1], events)
        elif step is _Step.V5_USERPASS:
            u = _parse_userpass(buf, i)
            if not isinstance(u, tuple):
                return self._no_message(u, events, offset)
            st.pos = u[1]
            self._user = _text(u[0][0])
            self._password_present = u[0][1]
            self._step = _Step.V5_AUTH_STATUS
        else:
            # The request (§4) and the reply (§6) share one layout.
            r5 = _parse_v5_request(buf, i)
            if not isinstance(r5, tuple):
                return self._no_message(r5, events, offset)
            st.pos = r5[1]
            if step is _Step.V5_REQUEST:
                self._on_v5_request(r5[0], offset, events)
            else:
                self._on_v5_reply(r5[0], offset, events)
        return not self.done

    def _no_message(self, outcome: NeedData | str, events: list[object], offset: int) -> bool:
        if isinstance(outcome, str):
            self._fail(events, self._step.direction, offset, outcome)
        return False

    # -- SOCKS4 ---------------------------------------------------------------------------

    def _on_v4_request(self, value: _V4Request, offset: int, events: list[object]) -> None:
        cmd, port, ip4, userid, hostname = value
        self._command = cmd
        events.append(SocksRequest(
            version=4, protocol="socks4" if hostname is None else "socks4a",
            command=_COMMANDS[cmd] if cmd in (_CONNECT, _BIND) else f"unknown-{cmd}",
            target_host=None if hostname is None else _text(hostname),
            target_ip=str(ipaddress.IPv4Address(ip4)) if hostname is None else None,
            target_port=port, user=_text(userid) or None, auth_method=None,
            password_present=False, offset=offset))
        self._step = _Step.V4_REPLY

    def _on_v4_reply(self, value: tuple[int, int, bytes], offset: int,
                     events: list[object]) -> None:
        code, port, ip4 = value
        ok = code == 0x5A
        events.append(SocksReply(
            version=4, code=code, succeeded=ok, outcome=_status_name(SOCKS4_STATUS, code),
            bound_host=None, bound_ip=str(ipaddress.IPv4Address(ip4)), bound_port=port,
            offset=offset))
        self._after_reply(ok, events)

    # -- SOCKS5 ---------------------------------------------------------------------------

    def _on_v5_method(self, ver: int, code: int, offset: int, events: list[object]) -> None:
        if ver != 5:
            self._fail(events, RESP, offset, "SOCKS5 method selection version is not 5")
            return
        self._method = _method_name(code)
        events.append(SocksMethodSelected(offered=self._offered, method=self._method,
                                          code=code))
        if code == 0x00:
            self._step = _Step.V5_REQUEST
        elif code == 0x02:
            self._step = _Step.V5_USERPASS
        else:
            # 0xFF: the server refused every offered method and closes (§3). GSSAPI (RFC 1961)
            # and the rest have their own sub-negotiation, possibly wrapping later messages;
            # we record the method and stop following.
            self.done = True

    def _on_v5_auth_status(self, status: int, events: list[object]) -> None:
        # RFC 1929 says VER=1; servers echoing 5 are common, so VER is not checked.
        ok = status == 0
        events.append(SocksAuthResult(user=self._user or "",
                                      password_present=self._password_present,
                                      succeeded=ok, status=status))
        if ok:
            self._step = _Step.V5_REQUEST
        else:
            self.done = True  # "the server MUST close the connection" (RFC 1929 §2)

    def _on_v5_request(self, value: tuple[int, int, tuple[str | None, str | None, int]],
                       offset: int, events: list[object]) -> None:
        _ver, cmd, (name, ip, port) = value
        self._command = cmd
        events.append(SocksRequest(
            version=5, protocol="socks5", command=_COMMANDS.get(cmd, f"unknown-{cmd}"),
            target_host=name, target_ip=ip, target_port=port, user=self._user or None,
            auth_method=self._method, password_present=self._password_present,
            offset=offset))
        self._step = _Step.V5_REPLY

    def _on_v5_reply(self, value: tuple[int, int, tuple[str | None, str | None, int]],
                     offset: int, events: list[object]) -> None:
        _ver, code, (name, ip, port) = value
        ok = code == 0
        events.append(SocksReply(
            version=5, code=code, succeeded=ok, outcome=_status_name(SOCKS5_STATUS, code),
            bound_host=name, bound_ip=ip, bound_port=port, offset=offset))
        self._after_reply(ok, events)

    def _after_reply(self, ok: bool, events: list[object]) -> None:
        self._replies += 1
        if not ok:
            self.done = True
        elif self._command == _CONNECT or (self._command == _BIND and self._replies == 2):
            # The handshake is over: what each side sent after it is tunnelled payload.
            orig, resp = self._streams
            events.append(TunnelOpened(orig_rest=bytes(orig.buf[orig.pos:]),
                                       resp_rest=bytes(resp.buf[resp.pos:])))
            self.done = True
        elif self._command == _BIND:
            # First BIND reply: the proxy listens at the bound address; a second reply comes
            # when the peer connects (RFC 1928 §4, SOCKS4 note "BIND").
            return
        else:
            self.done = True  # UDP ASSOCIATE or an unknown command: nothing more on this TCP


def looks_like_socks(head: bytes) -> bool:
    """Whether the first bytes a client sent can be a SOCKS4/4a request or SOCKS5 greeting.

    Strict enough for random binary not to pass: SOCKS5 needs ``05 n`` with n >= 1 methods of
    assigned or private values and exactly ``2 + n`` bytes (or a prefix, or the greeting
    followed by the start of a request or RFC 1929 message); SOCKS4 needs ``04`` CONNECT or
    BIND, a non-zero port, and a printable USERID (and 4a host name) ended by NUL within 255
    bytes. A valid prefix counts as a match.
    """
    head = bytes(head[:1024])  # more than a request can need; also accepts a memoryview
    n = len(head)
    if n == 0:
        return True
    if head[0] == 5:
        if n < 2:
            return True
        count = head[1]
        if count == 0:
            return False
        methods = head[2: 2 + count]
        if any(not (m <= 0x09 or 0x80 <= m <= 0xFE) for m in methods):
            return False
        if n <= 2 + count:
            return True
        return head[2 + count] in (1, 5)  # pipelined RFC 1929 message or request
    if head[0] == 4:
        if n < 2:
            return True
        if head[1] not in (_CONNECT, _BIND):
            return False
        if n >= 4 and head[1] == _CONNECT and head[2:4] == b"\x00\x00":
            return False  # CONNECT to port 0
        if n < 8:
            return True
        ip4 = head[4:8]
        end = _sniff_cstring(head, 8)
        if end is None or end < 0:
            return end is None
        if ip4[:3] == b"\x00\x00\x00":
            if ip4[3] == 0:
                return head[1] == _BIND  # 0.0.0.0 only makes sense for BIND
            host_end = _sniff_cstring(head, end)
            if host_end is None or host_end < 0:
                return host_end is None
            return host_end - end > 1  # an empty 4a host name is not a request
        return True
    return False


def _sniff_cstring(head: bytes, start: int) -> int | None:
    """Index after the NUL of a printable string at ``start``; None if it may still come,
    -1 if the bytes cannot be one."""
    for i in range(start, min(len(head), start + _SNIFF_FIELD + 1)):
        b = head[i]
        if b == 0:
            return i + 1
        if b < 0x20 or b == 0x7F:
            return -1
    return None if len(head) - start <= _SNIFF_FIELD else -1
