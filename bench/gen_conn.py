"""A synthetic day of Zeek conn.log with planted relay chains, for bench/hunt.py.

Theory of operation. The flow model is the one of ../shared/reference/analytics-notes.md §2:
one day (00:00-24:00 UTC) with a diurnal curve (65% of flows in a business-hours bump), 20,000
internal workstations (10.0.0.0/16), 200,000 external addresses picked by Zipf popularity
(s = 1.05) and clients picked by log-normal activity (sigma = 1.2). Busy servers:

* 4 DNS resolvers (10.1.0.1-4); 40% of queries are forwarded upstream 0.5-20 ms later with
  near-identical bytes (benign bridging).
* 3 web proxies (10.1.1.1-3): every client->proxy:3128 flow gets a proxy->internet:443 flow
  2-200 ms later, bytes +-3% (benign bridging).
* 6 SMB servers (10.1.2.x:445), 4 DCs (10.1.3.x: 88, 389, 135), 10 DMZ web servers (10.2.0.x,
  inbound from the internet), 5 admin hosts that RDP/WinRM into workstations, other outbound
  traffic, and 3% scans (S0) whose duration and bytes are unset.

Planted truth: 200 relay chains (100 of 2 flows, 60 of 3, 40 of 4: 340 true pairs). Each hop
starts 10-1500 ms after the previous one, lasts until before the previous one ends, and drifts
+-7% in bytes; 60% start outside; about 10% relay through a busy server (SMB or DMZ) on a port
that is not its service. 200 near-miss decoys (A->B->C) miss one condition: the second leg starts
2.5-6 s later, or the bytes differ by a factor 1.6-3 (legs are >= 20 kB so a few kB of protocol
slack cannot hide the difference).

Everything is drawn with numpy from one seeded generator, column by column (no per-flow Python
except for the 1,000-odd planted flows); DuckDB writes the TSV body from the columns (it
formats numbers in parallel) and the Zeek header and #close trailer are put around it. Rows
are in ts order. The truth file (JSON) lists the planted pairs (in_uid, out_uid and the
entities a relay finding should name), the chains as ordered IP lists with their uids, and the
decoys.

Usage: python bench/gen_conn.py [--flows N] [--seed S] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

BUILD_VERSION = 2  # bump when the model changes (invalidates cached files)
T0 = 1795132800  # 2026-11-20 00:00:00 UTC
DAY = 86400.0

N_WS = 20_000
N_EXT = 200_000
RESOLVERS = [f"10.1.0.{i}" for i in range(1, 5)]
PROXIES = [f"10.1.1.{i}" for i in range(1, 4)]
SMB = [f"10.1.2.{i}" for i in range(1, 7)]
DCS = [f"10.1.3.{i}" for i in range(1, 5)]
DMZ = [f"10.2.0.{i}" for i in range(1, 11)]
ADMINS = 5  # the first workstations are admin hosts
UPSTREAM_DNS = ["8.8.8.8", "1.1.1.1", "9.9.9.9"]

PROTOS = np.array(["tcp", "udp", "icmp"], dtype=object)
TCP, UDP = 0, 1
SERVICES = np.array([None, "dns", "http", "ssl", "smb", "krb", "ldap", "dce_rpc", "ntp",
                     "ssh", "rdp"], dtype=object)
(S_NONE, S_DNS, S_HTTP, S_SSL, S_SMB, S_KRB, S_LDAP, S_DCE, S_NTP, S_SSH,
 S_RDP) = range(len(SERVICES))
STATES = np.array(["SF", "S0", "RSTO", "REJ", "S1"], dtype=object)
HISTORIES = np.array(["ShADadFf", "S", "Dd", "ShADadR", "Sr", "ShADad"], dtype=object)

RELAY_PORTS = np.array([1080, 2222, 4444, 5555, 8081, 9001, 9050, 10443, 31337, 6000])
EXIT_PORTS = np.array([443, 443, 443, 22, 8443, 80])

FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
          "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
          "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
          "tunnel_parents")
TYPES = ("time", "string", "addr", "port", "addr", "port", "enum", "string", "interval", "count",
         "count", "string", "bool", "bool", "count", "string", "count", "count", "count", "count",
         "set[string]")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def header(opened: str) -> str:
    return ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
            f"#path\tconn\n#open\t{opened}\n#fields\t" + "\t".join(FIELDS) + "\n#types\t"
            + "\t".join(TYPES) + "\n")


# --------------------------------------------------------------------------- addresses

def _addresses(rng: np.random.Generator) -> tuple[list[str], npt.NDArray[np.bool_]]:
    """Every address the model uses, and whether it is internal. Layout of the index space:
    workstations, then servers, then the upstream resolvers, then the external addresses."""
    ws = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(N_WS)]
    servers = RESOLVERS + PROXIES + SMB + DCS + DMZ
    # public first octets only (no 0, 10, 100 (CGNAT), 127, 169, 172, 192, >= 224)
    firsts = np.array([o for o in range(1, 224) if o not in (10, 100, 127, 169, 172, 192)])
    seen = set(UPSTREAM_DNS)
    ext: list[str] = []
    while len(ext) < N_EXT:
        n = N_EXT - len(ext)
        o1 = rng.choice(firsts, n)
        rest = rng.integers(0, 1 << 24, n)
        for a, r in zip(o1.tolist(), rest.tolist(), strict=True):
            s = f"{a}.{r >> 16}.{(r >> 8) & 255}.{max(r & 255, 1)}"
            if s not in seen:
                seen.add(s)
                ext.append(s)
    ips = ws + servers + UPSTREAM_DNS + ext
    internal = np.zeros(len(ips), bool)
    internal[:N_WS + len(servers)] = True
    return ips, internal


@dataclass
class Index:
    ws: int = 0
    resolvers: int = N_WS
    proxies: int = N_WS + 4
    smb: int = N_WS + 7
    dcs: int = N_WS + 13
    dmz: int = N_WS + 17
    upstream: int = N_WS + 27
    ext: int = N_WS + 30


IX = Index()


# --------------------------------------------------------------------------- columns

@dataclass
class Flows:
    """Columns of a set of flows; unset numbers are NaN (float) or -1 (int)."""

    ts: F64
    dur: F64
    oh: I64
    op: I64
    rh: I64
    rp: I64
    proto: I64
    svc: I64
    ob: I64
    rb: I64
    state: I64
    hist: I64
    cat: str
    catv: I64 = field(init=False)

    def __post_init__(self) -> None:
        self.catv = np.full(len(self.ts), CATS.index(self.cat), np.int64)


CATS = ["dns", "dns_forward", "proxy_client", "proxy_upstream", "web", "inbound", "smb", "dc",
        "misc", "scan", "relay", "decoy"]


def _concat(parts: list[Flows]) -> dict[str, Any]:
    return {k: np.concatenate([getattr(p, k) for p in parts])
            for k in ("ts", "dur", "oh", "op", "rh", "rp", "proto", "svc", "ob", "rb", "state",
                      "hist", "catv")}


class Model:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        w = 1.0 / np.arange(1, N_EXT + 1) ** 1.05
        self.ext_cdf = np.cumsum(w) / w.sum()
        a = rng.lognormal(0.0, 1.2, N_WS)
        a[:ADMINS] = 0  # admin hosts do their own thing
        self.ws_cdf = np.cumsum(a) / a.sum()

    def times(self, n: int) -> F64:
        r = self.rng
        # flows start before 23:30 (the longest then end inside the day); the bump's tails
        # are drawn again uniformly rather than clipped (a clip piles flows onto one instant)
        span = DAY - 1800
        t = np.where(r.random(n) < 0.65, r.normal(13 * 3600, 3 * 3600, n), r.random(n) * span)
        out = (t < 0) | (t >= span)
        t[out] = r.random(int(out.sum())) * span
        return t + T0

    def clients(self, n: int) -> I64:
        return np.minimum(np.searchsorted(self.ws_cdf, self.rng.random(n)), N_WS - 1)

    def externals(self, n: int) -> I64:
        return IX.ext + np.minimum(np.searchsorted(self.ext_cdf, self.rng.random(n)), N_EXT - 1)

    def eph(self, n: int) -> I64:
        return self.rng.integers(49152, 65536, n)

    def logu(self, lo: float, hi: float, n: int) -> F64:
        return np.exp(self.rng.uniform(np.log(lo), np.log(hi), n))

    def tcp(self, ts: F64, dur: F64, oh: I64, rh: I64, rp: I64 | int, svc: int, ob: I64,
            rb: I64, cat: str) -> Flows:
        n = len(ts)
        state = np.where(self.rng.random(n) < 0.93, 0, 2)
        return Flows(ts, dur, oh, self.eph(n), rh, np.broadcast_to(rp, n).astype(np.int64),
                     np.full(n, TCP), np.full(n, svc), ob, rb, state,
                     np.where(state == 0, 0, 3), cat)

    def generate(self, n_total: int) -> tuple[dict[str, Any], dict[str, Any]]:
        r = self.rng
        planted, truth = self.planted()
        n = max(n_total - len(planted.ts) - len(truth["_decoy_flows"].ts), 0)
        counts = {"dns": round(0.237 * n), "proxy_client": round(0.158 * n),
                  "web": round(0.136 * n), "inbound": round(0.069 * n), "smb": round(0.059 * n),
                  "dc": round(0.03 * n), "scan": round(0.03 * n)}
        counts["dns_forward"] = round(0.4 * counts["dns"])
        counts["proxy_upstream"] = counts["proxy_client"]
        counts["misc"] = n - sum(counts.values())
        if counts["misc"] < 0:  # tiny n: rounding
            counts["dns"] += counts["misc"]
            counts["misc"] = 0
        parts: list[Flows] = []

        # DNS: client -> resolver:53; 40% forwarded upstream inside the query's lifetime
        k = counts["dns"]
        ts = self.times(k)
        ob = r.integers(30, 90, k)
        rb = r.integers(45, 520, k)
        dur = self.logu(0.0003, 0.04, k)
        fwd = np.zeros(k, bool)
        fwd[r.choice(k, counts["dns_forward"], replace=False)] = True
        kf = int(fwd.sum())
        delay = r.uniform(0.0005, 0.02, kf)
        fdur = self.logu(0.0005, 0.03, kf)
        dur[fwd] = delay + fdur + r.uniform(0.0002, 0.002, kf)
        res = IX.resolvers + r.integers(0, 4, k)
        parts.append(Flows(ts, dur, self.clients(k), self.eph(k), res, np.full(k, 53),
                           np.full(k, UDP), np.full(k, S_DNS), ob, rb, np.zeros(k, np.int64),
                           np.full(k, 2), "dns"))
        up = np.where(r.random(kf) < 0.7, IX.upstream + r.integers(0, 3, kf), self.externals(kf))
        parts.append(Flows(ts[fwd] + delay, fdur, res[fwd], self.eph(kf), up, np.full(kf, 53),
                           np.full(kf, UDP), np.full(kf, S_DNS),
                           np.maximum(ob[fwd] + r.integers(-2, 3, kf), 20),
                           np.maximum(rb[fwd] + r.integers(-4, 5, kf), 20),
                           np.zeros(kf, np.int64), np.full(kf, 2), "dns_forward"))

        # web proxies: client -> proxy:3128, then proxy -> internet:443 2-200 ms later
        k = counts["proxy_client"]
        ts = self.times(k)
        dur = self.logu(0.3, 600, k)
        ob = self.logu(300, 200_000, k).astype(np.int64)
        rb = self.logu(500, 5_000_000, k).astype(np.int64)
        prox = IX.proxies + r.integers(0, 3, k)
        parts.append(self.tcp(ts, dur, self.clients(k), prox, 3128, S_HTTP, ob, rb,
                              "proxy_client"))
        delay = r.uniform(0.002, 0.2, k)
        udur = np.maximum(dur - delay - r.uniform(0.001, 0.05, k), 0.001)
        parts.append(self.tcp(ts + delay, udur, prox, self.externals(k), 443, S_SSL,
                              np.round(ob * r.uniform(0.97, 1.03, k)).astype(np.int64),
                              np.round(rb * r.uniform(0.97, 1.03, k)).astype(np.int64),
                              "proxy_upstream"))

        # direct web (80% TLS)
        k = counts["web"]
        tls = r.random(k) < 0.8
        parts.append(self.tcp(self.times(k), self.logu(0.05, 300, k), self.clients(k),
                              self.externals(k), np.where(tls, 443, 80),
                              0, self.logu(200, 100_000, k).astype(np.int64),
                              self.logu(300, 3_000_000, k).astype(np.int64), "web"))
        parts[-1].svc = np.where(tls, S_SSL, S_HTTP)

        # internet -> DMZ web servers (any external address, not Zipf: crawlers, users)
        k = counts["inbound"]
        tls = r.random(k) < 0.7
        f = self.tcp(self.times(k), self.logu(0.05, 60, k), IX.ext + r.integers(0, N_EXT, k),
                     IX.dmz + r.integers(0, 10, k), np.where(tls, 443, 80), 0,
                     self.logu(200, 20_000, k).astype(np.int64),
                     self.logu(500, 2_000_000, k).astype(np.int64), "inbound")
        f.svc = np.where(tls, S_SSL, S_HTTP)
        parts.append(f)

        # SMB file servers
        k = counts["smb"]
        parts.append(self.tcp(self.times(k), self.logu(0.05, 3600, k), self.clients(k),
                              IX.smb + r.integers(0, 6, k), 445, S_SMB,
                              self.logu(500, 5_000_000, k).astype(np.int64),
                              self.logu(500, 50_000_000, k).astype(np.int64), "smb"))

        # domain controllers: Kerberos, LDAP, RPC
        k = counts["dc"]
        which = r.integers(0, 3, k)
        f = self.tcp(self.times(k), self.logu(0.005, 5, k), self.clients(k),
                     IX.dcs + r.integers(0, 4, k), np.array([88, 389, 135])[which], 0,
                     self.logu(100, 5000, k).astype(np.int64),
                     self.logu(100, 20_000, k).astype(np.int64), "dc")
        f.svc = np.array([S_KRB, S_LDAP, S_DCE])[which]
        f.proto = np.where((which == 0) & (r.random(k) < 0.3), UDP, TCP)
        parts.append(f)

        # scans: S0, one SYN or two, duration and bytes unset
        k = counts["scan"]
        scanners = np.concatenate([IX.ext + r.integers(0, N_EXT, 60), r.integers(0, N_WS, 20)])
        src = scanners[r.integers(0, len(scanners), k)]
        dst = np.where(r.random(k) < 0.7, r.integers(0, N_WS, k), IX.dmz + r.integers(0, 10, k))
        parts.append(Flows(self.times(k), np.full(k, np.nan), src, self.eph(k), dst,
                           r.integers(1, 65536, k), np.full(k, TCP), np.full(k, S_NONE),
                           np.full(k, -1), np.full(k, -1), np.full(k, 1), np.full(k, 1),
                           "scan"))

        # misc: NTP, SSH and odd ports out; admin hosts into workstations (RDP, WinRM)
        k = counts["misc"]
        kind = r.choice(4, k, p=[0.35, 0.15, 0.4, 0.1])
        oh = np.where(kind == 3, r.integers(0, ADMINS, k), self.clients(k))
        rh = np.where(kind == 3, r.integers(ADMINS, N_WS, k), self.externals(k))
        rp = np.select([kind == 0, kind == 1, kind == 3],
                       [np.full(k, 123), np.full(k, 22), np.where(r.random(k) < 0.7, 3389, 5985)],
                       r.choice([5222, 8080, 1935, 3478, 5228, 993, 587], k))
        f = self.tcp(self.times(k), np.where(kind == 0, self.logu(0.001, 0.1, k),
                                             self.logu(0.1, 2000, k)), oh, rh, rp, 0,
                     np.where(kind == 0, 48, self.logu(100, 500_000, k)).astype(np.int64),
                     np.where(kind == 0, 48, self.logu(100, 5_000_000, k)).astype(np.int64),
                     "misc")
        f.proto = np.where(kind == 0, UDP, TCP)
        f.svc = np.select([kind == 0, kind == 1, (kind == 3) & (rp == 3389)],
                          [S_NTP, S_SSH, S_RDP], S_NONE)
        f.hist = np.where(kind == 0, 2, f.hist)
        parts.append(f)

        parts += [planted, truth.pop("_decoy_flows")]
        cols = _concat(parts)
        return cols, truth

    def planted(self) -> tuple[Flows, dict[str, Any]]:
        """The 200 relay chains and the 200 decoys, flow by flow (small)."""
        r = self.rng
        lengths = [2] * 100 + [3] * 60 + [4] * 40
        relays = iter(r.choice(np.arange(ADMINS, N_WS), 3 * 200 + 200, replace=False).tolist())
        rows: list[tuple[Any, ...]] = []  # ts, dur, oh, op, rh, rp, ob, rb, chain, hop
        chains: list[dict[str, Any]] = []
        for c, length in enumerate(lengths):
            start = float(self.times(1)[0])
            src = int(IX.ext + r.integers(0, N_EXT)) if r.random() < 0.6 else next(relays)
            via_server = r.random() < 0.1
            hops = [next(relays) for _ in range(length - 1)]
            if via_server:
                pool = SMB + DMZ
                hops[int(r.integers(0, len(hops)))] = N_WS + 7 + int(r.integers(0, len(pool)))
            dst = int(IX.ext + r.integers(0, N_EXT))
            nodes = [src, *hops, dst]
            ports = [int(p) for p in r.choice(RELAY_PORTS, length - 1)] + \
                [int(r.choice(EXIT_PORTS))]
            ts, dur = start, float(r.uniform(60, 1800))
            ob, rb = float(self.logu(20_000, 2_000_000, 1)[0]), \
                float(self.logu(50_000, 20_000_000, 1)[0])
            for h in range(length):
                if h:
                    end = ts + dur
                    ts += float(r.uniform(0.010, 1.5))
                    dur = (end - ts) * float(r.uniform(0.85, 0.99))
                    ob *= float(r.uniform(0.93, 1.07))
                    rb *= float(r.uniform(0.93, 1.07))
                rows.append((ts, dur, nodes[h], nodes[h + 1], ports[h], round(ob), round(rb),
                             c, h))
            chains.append({"chain": c, "ips_idx": nodes, "via_server": bool(via_server),
                           "flows": length})
        decoys: list[tuple[Any, ...]] = []
        for d in range(200):
            a = int(IX.ext + r.integers(0, N_EXT)) if r.random() < 0.6 else next(relays)
            b, cdst = next(relays), int(IX.ext + r.integers(0, N_EXT))
            ts, dur = float(self.times(1)[0]), float(r.uniform(60, 1800))
            ob, rb = float(self.logu(20_000, 2_000_000, 1)[0]), \
                float(self.logu(50_000, 20_000_000, 1)[0])
            port = int(r.choice(RELAY_PORTS))
            late = d < 100
            if late:
                ts2 = ts + float(r.uniform(2.5, 6.0))
                ob2, rb2 = ob * float(r.uniform(0.95, 1.05)), rb * float(r.uniform(0.95, 1.05))
            else:
                ts2 = ts + float(r.uniform(0.010, 1.5))
                k1, k2 = float(r.uniform(1.6, 3.0)), float(r.uniform(1.6, 3.0))
                ob2, rb2 = (ob * k1, rb * k2) if r.random() < 0.5 else (ob / k1, rb / k2)
            dur2 = (ts + dur - ts2) * float(r.uniform(0.85, 0.99))
            decoys.append((ts, dur, a, b, port, round(ob), round(rb), d, 0, late))
            decoys.append((ts2, dur2, b, cdst, 443, round(ob2), round(rb2), d, 1, late))

        def flows(rs: list[tuple[Any, ...]], cat: str) -> Flows:
            col = list(zip(*rs, strict=True))
            return self.tcp(np.array(col[0]), np.array(col[1]), np.array(col[2], np.int64),
                            np.array(col[3], np.int64),
                            np.array(col[4], np.int64), S_NONE, np.array(col[5], np.int64),
                            np.array(col[6], np.int64), cat)

        planted = flows(rows, "relay")
        planted.state[:] = 0
        planted.hist[:] = 0
        planted.svc = np.where(planted.rp == 443, S_SSL, np.where(planted.rp == 22, S_SSH,
                                                                  S_NONE))
        dec = flows(decoys, "decoy")
        dec.state[:] = 0
        dec.hist[:] = 0
        dec.svc = np.where(dec.rp == 443, S_SSL, S_NONE)
        truth = {"_rows": rows, "_decoys": decoys, "chains": chains, "_decoy_flows": dec}
        return planted, truth


# --------------------------------------------------------------------------- writing

def _uids(rng: np.random.Generator, n: int) -> pa.Array:
    """Zeek-like uids: 'C' and 17 base62 characters."""
    alphabet = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                             np.uint8)
    chars = np.empty((n, 18), np.uint8)
    chars[:, 0] = ord("C")
    chars[:, 1:] = alphabet[rng.integers(0, 62, (n, 17), dtype=np.uint8)]
    offsets = np.arange(0, 18 * (n + 1), 18, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Built:
    log: Path
    truth: Path
    flows: int
    bytes: int
    seconds: float
    cached: bool


def paths(workdir: Path, flows: int, seed: int) -> tuple[Path, Path]:
    stem = f"conn-{flows}-s{seed}-v{BUILD_VERSION}"
    return workdir / f"{stem}.log", workdir / f"{stem}.truth.json"


def build(workdir: Path, flows: int, seed: int = 1, rebuild: bool = False) -> Built:
    """The conn.log and its truth file for (flows, seed), from the cache when present."""
    log, truth_path = paths(workdir, flows, seed)
    if log.exists() and truth_path.exists() and not rebuild:
        return Built(log=log, truth=truth_path, flows=flows, bytes=log.stat().st_size,
                     seconds=0.0, cached=True)
    import duckdb

    workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    ips, internal = _addresses(rng)
    model = Model(rng)
    cols, truth = model.generate(flows)
    n = len(cols["ts"])
    # planted flows are the last rows before the sort: remember where they end up
    order = np.argsort(cols["ts"], kind="stable")
    uid_arr = _uids(rng, n)
    uid_np = np.asarray(uid_arr.to_numpy(zero_copy_only=False), dtype=object)
    n_dec = len(truth["_decoys"])
    n_pl = len(truth["_rows"])
    base = n - n_pl - n_dec
    pl_uids = uid_np[base:base + n_pl].tolist()
    dec_uids = uid_np[base + n_pl:].tolist()

    ip_dict = pa.array(ips, pa.string())
    dur = cols["dur"]
    tab = pa.table({
        "ts": cols["ts"], "uid": uid_arr,
        "oh": pa.DictionaryArray.from_arrays(pa.array(cols["oh"].astype(np.int32)), ip_dict),
        "op": cols["op"],
        "rh": pa.DictionaryArray.from_arrays(pa.array(cols["rh"].astype(np.int32)), ip_dict),
        "rp": cols["rp"],
        "proto": pa.DictionaryArray.from_arrays(pa.array(cols["proto"].astype(np.int32)),
                                                pa.array(PROTOS.tolist())),
        "svc": pa.DictionaryArray.from_arrays(pa.array(cols["svc"].astype(np.int32)),
                                              pa.array(SERVICES.tolist(), pa.string())),
        "dur": pa.array(dur, mask=np.isnan(dur)),
        "ob": pa.array(cols["ob"], mask=cols["ob"] < 0),
        "rb": pa.array(cols["rb"], mask=cols["rb"] < 0),
        "state": pa.DictionaryArray.from_arrays(pa.array(cols["state"].astype(np.int32)),
                                                pa.array(STATES.tolist())),
        "lo": internal[cols["oh"]], "lr": internal[cols["rh"]],
        "hist": pa.DictionaryArray.from_arrays(pa.array(cols["hist"].astype(np.int32)),
                                               pa.array(HISTORIES.tolist())),
        "ord": np.argsort(order),  # row position after sorting by ts
    })
    del cols, uid_np
    body = log.with_suffix(".body")
    con = duckdb.connect()
    con.register("f", tab)
    # packets and IP bytes follow the payload: ~1 segment per kB, 40 (TCP) / 28 (UDP) per packet
    con.execute(f"""
        COPY (
          SELECT ts::DECIMAL(16,6)::VARCHAR, uid, oh, op, rh, rp, proto, svc,
                 dur::DECIMAL(14,6)::VARCHAR, ob, rb, state,
                 CASE WHEN lo THEN 'T' ELSE 'F' END, CASE WHEN lr THEN 'T' ELSE 'F' END,
                 0, hist, op_pk, coalesce(ob, 0) + op_pk * hb, rp_pk, coalesce(rb, 0) + rp_pk * hb,
                 '(empty)'
          FROM (SELECT *, CASE WHEN ob IS NULL THEN 1 + op % 2 ELSE 1 + ob // 1000 END AS op_pk,
                       CASE WHEN rb IS NULL THEN 0 ELSE 1 + rb // 1200 END AS rp_pk,
                       CASE WHEN proto = 'udp' THEN 28 ELSE 40 END AS hb FROM f)
          ORDER BY ord
        ) TO '{body}' (FORMAT csv, DELIMITER '\t', HEADER false, NULLSTR '-', QUOTE '')""")
    con.close()
    tmp = log.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write(header("2026-11-20-00-00-00").encode())
        with body.open("rb") as fh:
            shutil.copyfileobj(fh, out, 1 << 24)
        out.write(b"#close\t2026-11-21-00-00-05\n")
    body.unlink()

    pairs = []
    rows = truth["_rows"]
    chains_out = []
    uid_of = {}
    for (_ts, _dur, oh, rh, rp, _ob, _rb, c, h), uid in zip(rows, pl_uids, strict=True):
        uid_of[(c, h)] = (uid, oh, rh, rp)
    for ch in truth["chains"]:
        c = ch["chain"]
        legs = [uid_of[(c, h)] for h in range(ch["flows"])]
        for h in range(ch["flows"] - 1):
            (iu, ioh, irh, irp), (ou, _ooh, orh, orp) = legs[h], legs[h + 1]
            pairs.append({"in_uid": iu, "out_uid": ou, "client": ips[ioh], "relay": ips[irh],
                          "in_port": irp, "upstream": ips[orh], "up_port": orp, "chain": c})
        chains_out.append({"chain": c, "ips": [ips[i] for i in ch["ips_idx"]],
                           "uids": [leg[0] for leg in legs], "via_server": ch["via_server"]})
    decoys = []
    for i in range(0, len(dec_uids), 2):
        d = truth["_decoys"][i]
        decoys.append({"in_uid": dec_uids[i], "out_uid": dec_uids[i + 1],
                       "kind": "late" if d[9] else "bytes", "relay": ips[d[3]]})
    out_truth = {
        "flows": n, "seed": seed, "build_version": BUILD_VERSION,
        "proxies": PROXIES, "resolvers": RESOLVERS, "smb": SMB, "dcs": DCS, "dmz": DMZ,
        "pairs": pairs, "chains": chains_out, "decoys": decoys,
    }
    truth_tmp = truth_path.with_suffix(".tmp")
    truth_tmp.write_text(json.dumps(out_truth, indent=1))
    truth_tmp.replace(truth_path)
    tmp.replace(log)
    return Built(log=log, truth=truth_path, flows=n, bytes=log.stat().st_size,
                 seconds=round(time.perf_counter() - t, 2), cached=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path,
                    default=Path(os.environ.get("TMPDIR", "/tmp")) / "hopguard-bench-hunt")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    b = build(args.out, args.flows, args.seed, args.rebuild)
    print(f"{b.log}: {b.flows:,} flows, {b.bytes / 1e6:,.0f} MB "
          f"({'cached' if b.cached else f'built in {b.seconds:.1f} s'}); truth {b.truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
