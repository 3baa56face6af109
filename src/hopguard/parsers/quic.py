"""QUIC Initial decryption: both hellos of a QUIC connection, for SNI, JA4 and JA3S.

Theory of operation
-------------------
QUIC (RFC 9000) carries the TLS 1.3 handshake in CRYPTO frames inside *Initial* packets. Initial
packets are encrypted, but with keys anyone can derive (RFC 9001 §5.2): HKDF-Extract of a
per-version public salt and the Destination Connection ID (DCID) of the client's first Initial
packet, then HKDF-Expand-Label ("client in" or "server in", then "quic key" / "quic iv" /
"quic hp"). Both sides' keys come from that one DCID, which the client chose, so a passive
observer can read the ClientHello and the ServerHello; that is what :class:`QuicSession` does.
Each direction has its own keys, packet number space and CRYPTO stream (:class:`_SideState`).

1. ``feed(direction, datagram)`` walks the datagram's coalesced packets (RFC 9000 §12.2).
   Long-header packets carry a Length field, so each one can be skipped or cut out; a
   short-header packet runs to the end of the datagram and is 1-RTT data we cannot read, which
   ends the walk. A server typically coalesces its Initial (ServerHello) with a Handshake
   packet (EncryptedExtensions, Certificate...): the Handshake keys come from the TLS key
   exchange, so that packet is skipped whole.
2. For each Initial packet it removes header protection (RFC 9001 §5.4: AES-ECB of a 16-byte
   ciphertext sample gives a mask over the low bits of the first byte and the packet number),
   rebuilds the full packet number (RFC 9000 §A.3), then opens the AES-128-GCM payload
   (RFC 9001 §5.3) with the packet header as associated data.
3. The plaintext is a sequence of frames. Initial packets may only hold PADDING, PING, ACK,
   CRYPTO and CONNECTION_CLOSE (RFC 9000 §12.4, Table 3); anything else is a protocol
   violation. CRYPTO frames carry (offset, data) of the handshake byte stream; a large
   ClientHello (post-quantum key shares) spans several packets and datagrams, and clients such
   as Chrome deliberately scatter and reorder the pieces. :class:`_CryptoStreamState`
   reassembles each direction's stream by offset, bounded at ``MAX_CRYPTO`` (64 KiB).
4. Each complete handshake message at the head of a stream is decoded with
   :func:`hopguard.parsers.tls.decode_client_hello` (client) or
   :func:`~hopguard.parsers.tls.decode_server_hello` (server) and returned as the same
   :class:`~hopguard.parsers.tls.ClientHello` / :class:`~hopguard.parsers.tls.ServerHello`
   event a TCP session gives (``ja4("q")``, ``ja3s()``). At the Initial level the client's
   stream holds only its ClientHello, the server's only its ServerHello (RFC 9001 §4.1.4); a
   HelloRetryRequest is followed by a second ClientHello and the real ServerHello further on
   in the same streams, and both are read too.

The session is ``done`` once both hellos are out (the ServerHello not being a HelloRetryRequest),
or once the ClientHello is out and ``MAX_QUIET_SERVER_DATAGRAMS`` server datagrams came without
an Initial packet (the server's Initial was lost, or it answers in a version we do not know),
or on the first :class:`~hopguard.parsers.base.Malformed`. After its ClientHello, client
datagrams are not opened any more (unless a HelloRetryRequest asks for another ClientHello).

Keys. The client's keys come from the DCID of its *first* Initial and stay the same for every
later client Initial, even after the client switches to the server-chosen connection ID; the
server's keys come from the same DCID. Only a Retry changes them (RFC 9001 §5.2): both sides
then derive them from the Retry's Source Connection ID, which the client uses as its new DCID.
A packet that fails to open with its side's current keys is retried with keys from its own
DCID (client packets only) and from the Retry's SCID if a Retry was seen (and, for the server,
from the client's first DCID); only then is it reported as
:class:`~hopguard.parsers.base.Malformed`. The server's packets use their own version field,
so a server that switches version (RFC 9368) is still read.

A server's Version Negotiation packet (RFC 9000 §6.2, §17.2.1) that does not list the client's
version makes the client start over in another version, with a new ClientHello and perhaps a
new DCID, so the client's side is reset and its next Initial read afresh (its hello is
reported too). A server datagram that arrives before any client Initial (a reordered
capture) is ignored: there is no DCID to derive its keys from yet. Server packets of a
version we do not know end the walk of their datagram quietly.

Versions: QUIC v1 (RFC 9001), v2 (RFC 9369: another salt, "quicv2 ..." labels, and the long
header packet types rotated so that Initial is 0b01), IETF drafts 23 to 34 (their salts are in
the drafts; drafts 33 and 34 already use v1's), Facebook's mvfst 0xfaceb001 (draft 22's salt)
and 0xfaceb002 (draft 27, so draft 23's salt), and Google's T050 and T051 (TLS over IETF-style
Initials with Google's own salts; Wireshark's ``packet-quic.c`` and nDPI's ``quic.c`` use the
same; T05x also keep Google QUIC's frame encodings inside). Google's Q050 protects Initials
the same way but carries Google's own crypto handshake (a CHLO message, not a ClientHello), so
it is not listed. The reserved versions 0x?a?a?a?a (RFC 9000 §15), which clients send to force
Version Negotiation, are read as v1 with v1's or draft 29's salt; one that opens with neither
is skipped without a :class:`~hopguard.parsers.base.Malformed` (see ``_RESERVED``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.tls import (
    HS_CLIENT_HELLO,
    HS_SERVER_HELLO,
    ClientHello,
    DecodeError,
    ServerHello,
    decode_client_hello,
    decode_server_hello,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MAX_CRYPTO",
    "MAX_QUIET_SERVER_DATAGRAMS",
    "QUIC_MVFST_D22",
    "QUIC_MVFST_D27",
    "QUIC_T050",
    "QUIC_T051",
    "QUIC_V1",
    "QUIC_V2",
    "InitialKeys",
    "QuicSession",
    "initial_keys",
    "looks_like_quic_initial",
]

QUIC_V1: Final = 0x00000001
QUIC_V2: Final = 0x6B3343CF
QUIC_MVFST_D22: Final = 0xFACEB001  # Facebook mvfst, draft 22
QUIC_MVFST_D27: Final = 0xFACEB002  # Facebook mvfst, draft 27
QUIC_T050: Final = 0x54303530  # Google "T050": TLS 1.3 handshake, Google QUIC v50 transport
QUIC_T051: Final = 0x54303531  # Google "T051"

#: The most CRYPTO stream bytes we reassemble, per direction, before its hello must be complete.
MAX_CRYPTO: Final = 64 * 1024
#: Server datagrams without an Initial packet, after the ClientHello, before we give up on the
#: ServerHello. A server sends its Initial in its first datagram (RFC 9000 §7), so this only
#: leaves room for a lost or reordered one.
MAX_QUIET_SERVER_DATAGRAMS: Final = 4
#: Distinct gaps the CRYPTO reassembly tolerates; more means deliberate fragmentation.
MAX_CRYPTO_RANGES: Final = 64
#: RFC 9000 §14.1: a client pads every datagram carrying an Initial to at least 1200 bytes.
MIN_INITIAL_DATAGRAM: Final = 1200

_SALT_V1: Final = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")  # RFC 9001 §5.2
_SALT_V2: Final = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")  # RFC 9369 §3.3.1
_SALT_D29: Final = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")  # drafts 29-32
_SALT_D23: Final = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")  # drafts 23-28
_SALT_D22: Final = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")  # draft 22
# Google's salts for T050 and T051, as in Wireshark's packet-quic.c and nDPI's quic.c (Google
# published no spec for them); checked against captures that tshark and nDPI both decode.
_SALT_T050: Final = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")
_SALT_T051: Final = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Version:
    salts: tuple[bytes, ...]  # one, except for the reserved versions (see _RESERVED)
    label_prefix: bytes  # b"quic " (v1, drafts) or b"quicv2 " (RFC 9369 §3.3.2)
    initial_type: int  # long header packet type of Initial: 0b00, or 0b01 in v2 (§3.2)
    google_frames: bool = False  # Google QUIC frame types inside (T050, T051)
    probe: bool = False  # an Initial that does not open is ignored, not Malformed


def _ietf(salt: bytes) -> _Version:
    return _Version(salts=(salt,), label_prefix=b"quic ", initial_type=0)


_V1_PARAMS: Final = _ietf(_SALT_V1)
# RFC 9000 §6.3, §15: versions 0x?a?a?a?a are reserved for clients to force Version
# Negotiation, and what such an Initial holds is the client's choice. The ones seen protect a
# ClientHello in v1's layout with v1's salt or with draft 29's (Wireshark tries the latter, nDPI
# the former); one that opens with neither is skipped, and the client's real Initial follows
# the server's Version Negotiation packet.
_RESERVED: Final = _Version(
    salts=(_SALT_V1, _SALT_D29), label_prefix=b"quic ", initial_type=0, probe=True
)


def _versions() -> dict[int, _Version]:
    table = {
        QUIC_V1: _V1_PARAMS,
        QUIC_V2: _Version(salts=(_SALT_V2,), label_prefix=b"quicv2 ", initial_type=1),
    }
    for draft in range(23, 35):  # draft-ietf-quic-transport-NN is version 0xff0000NN
        salt = _SALT_D23 if draft <= 28 else _SALT_D29 if draft <= 32 else _SALT_V1
        table[0xFF000000 | draft] = _ietf(salt)
    # Non-IETF version numbers for IETF-style Initials (the wire format of the draft named).
    table[QUIC_MVFST_D22] = _ietf(_SALT_D22)
    table[QUIC_MVFST_D27] = _ietf(_SALT_D23)
    for version, salt in ((QUIC_T050, _SALT_T050), (QUIC_T051, _SALT_T051)):
        table[version] = _Version(
            salts=(salt,), label_prefix=b"quic ", initial_type=0, google_frames=True
        )
    return table


_VERSIONS: Final = _versions()


def _version(version: int) -> _Version | None:
    """The parameters of a version we can read, or None."""
    params = _VERSIONS.get(version)
    if params is None and version & 0x0F0F0F0F == 0x0A0A0A0A:
        return _RESERVED
    return params

# Frame types allowed in Initial packets (RFC 9000 §12.4, Table 3).
_FRAME_PADDING: Final = 0x00
_FRAME_PING: Final = 0x01
_FRAME_ACK: Final = 0x02
_FRAME_ACK_ECN: Final = 0x03
_FRAME_CRYPTO: Final = 0x06
_FRAME_CONNECTION_CLOSE: Final = 0x1C

# Google QUIC frame types, which T050 and T051 keep inside IETF-style packets (Chromium's
# quic_framer.cc; Wireshark's packet-gquic.c): PADDING fills the rest of the packet, ACK is
# any type 0b01xxxxxx, and the CRYPTO frame added for TLS is 0x08 with IETF's layout.
_GFRAME_PADDING: Final = 0x00
_GFRAME_CONNECTION_CLOSE: Final = 0x02
_GFRAME_PING: Final = 0x07
_GFRAME_CRYPTO: Final = 0x08
# gQUIC packet number lengths by their 2-bit code (ACK frames use them for their fields).
_GQUIC_PN_LENGTHS: Final = (1, 2, 4, 6)

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
    Destination Connection ID of the client's first Initial; None for an unknown version.
    (For a reserved version, the first of the salts tried: v1's.)"""
    params = _version(version)
    if params is None:
        return None
    return _derive(params, params.salts[0], dcid, server=server)


def _derive(params: _Version, salt: bytes, dcid: bytes, *, server: bool) -> InitialKeys:
    initial_secret = hmac.new(salt, dcid, hashlib.sha256).digest()  # HKDF-Extract
    secret = _expand_label(initial_secret, b"server in" if server else b"client in", 32)
    prefix = params.label_prefix
    return InitialKeys(
        key=_expand_label(secret, prefix + b"key", 16),
        iv=_expand_label(secret, prefix + b"iv", 12),
        hp=_expand_label(secret, prefix + b"hp", 16),
    )


class _Opener:
    """Ready-to-use primitives for one side's Initial keys, and what they were derived from."""

    __slots__ = ("aead", "dcid", "hp", "iv", "salt", "version")

    def __init__(self, keys: InitialKeys, dcid: bytes, version: int, salt: bytes) -> None:
        # Imported here: cryptography's import is costly and most flows never need it.
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.dcid = dcid
        self.version = version
        self.salt = salt
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


def _byte(buf: bytes, pos: int, end: int) -> int:
    if pos >= end:
        raise _Truncated("frame")
    return buf[pos]


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

    Long header with the fixed bit set (RFC 9000 §17.2), a known version (or a reserved one,
    0x?a?a?a?a, see ``_RESERVED``) with its Initial packet type, a DCID of 8 to 20 bytes (a
    client's first DCID has at least 8, §7.2), and a datagram padded to 1200 bytes (§14.1).
    """
    if len(datagram) < MIN_INITIAL_DATAGRAM:
        return False
    first = datagram[0]
    if first & 0xC0 != 0xC0:
        return False
    params = _version(_U32.unpack_from(datagram, 1)[0])
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


class _SideState:
    """One direction's keys, packet number space and handshake progress."""

    __slots__ = ("crypto", "fed", "finished", "largest_pn", "next_message", "opener")

    def __init__(self) -> None:
        self.opener: _Opener | None = None
        self.crypto = _CryptoStreamState()
        self.largest_pn = -1  # packet number spaces are per side (RFC 9000 §12.3)
        self.fed = 0  # bytes of this direction fed before the current datagram
        self.next_message = 0  # CRYPTO stream offset of the next handshake message
        self.finished = False  # no (further) hello is expected from this side


class QuicSession:
    """Decrypt a QUIC connection's Initial packets until both hellos are out.

    ``feed(direction, datagram)`` takes one whole UDP payload at a time and returns
    :class:`~hopguard.parsers.tls.ClientHello`, :class:`~hopguard.parsers.tls.ServerHello`
    and :class:`~hopguard.parsers.base.Malformed` events; ``Malformed.offset`` counts bytes
    over all datagrams of its direction fed so far.
    """

    def __init__(self) -> None:
        self.done = False
        self._sides = (_SideState(), _SideState())
        # The Source Connection ID of a server's Retry: the client's new DCID, from which both
        # sides' Initial keys are derived from then on (RFC 9001 §5.2, RFC 9000 §17.2.5.2).
        self._retry_dcid: bytes | None = None
        self._quiet = 0  # server datagrams that held no Initial packet

    def feed(self, direction: int, data: bytes) -> list[object]:
        if direction != ORIG and direction != RESP:
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        if self.done:
            return []
        side = self._sides[direction]
        events: list[object] = []
        if direction == ORIG and side.finished:
            pass  # the ClientHello is out: client datagrams hold nothing more for us
        elif direction == RESP and self._sides[ORIG].opener is None:
            pass  # no client Initial yet, so no DCID to derive the server's keys from
        else:
            saw_long = saw_initial = False
            try:
                saw_long, saw_initial = self._datagram(direction, data, events)
            except _Truncated as exc:
                self._fail(direction, len(data), f"truncated {exc}", events)
            if direction == ORIG and side.fed == 0 and not saw_long and not self.done:
                # A client's first datagram starts with its first Initial (RFC 9000 §17.2.2),
                # or with 0-RTT packets that overtook it on the way; a short header (1-RTT)
                # means we joined the connection late and can learn nothing from it.
                self._fail(ORIG, 0, "first client datagram holds no long header packet", events)
            if direction == RESP and not saw_initial:
                self._quiet += 1
            self._check_done()
        side.fed += len(data)
        return events

    def _fail(self, direction: int, pos: int, reason: str, events: list[object]) -> None:
        offset = self._sides[direction].fed + pos
        events.append(Malformed(direction=direction, offset=offset, reason=reason))
        self._end()

    def _end(self) -> None:
        self.done = True
        for side in self._sides:
            side.crypto = _CryptoStreamState()
            side.opener = None

    def _check_done(self) -> None:
        if self.done:
            return
        client, server = self._sides
        if client.finished and (server.finished or self._quiet >= MAX_QUIET_SERVER_DATAGRAMS):
            self._end()

    def _datagram(self, direction: int, dg: bytes, events: list[object]) -> tuple[bool, bool]:
        """Walk one datagram's packets; returns whether it held a long header packet of a
        version we know, and whether it held an Initial packet."""
        pos = 0
        end = len(dg)
        saw_long = saw_initial = False
        while pos < end and not self.done:
            start = pos
            first = dg[pos]
            if not first & 0x80:
                break  # short header (1-RTT) or trailing padding: nothing more we can read
            if end - pos < 7:
                raise _Truncated("long header")
            version = _U32.unpack_from(dg, pos + 1)[0]
            if version == 0 and direction == RESP:
                self._version_negotiation(dg, pos)
                break  # a Version Negotiation packet fills its datagram
            params = _version(version)
            if params is None:
                if direction == ORIG and self._sides[ORIG].opener is None and start == 0:
                    self._fail(ORIG, pos, f"unsupported QUIC version 0x{version:08x}", events)
                # A version we do not know: we cannot even find where its packet ends.
                break
            saw_long = True
            # RFC 9000 §17.2: DCID and SCID, each at most 20 bytes in the versions we know.
            dcid_len = dg[pos + 5]
            pos += 6
            if dcid_len > 20:
                self._fail(direction, start, f"DCID length {dcid_len} exceeds 20", events)
                break
            if end - pos < dcid_len + 1:
                raise _Truncated("long header")
            dcid = dg[pos : pos + dcid_len]
            pos += dcid_len
            scid_len = dg[pos]
            pos += 1
            if scid_len > 20:
                self._fail(direction, start, f"SCID length {scid_len} exceeds 20", events)
                break
            if end - pos < scid_len:
                raise _Truncated("long header")
            scid = dg[pos : pos + scid_len]
            pos += scid_len
            packet_type = (first >> 4) & 0x03
            is_initial = packet_type == params.initial_type
            if is_initial:
                token_len, pos = _varint(dg, pos, end)  # §17.2.2: Token Length, Token
                pos += token_len
            elif packet_type == (params.initial_type + 3) & 0x03:
                # Retry (§17.2.5) has no Length field and fills its datagram. Only a server
                # sends one; its SCID keys every later Initial of both sides (RFC 9001 §5.2).
                if direction == RESP and scid_len:
                    self._retry_dcid = scid
                break
            length, pos = _varint(dg, pos, end)
            if pos + length > end:
                raise _Truncated(f"packet: Length {length} runs past the datagram")
            if is_initial:
                saw_initial = True
                self._initial(
                    direction, dg, start, pos, pos + length, dcid, version, params, events
                )
            pos += length  # 0-RTT and Handshake packets are skipped whole
        return saw_long, saw_initial

    def _version_negotiation(self, dg: bytes, pos: int) -> None:
        """A server's Version Negotiation packet (RFC 9000 §17.2.1): the client will start
        over in another version, with a new ClientHello and perhaps a new DCID (§6.2), so
        read its next Initial afresh. Ignored, as a client ignores it, once the server sent
        anything else, or when it lists the client's version (RFC 9000 §6.2)."""
        client, server = self._sides
        if server.opener is not None or client.opener is None:
            return
        end = len(dg)
        pos += 5  # first byte, version
        for _ in range(2):  # DCID, SCID (any length up to 255 in a VN packet)
            if pos >= end:
                return
            pos += 1 + dg[pos]
        while pos + 4 <= end:
            if _U32.unpack_from(dg, pos)[0] == client.opener.version:
                return
            pos += 4
        self._sides = (_SideState(), server)
        self._sides[ORIG].fed = client.fed
        self._retry_dcid = None

    def _key_dcids(self, direction: int, dcid: bytes) -> list[bytes]:
        """The DCIDs whose keys may protect an Initial of ``direction`` carrying ``dcid``."""
        # A client Initial's own DCID keys it when it is the first one, or the first after a
        # Retry (RFC 9001 §5.2); after a Retry, later client Initials (which carry the
        # server's chosen connection ID) and the server's are keyed by the Retry's SCID.
        candidates = [dcid] if direction == ORIG else []
        if self._retry_dcid is not None and self._retry_dcid not in candidates:
            candidates.append(self._retry_dcid)
        client = self._sides[ORIG].opener
        if direction == RESP and client is not None and client.dcid not in candidates:
            candidates.append(client.dcid)
        return candidates

    def _initial(
        self,
        direction: int,
        dg: bytes,
        start: int,
        pn_offset: int,
        end: int,
        dcid: bytes,
        version: int,
        params: _Version,
        events: list[object],
    ) -> None:
        """Open one Initial packet ``dg[start:end]`` and take in its frames."""
        side = self._sides[direction]
        # RFC 9001 §5.4.2: the sample starts 4 bytes after the packet number's start, as if the
        # packet number were 4 bytes long; it must lie inside the packet.
        if end - pn_offset < 4 + 16:
            self._fail(
                direction, start, "Initial packet too short for a header protection sample", events
            )
            return
        sample = dg[pn_offset + 4 : pn_offset + 20]
        opened = None
        current = side.opener
        if current is not None:
            opened = self._open(side, current, dg, start, pn_offset, end, sample)
        if opened is None:
            opened = self._rekey(direction, dg, start, pn_offset, end, sample, dcid, version)
        if opened is None:
            if params.probe:
                return  # a reserved version's Initial may hold anything (see _RESERVED)
            self._fail(
                direction, start, "Initial packet does not decrypt with the Initial keys", events
            )
            return
        pn, first, payload = opened
        if first & 0x0C:
            # RFC 9000 §17.2: the reserved bits are 0 once protection is removed.
            self._fail(direction, start, "reserved bits set in an Initial packet header", events)
            return
        side.largest_pn = max(side.largest_pn, pn)
        if params.google_frames:
            self._google_frames(direction, payload, start, events)
        else:
            self._frames(direction, payload, start, events)
        if not self.done:
            self._hellos(direction, start, events)

    def _rekey(
        self,
        direction: int,
        dg: bytes,
        start: int,
        pn_offset: int,
        end: int,
        sample: bytes,
        dcid: bytes,
        version: int,
    ) -> tuple[int, int, bytes] | None:
        """Open a packet the current keys do not open with keys from the DCIDs that may have
        keyed it; on success those keys become the side's current keys."""
        side = self._sides[direction]
        params = _version(version)
        if params is None:
            return None
        current = side.opener
        for key_dcid in self._key_dcids(direction, dcid):
            for salt in params.salts:
                if current is not None and (current.dcid, current.version, current.salt) == (
                    key_dcid,
                    version,
                    salt,
                ):
                    continue  # already tried
                keys = _derive(params, salt, key_dcid, server=direction == RESP)
                candidate = _Opener(keys, key_dcid, version, salt)
                opened = self._open(side, candidate, dg, start, pn_offset, end, sample)
                if opened is not None:
                    side.opener = candidate
                    return opened
        return None

    def _open(
        self,
        side: _SideState,
        opener: _Opener,
        dg: bytes,
        start: int,
        pn_offset: int,
        end: int,
        sample: bytes,
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
        pn = _decode_packet_number(truncated, pn_len * 8, side.largest_pn)
        # RFC 9001 §5.3: nonce = IV XOR the packet number, left-padded to the IV's 12 bytes.
        nonce = (opener.iv ^ pn).to_bytes(12, "big")
        try:
            payload = opener.aead.decrypt(nonce, dg[pn_offset + pn_len : end], bytes(header))
        except InvalidTag:
            return None
        return pn, first, payload

    def _frames(self, direction: int, payload: bytes, start: int, events: list[object]) -> None:
        """Walk an Initial packet's frames (RFC 9000 §12.4, §19)."""
        crypto = self._sides[direction].crypto
        pos = 0
        end = len(payload)
        if end == 0:
            # RFC 9000 §12.4: a packet with no frames is a PROTOCOL_VIOLATION.
            self._fail(direction, start, "Initial packet with no frames", events)
            return
        try:
            while pos < end:
                frame_type = payload[pos]
                if frame_type == _FRAME_PADDING:
                    # Skip the whole run of padding in C, not byte by byte (it is usually
                    # the rest of the packet).
                    rest = len(payload[pos:end].lstrip(b"\x00"))
                    if not rest:
                        break
                    pos = end - rest
                    continue
                if frame_type & 0xC0:
                    # Every frame type allowed here fits one byte; a longer encoding is either
                    # another frame type or a non-minimal one, both violations (§12.4).
                    self._fail(
                        direction, start, "frame type not allowed in an Initial packet", events
                    )
                    return
                pos += 1
                if frame_type == _FRAME_PING:
                    continue
                if frame_type == _FRAME_CRYPTO:  # §19.6: Offset, Length, Crypto Data
                    offset, pos = _varint(payload, pos, end)
                    length, pos = _varint(payload, pos, end)
                    if pos + length > end:
                        raise _Truncated("CRYPTO frame")
                    error = crypto.add(offset, payload[pos : pos + length])
                    if error is not None:
                        self._fail(direction, start, error, events)
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
                    # peer gave up; whatever CRYPTO data came before it still counts.
                    _, pos = _varint(payload, pos, end)
                    _, pos = _varint(payload, pos, end)
                    reason_len, pos = _varint(payload, pos, end)
                    pos += reason_len
                    if pos > end:
                        raise _Truncated("CONNECTION_CLOSE frame")
                else:
                    self._fail(
                        direction,
                        start,
                        f"frame type 0x{frame_type:02x} not allowed in Initial",
                        events,
                    )
                    return
        except _Truncated as exc:
            self._fail(direction, start, f"truncated {exc}", events)

    def _google_frames(
        self, direction: int, payload: bytes, start: int, events: list[object]
    ) -> None:
        """Walk a T050/T051 Initial packet's frames, which use Google QUIC's encodings.

        Google never specified which frames such an Initial may hold; Chrome and Google's
        servers send CRYPTO, ACK, PING and PADDING. A frame type we do not know ends the walk
        quietly (its length is unknowable), keeping the CRYPTO data before it.
        """
        crypto = self._sides[direction].crypto
        pos = 0
        end = len(payload)
        try:
            while pos < end:
                frame_type = payload[pos]
                pos += 1
                if frame_type == _GFRAME_PADDING:
                    break  # a gQUIC PADDING frame is the rest of the packet
                if frame_type == _GFRAME_PING:
                    continue
                if frame_type == _GFRAME_CRYPTO:  # as IETF's: Offset, Length, Crypto Data
                    offset, pos = _varint(payload, pos, end)
                    length, pos = _varint(payload, pos, end)
                    if pos + length > end:
                        raise _Truncated("CRYPTO frame")
                    error = crypto.add(offset, payload[pos : pos + length])
                    if error is not None:
                        self._fail(direction, start, error, events)
                        return
                    pos += length
                elif frame_type & 0xC0 == 0x40:
                    # ACK: type 0b01nxLLMM; n = several ACK blocks, LL and MM code the byte
                    # lengths of Largest Acked and of each ACK block length. Then the ACK
                    # delay (ufloat16), [block count], the first block, count x (gap byte,
                    # block), a timestamp count and the timestamps: (delta byte, uint32) for
                    # the first, (delta byte, ufloat16) for each other.
                    block = _GQUIC_PN_LENGTHS[frame_type & 0x03]
                    pos += _GQUIC_PN_LENGTHS[(frame_type >> 2) & 0x03] + 2
                    blocks = 0
                    if frame_type & 0x20:
                        blocks = _byte(payload, pos, end)
                        pos += 1
                    pos += block + blocks * (1 + block)
                    stamps = _byte(payload, pos, end)
                    pos += 1
                    if stamps:
                        pos += 5 + 3 * (stamps - 1)
                    if pos > end:
                        raise _Truncated("ACK frame")
                elif frame_type == _GFRAME_CONNECTION_CLOSE:
                    # uint32 error code, uint16 reason phrase length, reason phrase.
                    pos += 4
                    if pos + 2 > end:
                        raise _Truncated("CONNECTION_CLOSE frame")
                    pos += 2 + ((payload[pos] << 8) | payload[pos + 1])
                    if pos > end:
                        raise _Truncated("CONNECTION_CLOSE frame")
                else:
                    break
        except _Truncated as exc:
            self._fail(direction, start, f"truncated {exc}", events)

    def _hellos(self, direction: int, start: int, events: list[object]) -> None:
        """Decode every complete hello at the head of ``direction``'s CRYPTO stream."""
        side = self._sides[direction]
        expected = HS_CLIENT_HELLO if direction == ORIG else HS_SERVER_HELLO
        while not side.finished:
            pos = side.next_message
            have = side.crypto.contiguous()
            if have - pos < 4:
                return  # NEED_DATA
            data = side.crypto.data
            if data[pos] != expected:
                # RFC 9001 §4.1.4: the Initial level carries only the hellos.
                self._fail(
                    direction,
                    start,
                    f"CRYPTO stream has handshake type {data[pos]} at offset {pos}, "
                    f"expected {expected}",
                    events,
                )
                return
            length = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
            if pos + 4 + length > MAX_CRYPTO:
                self._fail(
                    direction,
                    start,
                    f"handshake message at offset {pos} claims {length} bytes, "
                    f"limit {MAX_CRYPTO}",
                    events,
                )
                return
            if have < pos + 4 + length:
                return  # NEED_DATA: more CRYPTO frames to come
            body = bytes(data[pos + 4 : pos + 4 + length])
            hello: ClientHello | ServerHello
            try:
                if direction == ORIG:
                    hello = decode_client_hello(body)
                else:
                    hello = decode_server_hello(body)
            except DecodeError as exc:
                name = "ClientHello" if direction == ORIG else "ServerHello"
                self._fail(direction, start, f"{name}: {exc}", events)
                return
            events.append(hello)
            side.next_message = pos + 4 + length
            if isinstance(hello, ServerHello) and hello.hello_retry:
                # RFC 8446 §4.1.4: the client answers a HelloRetryRequest with a second
                # ClientHello, which continues its CRYPTO stream; the real ServerHello
                # follows in the server's.
                self._sides[ORIG].finished = False
                continue
            side.finished = True
