"""The proxy detectors on the public corpus: every SOCKS and CONNECT handshake that an oracle
describes must come out as a proxy.* finding naming the same client, proxy and target.

Oracles (read by tests/corpus/oracles.py, independently of hopguard):

* tshark 4.0.17 (``derived/wireshark-4.0.17``): the first SOCKS request of each SOCKS
  connection (``*.socks.tsv``) and every CONNECT request (``*.http.tsv``);
* Zeek baselines: socks.log (request.host/name, request_p), http.log CONNECT rows, and
  tunnel.log Tunnel::SOCKS / Tunnel::HTTP discoveries (those name only the proxy);
* Arkime sessions with ``socks`` (host or ip, port).

Each capture is ingested into its own in-memory store and analysed with the default settings
(``--detector proxy``), so findings of one capture cannot satisfy another's expectations. A
second check goes the other way: every SOCKS/CONNECT row the engine put in the proxy table of
these captures (plus the corpus's other captures named after SOCKS, CONNECT or proxies) has a
finding naming its target. A third: where a capture holds both legs of a proxied connection
(found here with plain SQL), bridge.relay names the proxy as the relay between them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hopguard.analytics.proxies import target_text
from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store
from tests.conftest import PUBLIC_CORPUS
from tests.corpus import oracles as o
from tests.corpus.oracles import Conn, norm_ip
from tests.unit.analytics.util import findings, run

pytestmark = pytest.mark.corpus

TSHARK = "derived/wireshark-4.0.17"
HANDSHAKE_DETECTORS = ("proxy.socks", "proxy.connect", "proxy.forward")
# captures named after proxies that no oracle above describes (checked for coverage only)
EXTRA = ("ja4/pcap/socks4-https.pcap", "zeek/testing/btest/Traces/http/proxy.pcap",
         "ndpi/tests/cfgs/default/pcap/http-proxy.pcapng")


@dataclass(frozen=True, slots=True)
class Expected:
    oracle: str
    capture: Path
    conn: Conn | None  # client -> proxy (None: the oracle names only the proxy)
    proxy: tuple[str, int] | None
    host: str | None
    port: int | None


@dataclass(slots=True)
class Analysed:
    findings: list[dict[str, Any]]
    proxy_rows: list[dict[str, Any]]


def _zint(v: str | None) -> int | None:
    return int(v) if v and v.isdigit() else None


def expectations(root: Path) -> list[Expected]:
    out: list[Expected] = []
    for cap, kinds in o.tshark_tables(root / TSHARK, root).items():
        if "socks" in kinds:
            for h in o.socks_handshakes(o.tshark_socks(kinds["socks"])):
                out.append(Expected("tshark socks", cap, h.conn, None,
                                    h.target_host or h.target_ip, h.target_port))
        if "http" in kinds:
            for r in o.tshark_http(kinds["http"]):
                if r.method == "CONNECT":
                    host, port = o.authority(r.uri)
                    out.append(Expected("tshark CONNECT", cap, r.conn, None, host, port))
    for b in o.zeek_baselines(root / "zeek/testing/btest"):
        if "socks" in b.logs:
            for z in o.read_zeek_log(b.logs["socks"]):
                out.append(Expected("zeek socks.log", b.trace, o.zeek_conn(z, "tcp"), None,
                                    z.get("request.name") or z.get("request.host"),
                                    _zint(z.get("request_p"))))
        if "http" in b.logs:
            for z in o.read_zeek_log(b.logs["http"]):
                if z.get("method") == "CONNECT":
                    host, port = o.authority(z.get("uri"))
                    out.append(Expected("zeek http.log CONNECT", b.trace,
                                        o.zeek_conn(z, "tcp"), None, host, port))
        if "tunnel" in b.logs:
            for z in o.read_zeek_log(b.logs["tunnel"]):
                if z.get("tunnel_type") in ("Tunnel::SOCKS", "Tunnel::HTTP") and \
                        z.get("action") == "Tunnel::DISCOVER":
                    out.append(Expected("zeek tunnel.log", b.trace, None,
                                        (norm_ip(z["id.resp_h"] or ""),
                                         _zint(z["id.resp_p"]) or 0), None, None))
    for test in sorted((root / "arkime/tests/pcap").glob("*.test")):
        cap = test.with_suffix(".pcap")
        if not cap.is_file():
            continue
        for s in o.arkime_sessions(test):
            if s.socks:
                out.append(Expected("arkime socks", cap, s.conn, None,
                                    s.socks.get("host") or s.socks.get("ip"),
                                    s.socks.get("port")))
    return out


@pytest.fixture(scope="module")
def corpus_root() -> Path:
    if not PUBLIC_CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"public corpus missing at {PUBLIC_CORPUS} (CI must have ../shared)")
        pytest.skip(f"public corpus not found at {PUBLIC_CORPUS} (set HOPGUARD_CORPUS)")
    return PUBLIC_CORPUS


@pytest.fixture(scope="module")
def analysed(corpus_root: Path) -> Iterator[dict[Path, Analysed]]:
    """Captures analysed on demand, one store each."""

    class Lazy(dict[Path, Analysed]):
        def __missing__(self, cap: Path) -> Analysed:
            store = Store.open(":memory:")
            try:
                ingest_file(store, cap, sensor="corpus")
                run(store, "proxy")
                got = Analysed(findings(store, "proxy."), store.query(
                    "SELECT * FROM proxy WHERE protocol LIKE 'socks%' OR protocol LIKE 'http%'"
                ).to_pylist())
            finally:
                store.close()
            self[cap] = got
            return got

    yield Lazy()


def _matches(f: dict[str, Any], conn: Conn | None, proxy: tuple[str, int] | None,
             host: str | None, port: int | None) -> bool:
    e = f["entities"]
    if f["detector"] not in HANDSHAKE_DETECTORS:
        return False
    if proxy is not None and (norm_ip(str(e.get("proxy"))), e.get("port")) != proxy:
        return False
    if conn is not None:
        ends = {(norm_ip(str(e.get("client"))), norm_ip(str(e.get("proxy"))), e.get("port"))}
        if not ends & {(conn.src_ip, conn.dst_ip, conn.dst_port),
                       (conn.dst_ip, conn.src_ip, conn.src_port)}:
            return False
    if host is None and port is None:
        return True
    if host is None:  # tshark 4.0's socks.dst holds IPv4 only: an IPv6 target is port-only
        return str(e.get("target", "")).endswith(f":{port}")
    want = target_text(str(host).lower() if host else None, port)
    return bool(e.get("target") == want or (
        host and e.get("target_ip") and norm_ip(str(e["target_ip"])) == norm_ip(str(host))
        and e.get("target", "").endswith(f":{port}")))


def test_every_oracle_handshake_has_a_proxy_finding(corpus_root: Path,
                                                    analysed: dict[Path, Analysed]) -> None:
    exps = expectations(corpus_root)
    missing = []
    by_oracle: dict[str, int] = {}
    port_only = 0
    for x in exps:
        by_oracle[x.oracle] = by_oracle.get(x.oracle, 0) + 1
        port_only += x.conn is not None and x.host is None
        got = analysed[x.capture].findings
        if not any(_matches(f, x.conn, x.proxy, x.host, x.port) for f in got):
            missing.append(f"{x.oracle} {x.capture.relative_to(corpus_root)} {x.conn} "
                           f"target {x.host}:{x.port}; findings: "
                           f"{[(f['detector'], f['entities'].get('target')) for f in got]}")
    caps = {x.capture for x in exps}
    print(f"\nproxy findings vs oracles: {len(caps)} captures, {len(exps)} handshakes "
          f"({', '.join(f'{k} {v}' for k, v in sorted(by_oracle.items()))}), "
          f"{len(missing)} without a matching finding; {port_only} compared on the port only "
          "(the oracle gives no target address)")
    assert not missing, "\n".join(missing)
    assert len(caps) >= 15 and len(exps) >= 25
    assert by_oracle.get("tshark socks", 0) >= 6 and by_oracle.get("tshark CONNECT", 0) >= 6
    assert by_oracle.get("zeek socks.log", 0) >= 5 and by_oracle.get("arkime socks", 0) >= 2


def test_every_proxy_row_is_reported_with_its_target(corpus_root: Path,
                                                     analysed: dict[Path, Analysed]) -> None:
    caps = sorted({x.capture for x in expectations(corpus_root)}
                  | {corpus_root / p for p in EXTRA if (corpus_root / p).is_file()})
    rows = 0
    missing = []
    for cap in caps:
        a = analysed[cap]
        for r in a.proxy_rows:
            rows += 1
            host = r["target_host"] or r["target_ip"]
            conn = Conn.of("tcp", r["src_ip"] or "", r["src_port"] or 0, r["dst_ip"] or "",
                           r["dst_port"] or 0) if r["src_ip"] and r["dst_ip"] else None
            if not any(_matches(f, conn, None, host, r["target_port"]) for f in a.findings):
                missing.append(f"{cap.relative_to(corpus_root)} {r['protocol']} {conn} -> "
                               f"{host}:{r['target_port']}")
    print(f"\n{len(caps)} captures, {rows} SOCKS/CONNECT/forward rows in the proxy table, "
          f"{len(missing)} without a finding")
    assert not missing, "\n".join(missing)
    assert rows >= 18
    # a plain handshake on a web port through a proxy on a usual port stays below medium
    for a in analysed.values():
        for f in a.findings:
            if f["detector"] in HANDSHAKE_DETECTORS and f["entities"]["target"].endswith(":443") \
                    and f["entities"]["port"] in (1080, 3128, 8080):
                assert f["severity"] in ("info", "low"), f


def _second_legs(store: Store) -> list[dict[str, Any]]:
    """Handshakes whose onward leg is in the same capture: a flow from the proxy to the target
    (by address, or by a name the capture's DNS answers resolve) that starts within 2 s after
    the client's connection, while it is open. Found with plain SQL over the stored rows,
    independently of the relay detector."""
    return store.query("""
        WITH names AS (SELECT DISTINCT lower(query) AS name, unnest(answers) AS ip FROM dns
                       WHERE answers IS NOT NULL),
             hs AS (SELECT p.uid, p.src_ip, p.dst_ip, p.dst_port, p.target_port,
                           coalesce(p.target_ip, n.ip, p.target_host) AS target
                    FROM proxy p LEFT JOIN names n ON n.name = lower(p.target_host)
                    WHERE p.outcome = 'succeeded' OR starts_with(p.outcome, '200'))
        SELECT DISTINCT hs.src_ip AS client, hs.dst_ip AS relay, hs.dst_port AS in_port,
               o.dst_ip AS upstream, o.dst_port AS up_port
        FROM hs JOIN flow i ON i.uid = hs.uid
        JOIN flow o ON o.src_ip = hs.dst_ip AND o.dst_ip = hs.target
                   AND o.dst_port = hs.target_port AND o.uid <> i.uid
        WHERE epoch(o.ts) BETWEEN epoch(i.ts) AND epoch(i.ts) + 2
          AND epoch(o.ts) <= epoch(i.ts) + coalesce(i.duration, 0)
          AND i.src_bytes > 0""").to_pylist()


def test_both_legs_in_one_capture_make_a_relay(corpus_root: Path) -> None:
    """Where a capture holds both legs of a proxied connection (client -> proxy and proxy ->
    target), bridge.relay names the proxy as a relay between the two."""
    caps = sorted({x.capture for x in expectations(corpus_root)}
                  | {corpus_root / p for p in EXTRA if (corpus_root / p).is_file()})
    checked, missing = 0, []
    for cap in caps:
        store = Store.open(":memory:")
        try:
            ingest_file(store, cap, sensor="corpus")
            legs = _second_legs(store)
            if not legs:
                continue
            run(store, "bridge")
            got = {(f["entities"]["relay"], f["entities"]["client"], f["entities"]["in_port"],
                    f["entities"]["upstream"], f["entities"]["up_port"])
                   for f in findings(store, "bridge.relay")}
        finally:
            store.close()
        for leg in legs:
            checked += 1
            key = (leg["relay"], leg["client"], leg["in_port"], leg["upstream"], leg["up_port"])
            if key not in got:
                missing.append(f"{cap.relative_to(corpus_root)}: {key}; relays found: {got}")
    print(f"\n{checked} proxied connections with both legs in the capture, {len(missing)} "
          "without a relay finding")
    assert not missing, "\n".join(missing)
    assert checked >= 2  # zeek socks-auth.pcap and socks-auth-10080.pcap: connect-back
