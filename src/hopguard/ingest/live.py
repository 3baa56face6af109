"""Live capture from a network interface (Linux AF_PACKET) through the same flow table.

Theory of operation: one raw packet socket bound to the interface receives every frame in both
directions. Frames go through ``packet.decode`` and ``FlowTable.packet`` exactly as a capture's
do. The capture is stored in segments of ``rotate`` seconds: each segment is one store
transaction recorded as a source file ``live:<iface>``, so a crash or a kill loses at most the
current segment, and rows become queryable while the capture runs. Flows still open at the end
of a segment stay in the table and are written by the segment in which they end.

On the loopback interface the kernel shows each frame twice (as sent and as received); the
sent copy is dropped. Needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from hopguard.errors import InputError, SourceLocation
from hopguard.ingest.base import IngestStats, RowSink
from hopguard.ingest.flows import FlowSettings, FlowTable
from hopguard.ingest.packet import decode
from hopguard.ingest.pcap import make_table
from hopguard.store import Store

logger = logging.getLogger(__name__)

ETH_P_ALL: Final = 0x0003
PACKET_OUTGOING: Final = 4
# ARPHRD_* hardware types -> pcap link types (if_arp.h)
HATYPES: Final = {1: 1, 772: 1, 65534: 101, 776: 101, 778: 101, 769: 101}
SNAPLEN: Final = 65536


@dataclass(slots=True)
class LiveResult:
    iface: str
    packets: int = 0
    segments: list[int] = field(default_factory=list)  # file ids
    stats: IngestStats = field(default_factory=IngestStats)
    seconds: float = 0.0


def open_socket(iface: str) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise InputError("live capture needs root or CAP_NET_RAW",
                         SourceLocation(path=f"live:{iface}")) from None
    try:
        sock.bind((iface, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    except OSError as exc:
        sock.close()
        msg = "no such interface" if exc.errno in (errno.ENODEV, errno.ENXIO) else \
            f"cannot capture: {exc.strerror or exc}"
        raise InputError(msg, SourceLocation(path=f"live:{iface}")) from None
    return sock


def capture_live(store: Store, iface: str, *, sensor: str, duration: float | None,
                 flow: FlowSettings | None = None, rotate: float = 60.0,
                 batch_rows: int = 50_000, max_shown: int = 5,
                 should_stop: Callable[[], bool] | None = None,
                 on_packets: Callable[[int, int], None] | None = None) -> LiveResult:
    """Capture until ``duration`` seconds pass (None: until ``should_stop`` or Ctrl-C)."""
    sock = open_socket(iface)
    result = LiveResult(iface=iface)
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    buf = bytearray(SNAPLEN)
    view = memoryview(buf)
    current: list[RowSink] = []
    table = make_table(lambda: current[0], flow, "")
    stamp = f"{time.time_ns()}-{os.getpid()}"
    interrupted = False
    try:
        while True:
            seg_end = time.monotonic() + rotate
            last = deadline is not None and deadline <= seg_end
            if last and deadline is not None:
                seg_end = deadline
            with store.file(path=f"live:{iface}", sha256=f"live:{iface}:{stamp}:"
                            f"{len(result.segments)}", size=0, fmt="live",
                            sensor=sensor) as file_id:
                sink = RowSink(write=store.write, file_id=file_id, sensor=sensor,
                               path=f"live:{iface}", batch_rows=batch_rows, max_shown=max_shown)
                current[:] = [sink]
                if not table.uid_prefix:
                    table.uid_prefix = f"L{file_id:x}G"
                try:
                    result.packets += _receive(sock, view, table, seg_end, iface, should_stop,
                                               on_packets, result.packets)
                except KeyboardInterrupt:
                    interrupted = True
                stopping = interrupted or last or (should_stop is not None and should_stop())
                if stopping:
                    table.finish()
                else:
                    table.sweep(time.time_ns() // 1000)
                sink.flush()
                store.finish_file(file_id, rows=sink.stats.rows, errors=sink.stats.errors,
                                  skipped=sum(sink.stats.skipped.values()))
                result.segments.append(file_id)
                result.stats.absorb(sink.stats, max_shown=max_shown)
            if stopping:
                break
    finally:
        sock.close()
    result.seconds = time.monotonic() - started
    return result


def _receive(sock: socket.socket, view: memoryview, table: FlowTable, until: float, iface: str,
             should_stop: Callable[[], bool] | None,
             on_packets: Callable[[int, int], None] | None, before: int) -> int:
    n = 0
    packet = table.packet
    loopback = iface == "lo"
    while True:
        now = time.monotonic()
        if now >= until or (should_stop is not None and should_stop()):
            return n
        sock.settimeout(min(0.25, until - now))
        try:
            size, addr = sock.recvfrom_into(view)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        ts = time.time_ns() // 1000
        pkttype, hatype = addr[2], addr[3]
        if loopback and pkttype == PACKET_OUTGOING:
            continue
        linktype = HATYPES.get(hatype)
        if linktype is None:
            continue
        n += 1
        d = decode(linktype, view[:size])
        if d is not None:
            packet(ts, before + n, d, size)
        if on_packets is not None and n % 256 == 0:
            on_packets(before + n, 0)
