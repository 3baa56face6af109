"""QUIC client Initial decryption: the ClientHello of a QUIC connection, for SNI and JA4.

Theory of operation
-------------------
QUIC (RFC 9000) carries the TLS 1.3 handshake in CRYPTO frames inside *Initial* packets. Initial
packets are encrypted, but with keys anyone can derive (RFC 9001 §5.2): HKDF-Extract of a
per-version public salt and the Destination Connection ID (DCID) of the client's first Initial
packet, then HKDF-Expand-Label ("client in", then "quic key" / "quic iv" / "quic hp"). So a
passive observer can read the ClientHello, which is what :class:`QuicSession` does:

1. ``feed(ORIG, datagram)`` walks the datagram's coalesced packets (RFC 9000 §12.2). Long-header
   packets carry a Length field, so each one can be skipped or cut out; a short-header packet
   runs to the end of the datagram and is 1-RTT data we cannot read, which ends the walk.
2. For each Initial packet it removes header protection (RFC 9001 §5.4: AES-ECB of a 16-byte
   ciphertext sample gives a mask over the low bits of the first byte and the packet number),
   rebuilds the full packet number (RFC 9000 §A.3), then opens the AES-128-GCM payload
   (RFC 9001 §5.3) with the packet header as associated data.
3. The plaintext is a sequence of frames. Initial packets may only hold PADDING, PING, ACK,
   CRYPTO and CONNECTION_CLOSE (RFC 9000 §12.4, Table 3); anything else is a protocol
   violation. CRYPTO frames carry (offset, data) of the handshake byte stream; a large
   ClientHello (post-quantum key shares) spans several packets and datagrams, and clients such
   as Chrome deliberately scatter and reorder the pieces. :class:`_CryptoStreamState`
   reassembles the stream by offset, bounded at ``MAX_CRYPTO`` (64 KiB).
4. Once the stream's first handshake message is complete, it is decoded with
   :func:`hopguard.parsers.tls.decode_client_hello` and returned as the same
   :class:`~hopguard.parsers.tls.ClientHello` event a TCP session gives (call ``ja4("q")``).
   The session is then ``done``.

The keys come from the client's *first* Initial's DCID and stay the same for every later client
Initial, even after the client switches to the server-chosen connection ID. Only a Retry
changes them (RFC 9001 §5.2); a packet that fails to open with the current keys is retried with
keys from its own DCID before it is reported as :class:`~hopguard.parsers.base.Malformed`.

Versions: QUIC v1 (RFC 9001), v2 (RFC 9369: another salt, "quicv2 ..." labels, and the long
header packet types rotated so that Initial is 0b01), and IETF drafts 23 to 34 (their salts are
in the drafts; drafts 33 and 34 already use v1's). Server datagrams (RESP) are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.tls import HS_CLIENT_HELLO, DecodeError, decode_client_hello

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MAX_CRYPTO",
    "QUIC_V1",
    "QUIC_V2",
    "InitialKeys",
    "QuicSession",
    "initial_keys",
    "looks_like_quic_initial",
]

QUIC_V1: Final = 0x00000001
QUIC_V2: Final = 0x6B3343CF

#: The most CRYPTO stream bytes we reassemble before the ClientHello must be complete.
MAX_CRYPTO: Final = 64 * 1024
#: Distinct gaps the CRYPTO reassembly tolerates; more means deliberate fragmentation.
MAX_CRYPTO_RANGES: Final = 64
#: RFC 9000 §14.1: a client pads every datagram carrying an Initial to at least 1200 bytes.
MIN_INITIAL_DATAGRAM: Final = 1200

_SALT_V1: Final = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 §5.2
_SALT_V2: Final = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")  # RFC 9369 §3.3.1
_SALT_D29: Final = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")  # drafts 29-32
_SALT_D23: Final = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")  # drafts 23-28


@dataclass(frozen=True, slots=True, kw_only=True)
class _Version:
    salt: bytes
    label_prefix: bytes  # b"quic " (v1, drafts) or b"quicv2 " (RFC 9369 §3.3.2)
    initial_type: int  # long header packet type of Initial: 0b00, or 0b01 in v2 (§3.2)


_V1_PARAMS: Final = _Version(salt=_SALT_V1, label_prefix=b"quic ", initial_type=0)


def _versions() -> dict[int, _Version]:
    table = {
        QUIC_V1: _V1_PARAMS,
        QUIC_V2: _Version(salt=_SALT_V2, label_prefix=b"quicv2 ", initial_type=1),
    }
    for draft in range(23, 35):  # draft-ietf-quic-transport-NN is version 0xff0000NN
        salt = _SALT_D23 if draft <= 28 else _SALT_D29 if draft <= 32 else _SALT_V1
        table[0xFF000000 | draft] = _Version(salt=salt, label_prefix=b"quic ", initial_type=0)
    return table


_VERSIONS: Final = _versions()

# Frame types allowed in Initial packets (RFC 9000 §12.4, Table 3).
_FRAME_PADDING: Final = 0x00
_FRAME_PING: Final = 0x01
_FRAME_ACK: Final = 0x02
_FRAME_ACK_ECN: Final = 0x03
_FRAME_CRYPTO: Final = 0x06
_FRAME_CONNECTION_CLOSE: Final = 0x1C

_U32: Final = struct.Struct(">I")


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label with an empty context (RFC 8446 §7.1), SHA-256, as QUIC uses it."""
    full = b"tls13 " + label
    info = struct.pack(">HB", length, len(full)) + full + b"\x00"
    out = b""
    block = b""
    counter = 1
    while len(out) < length:  # HKDF-Expand (RFC 5869 §2.3)
        block = hmac.new(secret, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@dataclass(frozen=True, slots=True, kw_only=True)
class InitialKeys:
    """Initial packet protection keys for one side (RFC 9001 §5.2): AEAD key, IV, HP key."""

    key: bytes
    iv: bytes
    hp: bytes


def initial_keys(version: int, dcid: bytes, *, server: bool = False) -> InitialKeys | None:
    """The client's (or with ``server=True`` the server's) Initial keys for ``dcid``, the
    Destination Connection ID of the client's first Initial; None for an unknown version."""
    params = _VERSIONS.get(version)
    if params is None:
        return None
    initial_secret = hmac.new(params.salt, dcid, hashlib.sha256).digest()  # HKDF-Extract
    secret = _expand_label(initial_secret, b"server in" if server else b"client in", 32)
    prefix = params.label_prefix
    return InitialKeys(
        key=_expand_label(secret, prefix + b"key", 16),
        iv=_expand_label(secret, prefix + b"iv", 12),
        hp=_expand_label(secret, prefix + b"hp", 16),
    )


class _Opener:
    """Ready-to-use primitives for one set of client Initial keys."""

    __slots__ = ("aead", "dcid", "hp", "iv")

    def __init__(self, keys: InitialKeys, dcid: bytes) -> None:
        # Imported here: cryptography's import is costly and most flows never need it.
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.dcid = dcid
        self.iv = int.from_bytes(keys.iv, "big")
        self.aead: AESGCM = AESGCM(keys.key)
        # AES-ECB on one block is the header-protection mask (RFC 9001 §5.4.3); ECB is right
        # here, it is used as a pseudorandom function, not to encrypt data.
        self.hp: Cipher[modes.ECB] = Cipher(algorithms.AES(keys.hp), modes.ECB())

    def mask(self, sample: bytes) -> bytes:
        encryptor = self.hp.encryptor()
        return encryptor.update(sample) + encryptor.finalize()


# --------------------------------------------------------------------------------------------
# Wire helpers
# --------------------------------------------------------------------------------------------


class _Truncated(Exception):
    """A field runs past the end of its packet or frame (internal; becomes Malformed)."""


def _varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """A variable-length integer at ``pos`` (RFC 9000 §16): the two high bits of the first
    byte give its length, 1, 2, 4 or 8 bytes. Returns (value, next position)."""
    if pos >= end:
        raise _Truncated("variable-length integer")
    first = buf[pos]
    size = 1 << (first >> 6)
    if pos + size > end:
        raise _Truncated("variable-length integer")
    value = first & 0x3F
    for i in range(pos + 1, pos + size):
        value = (value << 8) | buf[i]
    return value, pos + size


def _decode_packet_number(truncated: int, bits: int, largest: int) -> int:
    """RFC 9000 §A.3: the packet number closest to ``largest + 1`` ending in ``truncated``."""
    expected = largest + 1
    window = 1 << bits
    half = window // 2
    candidate = (expected & ~(window - 1)) | truncated
    if candidate <= expected - half and candidate < (1 << 62) - window:
        return candidate + window
    if candidate > expected + half and candidate >= window:
        return candidate - window
    return candidate


def looks_like_quic_initial(datagram: bytes) -> bool:
    """Whether a UDP payload starts with a client's first Initial packet of a version we read.

    Long header with the fixed bit set (RFC 9000 §17.2), a known version with its Initial
    packet type, a DCID of 8 to 20 bytes (a client's first DCID has at least 8, §7.2), and a
    datagram padded to 1200 bytes (§14.1).
    """
    if len(datagram) < MIN_INITIAL_DATAGRAM:
        return False
    first = datagram[0]
    if first & 0xC0 != 0xC0:
        return False
    params = _VERSIONS.get(_U32.unpack_from(datagram, 1)[0])
    if params is None or (first >> 4) & 0x03 != params.initial_type:
        return False
    return 8 <= datagram[5] <= 20


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------


class _CryptoStreamState:
    """The Initial CRYPTO stream, reassembled by offset (RFC 9000 §19.6) up to MAX_CRYPTO."""

    __slots__ = ("data", "ranges")

    def __init__(self) -> None:
        self.data = bytearray()
        self.ranges: list[tuple[int, int]] = []  # received [start, end), sorted, disjoint

    def add(self, offset: int, chunk: bytes | memoryview) -> str | None:
        """Store a chunk; returns why it cannot be stored, or None."""
        end = offset + len(chunk)
        if end > MAX_CRYPTO:
            return f"CRYPTO data up to offset {end} exceeds {MAX_CRYPTO} bytes"
        if not chunk:
            return None
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        # A retransmission carries the same bytes (RFC 9000 §19.6), so overwriting is fine.
        self.data[offset:end] = chunk
        merged: list[tuple[int, int]] = []
        start = offset
        for lo, hi in self.ranges:
            if hi < start or lo > end:
                merged.append((lo, hi))
            else:
                start, end = min(lo, start), max(hi, end)
        merged.append((start, end))
        merged.sort()
        if len(merged) > MAX_CRYPTO_RANGES:
            return f"CRYPTO stream in more than {MAX_CRYPTO_RANGES} disjoint pieces"
        self.ranges = merged
        return None

    def contiguous(self) -> int:
        """How many bytes from offset 0 are present."""
        if self.ranges and self.ranges[0][0] == 0:
            return self.ranges[0][1]
        return 0


class QuicSession:
    """Decrypt a QUIC connection's client Initial packets until its ClientHello is complete.

    ``feed(direction, datagram)`` takes one whole UDP payload at a time and returns
    :class:`~hopguard.parsers.tls.ClientHello` or :class:`~hopguard.parsers.base.Malformed`
    events; ``Malformed.offset`` counts bytes over all client datagrams fed so far.
    """

    def __init__(self) -> None:
        self.done = False
        self._opener: _Opener | None = None
        self._crypto = _CryptoStreamState()
        self._largest_pn = -1
        self._fed = 0  # ORIG bytes fed before the current datagram

    def feed(self, direction: int, data: bytes) -> list[object]:
        if direction != ORIG and direction != RESP:
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        if self.done or direction != ORIG:
            return []
        events: list[object] = []
        try:
            self._datagram(data, events)
        except _Truncated as exc:
            self._fail(len(data), f"truncated {exc}", events)
        if self._fed == 0 and self._opener is None and not self.done:
            # A client's first datagram starts with its first Initial (RFC 9000 §17.2.2); if
            # it does not, we joined the connection late and can learn nothing from it.
            self._fail(0, "first client datagram holds no Initial packet", events)
        self._fed += len(data)
        return events

    def _fail(self, pos: int, reason: str, events: list[object]) -> None:
        events.append(Malformed(direction=ORIG, offset=self._fed + pos, reason=reason))
        self.done = True
        self._crypto = _CryptoStreamState()

    def _datagram(self, dg: bytes, events: list[object]) -> None:
        pos = 0
        end = len(dg)
        while pos < end and not self.done:
            start = pos
            first = dg[pos]
            if not first & 0x80:
                break  # short header (1-RTT) or trailing padding: nothing more we can read
            if end - pos < 7:
                raise _Truncated("long header")
            version = _U32.unpack_from(dg, pos + 1)[0]
            params = _VERSIONS.get(version)
            if params is None:
                if self._opener is None and start == 0:
                    self._fail(pos, f"unsupported QUIC version 0x{version:08x}", events)
                break  # we cannot even find where a packet of an unknown version ends
            # RFC 9000 §17.2: DCID and SCID, each at most 20 bytes in the versions we know.
            dcid_len = dg[pos + 5]
            pos += 6
            if dcid_len > 20:
                self._fail(start, f"DCID length {dcid_len} exceeds 20", events)
                break
            if end - pos < dcid_len + 1:
                raise _Truncated("long header")
            dcid = dg[pos : pos + dcid_len]
            pos += dcid_len
            scid_len = dg[pos]
            pos += 1 + scid_len
            if scid_len > 20:
                self._fail(start, f"SCID length {scid_len} exceeds 20", events)
                break
            packet_type = (first >> 4) & 0x03
            is_initial = packet_type == params.initial_type
            if is_initial:
                token_len, pos = _varint(dg, pos, end)  # §17.2.2: Token Length, Token
                pos += token_len
            elif packet_type == (params.initial_type + 3) & 0x03:
                break  # Retry has no Length field; clients never send one anyway
            length, pos = _varint(dg, pos, end)
            if pos + length > end:
                raise _Truncated(f"packet: Length {length} runs past the datagram")
            if is_initial:
                self._initial(dg, start, pos, pos + length, dcid, version, events)
            pos += length  # 0-RTT and Handshake packets are skipped whole

    def _initial(
        self,
        dg: bytes,
        start: int,
        pn_offset: int,
        end: int,
        dcid: bytes,
        version: int,
        events: list[object],
    ) -> None:
        """Open one Initial packet ``dg[start:end]`` and take in its frames."""
        # RFC 9001 §5.4.2: the sample starts 4 bytes after the packet number's start, as if the
        # packet number were 4 bytes long; it must lie inside the packet.
        if end - pn_offset < 4 + 16:
            self._fail(start, "Initial packet too short for a header protection sample", events)
            return
        sample = dg[pn_offset + 4 : pn_offset + 20]
        opened = None
        opener = self._opener
        if opener is not None:
            opened = self._open(opener, dg, start, pn_offset, end, sample)
        if opened is None and (opener is None or opener.dcid != dcid):
            # The first Initial, or a new DCID after a Retry (RFC 9001 §5.2).
            keys = initial_keys(version, dcid)
            if keys is not None:
                candidate = _Opener(keys, dcid)
                opened = self._open(candidate, dg, start, pn_offset, end, sample)
                if opened is not None:
                    self._opener = candidate
        if opened is None:
            self._fail(start, "Initial packet does not decrypt with the Initial keys", events)
            return
        pn, first, payload = opened
        if first & 0x0C:
            # RFC 9000 §17.2: the reserved bits are 0 once protection is removed.
            self._fail(start, "reserved bits set in an Initial packet header", events)
            return
        self._largest_pn = max(self._largest_pn, pn)
        self._frames(payload, start, events)
        if not self.done:
            self._check_hello(start, events)

    def _open(
        self, opener: _Opener, dg: bytes, start: int, pn_offset: int, end: int, sample: bytes
    ) -> tuple[int, int, bytes] | None:
        """Remove header protection and open the payload; None when authentication fails."""
        from cryptography.exceptions import InvalidTag

        mask = opener.mask(sample)
        # Long header: only the low 4 bits of the first byte are protected (RFC 9001 §5.4.1).
        first = dg[start] ^ (mask[0] & 0x0F)
        pn_len = (first & 0x03) + 1
        header = bytearray(dg[start : pn_offset + pn_len])
        header[0] = first
        truncated = 0
        for i in range(pn_len):
            byte = dg[pn_offset + i] ^ mask[1 + i]
            header[pn_offset - start + i] = byte
            truncated = (truncated << 8) | byte
        pn = _decode_packet_number(truncated, pn_len * 8, self._largest_pn)
        # RFC 9001 §5.3: nonce = IV XOR the packet number, left-padded to the IV's 12 bytes.
        nonce = (opener.iv ^ pn).to_bytes(12, "big")
        try:
            payload = opener.aead.decrypt(nonce, dg[pn_offset + pn_len : end], bytes(header))
        except InvalidTag:
            return None
        return pn, first, payload

    def _frames(self, payload: bytes, start: int, events: list[object]) -> None:
        """Walk an Initial packet's frames (RFC 9000 §12.4, §19)."""
        pos = 0
        end = len(payload)
        if end == 0:
            # RFC 9000 §12.4: a packet with no frames is a PROTOCOL_VIOLATION.
            self._fail(start, "Initial packet with no frames", events)
            return
        try:
            while pos < end:
                frame_type = payload[pos]
                if frame_type == _FRAME_PADDING:
                    # Usually the rest of the packet: count the zeros in C, not byte by byte.
                    if payload.count(0, pos) == end - pos:
                        break
                    pos += 1
                    continue
                if frame_type & 0xC0:
                    # Every frame type allowed here fits one byte; a longer encoding is either
                    # another frame type or a non-minimal one, both violations (§12.4).
                    self._fail(start, "frame type not allowed in an Initial packet", events)
                    return
                pos += 1
                if frame_type == _FRAME_PING:
                    continue
                if frame_type == _FRAME_CRYPTO:  # §19.6: Offset, Length, Crypto Data
                    offset, pos = _varint(payload, pos, end)
                    length, pos = _varint(payload, pos, end)
                    if pos + length > end:
                        raise _Truncated("CRYPTO frame")
                    error = self._crypto.add(offset, payload[pos : pos + length])
                    if error is not None:
                        self._fail(start, error, events)
                        return
                    pos += length
                elif frame_type in (_FRAME_ACK, _FRAME_ACK_ECN):
                    # §19.3: Largest Acknowledged, ACK Delay, ACK Range Count, First ACK Range,
                    # then Count x (Gap, ACK Range Length), then 3 ECN counts for type 0x03.
                    _, pos = _varint(payload, pos, end)
                    _, pos = _varint(payload, pos, end)
                    count, pos = _varint(payload, pos, end)
                    _, pos = _varint(payload, pos, end)
                    if count > end:
                        raise _Truncated("ACK frame")
                    fields = 2 * count + (3 if frame_type == _FRAME_ACK_ECN else 0)
                    for _ in range(fields):
                        _, pos = _varint(payload, pos, end)
                elif frame_type == _FRAME_CONNECTION_CLOSE:
                    # §19.19: Error Code, Frame Type, Reason Phrase Length, Reason Phrase. The
                    # client gave up; whatever CRYPTO data came before it still counts.
                    _, pos = _varint(payload, pos, end)
                    _, pos = _varint(payload, pos, end)
                    reason_len, pos = _varint(payload, pos, end)
                    pos += reason_len
                    if pos > end:
                        raise _Truncated("CONNECTION_CLOSE frame")
                else:
                    self._fail(
                        start, f"frame type 0x{frame_type:02x} not allowed in Initial", events
                    )
                    return
        except _Truncated as exc:
            self._fail(start, f"truncated {exc}", events)

    def _check_hello(self, start: int, events: list[object]) -> None:
        """Decode the ClientHello once the CRYPTO stream holds all of it."""
        have = self._crypto.contiguous()
        if have < 4:
            return
        data = self._crypto.data
        if data[0] != HS_CLIENT_HELLO:
            self._fail(start, f"CRYPTO stream starts with handshake type {data[0]}", events)
            return
        length = (data[1] << 16) | (data[2] << 8) | data[3]
        if 4 + length > MAX_CRYPTO:
            self._fail(start, f"ClientHello claims {length} bytes, limit {MAX_CRYPTO}", events)
            return
        if have < 4 + length:
            return  # NEED_DATA: more CRYPTO frames to come
        try:
            hello = decode_client_hello(bytes(data[4 : 4 + length]))
        except DecodeError as exc:
            self._fail(start, f"ClientHello: {exc}", events)
            return
        events.append(hello)
        self.done = True
        self._crypto = _CryptoStreamState()
