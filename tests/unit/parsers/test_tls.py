"""TLS handshake parser: real hellos from Python's ssl over MemoryBIO, and hand-built ones.

The hand-built hellos check JA3/JA4 strings worked out by hand from the specs (JA4.md's own
example included); the ssl ones check that a real OpenSSL handshake parses the same whether it
arrives whole, byte by byte or in random pieces.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.ciphers import cipher_name
from hopguard.parsers.tls import (
    HELLO_RETRY_RANDOM,
    MAX_MESSAGE,
    QUIRK_NO_CIPHERS,
    QUIRK_NO_COMPRESSION,
    QUIRK_ODD_CIPHERS,
    QUIRK_SSLV2,
    QUIRK_STRAY_BYTE,
    Certificates,
    CertInfo,
    ClientHello,
    ServerHello,
    TlsSession,
    cert_info,
    decode_client_hello,
    decode_server_hello,
    decode_sslv2_client_hello,
    is_grease,
    looks_like_tls,
)

# --------------------------------------------------------------------------------------------
# Wire builders (RFC 8446 §3 presentation language: vectors carry their length first)
# --------------------------------------------------------------------------------------------


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def vec(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width, "big") + data


def u16s(values: list[int]) -> bytes:
    return b"".join(u16(v) for v in values)


def ext(ext_type: int, data: bytes = b"") -> bytes:
    return u16(ext_type) + vec(2, data)


def sni_ext(name: bytes) -> bytes:
    return ext(0, vec(2, b"\x00" + vec(2, name)))


def alpn_ext(*names: bytes) -> bytes:
    return ext(16, vec(2, b"".join(vec(1, n) for n in names)))


def groups_ext(*groups: int) -> bytes:
    return ext(10, vec(2, u16s(list(groups))))


def point_formats_ext(*formats: int) -> bytes:
    return ext(11, vec(1, bytes(formats)))


def sig_algs_ext(*algs: int) -> bytes:
    return ext(13, vec(2, u16s(list(algs))))


def versions_ext(*versions: int) -> bytes:
    return ext(43, vec(1, u16s(list(versions))))


def handshake(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + vec(3, body)


def record(content_type: int, data: bytes, version: int = 0x0303) -> bytes:
    return bytes([content_type]) + u16(version) + vec(2, data)


def client_hello_body(
    ciphers: list[int], extensions: list[bytes] | None, *, legacy: int = 0x0303
) -> bytes:
    body = u16(legacy) + bytes(32) + vec(1, bytes(32)) + vec(2, u16s(ciphers)) + vec(1, b"\x00")
    if extensions is not None:
        body += vec(2, b"".join(extensions))
    return body


def client_hello(ciphers: list[int], extensions: list[bytes] | None, **kw: int) -> bytes:
    return handshake(1, client_hello_body(ciphers, extensions, **kw))


def server_hello(
    cipher: int,
    extensions: list[bytes] | None = None,
    *,
    legacy: int = 0x0303,
    random_: bytes = bytes(range(32)),
) -> bytes:
    body = u16(legacy) + random_ + vec(1, b"") + u16(cipher) + b"\x00"
    if extensions is not None:
        body += vec(2, b"".join(extensions))
    return handshake(2, body)


def certificate_msg(*ders: bytes) -> bytes:
    return handshake(11, vec(3, b"".join(vec(3, d) for d in ders)))


CCS = record(20, b"\x01")


def feed_all(session: TlsSession, direction: int, data: bytes) -> list[object]:
    return session.feed(direction, data)


def feed_bytewise(session: TlsSession, direction: int, data: bytes) -> list[object]:
    events: list[object] = []
    for i in range(len(data)):
        events += session.feed(direction, data[i : i + 1])
    return events


def feed_random(
    session: TlsSession, direction: int, data: bytes, rng: random.Random
) -> list[object]:
    events: list[object] = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 300)
        events += session.feed(direction, data[pos : pos + step])
        pos += step
    return events


# --------------------------------------------------------------------------------------------
# JA4: FoxIO's documented example (technical_details/JA4.md)
# --------------------------------------------------------------------------------------------

SPEC_CIPHERS = [
    0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
    0x009C, 0x009D, 0x002F, 0x0035,
]  # fmt: skip
SPEC_SIGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def spec_extensions(*, grease: bool = False, sigs: list[int] | None = None) -> list[bytes]:
    """JA4.md's example extension order: 001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,
    0012,002b,ff01,000b,000a,0015 (contents made up where JA4 does not look)."""
    sig_list = SPEC_SIGS if sigs is None else sigs
    exts = [
        ext(0x001B, b"\x02\x00\x02"),
        sni_ext(b"example.com"),
        ext(0x0033, vec(2, u16(0x001D) + vec(2, bytes(32)))),
        alpn_ext(b"h2", b"http/1.1"),
        ext(0x4469, vec(2, vec(1, b"h2"))),
        ext(0x0017),
        ext(0x002D, vec(1, b"\x01")),
        sig_algs_ext(*([0x0A0A] if grease else []), *sig_list),
        ext(0x0005, b"\x01\x00\x00\x00\x00"),
        ext(0x0023),
        ext(0x0012),
        versions_ext(*([0x3A3A] if grease else []), 0x0304, 0x0303),
        ext(0xFF01, b"\x00"),
        point_formats_ext(0),
        groups_ext(*([0x4A4A] if grease else []), 0x001D, 0x0017, 0x0018),
        ext(0x0015, bytes(20)),
    ]
    if grease:  # Chrome puts GREASE extensions first and last
        exts = [ext(0x1A1A), *exts, ext(0xDADA, b"\x00")]
    return exts


def spec_hello(*, grease: bool = False, sigs: list[int] | None = None) -> ClientHello:
    ciphers = ([0x2A2A] if grease else []) + SPEC_CIPHERS
    exts = spec_extensions(grease=grease, sigs=sigs)
    events = TlsSession().feed(ORIG, record(22, client_hello(ciphers, exts), version=0x0301))
    assert len(events) == 1 and isinstance(events[0], ClientHello)
    return events[0]


def test_ja4_matches_foxio_documented_example() -> None:
    hello = spec_hello()
    assert hello.ja4() == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert hello.ja4_r() == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
        "_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
        "_0403,0804,0401,0503,0805,0501,0806,0601"
    )
    assert hello.ja4("q").startswith("q13d1516h2_")


def test_ja4_ignores_grease_everywhere() -> None:
    hello = spec_hello(grease=True)
    assert 0x2A2A in hello.ciphers and 0x1A1A in hello.extensions  # kept as sent
    assert hello.ja4() == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert hello.tls_version() == 0x0304


def test_ja4_without_signature_algorithms_has_no_underscore() -> None:
    # JA4.md: "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01 =
    # 6d807ffa2a79" when there are no signature algorithms.
    hello = spec_hello(sigs=[])
    assert hello.ja4().endswith("_6d807ffa2a79")


def test_ja4_empty_lists_hash_to_zeros() -> None:
    # A TLS 1.0 hello without an extensions block: version from legacy_version, no SNI, no
    # ALPN, and "000000000000" for the empty extension part.
    body = client_hello([0x002F], None, legacy=0x0301)
    (hello,) = TlsSession().feed(ORIG, record(22, body, version=0x0301))
    assert isinstance(hello, ClientHello)
    assert hello.extensions == () and hello.supported_versions == ()
    cipher_hash = hashlib.sha256(b"002f").hexdigest()[:12]
    assert hello.ja4() == f"t10i010000_{cipher_hash}_000000000000"
    assert hello.ja3_string() == "769,47,,,"


@pytest.mark.parametrize(
    ("legacy", "versions", "code"),
    [
        (0x0303, (), "12"),
        (0x0302, (), "11"),
        (0x0300, (), "s3"),
        (0x0303, (0x7F1C,), "00"),  # a TLS 1.3 draft version is not in JA4's table
        (0x0303, (0x0A0A, 0x0303, 0x0302), "12"),
        (0x0303, (0xFAFA,), "12"),  # only GREASE: fall back to legacy_version
        (0x9999, (), "00"),
    ],
)
def test_ja4_version_code(legacy: int, versions: tuple[int, ...], code: str) -> None:
    exts = [versions_ext(*versions)] if versions else []
    hello = decode_client_hello(client_hello_body([0x002F], exts, legacy=legacy))
    assert hello.ja4()[1:3] == code


def test_ja4_counts_cap_at_99() -> None:
    ciphers = list(range(1, 121))
    exts = [ext(0x1000 + i) for i in range(105)]
    hello = decode_client_hello(client_hello_body(ciphers, exts))
    assert hello.ja4()[:10] == "t12i999900"


@pytest.mark.parametrize(
    ("first", "marker"),
    [
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"h", "hh"),  # one character is both first and last
        (b"", "00"),  # empty first value
        # JA4.md "ALPN Extension Value": first and last characters of the hex form when either
        # end is not ASCII alphanumeric.
        (b"\xab", "ab"),
        (b"\xab\xcd", "ad"),
        (b"\x30\xab", "3b"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"\xba\xad", "bd"),  # the value in FoxIO's tls-non-ascii-alpn.pcapng
        (b"-x", "28"),  # hex "2d78"
    ],
)
def test_ja4_alpn_marker(first: bytes, marker: str) -> None:
    hello = decode_client_hello(client_hello_body([0x002F], [alpn_ext(first, b"h2")]))
    assert hello.alpn[0].encode("latin-1") == first
    assert hello.ja4()[8:10] == marker


def test_ja4_without_alpn_extension() -> None:
    hello = decode_client_hello(client_hello_body([0x002F], [sni_ext(b"a.example")]))
    assert hello.ja4()[3] == "d" and hello.ja4()[8:10] == "00"


def test_is_grease_is_rfc8701_set() -> None:
    assert [v for v in range(0x10000) if is_grease(v)] == [
        0x0A0A + 0x1010 * i for i in range(16)
    ]


# --------------------------------------------------------------------------------------------
# JA3 / JA3S
# --------------------------------------------------------------------------------------------


def test_ja3_salesforce_readme_example() -> None:
    # The example in https://github.com/salesforce/ja3 README, with GREASE sprinkled in to
    # check it is dropped from ciphers, extensions and curves.
    ciphers = [0x0A0A, 47, 53, 5, 10, 49161, 49162, 49171, 49172, 50, 56, 19, 4]
    exts = [
        ext(0x0A0A),
        sni_ext(b"x.example"),
        groups_ext(0x1A1A, 23, 24, 25),
        point_formats_ext(0),
    ]
    hello = decode_client_hello(client_hello_body(ciphers, exts, legacy=0x0301))
    assert hello.ja3_string() == (
        "769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0"
    )
    assert hello.ja3() == "ada70206e40642a3e4461f35503241d5"


def test_ja3s() -> None:
    hello_bytes = server_hello(
        0x002F, [ext(0xFF01, b"\x00"), ext(0), ext(11, vec(1, b"\x00")), ext(35)], legacy=0x0301
    )
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x002F], [])))
    (hello,) = session.feed(RESP, record(22, hello_bytes))
    assert isinstance(hello, ServerHello)
    assert hello.ja3s_string() == "769,47,65281-0-11-35"
    assert hello.ja3s() == hashlib.md5(b"769,47,65281-0-11-35").hexdigest()
    assert hello.tls_version() == 0x0301 and not hello.hello_retry


# --------------------------------------------------------------------------------------------
# Record and message framing
# --------------------------------------------------------------------------------------------


def test_client_hello_split_over_records_and_feeds() -> None:
    msg = client_hello(SPEC_CIPHERS, spec_extensions())
    # Three records of one message; each record fed in two pieces.
    cuts = [0, 7, 100, len(msg)]
    wire = b"".join(record(22, msg[a:b]) for a, b in itertools.pairwise(cuts))
    session = TlsSession()
    events: list[object] = []
    for piece in (wire[:3], wire[3:60], wire[60:61], wire[61:]):
        events += session.feed(ORIG, piece)
    assert events == [spec_hello()]


def test_server_messages_sharing_one_record(ec_cert: tuple[bytes, bytes]) -> None:
    der, _ = ec_cert
    flight = server_hello(0xC02B) + certificate_msg(der) + handshake(14, b"")
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0xC02B], [])))
    events = session.feed(RESP, record(22, flight))
    assert [type(e) for e in events] == [ServerHello, Certificates]
    assert session.done


def test_need_data_returns_nothing() -> None:
    wire = record(22, client_hello([0x002F], [sni_ext(b"a.example")]))
    session = TlsSession()
    assert session.feed(ORIG, wire[:-1]) == []
    assert not session.done
    (hello,) = session.feed(ORIG, wire[-1:])
    assert isinstance(hello, ClientHello) and hello.sni == "a.example"


def test_resumed_session_ends_after_both_change_cipher_specs() -> None:
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x002F], [])))
    events = session.feed(RESP, record(22, server_hello(0x002F)) + CCS + record(22, bytes(40)))
    assert [type(e) for e in events] == [ServerHello]
    assert session.done  # client finished at its hello, server at its ChangeCipherSpec


def test_tls13_ends_after_server_hello() -> None:
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x1301], [versions_ext(0x0304)])))
    sh = server_hello(0x1301, [versions_ext_server(0x0304)])
    events = session.feed(RESP, record(22, sh) + CCS + record(23, bytes(50)))
    assert len(events) == 1 and isinstance(events[0], ServerHello)
    assert events[0].supported_version == 0x0304 and events[0].tls_version() == 0x0304
    assert session.done
    assert session.feed(RESP, record(23, bytes(10))) == []


def versions_ext_server(version: int) -> bytes:
    return ext(43, u16(version))


def test_hello_retry_request_waits_for_the_real_server_hello() -> None:
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x1301], [versions_ext(0x0304)])))
    hrr = server_hello(0x1301, [versions_ext_server(0x0304)], random_=HELLO_RETRY_RANDOM)
    events = session.feed(RESP, record(22, hrr) + CCS)
    assert len(events) == 1 and isinstance(events[0], ServerHello) and events[0].hello_retry
    assert not session.done  # a TLS 1.3 middlebox-compatibility CCS does not end the server
    # The client's second ClientHello (after its own compatibility CCS) is read too.
    events = session.feed(ORIG, CCS + record(22, client_hello([0x1301, 0x1302],
                                                              [versions_ext(0x0304)])))
    assert len(events) == 1 and isinstance(events[0], ClientHello)
    assert events[0].ciphers == (0x1301, 0x1302) and not session.done
    events = session.feed(RESP, record(22, server_hello(0x1301, [versions_ext_server(0x0304)])))
    assert len(events) == 1 and isinstance(events[0], ServerHello)
    assert not events[0].hello_retry and session.done


def test_tls13_draft16_server_hello() -> None:
    # Drafts before -22 had no session ID or compression in ServerHello, and the draft
    # version (0x7f10 for -16) in its version field.
    body = u16(0x7F10) + bytes(32) + u16(0x1301) + vec(2, ext(0x0033, bytes(8)))
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x1301], [versions_ext(0x7F10)])))
    (hello,) = session.feed(RESP, record(22, handshake(2, body)))
    assert isinstance(hello, ServerHello)
    assert hello.supported_version == 0x7F10 and hello.cipher == 0x1301
    assert hello.extensions == (0x0033,) and session.done


def test_alerts_are_ignored() -> None:
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x002F], [])))
    assert session.feed(RESP, record(21, b"\x02\x28")) == []
    assert not session.done


def test_certificate_over_64k_is_accepted(ec_cert: tuple[bytes, bytes]) -> None:
    der, _ = ec_cert
    junk = b"\x30" + bytes(70_000)  # not a certificate: kept as a hash only
    msg = certificate_msg(der, junk)
    assert len(msg) > MAX_MESSAGE
    wire = record(22, server_hello(0x002F))
    wire += b"".join(record(22, msg[i : i + 16384]) for i in range(0, len(msg), 16384))
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x002F], [])))
    events = feed_random(session, RESP, wire, random.Random(5))
    assert isinstance(events[-1], Certificates)
    leaf, bogus = events[-1].chain
    assert leaf.subject == "CN=test.example,O=Hopguard,C=US"
    assert bogus == CertInfo(sha256=hashlib.sha256(junk).hexdigest())


# --------------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------------


def only_malformed(events: list[object]) -> Malformed:
    assert len(events) == 1 and isinstance(events[0], Malformed), events
    return events[0]


def test_plain_http_is_malformed_on_first_byte() -> None:
    session = TlsSession()
    bad = only_malformed(session.feed(ORIG, b"G"))
    assert bad.offset == 0 and bad.direction == ORIG and session.done
    assert session.feed(ORIG, b"ET / HTTP/1.1\r\n") == []


def test_sslv2_record_that_is_not_a_client_hello_is_malformed() -> None:
    # An SSL 2.0 header whose message is not CLIENT-HELLO (1): here SERVER-HELLO (4).
    bad = only_malformed(feed_bytewise(TlsSession(), ORIG, b"\x80\x2e\x04\x00\x02"))
    assert "content type 128" in bad.reason and bad.offset == 0


def test_oversized_record_is_malformed_before_its_body_arrives() -> None:
    bad = only_malformed(TlsSession().feed(ORIG, b"\x16\x03\x01\xff\xff"))
    assert "record length" in bad.reason


def test_oversized_message_is_malformed_before_its_body_arrives() -> None:
    wire = record(22, b"\x01" + (MAX_MESSAGE + 1).to_bytes(3, "big") + bytes(100))
    bad = only_malformed(TlsSession().feed(ORIG, wire))
    assert bad.offset == 5 and "limit" in bad.reason


def test_bad_inner_length_is_malformed() -> None:
    body = bytearray(client_hello_body([0x002F], [sni_ext(b"a.example")]))
    body[-11] = 0x01  # the host name's length (0x0109) now runs past its vector
    bad = only_malformed(TlsSession().feed(ORIG, record(22, handshake(1, bytes(body)))))
    assert bad.offset == 5 and "server name" in bad.reason


def test_first_server_message_must_be_server_hello(ec_cert: tuple[bytes, bytes]) -> None:
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0x002F], [])))
    bad = only_malformed(session.feed(RESP, record(22, certificate_msg(ec_cert[0]))))
    assert bad.direction == RESP and "ServerHello" in bad.reason


def test_first_client_record_must_be_handshake() -> None:
    bad = only_malformed(TlsSession().feed(ORIG, record(23, b"hello")))
    assert "content type 23" in bad.reason


def test_zero_length_handshake_record_is_malformed() -> None:
    only_malformed(TlsSession().feed(ORIG, record(22, b"")))


def test_unknown_direction_is_an_api_error() -> None:
    with pytest.raises(ValueError, match="direction"):
        TlsSession().feed(2, b"\x16")


def test_looks_like_tls() -> None:
    hello = record(22, client_hello([0x002F], []), version=0x0301)
    assert looks_like_tls(hello) and looks_like_tls(hello[:1]) and looks_like_tls(hello[:2])
    assert looks_like_tls(b"\x16\x03\x04")
    assert not looks_like_tls(b"")
    assert not looks_like_tls(b"GET / HTTP/1.1")
    assert not looks_like_tls(b"\x16\x02")
    assert not looks_like_tls(b"\x16\x03\x05")
    assert not looks_like_tls(b"\x17\x03\x03")


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------

NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hopguard"),
        x509.NameAttribute(NameOID.COMMON_NAME, "test.example"),
    ]
)


def make_cert(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, serial: int) -> x509.Certificate:
    import ipaddress

    return (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hopguard Test CA")]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_BEFORE + timedelta(days=30, microseconds=0))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("test.example"),
                    x509.DNSName("*.test.example"),
                    x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def ec_cert() -> tuple[bytes, bytes]:
    """(certificate DER, private key PEM) for an ECDSA P-256 test.example certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_cert(key, 0xABCDE)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.DER), pem


def test_cert_info_fields(ec_cert: tuple[bytes, bytes]) -> None:
    der, _ = ec_cert
    info = cert_info(der)
    assert info == CertInfo(
        sha256=hashlib.sha256(der).hexdigest(),
        subject="CN=test.example,O=Hopguard,C=US",
        issuer="CN=Hopguard Test CA",
        serial="0ABCDE",
        version=3,
        not_before=1_704_067_200_000_000,
        not_after=1_704_067_200_000_000 + 30 * 86_400_000_000,
        key_alg="ecdsa",
        key_length=256,
        sig_alg="ecdsa-with-SHA256",
        san_dns=("test.example", "*.test.example"),
        san_ip=("192.0.2.7",),
        is_ca=False,
    )


def test_cert_info_rsa_and_serial_formatting() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = cert_info(make_cert(key, 0x80).public_bytes(serialization.Encoding.DER))
    assert (info.key_alg, info.key_length) == ("rsa", 2048)
    assert info.sig_alg == "sha256WithRSAEncryption"
    assert info.serial == "80"


def test_cert_info_never_raises_on_garbage() -> None:
    for junk in (b"", b"\x30", b"\x30\x82\xff\xff" + bytes(10), bytes(range(256))):
        assert cert_info(junk) == CertInfo(sha256=hashlib.sha256(junk).hexdigest())


# --------------------------------------------------------------------------------------------
# Real handshakes from Python's ssl module (OpenSSL) over memory BIOs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Flights:
    client: bytes  # the client's first flight: its ClientHello
    server: bytes  # the server's first flight


@pytest.fixture(scope="module")
def pem_files(ec_cert: tuple[bytes, bytes]) -> Iterator[tuple[str, str]]:
    der, key_pem = ec_cert
    cert_pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        yield str(cert_path), str(key_path)


def ssl_flights(
    pem_files: tuple[str, str],
    *,
    max_version: ssl.TLSVersion,
    sni: str | None = "test.example",
    client_alpn: list[str] | None = None,
    server_alpn: list[str] | None = None,
) -> Flights:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*pem_files)
    server_ctx.maximum_version = max_version
    if server_alpn:
        server_ctx.set_alpn_protocols(server_alpn)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    if client_alpn:
        client_ctx.set_alpn_protocols(client_alpn)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    client_flight = c_out.read()
    s_in.write(client_flight)
    with pytest.raises(ssl.SSLWantReadError):
        server.do_handshake()
    return Flights(client=client_flight, server=s_out.read())


@pytest.fixture(scope="module")
def tls12(pem_files: tuple[str, str]) -> Flights:
    return ssl_flights(
        pem_files,
        max_version=ssl.TLSVersion.TLSv1_2,
        client_alpn=["h2", "http/1.1"],
        server_alpn=["http/1.1"],
    )


@pytest.fixture(scope="module")
def tls13(pem_files: tuple[str, str]) -> Flights:
    return ssl_flights(pem_files, max_version=ssl.TLSVersion.TLSv1_3, sni=None)


def check_tls12_events(events: list[object], der: bytes) -> None:
    assert [type(e) for e in events] == [ClientHello, ServerHello, Certificates]
    hello, server, certs = events
    assert isinstance(hello, ClientHello)
    assert isinstance(server, ServerHello)
    assert isinstance(certs, Certificates)
    assert hello.sni == "test.example"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.legacy_version == 0x0303
    assert 0x0304 in hello.supported_versions and 0x0303 in hello.supported_versions
    assert hello.extensions.count(0) == 1 and 16 in hello.extensions
    assert hello.groups and hello.sig_algs and hello.point_formats
    assert server.legacy_version == 0x0303 and server.supported_version is None
    assert server.cipher in hello.ciphers
    assert server.alpn == "http/1.1"
    assert len(certs.chain) == 1
    assert certs.chain[0].sha256 == hashlib.sha256(der).hexdigest()
    assert certs.chain[0].san_dns == ("test.example", "*.test.example")


def run(flights: Flights, how: str, seed: int = 0) -> tuple[list[object], TlsSession]:
    session = TlsSession()
    rng = random.Random(seed)
    events: list[object] = []
    for direction, data in ((ORIG, flights.client), (RESP, flights.server)):
        if how == "whole":
            events += feed_all(session, direction, data)
        elif how == "bytewise":
            events += feed_bytewise(session, direction, data)
        else:
            events += feed_random(session, direction, data, rng)
    return events, session


@pytest.mark.parametrize("how", ["whole", "bytewise", "random"])
def test_openssl_tls12_handshake(tls12: Flights, ec_cert: tuple[bytes, bytes], how: str) -> None:
    events, session = run(tls12, how)
    check_tls12_events(events, ec_cert[0])
    assert session.done


def test_openssl_random_splits_agree(tls12: Flights) -> None:
    whole, _ = run(tls12, "whole")
    for seed in range(20):
        assert run(tls12, "random", seed)[0] == whole


def test_openssl_ja3_string_is_consistent(tls12: Flights) -> None:
    (hello,) = TlsSession().feed(ORIG, tls12.client)
    assert isinstance(hello, ClientHello)
    version, ciphers, exts, groups, formats = hello.ja3_string().split(",")
    assert int(version) == hello.legacy_version
    assert [int(c) for c in ciphers.split("-")] == [c for c in hello.ciphers if not is_grease(c)]
    assert [int(e) for e in exts.split("-")] == list(hello.extensions)
    assert [int(g) for g in groups.split("-")] == list(hello.groups)
    assert [int(f) for f in formats.split("-")] == list(hello.point_formats)
    assert hello.ja3() == hashlib.md5(hello.ja3_string().encode()).hexdigest()
    assert hello.ja4().startswith("t13d")  # OpenSSL 3 offers TLS 1.3 even to a 1.2 server


def test_openssl_tls13_has_no_visible_certificate(tls13: Flights) -> None:
    events, session = run(tls13, "bytewise")
    assert [type(e) for e in events] == [ClientHello, ServerHello]
    hello, server = events
    assert isinstance(hello, ClientHello) and isinstance(server, ServerHello)
    assert hello.sni is None and hello.ja4()[3] == "i"
    assert server.supported_version == 0x0304 and server.legacy_version == 0x0303
    assert session.done


# --------------------------------------------------------------------------------------------
# SSL 2.0-compatible ClientHello (RFC 5246 Appendix E.2)
# --------------------------------------------------------------------------------------------


def sslv2_hello(
    specs: list[int], *, version: int = 0x0301, session: bytes = b"", challenge: bytes = bytes(16)
) -> bytes:
    """An SSL 2.0 record (2-byte header, high bit set) holding a CLIENT-HELLO."""
    spec_bytes = b"".join(v.to_bytes(3, "big") for v in specs)
    body = b"\x01" + u16(version) + u16(len(spec_bytes)) + u16(len(session)) + u16(len(challenge))
    body += spec_bytes + session + challenge
    return u16(0x8000 | len(body)) + body


# Wire order as an OpenSSL 0.9.8 client sent them: TLS suites as {0, suite}, SSL 2.0-only kinds
# (SSL2_DES_192_EDE3_CBC_WITH_MD5 0x0700c0, SSL2_RC4_128_WITH_MD5 0x010080) with a non-zero
# first byte, which have no TLS code point.
V2_SPECS = [0x000039, 0x000035, 0x0700C0, 0x00000A, 0x010080, 0x000004, 0x0000FF]


@pytest.mark.parametrize("how", ["whole", "bytewise"])
def test_sslv2_client_hello_then_tls_server(how: str) -> None:
    hello = sslv2_hello(V2_SPECS, challenge=bytes(range(32)))
    assert looks_like_tls(hello)
    session = TlsSession()
    feed = feed_all if how == "whole" else feed_bytewise
    (parsed,) = feed(session, ORIG, hello + record(22, b"\x10" + vec(3, bytes(8))))
    assert isinstance(parsed, ClientHello)
    assert parsed.legacy_version == 0x0301 and parsed.tls_version() == 0x0301
    assert parsed.ciphers == (0x39, 0x35, 0x0A, 0x04, 0xFF)
    assert parsed.extensions == () and parsed.sni is None and parsed.quirks == (QUIRK_SSLV2,)
    # JA3 from the version field and the TLS suites; no extensions, curves or formats.
    assert parsed.ja3_string() == "769,57-53-10-4-255,,,"
    assert parsed.ja4().startswith("t10i050000_")
    # The server answers a TLS-capable SSLv2 hello with TLS records: read as usual.
    events = feed(session, RESP, record(22, server_hello(0x0004), version=0x0301) + CCS)
    assert [type(e) for e in events] == [ServerHello] and session.done


def test_sslv2_client_hello_with_session_id() -> None:
    parsed = decode_sslv2_client_hello(sslv2_hello([0x00002F], session=bytes(16))[3:])
    assert parsed.ciphers == (0x2F,)


def test_pure_sslv2_client_ends_the_session() -> None:
    # Version 0x0002: the whole connection speaks SSL 2.0, whose server records we do not read.
    session = TlsSession()
    (parsed,) = session.feed(ORIG, sslv2_hello([0x010080, 0x0700C0], version=0x0002))
    assert isinstance(parsed, ClientHello) and parsed.ciphers == () and session.done
    assert parsed.ja4().startswith("ts2i000000_")
    assert session.feed(RESP, b"\x83\x00\x04") == []


def test_sslv2_server_answer_to_a_tls_capable_hello_ends_quietly() -> None:
    session = TlsSession()
    session.feed(ORIG, sslv2_hello(V2_SPECS))
    assert session.feed(RESP, b"\x83\x00\x04\x00\x01\x00\x02") == [] and session.done


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x0c\x01\x03\x01\x00\x04\x00\x00\x00\x00" + bytes(4), "multiple of 3"),
        (b"\x80\x0c\x01\x03\x01\x00\x03\x00\x00\x00\x10" + bytes(3), "disagree"),
        (b"\x80\x05\x01\x03\x01\x00\x00", "at least 8"),
        (b"\x80\x2a\x01\x03\x01\x00\x00\x00\x21\x00\x00" + bytes(33), "over 32"),
    ],
    ids=["specs-not-multiple-of-3", "lengths-disagree", "short", "long-session-id"],
)
def test_bad_sslv2_client_hello(data: bytes, reason: str) -> None:
    bad = only_malformed(TlsSession().feed(ORIG, data))
    assert reason in bad.reason and bad.offset == 0


def test_looks_like_tls_sslv2() -> None:
    hello = sslv2_hello(V2_SPECS)
    assert looks_like_tls(hello) and looks_like_tls(hello[:5]) and looks_like_tls(hello[:11])
    assert not looks_like_tls(hello[:4])  # too little to tell from other binary protocols
    assert not looks_like_tls(b"\x80\x2e\x04" + hello[3:])  # not a CLIENT-HELLO
    assert not looks_like_tls(hello[:3] + b"\x05\x01" + hello[5:])  # no such version
    assert not looks_like_tls(hello[:12].replace(hello[5:7], b"\x00\x16"))  # 22 % 3
    assert not looks_like_tls(b"\x80\x03\x01\x03\x01")  # shorter than its fixed part
    assert looks_like_tls(sslv2_hello([0x010080], version=0x0002))


# --------------------------------------------------------------------------------------------
# Leniency: malformations Wireshark warns about and still fingerprints
# --------------------------------------------------------------------------------------------


def odd_hello_body(cipher_bytes: bytes, rest: bytes) -> bytes:
    return u16(0x0301) + bytes(32) + b"\x00" + vec(2, cipher_bytes) + rest


def test_odd_cipher_suites_length_keeps_the_whole_suites() -> None:
    # 2.5 suites: the half suite is dropped, as Wireshark does ("1 trailing byte was
    # unprocessed"), and parsing goes on after the vector.
    rest = vec(1, b"\x00") + vec(2, sni_ext(b"a.b"))
    body = odd_hello_body(u16s([0x002F, 0x0035]) + b"\xc0", rest)
    hello = decode_client_hello(body)
    assert hello.ciphers == (0x2F, 0x35) and hello.sni == "a.b"
    assert hello.quirks == (QUIRK_ODD_CIPHERS,)
    assert hello.ja3_string() == "769,47-53,0,,"


def test_empty_compression_methods_and_no_extensions() -> None:
    # nDPI's tls_cipher_lens.pcap (connection 51588): compression_methods<1..2^8-1> empty, no
    # extensions; Wireshark warns and gives a JA3, nDPI gives the same one.
    hello = decode_client_hello(odd_hello_body(u16s([0x0004, 0x0005]), b"\x00"))
    assert hello.ciphers == (4, 5) and hello.extensions == ()
    assert hello.quirks == (QUIRK_NO_COMPRESSION,)
    assert hello.ja3_string() == "769,4-5,,,"


def test_stray_byte_after_compression_methods() -> None:
    # nDPI's tls_invalid_reads.pcap (connection 3967): empty compression methods, then one
    # byte where the 2-byte extensions length would be.
    body = odd_hello_body(u16s([0x0004]), b"\x00\x00")
    hello = decode_client_hello(body)
    assert hello.extensions == () and hello.quirks == (QUIRK_NO_COMPRESSION, QUIRK_STRAY_BYTE)
    session = TlsSession()
    assert len(session.feed(ORIG, record(22, handshake(1, body), version=0x0301))) == 1
    (server,) = session.feed(RESP, record(22, server_hello(0x0004), version=0x0301))
    assert isinstance(server, ServerHello)


def test_empty_cipher_suites() -> None:
    hello = decode_client_hello(odd_hello_body(b"", vec(1, b"\x00")))
    assert hello.ciphers == () and hello.quirks == (QUIRK_NO_CIPHERS,)


def test_well_formed_hello_has_no_quirks() -> None:
    hello = decode_client_hello(client_hello_body([0x1301], [sni_ext(b"x.y")]))
    assert hello.quirks == ()


@pytest.mark.parametrize(
    "body",
    [
        # cipher_suites claims more than the message holds (tls_cipher_lens.pcap, 51590)
        u16(0x0301) + bytes(32) + b"\x00" + u16(6) + u16s([4, 5]),
        # an odd vector that eats the compression methods (tls_cipher_lens.pcap, 51589)
        odd_hello_body(u16s([4, 5]) + b"\x01", b""),
        # two bytes after the compression methods: an extensions length with nothing after it
        odd_hello_body(u16s([4]), b"\x01\x00\x00\x05"),
    ],
    ids=["ciphers-past-end", "no-compression-byte", "extensions-past-end"],
)
def test_framing_errors_stay_errors(body: bytes) -> None:
    session = TlsSession()
    bad = only_malformed(session.feed(ORIG, record(22, handshake(1, body), version=0x0301)))
    assert bad.offset == 5 and session.done


# --------------------------------------------------------------------------------------------
# TLS 1.3 drafts before -16: version 0x0304 in ServerHello
# --------------------------------------------------------------------------------------------


def test_tls13_draft14_server_hello() -> None:
    # suricata-verify tls/tls13-draft14 (Firefox against tls13.crypto.mozilla.org, 2016): the
    # version field holds 0x0304 and the layout has no session ID or compression. The sizes
    # add up exactly (2 + 32 + 2 + 2 + 73 = 111 bytes), which the TLS 1.2 layout does not.
    key_share = ext(0x0028, u16(0x0017) + vec(2, b"\x04" + bytes(64)))
    body = u16(0x0304) + bytes(32) + u16(0xC02B) + vec(2, key_share)
    assert len(body) == 111
    hello = decode_server_hello(body)
    assert hello.tls_version() == 0x0304 and hello.cipher == 0xC02B
    assert hello.extensions == (0x0028,)
    assert hello.ja3s_string() == "772,49195,40"
    session = TlsSession()
    session.feed(ORIG, record(22, client_hello([0xC02B], [], legacy=0x0304), version=0x0301))
    (parsed,) = session.feed(RESP, record(22, handshake(2, body), version=0x0301))
    assert parsed == hello and session.done  # the rest of the server's flight is encrypted


# --------------------------------------------------------------------------------------------
# Cipher suite names (IANA TLS Cipher Suites registry)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x0088, "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA"),  # in Zeek's ssl.log baselines
        (0x00AB, "TLS_DHE_PSK_WITH_AES_256_GCM_SHA384"),
        (0x0034, "TLS_DH_anon_WITH_AES_128_CBC_SHA"),  # the registry's lower-case "anon"
        (0xC05C, "TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256"),
        (0xC0AE, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"),
        (0xCCAC, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"),
        (0xD005, "TLS_ECDHE_PSK_WITH_AES_128_CCM_SHA256"),
        (0x1305, "TLS_AES_128_CCM_8_SHA256"),
        (0xCC13, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256_OLD"),  # pre-RFC 7905 Chrome
        (0xFEFF, "SSL_RSA_FIPS_WITH_3DES_EDE_CBC_SHA"),
        (0xC0FF, "0xC0FF"),  # unassigned: the code point
        (0x0A0A, "0x0A0A"),  # GREASE
    ],
)
def test_cipher_names(code: int, name: str) -> None:
    assert cipher_name(code) == name
