"""Packet captures (pcap, pcapng, gzip'd or not) through the flow table into every network table.

The reader is the thin I/O shell around three pure parts: ``capture`` walks the container,
``packet`` decodes each frame, ``flows`` keeps connections and drives the protocol parsers.
Damage to the container ends the walk with one error located at its byte offset (in the
decompressed capture); the rows of every packet before it are kept.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import Any, ClassVar

from hopguard.errors import SourceLocation
from hopguard.ingest.base import Format, IngestContext, RowSink, open_binary, register
from hopguard.ingest.capture import CaptureDamaged, is_capture, read_packets
from hopguard.ingest.flows import FLOW_LAYOUT, FlowSettings, FlowTable
from hopguard.ingest.packet import LINKTYPES, decode

logger = logging.getLogger(__name__)

APP_TABLES = ("flow", "tls", "x509", "http", "proxy", "dns", "ssh")


def make_table(sink: RowSink, settings: FlowSettings | None) -> FlowTable:
    """A flow table whose rows go to ``sink`` (shared by captures and live interfaces)."""

    def emit(table_name: str, row: dict[str, Any]) -> None:
        sink.add(table_name, row)

    def emit_flow(values: tuple[Any, ...]) -> None:
        sink.emit("flow", FLOW_LAYOUT, values)

    def anomaly(what: str) -> None:
        sink.skip(what)

    return FlowTable(settings or FlowSettings(), emit=emit, emit_flow=emit_flow,
                     uid_prefix=f"P{sink.file_id:x}G", anomaly=anomaly)


@register
class PcapFormat(Format):
    name: ClassVar[str] = "pcap"
    description: ClassVar[str] = (
        "packet captures: pcap (µs/ns) and pcapng, Ethernet/802.1Q/SLL/SLL2/raw/loopback, "
        "GRE/VXLAN/Geneve/IP-in-IP; flows, TLS, HTTP, SOCKS/CONNECT, DNS, SSH")
    tables: ClassVar[tuple[str, ...]] = APP_TABLES
    binary: ClassVar[bool] = True

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return is_capture(head)

    def read(self, ctx: IngestContext, sink: RowSink) -> None:
        table = make_table(sink, ctx.flow)
        fh, _raw = open_binary(ctx)
        unknown_links: set[int] = set()
        packet = table.packet
        n = 0
        undecoded = 0
        try:
            for ts, linktype, data, offset in read_packets(fh):
                n += 1
                d = decode(linktype, data)
                if d is None:
                    undecoded += 1
                    if linktype not in LINKTYPES and linktype not in unknown_links:
                        unknown_links.add(linktype)
                        logger.warning("%s: link type %d is not decoded", ctx.path, linktype)
                    continue
                packet(ts, offset, d, len(data))
        except CaptureDamaged as exc:
            sink.error(SourceLocation(path=str(ctx.path), offset=exc.offset, record=n + 1),
                       exc.reason)
        except (zlib.error, gzip.BadGzipFile, OSError) as exc:
            sink.error(SourceLocation(path=str(ctx.path), record=n + 1),
                       f"damaged compressed capture after packet {n}: {exc}")
        finally:
            fh.close()
        table.finish()
        sink.record_seen(n)
        if undecoded:
            sink.skip("packets without an IP transport header", undecoded)
