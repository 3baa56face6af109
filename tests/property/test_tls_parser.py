"""TLS and QUIC sessions on random, truncated and mutated input: events or Malformed, never a
traceback; and a valid handshake gives the same events however it is split."""

from __future__ import annotations

import contextlib
import itertools
import ssl
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.quic import QuicSession
from hopguard.parsers.tls import Certificates, ClientHello, ServerHello, TlsSession
from tests.unit.parsers.test_quic import RFC9001_A2_PACKET, RFC9001_A3_PACKET

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EVENT_TYPES = (ClientHello, ServerHello, Certificates, Malformed)


def _client_hello() -> bytes:
    """A real ClientHello from OpenSSL (a client needs no certificate to produce one)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    out = ssl.MemoryBIO()
    client = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="prop.example")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return out.read()


def _server_flight() -> bytes:
    """ServerHello, Certificate, ServerHelloDone (TLS 1.2) in two records, the certificate
    message split across them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prop.example")])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )

    def vec(width: int, data: bytes) -> bytes:
        return len(data).to_bytes(width, "big") + data

    hello = b"\x02" + vec(3, b"\x03\x03" + bytes(32) + b"\x00\xc0\x2b\x00" + vec(2, b""))
    certs = b"\x0b" + vec(3, vec(3, vec(3, cert)))
    messages = hello + certs + b"\x0e\x00\x00\x00"
    cut = len(hello) + 20
    return b"\x16\x03\x03" + vec(2, messages[:cut]) + b"\x16\x03\x03" + vec(2, messages[cut:])


CLIENT = _client_hello()
SERVER = _server_flight()


def feed_pieces(session: TlsSession | QuicSession, direction: int, data: bytes,
                cuts: list[int]) -> list[object]:  # fmt: skip
    events: list[object] = []
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        events += session.feed(direction, data[a:b])
    return events


def check(events: list[object], session: TlsSession | QuicSession) -> None:
    assert all(isinstance(e, EVENT_TYPES) for e in events), events
    malformed = [e for e in events if isinstance(e, Malformed)]
    assert len(malformed) <= 1
    if malformed:
        assert events[-1] is malformed[0] and session.done
        assert malformed[0].offset >= 0


@FAST
@given(st.binary(max_size=2000), st.binary(max_size=2000), st.lists(st.integers(0, 2000)))
def test_random_bytes(orig: bytes, resp: bytes, cuts: list[int]) -> None:
    session = TlsSession()
    events = feed_pieces(session, ORIG, orig, cuts) + feed_pieces(session, RESP, resp, cuts)
    check(events, session)


@FAST
@given(st.integers(0, len(CLIENT)), st.integers(0, len(SERVER)), st.lists(st.integers(0, 2000)))
def test_truncated_handshake(client_len: int, server_len: int, cuts: list[int]) -> None:
    session = TlsSession()
    events = feed_pieces(session, ORIG, CLIENT[:client_len], cuts)
    events += feed_pieces(session, RESP, SERVER[:server_len], cuts)
    check(events, session)
    assert not any(isinstance(e, Malformed) for e in events)  # a prefix is never wrong


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "delete", "insert"]))
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif action == "delete" and len(data) > 1:
            del data[pos]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@FAST
@given(mutated(CLIENT), mutated(SERVER), st.lists(st.integers(0, 2000)))
def test_mutated_handshake(client: bytes, server: bytes, cuts: list[int]) -> None:
    session = TlsSession()
    events = feed_pieces(session, ORIG, client, cuts) + feed_pieces(session, RESP, server, cuts)
    check(events, session)


# An SSL 2.0-compatible CLIENT-HELLO (RFC 5246 Appendix E.2): TLS suites, two SSL 2.0-only
# specs, a 16-byte challenge.
SSLV2_CLIENT = bytes.fromhex(
    "8028" "01" "0301" "000f" "0000" "0010" "000039" "0700c0" "00002f" "010080" "0000ff"
) + bytes(range(16))


@FAST
@given(mutated(SSLV2_CLIENT), mutated(SERVER), st.lists(st.integers(0, 2000)))
def test_mutated_sslv2_hello(client: bytes, server: bytes, cuts: list[int]) -> None:
    session = TlsSession()
    events = feed_pieces(session, ORIG, client, cuts) + feed_pieces(session, RESP, server, cuts)
    check(events, session)


def test_sslv2_hello_then_tls_server() -> None:
    session = TlsSession()
    events = session.feed(ORIG, SSLV2_CLIENT) + session.feed(RESP, SERVER)
    assert [type(e) for e in events] == [ClientHello, ServerHello, Certificates]
    assert isinstance(events[0], ClientHello) and events[0].ciphers == (0x39, 0x2F, 0xFF)


def _whole() -> list[object]:
    session = TlsSession()
    return session.feed(ORIG, CLIENT) + session.feed(RESP, SERVER)


WHOLE = _whole()


@FAST
@given(st.lists(st.integers(0, 2000), max_size=60), st.lists(st.integers(0, 2000), max_size=60))
def test_any_split_gives_the_same_events(client_cuts: list[int], server_cuts: list[int]) -> None:
    assert [type(e) for e in WHOLE] == [ClientHello, ServerHello, Certificates]
    session = TlsSession()
    events = feed_pieces(session, ORIG, CLIENT, client_cuts)
    events += feed_pieces(session, RESP, SERVER, server_cuts)
    assert events == WHOLE and session.done


# RFC 9001 Appendix A.2's first 64 bytes (header and sample) on a 1200-byte datagram: mutating
# the header exercises every length and version path before decryption.
QUIC_HEAD = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
)


@FAST
@given(st.lists(st.one_of(mutated(QUIC_HEAD + bytes(1136)), st.binary(max_size=1300)),
                max_size=4))  # fmt: skip
def test_quic_never_raises(datagrams: list[bytes]) -> None:
    session = QuicSession()
    events: list[object] = []
    for datagram in datagrams:
        events += session.feed(ORIG, datagram)
    check(events, session)


# RFC 9001 Appendix A.2 (the whole client Initial) and A.3 (the server's Initial): with the
# client's first, the server's packets are opened with real keys, so mutations reach the
# server-side frame and ServerHello parsing.
QUIC_CLIENT = RFC9001_A2_PACKET
QUIC_SERVER = RFC9001_A3_PACKET
QUIC_EVENT_TYPES = (ClientHello, ServerHello, Malformed)


@FAST
@given(st.lists(st.tuples(st.sampled_from([ORIG, RESP]),
                          st.one_of(mutated(QUIC_SERVER), mutated(QUIC_SERVER + QUIC_SERVER),
                                    mutated(QUIC_HEAD + bytes(1136)), st.binary(max_size=300))),
                max_size=5))  # fmt: skip
def test_quic_both_directions_never_raise(datagrams: list[tuple[int, bytes]]) -> None:
    session = QuicSession()
    events = session.feed(ORIG, QUIC_CLIENT)
    assert [type(e) for e in events] == [ClientHello]
    for direction, datagram in datagrams:
        events += session.feed(direction, datagram)
    assert all(isinstance(e, QUIC_EVENT_TYPES) for e in events), events
    malformed = [e for e in events if isinstance(e, Malformed)]
    assert len(malformed) <= 1
    if malformed:
        assert events[-1] is malformed[0] and session.done and malformed[0].offset >= 0
    assert sum(isinstance(e, ServerHello) for e in events) <= 1


def test_quic_real_server_initial_after_client() -> None:
    session = QuicSession()
    events = session.feed(ORIG, QUIC_CLIENT) + session.feed(RESP, QUIC_SERVER)
    assert [type(e) for e in events] == [ClientHello, ServerHello] and session.done
