"""Decoding one captured frame down to its transport header, through the encapsulations in use.

Theory of operation: ``decode(linktype, frame)`` peels the link layer (Ethernet with 802.1Q and
QinQ tags, MPLS and PPPoE, Linux cooked SLL and SLL2, raw IP, BSD loopback), then IP (IPv4 with
options; IPv6 with its extension-header chain), then any tunnel it knows (IP-in-IP and 6in4,
GRE including transparent Ethernet bridging and ERSPAN II/III, VXLAN on UDP 4789, Geneve on UDP
6081), and returns the innermost TCP, UDP or ICMP packet as a ``Decoded`` tuple. Everything is
``struct.unpack_from`` over the frame's memoryview: no copies except the two addresses, which
become dictionary keys.

A frame that is not IP, is a non-first fragment, or is cut before its transport header gives
``None``; the caller counts it. The payload is bounded by the IP and UDP lengths, so Ethernet
padding never reaches a parser, and by the captured length, so a short snaplen only shortens it.

ICMP packets get Zeek's pseudo-ports: the type as source port and, for requests and replies,
the counterpart type as destination port, so an echo request and its reply fall in one flow.
"""

from __future__ import annotations

import struct
from typing import Final

# The outer UDP packet of a UDP encapsulation: (src, dst, sport, dport, ip length, udp payload)
Outer = tuple[bytes, bytes, int, int, int, int]
# (proto, src, dst, sport, dport, tcp flags, tcp seq, payload, ip length, tunnel, outer)
Decoded = tuple[int, bytes, bytes, int, int, int, int, memoryview, int, str | None,
                Outer | None]

TCP: Final = 6
UDP: Final = 17
ICMP: Final = 1
ICMP6: Final = 58

ETHERNET: Final = 1
LINKTYPES: Final = {
    0: "BSD loopback", 1: "Ethernet", 9: "PPP", 104: "Cisco HDLC", 12: "raw IP", 14: "raw IP",
    101: "raw IP",
    108: "OpenBSD loopback", 113: "Linux cooked (SLL)", 228: "IPv4", 229: "IPv6",
    276: "Linux cooked (SLL2)",
}

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBB")
_UDP = struct.Struct("!HHH")

# ICMP request type -> reply type (RFC 792, RFC 4443), and the reverse.
_ICMP_PAIRS: Final = {8: 0, 13: 14, 15: 16, 17: 18, 10: 9}
_ICMP_REPLIES: Final = {v: k for k, v in _ICMP_PAIRS.items()}
_ICMP6_PAIRS: Final = {128: 129, 133: 134, 135: 136, 130: 131}
_ICMP6_REPLIES: Final = {v: k for k, v in _ICMP6_PAIRS.items()}
_V6_EXT: Final = frozenset({0, 43, 60, 51, 135, 139, 140})
MAX_DEPTH: Final = 4  # nested encapsulations followed before giving up


_ETH_IPV4 = struct.Struct("!12xHBxHxxHxBxx4s4s")


def decode(linktype: int, f: memoryview) -> Decoded | None:
    n = len(f)
    # The fast path: Ethernet, IPv4 without options, unfragmented, TCP or UDP (nearly every
    # packet of a typical capture) in two unpack calls.
    if linktype == ETHERNET and n >= 54:
        et, vihl, total, frag, proto, src, dst = _ETH_IPV4.unpack_from(f)
        if et == 0x0800 and vihl == 0x45 and not frag & 0x3FFF:
            end = 14 + total if 20 <= total <= n - 14 else n
            if proto == TCP and end >= 54:  # else the full path rejects a cut TCP header
                sport, dport, seq, _ack, off, flags = _TCP.unpack_from(f, 34)
                hl = (off >> 4) * 4
                if 20 <= hl <= end - 34:
                    return (TCP, src, dst, sport, dport, flags, seq, f[34 + hl:end],
                            total or n - 14, None, None)
            elif proto == UDP and end >= 42:
                sport, dport, ulen = _UDP.unpack_from(f, 34)
                if dport not in UDP_TUNNELS and sport not in UDP_TUNNELS and \
                        not (ulen >= 48 and f[42] >> 4 == 6):  # else: the full path
                    uend = 34 + ulen if ulen >= 8 and 34 + ulen <= end else end
                    return (UDP, src, dst, sport, dport, 0, 0, f[42:uend], total or n - 14,
                            None, None)
    try:
        if linktype == ETHERNET:
            return _ether(f, 0, n, None, 0)
        if linktype in (101, 12, 14):
            return _ip(f, 0, n, None, 0)
        if linktype == 113:  # SLL: 16-byte header, protocol at 14
            return _ethertype(f, 16, n, _H.unpack_from(f, 14)[0], None, 0)
        if linktype == 276:  # SLL2: 20-byte header, protocol first
            return _ethertype(f, 20, n, _H.unpack_from(f, 0)[0], None, 0)
        if linktype == 228:
            return _ipv4(f, 0, n, None, 0)
        if linktype == 229:
            return _ipv6(f, 0, n, None, 0)
        if linktype == 9:  # PPP (RFC 1661), with or without HDLC-like address and control
            if f[0] in (0x0F, 0x8F):  # Cisco HDLC framing in a PPP capture (as tshark reads)
                return _ethertype(f, 4, n, _H.unpack_from(f, 2)[0], None, 0)
            o = 2 if f[0] == 0xFF and f[1] == 0x03 else 0
            proto = _H.unpack_from(f, o)[0]
            return _ipv4(f, o + 2, n, None, 0) if proto == 0x0021 else \
                _ipv6(f, o + 2, n, None, 0) if proto == 0x0057 else None
        if linktype == 104:  # Cisco HDLC: address, control, then an Ethernet type
            return _ethertype(f, 4, n, _H.unpack_from(f, 2)[0], None, 0)
        if linktype in (0, 108):  # 4-byte address family, host (0) or network (108) order
            fam = int.from_bytes(f[0:4], "little") if linktype == 0 else _H.unpack_from(f, 2)[0]
            if fam > 0xFFFF:
                fam = int.from_bytes(f[0:4], "big")
            if fam == 2:
                return _ipv4(f, 4, n, None, 0)
            if fam in (10, 24, 28, 30):
                return _ipv6(f, 4, n, None, 0)
            return None
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _ether(f: memoryview, o: int, n: int, tun: str | None, depth: int) -> Decoded | None:
    if n - o < 14:
        return None
    return _ethertype(f, o + 14, n, _H.unpack_from(f, o + 12)[0], tun, depth)


def _ethertype(f: memoryview, o: int, n: int, et: int, tun: str | None,
               depth: int) -> Decoded | None:
    while et in (0x8100, 0x88A8, 0x9100):  # 802.1Q, 802.1ad (QinQ)
        et = _H.unpack_from(f, o + 2)[0]
        o += 4
    if et == 0x0800:
        return _ipv4(f, o, n, tun, depth)
    if et == 0x86DD:
        return _ipv6(f, o, n, tun, depth)
    if et in (0x8847, 0x8848):  # MPLS: pop to bottom of stack, guess by IP version nibble
        while o + 4 <= n:
            bos = f[o + 2] & 1
            o += 4
            if bos:
                return _ip(f, o, n, tun, depth)
        return None
    if et == 0x8864:  # PPPoE session: 6-byte header, then the PPP protocol
        proto = _H.unpack_from(f, o + 6)[0]
        if proto == 0x0021:
            return _ipv4(f, o + 8, n, tun, depth)
        if proto == 0x0057:
            return _ipv6(f, o + 8, n, tun, depth)
    return None


def _ip(f: memoryview, o: int, n: int, tun: str | None, depth: int) -> Decoded | None:
    if o >= n:
        return None
    v = f[o] >> 4
    if v == 4:
        return _ipv4(f, o, n, tun, depth)
    if v == 6:
        return _ipv6(f, o, n, tun, depth)
    return None


def _ipv4(f: memoryview, o: int, n: int, tun: str | None, depth: int) -> Decoded | None:
    if n - o < 20:
        return None
    vihl, _tos, total, _id, frag, _ttl, proto, _ck, src, dst = _IPV4.unpack_from(f, o)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20:
        return None
    if frag & 0x1FFF:
        return None  # a non-first fragment: no transport header (fragments are not reassembled)
    end = o + total if total > 0 and o + total <= n else n  # total 0: TSO-offloaded capture
    return _transport(f, o + ihl, end, proto, src, dst, total or (n - o), tun, depth)


def _ipv6(f: memoryview, o: int, n: int, tun: str | None, depth: int) -> Decoded | None:
    if n - o < 40:
        return None
    plen = _H.unpack_from(f, o + 4)[0]
    nh = f[o + 6]
    src = bytes(f[o + 8:o + 24])
    dst = bytes(f[o + 24:o + 40])
    end = o + 40 + plen if plen > 0 and o + 40 + plen <= n else n
    p = o + 40
    while nh in _V6_EXT or nh == 44:
        if p + 8 > end:
            return None
        if nh == 44:  # fragment header: only the first fragment has the transport header
            if _H.unpack_from(f, p + 2)[0] & 0xFFF8:
                return None
            nh, p = f[p], p + 8
        elif nh == 51:  # AH: length in 4-octet units minus 2
            nh, p = f[p], p + (f[p + 1] + 2) * 4
        else:
            nh, p = f[p], p + (f[p + 1] + 1) * 8
    return _transport(f, p, end, nh, src, dst, 40 + plen, tun, depth)


def _transport(f: memoryview, p: int, end: int, proto: int, src: bytes, dst: bytes,
               iplen: int, tun: str | None, depth: int) -> Decoded | None:
    if proto == TCP:
        if end - p < 20:
            return None
        sport, dport, seq, _ack, off, flags = _TCP.unpack_from(f, p)
        hl = (off >> 4) * 4
        if hl < 20:
            return None
        return (TCP, src, dst, sport, dport, flags, seq, f[p + hl:end], iplen, tun, None)
    if proto == UDP:
        if end - p < 8:
            return None
        sport, dport, ulen = _UDP.unpack_from(f, p)
        uend = p + ulen if ulen >= 8 and p + ulen <= end else end
        if depth < MAX_DEPTH:
            inner = None
            if dport in UDP_TUNNELS or sport in UDP_TUNNELS:
                inner = _udp_tunnel(f, p + 8, uend, sport, dport, depth + 1)
            elif _bare_ipv6(f, p + 8, uend):
                # Teredo between a relay and a client uses neither side's port 3544: like
                # Zeek, recognise it by an IPv6 header that fills the datagram exactly.
                inner = _ipv6(f, p + 8, uend, "Teredo", depth + 1)
            if inner is not None:
                return (*inner[:10], (src, dst, sport, dport, iplen, uend - p - 8))
        return (UDP, src, dst, sport, dport, 0, 0, f[p + 8:uend], iplen, tun, None)
    if proto in (ICMP, ICMP6):
        if end - p < 4:
            return None
        typ, code = f[p], f[p + 1]
        pairs, replies = (_ICMP_PAIRS, _ICMP_REPLIES) if proto == ICMP else \
            (_ICMP6_PAIRS, _ICMP6_REPLIES)
        if typ in pairs:
            other = pairs[typ]
        elif typ in replies:
            other = replies[typ]
        else:
            other = code
        # Zeek counts ICMP payload after the 8-byte header (type, code, checksum, rest).
        return (proto, src, dst, typ, other, 0, 0, f[p + 8:end], iplen, tun, None)
    inner = None
    if depth < MAX_DEPTH:
        if proto == 4:  # IP in IP (RFC 2003)
            inner = _ipv4(f, p, end, "IP", depth + 1)
        elif proto == 41:  # IPv6 in IP (6in4, RFC 4213)
            inner = _ipv6(f, p, end, "IP", depth + 1)
        elif proto == 47:
            inner = _gre(f, p, end, depth + 1)
    if inner is not None:
        return inner
    # Another protocol (GRE we cannot open, ESP, VRRP, PIM, OSPF ...): a flow without ports.
    return (proto, src, dst, 0, 0, 0, 0, f[p:end], iplen, tun, None)


UDP_TUNNELS: Final = frozenset({4789, 4790, 6081, 2152, 3544, 5072})


def _bare_ipv6(f: memoryview, q: int, end: int) -> bool:
    """A UDP payload that is exactly one IPv6 packet carrying TCP, UDP or ICMPv6."""
    return end - q >= 40 and f[q] >> 4 == 6 and \
        _H.unpack_from(f, q + 4)[0] + 40 == end - q and f[q + 6] in (TCP, UDP, ICMP6, 59)


def _udp_tunnel(f: memoryview, q: int, end: int, sport: int, dport: int,
                depth: int) -> Decoded | None:
    """The packet inside a UDP encapsulation, or None when it is not one after all."""
    if end - q < 8:
        return None
    if dport == 4789:  # VXLAN (RFC 7348): 8-byte header, then Ethernet
        return _ether(f, q + 8, end, "VXLAN", depth)
    if dport == 4790:  # VXLAN-GPE (draft-ietf-nvo3-vxlan-gpe): next protocol in byte 3
        nxt = f[q + 3] if f[q] & 0x04 else 3
        if nxt == 1:
            return _ipv4(f, q + 8, end, "VXLAN", depth)
        if nxt == 2:
            return _ipv6(f, q + 8, end, "VXLAN", depth)
        if nxt == 3:
            return _ether(f, q + 8, end, "VXLAN", depth)
        return None
    if dport == 6081:  # Geneve (RFC 8926): options, protocol type
        if _H.unpack_from(f, q + 2)[0] == 0x6558:
            return _ether(f, q + 8 + (f[q] & 0x3F) * 4, end, "Geneve", depth)
        return None
    if dport == 2152 or sport == 2152:  # GTP-U (3GPP TS 29.281): G-PDU only
        flags, mtype = f[q], f[q + 1]
        if flags >> 5 != 1 or mtype != 0xFF:
            return None
        r = q + 8
        if flags & 0x07:  # sequence number, N-PDU number, next extension header type
            nxt = f[r + 3]
            r += 4
            while nxt and r < end:  # extension headers: length in 4-octet units
                ln = f[r] * 4
                if ln == 0:
                    return None
                nxt = f[r + ln - 1]
                r += ln
        return _ip(f, r, end, "GTPv1", depth)
    if dport == 3544 or sport == 3544:  # Teredo (RFC 4380): optional indicators, IPv6
        r = q
        if f[r] == 0 and f[r + 1] == 1:  # authentication indicator
            r += 13 + f[r + 2] + f[r + 3]
        if r + 8 <= end and f[r] == 0 and f[r + 1] == 0:  # origin indication
            r += 8
        if r < end and f[r] >> 4 == 6:
            return _ipv6(f, r, end, "Teredo", depth)
        return None
    if dport == 5072 or sport == 5072:  # AYIYA: identity and signature, then the packet
        idlen, siglen, nxt = 1 << (f[q] >> 4), (f[q + 1] >> 4) * 4, f[q + 3]
        if f[q + 2] & 0x0F != 1:  # opcode 1: forward
            return None
        r = q + 8 + idlen + siglen
        if nxt == 41:
            return _ipv6(f, r, end, "AYIYA", depth)
        if nxt == 4:
            return _ipv4(f, r, end, "AYIYA", depth)
    return None


def _gre(f: memoryview, p: int, end: int, depth: int) -> Decoded | None:
    """GRE (RFC 2784/2890) and the ERSPAN headers carried in it."""
    if end - p < 4:
        return None
    flags, et = _HH.unpack_from(f, p)
    if flags & 0x7 == 1 and et == 0x880B:
        # PPTP's enhanced GRE (RFC 2637 §4.1): key field always present, sequence and
        # acknowledgement numbers when flagged, then a PPP frame.
        q = p + 8 + (4 if flags & 0x1000 else 0) + (4 if flags & 0x0080 else 0)
        if q + 4 > end or not flags & 0x1000:
            return None  # an acknowledgement without payload
        if f[q] == 0xFF and f[q + 1] == 0x03:
            q += 2
        ppp = f[q] if f[q] & 1 else _H.unpack_from(f, q)[0]
        q += 1 if f[q] & 1 else 2  # protocol-field compression (RFC 1661 §6.5)
        if ppp == 0x21:
            return _ipv4(f, q, end, "GRE", depth)
        if ppp == 0x57:
            return _ipv6(f, q, end, "GRE", depth)
        return None
    if flags & 0x7:
        return None
    q = p + 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0) + \
        (4 if flags & 0x1000 else 0)
    if et == 0x6558:
        return _ether(f, q, end, "GRE", depth)
    if et == 0x88BE:  # ERSPAN type II: 8-byte header (type I has none and no sequence bit)
        return _ether(f, q + (8 if flags & 0x1000 else 0), end, "GRE", depth)
    if et == 0x22EB:  # ERSPAN type III: 12 bytes, plus 8 with the O bit
        extra = 8 if end - q > 12 and f[q + 11] & 0x01 else 0
        return _ether(f, q + 12 + extra, end, "GRE", depth)
    return _ethertype(f, q, end, et, "GRE", depth)
