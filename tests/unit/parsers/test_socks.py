"""SOCKS 4/4a/5 sessions: handshakes, refusals, tunnels, the sniffer, and real captures.

This module also holds the transcript builder the parser tests share (``flows``): the product's
capture reader and decoder, plus a plain TCP reassembly, to pull each connection's payload out
of the public corpus and feed it to one parser directly.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hopguard.ingest.capture import read_packets
from hopguard.ingest.packet import decode
from hopguard.ingest.zeek import parse_header, unescape
from hopguard.parsers.base import MAX_BUFFER, ORIG, RESP, Malformed, TunnelOpened
from hopguard.parsers.socks import (
    SocksAuthResult,
    SocksMethodSelected,
    SocksReply,
    SocksRequest,
    SocksSession,
    looks_like_socks,
)

# -- scratch capture reader (tests only) ------------------------------------------------------

Transcript = list[tuple[int, bytes]]


@dataclass
class Flow:
    """One connection: its endpoints (originator first) and payload chunks in wire order."""

    proto: str  # "tcp" or "udp"
    orig: tuple[str, int]
    resp: tuple[str, int]
    chunks: Transcript = field(default_factory=list)

    def stream(self, direction: int) -> bytes:
        return b"".join(d for di, d in self.chunks if di == direction)


class _TcpDir:
    def __init__(self) -> None:
        self.next: int | None = None
        self.pending: dict[int, bytes] = {}


def flows(path: Path) -> list[Flow]:
    """Every TCP and UDP flow of a capture, TCP reassembled in order (retransmissions dropped,
    out-of-order segments held until the gap fills). Frames are read and decoded by the
    product's capture reader; only this simple reassembly is the tests' own."""
    table: dict[tuple[object, ...], tuple[Flow, tuple[_TcpDir, _TcpDir]]] = {}
    order: list[Flow] = []
    with path.open("rb") as fh:
        decoded = [decode(linktype, frame) for _, linktype, frame, _ in read_packets(fh)]
    for d in decoded:
        if d is None or d[0] not in (6, 17):
            continue
        proto, src, dst, sport, dport, tflags, seq, payload = d[:8]
        s = (str(ipaddress.ip_address(src)), sport)
        t = (str(ipaddress.ip_address(dst)), dport)
        key = (proto, *sorted([s, t]))
        syn = proto == 6 and bool(tflags & 0x02)
        if key not in table:
            # The originator sent the first SYN (without ACK) or, lacking one, the first packet.
            orig = t if syn and tflags & 0x10 else s
            flow = Flow(proto="tcp" if proto == 6 else "udp", orig=orig,
                        resp=t if orig == s else s)
            table[key] = (flow, (_TcpDir(), _TcpDir()))
            order.append(flow)
        flow, dirs = table[key]
        direction = ORIG if s == flow.orig else RESP
        if proto == 17:
            if payload:
                flow.chunks.append((direction, bytes(payload)))
            continue
        st = dirs[direction]
        if syn:
            st.next = (seq + 1) & 0xFFFFFFFF
            continue
        if not payload:
            continue
        if st.next is None:
            st.next = seq
        st.pending.setdefault(seq, bytes(payload))
        while True:
            progressed = False
            for pseq, data in list(st.pending.items()):
                assert st.next is not None
                rel = (pseq - st.next) & 0xFFFFFFFF
                if rel >= 0x80000000:  # starts before next: keep only the new part
                    skip = (st.next - pseq) & 0xFFFFFFFF
                    del st.pending[pseq]
                    if skip < len(data):
                        flow.chunks.append((direction, data[skip:]))
                        st.next = (st.next + len(data) - skip) & 0xFFFFFFFF
                        progressed = True
                elif rel == 0:
                    del st.pending[pseq]
                    flow.chunks.append((direction, data))
                    st.next = (st.next + len(data)) & 0xFFFFFFFF
                    progressed = True
            if not progressed:
                break
    return order


def run(session: object, chunks: Iterable[tuple[int, bytes]]) -> list[object]:
    """Feed a transcript to a session until it is done; all events in order.

    A TunnelOpened carries only bytes fed so far; the driver then hands the rest of each
    direction to the next parser. So that transcripts cut differently compare equal, the
    TunnelOpened returned here has those unfed bytes appended.
    """
    events: list[object] = []
    rest: list[list[bytes]] = [[], []]
    for direction, data in chunks:
        if getattr(session, "done"):  # noqa: B009
            rest[direction].append(data)
            continue
        events.extend(session.feed(direction, data))  # type: ignore[attr-defined]
    return [TunnelOpened(orig_rest=e.orig_rest + b"".join(rest[ORIG]),
                         resp_rest=e.resp_rest + b"".join(rest[RESP]))
            if isinstance(e, TunnelOpened) else e for e in events]


def split(chunks: Transcript, rng: random.Random | None = None) -> Transcript:
    """The same transcript cut into single bytes (no rng) or random pieces."""
    out: Transcript = []
    for direction, data in chunks:
        i = 0
        while i < len(data):
            n = 1 if rng is None else rng.randint(1, max(1, len(data) - i))
            out.append((direction, data[i: i + n]))
            i += n
    return out


def check_split_invariance(make: Callable[[], object], chunks: Transcript) -> list[object]:
    """Events are the same whether the bytes come whole, one at a time or randomly cut."""
    whole = run(make(), chunks)
    assert run(make(), split(chunks)) == whole
    rng = random.Random(7)
    for _ in range(20):
        assert run(make(), split(chunks, rng)) == whole
    return whole


def zeek_log(path: Path) -> list[dict[str, str | None]]:
    """Rows of a Zeek TSV log as field -> raw value (None for unset)."""
    lines = path.read_bytes().splitlines()
    h = parse_header(lines)
    if h.fields is None:  # zeek-cut output: the first line that is not a comment names fields
        names = next(ln for ln in lines if not ln.startswith(b"#"))
        h.fields = [n.decode() for n in names.split(b"\t")]
        h.lines = lines.index(names) + 1
    rows = []
    for line in lines[h.lines:]:
        if not line or line.startswith(b"#"):
            continue
        values = line.split(h.separator)
        rows.append({f: None if v == h.unset else "" if v == h.empty else unescape(v)
                     for f, v in zip(h.fields, values, strict=True)})
    return rows


# -- SOCKS4 / 4a ----------------------------------------------------------------------------

def _v4(cmd: int, port: int, ip: str, user: bytes = b"", host: bytes | None = None) -> bytes:
    out = bytes([4, cmd]) + port.to_bytes(2, "big") + ipaddress.IPv4Address(ip).packed
    out += user + b"\0"
    if host is not None:
        out += host + b"\0"
    return out


def _v4_reply(code: int, port: int = 0, ip: str = "0.0.0.0") -> bytes:
    return bytes([0, code]) + port.to_bytes(2, "big") + ipaddress.IPv4Address(ip).packed


def test_socks4_connect_opens_tunnel() -> None:
    chunks = [(ORIG, _v4(1, 80, "192.0.2.7", b"alice") + b"GET / HTTP/1.0\r\n"),
              (RESP, _v4_reply(0x5A) + b"HTTP/1.0 200 OK\r\n")]
    events = check_split_invariance(SocksSession, chunks)
    req, rep, tunnel = events
    assert req == SocksRequest(version=4, protocol="socks4", command="connect",
                               target_host=None, target_ip="192.0.2.7", target_port=80,
                               user="alice", auth_method=None, password_present=False, offset=0)
    assert isinstance(rep, SocksReply)
    assert rep.succeeded and rep.outcome == "succeeded" and rep.code == 0x5A
    assert tunnel == TunnelOpened(orig_rest=b"GET / HTTP/1.0\r\n",
                                  resp_rest=b"HTTP/1.0 200 OK\r\n")


def test_socks4a_hostname_and_empty_user() -> None:
    s = SocksSession()
    (req,) = s.feed(ORIG, _v4(1, 443, "0.0.0.1", b"", b"Example.COM"))
    assert isinstance(req, SocksRequest)
    assert req.protocol == "socks4a"
    assert (req.target_host, req.target_ip, req.target_port, req.user) == (
        "Example.COM", None, 443, None)


@pytest.mark.parametrize(("code", "outcome"), [
    (0x5B, "general SOCKS server failure"),
    (0x5C, "request failed because client is not running identd"),
    (0x5D, "request failed because client's identd could not confirm the user ID string in "
           "the request"),
    (0x42, "unknown-66"),
])
def test_socks4_refusals_use_zeek_wording(code: int, outcome: str) -> None:
    s = SocksSession()
    s.feed(ORIG, _v4(1, 80, "192.0.2.7"))
    (rep,) = s.feed(RESP, _v4_reply(code))
    assert isinstance(rep, SocksReply)
    assert not rep.succeeded and rep.outcome == outcome
    assert s.done


def test_socks4_bind_waits_for_second_reply() -> None:
    s = SocksSession()
    s.feed(ORIG, _v4(2, 20, "198.51.100.1", b"ftp"))
    (first,) = s.feed(RESP, _v4_reply(0x5A, 40000, "203.0.113.5"))
    assert isinstance(first, SocksReply)
    assert (first.bound_ip, first.bound_port) == ("203.0.113.5", 40000)
    assert not s.done
    events = s.feed(RESP, _v4_reply(0x5A, 20, "198.51.100.1") + b"data")
    assert isinstance(events[0], SocksReply)
    assert events[1] == TunnelOpened(orig_rest=b"", resp_rest=b"data")
    assert s.done


def test_socks4_userid_without_nul_is_bounded() -> None:
    s = SocksSession()
    events = s.feed(ORIG, b"\x04\x01\x00\x50\x01\x02\x03\x04" + b"u" * 2000)
    assert len(events) == 1 and isinstance(events[0], Malformed) and s.done


def test_socks4_bad_reply_version() -> None:
    s = SocksSession()
    s.feed(ORIG, _v4(1, 80, "192.0.2.7"))
    (bad,) = s.feed(RESP, b"\x05\x5a\x00\x00\x00\x00\x00\x00")
    assert isinstance(bad, Malformed) and bad.direction == RESP


# -- SOCKS5 ---------------------------------------------------------------------------------

def _v5_addr(host: str) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return b"\x03" + bytes([len(host)]) + host.encode()
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


def _v5_request(cmd: int, host: str, port: int) -> bytes:
    return bytes([5, cmd, 0]) + _v5_addr(host) + port.to_bytes(2, "big")


def _v5_reply(rep: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    return bytes([5, rep, 0]) + _v5_addr(host) + port.to_bytes(2, "big")


def test_socks5_no_auth_pipelined_greeting_and_request() -> None:
    # Clients that offer only "no authentication" often send the request right away.
    chunks = [(ORIG, b"\x05\x01\x00" + _v5_request(1, "www.example.org", 443) + b"\x16\x03\x01"),
              (RESP, b"\x05\x00"),
              (RESP, _v5_reply(0, "10.1.2.3", 5555) + b"\x16\x03\x03")]
    events = check_split_invariance(SocksSession, chunks)
    assert events[0] == SocksMethodSelected(offered=("none",), method="none", code=0)
    req = events[1]
    assert isinstance(req, SocksRequest)
    assert (req.protocol, req.command, req.target_host, req.target_ip, req.target_port,
            req.auth_method, req.user) == ("socks5", "connect", "www.example.org", None, 443,
                                           "none", None)
    assert req.offset == 3
    rep = events[2]
    assert isinstance(rep, SocksReply)
    assert (rep.bound_ip, rep.bound_port, rep.outcome) == ("10.1.2.3", 5555, "succeeded")
    assert events[3] == TunnelOpened(orig_rest=b"\x16\x03\x01", resp_rest=b"\x16\x03\x03")


def test_socks5_username_password() -> None:
    chunks = [(ORIG, b"\x05\x02\x00\x02"), (RESP, b"\x05\x02"),
              (ORIG, b"\x01\x03bob\x05alice"), (RESP, b"\x01\x00"),
              (ORIG, _v5_request(1, "2001:db8::1", 22)), (RESP, _v5_reply(0, "::", 0))]
    events = check_split_invariance(SocksSession, chunks)
    assert events[0] == SocksMethodSelected(offered=("none", "username/password"),
                                            method="username/password", code=2)
    assert events[1] == SocksAuthResult(user="bob", password_present=True, succeeded=True,
                                        status=0)
    req = events[2]
    assert isinstance(req, SocksRequest)
    assert (req.user, req.auth_method, req.password_present, req.target_ip) == (
        "bob", "username/password", True, "2001:db8::1")
    assert isinstance(events[-1], TunnelOpened)
    assert "alice" not in repr(events)  # the password is never kept


def test_socks5_auth_failure_ends_session() -> None:
    s = SocksSession()
    s.feed(ORIG, b"\x05\x01\x02")
    s.feed(RESP, b"\x05\x02")
    s.feed(ORIG, b"\x01\x03bob\x00")
    (res,) = s.feed(RESP, b"\x01\x01")
    assert res == SocksAuthResult(user="bob", password_present=False, succeeded=False, status=1)
    assert s.done


def test_socks5_no_acceptable_methods() -> None:
    s = SocksSession()
    s.feed(ORIG, b"\x05\x02\x01\x81")
    (sel,) = s.feed(RESP, b"\x05\xff")
    assert sel == SocksMethodSelected(offered=("gssapi", "private-129"),
                                      method="no acceptable methods", code=255)
    assert s.done


def test_socks5_gssapi_is_noted_not_followed() -> None:
    s = SocksSession()
    s.feed(ORIG, b"\x05\x01\x01")
    (sel,) = s.feed(RESP, b"\x05\x01\x01\x01\x00\x04abcd")
    assert isinstance(sel, SocksMethodSelected) and sel.method == "gssapi"
    assert s.done


@pytest.mark.parametrize(("rep", "outcome"), [
    (1, "general SOCKS server failure"), (2, "connection not allowed by ruleset"),
    (3, "Network unreachable"), (4, "Host unreachable"), (5, "Connection refused"),
    (6, "TTL expired"), (7, "Command not supported"), (8, "Address type not supported"),
    (9, "unknown-9"),
])
def test_socks5_refusals_use_zeek_wording(rep: int, outcome: str) -> None:
    s = SocksSession()
    s.feed(ORIG, b"\x05\x01\x00" + _v5_request(1, "192.0.2.1", 80))
    events = s.feed(RESP, b"\x05\x00" + _v5_reply(rep))
    assert isinstance(events[-1], SocksReply)
    assert events[-1].outcome == outcome and not events[-1].succeeded
    assert s.done


def test_socks5_bind_and_udp_associate() -> None:
    s = SocksSession()
    s.feed(ORIG, b"\x05\x01\x00" + _v5_request(2, "192.0.2.1", 21))
    s.feed(RESP, b"\x05\x00" + _v5_reply(0, "proxy.example", 4000))
    assert not s.done
    events = s.feed(RESP, _v5_reply(0, "192.0.2.1", 21))
    assert isinstance(events[-1], TunnelOpened)

    u = SocksSession()
    events = u.feed(ORIG, b"\x05\x01\x00" + _v5_request(3, "0.0.0.0", 0))
    events += u.feed(RESP, b"\x05\x00" + _v5_reply(0, "192.0.2.9", 5353))
    req, rep = events[1], events[2]
    assert isinstance(req, SocksRequest) and req.command == "udp_associate"
    assert isinstance(rep, SocksReply) and rep.bound_host is None
    assert u.done and not any(isinstance(e, TunnelOpened) for e in events)


def test_socks5_bound_domain_name() -> None:
    s = SocksSession()
    s.feed(ORIG, b"\x05\x01\x00" + _v5_request(1, "192.0.2.1", 80))
    events = s.feed(RESP, b"\x05\x00" + _v5_reply(0, "relay.example", 1080))
    rep = events[2]
    assert isinstance(rep, SocksReply)
    assert (rep.bound_host, rep.bound_ip, rep.bound_port) == ("relay.example", None, 1080)


@pytest.mark.parametrize(("orig", "resp", "direction"), [
    (b"\x06\x01\x00", b"", ORIG),  # not a SOCKS version
    (b"\x05\x01\x00\x05\x01\x00\x07\x00\x00\x00\x00\x00\x00", b"\x05\x00", ORIG),  # bad ATYP
    (b"\x05\x01\x00", b"\x04\x00", RESP),  # method selection with the wrong version
    (b"\x05\x01\x02", b"\x05\x02", None),  # then RFC 1929 with a bad version below
])
def test_socks5_malformed(orig: bytes, resp: bytes, direction: int | None) -> None:
    s = SocksSession()
    events = s.feed(ORIG, orig) + s.feed(RESP, resp)
    if direction is None:
        events = s.feed(ORIG, b"\x07\x01a\x01b")
        direction = ORIG
    assert isinstance(events[-1], Malformed) and events[-1].direction == direction
    assert s.done
    assert s.feed(ORIG, b"more") == []


def test_out_of_turn_bytes_are_bounded() -> None:
    s = SocksSession()
    s.feed(ORIG, b"\x05\x01\x00")
    events = s.feed(ORIG, b"\x00" * (MAX_BUFFER + 1))
    assert isinstance(events[-1], Malformed) and s.done


def test_bad_direction_is_a_usage_error() -> None:
    with pytest.raises(ValueError):
        SocksSession().feed(2, b"\x05")


# -- the sniffer ----------------------------------------------------------------------------

@pytest.mark.parametrize("head", [
    b"", b"\x05", b"\x05\x01", b"\x05\x01\x00", b"\x05\x02\x00\x02",
    b"\x05\x01\x00" + _v5_request(1, "a.example", 80),
    b"\x04", b"\x04\x01", b"\x04\x01\x00\x50", _v4(1, 80, "192.0.2.7", b"bob"),
    _v4(1, 80, "192.0.2.7", b"") + b"\x16\x03\x01", _v4(1, 443, "0.0.0.9", b"u", b"host.example"),
    _v4(1, 443, "0.0.0.9", b"u")[:-1],  # user id still arriving
    _v4(2, 0, "0.0.0.0"),
])
def test_looks_like_socks_accepts(head: bytes) -> None:
    assert looks_like_socks(head)


@pytest.mark.parametrize("head", [
    b"\x05\x00", b"\x05\x01\x20", b"\x05\x01\x00\x16\x03", b"\x04\x03",
    b"\x04\x01\x00\x00\x01\x02\x03\x04\x00",  # CONNECT to port 0
    b"\x04\x01\x00\x50\x01\x02\x03\x04a\x01b\x00",  # control byte in the user id
    b"\x04\x01\x00\x50\x01\x02\x03\x04" + b"a" * 300 + b"\x00",
    _v4(1, 443, "0.0.0.9", b"u", b""),  # empty 4a host name
    b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00", b"SSH-2.0-x\r\n",
])
def test_looks_like_socks_rejects(head: bytes) -> None:
    assert not looks_like_socks(head)


def test_looks_like_socks_rarely_fires_on_random_bytes() -> None:
    rng = random.Random(1928)
    hits = sum(looks_like_socks(rng.randbytes(rng.randint(16, 300))) for _ in range(50_000))
    assert hits == 0


# -- real captures --------------------------------------------------------------------------

TRACES = ("zeek/testing/btest/Traces/socks.pcap", "zeek/testing/btest/Traces/socks-auth.pcap",
          "zeek/testing/btest/Traces/socks-auth-10080.pcap",
          "zeek/testing/btest/Traces/socks-with-ssl.pcap",
          "zeek/testing/btest/Traces/tunnels/socks.pcap")


def _handshakes(corpus: Path) -> dict[tuple[str, int, str, int], list[object]]:
    out = {}
    for rel in TRACES:
        for flow in flows(corpus / rel):
            if flow.proto == "tcp" and looks_like_socks(flow.stream(ORIG)[:64]):
                key = (*flow.orig, *flow.resp)
                out[key] = check_split_invariance(SocksSession, flow.chunks)
    return out


@pytest.mark.corpus
def test_matches_zeek_socks_log(public_corpus: Path) -> None:
    """Every socks.log row Zeek wrote for its SOCKS traces, field by field."""
    handshakes = _handshakes(public_corpus)
    baselines = sorted((public_corpus / "zeek/testing/btest/Baseline").glob(
        "scripts.base.protocols.socks.*/socks.log*"))
    assert len(baselines) >= 5
    compared = 0
    for log in baselines:
        for row in zeek_log(log):
            key = (row["id.orig_h"], int(row["id.orig_p"] or 0), row["id.resp_h"],
                   int(row["id.resp_p"] or 0))
            assert key in handshakes, f"{log}: no SOCKS handshake for {key}"
            events = handshakes[key]
            req = next(e for e in events if isinstance(e, SocksRequest))
            rep = next(e for e in events if isinstance(e, SocksReply))
            assert req.version == int(row["version"] or 0)
            assert rep.outcome == row["status"]
            assert rep.bound_ip == row["bound.host"]
            assert rep.bound_host == row["bound.name"]
            assert rep.bound_port == int(row["bound_p"] or -1)
            if "request.host" in row:
                assert req.target_ip == row["request.host"]
                assert req.target_host == row["request.name"]
                assert req.target_port == int(row["request_p"] or -1)
                assert req.user == row["user"]
                # socks-auth-2 is the same trace with password capture off ("-").
                if row["password"] is not None:
                    assert req.password_present
            assert isinstance(events[-1], TunnelOpened)
            compared += 1
    assert compared >= 5


@pytest.mark.corpus
def test_socks4_trace_matches_tshark(public_corpus: Path) -> None:
    # Zeek's baseline for this trace has only tunnel.log; tshark's decode is the oracle.
    (events,) = _handshakes_of(public_corpus / "zeek/testing/btest/Traces/tunnels/socks.pcap")
    req, rep, tunnel = events
    assert isinstance(req, SocksRequest) and isinstance(rep, SocksReply)
    assert (req.protocol, req.target_ip, req.target_port) == ("socks4", "192.150.187.12", 80)
    assert (rep.code, rep.bound_ip, rep.bound_port) == (90, "0.0.0.0", 0)
    assert isinstance(tunnel, TunnelOpened)


def _handshakes_of(path: Path) -> list[list[object]]:
    return [check_split_invariance(SocksSession, f.chunks) for f in flows(path)
            if f.proto == "tcp" and looks_like_socks(f.stream(ORIG)[:64])]


@pytest.mark.corpus
def test_arkime_socks4a_https(public_corpus: Path) -> None:
    # arkime/tests/pcap/socks4-https.test: socks.host login.live.com, port 443, user
    # fd7bcf7b5c9e1d. The same capture is ja4/pcap/socks4-https.pcap.
    for rel in ("arkime/tests/pcap/socks4-https.pcap", "ja4/pcap/socks4-https.pcap"):
        (events,) = _handshakes_of(public_corpus / rel)
        req, rep, tunnel = events
        assert isinstance(req, SocksRequest) and isinstance(rep, SocksReply)
        assert (req.protocol, req.target_host, req.target_port, req.user) == (
            "socks4a", "login.live.com", 443, "fd7bcf7b5c9e1d")
        assert rep.succeeded
        assert isinstance(tunnel, TunnelOpened)
        # The capture lacks the ClientHello; the server's TLS records follow the reply.
        assert tunnel.resp_rest[:1] == b"\x16"


@pytest.mark.corpus
def test_arkime_socks5_rdp(public_corpus: Path) -> None:
    # arkime/tests/pcap/socks5-rdp.test: socks.ip 10.0.0.1, port 3389.
    (events,) = _handshakes_of(public_corpus / "arkime/tests/pcap/socks5-rdp.pcap")
    req = next(e for e in events if isinstance(e, SocksRequest))
    assert (req.protocol, req.target_ip, req.target_port) == ("socks5", "10.0.0.1", 3389)
