"""Building captures byte by byte for the packet engine's tests (containers, links, tunnels)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, frag: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + \
        socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + payload


def tcp(sport: int, dport: int, seq: int, ack: int, flags: str, data: bytes = b"") -> bytes:
    bits = sum({"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}[c] for c in flags)
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, bits, 65535, 0, 0) + data


def udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def ether(l3: bytes, *, ethertype: int = 0x0800, vlans: Iterable[int] = ()) -> bytes:
    tags = b"".join(struct.pack("!HH", 0x8100, v) for v in vlans)
    return MAC_B + MAC_A + tags + struct.pack("!H", ethertype) + l3


def pcap(packets: Iterable[tuple[float, bytes]], *, linktype: int = 1, nanos: bool = False,
         big: bool = False) -> bytes:
    o = ">" if big else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for ts, frame in packets:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nanos else 1e6))
        out.append(struct.pack(o + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def _block(btype: int, body: bytes) -> bytes:
    pad = body + b"\0" * (-len(body) % 4)
    n = 12 + len(pad)
    return struct.pack("<II", btype, n) + pad + struct.pack("<I", n)


def pcapng(packets: Iterable[tuple[int, float, bytes]], linktypes: Iterable[int] = (1,), *,
           tsresol: int | None = None, simple: bool = False) -> bytes:
    """Interfaces with the given link types; packets are (interface, ts, frame)."""
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]
    scale = 10 ** 6
    for lt in linktypes:
        opts = b""
        if tsresol is not None:
            opts = struct.pack("<HHB3x", 9, 1, tsresol) + struct.pack("<HH", 0, 0)
            scale = 10 ** tsresol
        out.append(_block(1, struct.pack("<HHI", lt, 0, 262144) + opts))
    for iface, ts, frame in packets:
        if simple:
            out.append(_block(3, struct.pack("<I", len(frame)) + frame))
            continue
        ticks = round(ts * scale)
        out.append(_block(6, struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                                         len(frame), len(frame)) + frame))
    return b"".join(out)


def tcp_session(client: str, server: str, cport: int, sport: int, request: bytes,
                response: bytes, *, t0: float = 1_700_000_000.0,
                wrap=lambda l3: ether(l3)) -> list[tuple[float, bytes]]:  # type: ignore[no-untyped-def]
    """A whole TCP connection: handshake, one request, one response, FIN both ways."""
    c, s = 1000, 5000
    pk = []

    def add(dt: float, src: str, dst: str, sp: int, dp: int, seq: int, ack: int, fl: str,
            data: bytes = b"") -> None:
        pk.append((t0 + dt, wrap(ipv4(src, dst, 6, tcp(sp, dp, seq, ack, fl, data)))))

    add(0.000, client, server, cport, sport, c, 0, "S")
    add(0.001, server, client, sport, cport, s, c + 1, "SA")
    add(0.002, client, server, cport, sport, c + 1, s + 1, "A")
    add(0.003, client, server, cport, sport, c + 1, s + 1, "PA", request)
    add(0.010, server, client, sport, cport, s + 1, c + 1 + len(request), "PA", response)
    add(0.011, client, server, cport, sport, c + 1 + len(request), s + 1 + len(response), "FA")
    add(0.012, server, client, sport, cport, s + 1 + len(response), c + 2 + len(request), "FA")
    add(0.013, client, server, cport, sport, c + 2 + len(request), s + 2 + len(response), "A")
    return pk
