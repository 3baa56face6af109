"""HTTP/1.0 and HTTP/1.1 message framing for passive monitoring (RFC 9110, RFC 9112).

Theory of operation
-------------------
An :class:`HttpSession` follows one TCP connection. Each direction has its own framing state
(:class:`_DirState`): the originator's bytes are a sequence of *requests*, the responder's a
sequence of *responses*, each a head (start-line plus header fields, ended by an empty line)
followed by a body whose length the head determines (RFC 9112 §6.3). Bodies are counted and
skipped, never kept: a monitor needs their length, not their content.

The two directions are parsed independently except for three couplings, all of them because a
response cannot be framed without knowing its request (RFC 9112 §6.3 rules 1 and 2):

* a FIFO of the methods of requests not yet answered (pipelining, RFC 9112 §9.3.2): the
  response to ``HEAD`` has no body; the response to ``CONNECT`` may open a tunnel;
* after a ``CONNECT`` request the client must wait for the answer (RFC 9110 §9.3.6), so what
  it sends next is held unparsed: if a 2xx answer comes, those bytes are the first of the
  tunnel and go out in :class:`TunnelOpened`; otherwise they are parsed as further requests;
* a ``101 Switching Protocols`` response (RFC 9110 §15.2.2) ends HTTP on both directions.

Events and when they are emitted
--------------------------------
Both heads are reported as soon as the head is complete, so that a proxy request can be acted
on before its body or its answer arrives (the IPS needs that), and so that a capture which
ends in the middle of a long download still yields the request and its status:

* :class:`HttpRequest` when a request head is complete;
* :class:`HttpResponse` when a response head is complete. Its ``body_len`` is what the head
  declares: ``0`` when the response has no body (answer to HEAD, 1xx, 204, 304, or
  ``Content-Length: 0``), the ``Content-Length`` when given, ``None`` when the length is only
  known later (chunked) or never (read until close);
* :class:`HttpBodyEnded` when the last byte of a body framed by a non-zero Content-Length or
  by chunked coding has been fed; ``body_len`` counts the body after removing the chunked
  framing (as Zeek's ``request_body_len``/``response_body_len`` do);
* :class:`TunnelOpened` after a 2xx answer to CONNECT; the session is then ``done``.

A response whose length is delimited by the connection closing (RFC 9112 §6.3 rule 8) ends
the session (``done``) right after its :class:`HttpResponse`: nothing after it can be framed.
Interim 1xx responses (other than 101) are reported but leave their request unanswered.

Tolerance. Following RFC 9112's robustness advice we accept bare LF as a line terminator
(§2.2), skip empty lines before a request-line (§2.2), unfold obs-fold continuation lines into
one space (§5.2), compare field names case-insensitively (RFC 9110 §5.1) and parse the
request-line on whitespace boundaries (§3). A violation that makes framing impossible (no valid
start-line, contradictory Content-Length, bad chunk size, a head over 64 KiB) is reported as
:class:`Malformed` and ends the session.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Final

from hopguard.parsers.base import MAX_BUFFER, ORIG, RESP, Malformed, TunnelOpened

__all__ = [
    "KNOWN_METHODS",
    "PROXY_HEADERS",
    "HttpBodyEnded",
    "HttpRequest",
    "HttpResponse",
    "HttpSession",
    "looks_like_http_request",
    "looks_like_http_response",
]

# A whole head (start-line, fields, empty line) may be this long: the MAX_BUFFER of base.py.
MAX_HEAD: Final = MAX_BUFFER
# A chunk-size line with its extensions (RFC 9112 §7.1.1); generous, real ones are < 20 bytes.
MAX_CHUNK_LINE: Final = 4096
# Requests sent but not yet answered that we remember (a one-sided capture never answers them).
MAX_PENDING: Final = 1024

# Methods of RFC 9110 §9, RFC 5789 (PATCH) and the WebDAV / CalDAV family (RFC 4918, 4791,
# 3253). Only the sniffer uses this list: the session accepts any token as a method.
KNOWN_METHODS: Final = frozenset({
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"SEARCH",
    b"REPORT", b"MKACTIVITY", b"CHECKOUT", b"MERGE", b"MKCALENDAR", b"SUBSCRIBE",
    b"UNSUBSCRIBE", b"NOTIFY", b"PURGE", b"LINK", b"UNLINK", b"BIND", b"REBIND", b"ACL",
})
_MAX_METHOD_LEN: Final = max(len(m) for m in KNOWN_METHODS)

# Request header fields that reveal a proxy on the path, as Zeek's HTTP::proxy_headers lists
# them; ``HttpRequest.proxied`` holds "NAME -> value" entries like Zeek's http.log.
PROXY_HEADERS: Final = frozenset({
    "FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-FROM", "CLIENT-IP", "VIA",
    "XROXY-CONNECTION", "PROXY-CONNECTION",
})

# tchar of RFC 9110 §5.6.2: a method is a token.
_TCHARS: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                           b"abcdefghijklmnopqrstuvwxyz")
# request-line = method SP request-target SP HTTP-version (RFC 9112 §3), parsed on whitespace
# runs as §3 allows; the target is everything between the first and the last gap, so a target
# with stray spaces (seen from broken clients) still parses.
# The method is at most 32 characters, the bound the early check (``_method_prefix_ok``) uses
# before the line is complete, so a request is judged the same however its bytes are split.
_REQUEST_LINE: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32})[ \t]+(\S(?:.*\S)?)[ \t]+HTTP/(\d)\.(\d)[ \t]*")
# status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4); a missing SP
# before an empty reason is common and tolerated.
_STATUS_LINE: Final = re.compile(rb"HTTP/(\d)\.(\d)[ \t]+(\d{3})(?:[ \t]+(.*))?")
# absolute-form target (RFC 9112 §3.2.2): scheme "://" authority ... ; the same test Zeek-based
# rows use for is_proxy_request.
_ABSOLUTE: Final = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)")
_DIGEST_USER: Final = re.compile(r'(?i)\busername\s*=\s*"((?:[^"\\]|\\.)*)"')
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_DEFAULT_PORTS: Final = {b"http": 80, b"https": 443, b"ws": 80, b"wss": 443, b"ftp": 21}


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """A request head (RFC 9112 §3 and §5). Text fields are UTF-8 with ``\\xHH`` escapes for
    undecodable bytes, as Zeek's logs read back; header-derived fields hold the first
    occurrence of that field, ``None`` when absent."""

    method: str
    uri: str  # the request-target as sent
    version: str  # "1.1" (Zeek's http.log shows the reply's version once there is one)
    host: str | None  # the Host field as sent (may carry a port, as in Zeek)
    user_agent: str | None
    referrer: str | None
    via: str | None
    forwarded: str | None
    x_forwarded_for: str | None
    proxied: tuple[str, ...]  # "NAME -> value" for each proxy-revealing field, in order
    is_proxy_request: bool  # CONNECT, or a target in absolute-form (RFC 9112 §3.2.2)
    target_host: str | None  # for proxy requests: the host the client asks the proxy for
    target_port: int | None  # its port (the scheme's default port for absolute-form)
    proxy_authorization_user: str | None  # from Basic or Digest Proxy-Authorization
    content_length: int | None  # declared; None when absent or chunked
    offset: int  # where the request-line starts in the originator's stream


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    """A response head (RFC 9112 §4); ``body_len`` as the module docstring explains."""

    status: int
    reason: str
    version: str
    content_type: str | None  # media type of Content-Type, lower-cased, without parameters
    body_len: int | None
    offset: int  # where the status-line starts in the responder's stream


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpBodyEnded:
    """The body of the last reported message in ``direction`` is complete."""

    direction: int
    body_len: int
    offset: int  # stream offset just past the message (past the trailer for chunked)


class _Phase(enum.Enum):
    HEAD = "head"  # expecting (or inside) a start-line and header section
    BODY = "body"  # Content-Length body: ``remaining`` bytes to skip
    CHUNK_SIZE = "chunk-size"  # expecting a chunk-size line (RFC 9112 §7.1)
    CHUNK_DATA = "chunk-data"  # inside chunk-data: ``remaining`` bytes to skip
    CHUNK_END = "chunk-end"  # expecting the CRLF that closes chunk-data
    TRAILER = "trailer"  # after last-chunk: trailer fields until an empty line (§7.1.2)
    HOLD = "hold"  # after CONNECT: keep the client's bytes unparsed until the answer


class _DirState:
    """Framing state of one direction; ``buf[pos:]`` is what is not yet consumed."""

    __slots__ = ("base", "body_len", "buf", "phase", "pos", "remaining", "scan")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # next unconsumed byte in buf
        self.base = 0  # stream offset of buf[0]
        self.phase = _Phase.HEAD
        self.remaining = 0  # body or chunk bytes still to skip
        self.body_len = 0  # body bytes counted so far in the current message
        # While in HEAD or TRAILER: offset from ``pos`` at which the next unread line starts,
        # so a head fed one byte at a time is scanned once, not once per byte.
        self.scan = 0

    def offset(self) -> int:
        """Stream offset of the next unconsumed byte."""
        return self.base + self.pos

    def compact(self) -> None:
        # CPython deletes a bytearray's prefix by moving its start pointer: no copy.
        if self.pos:
            del self.buf[: self.pos]
            self.base += self.pos
            self.pos = 0


class _Fields:
    """Header fields of one head, names lower-cased (RFC 9110 §5.1: case-insensitive)."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[bytes, bytes]]) -> None:
        self.items = items

    def first(self, name: bytes) -> bytes | None:
        for n, v in self.items:
            if n == name:
                return v
        return None

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.items if n == name]


def _text(raw: bytes) -> str:
    # Zeek's ASCII writer escapes undecodable bytes as \xHH and hopguard's Zeek reader decodes
    # with backslashreplace; decoding captured bytes the same way makes the two sources agree.
    return raw.decode("utf-8", "backslashreplace")


def _opt_text(raw: bytes | None) -> str | None:
    return None if raw is None else _text(raw)


def _split_lines(head: bytes) -> list[bytes]:
    # Lines end in CRLF or, tolerated (RFC 9112 §2.2), a bare LF. A bare CR inside a line is
    # left alone: §2.2 lets us replace it with SP, but it changes nothing we extract.
    lines = head.split(b"\n")
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def _parse_fields(lines: list[bytes]) -> _Fields:
    """field-line = field-name ":" OWS field-value OWS (RFC 9112 §5), tolerantly."""
    names: list[bytes] = []
    values: list[list[bytes]] = []  # a value and its obs-fold continuations, joined at the end
    for line in lines:
        if not line:
            continue
        if line[0] in b" \t":
            # obs-fold (RFC 9112 §5.2): a continuation of the previous field's value, replaced
            # by one SP. Whitespace-led lines right after the start-line (§2.2) are ignored.
            if values:
                values[-1].append(line.strip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        name = name.strip(b" \t")
        # A line without a colon is not a field; senders that emit one are broken but the
        # rest of the head is usually fine, so skip it rather than give up on the connection.
        # Whitespace before the colon (forbidden by §5.1) is likewise tolerated.
        if not colon or not name:
            continue
        names.append(name.lower())
        values.append([value.strip(b" \t")])
    return _Fields([(n, b" ".join(v)) for n, v in zip(names, values, strict=True)])


def _content_length(fields: _Fields) -> int | str | None:
    """The Content-Length (RFC 9110 §8.6), ``None`` if absent, or a reason string if invalid.

    Several fields or a list are allowed only if every member is the same number (RFC 9112
    §6.3 rule 5); anything else could be a request-smuggling attempt and makes framing unsafe.
    """
    values = fields.values(b"content-length")
    if not values:
        return None
    seen: set[bytes] = set()
    for v in values:
        for part in v.split(b","):
            part = part.strip(b" \t")
            if not part.isdigit() or len(part) > 18:
                return "invalid Content-Length"
            seen.add(part.lstrip(b"0") or b"0")
    if len(seen) != 1:
        return "conflicting Content-Length values"
    return int(seen.pop())


def _transfer_codings(fields: _Fields) -> list[bytes]:
    codings: list[bytes] = []
    for v in fields.values(b"transfer-encoding"):
        codings.extend(c.strip(b" \t").split(b";")[0].strip(b" \t").lower()
                       for c in v.split(b",") if c.strip(b" \t"))
    return codings


def _split_authority(authority: bytes) -> tuple[bytes, int | None]:
    """host and port of ``[userinfo@]host[:port]`` (RFC 3986 §3.2), IPv6 literals unbracketed."""
    authority = authority.rpartition(b"@")[2]
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end > 0:
            host, rest = authority[1:end], authority[end + 1:]
            port_raw = rest[1:] if rest.startswith(b":") else b""
            return host, int(port_raw) if port_raw.isdigit() and len(port_raw) <= 5 else None
    host, colon, port_raw = authority.rpartition(b":")
    if colon and port_raw.isdigit() and len(port_raw) <= 5:
        return host, int(port_raw)
    return authority, None


def _proxy_user(value: bytes | None) -> str | None:
    """The user name in a Proxy-Authorization field (RFC 9110 §11.7.2).

    Basic (RFC 7617) carries base64("user:password"): only the user is kept, never the
    password. Digest (RFC 7616) names the user in its ``username`` parameter.
    """
    if value is None:
        return None
    scheme, _, rest = value.strip().partition(b" ")
    scheme = scheme.lower()
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return _text(decoded.partition(b":")[0])
    if scheme == b"digest":
        m = _DIGEST_USER.search(_text(rest))
        return m.group(1) if m else None
    return None


def _media_type(value: bytes | None) -> str | None:
    # Content-Type = type "/" subtype *( OWS ";" OWS parameter ) (RFC 9110 §8.3); Zeek logs a
    # bare media type (sniffed from the body), so parameters are dropped to make rows agree.
    if value is None:
        return None
    media = value.split(b";")[0].strip(b" \t").lower()
    return _text(media) if media else None


def looks_like_http_request(head: bytes) -> bool:
    """Whether ``head`` (the first bytes an originator sent) can start an HTTP/1 request.

    True for a known method followed by a space, and for any prefix of one (the caller may not
    have more bytes yet); False only when the bytes clearly are something else. Empty lines
    before the request line are skipped, as the session does (RFC 9112 §2.2).
    """
    # bytes() also accepts a memoryview; the bound keeps a long run of stray EOLs cheap
    head = bytes(head[:256]).lstrip(b"\r\n")[: _MAX_METHOD_LEN + 1]
    sp = head.find(b" ")
    if sp >= 0:
        return head[:sp] in KNOWN_METHODS
    if len(head) > _MAX_METHOD_LEN:
        return False
    return any(m.startswith(head) for m in KNOWN_METHODS)


def looks_like_http_response(head: bytes) -> bool:
    """Whether ``head`` can start an HTTP/1 status-line (or is a prefix of ``HTTP/``)."""
    n = min(len(head), 5)
    return bytes(head[:n]) == b"HTTP/"[:n]


class HttpSession:
    """One HTTP/1.x connection; see the module docstring for the events and their timing.

    A :class:`Malformed` names the direction at fault, which is not always the one just fed:
    client bytes held after a CONNECT are parsed when the refusal arrives.
    """

    def __init__(self) -> None:
        self.done = False
        self._dirs = (_DirState(), _DirState())
        # Methods of requests not yet answered, oldest first (RFC 9112 §9.3.2).
        self._pending: deque[bytes] = deque(maxlen=MAX_PENDING)

    def feed(self, direction: int, data: bytes) -> list[object]:
        if direction != ORIG and direction != RESP:
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        if self.done or not data:
            return []
        st = self._dirs[direction]
        st.buf += data
        events: list[object] = []
        if direction == ORIG:
            self._run_orig(events)
        else:
            self._run_resp(events)
        return events

    # -- shared framing -------------------------------------------------------------------

    def _fail(self, events: list[object], direction: int, offset: int, reason: str) -> None:
        events.append(Malformed(direction=direction, offset=offset, reason=reason))
        self.done = True

    def _scan_head(self, st: _DirState, start_line: re.Pattern[bytes] | None = None,
                   what: str = "") -> int | str | None:
        """Find the empty line that ends a head (or a trailer section) starting at ``st.pos``.

        Returns the index just past it, ``None`` if more bytes are needed, or a reason string
        when the section exceeds MAX_HEAD or its first line does not match ``start_line``.
        For a head (``start_line`` given) empty lines before the first line are consumed
        (RFC 9112 §2.2: a server SHOULD ignore at least one CRLF before a request-line;
        clients add one after a POST body), and the start-line is checked as soon as it is
        complete, so that a stream which is not HTTP is rejected without waiting for 64 KiB.
        """
        buf = st.buf
        while True:
            start = st.pos + st.scan
            nl = buf.find(b"\n", start)
            if nl < 0:
                if len(buf) - st.pos > MAX_HEAD:
                    return "header section longer than 64 KiB"
                return None
            # The size check comes first so that the outcome is the same whether a long line
            # arrived whole or in pieces (then the check above fires first).
            if nl + 1 - st.pos > MAX_HEAD:
                return "header section longer than 64 KiB"
            end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl
            if end == start:  # an empty line
                if st.scan == 0 and start_line is not None:
                    st.pos = nl + 1
                    continue
                st.scan = 0
                return nl + 1
            if st.scan == 0 and start_line is not None and \
                    start_line.fullmatch(bytes(buf[start:end])) is None:
                return f"invalid {what}"
            st.scan = nl + 1 - st.pos

    def _skip_body(self, st: _DirState) -> None:
        n = min(st.remaining, len(st.buf) - st.pos)
        st.pos += n
        st.remaining -= n
        st.body_len += n

    def _run_body(self, st: _DirState, direction: int, events: list[object]) -> bool:
        """Advance one body phase; True if it made progress (a phase change or bytes)."""
        buf = st.buf
        if st.phase is _Phase.BODY:
            if st.pos == len(buf):
                return False
            self._skip_body(st)
            if st.remaining == 0:
                events.append(HttpBodyEnded(direction=direction, body_len=st.body_len,
                                            offset=st.offset()))
                st.phase = _Phase.HEAD
            return True
        if st.phase is _Phase.CHUNK_SIZE:
            # chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF (RFC 9112 §7.1)
            nl = buf.find(b"\n", st.pos)
            if (nl if nl >= 0 else len(buf)) - st.pos > MAX_CHUNK_LINE:
                self._fail(events, direction, st.offset(), "chunk-size line too long")
                return False
            if nl < 0:
                return False
            size_raw = bytes(buf[st.pos:nl]).split(b";", 1)[0].strip(b" \t\r")
            if not size_raw or len(size_raw) > 16 or not _HEX.issuperset(size_raw):
                self._fail(events, direction, st.offset(), "invalid chunk size")
                return False
            st.pos = nl + 1
            size = int(size_raw, 16)
            if size == 0:
                # last-chunk: trailer-section follows, ended by an empty line (§7.1.2).
                st.phase, st.scan = _Phase.TRAILER, 0
            else:
                st.phase, st.remaining = _Phase.CHUNK_DATA, size
            return True
        if st.phase is _Phase.CHUNK_DATA:
            if st.pos == len(buf):
                return False
            self._skip_body(st)
            if st.remaining == 0:
                st.phase = _Phase.CHUNK_END
            return True
        if st.phase is _Phase.CHUNK_END:
            avail = len(buf) - st.pos
            if avail == 0:
                return False
            if buf[st.pos] == 0x0A:  # bare LF, tolerated like everywhere else
                st.pos += 1
            elif buf[st.pos] == 0x0D:
                if avail < 2:
                    return False
                if buf[st.pos + 1] != 0x0A:
                    self._fail(events, direction, st.offset(), "chunk-data not followed by CRLF")
                    return False
                st.pos += 2
            else:
                self._fail(events, direction, st.offset(), "chunk-data longer than its size")
                return False
            st.phase = _Phase.CHUNK_SIZE
            return True
        if st.phase is _Phase.TRAILER:
            end = self._scan_head(st)
            if isinstance(end, str):
                self._fail(events, direction, st.offset(), "trailer section longer than 64 KiB")
                return False
            if end is None:
                return False
            st.pos = end
            events.append(HttpBodyEnded(direction=direction, body_len=st.body_len,
                                        offset=st.offset()))
            st.phase = _Phase.HEAD
            return True
        return False

    # -- requests (originator) ------------------------------------------------------------

    def _run_orig(self, events: list[object]) -> None:
        st = self._dirs[ORIG]
        while not self.done:
            if st.phase is _Phase.HOLD:
                # Bytes after a CONNECT wait for its answer; they may be the tunnel's first.
                if len(st.buf) - st.pos > MAX_BUFFER:
                    self._fail(events, ORIG, st.offset(),
                               "more than 64 KiB sent before the CONNECT answer")
                break
            if st.phase is _Phase.HEAD:
                if not self._request_head(st, events):
                    break
            elif not self._run_body(st, ORIG, events):
                break
        st.compact()

    def _request_head(self, st: _DirState, events: list[object]) -> bool:
        end = self._scan_head(st, _REQUEST_LINE, "request-line")
        if end is None:
            # Reject a non-HTTP stream early instead of buffering 64 KiB of it: the method
            # is a token and must be followed by whitespace soon.
            if st.scan == 0 and not self._method_prefix_ok(st):
                self._fail(events, ORIG, st.offset(), "invalid request-line")
            return False
        if isinstance(end, str):
            self._fail(events, ORIG, st.offset(), end)
            return False
        start = st.pos
        lines = _split_lines(bytes(st.buf[start:end]))
        m = _REQUEST_LINE.fullmatch(lines[0])
        if m is None:
            self._fail(events, ORIG, st.offset(), "invalid request-line")
            return False
        method, target, major = m.group(1), m.group(2), m.group(3)
        if major != b"1":
            # "PRI * HTTP/2.0" is the HTTP/2 connection preface (RFC 9113 §3.4).
            self._fail(events, ORIG, st.offset(), f"HTTP/{_text(major)} is not HTTP/1")
            return False
        fields = _parse_fields(lines[1:])
        length = _content_length(fields)
        if isinstance(length, str):
            self._fail(events, ORIG, st.offset(), length)
            return False
        codings = _transfer_codings(fields)
        chunked = bool(codings) and codings[-1] == b"chunked"
        if codings and not chunked:
            # RFC 9112 §6.3 rule 4: a request whose final coding is not chunked has no
            # determinable length; servers answer 400 and close, so do we.
            self._fail(events, ORIG, st.offset(), "request Transfer-Encoding is not chunked")
            return False

        is_connect = method == b"CONNECT"
        target_host: bytes | None = None
        target_port: int | None = None
        absolute = _ABSOLUTE.match(target)
        if is_connect:
            # authority-form (RFC 9112 §3.2.3): host:port only.
            target_host, target_port = _split_authority(target)
        elif absolute is not None:
            # absolute-form (§3.2.2): what a client sends to a forward proxy.
            target_host, target_port = _split_authority(absolute.group(2))
            if target_port is None:
                target_port = _DEFAULT_PORTS.get(absolute.group(1).lower())
        proxied = tuple(
            f"{n_up} -> {_text(v)}" for n, v in fields.items
            if (n_up := _text(n).upper()) in PROXY_HEADERS)
        events.append(HttpRequest(
            method=_text(method), uri=_text(target), version=f"1.{_text(m.group(4))}",
            host=_opt_text(fields.first(b"host")),
            user_agent=_opt_text(fields.first(b"user-agent")),
            referrer=_opt_text(fields.first(b"referer")),
            via=_opt_text(fields.first(b"via")),
            forwarded=_opt_text(fields.first(b"forwarded")),
            x_forwarded_for=_opt_text(fields.first(b"x-forwarded-for")),
            proxied=proxied,
            is_proxy_request=is_connect or absolute is not None,
            target_host=_opt_text(target_host) if target_host else None,
            target_port=target_port,
            proxy_authorization_user=_proxy_user(fields.first(b"proxy-authorization")),
            content_length=None if chunked else length,
            offset=st.offset(),
        ))
        st.pos = end
        st.body_len = 0
        self._pending.append(method)
        if is_connect:
            # A CONNECT request's content has no defined meaning (RFC 9110 §9.3.6) and the
            # client waits for the answer: hold what follows.
            st.phase = _Phase.HOLD
        elif chunked:
            st.phase = _Phase.CHUNK_SIZE
        elif length:
            st.phase, st.remaining = _Phase.BODY, length
        # A request without Content-Length or Transfer-Encoding has no body (§6.3 rule 7).
        return True

    def _method_prefix_ok(self, st: _DirState) -> bool:
        window = st.buf[st.pos: st.pos + 33]
        if window == b"\r":  # the start of an empty line before the request-line
            return True
        for i, b in enumerate(window):
            if b in b" \t":
                return i > 0
            if b not in _TCHARS:
                return False
        return len(window) <= 32  # still no SP: more than 32 tchars is no method we accept

    # -- responses (responder) ------------------------------------------------------------

    def _run_resp(self, events: list[object]) -> None:
        st = self._dirs[RESP]
        while not self.done:
            if st.phase is _Phase.HEAD:
                if not self._response_head(st, events):
                    break
            elif not self._run_body(st, RESP, events):
                break
        st.compact()

    def _response_head(self, st: _DirState, events: list[object]) -> bool:
        end = self._scan_head(st, _STATUS_LINE, "status-line")
        if end is None:
            if st.scan == 0:
                window = st.buf[st.pos: st.pos + 5]
                if window != b"\r" and window != b"HTTP/"[: len(window)]:
                    self._fail(events, RESP, st.offset(), "invalid status-line")
            return False
        if isinstance(end, str):
            self._fail(events, RESP, st.offset(), end)
            return False
        lines = _split_lines(bytes(st.buf[st.pos:end]))
        m = _STATUS_LINE.fullmatch(lines[0])
        if m is None or m.group(1) != b"1":
            self._fail(events, RESP, st.offset(), "invalid status-line")
            return False
        status = int(m.group(3))
        fields = _parse_fields(lines[1:])
        length = _content_length(fields)
        codings = _transfer_codings(fields)
        method = self._pending[0] if self._pending else b"GET"  # answer to an unseen request
        offset = st.offset()
        st.pos = end
        st.body_len = 0

        def response(body_len: int | None) -> HttpResponse:
            return HttpResponse(status=status, reason=_text((m.group(4) or b"").strip(b" \t")),
                                version=f"1.{_text(m.group(2))}",
                                content_type=_media_type(fields.first(b"content-type")),
                                body_len=body_len, offset=offset)

        if 100 <= status < 200:
            # 1xx responses are interim and have no body (RFC 9110 §15.2); the request is
            # still waiting for its final answer. 101 switches protocols: HTTP ends here.
            events.append(response(0))
            if status == 101:
                self.done = True
            return True
        if self._pending:
            self._pending.popleft()
        resume_orig = False
        if method == b"CONNECT":
            orig = self._dirs[ORIG]
            if 200 <= status < 300:
                # The tunnel is open right after the head; a 2xx answer to CONNECT has no
                # content whatever its fields say (RFC 9110 §9.3.6).
                events.append(response(0))
                events.append(TunnelOpened(orig_rest=bytes(orig.buf[orig.pos:]),
                                           resp_rest=bytes(st.buf[st.pos:])))
                self.done = True
                return False
            # Refused: the client's held bytes are requests after all. The refusal itself
            # may carry a body (a 407 page), framed below as usual.
            if orig.phase is _Phase.HOLD:
                orig.phase = _Phase.HEAD
                resume_orig = True
        if method == b"HEAD" or status in (204, 304):
            # RFC 9112 §6.3 rule 1: never a body, whatever the fields say.
            events.append(response(0))
        elif codings and codings[-1] == b"chunked":
            events.append(response(None))
            st.phase = _Phase.CHUNK_SIZE
        elif isinstance(length, str):
            self._fail(events, RESP, offset, length)
            return False
        elif codings or length is None:
            # §6.3 rules 4 and 8: the body runs until the connection closes; nothing after it
            # can be framed, so the session ends here.
            events.append(response(None))
            self.done = True
        else:
            events.append(response(length))
            if length:
                st.phase, st.remaining = _Phase.BODY, length
        if resume_orig and not self.done:
            self._run_orig(events)
        return not self.done
