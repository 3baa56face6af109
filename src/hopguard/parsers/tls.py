"""TLS handshake parser: the two hellos, the server's certificate chain, JA3/JA3S/JA4.

Theory of operation
-------------------
A :class:`TlsSession` follows one TCP connection that carries TLS (SSL 3.0 to TLS 1.3). It keeps,
per direction, a :class:`_DirectionState` with two buffers stacked like the protocol itself:

1. **Records** (RFC 5246 §6.2, RFC 8446 §5.1). The byte stream is a sequence of records, each a
   5-byte header (content type, version, length) and a body. ``records`` holds at most one
   unfinished record, and a record is at most 2^14 + 2048 bytes (RFC 5246 §6.2.3), so this
   buffer stays far below ``MAX_BUFFER``.
2. **Handshake messages** (RFC 5246 §7.4, RFC 8446 §4). The bodies of handshake records (type
   22) form a second stream of messages, each a 4-byte header (type, 24-bit length) and a body.
   A message may span several records and several records may hold one message, or one record
   several messages; ``handshake`` holds the start of a message that is not complete yet. A
   message may claim at most 64 KiB, except the Certificate message, which may claim 256 KiB
   because real chains (with intermediates and long SAN lists) do exceed 64 KiB.

In the common case, a whole record (and a whole message) arrives in one ``feed``; it is parsed
straight out of the caller's bytes through a ``memoryview`` and nothing is copied. Only an
unfinished tail is copied into the per-direction buffers.

What we want from a connection is small: the client's ClientHello (ORIG) and the server's
ServerHello and Certificate (RESP). A direction is *finished* when nothing more of interest can
come from it:

* ORIG, once its ClientHello was parsed;
* RESP, once its Certificate was parsed, or its ServerHello selected TLS 1.3 (everything after
  it is encrypted, the certificate included: RFC 8446 §2), or it sent ServerHelloDone (no
  certificate: anonymous or PSK suites);
* either, after ChangeCipherSpec (what follows is encrypted) or application data.

The session is ``done`` when both directions are finished, or on the first :class:`Malformed`.

Fingerprints are computed on demand from the parsed hellos, which keep every value as sent
(GREASE included, wire order); the fingerprint methods drop GREASE as their specs say:

* JA3 / JA3S: https://github.com/salesforce/ja3 (MD5 of a decimal, comma/dash joined string);
* JA4 (client, BSD-3-Clause): https://github.com/FoxIO-LLC/ja4/blob/main/technical_details/JA4.md

The SSL 2.0-compatible ClientHello (RFC 5246 Appendix E.2) has its own 2-byte record header
and layout; it is decoded by :func:`decode_sslv2_client_hello` into the same
:class:`ClientHello` (no extensions), and the server's TLS records that answer it are read as
usual. Nothing but old stacks and scanners sends it any more.

Leniency. A few malformations that Wireshark reports as warnings rather than errors, and that
it and nDPI still fingerprint, are accepted and listed in ``ClientHello.quirks`` (see the
``QUIRK_*`` constants): an odd-length cipher_suites vector (its last byte is ignored), an
empty cipher_suites or compression_methods vector, and one stray byte where the extensions
block would start. Every other framing error is a :class:`DecodeError`.

Strings from the wire (the SNI host name, ALPN protocol names) are decoded as Latin-1, so every
byte maps to one character and the original bytes can always be recovered with
``.encode("latin-1")`` (JA4 needs the raw ALPN bytes). A well-behaved peer sends ASCII there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from hopguard.parsers.base import ORIG, RESP, Malformed

if TYPE_CHECKING:
    from cryptography.x509 import ObjectIdentifier

__all__ = [
    "CertInfo",
    "Certificates",
    "ClientHello",
    "DecodeError",
    "ServerHello",
    "TlsSession",
    "cert_info",
    "decode_certificates",
    "decode_client_hello",
    "decode_server_hello",
    "decode_sslv2_client_hello",
    "is_grease",
    "looks_like_tls",
]

# Record content types (RFC 5246 §6.2.1, RFC 6520 for heartbeat).
CT_CHANGE_CIPHER_SPEC: Final = 20
CT_ALERT: Final = 21
CT_HANDSHAKE: Final = 22
CT_APPLICATION_DATA: Final = 23
CT_HEARTBEAT: Final = 24

# Handshake message types (RFC 5246 §7.4, RFC 8446 §4).
HS_CLIENT_HELLO: Final = 1
HS_SERVER_HELLO: Final = 2
HS_CERTIFICATE: Final = 11
HS_SERVER_HELLO_DONE: Final = 14

# Extension code points (IANA "TLS ExtensionType Values").
EXT_SERVER_NAME: Final = 0  # RFC 6066 §3
EXT_SUPPORTED_GROUPS: Final = 10  # RFC 8422 §5.1.1, RFC 8446 §4.2.7
EXT_EC_POINT_FORMATS: Final = 11  # RFC 8422 §5.1.2
EXT_SIGNATURE_ALGORITHMS: Final = 13  # RFC 8446 §4.2.3
EXT_ALPN: Final = 16  # RFC 7301 §3.1
EXT_SUPPORTED_VERSIONS: Final = 43  # RFC 8446 §4.2.1
_CLIENT_DECODED: Final = frozenset(
    (
        EXT_SERVER_NAME,
        EXT_SUPPORTED_GROUPS,
        EXT_EC_POINT_FORMATS,
        EXT_SIGNATURE_ALGORITHMS,
        EXT_ALPN,
        EXT_SUPPORTED_VERSIONS,
    )
)

#: TLSCiphertext.length may exceed 2^14 by at most 2048 (RFC 5246 §6.2.3); RFC 8446 §5.2
#: tightens that to 256, but an older server can still send the looser maximum.
MAX_RECORD: Final = 2**14 + 2048
#: The largest handshake message we buffer, except Certificate (see the module docstring).
MAX_MESSAGE: Final = 64 * 1024
MAX_CERTIFICATE_MESSAGE: Final = 256 * 1024

# ClientHello.quirks: the leniencies a hello needed (module docstring, "Leniency").
QUIRK_SSLV2: Final = "sslv2-hello"  # SSL 2.0-compatible format (RFC 5246 Appendix E.2)
QUIRK_ODD_CIPHERS: Final = "odd-cipher-suites-length"
QUIRK_NO_CIPHERS: Final = "no-cipher-suites"
QUIRK_NO_COMPRESSION: Final = "no-compression-methods"
QUIRK_STRAY_BYTE: Final = "stray-byte-after-compression-methods"

#: ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 8446 §4.1.3).
HELLO_RETRY_RANDOM: Final = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

# JA4's two-character version code (JA4.md "TLS and DTLS Version"); anything else is "00".
_JA4_VERSION: Final[dict[int, str]] = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
_JA4_EMPTY: Final = "000000000000"
# Bytes JA4 accepts as "alphanumeric" at either end of the first ALPN value: 0-9, A-Z, a-z.
_ALNUM: Final = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)


# RFC 8701 §2: GREASE code points are 0x0A0A, 0x1A1A, ..., 0xFAFA (both bytes equal, low
# nibble 0xA), reserved for cipher suites, extensions, groups, signature algorithms, versions.
_GREASE: Final = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def is_grease(value: int) -> bool:
    """Whether ``value`` is one of the 16 GREASE code points of RFC 8701 §2."""
    return value in _GREASE


def _strip_grease(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if v not in _GREASE]


def _dash(values: list[int] | tuple[int, ...]) -> str:
    return "-".join(map(str, values))


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """A ClientHello as sent: every list in wire order, GREASE values included.

    ``sni`` is the first ``host_name`` of the server_name extension (None when the extension is
    absent or holds no host name). ``alpn`` lists the offered protocols. ``supported_versions``
    is empty when the extension is absent (TLS 1.2 and older clients). ``quirks`` names the
    leniencies the hello needed (``QUIRK_*``), empty for a well-formed one.
    """

    legacy_version: int
    supported_versions: tuple[int, ...] = ()
    ciphers: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    sig_algs: tuple[int, ...] = ()
    quirks: tuple[str, ...] = ()

    def ja3_string(self) -> str:
        """JA3's input: ``SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats``.

        Decimal values joined by ``-``; GREASE dropped from the ciphers, extensions and curves
        (point formats are single bytes and cannot be GREASE). SSLVersion is the ClientHello's
        legacy_version, never supported_versions, as in Salesforce's reference code.
        """
        return ",".join(
            (
                str(self.legacy_version),
                _dash(_strip_grease(self.ciphers)),
                _dash(_strip_grease(self.extensions)),
                _dash(_strip_grease(self.groups)),
                _dash(self.point_formats),
            )
        )

    def ja3(self) -> str:
        """The JA3 fingerprint: lowercase MD5 hex of :meth:`ja3_string`."""
        return hashlib.md5(self.ja3_string().encode("ascii"), usedforsecurity=False).hexdigest()

    def tls_version(self) -> int:
        """The highest version offered: the largest non-GREASE supported_versions entry, else
        legacy_version (RFC 8446 §4.2.1: a TLS 1.3 client puts its real versions there)."""
        versions = _strip_grease(self.supported_versions)
        if versions and min(versions) >= 0xFE00:
            return min(versions)  # DTLS counts down: 0xFEFC (1.3) is newer than 0xFEFD (1.2)
        return max(versions) if versions else self.legacy_version

    def _ja4_parts(self, transport: str) -> tuple[str, str, str]:
        ciphers = _strip_grease(self.ciphers)
        extensions = _strip_grease(self.extensions)
        # Part a: transport, version, SNI flag, counts (GREASE excluded, SNI and ALPN
        # included, capped at 99), then the ALPN marker.
        version = _JA4_VERSION.get(self.tls_version(), "00")
        sni = "d" if EXT_SERVER_NAME in extensions else "i"
        head = (
            f"{transport}{version}{sni}{min(len(ciphers), 99):02d}"
            f"{min(len(extensions), 99):02d}{self._ja4_alpn()}"
        )
        # Part b: cipher suites as 4-digit lowercase hex, sorted.
        cipher_list = ",".join(sorted(f"{c:04x}" for c in ciphers))
        # Part c: extensions sorted, minus SNI and ALPN (already in part a so that the same
        # client gets the same c whatever the destination), then "_" and the signature
        # algorithms in wire order; no "_" when there are none.
        ext_list = ",".join(
            sorted(f"{e:04x}" for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
        )
        sig_algs = _strip_grease(self.sig_algs)
        if ext_list and sig_algs:
            ext_list += "_" + ",".join(f"{s:04x}" for s in sig_algs)
        return head, cipher_list, ext_list

    def _ja4_alpn(self) -> str:
        # "00" without a (non-empty) first value; its first and last characters when both are
        # ASCII alphanumeric; otherwise the first and last characters of its hex form.
        if not self.alpn or not self.alpn[0]:
            return "00"
        raw = self.alpn[0].encode("latin-1")
        if raw[0] in _ALNUM and raw[-1] in _ALNUM:
            return chr(raw[0]) + chr(raw[-1])
        text = raw.hex()
        return text[0] + text[-1]

    def ja4(self, transport: str = "t") -> str:
        """The JA4 fingerprint; ``transport`` is ``"t"`` (TCP), ``"q"`` (QUIC) or ``"d"`` (DTLS)."""
        head, cipher_list, ext_list = self._ja4_parts(transport)
        ciphers = _hash12(cipher_list) if cipher_list else _JA4_EMPTY
        extensions = _hash12(ext_list) if ext_list else _JA4_EMPTY
        return f"{head}_{ciphers}_{extensions}"

    def ja4_r(self, transport: str = "t") -> str:
        """JA4's raw (unhashed, sorted) form, ``JA4_r`` in FoxIO's tools."""
        return "_".join(self._ja4_parts(transport))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerHello:
    """A ServerHello (or HelloRetryRequest, which has the same shape: RFC 8446 §4.1.4)."""

    legacy_version: int
    supported_version: int | None = None
    cipher: int
    extensions: tuple[int, ...] = ()
    alpn: str | None = None
    hello_retry: bool = False

    def tls_version(self) -> int:
        """The version the server selected: supported_versions if sent, else legacy_version."""
        return self.legacy_version if self.supported_version is None else self.supported_version

    def ja3s_string(self) -> str:
        """JA3S's input: ``SSLVersion,Cipher,SSLExtension`` (decimal, extensions dash-joined)."""
        return f"{self.legacy_version},{self.cipher},{_dash(_strip_grease(self.extensions))}"

    def ja3s(self) -> str:
        """The JA3S fingerprint: lowercase MD5 hex of :meth:`ja3s_string`."""
        return hashlib.md5(self.ja3s_string().encode("ascii"), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class CertInfo:
    """One X.509 certificate, summarised the way Zeek's x509.log does.

    Only ``sha256`` (of the DER bytes) is always set; a certificate that ``cryptography`` cannot
    parse has nothing else. ``serial`` is uppercase hex of the serial's magnitude, two digits a
    byte (OpenSSL's ``i2a_ASN1_INTEGER``, which Zeek prints). ``not_before``/``not_after`` are
    microseconds since the Unix epoch, UTC. ``key_length`` is in bits (the curve size for EC;
    OpenSSL's ``EVP_PKEY_bits`` for Edwards keys: 253 for Ed25519, 456 for Ed448).
    """

    sha256: str
    subject: str | None = None
    issuer: str | None = None
    serial: str | None = None
    version: int | None = None
    not_before: int | None = None
    not_after: int | None = None
    key_alg: str | None = None
    key_length: int | None = None
    sig_alg: str | None = None
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    is_ca: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificates:
    """The server's Certificate message: leaf first, as sent (RFC 5246 §7.4.2)."""

    chain: tuple[CertInfo, ...]


# --------------------------------------------------------------------------------------------
# Message decoding
# --------------------------------------------------------------------------------------------


class DecodeError(ValueError):
    """A handshake message's body does not parse. Internal to the parsers: sessions turn it into
    a :class:`Malformed` event, it never reaches their callers."""


class _Reader:
    """Bounds-checked big-endian reads over ``buf[pos:end]``; short input is a DecodeError
    (the caller hands over whole messages, so a short field is a lie in a length, not a wait)."""

    __slots__ = ("_buf", "_end", "_pos")

    def __init__(self, buf: memoryview, pos: int = 0, end: int | None = None) -> None:
        self._buf = buf
        self._pos = pos
        self._end = len(buf) if end is None else end

    @property
    def buffer(self) -> memoryview:
        return self._buf

    @property
    def position(self) -> int:
        return self._pos

    @property
    def end(self) -> int:
        return self._end

    def remaining(self) -> int:
        return self._end - self._pos

    def _need(self, n: int, what: str) -> int:
        pos = self._pos
        if self._end - pos < n:
            raise DecodeError(f"{what}: needs {n} bytes, {self._end - pos} left")
        self._pos = pos + n
        return pos

    def u8(self, what: str) -> int:
        return self._buf[self._need(1, what)]

    def u16(self, what: str) -> int:
        pos = self._need(2, what)
        return (self._buf[pos] << 8) | self._buf[pos + 1]

    def u24(self, what: str) -> int:
        pos = self._need(3, what)
        b = self._buf
        return (b[pos] << 16) | (b[pos + 1] << 8) | b[pos + 2]

    def skip(self, n: int, what: str) -> None:
        self._need(n, what)

    def take(self, n: int, what: str) -> memoryview:
        pos = self._need(n, what)
        return self._buf[pos : pos + n]

    def vector(self, width: int, what: str) -> _Reader:
        """A length-prefixed vector (RFC 8446 §3.4) as a sub-reader; width is 1, 2 or 3."""
        if width == 1:
            n = self.u8(what)
        elif width == 2:
            n = self.u16(what)
        else:
            n = self.u24(what)
        pos = self._need(n, what)
        return _Reader(self._buf, pos, pos + n)

    def take_rest(self) -> memoryview:
        pos = self._pos
        self._pos = self._end
        return self._buf[pos : self._end]

    def u16s(self, what: str, *, odd_ok: bool = False) -> tuple[int, ...]:
        """The rest of this reader as a list of uint16. An odd length is a DecodeError, or with
        ``odd_ok`` its last byte is skipped."""
        n = self._end - self._pos
        if n % 2 and not odd_ok:
            raise DecodeError(f"{what}: odd length {n}")
        pos = self._need(n, what)
        return struct.unpack_from(f">{n // 2}H", self._buf, pos)

    def u8s(self) -> tuple[int, ...]:
        pos = self._pos
        self._pos = self._end
        return tuple(self._buf[pos : self._end])

    def done(self, what: str) -> None:
        if self._pos != self._end:
            raise DecodeError(f"{what}: {self._end - self._pos} trailing bytes")


_EXT_HEADER: Final = struct.Struct(">HH")


def _extensions(r: _Reader, what: str) -> list[tuple[int, int, int]]:
    """The extensions block as (type, start, end) spans, if there is a block at all (RFC 5246
    §7.4.1.2: old hellos have none; RFC 8446 §4.1.2). Spans, not sub-readers: a hello has
    15-20 extensions and we decode six, so the rest should cost one unpack each."""
    if r.remaining() == 0:
        return []
    block = r.vector(2, f"{what} extensions")
    r.done(what)
    buf, pos, end = block.buffer, block.position, block.end
    out: list[tuple[int, int, int]] = []
    while pos < end:
        if end - pos < 4:
            raise DecodeError(f"{what} extensions: {end - pos} stray bytes")
        ext_type, length = _EXT_HEADER.unpack_from(buf, pos)
        pos += 4
        if end - pos < length:
            raise DecodeError(f"extension {ext_type}: needs {length} bytes, {end - pos} left")
        out.append((ext_type, pos, pos + length))
        pos += length
    return out


def _latin1(raw: memoryview) -> str:
    return bytes(raw).decode("latin-1")


def _alpn_list(r: _Reader) -> tuple[str, ...]:
    # RFC 7301 §3.1: ProtocolNameList <2..2^16-1> of ProtocolName <1..2^8-1>. An empty name is
    # tolerated (JA4 defines its marker for one), any other framing error is not.
    names = r.vector(2, "ALPN protocol_name_list")
    r.done("ALPN extension")
    out: list[str] = []
    while names.remaining():
        out.append(_latin1(names.vector(1, "ALPN protocol name").take_rest()))
    return tuple(out)


def decode_client_hello(body: bytes | memoryview) -> ClientHello:
    """Decode a ClientHello message body (after the 4-byte handshake header).

    Raises :class:`DecodeError` when a length field disagrees with the data. Unknown extensions
    are kept by type only; repeated extensions (RFC 8446 §4.2 forbids them) are kept in
    ``extensions`` as sent and the first one's content is used, so an odd client still gets a
    fingerprint.
    """
    r = _Reader(memoryview(body))
    # RFC 8446 §4.1.2 / RFC 5246 §7.4.1.2.
    legacy_version = r.u16("legacy_version")
    r.skip(32, "random")
    session_id = r.vector(1, "legacy_session_id")
    if session_id.remaining() > 32:
        raise DecodeError(f"legacy_session_id: {session_id.remaining()} bytes, at most 32")
    quirks: list[str] = []
    suites = r.vector(2, "cipher_suites")
    if suites.remaining() % 2:
        # Wireshark warns "1 trailing byte was unprocessed" and fingerprints the suites
        # before it; a JA3 from the whole ones is the only one there can be.
        quirks.append(QUIRK_ODD_CIPHERS)
    ciphers = suites.u16s("cipher_suites", odd_ok=True)
    if not ciphers:
        quirks.append(QUIRK_NO_CIPHERS)  # <2..2^16-2>: a Wireshark warning, not an error
    if r.vector(1, "legacy_compression_methods").remaining() == 0:
        quirks.append(QUIRK_NO_COMPRESSION)  # <1..2^8-1>: likewise a warning
    if r.remaining() == 1:
        # One byte where the 2-byte extensions length would be: no extensions block can
        # start there. Wireshark still prints a JA3 for such a hello, nDPI reads on to the
        # ServerHello; we take the hello as having no extensions.
        quirks.append(QUIRK_STRAY_BYTE)
        r.skip(1, "stray byte")

    ext_types: list[int] = []
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    groups: tuple[int, ...] = ()
    point_formats: tuple[int, ...] = ()
    sig_algs: tuple[int, ...] = ()
    versions: tuple[int, ...] = ()
    seen: set[int] = set()
    buf = r.buffer
    for ext_type, start, end in _extensions(r, "ClientHello"):
        ext_types.append(ext_type)
        if ext_type not in _CLIENT_DECODED or ext_type in seen:
            continue
        seen.add(ext_type)
        data = _Reader(buf, start, end)
        if ext_type == EXT_SERVER_NAME:
            # RFC 6066 §3: ServerNameList <1..2^16-1> of (NameType, opaque HostName<1..2^16-1>).
            # The client sends an empty extension when resuming (the server echoes one
            # empty too); either way we report the first host_name if there is one.
            if data.remaining():
                names = data.vector(2, "server_name_list")
                data.done("server_name extension")
                while names.remaining():
                    name_type = names.u8("server name type")
                    name = names.vector(2, "server name").take_rest()
                    if name_type == 0 and sni is None:
                        sni = _latin1(name)
        elif ext_type == EXT_ALPN:
            alpn = _alpn_list(data)
        elif ext_type == EXT_SUPPORTED_GROUPS:
            groups = data.vector(2, "supported_groups").u16s("supported_groups")
            data.done("supported_groups extension")
        elif ext_type == EXT_EC_POINT_FORMATS:
            point_formats = data.vector(1, "ec_point_formats").u8s()
            data.done("ec_point_formats extension")
        elif ext_type == EXT_SIGNATURE_ALGORITHMS:
            sig_algs = data.vector(2, "signature_algorithms").u16s("signature_algorithms")
            data.done("signature_algorithms extension")
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            # RFC 8446 §4.2.1: in a ClientHello, ProtocolVersion versions<2..254>.
            versions = data.vector(1, "supported_versions").u16s("supported_versions")
            data.done("supported_versions extension")
    return ClientHello(
        legacy_version=legacy_version,
        supported_versions=versions,
        ciphers=ciphers,
        extensions=tuple(ext_types),
        sni=sni,
        alpn=alpn,
        groups=groups,
        point_formats=point_formats,
        sig_algs=sig_algs,
        quirks=tuple(quirks),
    )


#: The fixed part of an SSL 2.0 CLIENT-HELLO after its message type: version, then the lengths
#: of the cipher specs, the session ID and the challenge.
_SSLV2_HELLO: Final = struct.Struct(">HHHH")


def decode_sslv2_client_hello(body: bytes | memoryview) -> ClientHello:
    """Decode an SSL 2.0-compatible CLIENT-HELLO (RFC 5246 Appendix E.2; SSL 2.0 draft
    "CLIENT-HELLO"): the message after its type byte (1) and the 2-byte record header.

    It carries no extensions. Its cipher specs are 3 bytes; a TLS cipher suite is sent as
    {0x00, suite} and an SSL 2.0-only kind has a non-zero first byte and no TLS code point,
    so only the former are kept, as TLS suites, in ``ciphers`` (and so in JA3/JA4).
    Raises :class:`DecodeError` when the lengths disagree with the message.
    """
    view = memoryview(body)
    if len(view) < _SSLV2_HELLO.size:
        raise DecodeError(f"SSLv2 CLIENT-HELLO: {len(view)} bytes, at least 8 required")
    version, specs_len, session_len, challenge_len = _SSLV2_HELLO.unpack_from(view, 0)
    if specs_len % 3:
        raise DecodeError(f"SSLv2 cipher specs: length {specs_len} is not a multiple of 3")
    if session_len > 32 or challenge_len > 32:
        raise DecodeError("SSLv2 CLIENT-HELLO: session ID or challenge over 32 bytes")
    if _SSLV2_HELLO.size + specs_len + session_len + challenge_len != len(view):
        raise DecodeError("SSLv2 CLIENT-HELLO: lengths disagree with the message length")
    specs = view[_SSLV2_HELLO.size : _SSLV2_HELLO.size + specs_len]
    ciphers = tuple(
        (specs[i + 1] << 8) | specs[i + 2] for i in range(0, specs_len, 3) if specs[i] == 0
    )
    return ClientHello(legacy_version=version, ciphers=ciphers, quirks=(QUIRK_SSLV2,))


def decode_server_hello(body: bytes | memoryview) -> ServerHello:
    """Decode a ServerHello (or HelloRetryRequest) body; raises :class:`DecodeError`."""
    r = _Reader(memoryview(body))
    # RFC 8446 §4.1.3 / RFC 5246 §7.4.1.3.
    legacy_version = r.u16("legacy_version")
    random = r.take(32, "random")
    selected: int | None = None
    draft = legacy_version == 0x0304 or (
        legacy_version >> 8 == 0x7F and legacy_version & 0xFF < 22
    )
    if draft:
        # TLS 1.3 drafts before -22 (draft-ietf-tls-tls13-NN is 0x7fNN) had no session ID
        # and compression fields in ServerHello and put the draft version in its version
        # field; -22 restored the TLS 1.2 layout for middleboxes. Browsers shipped these
        # drafts in 2016-2017, and Zeek's test captures still hold some. Drafts before -16
        # had no draft numbers yet and sent 0x0304 there, which no other ServerHello does
        # (TLS 1.3 proper sends 0x0303 and supported_versions: RFC 8446 §4.1.3).
        selected = legacy_version
    else:
        session_id = r.vector(1, "legacy_session_id_echo")
        if session_id.remaining() > 32:
            raise DecodeError(f"legacy_session_id_echo: {session_id.remaining()} bytes, max 32")
    cipher = r.u16("cipher_suite")
    if not draft:
        r.u8("legacy_compression_method")
    ext_types: list[int] = []
    alpn: str | None = None
    buf = r.buffer
    for ext_type, start, end in _extensions(r, "ServerHello"):
        ext_types.append(ext_type)
        if ext_type == EXT_SUPPORTED_VERSIONS and not draft and selected is None:
            # RFC 8446 §4.2.1: in a ServerHello, one ProtocolVersion selected_version.
            data = _Reader(buf, start, end)
            selected = data.u16("selected_version")
            data.done("supported_versions extension")
        elif ext_type == EXT_ALPN and alpn is None:
            # RFC 7301 §3.1: the server's list holds exactly one name; we take the first.
            names = _alpn_list(_Reader(buf, start, end))
            alpn = names[0] if names else None
    return ServerHello(
        legacy_version=legacy_version,
        supported_version=selected,
        cipher=cipher,
        extensions=tuple(ext_types),
        alpn=alpn,
        hello_retry=random == HELLO_RETRY_RANDOM,
    )


def decode_certificates(body: bytes | memoryview) -> Certificates:
    """Decode a TLS 1.2-and-older Certificate body (RFC 5246 §7.4.2): ``certificate_list``
    <0..2^24-1> of ``ASN.1Cert`` <1..2^24-1>. Raises :class:`DecodeError` on bad framing only;
    a certificate whose DER does not parse still yields a :class:`CertInfo` (its hash)."""
    r = _Reader(memoryview(body))
    certs = r.vector(3, "certificate_list")
    r.done("Certificate")
    chain: list[CertInfo] = []
    while certs.remaining():
        der = certs.vector(3, "ASN.1Cert").take_rest()
        if not der:
            raise DecodeError("ASN.1Cert: empty")
        chain.append(cert_info(bytes(der)))
    return Certificates(chain=tuple(chain))


def _serial_hex(serial: int) -> str:
    # OpenSSL's i2a_ASN1_INTEGER: the magnitude's bytes as %02X, "-" first when negative
    # (RFC 5280 §4.1.2.2 forbids that, but such certificates exist), "00" for zero.
    digits = f"{abs(serial):X}"
    if len(digits) % 2:
        digits = "0" + digits
    return ("-" if serial < 0 else "") + digits


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _ONE_MICROSECOND


_name_overrides: dict[ObjectIdentifier, str] | None = None


def _openssl_names() -> dict[ObjectIdentifier, str]:
    """Attribute names for ``rfc4514_string``: OpenSSL's short names where cryptography would
    print another name or a dotted OID, so subjects read as in Zeek's x509.log (which prints
    them with OpenSSL's ``X509_NAME_print_ex``): ``street``, ``postalCode``, ``emailAddress``.

    Built on first use, which also installs a warnings filter: a peer controls the
    certificates (a negative serial, say, makes cryptography warn on every parse) and a warning
    per connection would flood logs. The filter covers cryptography's deprecation warnings
    raised from this module and nothing else.
    """
    global _name_overrides
    if _name_overrides is not None:
        return _name_overrides
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning
    from cryptography.x509.oid import NameOID

    warnings.filterwarnings(
        "ignore", category=CryptographyDeprecationWarning, module=r"hopguard\.parsers\.tls$"
    )
    _name_overrides = {
        NameOID.STREET_ADDRESS: "street",
        NameOID.POSTAL_CODE: "postalCode",
        NameOID.EMAIL_ADDRESS: "emailAddress",
        NameOID.SERIAL_NUMBER: "serialNumber",
        NameOID.BUSINESS_CATEGORY: "businessCategory",
        NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionC",
        NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME: "jurisdictionST",
        NameOID.JURISDICTION_LOCALITY_NAME: "jurisdictionL",
        NameOID.SURNAME: "SN",
        NameOID.GIVEN_NAME: "GN",
        NameOID.TITLE: "title",
        NameOID.INITIALS: "initials",
        NameOID.GENERATION_QUALIFIER: "generationQualifier",
        NameOID.DN_QUALIFIER: "dnQualifier",
        NameOID.PSEUDONYM: "pseudonym",
        NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
        NameOID.X500_UNIQUE_IDENTIFIER: "x500UniqueIdentifier",
        NameOID.UNSTRUCTURED_NAME: "unstructuredName",
    }
    return _name_overrides


@functools.lru_cache(maxsize=4096)
def cert_info(der: bytes) -> CertInfo:
    """Summarise one DER certificate; never raises (see :class:`CertInfo`). Memoised: the
    same few server certificates come back on every connection to those servers."""
    digest = hashlib.sha256(der).hexdigest()
    # Imported here: cryptography costs tens of milliseconds to import and most users of this
    # module only want hellos.
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    names = _openssl_names()
    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string(names)
        issuer = cert.issuer.rfc4514_string(names)
        serial = _serial_hex(cert.serial_number)
        version = cert.version.value + 1  # v1 is encoded as 0 (RFC 5280 §4.1.2.1)
        not_before = _micros(cert.not_valid_before_utc)
        not_after = _micros(cert.not_valid_after_utc)
        sig_alg = cert.signature_algorithm_oid._name
    except Exception:  # any parse failure: the certificate is opaque to us
        return CertInfo(sha256=digest)

    key_alg: str | None = None
    key_length: int | None = None
    try:
        key = cert.public_key()
    except Exception:  # unsupported key type (GOST, SM2...) or a broken key encoding
        key = None
    if isinstance(key, rsa.RSAPublicKey):
        key_alg, key_length = "rsa", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key_alg, key_length = "ecdsa", key.curve.key_size
    elif isinstance(key, dsa.DSAPublicKey):
        key_alg, key_length = "dsa", key.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key_alg, key_length = "ed25519", 253
    elif isinstance(key, ed448.Ed448PublicKey):
        key_alg, key_length = "ed448", 456
    elif key is not None:
        # DH (deprecated in cryptography, so not named here), X25519, X448: the type's name.
        key_alg = type(key).__name__.removesuffix("PublicKey").lower()

    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    is_ca: bool | None = None
    try:
        extensions = cert.extensions
    except Exception:  # a malformed or duplicated extension: keep the core fields
        extensions = None
    if extensions is not None:
        with contextlib.suppress(x509.ExtensionNotFound):
            san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            san_dns = tuple(san.get_values_for_type(x509.DNSName))
            san_ip = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        with contextlib.suppress(x509.ExtensionNotFound):
            is_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    return CertInfo(
        sha256=digest,
        subject=subject,
        issuer=issuer,
        serial=serial,
        version=version,
        not_before=not_before,
        not_after=not_after,
        key_alg=key_alg,
        key_length=key_length,
        sig_alg=sig_alg,
        san_dns=san_dns,
        san_ip=san_ip,
        is_ca=is_ca,
    )


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _record_prefix_error(head: memoryview | bytes, first_orig: bool) -> str | None:
    """Why ``head`` (at most 5 bytes: a record header's start) cannot start a record, or None."""
    n = len(head)
    if n >= 1:
        ctype = head[0]
        if first_orig and ctype != CT_HANDSHAKE:
            # An SSL 2.0 record header has the high bit set in its first byte, a length in its
            # second and the message type (1, client-hello) in its third: wait to see it. The
            # caller parses such a hello (_sslv2_hello); this only vets the prefix.
            if ctype & 0x80 and (n < 3 or head[2] == HS_CLIENT_HELLO):
                return None
            return f"first record has content type {ctype}, expected handshake (22)"
        if not CT_CHANGE_CIPHER_SPEC <= ctype <= CT_HEARTBEAT:
            return f"unknown record content type {ctype}"
    # ProtocolVersion {3, 0..4}: SSL 3.0 to TLS 1.3 (RFC 8446 §5.1 fixes it at 0x0303, or
    # 0x0301 in a first ClientHello, but SSL 3.0 and TLS 1.0-1.2 stacks vary it).
    if n >= 2 and head[1] != 3:
        return f"record version major byte {head[1]}, expected 3"
    if n >= 3 and head[2] > 4:
        return f"record version 3.{head[2]} is not SSL 3.0 to TLS 1.3"
    return None


def looks_like_tls(head: bytes) -> bool:
    """Whether a client's first bytes start a TLS handshake record.

    Content type 22, version major 3, minor 0 to 4. With fewer than three bytes, whether those
    bytes are consistent with that; empty input is no evidence and gives False. Or an SSL
    2.0-compatible CLIENT-HELLO, which needs its first five bytes to be told from other binary
    protocols (see :func:`_looks_like_sslv2_hello`).
    """
    if not head:
        return False
    if head[0] != CT_HANDSHAKE:
        return _looks_like_sslv2_hello(head)
    return _record_prefix_error(head[:3], first_orig=True) is None


def _looks_like_sslv2_hello(head: bytes) -> bool:
    """An SSL 2.0 record header (high bit set, 15-bit length) holding a CLIENT-HELLO (type 1)
    of version 2.0 (0x0002) or SSL 3.0 to TLS 1.3 (RFC 5246 Appendix E.2); with its three
    length fields present, they must add up to the record's length."""
    if len(head) < 5 or not head[0] & 0x80 or head[2] != HS_CLIENT_HELLO:
        return False
    if (head[3], head[4]) != (0, 2) and (head[3] != 3 or head[4] > 4):
        return False
    length = ((head[0] & 0x7F) << 8) | head[1]
    if length < 1 + _SSLV2_HELLO.size:
        return False
    if len(head) >= 11:
        _, specs, session, challenge = _SSLV2_HELLO.unpack_from(head, 3)
        total: int = 1 + _SSLV2_HELLO.size + specs + session + challenge
        return specs % 3 == 0 and total == length
    return True


# --------------------------------------------------------------------------------------------
# The session
# --------------------------------------------------------------------------------------------


class _DirectionState:
    """One direction's buffers and progress (see the module docstring)."""

    __slots__ = ("consumed", "finished", "handshake", "handshake_start", "records")

    def __init__(self) -> None:
        self.records = bytearray()  # the unfinished record (header included)
        self.consumed = 0  # stream offset of records[0]
        self.handshake = bytearray()  # the unfinished handshake message (header included)
        self.handshake_start = 0  # stream offset of the record body where handshake[0] was
        self.finished = False


class TlsSession:
    """Parse one TLS connection's handshake (see the module docstring).

    ``feed(direction, data)`` returns :class:`ClientHello`, :class:`ServerHello`,
    :class:`Certificates` and :class:`~hopguard.parsers.base.Malformed` events.
    """

    def __init__(self) -> None:
        self.done = False
        self._dirs = (_DirectionState(), _DirectionState())
        self._sslv2 = False  # the client opened with an SSL 2.0-compatible CLIENT-HELLO
        self._server_hello = False
        # The server's hello (or HelloRetryRequest) selected TLS 1.3: a ChangeCipherSpec is
        # then only a middlebox-compatibility dummy (RFC 8446 §D.4), not the start of
        # encryption, and plaintext handshake records may still follow after a HRR.
        self._tls13 = False

    def feed(self, direction: int, data: bytes) -> list[object]:
        if direction != ORIG and direction != RESP:
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        state = self._dirs[direction]
        if self.done or state.finished or not data:
            return []
        events: list[object] = []
        if state.records:
            state.records += data
            buf: bytes | bytearray = state.records
        else:
            buf = data
        view = memoryview(buf)
        try:
            used = self._records(direction, state, view, events)
            rest = bytes(view[used:]) if buf is data else b""
        finally:
            view.release()
        if self.done or state.finished:
            state.records = bytearray()
            state.handshake = bytearray()
        elif buf is data:
            state.records = bytearray(rest)
        else:
            del state.records[:used]
        state.consumed += used
        return events

    def _fail(self, direction: int, offset: int, reason: str, events: list[object]) -> None:
        events.append(Malformed(direction=direction, offset=offset, reason=reason))
        self.done = True
        for state in self._dirs:
            state.records = bytearray()
            state.handshake = bytearray()

    def _finish(self, state: _DirectionState) -> None:
        state.finished = True
        if self._dirs[ORIG].finished and self._dirs[RESP].finished:
            self.done = True

    def _records(
        self, direction: int, state: _DirectionState, view: memoryview, events: list[object]
    ) -> int:
        """Parse whole records from ``view``; returns how many bytes were consumed."""
        pos = 0
        end = len(view)
        while not (self.done or state.finished):
            first_orig = direction == ORIG and state.consumed + pos == 0
            avail = end - pos
            if avail and view[pos] & 0x80 and state.consumed + pos == 0:
                if first_orig:
                    used = self._sslv2_hello(state, view, pos, events)
                    if not used:
                        break  # NEED_DATA, or Malformed
                    pos += used
                    continue
                if self._sslv2:
                    # A server that speaks only SSL 2.0 answers in its record format
                    # (SERVER-HELLO, certificate inside): nothing we read.
                    self._finish(state)
                    break
            if avail < 5:
                # Check the partial header now, so that garbage is reported on its first
                # byte rather than once five bytes have accumulated.
                error = _record_prefix_error(view[pos:end], first_orig) if avail else None
                if error is not None:
                    self._fail(direction, state.consumed + pos, error, events)
                break
            error = _record_prefix_error(view[pos : pos + 3], first_orig)
            if error is not None:
                self._fail(direction, state.consumed + pos, error, events)
                break
            ctype = view[pos]
            length = (view[pos + 3] << 8) | view[pos + 4]
            if length > MAX_RECORD:
                self._fail(
                    direction,
                    state.consumed + pos,
                    f"record length {length} exceeds {MAX_RECORD} (RFC 5246 §6.2.3)",
                    events,
                )
                break
            if length == 0 and ctype != CT_APPLICATION_DATA:
                # RFC 5246 §6.2.1 / RFC 8446 §5.1: no zero-length handshake, alert or CCS.
                self._fail(
                    direction, state.consumed + pos, f"empty record of type {ctype}", events
                )
                break
            if avail - 5 < length:
                break  # NEED_DATA: the record is not complete yet
            body_offset = state.consumed + pos + 5
            body = view[pos + 5 : pos + 5 + length]
            pos += 5 + length
            if ctype == CT_HANDSHAKE:
                self._handshake(direction, state, body, body_offset, events)
            elif ctype == CT_CHANGE_CIPHER_SPEC:
                if not self._tls13:
                    self._finish(state)
            elif ctype == CT_APPLICATION_DATA:
                self._finish(state)
            # Alerts and heartbeats carry nothing we record.
        return pos

    def _sslv2_hello(
        self, state: _DirectionState, view: memoryview, pos: int, events: list[object]
    ) -> int:
        """Parse an SSL 2.0-compatible CLIENT-HELLO at the start of the client's stream;
        returns the bytes it used, 0 for NEED_DATA or after a Malformed."""
        avail = len(view) - pos
        error = _record_prefix_error(view[pos : pos + min(avail, 3)], first_orig=True)
        if error is not None:
            self._fail(ORIG, pos, error, events)
            return 0
        if avail < 3:
            return 0
        # RFC 5246 Appendix E.2: a 2-byte header (high bit set, 15-bit length), no padding.
        length = ((view[pos] & 0x7F) << 8) | view[pos + 1]
        if length > MAX_RECORD:
            self._fail(ORIG, pos, f"SSLv2 record length {length} exceeds {MAX_RECORD}", events)
            return 0
        if avail - 2 < length:
            return 0
        try:
            hello = decode_sslv2_client_hello(view[pos + 3 : pos + 2 + length])
        except DecodeError as exc:
            self._fail(ORIG, pos, str(exc), events)
            return 0
        events.append(hello)
        self._sslv2 = True
        self._finish(state)
        if hello.legacy_version < 0x0300:
            # A pure SSL 2.0 client: the server answers in SSL 2.0 records too, or not at all.
            self._finish(self._dirs[RESP])
        return 2 + length

    def _handshake(
        self,
        direction: int,
        state: _DirectionState,
        body: memoryview,
        body_offset: int,
        events: list[object],
    ) -> None:
        """Add one handshake record's body to the message stream and parse whole messages."""
        if not state.handshake:
            # Fast path: parse straight out of the record, copy only an unfinished tail.
            used = self._messages(direction, body, body_offset, events)
            if used < len(body) and not self.done:
                state.handshake += body[used:]
                state.handshake_start = body_offset + used
            return
        state.handshake += body
        view = memoryview(state.handshake)
        try:
            used = self._messages(direction, view, state.handshake_start, events)
        finally:
            view.release()
        if self.done:
            return
        del state.handshake[:used]
        if used and len(state.handshake) <= len(body):
            # The unfinished message starts inside this record: point at it for Malformed.
            state.handshake_start = body_offset + len(body) - len(state.handshake)

    def _messages(
        self, direction: int, view: memoryview, offset: int, events: list[object]
    ) -> int:
        """Parse whole handshake messages from ``view``; returns the bytes consumed."""
        pos = 0
        end = len(view)
        state = self._dirs[direction]
        while end - pos >= 4 and not (self.done or state.finished):
            msg_type = view[pos]
            length = (view[pos + 1] << 16) | (view[pos + 2] << 8) | view[pos + 3]
            limit = MAX_CERTIFICATE_MESSAGE if msg_type == HS_CERTIFICATE else MAX_MESSAGE
            if length > limit:
                self._fail(
                    direction,
                    offset + pos,
                    f"handshake message type {msg_type} claims {length} bytes, limit {limit}",
                    events,
                )
                break
            if end - pos - 4 < length:
                break  # NEED_DATA
            body = view[pos + 4 : pos + 4 + length]
            try:
                self._message(direction, msg_type, body, events)
            except DecodeError as exc:
                self._fail(direction, offset + pos, f"handshake type {msg_type}: {exc}", events)
                break
            pos += 4 + length
        return pos

    def _message(
        self, direction: int, msg_type: int, body: memoryview, events: list[object]
    ) -> None:
        state = self._dirs[direction]
        if direction == ORIG:
            # The client's first handshake message is its ClientHello (RFC 8446 §4.1.2);
            # after it the client has nothing we record.
            if msg_type != HS_CLIENT_HELLO:
                raise DecodeError("expected ClientHello (type 1) as the first client message")
            events.append(decode_client_hello(body))
            self._finish(state)
            return
        if not self._server_hello and msg_type != HS_SERVER_HELLO:
            raise DecodeError("expected ServerHello (type 2) as the first server message")
        if msg_type == HS_SERVER_HELLO:
            hello = decode_server_hello(body)
            events.append(hello)
            self._server_hello = True
            # A server negotiating TLS 1.2 or older MUST NOT send supported_versions (RFC 8446
            # §4.2.1), so its presence means TLS 1.3 (or one of its drafts).
            self._tls13 = hello.supported_version is not None
            if self._tls13 and not hello.hello_retry:
                self._finish(state)  # the rest of the server's flight is encrypted
            elif hello.hello_retry:
                # A HelloRetryRequest: the client answers with a second ClientHello
                # (RFC 8446 §4.1.4), which has its own fingerprint; read it too.
                self._server_hello = False
                self._dirs[ORIG].finished = False
        elif msg_type == HS_CERTIFICATE:
            events.append(decode_certificates(body))
            self._finish(state)
        elif msg_type == HS_SERVER_HELLO_DONE:
            self._finish(state)  # the server flight ended without a certificate
