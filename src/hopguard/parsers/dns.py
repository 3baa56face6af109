"""DNS messages (RFC 1035 §4) and DNS over TCP (RFC 1035 §4.2.2, RFC 7766).

Theory of operation
-------------------
:func:`parse_dns` decodes one whole message, as carried by one UDP datagram or one TCP frame::

    +--------+------------+--------------+---------------+----------------+
    | header | question   | answer       | authority     | additional     |
    | 12 B   | QDCOUNT x  | ANCOUNT RRs  | NSCOUNT RRs   | ARCOUNT RRs    |
    +--------+------------+--------------+---------------+----------------+

It returns a :class:`DnsMessage` or raises :class:`~hopguard.errors.ProtocolError` (with the
byte offset) when the header, a question or an answer record cannot be decoded. Authority and
additional records are decoded too, but a damaged one only ends the decoding of those sections
(``DnsMessage.partial``): like Zeek, we keep the answers of a message whose tail is broken.
Bytes after the last record are ignored.

Names (RFC 1035 §3.1, §4.1.4) are label sequences, possibly ending in a *compression pointer*
to an earlier name. Two rules make decoding terminate and bound its work on hostile input: a
pointer must point before the start of the label run that contains it (every jump goes
strictly backwards, so no loop is possible), and the decoded name may not exceed 255 octets in
wire form (§2.3.4). Label types 01 and 10 (RFC 6891 §5, obsolete extended labels) are errors.

Text follows Zeek's dns.log so that rows from a capture and from Zeek agree: names are
lower-cased (ASCII only) without the trailing dot, bytes that are not UTF-8 become ``\\xHH``;
type, class, rcode and opcode names come from Zeek's base/protocols/dns/consts.zeek; and each
record's ``data`` is the string Zeek's base scripts append to ``answers`` for that type
(an address for A/AAAA, the target name for NS/CNAME/PTR/MX/SRV, the primary server for SOA,
``TXT <len> <text>`` per character-string, ``<unknown type=N>`` for types Zeek does not
parse), or ``""`` for types whose records Zeek parses but does not list (OPT, TSIG, HINFO,
WKS, CAA, SVCB, HTTPS): :meth:`DnsMessage.zeek_answers` skips those, as Zeek does.

:class:`DnsTcpSession` frames DNS over TCP: in each direction, messages each preceded by a
two-byte length. It emits a :class:`DnsMessage` per complete frame; a frame that does not
decode is reported as :class:`Malformed` and ends the session.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from hopguard.errors import ProtocolError
from hopguard.parsers.base import ORIG, RESP, Malformed

__all__ = [
    "CLASSES",
    "OPCODES",
    "QUERY_TYPES",
    "RCODES",
    "DnsMessage",
    "DnsQuestion",
    "DnsRecord",
    "DnsTcpSession",
    "class_name",
    "opcode_name",
    "parse_dns",
    "rcode_name",
    "type_name",
]

# DNS::query_types of Zeek's consts.zeek (IANA "Resource Record (RR) TYPEs").
QUERY_TYPES: Final = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR", 24: "SIG",
    25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID",
    32: "NIMLOC", 33: "SRV", 34: "ATMA", 35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6",
    39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY",
    46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM",
    52: "TLSA", 53: "SMIMEA", 55: "HIP", 56: "NINFO", 57: "RKEY", 58: "TALINK", 59: "CDS",
    60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS",
    99: "SPF", 100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "NID", 105: "L32",
    106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR",
    252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "*", 256: "URI", 257: "CAA", 32768: "TA",
    32769: "DLV", 65281: "WINS", 65282: "WINS-R", 65422: "XPF", 65521: "INTEGRITY",
}
# DNS::classes
CLASSES: Final = {1: "C_INTERNET", 2: "C_CSNET", 3: "C_CHAOS", 4: "C_HESIOD", 254: "C_NONE",
                  255: "C_ANY"}
# DNS::base_errors (RCODEs of RFC 1035 §4.1.1, RFC 2136, RFC 6891, RFC 8945, RFC 7873).
RCODES: Final = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSet", 9: "NOTAUTH", 10: "NOTZONE",
    11: "unassigned-11", 12: "unassigned-12", 13: "unassigned-13", 14: "unassigned-14",
    15: "unassigned-15", 16: "BADVERS", 17: "BADKEY", 18: "BADTIME", 19: "BADMODE",
    20: "BADNAME", 21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE", 3842: "BADSIG",
}
# DNS::opcodes
OPCODES: Final = {0: "query", 1: "iquery", 2: "server-status", 4: "notify",
                  5: "dynamic-update", 6: "dso"}


def type_name(rtype: int) -> str:
    return QUERY_TYPES.get(rtype, f"query-{rtype}")


def class_name(rclass: int) -> str:
    return CLASSES.get(rclass, f"qclass-{rclass}")


def rcode_name(rcode: int) -> str:
    return RCODES.get(rcode, f"rcode-{rcode}")


def opcode_name(opcode: int) -> str:
    return OPCODES.get(opcode, f"opcode-{opcode}")


MAX_NAME: Final = 255  # octets of a name in wire form, length octets included (§2.3.4)
HEADER_LEN: Final = 12

_HEADER: Final = struct.Struct("!HHHHHH")
_RR_FIXED: Final = struct.Struct("!HHIH")  # TYPE CLASS TTL RDLENGTH
_QUESTION_FIXED: Final = struct.Struct("!HH")  # QTYPE QCLASS

# Types whose records Zeek decodes without adding anything to dns.log's answers.
_UNLISTED: Final = frozenset({11, 13, 32, 41, 64, 65, 250, 257})
_NAME_TYPES: Final = frozenset({2, 5, 12})  # NS, CNAME, PTR: RDATA is one domain name


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsQuestion:
    name: str
    qtype: int
    qtype_name: str
    qclass: int
    qclass_name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsRecord:
    name: str  # the owner name
    rtype: int
    rtype_name: str
    rclass: int  # for OPT (RFC 6891) this is the requestor's UDP payload size
    ttl: int
    data: str  # as Zeek lists it in answers; "" when Zeek does not list this type


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsMessage:
    id: int
    is_response: bool  # QR
    opcode: int
    opcode_name: str
    rcode: int  # the header's 4-bit RCODE (not extended by EDNS), as Zeek's dns.log
    rcode_name: str
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    z: int  # the Z bit (RFC 1035); AD and CD (RFC 4035) are separate
    ad: bool
    cd: bool
    questions: tuple[DnsQuestion, ...]
    answers: tuple[DnsRecord, ...]
    authorities: tuple[DnsRecord, ...]
    additionals: tuple[DnsRecord, ...]
    partial: bool  # authority or additional records were damaged and dropped

    def zeek_answers(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """The (answers, TTLs) pair Zeek's dns.log would show for this response."""
        listed = [r for r in self.answers if r.data]
        return tuple(r.data for r in listed), tuple(float(r.ttl) for r in listed)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` and the offset just after it (after the first pointer, if any)."""
    labels: list[bytes] = []
    wire_len = 1  # the root label's length octet
    end = -1  # where the name ends in place; set at the first pointer
    run_start = pos  # start of the label run being read; a pointer must point before it
    size = len(msg)
    while True:
        if pos >= size:
            raise ProtocolError(f"name runs past the end of the message (offset {pos})")
        n = msg[pos]
        kind = n & 0xC0
        if kind == 0xC0:
            # Compression pointer (§4.1.4): 14-bit offset from the start of the message.
            if pos + 1 >= size:
                raise ProtocolError(f"truncated compression pointer (offset {pos})")
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= run_start:
                raise ProtocolError(f"compression pointer does not point backwards "
                                    f"(offset {pos})")
            pos = run_start = target
            continue
        if kind:
            raise ProtocolError(f"unsupported label type 0x{n:02x} (offset {pos})")
        if n == 0:
            break
        if pos + 1 + n > size:
            raise ProtocolError(f"label runs past the end of the message (offset {pos})")
        wire_len += n + 1
        if wire_len > MAX_NAME:
            raise ProtocolError(f"name longer than 255 octets (offset {pos})")
        labels.append(msg[pos + 1: pos + 1 + n])
        pos += 1 + n
    if end < 0:
        end = pos + 1
    # Zeek lower-cases names with tolower() in the C locale: ASCII only, like bytes.lower().
    return _text(b".".join(labels).lower()), end


def _rdata(msg: bytes, rtype: int, owner: str, start: int, end: int) -> str:
    """The text Zeek's base scripts log for one record's RDATA, ``msg[start:end]``."""
    rdlen = end - start

    def name_at(pos: int) -> str:
        name, after = _read_name(msg, pos)
        if after > end:
            raise ProtocolError(f"name runs past its RDATA (offset {pos})")
        return name

    def need(n: int) -> None:
        if rdlen < n:
            raise ProtocolError(f"{type_name(rtype)} RDATA too short (offset {start})")

    if rtype == 1:  # A (§3.4.1)
        if rdlen != 4:
            raise ProtocolError(f"A RDATA is {rdlen} octets, not 4 (offset {start})")
        return str(ipaddress.IPv4Address(msg[start:end]))
    if rtype == 28:  # AAAA (RFC 3596)
        if rdlen != 16:
            raise ProtocolError(f"AAAA RDATA is {rdlen} octets, not 16 (offset {start})")
        addr = ipaddress.IPv6Address(msg[start:end])
        # Zeek stores IPv4 in v4-mapped form and prints a v4-mapped address as IPv4.
        return str(addr.ipv4_mapped or addr)
    if rtype in _NAME_TYPES:
        return name_at(start)
    if rtype == 15:  # MX (§3.3.9): PREFERENCE EXCHANGE; Zeek logs the exchange only
        need(3)
        return name_at(start + 2)
    if rtype == 6:  # SOA (§3.3.13): MNAME RNAME + five 32-bit numbers; Zeek logs MNAME
        mname, after = _read_name(msg, start)
        _, after = _read_name(msg, after)
        if after + 20 > end:
            raise ProtocolError(f"SOA RDATA too short (offset {start})")
        return mname
    if rtype == 33:  # SRV (RFC 2782): PRIORITY WEIGHT PORT TARGET
        need(7)
        return name_at(start + 6)
    if rtype in (16, 99):  # TXT (§3.3.14), SPF (RFC 4408): one or more <character-string>
        label = "TXT" if rtype == 16 else "SPF"
        parts = []
        pos = start
        while pos < end:
            n = msg[pos]
            if pos + 1 + n > end:
                raise ProtocolError(f"character-string runs past its RDATA (offset {pos})")
            parts.append(f"{label} {n} {_text(msg[pos + 1: pos + 1 + n])}")
            pos += 1 + n
        return " ".join(parts)
    if rtype == 46:  # RRSIG (RFC 4034 §3.1): 18 fixed octets, then the signer's name
        need(19)
        signer = name_at(start + 18)
        covered = int.from_bytes(msg[start: start + 2], "big")
        return f"RRSIG {covered} {signer or '<Root>'}"
    if rtype == 48:  # DNSKEY (RFC 4034 §2.1): FLAGS PROTOCOL ALGORITHM KEY
        need(4)
        return f"DNSKEY {msg[start + 3]}"
    if rtype == 47:  # NSEC (RFC 4034 §4.1): NEXT-DOMAIN TYPE-BITMAPS
        return f"NSEC {owner} {name_at(start)}"
    if rtype == 50:
        return "NSEC3"
    if rtype == 51:
        return "NSEC3PARAM"
    if rtype == 43:  # DS (RFC 4034 §5.1): KEY-TAG ALGORITHM DIGEST-TYPE DIGEST
        need(4)
        return f"DS {msg[start + 2]} {msg[start + 3]}"
    if rtype == 44:  # SSHFP (RFC 4255): ALGORITHM FP-TYPE FINGERPRINT
        need(2)
        return f"SSHFP: {msg[start + 2: end].hex()}"
    if rtype == 29:  # LOC (RFC 1876): VERSION SIZE HORIZ-PRE VERT-PRE ...
        need(16)
        return f"LOC:  {msg[start + 1]} {msg[start + 2]} {msg[start + 3]}"
    if rtype == 65534:  # BIND 9's private signing-state record
        return "BIND9 signing signal"
    if rtype in _UNLISTED:
        return ""
    return f"<unknown type={rtype}>"


def _read_record(msg: bytes, pos: int) -> tuple[DnsRecord, int]:
    name, pos = _read_name(msg, pos)
    if pos + _RR_FIXED.size > len(msg):
        raise ProtocolError(f"truncated resource record (offset {pos})")
    rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(msg, pos)
    pos += _RR_FIXED.size
    end = pos + rdlen
    if end > len(msg):
        raise ProtocolError(f"RDATA runs past the end of the message (offset {pos})")
    data = _rdata(msg, rtype, name, pos, end)
    return DnsRecord(name=name, rtype=rtype, rtype_name=type_name(rtype), rclass=rclass,
                     ttl=ttl, data=data), end


def parse_dns(data: bytes) -> DnsMessage:
    """Decode one DNS message; raises ProtocolError (never anything else) on bad input."""
    msg = bytes(data)
    if len(msg) < HEADER_LEN:
        raise ProtocolError(f"DNS message shorter than its 12-octet header ({len(msg)})")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg, 0)
    pos = HEADER_LEN
    questions = []
    for _ in range(qdcount):
        name, pos = _read_name(msg, pos)
        if pos + _QUESTION_FIXED.size > len(msg):
            raise ProtocolError(f"truncated question (offset {pos})")
        qtype, qclass = _QUESTION_FIXED.unpack_from(msg, pos)
        pos += _QUESTION_FIXED.size
        questions.append(DnsQuestion(name=name, qtype=qtype, qtype_name=type_name(qtype),
                                     qclass=qclass, qclass_name=class_name(qclass)))
    answers = []
    for _ in range(ancount):
        record, pos = _read_record(msg, pos)
        answers.append(record)
    partial = False
    sections: tuple[list[DnsRecord], list[DnsRecord]] = ([], [])
    for count, records in zip((nscount, arcount), sections, strict=True):
        if partial:
            break
        for _ in range(count):
            try:
                record, pos = _read_record(msg, pos)
            except ProtocolError:
                partial = True
                break
            records.append(record)
    opcode = (flags >> 11) & 0xF
    rcode = flags & 0xF
    return DnsMessage(
        id=ident, is_response=bool(flags & 0x8000), opcode=opcode, opcode_name=opcode_name(opcode),
        rcode=rcode, rcode_name=rcode_name(rcode), aa=bool(flags & 0x0400),
        tc=bool(flags & 0x0200), rd=bool(flags & 0x0100), ra=bool(flags & 0x0080),
        z=(flags >> 6) & 1, ad=bool(flags & 0x0020), cd=bool(flags & 0x0010),
        questions=tuple(questions), answers=tuple(answers), authorities=tuple(sections[0]),
        additionals=tuple(sections[1]), partial=partial)


class _FrameState:
    __slots__ = ("base", "buf")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.base = 0  # stream offset of buf[0]


class DnsTcpSession:
    """DNS over TCP: each message is preceded by its length, two octets (RFC 1035 §4.2.2).

    Either side may send several messages (RFC 7766 §6.2.1: pipelining; a zone transfer answers
    with many). The largest frame is 65535 octets, so a direction never buffers more than
    that plus the two length octets.
    """

    def __init__(self) -> None:
        self.done = False
        self._dirs = (_FrameState(), _FrameState())

    def feed(self, direction: int, data: bytes) -> list[object]:
        if direction != ORIG and direction != RESP:
            raise ValueError(f"direction must be ORIG or RESP, not {direction!r}")
        if self.done or not data:
            return []
        st = self._dirs[direction]
        st.buf += data
        events: list[object] = []
        pos = 0
        buf = st.buf
        while len(buf) - pos >= 2:
            n = (buf[pos] << 8) | buf[pos + 1]
            if len(buf) - pos - 2 < n:
                break
            try:
                events.append(parse_dns(bytes(buf[pos + 2: pos + 2 + n])))
            except ProtocolError as exc:
                events.append(Malformed(direction=direction, offset=st.base + pos,
                                        reason=exc.message))
                self.done = True
                break
            pos += 2 + n
        if pos:
            del buf[:pos]
            st.base += pos
        return events
