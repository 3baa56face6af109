"""Stream parsers on random and mutated input: events or Malformed, never an exception.

For every session (HTTP, SOCKS, SSH, DNS over TCP) and any transcript:

* ``feed`` returns only that parser's events, ``Malformed`` or ``TunnelOpened``;
* a ``Malformed`` or ``TunnelOpened`` is the last event and leaves the session ``done``, after
  which ``feed`` returns nothing;
* the events do not depend on how the bytes of each direction were cut into ``feed`` calls
  (``TunnelOpened`` counted together with the bytes fed after it).

``parse_dns`` returns a message or raises ProtocolError, nothing else; the sniffers return a
bool for any input.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopguard.errors import ProtocolError
from hopguard.parsers.base import ORIG, RESP, Malformed, TunnelOpened
from hopguard.parsers.dns import DnsMessage, DnsTcpSession, parse_dns
from hopguard.parsers.http import (
    HttpBodyEnded,
    HttpRequest,
    HttpResponse,
    HttpSession,
    looks_like_http_request,
    looks_like_http_response,
)
from hopguard.parsers.socks import (
    SocksAuthResult,
    SocksMethodSelected,
    SocksReply,
    SocksRequest,
    SocksSession,
    looks_like_socks,
)
from hopguard.parsers.ssh import SshIdent, SshSession, looks_like_ssh

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Transcript = list[tuple[int, bytes]]

SESSIONS: dict[str, tuple[Callable[[], object], tuple[type, ...]]] = {
    "http": (HttpSession, (HttpRequest, HttpResponse, HttpBodyEnded)),
    "socks": (SocksSession, (SocksMethodSelected, SocksAuthResult, SocksRequest, SocksReply)),
    "ssh": (SshSession, (SshIdent,)),
    "dns": (DnsTcpSession, (DnsMessage,)),
}


def _dns_frame(msg: bytes) -> bytes:
    return struct.pack("!H", len(msg)) + msg


_DNS_QUERY = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"
              b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
              b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00")
_DNS_REPLY = (b"\x12\x34\x81\x80\x00\x01\x00\x03\x00\x00\x00\x00"
              b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
              b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x06\x03cdn\xc0\x10"
              b"\xc0\x2d\x00\x01\x00\x01\x00\x00\x00\x14\x00\x04\xc0\x00\x02\x01"
              b"\xc0\x2d\x00\x10\x00\x01\x00\x00\x00\x14\x00\x06\x05hello")

# Valid conversations, the seeds of the mutations.
SAMPLES: dict[str, list[Transcript]] = {
    "http": [
        [(ORIG, b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 p\r\n"
                b"Proxy-Authorization: Basic Ym9iOng=\r\n\r\n"
                b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\n\r\n"),
         (RESP, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 4\r\n\r\nbody"
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX: y\r\n\r\n")],
        [(ORIG, b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
         (RESP, b"HTTP/1.1 407 Auth\r\nContent-Length: 2\r\n\r\nno"),
         (ORIG, b"CONNECT a.example:443 HTTP/1.1\r\n\r\n\x16\x03\x01"),
         (RESP, b"HTTP/1.0 200 Connection established\r\n\r\n\x16\x03\x03")],
        [(ORIG, b"HEAD / HTTP/1.1\r\n\r\nGET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
         (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x00")],
    ],
    "socks": [
        [(ORIG, b"\x04\x01\x00\x50\x00\x00\x00\x01user\x00example.com\x00GET /"),
         (RESP, b"\x00\x5a\x00\x00\x00\x00\x00\x00HTTP")],
        [(ORIG, b"\x05\x02\x00\x02"), (RESP, b"\x05\x02"), (ORIG, b"\x01\x03bob\x05alice"),
         (RESP, b"\x01\x00"),
         (ORIG, b"\x05\x01\x00\x03\x0bexample.com\x01\xbb\x16\x03\x01"),
         (RESP, b"\x05\x00\x00\x04" + bytes(16) + b"\x04\x38\x16\x03\x03")],
        [(ORIG, b"\x05\x01\x00\x05\x02\x00\x01\xc0\x00\x02\x01\x00\x15"),
         (RESP, b"\x05\x00\x05\x00\x00\x01\xc0\x00\x02\x02\x9c\x40"),
         (RESP, b"\x05\x00\x00\x01\xc0\x00\x02\x01\x00\x15data")],
    ],
    "ssh": [
        [(RESP, b"banner\r\nSSH-2.0-OpenSSH_9.6 Ubuntu-3\r\n\x00\x00\x01\x04"),
         (ORIG, b"SSH-2.0-PuTTY_Release_0.80\r\n\x00\x00\x02\x0c")],
    ],
    "dns": [
        [(ORIG, _dns_frame(_DNS_QUERY) + _dns_frame(_DNS_QUERY)),
         (RESP, _dns_frame(_DNS_REPLY))],
    ],
}


def run(make: Callable[[], object], chunks: Transcript, kinds: tuple[type, ...]) -> list[object]:
    """Feed and check the per-call invariants; events with TunnelOpened normalised."""
    session = make()
    events: list[object] = []
    rest: list[list[bytes]] = [[], []]
    for direction, data in chunks:
        if session.done:  # type: ignore[attr-defined]
            assert session.feed(direction, data) == []  # type: ignore[attr-defined]
            rest[direction].append(data)
            continue
        new = session.feed(direction, data)  # type: ignore[attr-defined]
        for i, e in enumerate(new):
            assert isinstance(e, (*kinds, Malformed, TunnelOpened)), e
            if isinstance(e, (Malformed, TunnelOpened)):
                assert i == len(new) - 1, new
                assert session.done  # type: ignore[attr-defined]
            if isinstance(e, Malformed):
                # (a refused CONNECT releases held client bytes during a RESP feed, so the
                # culprit may be the other direction)
                assert e.direction in (ORIG, RESP) and e.offset >= 0 and e.reason
        events += new
    return [TunnelOpened(orig_rest=e.orig_rest + b"".join(rest[ORIG]),
                         resp_rest=e.resp_rest + b"".join(rest[RESP]))
            if isinstance(e, TunnelOpened) else e for e in events]


def resplit(chunks: Transcript, seed: int) -> Transcript:
    rng = random.Random(seed)
    out: Transcript = []
    for direction, data in chunks:
        i = 0
        while i < len(data):
            n = rng.choice((1, 1, 2, 3, 7, rng.randint(1, len(data))))
            out.append((direction, data[i: i + n]))
            i += n
    return out


def check(kind: str, chunks: Transcript, seed: int) -> None:
    make, kinds = SESSIONS[kind]
    whole = run(make, chunks, kinds)
    assert run(make, resplit(chunks, seed), kinds) == whole


def mutate(chunks: Transcript, edits: list[tuple[int, int, bytes]]) -> Transcript:
    out = [(d, bytearray(b)) for d, b in chunks]
    for which, pos, new in edits:
        _, data = out[which % len(out)]
        p = pos % (len(data) + 1)
        data[p: p + len(new)] = new
    return [(d, bytes(b)) for d, b in out]


transcripts = st.lists(st.tuples(st.sampled_from((ORIG, RESP)), st.binary(max_size=120)),
                       max_size=8)
edits = st.lists(st.tuples(st.integers(0, 8), st.integers(min_value=0),
                           st.binary(max_size=4)), min_size=1, max_size=6)


@FAST
@given(kind=st.sampled_from(sorted(SESSIONS)), chunks=transcripts, seed=st.integers(0, 2**16))
def test_random_transcripts(kind: str, chunks: Transcript, seed: int) -> None:
    check(kind, chunks, seed)


@FAST
@given(kind=st.sampled_from(sorted(SESSIONS)), data=st.data(), changes=edits,
       seed=st.integers(0, 2**16))
def test_mutated_transcripts(kind: str, data: st.DataObject,
                             changes: list[tuple[int, int, bytes]], seed: int) -> None:
    sample = data.draw(st.sampled_from(SAMPLES[kind]))
    check(kind, mutate(sample, changes), seed)


@FAST
@given(kind=st.sampled_from(sorted(SESSIONS)), data=st.data(), seed=st.integers(0, 2**16))
def test_truncated_and_prefixed_transcripts(kind: str, data: st.DataObject, seed: int) -> None:
    sample = data.draw(st.sampled_from(SAMPLES[kind]))
    cut = data.draw(st.integers(0, len(sample)))
    prefix = data.draw(st.binary(max_size=3))
    chunks = sample[:cut]
    if chunks:
        chunks = [(chunks[0][0], prefix + chunks[0][1]), *chunks[1:]]
    check(kind, chunks, seed)


def test_samples_are_valid() -> None:
    """The seeds themselves parse without a Malformed (so mutations start from valid input)."""
    for kind, samples in SAMPLES.items():
        make, kinds = SESSIONS[kind]
        for chunks in samples:
            events = run(make, chunks, kinds)
            assert events and not any(isinstance(e, Malformed) for e in events), (kind, events)


# -- parse_dns and the sniffers -------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=600))
def test_parse_dns_random(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        assert isinstance(parse_dns(data), DnsMessage)


@settings(max_examples=400, deadline=None)
@given(which=st.sampled_from((_DNS_QUERY, _DNS_REPLY)),
       changes=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=3)),
                        min_size=1, max_size=6),
       cut=st.integers(min_value=0))
def test_parse_dns_mutated(which: bytes, changes: list[tuple[int, bytes]], cut: int) -> None:
    data = bytearray(which)
    for pos, new in changes:
        p = pos % (len(data) + 1)
        data[p: p + len(new)] = new
    try:
        msg = parse_dns(bytes(data[: len(data) - cut % 4]))
    except ProtocolError:
        return
    for q in msg.questions:
        assert len(q.name.encode("utf-8", "surrogateescape")) <= 4 * 255


@settings(max_examples=400, deadline=None)
@given(head=st.binary(max_size=300))
def test_sniffers_never_raise(head: bytes) -> None:
    for sniff in (looks_like_http_request, looks_like_http_response, looks_like_socks,
                  looks_like_ssh):
        assert isinstance(sniff(head), bool)
