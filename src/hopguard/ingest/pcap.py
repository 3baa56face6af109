"""Packet captures (pcap, pcapng, gzip'd or not) through the flow table into every network table.

The reader is the thin I/O shell around three pure parts: ``capture`` walks the container,
``packet`` decodes each frame, ``flows`` keeps connections and drives the protocol parsers.
Damage to the container ends the walk with one error located at its byte offset (in the
decompressed capture); the rows of every packet before it are kept.

Theory of operation (workers): the flow table and its parsers cost far more per packet than
walking and decoding, so a large capture is read by ``packets.workers`` processes at once. Each
walks the whole capture and decodes every frame, but keeps only the packets of its share of the
connections: a hash of the unordered address/port pair (of the outer UDP packet for tunnelled
traffic, so a tunnel and everything inside it stay together) modulo the number of workers. A
connection's packets therefore all reach one flow table, in capture order, exactly as with a
single reader. Workers send their rows to the parent as Arrow batches over a pipe; only the
parent writes to the store, inside the file's transaction, so a failure anywhere still leaves
nothing of the file behind. Worker 0 alone reports container damage and counts packets.
"""

from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
import struct
import zlib
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, ClassVar, Final

from hopguard.errors import HopguardError, SourceLocation
from hopguard.ingest.base import (
    Format,
    IngestContext,
    RowSink,
    open_binary,
    register,
)
from hopguard.ingest.capture import CaptureDamaged, is_capture, read_packets
from hopguard.ingest.flows import FLOW_LAYOUT, FlowSettings, FlowTable
from hopguard.ingest.packet import ETHERNET, LINKTYPES, TCP, decode

logger = logging.getLogger(__name__)

APP_TABLES = ("flow", "tls", "x509", "http", "proxy", "dns", "ssh", "tunnel")
PARALLEL_MIN_BYTES: Final = 64 << 20  # smaller captures: one reader (forking costs more)
MAX_WORKERS: Final = 8
PROGRESS_EVERY: Final = 4 << 20
# Ethernet type, IPv4 version/IHL, total length, flags/fragment offset, protocol, addresses, ports
_ETH_IPV4_PORTS: Final = struct.Struct("!12xHBxHxxHxBxx4s4sHH")
# The share of a connection: (endpoint A XOR endpoint B) times this odd constant, bits 40-63,
# modulo the readers. Written out at both places in read_share (a call per packet costs more).
_MIX: Final = 0x9E3779B97F4A7C15


def make_table(sink_of: Callable[[], RowSink], settings: FlowSettings | None,
               prefix: str) -> FlowTable:
    """A flow table whose rows go to the sink ``sink_of()`` returns at the time (a capture has
    one sink; a live capture a new one per segment)."""

    def emit(table_name: str, row: dict[str, Any]) -> None:
        sink_of().add(table_name, row)

    def emit_flow(values: tuple[Any, ...]) -> None:
        sink_of().emit("flow", FLOW_LAYOUT, values)

    def anomaly(what: str) -> None:
        sink_of().skip(what)

    return FlowTable(settings or FlowSettings(), emit=emit, emit_flow=emit_flow,
                     uid_prefix=prefix, anomaly=anomaly)


def worker_count(ctx: IngestContext) -> int:
    """How many processes read this capture: the setting, or (0) one per CPU for a capture
    of at least PARALLEL_MIN_BYTES."""
    wanted = ctx.flow.workers if ctx.flow is not None else 0
    if wanted:
        return max(1, min(wanted, MAX_WORKERS))
    try:
        size = ctx.path.stat().st_size
    except OSError:
        return 1
    if size * (4 if ctx.gzipped else 1) < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def read_share(ctx: IngestContext, sink: RowSink, share: int, shares: int,
               progress: Any = None) -> None:
    """Read the capture, keeping the connections of ``share`` (of ``shares``)."""
    prefix = f"P{sink.file_id:x}G" if shares == 1 else f"P{sink.file_id:x}W{share}G"
    table = make_table(lambda: sink, ctx.flow, prefix)
    fh, raw = open_binary(ctx)
    unknown_links: set[int] = set()
    packet = table.packet
    n = 0
    undecoded = 0
    reporter = share == 0
    next_progress = PROGRESS_EVERY
    try:
        for ts, linktype, data, offset in read_packets(fh):
            n += 1
            mine = shares == 1
            if not mine and linktype == ETHERNET and len(data) >= 54:
                # The common case (Ethernet, IPv4 without options, whole TCP header) is shared
                # out before decoding: a reader skips the others' packets for one unpack.
                et, vihl, total, frag, proto, src, dst, sp, dp = _ETH_IPV4_PORTS.unpack_from(data)
                if et == 0x0800 and vihl == 0x45 and proto == TCP and not frag & 0x3FFF and \
                        40 <= total <= len(data) - 14 and 20 <= (data[46] >> 4) * 4 <= total - 20:
                    h = (int.from_bytes(src, "big") << 16 | sp) ^ \
                        (int.from_bytes(dst, "big") << 16 | dp)
                    if ((h * _MIX) >> 40 & 0xFFFFFF) % shares != share:
                        continue
                    mine = True
            d = decode(linktype, data)
            if d is None:
                undecoded += 1
                if reporter and linktype not in LINKTYPES and linktype not in unknown_links:
                    unknown_links.add(linktype)
                    logger.warning("%s: link type %d is not decoded", ctx.path, linktype)
                continue
            if not mine:
                # Both directions give the same key (XOR of the two endpoints); the multiply
                # spreads it over the high bits, which the modulo then takes evenly even when
                # addresses and ports share their low bits.
                o = d[10]
                if o is None:
                    h = (int.from_bytes(d[1][-4:], "big") << 16 | d[3]) ^ \
                        (int.from_bytes(d[2][-4:], "big") << 16 | d[4])
                else:
                    h = (int.from_bytes(o[0][-4:], "big") << 16 | o[2]) ^ \
                        (int.from_bytes(o[1][-4:], "big") << 16 | o[3])
                if ((h * _MIX) >> 40 & 0xFFFFFF) % shares != share:
                    continue
            packet(ts, offset, d, len(data))
            if progress is not None and raw.consumed >= next_progress:
                next_progress = raw.consumed + PROGRESS_EVERY
                progress(raw.consumed)
    except CaptureDamaged as exc:
        if reporter:
            sink.error(SourceLocation(path=str(ctx.path), offset=exc.offset, record=n + 1),
                       exc.reason)
    except (zlib.error, gzip.BadGzipFile, OSError) as exc:
        if reporter:
            sink.error(SourceLocation(path=str(ctx.path), record=n + 1),
                       f"damaged compressed capture after packet {n}: {exc}")
    finally:
        fh.close()
    table.finish()
    if reporter:
        sink.record_seen(n)
        if undecoded:
            sink.skip("packets without an IP transport header", undecoded)


def _worker(ctx: IngestContext, share: int, shares: int, file_id: int, sensor: str,
            batch_rows: int, max_shown: int, conn: Connection) -> None:
    """One worker process: read its share, send rows and finally its statistics."""
    try:
        def write(table_name: str, batch: Any) -> None:
            conn.send(("rows", table_name, batch))

        def progress(done: int) -> None:
            conn.send(("progress", done))

        sink = RowSink(write=write, file_id=file_id, sensor=sensor, path=str(ctx.path),
                       batch_rows=batch_rows, max_shown=max_shown)
        ctx.progress = None
        read_share(ctx, sink, share, shares, progress if share == 0 else None)
        sink.flush()
        conn.send(("done", sink.stats))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@register
class PcapFormat(Format):
    name: ClassVar[str] = "pcap"
    description: ClassVar[str] = (
        "packet captures: pcap (µs/ns) and pcapng, Ethernet/802.1Q/SLL/SLL2/raw/loopback, "
        "GRE/VXLAN/Geneve/GTP-U/Teredo/IP-in-IP; flows, TLS, QUIC, HTTP, SOCKS/CONNECT, DNS, SSH")
    tables: ClassVar[tuple[str, ...]] = APP_TABLES
    binary: ClassVar[bool] = True

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return is_capture(head)

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        shares = worker_count(ctx)
        if shares == 1:
            read_share(ctx, sink, 0, 1, ctx.progress)
            return
        self._parallel(ctx, sink, shares)

    def _parallel(self, ctx: IngestContext, sink: RowSink, shares: int) -> None:
        mp = multiprocessing.get_context("fork")
        procs = []
        pipes: dict[Connection, int] = {}
        store, progress = ctx.store, ctx.progress
        ctx.store = None  # the workers never touch the store (a DuckDB handle across fork)
        try:
            for share in range(shares):
                parent, child = mp.Pipe(duplex=False)
                proc = mp.Process(target=_worker, name=f"hopguard-pcap-{share}", daemon=True,
                                  args=(ctx, share, shares, sink.file_id, sink.sensor,
                                        sink.batch_rows, sink.max_shown, child))
                proc.start()
                child.close()
                procs.append(proc)
                pipes[parent] = share
        finally:
            ctx.store = store
        failure: str | None = None
        try:
            while pipes:
                for conn in wait(list(pipes)):
                    assert isinstance(conn, Connection)
                    try:
                        msg = conn.recv()
                    except EOFError:
                        failure = failure or f"worker {pipes[conn]} ended without its rows"
                        del pipes[conn]
                        continue
                    kind = msg[0]
                    if kind == "rows":
                        sink.write_batch(msg[1], msg[2])
                    elif kind == "progress":
                        if progress is not None:
                            progress(msg[1])
                    elif kind == "done":
                        sink.stats.absorb(msg[1], max_shown=sink.max_shown, rows=False)
                        del pipes[conn]
                    else:
                        failure = failure or msg[1]
                        del pipes[conn]
        finally:
            for proc in procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        if failure is not None:
            raise HopguardError(f"a capture reader failed: {failure}",
                                SourceLocation(path=str(ctx.path)))
