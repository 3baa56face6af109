"""SSH identification exchange (RFC 4253 §4.2): both sides, tolerance, limits, captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from hopguard.parsers.base import MAX_BUFFER, ORIG, RESP, Malformed
from hopguard.parsers.ssh import SshIdent, SshSession, looks_like_ssh
from tests.unit.parsers.test_socks import check_split_invariance, flows, zeek_log


def test_both_identifications_then_done() -> None:
    events = check_split_invariance(SshSession, [
        (RESP, b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.8\r\n"),
        (ORIG, b"SSH-2.0-OpenSSH_9.6\r\n\x00\x00\x05\xdc\x08\x14"),
        (RESP, b"\x00\x00\x04\x44\x0a\x14"),
    ])
    assert events == [
        SshIdent(direction=RESP, text="SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.8",
                 proto_version="2.0", software="OpenSSH_9.6p1", comments="Ubuntu-3ubuntu13.8",
                 offset=0),
        SshIdent(direction=ORIG, text="SSH-2.0-OpenSSH_9.6", proto_version="2.0",
                 software="OpenSSH_9.6", comments=None, offset=0),
    ]
    s = SshSession()
    s.feed(ORIG, b"SSH-2.0-a\r\n")
    assert not s.done
    s.feed(RESP, b"SSH-2.0-b\r\n")
    assert s.done
    assert s.feed(RESP, b"more") == []


def test_server_lines_before_identification_and_bare_lf() -> None:
    (ident,) = check_split_invariance(SshSession, [
        (RESP, b"Welcome to the bastion\r\nauthorised use only\n\nSSH-1.99-Cisco-1.25\n"),
    ])
    assert isinstance(ident, SshIdent)
    assert (ident.proto_version, ident.software, ident.offset) == ("1.99", "Cisco-1.25", 45)


def test_client_may_not_send_other_lines() -> None:
    s = SshSession()
    (bad,) = s.feed(ORIG, b"hello\r\nSSH-2.0-x\r\n")
    assert bad == Malformed(direction=ORIG, offset=0, reason="client did not start with SSH-")
    assert s.done


def test_client_garbage_is_rejected_at_once() -> None:
    s = SshSession()
    assert s.feed(ORIG, b"SS") == []
    (bad,) = s.feed(ORIG, b"X")
    assert isinstance(bad, Malformed)


@pytest.mark.parametrize(("line", "reason"), [
    (b"SSH-2.0-" + b"x" * 250 + b"\r\n", "identification longer than 255 bytes"),
    (b"SSH-2.0-Open\x00SSH\r\n", "NUL in identification"),
    (b"SSH-2.0\r\n", "invalid identification string"),
    (b"SSH--OpenSSH\r\n", "invalid identification string"),
])
def test_invalid_identifications(line: bytes, reason: str) -> None:
    (bad,) = check_split_invariance(SshSession, [(RESP, line)])
    assert bad == Malformed(direction=RESP, offset=0, reason=reason)


def test_longest_identification_is_accepted() -> None:
    line = b"SSH-2.0-" + b"x" * (255 - 10) + b"\r\n"
    assert len(line) == 255
    (ident,) = SshSession().feed(ORIG, line)
    assert isinstance(ident, SshIdent) and len(ident.text) == 253


def test_unterminated_identification_is_bounded() -> None:
    (bad,) = SshSession().feed(RESP, b"SSH-2.0-" + b"x" * 300)
    assert isinstance(bad, Malformed)


def test_pre_identification_lines_are_bounded() -> None:
    s = SshSession()
    events: list[object] = []
    for _ in range(MAX_BUFFER // 100 + 2):
        events += s.feed(RESP, b"b" * 98 + b"\r\n")
    assert events == [Malformed(direction=RESP, offset=MAX_BUFFER - MAX_BUFFER % 100,
                                reason="no identification within 64 KiB")]
    long_line = SshSession().feed(RESP, b"x" * 9000)
    assert long_line == [Malformed(direction=RESP, offset=0, reason="line before SSH- too long")]


def test_non_utf8_is_escaped() -> None:
    (ident,) = SshSession().feed(RESP, b"SSH-2.0-caf\xe9 \xff\r\n")
    assert isinstance(ident, SshIdent)
    assert (ident.software, ident.comments) == ("caf\\xe9", "\\xff")


def test_bad_direction_is_a_usage_error() -> None:
    with pytest.raises(ValueError):
        SshSession().feed(3, b"SSH-")


@pytest.mark.parametrize(("head", "expected"), [
    (b"", True), (b"S", True), (b"SSH", True), (b"SSH-2.0-OpenSSH_9.6\r\n", True),
    (b"banner line\r\nSSH-2.0-x\r\n", True), (b"SSH2", False), (b"ssh-2.0-x", False),
    (b"GET / HTTP/1.1\r\n", False), (b"\x16\x03\x01\x00", False),
    (b"binary\x00junk\nSSH-2.0-x\r\n", False),
])
def test_looks_like_ssh(head: bytes, expected: bool) -> None:
    assert looks_like_ssh(head) is expected


# -- real captures --------------------------------------------------------------------------

def _idents(path: Path) -> list[list[object]]:
    return [check_split_invariance(SshSession, f.chunks) for f in flows(path)
            if f.proto == "tcp" and (looks_like_ssh(f.stream(ORIG)[:8])
                                     or looks_like_ssh(f.stream(RESP)[:8]))]


def _texts(events: list[object]) -> dict[int, str]:
    assert all(isinstance(e, SshIdent) for e in events), events
    return {e.direction: e.text for e in events if isinstance(e, SshIdent)}


@pytest.mark.corpus
def test_arkime_ssh2(public_corpus: Path) -> None:
    # arkime/tests/pcap/ssh2.test: ssh.version ssh-1.99-openssh_3.9p1, ssh-2.0-openssh_5.3
    # (Arkime lower-cases them).
    for name in ("ssh2.pcap", "ssh2-moloch-crash.pcap"):
        (events,) = _idents(public_corpus / "arkime/tests/pcap" / name)
        assert _texts(events) == {RESP: "SSH-1.99-OpenSSH_3.9p1", ORIG: "SSH-2.0-OpenSSH_5.3"}


@pytest.mark.corpus
def test_zeek_ssh_on_port_80(public_corpus: Path) -> None:
    (events,) = _idents(public_corpus / "zeek/testing/btest/Traces/ssh/ssh-on-port-80.pcap")
    assert _texts(events) == {RESP: "SSH-2.0-OpenSSH_5.8p1 Debian-1ubuntu3",
                              ORIG: "SSH-2.0-OpenSSH_5.2"}


@pytest.mark.corpus
def test_ndpi_ssh(public_corpus: Path) -> None:
    # ndpi/tests/cfgs/default/result/ssh.pcap.out names the two banners of each flow
    # ("Hostname/SNI" and "Server"); its client/server labelling is not by TCP role, so the
    # pair is compared as a set.
    found = [set(_texts(e).values())
             for e in _idents(public_corpus / "ndpi/tests/cfgs/default/pcap/ssh.pcap")]
    assert found == [{"SSH-2.0-OpenSSH_5.3", "SSH-2.0-OpenSSH_5.6"},
                     {"SSH-2.0-OpenSSH_8.2p1 Ubuntu-4ubuntu0.11", "SSH-2.0-APACHE-SSHD-2.5.0"}]


@pytest.mark.corpus
def test_matches_zeek_ssh_log(public_corpus: Path) -> None:
    # core.tunnels.gre: an SSH connection inside GRE; ssh.log's client and server strings.
    (row,) = zeek_log(public_corpus / "zeek/testing/btest/Baseline/core.tunnels.gre/ssh.log")
    key = (row["id.orig_h"], int(row["id.orig_p"] or 0), row["id.resp_h"],
           int(row["id.resp_p"] or 0))
    (flow,) = [f for f in flows(public_corpus / "zeek/testing/btest/Traces/tunnels/gre-sample.pcap")
               if (*f.orig, *f.resp) == key]
    texts = _texts(check_split_invariance(SshSession, flow.chunks))
    assert texts == {ORIG: row["client"], RESP: row["server"]}
