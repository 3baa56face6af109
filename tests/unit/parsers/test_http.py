"""HTTP/1.x sessions: framing, proxy requests, CONNECT tunnels, tolerance, real captures."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TypeVar

import pytest

from hopguard.parsers.base import MAX_BUFFER, ORIG, RESP, Malformed, TunnelOpened
from hopguard.parsers.http import (
    HttpBodyEnded,
    HttpRequest,
    HttpResponse,
    HttpSession,
    looks_like_http_request,
    looks_like_http_response,
)
from tests.unit.parsers.test_socks import (
    Transcript,
    check_split_invariance,
    flows,
    run,
    zeek_log,
)

T = TypeVar("T")


def _of(events: list[object], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def _session(chunks: Transcript) -> list[object]:
    return check_split_invariance(HttpSession, chunks)


# -- requests and responses -----------------------------------------------------------------

def test_simple_exchange() -> None:
    events = _session([
        (ORIG, b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n"
               b"User-Agent: curl/8.5.0\r\nReferer: http://a.example/\r\n\r\n"),
        (RESP, b"HTTP/1.1 200 OK\r\nContent-Type: Text/HTML; charset=utf-8\r\n"
               b"Content-Length: 5\r\n\r\nhello"),
    ])
    req, resp, end = events
    assert req == HttpRequest(
        method="GET", uri="/index.html", version="1.1", host="www.example.com",
        user_agent="curl/8.5.0", referrer="http://a.example/", via=None, forwarded=None,
        x_forwarded_for=None, proxied=(), is_proxy_request=False, target_host=None,
        target_port=None, proxy_authorization_user=None, content_length=None, offset=0)
    assert resp == HttpResponse(status=200, reason="OK", version="1.1",
                                content_type="text/html", body_len=5, offset=0)
    assert end == HttpBodyEnded(direction=RESP, body_len=5, offset=83)


def test_pipelined_requests_match_their_responses() -> None:
    # HEAD's answer has a Content-Length but no body (RFC 9112 §6.3 rule 1); the next
    # response must be found right after its head.
    events = _session([
        (ORIG, b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n"
               b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
               b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"),
        (RESP, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
               b"HTTP/1.1 204 No Content\r\n\r\n"
               b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
    ])
    reqs = _of(events, HttpRequest)
    assert [(r.method, r.uri, r.content_length) for r in reqs] == [
        ("HEAD", "/a", None), ("POST", "/b", 3), ("GET", "/c", None)]
    assert [(r.status, r.body_len) for r in _of(events, HttpResponse)] == [
        (200, 0), (204, 0), (304, 0)]
    assert _of(events, HttpBodyEnded) == [HttpBodyEnded(direction=ORIG, body_len=3,
                                                        offset=reqs[2].offset)]


def test_chunked_bodies_with_extensions_and_trailers() -> None:
    events = _session([
        (ORIG, b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
               b"4;name=value\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"),
        (RESP, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"A\r\n0123456789\r\n0\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n"
               b"tail"),  # bytes after the last message wait for a head
    ])
    req = _of(events, HttpRequest)[0]
    assert req.content_length is None
    assert _of(events, HttpResponse)[0].body_len is None
    ends = _of(events, HttpBodyEnded)
    assert [(e.direction, e.body_len) for e in ends] == [(ORIG, 9), (RESP, 10)]


def test_interim_responses_do_not_answer_the_request() -> None:
    events = _session([
        (ORIG, b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"),
        (RESP, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (ORIG, b"ok"),
        (RESP, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\n"
               b"Content-Length: 0\r\n\r\n"),
    ])
    assert [(r.status, r.body_len) for r in _of(events, HttpResponse)] == [
        (100, 0), (103, 0), (201, 0)]


def test_response_until_close_ends_the_session() -> None:
    s = HttpSession()
    s.feed(ORIG, b"GET / HTTP/1.0\r\n\r\n")
    events = s.feed(RESP, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody...")
    assert events == [HttpResponse(status=200, reason="OK", version="1.0",
                                   content_type="text/plain", body_len=None, offset=0)]
    assert s.done


def test_switching_protocols_ends_http() -> None:
    s = HttpSession()
    s.feed(ORIG, b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\n\r\n")
    events = s.feed(RESP, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
                          b"\x81\x05")
    assert [type(e) for e in events] == [HttpResponse]
    assert s.done


def test_tolerates_bare_lf_obs_fold_odd_case_and_blank_lines() -> None:
    events = _session([
        (ORIG, b"\r\n\nGET / HTTP/1.1\nhOsT:   example.org  \nuser-AGENT: a\n  b\n\tc\n"
               b"not a field line\nVIA : 1.1 proxy\n\n"),
    ])
    (req,) = events
    assert isinstance(req, HttpRequest)
    assert (req.host, req.user_agent, req.via) == ("example.org", "a b c", "1.1 proxy")
    assert req.offset == 3


def test_forward_proxy_request_absolute_form() -> None:
    auth = base64.b64encode(b"alice:s3cret").decode()
    (req,) = _session([(ORIG, (
        "GET http://user@[2001:db8::1]:8080/p?q HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n"
        f"Proxy-Authorization: Basic {auth}\r\nVia: 1.1 first\r\nVia: 1.1 second\r\n"
        "X-Forwarded-For: 192.0.2.1, 198.51.100.2\r\nForwarded: for=192.0.2.1\r\n"
        "Client-IP: 192.0.2.1\r\nProxy-Connection: keep-alive\r\n\r\n").encode())])
    assert isinstance(req, HttpRequest)
    assert req.is_proxy_request
    assert (req.target_host, req.target_port) == ("2001:db8::1", 8080)
    assert req.proxy_authorization_user == "alice"
    assert "s3cret" not in repr(req)
    assert req.via == "1.1 first"
    assert req.x_forwarded_for == "192.0.2.1, 198.51.100.2"
    assert req.forwarded == "for=192.0.2.1"
    assert req.proxied == ("VIA -> 1.1 first", "VIA -> 1.1 second",
                           "X-FORWARDED-FOR -> 192.0.2.1, 198.51.100.2",
                           "FORWARDED -> for=192.0.2.1", "CLIENT-IP -> 192.0.2.1",
                           "PROXY-CONNECTION -> keep-alive")


@pytest.mark.parametrize(("uri", "host", "port"), [
    ("http://example.com/", "example.com", 80),
    ("HTTPS://example.com", "example.com", 443),
    ("ftp://files.example:2121/x", "files.example", 2121),
    ("gopher://old.example/", "old.example", None),
])
def test_absolute_form_targets(uri: str, host: str, port: int | None) -> None:
    (req,) = HttpSession().feed(ORIG, f"GET {uri} HTTP/1.1\r\n\r\n".encode())
    assert isinstance(req, HttpRequest)
    assert (req.is_proxy_request, req.target_host, req.target_port) == (True, host, port)


def test_asterisk_form_and_digest_proxy_user() -> None:
    (req,) = HttpSession().feed(ORIG, b'OPTIONS * HTTP/1.1\r\nHost: h\r\nProxy-Authorization: '
                                      b'Digest username="bob", realm="r", nonce="n"\r\n\r\n')
    assert isinstance(req, HttpRequest)
    assert (req.uri, req.is_proxy_request, req.proxy_authorization_user) == ("*", False, "bob")


# -- CONNECT ------------------------------------------------------------------------------

def test_connect_success_opens_tunnel_with_early_data() -> None:
    events = _session([
        (ORIG, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        (ORIG, b"\x16\x03\x01\x00\x05hello"),  # TLS sent before the proxy answered
        (RESP, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03"),
    ])
    req, resp, tunnel = events
    assert isinstance(req, HttpRequest)
    assert (req.is_proxy_request, req.target_host, req.target_port) == (True, "example.com", 443)
    assert isinstance(resp, HttpResponse) and resp.body_len == 0
    assert tunnel == TunnelOpened(orig_rest=b"\x16\x03\x01\x00\x05hello", resp_rest=b"\x16\x03\x03")


def test_connect_refused_resumes_http() -> None:
    events = _session([
        (ORIG, b"CONNECT [::1]:22 HTTP/1.1\r\n\r\n"),
        (RESP, b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\nnope"),
        (ORIG, b"CONNECT [::1]:22 HTTP/1.1\r\nProxy-Authorization: Basic Ym9iOng=\r\n\r\n"),
        (RESP, b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-x\r\n"),
    ])
    reqs = _of(events, HttpRequest)
    assert [(r.target_host, r.target_port, r.proxy_authorization_user) for r in reqs] == [
        ("::1", 22, None), ("::1", 22, "bob")]
    assert [r.status for r in _of(events, HttpResponse)] == [407, 200]
    assert events[-1] == TunnelOpened(orig_rest=b"", resp_rest=b"SSH-2.0-x\r\n")


def test_bytes_held_after_refused_connect_are_parsed() -> None:
    s = HttpSession()
    s.feed(ORIG, b"CONNECT a:1 HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    events = s.feed(RESP, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert [type(e) for e in events] == [HttpResponse, HttpRequest]
    assert isinstance(events[1], HttpRequest) and events[1].uri == "/next"


def test_connect_hold_is_bounded() -> None:
    s = HttpSession()
    s.feed(ORIG, b"CONNECT a:1 HTTP/1.1\r\n\r\n")
    events = s.feed(ORIG, b"x" * (MAX_BUFFER + 1))
    assert isinstance(events[-1], Malformed) and s.done


# -- violations -----------------------------------------------------------------------------

@pytest.mark.parametrize(("direction", "data", "reason"), [
    (ORIG, b"\x16\x03\x01\x02\x00\x01", "invalid request-line"),
    (ORIG, b"GET /a b HTTP/1.1\r\n\r\n", None),  # tolerated: a target with a space
    (ORIG, b"GET / HTTP/1.1 extra\r\n\r\n", "invalid request-line"),
    (ORIG, b"GET /\r\n\r\n", "invalid request-line"),  # HTTP/0.9
    (ORIG, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2 is not HTTP/1"),
    (ORIG, b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
     "conflicting Content-Length values"),
    (ORIG, b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
    (ORIG, b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
     "request Transfer-Encoding is not chunked"),
    (ORIG, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
    (ORIG, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
     "chunk-data longer than its size"),
    (RESP, b"SSH-2.0-OpenSSH_9.6\r\n", "invalid status-line"),
    (RESP, b"\x00\x00", "invalid status-line"),
])
def test_violations(direction: int, data: bytes, reason: str | None) -> None:
    s = HttpSession()
    if direction == RESP:
        s.feed(ORIG, b"GET / HTTP/1.1\r\n\r\n")
    events = run(HttpSession() if direction == ORIG else s, [(direction, data)])
    if reason is None:
        assert not _of(events, Malformed)
        return
    bad = events[-1]
    assert isinstance(bad, Malformed)
    assert (bad.direction, bad.reason) == (direction, reason)
    # Framing errors point at the message; chunk errors at the chunk line or the stray byte.
    assert (bad.offset == 0) if b"chunk" not in data else (47 <= bad.offset <= 52)


def test_list_content_length_with_equal_members_is_accepted() -> None:
    (req,) = HttpSession().feed(ORIG, b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n")
    assert isinstance(req, HttpRequest) and req.content_length == 2


def test_non_http_is_rejected_without_buffering() -> None:
    s = HttpSession()
    assert s.feed(ORIG, b"G") == []
    assert s.feed(ORIG, b"E") == []
    (bad,) = s.feed(ORIG, b"\x00")
    assert isinstance(bad, Malformed) and s.done
    assert s.feed(ORIG, b"GET / HTTP/1.1\r\n\r\n") == []


def test_header_block_limit() -> None:
    s = HttpSession()
    s.feed(ORIG, b"GET / HTTP/1.1\r\n")
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    events: list[object] = []
    for _ in range(MAX_BUFFER // len(line) + 2):
        events += s.feed(ORIG, line)
    assert events == [Malformed(direction=ORIG, offset=0,
                                reason="header section longer than 64 KiB")]


def test_large_head_fed_bytewise_is_linear() -> None:
    # A 60 KiB head one byte at a time must not rescan the buffer per byte.
    head = b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 60_000 + b"\r\n\r\n"
    s = HttpSession()
    events: list[object] = []
    for i in range(len(head)):
        events += s.feed(ORIG, head[i: i + 1])
    assert [type(e) for e in events] == [HttpRequest]


def test_bad_direction_is_a_usage_error() -> None:
    with pytest.raises(ValueError):
        HttpSession().feed(-1, b"GET")


# -- the sniffers ---------------------------------------------------------------------------

@pytest.mark.parametrize(("head", "expected"), [
    (b"", True), (b"G", True), (b"GE", True), (b"GET", True), (b"GET ", True),
    (b"GET / HTTP/1.1\r\n", True), (b"CONNECT a:443 HTTP/1.1", True), (b"PROPFIND /", True),
    (b"MKCALEN", True), (b"get / HTTP/1.1", False), (b"GETX / HTTP/1.1", False),
    (b"\x16\x03\x01", False), (b"SSH-2.0-x", False), (b"\x05\x01\x00", False),
    (b"XYZZYXYZZYXYZZY", False), (b"\r\n\nGET / HTTP/1.1", True), (b"\r\nXYZ ", False),
])
def test_looks_like_http_request(head: bytes, expected: bool) -> None:
    assert looks_like_http_request(head) is expected


def test_looks_like_http_response() -> None:
    assert looks_like_http_response(b"HTT")
    assert looks_like_http_response(b"HTTP/1.1 200 OK")
    assert not looks_like_http_response(b"SSH-2.0")


# -- real captures ---------------------------------------------------------------------------

HTTP_TRACES = "zeek/testing/btest/Traces/http"
BASELINE = "zeek/testing/btest/Baseline"


def _exchanges(path: Path) -> dict[tuple[str, int, str, int], list[object]]:
    return {(*f.orig, *f.resp): check_split_invariance(HttpSession, f.chunks)
            for f in flows(path)
            if f.proto == "tcp" and looks_like_http_request(f.stream(ORIG)[:16])}


def _compare_http_log(events: list[object], row: dict[str, str | None]) -> None:
    req = _of(events, HttpRequest)[0]
    resp = _of(events, HttpResponse)[0]
    assert req.method == row["method"]
    assert req.host == row["host"]
    assert req.uri == row["uri"]
    assert req.user_agent == row["user_agent"]
    assert req.referrer == row["referrer"]
    # Zeek's http.log version is the reply's when there is one (HTTP::Info$version is
    # overwritten in http_reply).
    assert resp.version == row["version"]
    assert resp.status == int(row["status_code"] or 0)
    assert resp.reason == row["status_msg"]
    assert (req.content_length or 0) == int(row["request_body_len"] or 0)
    assert (resp.body_len or 0) == int(row["response_body_len"] or 0)
    proxied = row["proxied"]
    assert set(req.proxied) == (set(proxied.split(",")) if proxied else set())


@pytest.mark.corpus
def test_connect_with_header_matches_zeek(public_corpus: Path) -> None:
    exchanges = _exchanges(public_corpus / HTTP_TRACES / "connect-with-header.pcap")
    (row,) = zeek_log(public_corpus / BASELINE /
                      "scripts.base.protocols.http.http-connect-with-header/http.log")
    key = (str(row["id.orig_h"]), int(row["id.orig_p"] or 0), str(row["id.resp_h"]),
           int(row["id.resp_p"] or 0))
    events = exchanges[key]
    _compare_http_log(events, row)
    tunnel = events[-1]
    assert isinstance(tunnel, TunnelOpened)
    assert tunnel.orig_rest[:3] == b"\x16\x03\x01"  # the tunnelled TLS ClientHello
    assert tunnel.resp_rest[:1] == b"\x16"


@pytest.mark.corpus
def test_websocket_upgrade_matches_zeek(public_corpus: Path) -> None:
    exchanges = _exchanges(public_corpus / HTTP_TRACES / "websocket.pcap")
    (row,) = zeek_log(public_corpus / BASELINE /
                      "scripts.base.protocols.http.101-switching-protocols/http.log")
    key = (str(row["id.orig_h"]), int(row["id.orig_p"] or 0), str(row["id.resp_h"]),
           int(row["id.resp_p"] or 0))
    _compare_http_log(exchanges[key], row)


@pytest.mark.corpus
def test_docker_upgrade_matches_zeek(public_corpus: Path) -> None:
    # zeek-cut output without connection ids: compare (status, method, uri) as a multiset.
    exchanges = _exchanges(public_corpus / HTTP_TRACES / "docker-http-upgrade.pcap")
    ours = []
    for events in exchanges.values():
        reqs, resps = _of(events, HttpRequest), _of(events, HttpResponse)
        ours += [(str(p.status), q.method, q.uri) for q, p in zip(reqs, resps, strict=True)]
    rows = zeek_log(public_corpus / BASELINE / "scripts.base.protocols.http.upgrade-to-tcp"
                    / "http.log.cut")
    assert sorted(ours) == sorted((r["status_code"], r["method"], r["uri"]) for r in rows)


@pytest.mark.corpus
def test_absolute_form_proxy_trace_matches_tshark(public_corpus: Path) -> None:
    # derived/wireshark-4.0.17/.../proxy.pcap.http.tsv: GET HTTP://bro.org/, host bro.org,
    # curl/7.33.0, answered 200.
    (events,) = _exchanges(public_corpus / HTTP_TRACES / "proxy.pcap").values()
    req = _of(events, HttpRequest)[0]
    assert (req.method, req.uri, req.host, req.user_agent) == (
        "GET", "HTTP://bro.org/", "bro.org", "curl/7.33.0")
    assert (req.is_proxy_request, req.target_host, req.target_port) == (True, "bro.org", 80)
    assert req.proxied == ("PROXY-CONNECTION -> Keep-Alive",)
    resp = _of(events, HttpResponse)[0]
    assert resp.status == 200
    (end,) = _of(events, HttpBodyEnded)
    assert end.body_len == resp.body_len


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["get-to-ssh-server.pcap", "http-to-ssh.pcap"])
def test_http_to_ssh_server_is_malformed(public_corpus: Path, name: str) -> None:
    (events,) = _exchanges(public_corpus / HTTP_TRACES / name).values()
    assert isinstance(events[0], HttpRequest)
    assert events[-1] == Malformed(direction=RESP, offset=0, reason="invalid status-line")
