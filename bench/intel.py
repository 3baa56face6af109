"""Threat-intel import and matching at scale, against DuckDB's own raw scan of the same data.

Theory of operation. The script writes two feeds: an IP list of N addresses and networks
(default 1,000,000: 95% single IPv4 addresses, 4% IPv4 networks of /8 to /31, 1% IPv6
addresses and networks; comments and a few broken lines among them) and a domain list of N names
(plain, ``*.`` wildcards and ``.`` suffixes). ``hopguard.intel.store.import_feed`` imports both
into a fresh store; the reference is DuckDB reading the same two files into a table
(``read_csv`` of whole lines: no validation, no canonical form, no upsert), timed side by side.

Then F flows (default 5,000,000) are generated in the store's ``flow`` table by DuckDB: 20,000
internal clients towards 200,000 external addresses (Zipf-like popularity), a known share of
which the IP feed lists (as addresses or inside its networks). The matching step of
the intel detectors (``analytics.intel.prepare``: every address of flow and proxy rows, every
SNI, Host, DNS question and answer, every fingerprint against the store, joined back to the
rows they came from) is timed on its own, then the whole ``hopguard analyze -d intel`` (findings
built, stored and correlated); the reference is DuckDB's raw scan of the flow table (every
flow's addresses read once, ``count(DISTINCT ...)``). The listed addresses the findings name
must equal those a brute-force check finds (every distinct external address tested with
``ipaddress`` against the feed's networks and a set of its addresses).

The in-process matcher (``IntelIndex``, for the inline paths) is built over every stored
indicator and timed per lookup on 200,000 addresses and names, beside a plain dict lookup.

Usage: python bench/intel.py [--indicators N] [--flows F] [--json OUT] [--keep DIR]
Exit status: 0 when import <= 10 s, matching <= 5 s and the matches are exact; 1 otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

# Run as a script, this file's directory is sys.path[0], and bench/sigma.py would shadow
# pySigma's `sigma` package (the analytics import it): drop that entry first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from hopguard.analytics import intel as intel_detectors  # noqa: E402
from hopguard.analytics.base import Context, Inventory  # noqa: E402
from hopguard.analytics.run import analyze  # noqa: E402
from hopguard.config import load_settings  # noqa: E402
from hopguard.intel.feeds import FeedOptions  # noqa: E402
from hopguard.intel.match import IntelIndex  # noqa: E402
from hopguard.intel.store import import_feed  # noqa: E402
from hopguard.store import Store  # noqa: E402

IMPORT_GOAL = 10.0
MATCH_GOAL = 5.0
EXTERNAL = 200_000
INTERNAL = 20_000
LISTED_SHARE = 0.01  # of the external addresses, listed in the feed (as address or network)


def write_feeds(directory: Path, n: int, rnd: random.Random) -> tuple[Path, Path, list[str]]:
    """The IP and domain feeds; returns their paths and the external addresses flows use."""
    ips = directory / "ip-blocklist.txt"
    doms = directory / "domain-blocklist.txt"
    external = [f"{rnd.randint(11, 99)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}."
                f"{rnd.randint(1, 254)}" for _ in range(EXTERNAL)]
    listed = rnd.sample(external, int(EXTERNAL * LISTED_SHARE))  # any popularity
    lines = ["# generated IP feed: addresses and networks", *listed[: len(listed) // 2]]
    for addr in listed[len(listed) // 2:]:  # the other half listed through a network
        plen = rnd.choice((16, 20, 24, 28, 30))
        lines.append(str(ipaddress.ip_network(f"{addr}/{plen}", strict=False)))
    n_v4_nets, n_v6 = int(n * 0.04), int(n * 0.01)
    while len(lines) < n - n_v4_nets - n_v6:  # addresses nobody in the flows uses
        lines.append(f"{rnd.randint(100, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}."
                     f"{rnd.randint(1, 254)}")
    for _ in range(n_v4_nets):
        plen = rnd.randint(8, 31)
        lines.append(str(ipaddress.ip_network(
            f"{rnd.randint(100, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.0/{plen}",
            strict=False)))
    for i in range(n_v6):
        base = f"2001:db8:{i % 65536:x}:{rnd.randint(0, 65535):x}::"
        lines.append(f"{base}{rnd.randint(1, 65535):x}" if i % 3 else f"{base}/64")
    lines[1000:1000] = ["not an address", "10.0.0.0/40"]  # located errors, the rest imported
    ips.write_text("\n".join(lines) + "\n")
    words = ("cdn", "api", "mail", "update", "static", "login", "img", "files", "sync", "edge")
    dl = ["# generated domain feed"]
    for i in range(n):
        name = f"{rnd.choice(words)}{i}.{rnd.choice(words)}-{i % 9973}.example"
        dl.append(("*." if i % 5 == 0 else "." if i % 7 == 0 else "") + name)
    doms.write_text("\n".join(dl) + "\n")
    return ips, doms, external


def make_flows(store: Store, external: list[str], flows: int, seed: int) -> None:
    con = store.con
    con.execute("CREATE TEMP TABLE ext AS SELECT row_number() OVER () - 1 AS i, ip "
                "FROM (SELECT unnest($ips) AS ip)", {"ips": external})
    con.execute(f"""
        INSERT INTO flow BY NAME
        SELECT TIMESTAMP '2026-11-20 00:00:00' + to_microseconds((g * 17)::BIGINT) AS ts,
               'bench' AS sensor, 'F' || g AS uid,
               '10.' || (c // 65536) || '.' || ((c // 256) % 256) || '.' || (c % 256) AS src_ip,
               40000 + g % 20000 AS src_port, e.ip AS dst_ip, 443 AS dst_port, 'tcp' AS proto,
               800 AS src_bytes, 5000 AS dst_bytes
        FROM (SELECT g, (hash(g * 7 + {seed}) % {INTERNAL})::BIGINT AS c,
                     -- popularity skewed towards low indices (x^3 on a uniform draw)
                     (pow((hash(g + {seed}) % 1000000) / 1000000.0, 3) * {EXTERNAL})::BIGINT
                         AS e
              FROM range({flows}) t(g)) f
        JOIN ext e ON e.i = f.e
        """)
    con.execute("DROP TABLE ext")


def brute_force(store: Store, ip_feed: Path) -> set[str]:
    """Distinct destination addresses any feed line covers, by ipaddress and a set."""
    singles: set[str] = set()
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in ip_feed.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            if "/" in line:
                nets.append(ipaddress.ip_network(line, strict=False))
            else:
                singles.add(str(ipaddress.ip_address(line)))
        except ValueError:
            continue
    by_len: dict[int, set[int]] = {}
    for net in nets:
        if net.version == 4:
            by_len.setdefault(net.prefixlen, set()).add(int(net.network_address))
    hit = set()
    for (ip,) in store.con.execute("SELECT DISTINCT dst_ip FROM flow").fetchall():
        if ip in singles:
            hit.add(ip)
            continue
        x = int(ipaddress.IPv4Address(ip))
        if any((x >> (32 - plen)) << (32 - plen) in keys for plen, keys in by_len.items()):
            hit.add(ip)
    return hit


def lookups(store: Store, external: list[str], rnd: random.Random, res: dict[str, Any],
            n: int = 200_000) -> None:
    """The in-process matcher (what the gateway and the IPS call per connection): build time
    over every stored indicator and microseconds per lookup, beside a plain dict lookup of the
    same strings (the floor: no networks, no suffixes)."""
    t = time.perf_counter()
    index = IntelIndex.from_table(store.query("SELECT * FROM indicator"))
    res["index_build_s"] = time.perf_counter() - t
    addrs = [rnd.choice(external) for _ in range(n)]
    names = [f"x.api{i}.cdn-{i % 9973}.example" for i in range(n)]
    plain = {a: True for a in external[::2]}
    for label, queries, fn in (("ip", addrs, index.ip), ("domain", names, index.domain)):
        for q in queries[:1000]:  # first hits build their Hit once
            fn(q)
        t = time.perf_counter()
        hits = sum(1 for q in queries if fn(q))
        res[f"lookup_{label}_us"] = (time.perf_counter() - t) / n * 1e6
        res[f"lookup_{label}_hits"] = hits
    t = time.perf_counter()
    sum(1 for q in addrs if q in plain)
    res["dict_lookup_us"] = (time.perf_counter() - t) / n * 1e6
    print(f"in-process index over {len(index):,} indicators built in "
          f"{res['index_build_s']:.2f} s; lookups: IP {res['lookup_ip_us']:.2f} us "
          f"({res['lookup_ip_hits']:,} hits of {n:,}), domain {res['lookup_domain_us']:.2f} us "
          f"({res['lookup_domain_hits']:,} hits); a plain dict lookup "
          f"{res['dict_lookup_us']:.2f} us")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--indicators", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="Write the feeds and the store here.")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="hopguard-bench-intel-")
    work = args.keep or Path(tmp_ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"indicators": args.indicators, "flows": args.flows}

    t = time.perf_counter()
    ip_feed, dom_feed, external = write_feeds(work, args.indicators, rnd)
    print(f"feeds written in {time.perf_counter() - t:.1f} s: {ip_feed}, {dom_feed}")

    ref = duckdb.connect()
    t = time.perf_counter()
    for path in (ip_feed, dom_feed):
        ref.execute("CREATE OR REPLACE TABLE raw AS SELECT * FROM read_csv(?, header=false, "
                    "columns={'line': 'VARCHAR'}, delim='\\0', quote='', escape='')",
                    [str(path)])
    res["duckdb_read_s"] = time.perf_counter() - t
    ref.close()

    store = Store.open(work / "bench.duckdb" if args.keep else ":memory:")
    t = time.perf_counter()
    s_ip = import_feed(store, ip_feed, fmt="ip-list", options=FeedOptions(category="c2",
                                                                          confidence=0.9))
    s_dom = import_feed(store, dom_feed, fmt="domain-list", options=FeedOptions(category="ioc"))
    res["import_s"] = time.perf_counter() - t
    res["import_ip_s"], res["import_domain_s"] = s_ip.seconds, s_dom.seconds
    res["stored"] = s_ip.added + s_dom.added
    res["import_errors"] = s_ip.errors + s_dom.errors
    print(s_ip.line())
    print(s_dom.line())
    t = time.perf_counter()  # a newer copy of the same feed: every row updated, none added
    again = import_feed(store, ip_feed, fmt="ip-list", options=FeedOptions(category="c2",
                                                                           confidence=0.8))
    res["reimport_ip_s"] = time.perf_counter() - t
    res["reimport_exact"] = (again.added, again.updated) == (0, s_ip.added)
    print(f"re-import: {again.line()}")

    t = time.perf_counter()
    make_flows(store, external, args.flows, args.seed)
    print(f"{args.flows:,} flows generated in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    store.con.execute("SELECT count(DISTINCT src_ip), count(DISTINCT dst_ip), count(*) "
                      "FROM flow").fetchall()
    res["duckdb_scan_s"] = time.perf_counter() - t

    lookups(store, external, rnd, res)

    settings = load_settings(None, ("intel.seeds=false", "analyze.max_evidence=1"),
                             environ={}, layers=[])
    inventory = Inventory.from_settings(settings)
    inventory.define_macros(store.con)
    ctx = Context(con=store.con, settings=settings, inventory=inventory)
    t = time.perf_counter()
    intel_detectors.prepare(ctx)  # every flow, proxy, TLS, HTTP, DNS value matched
    res["match_s"] = time.perf_counter() - t
    res["observations"] = store.con.execute(
        f"SELECT count(*) FROM {intel_detectors.OBS}").fetchall()[0][0]
    t = time.perf_counter()
    report = analyze(store, settings, detectors=["intel"])
    res["detectors_s"] = time.perf_counter() - t
    assert not report.failed, report.failed
    rows = store.query("SELECT entities, evidence FROM finding WHERE detector = 'intel.ioc'"
                       ).to_pylist()
    res["findings"] = len(rows)
    matched = {json.loads(r["entities"])["indicator"] for r in rows}
    cited = store.con.execute(
        "SELECT count(*) FROM flow WHERE dst_ip IN (SELECT unnest($m))",
        {"m": sorted(matched)}).fetchall()[0][0]
    res["matched_addresses"], res["matched_flows"] = len(matched), int(cited)
    expected = brute_force(store, ip_feed)
    res["expected_addresses"] = len(expected)
    res["exact"] = matched == expected
    store.close()
    tmp_ctx.cleanup()

    ok = res["import_s"] <= IMPORT_GOAL and res["match_s"] <= MATCH_GOAL and res["exact"] \
        and res["import_errors"] == 2 and res["reimport_exact"]
    print(f"import {args.indicators:,} IPs + {args.indicators:,} domains: "
          f"{res['import_s']:.2f} s (goal {IMPORT_GOAL} s; DuckDB reading the same lines "
          f"{res['duckdb_read_s']:.2f} s, {res['import_s'] / res['duckdb_read_s']:.1f}x); "
          f"{res['stored']:,} stored, {res['import_errors']} broken lines reported")
    print(f"match {args.flows:,} flows: {res['match_s']:.2f} s (goal {MATCH_GOAL} s; DuckDB "
          f"raw scan {res['duckdb_scan_s']:.2f} s, {res['match_s'] / res['duckdb_scan_s']:.1f}x)"
          f"; {res['observations']:,} flows matched; all intel.* detectors with their "
          f"{res['findings']:,} findings {res['detectors_s']:.2f} s; "
          f"{res['matched_addresses']:,} listed addresses in {res['matched_flows']:,} flows; "
          f"brute force {res['expected_addresses']:,}: "
          f"{'identical' if res['exact'] else 'DIFFERENT'}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
