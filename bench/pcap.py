"""Packet ingest throughput against tshark and ndpiReader, side by side in the same run.

A classic pcap (Ethernet) of N packets (default 5,000,000) is built from the lab captures
(examples/lab/*/capture.pcap.gz, weighted heavily: bulk HTTPS, relays, SOCKS) and the TLS, SOCKS,
HTTP and SSH captures of the public corpus, by replaying them over and over: every copy gets its
IP addresses shifted (first IPv4 octet kept, checksums kept valid) so its flows stay distinct, and
starts after the previous copy ends so timestamps only grow. The file is cached in --workdir and
reused while the sources and parameters are unchanged.

Then, on that same file and in the same run, each tool's wall time and peak RSS are measured
(/usr/bin/time -v, else getrusage of the child):

1. hopguard ingest --no-progress --db fresh.duckdb X
2. tshark -n -r X -T fields with the same TLS/HTTP/SOCKS fields (frame, SNI, JA3, JA3S, ALPN,
   HTTP method/host/URI, SOCKS destination), output to /dev/null (-n: no name resolution)
3. ndpiReader -i X (not -q: its one end-of-run summary goes to a log and gives the packet count
   it saw, which is checked)

Goals: hopguard >= 3x tshark's packets/s, and within 3x of ndpiReader (seconds <= 3x its).
Exit status: 0 goals met, 1 not met or a tool failed, 2 a goal could not be measured.

Usage: python bench/pcap.py [--packets N] [--repeat N] [--workdir DIR] [--keep] [--json OUT]
                            [--tools hopguard,tshark,ndpiReader] [--rebuild] [--timeout S]
       python bench/pcap.py --packets 200000      (quick)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
BUILD_VERSION = 1  # bump when the way the capture is built changes (invalidates caches)

# Corpus captures (relative to the corpus root) replayed once per round: TLS (SNI, ALPN, JA3 in
# many client flavours, certificates), SOCKS 4/5, HTTP incl. CONNECT and proxied requests, SSH.
# Tunnels (GRE, VXLAN, 6in4 ...) are left out: only the outer addresses are shifted, so their
# inner flows would merge across copies.
CORPUS_GLOBS = (
    "ndpi/tests/cfgs/default/pcap/443-*.pcap",
    "ndpi/tests/cfgs/default/pcap/tls*.pcap",
    "ndpi/tests/cfgs/default/pcap/tls*.pcapng",
    "ndpi/tests/cfgs/default/pcap/http*.pcap",
    "ndpi/tests/cfgs/default/pcap/http*.pcapng",
    "ndpi/tests/cfgs/default/pcap/ja3*.pcap",
    "ndpi/tests/cfgs/default/pcap/chrome.pcap",
    "ndpi/tests/cfgs/default/pcap/firefox.pcap",
    "ndpi/tests/cfgs/default/pcap/safari.pcap",
    "ndpi/tests/cfgs/default/pcap/google_ssl.pcap",
    "ndpi/tests/cfgs/default/pcap/no_sni.pcap",
    "ndpi/tests/cfgs/default/pcap/encrypted_sni.pcap",
    "ndpi/tests/cfgs/default/pcap/ssl-cert-name-mismatch.pcap",
    "ndpi/tests/cfgs/default/pcap/ssh.pcap",
    "ndpi/tests/cfgs/default/pcap/shadowsocks.pcap",
    "zeek/testing/btest/Traces/socks*.pcap",
    "zeek/testing/btest/Traces/tls/*.pcap",
    "zeek/testing/btest/Traces/http/connect-with-header.pcap",
    "zeek/testing/btest/Traces/http/proxy.pcap",
    "arkime/tests/pcap/socks*.pcap",
    "ja4/pcap/tls-handshake.pcapng",
    "ja4/pcap/tls-sni.pcapng",
    "ja4/pcap/tls12.pcap",
    "ja4/pcap/http1.pcapng",
    "ja4/pcap/ssh.pcapng",
    "suricata-verify/tests/http-connect/*/input.pcap",
)
SKIP_NAMES = ("tunnel", "gre", "vxlan", "geneve", "teredo", "ayiya", "6in4", "4in6", "dtls")
CORPUS_MAX_PACKETS = 20_000  # per capture, so one big trace does not dominate a round

TSHARK_FIELDS = (
    "frame.number", "ip.src", "tcp.srcport", "tls.handshake.extensions_server_name",
    "tls.handshake.ja3", "tls.handshake.ja3s", "tls.handshake.extensions_alpn_str",
    "http.request.method", "http.host", "http.request.uri", "socks.dst", "socks.dstport")

ADDR_STRIDE = 0x010101  # per copy: +1.1.1 on the low 24 bits of IPv4 (low 32 bits of IPv6)
COPY_GAP_US = 1_000_000  # idle time between two copies
MAX_IDLE_US = 30_000_000  # longer pauses inside a capture are cut to this (some span years)

_PCAP_HDR = struct.Struct("<IHHiIII")
_REC = struct.Struct("<IIII")
_FAKE_MACS = bytes.fromhex("020000000002" "020000000001")  # dst, src


# --------------------------------------------------------------------------- reading captures

Frame = tuple[int, bytes, int]  # (timestamp in microseconds, Ethernet frame, original length)


def _open(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _to_ethernet(linktype: int, data: bytes) -> tuple[bytes, int] | None:
    """The frame as Ethernet, and how many bytes the conversion added (None: skip it)."""
    if linktype == 1:
        return data, 0
    ethertype = 0
    if linktype in (101, 12, 14, 228, 229):
        payload = data
    elif linktype == 113 and len(data) >= 16:  # Linux SLL
        ethertype, payload = struct.unpack_from("!H", data, 14)[0], data[16:]
    elif linktype == 276 and len(data) >= 20:  # Linux SLL2
        ethertype, payload = struct.unpack_from("!H", data, 0)[0], data[20:]
    elif linktype in (0, 108) and len(data) >= 4:  # BSD / OpenBSD loopback
        payload = data[4:]
    else:
        return None
    if ethertype not in (0x0800, 0x86DD):
        if not payload:
            return None
        version = payload[0] >> 4
        ethertype = 0x0800 if version == 4 else 0x86DD if version == 6 else 0
    if not ethertype:
        return None
    frame = _FAKE_MACS + struct.pack("!H", ethertype) + payload
    return frame, len(frame) - len(data)


def _pcap_frames(data: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    off, n = 24, len(data)
    while off + 16 <= n:
        sec, frac, incl, orig = rec.unpack_from(data, off)
        off += 16
        if off + incl > n:
            break
        ts = sec * 1_000_000 + (frac // 1000 if nano else frac)
        yield ts, linktype, data[off:off + incl], orig
        off += incl


def _pcapng_frames(data: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    off, n = 0, len(data)
    endian = "<"
    ifaces: list[tuple[int, int]] = []  # (linktype, ticks per second)
    while off + 12 <= n:
        btype = struct.unpack_from(endian + "I", data, off)[0]
        if btype == 0x0A0D0D0A:  # section header: byte order magic decides the endianness
            endian = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        blen = struct.unpack_from(endian + "I", data, off + 4)[0]
        if blen < 12 or off + blen > n:
            break
        body = off + 8
        if btype == 1:  # interface description
            linktype = struct.unpack_from(endian + "H", data, body)[0]
            tick = 1_000_000
            opt, end = body + 8, off + blen - 4
            while opt + 4 <= end:
                code, olen = struct.unpack_from(endian + "HH", data, opt)
                if code == 0:
                    break
                if code == 9 and olen >= 1:  # if_tsresol
                    r = data[opt + 4]
                    tick = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
                opt += 4 + (olen + 3) // 4 * 4
            ifaces.append((linktype, tick))
        elif btype in (6, 2):  # enhanced packet / obsolete packet block
            if btype == 6:
                iface, hi, lo, incl, orig = struct.unpack_from(endian + "IIIII", data, body)
            else:
                iface, _, hi, lo, incl, orig = struct.unpack_from(endian + "HHIIII", data, body)
            if iface < len(ifaces):
                linktype, tick = ifaces[iface]
                ticks = (hi << 32) | lo
                ts = ticks * 1_000_000 // tick if tick != 1_000_000 else ticks
                yield ts, linktype, data[body + 20:body + 20 + incl], orig
        off += blen


def read_capture(path: Path, limit: int | None = None) -> list[Frame]:
    """Every frame of a pcap/pcapng file (gzip or not) as Ethernet, in file order."""
    data = _open(path)
    reader = _pcapng_frames if data[:4] == b"\x0a\x0d\x0d\x0a" else _pcap_frames
    frames: list[Frame] = []
    for ts, linktype, raw, orig in reader(data):
        eth = _to_ethernet(linktype, raw)
        if eth is None:
            continue
        frames.append((ts, eth[0], orig + eth[1]))
        if limit is not None and len(frames) >= limit:
            break
    return frames


def _be16(b: bytes, o: int) -> int:
    return (b[o] << 8) | b[o + 1]


@dataclass(frozen=True)
class Layout:
    """Where a frame's shifted fields are (-1: absent)."""

    v6: bool = False
    src: int = -1  # the 4 address bytes that are shifted (IPv6: the last 4)
    dst: int = -1
    ipck: int = -1  # IPv4 header checksum
    l4ck: int = -1  # TCP/UDP/ICMPv6 checksum (covers the addresses through the pseudo-header)
    udp: bool = False


NO_SHIFT = Layout()


def layout(frame: bytes) -> Layout | None:
    """The fields to rewrite in an Ethernet frame; None drops it (MPLS/PPPoE: IP not reached)."""
    n = len(frame)
    if n < 14:
        return NO_SHIFT
    et, off = _be16(frame, 12), 14
    while et in (0x8100, 0x88A8, 0x9100) and off + 4 <= n:
        et, off = _be16(frame, off + 2), off + 4
    if et in (0x8847, 0x8848, 0x8863, 0x8864):
        return None
    if et == 0x0800 and off + 20 <= n and frame[off] >> 4 == 4:
        ihl = (frame[off] & 0x0F) * 4
        proto, l4 = frame[off + 9], off + ihl
        l4ck = -1
        if _be16(frame, off + 6) & 0x1FFF == 0:  # first (or only) fragment: L4 header here
            if proto == 6 and l4 + 18 <= n:
                l4ck = l4 + 16
            elif proto == 17 and l4 + 8 <= n and _be16(frame, l4 + 6):
                l4ck = l4 + 6
        return Layout(False, off + 12, off + 16, off + 10, l4ck, proto == 17)
    if et == 0x86DD and off + 40 <= n and frame[off] >> 4 == 6:
        nh, l4 = frame[off + 6], off + 40
        while nh in (0, 43, 60) and l4 + 8 <= n:  # hop-by-hop (MLD), routing, destination
            nh, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
        l4ck = -1
        if nh == 6 and l4 + 18 <= n:
            l4ck = l4 + 16
        elif nh == 17 and l4 + 8 <= n and _be16(frame, l4 + 6):
            l4ck = l4 + 6
        elif nh == 58 and l4 + 4 <= n:
            l4ck = l4 + 2
        return Layout(True, off + 20, off + 36, -1, l4ck, nh == 17)
    return NO_SHIFT


# --------------------------------------------------------------------------- building the capture

@dataclass
class Source:
    path: Path
    label: str
    lab: bool
    frames: list[Frame] = field(default_factory=list, repr=False)


def find_sources(lab_dir: Path, corpus: Path | None) -> list[Source]:
    sources: list[Source] = []
    seen: set[str] = set()
    paths: list[tuple[Path, str, bool]] = [
        (p, f"lab/{p.parent.name}", True) for p in sorted(lab_dir.glob("*/capture.pcap.gz"))]
    if corpus is not None and corpus.is_dir():
        for pattern in CORPUS_GLOBS:
            for p in sorted(corpus.glob(pattern)):
                if not any(s in p.name.lower() for s in SKIP_NAMES):
                    paths.append((p, str(p.relative_to(corpus)), False))
    for path, label, lab in paths:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen:  # the same capture ships with several projects
            continue
        seen.add(digest)
        sources.append(Source(path, label, lab))
    return sources


U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


Bools = npt.NDArray[np.bool_]


@dataclass
class Round:
    """One pass over every copy of every source, as a byte template plus where to patch it."""

    buf: U8
    end: I64  # end offset of each packet's record in buf
    rec: I64  # offset of each record header
    rel_us: I64  # timestamp relative to the start of the round
    copy: I64  # copy number within the round
    span_us: int  # the round's length in time, gap included
    copies: int
    # addresses (IP packets): packet index, offsets, IPv6 or not, original values
    a_idx: I64
    a_src: I64
    a_dst: I64
    a_v6: Bools
    a_old_src: I64
    a_old_dst: I64
    # checksums to fix: index into the a_* arrays, offset, original value, UDP or not
    c_a: I64
    c_off: I64
    c_old: I64
    c_udp: Bools


def make_round(sources: list[Source], lab_copies: int) -> Round:
    """Lab captures lab_copies times each (interleaved), then each corpus capture once."""
    lab = [s for s in sources if s.lab]
    plan = [s for _ in range(lab_copies) for s in lab] + [s for s in sources if not s.lab]
    parts: list[bytes] = []
    end: list[int] = []
    rec: list[int] = []
    rel: list[int] = []
    copy: list[int] = []
    a_idx: list[int] = []
    a_src: list[int] = []
    a_dst: list[int] = []
    a_v6: list[bool] = []
    c_a: list[int] = []
    c_off: list[int] = []
    c_udp: list[bool] = []
    pos = 0
    t0 = 0
    layouts: dict[int, list[Layout | None]] = {}
    for ci, src in enumerate(plan):
        if not src.frames:
            continue
        lays = layouts.get(id(src))
        if lays is None:
            lays = layouts[id(src)] = [layout(f) for _, f, _ in src.frames]
        prev = src.frames[0][0]
        last = 0
        for (ts, frame, orig), lay in zip(src.frames, lays, strict=True):
            if lay is None:
                continue
            # never backwards (even if the file is), and no pause longer than MAX_IDLE_US
            last += min(max(ts - prev, 0), MAX_IDLE_US)
            prev = max(prev, ts)
            i = len(end)
            rec.append(pos)
            rel.append(t0 + last)
            copy.append(ci)
            parts.append(_REC.pack(0, 0, len(frame), max(orig, len(frame))))
            parts.append(frame)
            data = pos + 16
            pos = data + len(frame)
            end.append(pos)
            if lay.src >= 0:
                a = len(a_idx)
                a_idx.append(i)
                a_src.append(data + lay.src)
                a_dst.append(data + lay.dst)
                a_v6.append(lay.v6)
                for ck, udp in ((lay.ipck, False), (lay.l4ck, lay.udp)):
                    if ck >= 0:
                        c_a.append(a)
                        c_off.append(data + ck)
                        c_udp.append(udp)
        t0 += last + COPY_GAP_US
    buf = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()

    def i64(v: list[int]) -> I64:
        return np.array(v, np.int64)

    src_off, dst_off, ck_off = i64(a_src), i64(a_dst), i64(c_off)
    return Round(
        buf, i64(end), i64(rec), i64(rel), i64(copy), t0, len(plan),
        i64(a_idx), src_off, dst_off, np.array(a_v6, np.bool_),
        _get32(buf, src_off), _get32(buf, dst_off),
        i64(c_a), ck_off, (buf[ck_off].astype(np.int64) << 8) | buf[ck_off + 1],
        np.array(c_udp, np.bool_))


def _get32(buf: U8, off: I64) -> I64:
    """Big-endian 32-bit values at the given offsets."""
    v = np.zeros(len(off), np.int64)
    for i in range(4):
        v = (v << 8) | buf[off + i]
    return v


def _put(buf: U8, off: I64, val: I64, size: int, big: bool) -> None:
    for i in range(size):
        shift = 8 * (size - 1 - i) if big else 8 * i
        buf[off + i] = (val >> shift) & 0xFF


def _fold(x: I64) -> I64:
    for _ in range(3):
        x = (x & 0xFFFF) + (x >> 16)
    return x


def _words(v: I64) -> I64:
    return (v >> 16) + (v & 0xFFFF)


def _not_words(v: I64) -> I64:
    return (~(v >> 16) & 0xFFFF) + (~v & 0xFFFF)


def patch_round(r: Round, out: U8, base_us: int, first_copy: int) -> None:
    """Fill in timestamps, shifted addresses and their checksums for one repetition."""
    ts = base_us + r.rel_us
    _put(out, r.rec, ts // 1_000_000, 4, big=False)
    _put(out, r.rec + 4, ts % 1_000_000, 4, big=False)
    if not len(r.a_idx):
        return
    shift = (first_copy + r.copy[r.a_idx]) * ADDR_STRIDE

    def moved(old: I64) -> I64:
        return np.where(r.a_v6, (old + shift) & 0xFFFFFFFF,
                        (old & 0xFF000000) | ((old + shift) & 0xFFFFFF))

    new_src, new_dst = moved(r.a_old_src), moved(r.a_old_dst)
    _put(out, r.a_src, new_src, 4, big=True)
    _put(out, r.a_dst, new_dst, 4, big=True)
    if len(r.c_a):  # RFC 1624: HC' = ~(~HC + ~m + m') over the four changed words
        a = r.c_a
        x = ((~r.c_old & 0xFFFF) + _not_words(r.a_old_src[a]) + _not_words(r.a_old_dst[a])
             + _words(new_src[a]) + _words(new_dst[a]))
        ck = ~_fold(x) & 0xFFFF
        ck[(ck == 0) & r.c_udp] = 0xFFFF  # UDP: zero means "no checksum"
        _put(out, r.c_off, ck, 2, big=True)


@dataclass
class Capture:
    path: Path
    packets: int
    bytes: int
    copies: int
    rounds: float
    lab_share: float
    sources: int
    build_s: float
    cached: bool


START_US = 1_795_132_800 * 1_000_000  # 2026-11-20 00:00:00 UTC


def build_capture(work: Path, packets: int, lab_share: float, lab_dir: Path,
                  corpus: Path | None, rebuild: bool) -> Capture:
    sources = find_sources(lab_dir, corpus)
    if not any(s.lab for s in sources):
        raise SystemExit(f"no lab captures under {lab_dir}")
    key = json.dumps({
        "version": BUILD_VERSION, "packets": packets, "lab_share": lab_share,
        "max": CORPUS_MAX_PACKETS, "stride": ADDR_STRIDE, "gap": COPY_GAP_US,
        "sources": [(s.label, s.path.stat().st_size, s.path.stat().st_mtime_ns)
                    for s in sources]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = work / f"bench-{packets}-{digest}.pcap"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists() and not rebuild:
        meta = json.loads(meta_path.read_text())
        meta.update(path=path, cached=True)
        return Capture(**meta)
    for old in work.glob(f"bench-{packets}-*.*"):  # an older build for this size
        old.unlink()

    t = time.perf_counter()
    for s in sources:
        s.frames = read_capture(s.path, None if s.lab else CORPUS_MAX_PACKETS)
    lab_pkts = sum(len(s.frames) for s in sources if s.lab)
    corpus_pkts = sum(len(s.frames) for s in sources if not s.lab)
    lab_copies = max(1, round(lab_share / (1 - lab_share) * corpus_pkts / lab_pkts)) \
        if corpus_pkts and lab_share < 1 else 1
    r = make_round(sources, lab_copies)
    per_round = len(r.end)
    tmp = path.with_suffix(".tmp")
    written = copies = 0
    rep = 0
    with tmp.open("wb") as fh:
        fh.write(_PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        out = np.empty_like(r.buf)
        while written < packets:
            np.copyto(out, r.buf)
            patch_round(r, out, START_US + rep * r.span_us, rep * r.copies)
            take = min(per_round, packets - written)
            fh.write(out[:int(r.end[take - 1])].data)
            written += take
            copies += r.copies if take == per_round else int(r.copy[take - 1]) + 1
            rep += 1
    size = tmp.stat().st_size
    tmp.replace(path)
    cap = Capture(path, packets, size, copies, round(packets / per_round, 2),
                  round(lab_copies * lab_pkts / per_round, 3), len(sources),
                  round(time.perf_counter() - t, 2), False)
    meta = asdict(cap)
    del meta["path"], meta["cached"]
    meta_path.write_text(json.dumps(meta, indent=2))
    return cap


# --------------------------------------------------------------------------- running the tools

TIME = Path("/usr/bin/time")
# Stand-in for /usr/bin/time -v: run the command, report the peak RSS of its (only) child.
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write('Maximum resident set size (kbytes): %d\\n'\n"
    "    % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(rc)\n")


@dataclass
class Run:
    tool: str
    seconds: float
    rss_mb: float
    rc: int
    note: str = ""


def measure(tool: str, cmd: list[str], log: Path, timeout: float | None,
            stdout_devnull: bool = False) -> Run:
    """Wall time and peak RSS of one command; its stderr (and stdout unless discarded) to log."""
    usage = log.with_suffix(".rusage")
    if TIME.exists():
        full = [str(TIME), "-v", "-o", str(usage), *cmd]
    else:
        full = [sys.executable, "-c", _RUSAGE_WRAPPER, str(usage), *cmd]
    with log.open("wb") as fh:
        t = time.perf_counter()
        # own process group, so a timeout stops the tool and not just /usr/bin/time
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL if stdout_devnull else fh,
                                stderr=fh, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -1
        except BaseException:  # Ctrl-C: do not leave the tool running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        seconds = time.perf_counter() - t
    text = usage.read_text(errors="replace") if usage.exists() else ""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    rss = int(m.group(1)) / 1024 if m else float("nan")
    if rc == -1:
        return Run(tool, seconds, rss, rc, f"timed out after {timeout:.0f} s")
    return Run(tool, seconds, rss, rc)


def hopguard_cmd() -> list[str]:
    script = Path(sys.executable).parent / "hopguard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hopguard"]


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").rstrip().splitlines()
    return "\n".join("    " + line for line in text[-lines:])


TABLES = ("flow", "tls", "http", "proxy", "dns", "ssh", "x509")


def run_hopguard(cap: Capture, work: Path, attempt: int, keep: bool,
                 timeout: float | None) -> tuple[Run, dict[str, int]]:
    db = work / f"hopguard{attempt}.duckdb"
    for p in (db, db.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    log = work / f"hopguard{attempt}.log"
    run = measure("hopguard", [*hopguard_cmd(), "ingest", "--no-progress", "--db", str(db),
                               str(cap.path)], log, timeout)
    rows: dict[str, int] = {}
    if run.rc != 0:
        run.note = run.note or f"exit {run.rc}"
        print(f"  hopguard ingest failed ({run.note}); {log}:\n{tail(log)}", flush=True)
    elif db.exists():
        import duckdb  # only here: the build and the other tools do not need it

        try:
            con = duckdb.connect(str(db), read_only=True)
            have = {r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables").fetchall()}
            for t in TABLES:
                if t in have:
                    count = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()
                    rows[t] = int(count[0]) if count else 0
            con.close()
        except duckdb.Error as exc:
            print(f"  could not read {db}: {exc}", flush=True)
    if not keep:
        for p in (db, db.with_suffix(".duckdb.wal")):
            p.unlink(missing_ok=True)
    return run, rows


def run_tshark(cap: Capture, work: Path, attempt: int, timeout: float | None) -> Run:
    cmd = ["tshark", "-n", "-r", str(cap.path), "-T", "fields"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    log = work / f"tshark{attempt}.log"
    run = measure("tshark", cmd, log, timeout, stdout_devnull=True)
    if run.rc != 0:
        run.note = run.note or f"exit {run.rc}"
        print(f"  tshark failed ({run.note}); {log}:\n{tail(log)}", flush=True)
    return run


def run_ndpi(cap: Capture, work: Path, attempt: int, timeout: float | None) -> Run:
    # Not -q: the summary it prints once at the end is how we know it read every packet.
    log = work / f"ndpi{attempt}.log"
    run = measure("ndpiReader", ["ndpiReader", "-i", str(cap.path)], log, timeout)
    m = re.search(r"of (\d+) packets total", log.read_text(errors="replace"))
    if run.rc != 0 or m is None:
        run.note = run.note or (f"exit {run.rc}" if run.rc else "no summary")
        run.rc = run.rc or 1
        print(f"  ndpiReader failed ({run.note}); {log}:\n{tail(log)}", flush=True)
    elif int(m.group(1)) != cap.packets:
        run.note = f"saw {int(m.group(1)):,} packets"
    return run


def warm(path: Path) -> None:
    """Read the file once so every tool starts with it in the page cache."""
    with path.open("rb", buffering=0) as fh:
        while fh.read(1 << 24):
            pass


# --------------------------------------------------------------------------- report

def show(best: dict[str, Run], packets: int) -> None:
    hg = best.get("hopguard")
    print(f"\n{'tool':<12}{'seconds':>10}{'packets/s':>14}{'peak RSS MB':>14}"
          f"{'time / hopguard':>18}")
    for run in best.values():
        pps = f"{packets / run.seconds:,.0f}" if run.rc == 0 else "failed"
        ratio = f"{run.seconds / hg.seconds:.2f}x" if hg and hg.rc == 0 and run.rc == 0 else "-"
        note = f"  ({run.note})" if run.note else ""
        print(f"{run.tool:<12}{run.seconds:>10.2f}{pps:>14}{run.rss_mb:>14,.1f}{ratio:>18}"
              f"{note}")


def verdict(best: dict[str, Run]) -> dict[str, bool | None]:
    """Goal name -> met (None: not measured)."""
    hg, ts, nd = best.get("hopguard"), best.get("tshark"), best.get("ndpiReader")
    goals: dict[str, bool | None] = {"tshark_3x": None, "ndpi_within_3x": None}
    print()
    if hg is None or ts is None:
        print("goal >= 3x tshark's packets/s: not measured")
    elif hg.rc != 0 or ts.rc != 0:
        print(f"goal >= 3x tshark's packets/s: not measured "
              f"({'hopguard' if hg.rc else 'tshark'} failed)")
    else:
        goals["tshark_3x"] = ts.seconds >= 3 * hg.seconds
        print(f"goal >= 3x tshark's packets/s: hopguard at {ts.seconds / hg.seconds:.2f}x -> "
              f"{'met' if goals['tshark_3x'] else 'NOT MET'}")
    if hg is None or nd is None:
        print("goal within 3x of ndpiReader: not measured")
    elif hg.rc != 0 or nd.rc != 0:
        print(f"goal within 3x of ndpiReader: not measured "
              f"({'hopguard' if hg.rc else 'ndpiReader'} failed)")
    else:
        goals["ndpi_within_3x"] = hg.seconds <= 3 * nd.seconds
        print(f"goal within 3x of ndpiReader: hopguard takes {hg.seconds / nd.seconds:.2f}x "
              f"its time -> {'met' if goals['ndpi_within_3x'] else 'NOT MET'}")
    return goals


def default_corpus() -> Path:
    env = os.environ.get("HOPGUARD_CORPUS")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "public"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=5_000_000,
                    help="packets in the built capture (quick run: 200000)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool, best time kept")
    ap.add_argument("--workdir", type=Path,
                    default=Path(tempfile.gettempdir()) / "hopguard-bench-pcap",
                    help="where the capture is built and cached, and the tools run")
    ap.add_argument("--keep", action="store_true",
                    help="keep the hopguard stores and tool logs (the capture is always kept)")
    ap.add_argument("--rebuild", action="store_true", help="build the capture even if cached")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--tools", default="hopguard,tshark,ndpiReader",
                    help="comma-separated subset of hopguard,tshark,ndpiReader")
    ap.add_argument("--lab-share", type=float, default=0.75,
                    help="share of the packets that come from the lab captures")
    ap.add_argument("--lab", type=Path, default=ROOT / "examples" / "lab")
    ap.add_argument("--corpus", type=Path, default=default_corpus(),
                    help="public capture corpus [$HOPGUARD_CORPUS or ../shared/data/public]")
    ap.add_argument("--timeout", type=float, help="seconds allowed per tool run")
    args = ap.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - {"hopguard", "tshark", "ndpiReader"}:
        ap.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.packets < 1 or args.repeat < 1:
        ap.error("--packets and --repeat must be positive")
    if not 0 < args.lab_share <= 1:
        ap.error("--lab-share must be in (0, 1]")
    missing = [t for t in tools if t != "hopguard" and shutil.which(t) is None]
    for t in missing:
        print(f"{t} not found (Debian: apt-get install "
              f"{'tshark' if t == 'tshark' else 'libndpi-bin'}); skipping it", flush=True)
    tools = [t for t in tools if t not in missing]

    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus if args.corpus.is_dir() else None
    if corpus is None:
        print(f"corpus not found at {args.corpus}: lab captures only", flush=True)
    cap = build_capture(work, args.packets, args.lab_share, args.lab, corpus, args.rebuild)
    how = "cached" if cap.cached else f"built in {cap.build_s:.1f} s"
    print(f"capture {cap.path}: {cap.packets:,} packets, {cap.bytes / 1e6:,.0f} MB, "
          f"{cap.copies:,} copies of {cap.sources} source captures "
          f"({cap.lab_share:.0%} of packets from the lab), {how}", flush=True)
    warm(cap.path)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} before the runs "
          "(other work on the machine slows every tool)", flush=True)

    runs: dict[str, list[Run]] = {t: [] for t in tools}
    rows: dict[str, int] = {}
    run_dir = work / "runs"
    run_dir.mkdir(exist_ok=True)
    try:
        for attempt in range(args.repeat):
            for tool in tools:
                if tool == "hopguard":
                    run, rows = run_hopguard(cap, run_dir, attempt, args.keep, args.timeout)
                elif tool == "tshark":
                    run = run_tshark(cap, run_dir, attempt, args.timeout)
                else:
                    run = run_ndpi(cap, run_dir, attempt, args.timeout)
                runs[tool].append(run)
                state = "ok" if run.rc == 0 else "FAILED"
                print(f"  run {attempt + 1}: {tool:<11} {run.seconds:8.2f} s "
                      f"{run.rss_mb:9,.1f} MB peak RSS  {state}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    best: dict[str, Run] = {}
    for tool, rs in runs.items():
        good = [r for r in rs if r.rc == 0]
        pick = min(good or rs, key=lambda r: r.seconds)
        best[tool] = Run(pick.tool, pick.seconds, max(r.rss_mb for r in rs), pick.rc, pick.note)
    if rows:
        print("hopguard stored: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()))
    show(best, cap.packets)
    goals = verdict(best)

    if args.json:
        cap_meta = asdict(cap)
        cap_meta["path"] = str(cap.path)
        result = {
            "capture": cap_meta,
            "runs": {t: [asdict(r) for r in rs] for t, rs in runs.items()},
            "best": {t: {**asdict(r), "packets_per_s": cap.packets / r.seconds}
                     for t, r in best.items()},
            "hopguard_rows": rows, "goals": goals,
            "load_before": load[0], "load_after": os.getloadavg()[0],
            "tshark_fields": list(TSHARK_FIELDS),
        }
        args.json.write_text(json.dumps(result, indent=2))
    if any(r.rc != 0 for r in best.values()):
        print("A TOOL FAILED")
        return 1
    if None in goals.values():
        print("goals not fully measured (see --tools and the notes above)")
        return 2
    ok = all(goals.values())
    print("goals met" if ok else "GOALS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
