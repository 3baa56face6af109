"""Packet capture containers: classic pcap (micro- and nanosecond, either byte order) and pcapng.

Theory of operation: ``read_packets`` walks a capture as a stream of blocks read from a file
object (plain or gzip), so memory stays bounded by ``CHUNK`` plus one record whatever the size
of the capture. It yields ``(ts_us, linktype, data, offset)`` per packet, where ``data`` is a
memoryview into the current chunk (valid until the next packet is asked for; the flow table
copies the few bytes it keeps) and ``offset`` is the byte offset of the record in the
decompressed capture.

A capture damaged in the middle cannot be re-synchronised reliably (neither format has a
sync marker), so damage ends the walk: ``CaptureDamaged`` carries the offset of the first bad
byte and every packet before it has already been yielded. The caller turns it into a located
error and keeps the rows it has.

Formats: pcap per https://www.tcpdump.org/manpages/pcap-savefile.5.html (magic a1b2c3d4 for
microseconds, a1b23c4d for nanoseconds; the Kuznetzov variant a1b2cd34 adds 8 bytes per
record); pcapng per draft-ietf-opsawg-pcapng: SHB, IDB (if_tsresol), EPB, SPB and the obsolete
PB. Several sections and interfaces with different link types are supported.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO, Final

CHUNK: Final = 8 << 20
MAX_PACKET: Final = 256 * 1024  # larger than any snaplen in use (tcpdump's is 262144)

PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": ("<", 1), b"\xa1\xb2\xc3\xd4": (">", 1),
    b"\x4d\x3c\xb2\xa1": ("<", 1000), b"\xa1\xb2\x3c\x4d": (">", 1000),
    b"\x34\xcd\xb2\xa1": ("<", -1), b"\xa1\xb2\xcd\x34": (">", -1),  # Kuznetzov, microseconds
}
PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"

Packet = tuple[int, int, memoryview, int]


class CaptureDamaged(Exception):
    """The capture cannot be read past ``offset``."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


def is_capture(head: bytes) -> bool:
    return head[:4] in PCAP_MAGICS or (head[:4] == PCAPNG_MAGIC and len(head) >= 12
                                       and head[8:12] in (b"\x1a\x2b\x3c\x4d", b"\x4d\x3c\x2b\x1a"))


class _Buffer:
    """A sliding window over a stream: ``need(n)`` makes n bytes from ``pos`` available."""

    __slots__ = ("base", "buf", "eof", "fh", "pos")

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.buf = b""
        self.pos = 0  # position in buf
        self.base = 0  # stream offset of buf[0]
        self.eof = False

    def need(self, n: int) -> bool:
        if len(self.buf) - self.pos >= n:
            return True
        if self.eof:
            return False
        rest = self.buf[self.pos:]
        self.base += self.pos
        self.pos = 0
        parts = [rest]
        have = len(rest)
        while have < n or have < CHUNK:
            try:
                chunk = self.fh.read(max(CHUNK, n - have))
            except EOFError:
                # A truncated gzip stream: what was inflated so far is usable.
                chunk = b""
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)
        return len(self.buf) >= n

    @property
    def offset(self) -> int:
        return self.base + self.pos


def read_packets(fh: IO[bytes]) -> Iterator[Packet]:
    """Yield every packet of a pcap or pcapng stream; raise CaptureDamaged at damage."""
    b = _Buffer(fh)
    if not b.need(4):
        raise CaptureDamaged(0, "empty capture")
    magic = b.buf[:4]
    if magic in PCAP_MAGICS:
        yield from _pcap(b)
    elif magic == PCAPNG_MAGIC:
        yield from _pcapng(b)
    else:
        raise CaptureDamaged(0, "not a pcap or pcapng capture")


def _pcap(b: _Buffer) -> Iterator[Packet]:
    if not b.need(24):
        raise CaptureDamaged(0, "truncated pcap file header")
    order, unit = PCAP_MAGICS[b.buf[:4]]
    snaplen, network = struct.unpack_from(order + "II", b.buf, 16)
    linktype = network & 0x0FFFFFFF  # upper bits: FCS length flags
    b.pos = 24
    rec = struct.Struct(order + "IIII")
    extra = 8 if unit < 0 else 0
    scale = 1000 if unit == 1000 else 1
    limit = max(MAX_PACKET, snaplen if snaplen < (1 << 24) else 0)
    hdr = 16 + extra
    unpack = rec.unpack_from
    buf, pos = b.buf, b.pos
    view = memoryview(buf)
    size = len(buf)
    while True:
        # Hot loop: the window is refilled only when a record does not fit in it.
        if size - pos < hdr:
            b.pos = pos
            if not b.need(hdr):
                if len(b.buf) - b.pos:
                    raise CaptureDamaged(b.offset, "truncated packet record header")
                return
            buf, pos = b.buf, b.pos
            view = memoryview(buf)
            size = len(buf)
        sec, frac, caplen, _origlen = unpack(buf, pos)
        if caplen > limit:
            raise CaptureDamaged(b.base + pos, f"implausible packet length {caplen}")
        end = pos + hdr + caplen
        if end > size:
            b.pos = pos
            if not b.need(hdr + caplen):
                raise CaptureDamaged(b.offset, "truncated packet data")
            buf, pos = b.buf, b.pos
            view = memoryview(buf)
            size = len(buf)
            end = pos + hdr + caplen
        ts = sec * 1_000_000 + (frac // 1000 if scale == 1000 else frac)
        yield ts, linktype, view[pos + hdr:end], b.base + pos
        pos = end


def _pcapng(b: _Buffer) -> Iterator[Packet]:
    order = "<"
    ifaces: list[tuple[int, int, int]] = []  # (linktype, ticks per second, snaplen)
    last_ts = 0
    while True:
        if not b.need(12):
            if len(b.buf) - b.pos:
                raise CaptureDamaged(b.offset, "truncated pcapng block header")
            return
        buf, pos = b.buf, b.pos
        btype_raw = buf[pos:pos + 4]
        if btype_raw == PCAPNG_MAGIC:
            bom = buf[pos + 8:pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                order = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                order = ">"
            else:
                raise CaptureDamaged(b.offset, "bad pcapng byte-order magic")
            ifaces = []
        btype, blen = struct.unpack_from(order + "II", buf, pos)
        if blen < 12 or blen % 4 or blen > MAX_PACKET + 4096:
            raise CaptureDamaged(b.offset, f"bad pcapng block length {blen}")
        if not b.need(blen):
            raise CaptureDamaged(b.offset, "truncated pcapng block")
        buf, pos = b.buf, b.pos
        at = b.offset
        b.pos = pos + blen
        body = pos + 8
        end = pos + blen - 4
        if btype == 1:  # Interface Description Block
            if end - body < 8:
                raise CaptureDamaged(at, "short interface description block")
            linktype, _res, snaplen = struct.unpack_from(order + "HHI", buf, body)
            ifaces.append((linktype, _tsresol(buf, body + 8, end, order), snaplen))
        elif btype in (6, 2):  # Enhanced Packet Block, obsolete Packet Block
            if end - body < 20:
                raise CaptureDamaged(at, "short packet block")
            if btype == 6:
                iface, hi, lo, caplen, _olen = struct.unpack_from(order + "IIIII", buf, body)
            else:
                iface, _drops, hi, lo, caplen, _olen = struct.unpack_from(order + "HHIIII", buf,
                                                                          body)
            if iface >= len(ifaces):
                raise CaptureDamaged(at, f"packet on undeclared interface {iface}")
            if caplen > end - body - 20:
                raise CaptureDamaged(at, f"packet length {caplen} overruns its block")
            linktype, tps, _snap = ifaces[iface]
            ticks = (hi << 32) | lo
            ts = ticks * 1_000_000 // tps if tps != 1_000_000 else ticks
            last_ts = ts
            start = body + 20
            yield ts, linktype, memoryview(buf)[start:start + caplen], at
        elif btype == 3:  # Simple Packet Block: interface 0, no timestamp
            if not ifaces:
                raise CaptureDamaged(at, "simple packet block before any interface")
            linktype, _tps, snap = ifaces[0]
            (olen,) = struct.unpack_from(order + "I", buf, body)
            caplen = min(olen, snap or olen, end - body - 4)
            start = body + 4
            yield last_ts, linktype, memoryview(buf)[start:start + caplen], at
        # Other blocks (name resolution, statistics, custom, decryption secrets) carry no
        # packets.


def _tsresol(buf: bytes, pos: int, end: int, order: str) -> int:
    """Ticks per second from an IDB's if_tsresol option (default microseconds)."""
    while pos + 4 <= end:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        if code == 0:
            break
        if code == 9 and length >= 1:
            v: int = buf[pos + 4]
            return int(2 ** (v & 0x7F) if v & 0x80 else 10 ** v)
        pos += 4 + ((length + 3) & ~3)
    return 1_000_000
