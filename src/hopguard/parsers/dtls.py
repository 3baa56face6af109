"""DTLS 1.0/1.2/1.3 hellos from UDP datagrams (RFC 6347, RFC 9147), for JA3, JA3S and JA4.

Theory of operation: a DTLS datagram holds one or more records, each with a 13-byte header
(type, version, epoch, 48-bit sequence number, length; RFC 6347 §4.1). Handshake records carry
messages with a 12-byte header that adds ``message_seq`` and the fragment's offset and length
(§4.2.2), because a message may be split over datagrams. The DTLS ClientHello is the TLS one
with a ``cookie`` vector after the session id (§4.2.1); a client sends it twice when the server
answers with a HelloVerifyRequest, the second time with the cookie. Fragments are reassembled
per message (bounded by ``MAX_MESSAGE``); the body then goes through the TLS decoders, the cookie
cut out of the ClientHello first, so fingerprints are computed by the same code as for TLS.

DTLS 1.3 (RFC 9147) encrypts everything after the hellos and uses a unified header for those
records; only the plaintext hellos are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.tls import DecodeError, decode_client_hello, decode_server_hello

# 0x0100: DTLS1_BAD_VER, OpenSSL's pre-RFC DTLS 1.0 that Cisco AnyConnect still speaks.
DTLS_VERSIONS: Final = frozenset({0xFEFF, 0xFEFD, 0xFEFC, 0x0100})
CT_HANDSHAKE: Final = 22
HS_CLIENT_HELLO: Final = 1
HS_SERVER_HELLO: Final = 2
MAX_MESSAGE: Final = 64 * 1024
MAX_DATAGRAMS: Final = 12  # per direction, before giving up on a flow


def looks_like_dtls_client_hello(datagram: bytes) -> bool:
    """A datagram that starts with a DTLS handshake record holding a ClientHello fragment."""
    return (len(datagram) >= 25 and datagram[0] == CT_HANDSHAKE
            and (datagram[1] << 8 | datagram[2]) in DTLS_VERSIONS
            and datagram[13] == HS_CLIENT_HELLO)


@dataclass(slots=True)
class _MessageState:
    length: int
    parts: dict[int, bytes] = field(default_factory=dict)

    def add(self, offset: int, data: bytes) -> bytes | None:
        """Keep one fragment; the whole message once every byte has arrived."""
        self.parts[offset] = data
        have = 0
        for off in sorted(self.parts):
            if off > have:
                return None
            have = max(have, off + len(self.parts[off]))
        if have < self.length:
            return None
        out = bytearray(self.length)
        for off, part in self.parts.items():
            out[off:off + len(part)] = part[: self.length - off]
        return bytes(out)


class DtlsSession:
    """Hellos of one DTLS association, datagram by datagram (see the module docstring)."""

    def __init__(self) -> None:
        self.done = False
        self._pending: tuple[dict[int, _MessageState], dict[int, _MessageState]] = ({}, {})
        self._seen = [0, 0]
        self._hellos = [0, 0]
        self._done: tuple[set[int], set[int]] = (set(), set())  # message_seq already decoded

    def feed(self, direction: int, datagram: bytes) -> list[object]:
        if direction not in (ORIG, RESP):
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        events: list[object] = []
        if self.done:
            return events
        self._seen[direction] += 1
        pos, end = 0, len(datagram)
        while end - pos >= 13:
            ctype = datagram[pos]
            version = datagram[pos + 1] << 8 | datagram[pos + 2]
            length = datagram[pos + 11] << 8 | datagram[pos + 12]
            body = datagram[pos + 13:pos + 13 + length]
            if len(body) < length:
                break  # a cut datagram: nothing more in it
            pos += 13 + length
            if ctype != CT_HANDSHAKE or version not in DTLS_VERSIONS:
                continue  # alerts, CCS, application data, DTLS 1.3 ciphertext
            try:
                self._handshake(direction, body, events)
            except DecodeError as exc:
                events.append(Malformed(direction=direction, offset=pos, reason=str(exc)))
                self.done = True
                return events
        if self._seen[ORIG] + self._seen[RESP] >= 2 * MAX_DATAGRAMS or (
                self._hellos[ORIG] and self._hellos[RESP]):
            self.done = True
        return events

    def _handshake(self, direction: int, body: bytes, events: list[object]) -> None:
        pos = 0
        while len(body) - pos >= 12:
            mtype = body[pos]
            length = int.from_bytes(body[pos + 1:pos + 4], "big")
            seq = body[pos + 4] << 8 | body[pos + 5]
            off = int.from_bytes(body[pos + 6:pos + 9], "big")
            flen = int.from_bytes(body[pos + 9:pos + 12], "big")
            frag = body[pos + 12:pos + 12 + flen]
            if len(frag) < flen or off + flen > length or length > MAX_MESSAGE:
                raise DecodeError(f"handshake fragment {off}+{flen} of {length} does not fit")
            pos += 12 + flen
            if mtype not in (HS_CLIENT_HELLO, HS_SERVER_HELLO):
                continue  # HelloVerifyRequest, certificates ...: not fingerprinted here
            if seq in self._done[direction]:
                continue  # a retransmission (DTLS resends a whole flight on timeout)
            if off == 0 and flen == length:
                message: bytes | None = frag
            else:
                pending = self._pending[direction]
                state = pending.setdefault(seq, _MessageState(length))
                message = state.add(off, frag)
                if message is not None:
                    del pending[seq]
            if message is None:
                continue
            self._done[direction].add(seq)
            if mtype == HS_CLIENT_HELLO and direction == ORIG:
                events.append(decode_client_hello(_without_cookie(message)))
                self._hellos[ORIG] += 1
            elif mtype == HS_SERVER_HELLO and direction == RESP:
                events.append(decode_server_hello(message))
                self._hellos[RESP] += 1


def _without_cookie(body: bytes) -> bytes:
    """A DTLS ClientHello body as the TLS one: drop the cookie vector (RFC 6347 §4.2.1)."""
    if len(body) < 35:
        raise DecodeError("DTLS ClientHello shorter than version, random and session id")
    sid_end = 35 + body[34]
    if len(body) < sid_end + 1:
        raise DecodeError("DTLS ClientHello cut in its cookie")
    cookie_end = sid_end + 1 + body[sid_end]
    if len(body) < cookie_end:
        raise DecodeError("DTLS ClientHello cookie overruns the message")
    return body[:sid_end] + body[cookie_end:]
