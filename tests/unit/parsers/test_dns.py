"""DNS messages and DNS over TCP: sections, Zeek's answer strings, hostile names, captures."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

from hopguard.errors import ProtocolError
from hopguard.parsers.base import ORIG, RESP, Malformed
from hopguard.parsers.dns import (
    DnsMessage,
    DnsQuestion,
    DnsTcpSession,
    parse_dns,
)
from tests.unit.parsers.test_socks import check_split_invariance, flows, zeek_log

# -- a small message builder ----------------------------------------------------------------


def name(text: str) -> bytes:
    if not text:
        return b"\x00"
    return b"".join(bytes([len(lb)]) + lb for lb in (p.encode() for p in text.split("."))) + b"\0"


def ptr(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl: int = 300, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def message(*, ident: int = 0x1234, flags: int = 0x0100,
            questions: Sequence[bytes] | None = None, answers: Sequence[bytes] = (),
            authorities: Sequence[bytes] = (), additionals: Sequence[bytes] = ()) -> bytes:
    qs = questions if questions is not None else [name("www.example.com") + b"\x00\x01\x00\x01"]
    head = struct.pack("!HHHHHH", ident, flags, len(qs), len(answers), len(authorities),
                       len(additionals))
    return head + b"".join(qs) + b"".join(answers) + b"".join(authorities) + b"".join(additionals)


QNAME_AT = 12  # where the first question's name starts: compression pointers aim here
RESPONSE = 0x8180  # QR, RD, RA


def answer_data(rtype: int, rdata: bytes) -> str:
    msg = parse_dns(message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), rtype, rdata)]))
    (record,) = msg.answers
    return record.data


# -- header and questions -------------------------------------------------------------------

def test_query_header_and_question() -> None:
    msg = parse_dns(message(ident=48554, flags=0x0100 | 0x0010,
                            questions=[name("WWW.Gleeble.ORG") + b"\x00\xff\x00\x01"]))
    assert msg == DnsMessage(
        id=48554, is_response=False, opcode=0, opcode_name="query", rcode=0,
        rcode_name="NOERROR", aa=False, tc=False, rd=True, ra=False, z=0, ad=False, cd=True,
        questions=(DnsQuestion(name="www.gleeble.org", qtype=255, qtype_name="*", qclass=1,
                               qclass_name="C_INTERNET"),),
        answers=(), authorities=(), additionals=(), partial=False)


@pytest.mark.parametrize(("flags", "field", "value"), [
    (0x8403, "rcode_name", "NXDOMAIN"), (0x8408, "rcode_name", "NXRRSet"),
    (0x800B, "rcode_name", "unassigned-11"), (0x1800, "opcode_name", "opcode-3"),
    (0x2800, "opcode_name", "dynamic-update"), (0x8600, "tc", True), (0x8040, "z", 1),
    (0x8020, "ad", True), (0x8400, "aa", True),
])
def test_header_fields(flags: int, field: str, value: object) -> None:
    assert getattr(parse_dns(message(flags=flags)), field) == value


@pytest.mark.parametrize(("qtype", "qclass", "tname", "cname"), [
    (28, 1, "AAAA", "C_INTERNET"), (16, 3, "TXT", "C_CHAOS"), (65, 255, "HTTPS", "C_ANY"),
    (4242, 77, "query-4242", "qclass-77"), (32769, 254, "DLV", "C_NONE"),
])
def test_zeek_type_and_class_names(qtype: int, qclass: int, tname: str, cname: str) -> None:
    q = name("a.example") + struct.pack("!HH", qtype, qclass)
    (question,) = parse_dns(message(questions=[q])).questions
    assert (question.qtype_name, question.qclass_name) == (tname, cname)


def test_root_and_non_utf8_names() -> None:
    qs = [name("") + b"\x00\x02\x00\x01", b"\x03a\xffb\x00" + b"\x00\x01\x00\x01",
          b"\x05a.b\xc3\xa9\x00" + b"\x00\x01\x00\x01"]
    assert [q.name for q in parse_dns(message(questions=qs)).questions] == [
        "", "a\\xffb", "a.bé"]


# -- records as Zeek lists them ------------------------------------------------------------

@pytest.mark.parametrize(("rtype", "rdata", "expected"), [
    (1, bytes([192, 0, 2, 1]), "192.0.2.1"),
    (28, ipaddress.IPv6Address("2001:db8::1").packed, "2001:db8::1"),
    (28, ipaddress.IPv6Address("::ffff:192.0.2.9").packed, "192.0.2.9"),
    (5, name("CDN.Example.NET"), "cdn.example.net"),
    (5, b"\x03cdn" + ptr(QNAME_AT + 4), "cdn.example.com"),  # compressed into the question
    (2, name("ns1.example.com"), "ns1.example.com"),
    (12, name("host.example"), "host.example"),
    (15, b"\x00\x0a" + name("mx.example.com"), "mx.example.com"),
    (33, b"\x00\x01\x00\x05\x13\xc4" + name("sip.example.com"), "sip.example.com"),
    (6, name("ns.example.com") + name("hostmaster.example.com") + bytes(20), "ns.example.com"),
    (16, b"\x05hello\x00\x03a b", "TXT 5 hello TXT 0  TXT 3 a b"),
    (16, b"", ""),
    (99, b"\x06v=spf1", "SPF 6 v=spf1"),
    (46, b"\x00\x01\x08\x02" + bytes(14) + name("") + b"sig", "RRSIG 1 <Root>"),
    (46, b"\x00\x1c\x08\x02" + bytes(14) + name("example.com") + b"sig", "RRSIG 28 example.com"),
    (48, b"\x01\x01\x03\x0d" + b"key", "DNSKEY 13"),
    (43, b"\x12\x34\x08\x02" + bytes(32), "DS 8 2"),
    (47, name("b.example.com") + b"\x00\x01\x40", "NSEC www.example.com b.example.com"),
    (50, b"\x01\x00\x00\x0a\x00", "NSEC3"),
    (51, b"\x01\x00\x00\x0a\x00", "NSEC3PARAM"),
    (44, b"\x01\x02\xab\xcd", "SSHFP: abcd"),
    (29, bytes([0, 0x12, 0x16, 0x13]) + bytes(12), "LOC:  18 22 19"),
    (65534, b"\x08\x12\x34\x00\x01", "BIND9 signing signal"),
    (10, b"\x00\x01\x02", "<unknown type=10>"),  # NULL: iodine's favourite
    (39, name("other.example"), "<unknown type=39>"),  # DNAME: Zeek does not decode it
    (65, b"\x00\x01\x00", ""),  # HTTPS: decoded by Zeek, not listed
    (257, b"\x00\x05issueca.example", ""),  # CAA
    (13, b"\x03cpu\x02os", ""),  # HINFO
])
def test_answer_strings_match_zeek(rtype: int, rdata: bytes, expected: str) -> None:
    assert answer_data(rtype, rdata) == expected


def test_zeek_answers_skip_unlisted_records_and_keep_ttls() -> None:
    msg = parse_dns(message(flags=RESPONSE, answers=[
        rr(ptr(QNAME_AT), 5, name("edge.example.net"), ttl=60),
        rr(name("edge.example.net"), 65, b"\x00\x01\x00", ttl=30),
        rr(name("edge.example.net"), 1, bytes([203, 0, 113, 7]), ttl=20),
    ], authorities=[rr(name("example.net"), 2, name("ns.example.net"))],
        additionals=[rr(name(""), 41, b"", ttl=0x00008000, rclass=1232)]))
    assert msg.zeek_answers() == (("edge.example.net", "203.0.113.7"), (60.0, 20.0))
    assert [r.name for r in msg.answers] == ["www.example.com", "edge.example.net",
                                             "edge.example.net"]
    (opt,) = msg.additionals
    assert (opt.rtype_name, opt.rclass, opt.data) == ("OPT", 1232, "")
    assert msg.authorities[0].data == "ns.example.net"
    assert not msg.partial


def test_damaged_tail_keeps_the_answers() -> None:
    msg = parse_dns(message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 1, bytes(4))],
                            additionals=[rr(name("x"), 1, bytes(4)), b"\x01"]))
    assert msg.partial
    assert len(msg.answers) == 1 and len(msg.additionals) == 1


def test_name_of_exactly_255_octets() -> None:
    labels = ["a" * 63, "b" * 63, "c" * 63, "d" * 61]  # 64 + 64 + 64 + 62 + root = 255
    q = name(".".join(labels)) + b"\x00\x01\x00\x01"
    assert len(parse_dns(message(questions=[q])).questions[0].name) == 253
    too_long = name(".".join([*labels[:3], "d" * 62])) + b"\x00\x01\x00\x01"
    with pytest.raises(ProtocolError, match="longer than 255"):
        parse_dns(message(questions=[too_long]))


# -- malformed messages ---------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "match"), [
    (b"\x12\x34\x01\x00\x00\x01", "shorter than its 12-octet header"),
    (message()[:-2], "truncated question"),
    (message(questions=[b"\x07exam"]), "past the end"),
    (message(questions=[ptr(QNAME_AT) + b"\x00\x01\x00\x01"]), "does not point backwards"),
    (message(questions=[b"\x01a" + ptr(QNAME_AT) + b"\x00\x01\x00\x01"]),
     "does not point backwards"),
    (message(questions=[ptr(QNAME_AT + 10) + b"\x00\x01\x00\x01"]), "does not point backwards"),
    (message(questions=[b"\x01a\xc0"]), "truncated compression pointer"),
    (message(questions=[b"\x41abc\x00\x00\x01\x00\x01"]), "unsupported label type"),
    (message(questions=[b"\x81abc\x00\x00\x01\x00\x01"]), "unsupported label type"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 1, bytes(5))]), "not 4"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 28, bytes(4))]), "not 16"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 1, bytes(4))[:-2]]), "RDATA runs past"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 1, b"")[:-4]]),
     "truncated resource record"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 5, b"\x03abc")]), "past"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 16, b"\x05abc")]), "character-string"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 15, b"\x00")]), "MX RDATA too short"),
    (message(flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 6, name("a") + name("b"))]),
     "SOA RDATA too short"),
])
def test_malformed(raw: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_dns(raw)


def test_pointer_loop_between_two_names() -> None:
    # Question 1 ends by pointing at question 2, which points back at question 1: the
    # "strictly backwards" rule stops it at the second jump.
    q1 = b"\x01a" + ptr(QNAME_AT + 10) + b"\x00\x01\x00\x01"
    q2 = b"\x01b" + ptr(QNAME_AT) + b"\x00\x01\x00\x01"
    with pytest.raises(ProtocolError, match="does not point backwards"):
        parse_dns(message(questions=[q1, q2]))


def test_deep_pointer_chains_are_bounded() -> None:
    # Every name is one label plus a pointer to the previous one: legal, and the 255-octet
    # limit ends the expansion long before the chain does.
    questions = [name("x") + b"\x00\x01\x00\x01"]
    pos = QNAME_AT
    for _ in range(400):
        questions.append(b"\x01y" + ptr(pos) + b"\x00\x01\x00\x01")
        pos += len(questions[-2])
    with pytest.raises(ProtocolError, match="longer than 255"):
        parse_dns(message(questions=questions))


# -- DNS over TCP ---------------------------------------------------------------------------

def _framed(msg: bytes) -> bytes:
    return struct.pack("!H", len(msg)) + msg


def test_tcp_frames_in_both_directions() -> None:
    query = message(ident=1)
    query2 = message(ident=2, questions=[name("b.example") + b"\x00\x10\x00\x01"])
    reply = message(ident=1, flags=RESPONSE, answers=[rr(ptr(QNAME_AT), 1, bytes([10, 0, 0, 1]))])
    events = check_split_invariance(DnsTcpSession, [
        (ORIG, _framed(query) + _framed(query2)), (RESP, _framed(reply)),
    ])
    assert [(type(e), getattr(e, "id", None)) for e in events] == [
        (DnsMessage, 1), (DnsMessage, 2), (DnsMessage, 1)]
    assert isinstance(events[2], DnsMessage) and events[2].zeek_answers()[0] == ("10.0.0.1",)


def test_tcp_bad_frame_is_malformed() -> None:
    s = DnsTcpSession()
    events = s.feed(RESP, _framed(message()) + _framed(b"\x00\x01\x02"))
    assert isinstance(events[0], DnsMessage)
    assert isinstance(events[1], Malformed)
    assert (events[1].direction, events[1].offset) == (RESP, len(message()) + 2)
    assert s.done and s.feed(ORIG, _framed(message())) == []


def test_tcp_bad_direction_is_a_usage_error() -> None:
    with pytest.raises(ValueError):
        DnsTcpSession().feed(7, b"\x00")


# -- real captures --------------------------------------------------------------------------

def _dns_payloads(path: Path) -> list[tuple[tuple[str, int, str, int], bytes]]:
    return [((*f.orig, *f.resp), data) for f in flows(path)
            if f.proto == "udp" and 53 in (f.orig[1], f.resp[1]) for _, data in f.chunks]


@pytest.mark.corpus
@pytest.mark.parametrize("trace", ["gre-sample", "gre-pptp"])
def test_matches_zeek_dns_log(public_corpus: Path, trace: str) -> None:
    # core.tunnels.gre and core.tunnels.gre-pptp: DNS inside GRE (and PPP for PPTP). Zeek
    # sets AA and RA only from answer records, so those are not compared.
    base = "gre" if trace == "gre-sample" else "gre-pptp"
    rows = zeek_log(public_corpus / "zeek/testing/btest/Baseline" / f"core.tunnels.{base}"
                    / "dns.log")
    payloads = _dns_payloads(public_corpus / "zeek/testing/btest/Traces/tunnels"
                             / f"{trace}.pcap")
    for row in rows:
        key = (row["id.orig_h"], int(row["id.orig_p"] or 0), row["id.resp_h"],
               int(row["id.resp_p"] or 0))
        msgs = [parse_dns(p) for k, p in payloads if k == key]
        query = next(m for m in msgs if not m.is_response)
        reply = next((m for m in msgs if m.is_response), None)
        q = query.questions[0]
        assert (query.id, q.name, q.qclass, q.qclass_name, q.qtype, q.qtype_name) == (
            int(row["trans_id"] or 0), row["query"], int(row["qclass"] or 0),
            row["qclass_name"], int(row["qtype"] or 0), row["qtype_name"])
        assert query.rd == (row["RD"] == "T") and query.tc == (row["TC"] == "T")
        if reply is None:
            assert row["rcode"] is None
            continue
        assert (reply.rcode, reply.rcode_name) == (int(row["rcode"] or 0), row["rcode_name"])
        answers, _ = reply.zeek_answers()
        assert list(answers) == (row["answers"].split(",") if row["answers"] else [])


@pytest.mark.corpus
def test_ndpi_query_names(public_corpus: Path) -> None:
    # ndpi/tests/cfgs/default/result/*.out "Hostname/SNI" of each DNS flow (nDPI shows "*"
    # as "_" and non-printable bytes as "?", so only plain names are compared).
    pcaps = public_corpus / "ndpi/tests/cfgs/default/pcap"
    expected = {
        "bt-dns.pcap": {"utorrent.com"},
        "dns_long_domainname.pcap": {"gmr02c.16.0.fhkfhsdkfhsk.tunnel.example.com"},
        "dns_ambiguous_names.pcap": {
            "android.clients.google.com", "41-courier.push.apple.com", "api.teams.skype.com",
            "*.teams.microsoft.com", "alt2-mtalk.google.com", "guzzoni.apple.com",
            "teams.skype.com", "instagram.faae1-1.fna.fbcdn.net", "short.weixin.qq.com",
            "wide-youtube.l.google.com"},
    }
    for pcap, names in expected.items():
        seen = {q.name for _, p in _dns_payloads(pcaps / pcap) for q in parse_dns(p).questions}
        assert seen == names


@pytest.mark.corpus
def test_real_dns_traffic_decodes_or_raises_protocol_error(public_corpus: Path) -> None:
    pcaps = public_corpus / "ndpi/tests/cfgs/default/pcap"
    decoded = refused = 0
    for pcap in ("bad-dns-traffic.pcap", "dns-tunnel-iodine.pcap", "dns_exfiltration.pcap",
                 "dns-invalid-chars.pcap", "malformed_dns.pcap", "dns-exf.pcap"):
        for _, payload in _dns_payloads(pcaps / pcap):
            try:
                parse_dns(payload)
                decoded += 1
            except ProtocolError:
                refused += 1
    assert decoded > 1000
    assert refused == 4  # malformed_dns.pcap: names longer than 255 octets


@pytest.mark.corpus
def test_iodine_tunnel_answers(public_corpus: Path) -> None:
    # iodine tunnels data through NULL records, which Zeek lists as "<unknown type=10>".
    pcap = public_corpus / "ndpi/tests/cfgs/default/pcap/dns-tunnel-iodine.pcap"
    kinds = {r.data.split(" ")[0] for _, p in _dns_payloads(pcap)
             for r in parse_dns(p).answers}
    assert "<unknown" in kinds

