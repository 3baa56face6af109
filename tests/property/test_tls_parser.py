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
QUIC_CLIENT = bytes.fromhex(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11"
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399"
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c"
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212"
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5"
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208"
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec"
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3"
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db"
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c"
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8"
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556"
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74"
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a"
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00"
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632"
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964"
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd"
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff"
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198"
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd"
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73"
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f"
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e"
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade"
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047"
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2"
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4"
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0"
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e"
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0"
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400"
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab"
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9"
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4"
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064"
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241"
    "e221af44860018ab0856972e194cd934"
)
QUIC_SERVER = bytes.fromhex(
    "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
    "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
    "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
    "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
    "2158407dd074ee"
)
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
