"""DTLS hellos: the TLS ClientHello with a cookie, in fragmented handshake records."""

from __future__ import annotations

import contextlib
import ssl

from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.dtls import DtlsSession, looks_like_dtls_client_hello
from hopguard.parsers.tls import ClientHello, decode_client_hello


def tls_client_hello_body(sni: str = "dtls.example") -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    record = outgoing.read()
    assert record[5] == 1  # handshake type ClientHello
    return record[9:5 + (record[3] << 8 | record[4])]


def dtls_body(tls_body: bytes, cookie: bytes = b"") -> bytes:
    """The DTLS 1.2 form: version FEFD, the cookie after the session id."""
    sid_end = 35 + tls_body[34]
    return b"\xfe\xfd" + tls_body[2:sid_end] + bytes([len(cookie)]) + cookie + tls_body[sid_end:]


def handshake(mtype: int, mseq: int, body: bytes, off: int = 0, flen: int | None = None) -> bytes:
    flen = len(body) - off if flen is None else flen
    return bytes([mtype]) + len(body).to_bytes(3, "big") + mseq.to_bytes(2, "big") + \
        off.to_bytes(3, "big") + flen.to_bytes(3, "big") + body[off:off + flen]


def dgram(*messages: bytes, seq: int = 0) -> bytes:
    payload = b"".join(messages)
    return bytes([22]) + b"\xfe\xfd" + b"\x00\x00" + seq.to_bytes(6, "big") + \
        len(payload).to_bytes(2, "big") + payload


def test_client_hello_gives_the_tls_fingerprints_without_the_cookie() -> None:
    tls = tls_client_hello_body()
    session = DtlsSession()
    first = dgram(handshake(1, 0, dtls_body(tls)))
    assert looks_like_dtls_client_hello(first)
    [hello] = session.feed(ORIG, first)
    assert isinstance(hello, ClientHello) and hello.sni == "dtls.example"
    plain = decode_client_hello(tls)
    assert (hello.ciphers, hello.extensions) == (plain.ciphers, plain.extensions)
    # the same fingerprint as the TLS hello but for JA4's transport letter ("d": DTLS)
    assert hello.ja4("d") == "d" + plain.ja4("t")[1:]
    # HelloVerifyRequest, then the hello again with the cookie (message_seq 1): a second row
    assert session.feed(RESP, dgram(handshake(3, 0, b"\xfe\xff\x04abcd"))) == []
    [again] = session.feed(ORIG, dgram(handshake(1, 1, dtls_body(tls, b"abcd")), seq=1))
    assert isinstance(again, ClientHello) and again.ja3() == hello.ja3()
    # a retransmission of message 1 is not a third hello
    assert session.feed(ORIG, dgram(handshake(1, 1, dtls_body(tls, b"abcd")), seq=2)) == []


def test_fragmented_hello_is_reassembled_in_any_order() -> None:
    body = dtls_body(tls_client_hello_body("frag.example"))
    half = len(body) // 2
    session = DtlsSession()
    assert session.feed(ORIG, dgram(handshake(1, 0, body, half))) == []
    [hello] = session.feed(ORIG, dgram(handshake(1, 0, body, 0, half), seq=1))
    assert isinstance(hello, ClientHello) and hello.sni == "frag.example"


def test_bad_fragment_is_malformed_not_an_exception() -> None:
    bad = bytes([1]) + (10).to_bytes(3, "big") + b"\x00\x00" + (8).to_bytes(3, "big") + \
        (5).to_bytes(3, "big") + b"xxxxx"
    [event] = DtlsSession().feed(ORIG, dgram(bad))
    assert isinstance(event, Malformed) and "does not fit" in event.reason


def test_random_datagrams_never_raise() -> None:
    import random
    rnd = random.Random(7)
    base = dgram(handshake(1, 0, dtls_body(tls_client_hello_body())))
    for _ in range(2000):
        data = bytearray(base[: rnd.randrange(len(base) + 1)])
        for _ in range(rnd.randrange(4)):
            if data:
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        DtlsSession().feed(ORIG, bytes(data))
