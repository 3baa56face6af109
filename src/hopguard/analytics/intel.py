"""Threat-intel detectors: stored telemetry that touches what the indicator store knows.

Theory of operation: the indicators of every imported feed (and, with ``intel.seeds``, the
shipped seed lists) are copied once per run into a temp table; the distinct addresses, names and
fingerprints of the network tables are matched against it with the vectorised matchers of
``intel.sql`` (hash joins on canonical values, equi-joins per CIDR prefix length, suffix joins
for domains). Only the matched values are joined back to the rows they came from, so the cost
follows the number of distinct values, not rows. Each observation is

- a flow to an indicated address (the client is its source), or *from* one to an internal
  server (inbound, with ``intel.inbound``);
- a proxy handshake whose target is an indicated address or name (the CONNECT through the
  site's proxy says where the client really went);
- a TLS SNI, an HTTP Host or a DNS question naming an indicated domain, or a DNS answer that is
  an indicated address;
- a TLS client (JA3, JA4) or server (JA3S) fingerprint an imported feed lists.

An observation counts while the indicator is valid: an event before the indicator's expiry (plus
``intel.expiry_grace``) matches, later ones do not. Observations are grouped per (family,
client, matched value, direction) into one finding, with every feed that lists the value, its
confidence and its source. The family decides the detector and the technique:

``intel.tor``          Tor relays and exits (T1090.003)
``intel.vpn``          VPN and anonymising proxy services (T1090.002)
``intel.tunnel``       tunnel and reverse-proxy services from imported feeds (T1572)
``intel.ioc``          any other indicator: C2 servers, malicious domains (T1090)
``intel.fingerprint``  fingerprints imported feeds list (T1090)

The seed lists' tunnel services, CDN domains and fingerprint priors are left to tunnel.service,
fronting.* and tunnel.fingerprint, which already report them; CDN indicators are context (where
fronting happens), never a finding on their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hopguard.analytics.base import (
    Action,
    Context,
    Finding,
    Mitigation,
    detector,
    severity_for,
    ts_of,
)
from hopguard.analytics.tunnels import (
    actions,
    clean_list,
    evidence_of,
    name_sql,
    nft_drop,
    sid_for,
)
from hopguard.intel import sql as isql
from hopguard.intel.model import as_indicator_rows
from hopguard.intel.seeds import seed_indicators

IND = "hg_intel_ind"
ADDR = "hg_intel_addr"
NAMES = "hg_intel_names"
HASHES = "hg_intel_hashes"
OBS = "hg_intel_obs"
DONE = "intel.prepared"

# Detector per indicator family: (technique, strategy, weight on the feed's confidence).
FAMILIES: dict[str, tuple[str, str, float]] = {
    "tor": ("T1090.003", "DET0359/AN1024", 1.0),
    "vpn": ("T1090.002", "DET0325/AN0926", 0.75),
    "tunnel": ("T1572", "DET0325/AN0926", 0.85),
    "ioc": ("T1090", "DET0445/AN1233", 1.0),
    "fingerprint": ("T1090", "DET0445/AN1233", 0.6),
}
FAMILY_SQL = """CASE
    WHEN i.kind IN ('ja3', 'ja3s', 'ja4') THEN 'fingerprint'
    WHEN i.category IN ('tor_relay', 'tor_exit') THEN 'tor'
    WHEN i.category IN ('vpn', 'proxy') THEN 'vpn'
    WHEN i.category = 'tunnel' THEN 'tunnel'
    ELSE 'ioc' END"""
INBOUND_WEIGHT = 0.5  # somebody reaching an internal server from an exit or a VPN
LOOKUP_ONLY_WEIGHT = 0.8  # DNS lookups and no connection seen
EVIDENCE_PULL = 200


def prepare(ctx: Context) -> bool:
    """Build the run's indicator and match tables once; False when there is nothing to match."""
    if DONE in ctx.cache:
        return bool(ctx.cache[DONE])
    s = ctx.settings.intel
    con = ctx.con
    isql.prepare(con)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {IND} AS
        SELECT id, feed, kind, value, prefix, match, category, label, confidence, source,
               expires, detail FROM indicator WHERE confidence >= $min AND category <> 'cdn'
        """, {"min": s.min_confidence})
    if s.seeds:
        con.register("_hg_seed", as_indicator_rows(seed_indicators(), "seed"))
        try:
            con.execute(f"""
                INSERT INTO {IND} BY NAME
                SELECT id, feed, kind, value, prefix, match, category, label, confidence, source,
                       expires, detail
                FROM _hg_seed
                WHERE confidence >= $min AND category NOT IN ('cdn', 'tunnel')
                  AND kind NOT IN ('ja3', 'ja3s', 'ja4')
                  AND NOT (kind = 'domain' AND value = 'onion')  -- tunnel.tor reports those
                """, {"min": s.min_confidence})
        finally:
            con.unregister("_hg_seed")
    if not con.execute(f"SELECT count(*) FROM {IND}").fetchall()[0][0]:
        ctx.cache[DONE] = False
        return False
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {ADDR} AS
        {isql.ip_matches_sql('''(SELECT DISTINCT ip FROM (
            SELECT src_ip AS ip FROM flow UNION ALL SELECT dst_ip FROM flow
            UNION ALL SELECT target_ip FROM proxy
            UNION ALL SELECT unnest(answers) FROM dns) WHERE ip IS NOT NULL)''', IND)}
        """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {NAMES} AS
        {isql.domain_matches_sql(f'''(SELECT DISTINCT name FROM (
            SELECT {name_sql('sni')} AS name FROM tls UNION ALL SELECT {name_sql('host')} FROM http
            UNION ALL SELECT {name_sql('query')} FROM dns
            UNION ALL SELECT {name_sql('target_host')} FROM proxy) WHERE name IS NOT NULL)''',
            IND)}
        """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {HASHES} AS
        {isql.hash_matches_sql('''(SELECT DISTINCT lower(value) AS value FROM (
            SELECT ja3 AS value FROM tls UNION ALL SELECT ja4 FROM tls
            UNION ALL SELECT ja3s FROM tls) WHERE value IS NOT NULL)''',
            ("ja3", "ja3s", "ja4"), IND)}
        """)
    _observations(ctx)
    ctx.cache[DONE] = True
    return True


def _observations(ctx: Context) -> None:
    """Every stored row that touches a matched value, with the indicator it matched."""
    inbound = ctx.settings.intel.inbound
    ctx.execute(f"""
        CREATE OR REPLACE TEMP TABLE {OBS} AS
        WITH raw AS (
            SELECT 'flow' AS tbl, f.uid, f.ts, f.src_ip AS client, f.dst_ip AS server,
                   f.dst_port AS port, 'out' AS dir, f.dst_ip AS observed, m.id,
                   'flow ' || f.src_ip || ' -> ' || f.dst_ip || ':' || coalesce(f.dst_port, 0)
                       || coalesce(' ' || f.service, '') AS summary
            FROM flow f JOIN {ADDR} m ON m.ip = f.dst_ip
            UNION ALL
            SELECT 'flow', f.uid, f.ts, f.src_ip, f.dst_ip, f.dst_port, 'in', f.src_ip, m.id,
                   'flow ' || f.src_ip || ' -> ' || f.dst_ip || ':' || coalesce(f.dst_port, 0)
                       || coalesce(' ' || f.service, '')
            FROM flow f JOIN {ADDR} m ON m.ip = f.src_ip
            WHERE {'true' if inbound else 'false'} AND hg_internal(f.dst_ip)
              AND NOT hg_internal(f.src_ip)
            UNION ALL
            SELECT 'proxy', p.uid, p.ts, p.src_ip, p.target_ip, p.target_port, 'out',
                   p.target_ip, m.id,
                   upper(p.protocol) || ' ' || p.src_ip || ' via ' || p.dst_ip || ' to '
                       || p.target_ip || ':' || coalesce(p.target_port, 0)
            FROM proxy p JOIN {ADDR} m ON m.ip = p.target_ip
            UNION ALL
            SELECT 'proxy', p.uid, p.ts, p.src_ip, coalesce(p.target_ip, n.name),
                   p.target_port, 'out', n.name, n.id,
                   upper(p.protocol) || ' ' || p.src_ip || ' via ' || p.dst_ip || ' to '
                       || n.name || ':' || coalesce(p.target_port, 0)
            FROM proxy p JOIN {NAMES} n ON n.name = {name_sql('p.target_host')}
            UNION ALL
            SELECT 'tls', t.uid, t.ts, t.src_ip, t.dst_ip, t.dst_port, 'out', n.name, n.id,
                   'TLS SNI ' || n.name || ' -> ' || t.dst_ip || ':' || coalesce(t.dst_port, 0)
            FROM tls t JOIN {NAMES} n ON n.name = {name_sql('t.sni')}
            UNION ALL
            SELECT 'http', h.uid, h.ts, h.src_ip, h.dst_ip, h.dst_port, 'out', n.name, n.id,
                   'HTTP ' || coalesce(h.method, '') || ' Host ' || n.name || ' -> '
                       || h.dst_ip || ':' || coalesce(h.dst_port, 0)
            FROM http h JOIN {NAMES} n ON n.name = {name_sql('h.host')}
            UNION ALL
            SELECT 'dns', d.uid, d.ts, coalesce(d.src_ip, d.host), NULL, NULL, 'lookup',
                   n.name, n.id, 'DNS ' || n.name || coalesce(' via ' || d.dst_ip, '')
            FROM dns d JOIN {NAMES} n ON n.name = {name_sql('d.query')}
            UNION ALL
            SELECT 'dns', a.uid, a.ts, a.client, NULL, NULL, 'lookup', a.answer, m.id,
                   'DNS ' || coalesce(a.query, '?') || ' answered ' || a.answer
            FROM (SELECT uid, ts, coalesce(src_ip, host) AS client, query,
                         unnest(answers) AS answer FROM dns) a
            JOIN {ADDR} m ON m.ip = a.answer
            UNION ALL
            SELECT 'tls', t.uid, t.ts, t.src_ip, t.dst_ip, t.dst_port, 'out', hm.value, hm.id,
                   'TLS fingerprint ' || hm.value || ' ' || t.src_ip || ' -> ' || t.dst_ip
                       || ':' || coalesce(t.dst_port, 0)
            FROM tls t JOIN {HASHES} hm
              ON hm.value IN (lower(t.ja3), lower(t.ja4), lower(t.ja3s))
        )
        SELECT r.*, {FAMILY_SQL} AS family, i.feed, i.kind, i.value, i.match, i.category,
               i.label, i.confidence, i.source, i.expires
        FROM raw r JOIN {IND} i USING (id)
        WHERE r.ts IS NOT NULL AND r.client IS NOT NULL
          AND (i.expires IS NULL OR r.ts <= i.expires + to_microseconds(?))
        """, [int(ctx.settings.intel.expiry_grace * 1e6)])


def _groups(ctx: Context, family: str) -> list[dict[str, Any]]:
    """One row per (client, matched value, direction); a value more than
    ``intel.max_clients`` clients touched is one row for all of them (client NULL)."""
    return ctx.rows(f"""
        WITH o0 AS (SELECT * FROM {OBS} WHERE family = ?),
        fan AS (SELECT observed, dir, count(DISTINCT client) AS n_clients FROM o0 GROUP BY ALL),
        o AS (SELECT o0.* REPLACE (CASE WHEN fan.n_clients > ? THEN NULL ELSE o0.client END
                                   AS client),
                     fan.n_clients, o0.client AS real_client
              FROM o0 JOIN fan USING (observed, dir)),
        rec AS (SELECT DISTINCT client, observed, dir, tbl, uid, ts, summary FROM o),
        ev AS (
            SELECT client, observed, dir, count(*) AS n,
                   count(*) FILTER (WHERE tbl = 'flow') AS n_flow,
                   count(*) FILTER (WHERE tbl = 'dns') AS n_dns,
                   count(*) FILTER (WHERE tbl IN ('tls', 'http', 'proxy')) AS n_app,
                   list_slice(list({{'tbl': tbl, 'uid': uid, 'summary': summary}}
                                   ORDER BY ts, tbl, uid), 1, {EVIDENCE_PULL}) AS ev
            FROM rec GROUP BY ALL)
        SELECT o.client, o.observed, o.dir, min(ts) AS first_seen, max(ts) AS last_seen,
               max(confidence) AS confidence, any_value(n_clients) AS n_clients,
               bool_or(kind = 'ip') AS is_address,
               list_slice(list(DISTINCT real_client ORDER BY real_client), 1, 10) AS clients,
               list_slice(list(DISTINCT server) FILTER (WHERE server IS NOT NULL), 1, 10)
                   AS servers,
               list_slice(list(DISTINCT port) FILTER (WHERE port IS NOT NULL), 1, 10) AS ports,
               list(DISTINCT {{'feed': feed, 'kind': kind, 'value': value, 'match': match,
                              'category': category, 'label': label,
                              'confidence': confidence, 'source': source}}) AS feeds,
               any_value(ev.n) AS n, any_value(ev.n_flow) AS n_flow,
               any_value(ev.n_dns) AS n_dns, any_value(ev.n_app) AS n_app,
               any_value(ev.ev) AS ev
        FROM o JOIN ev ON o.client IS NOT DISTINCT FROM ev.client
                       AND o.observed = ev.observed AND o.dir = ev.dir
        GROUP BY o.client, o.observed, o.dir ORDER BY first_seen, o.client, o.observed
        """, [family, ctx.settings.intel.max_clients])


# -- findings ----------------------------------------------------------------------------------

FAMILY_WORDS = {
    "tor": "a Tor relay", "vpn": "a VPN or anonymising proxy service",
    "tunnel": "a tunnel service", "ioc": "a listed indicator",
    "fingerprint": "a listed TLS fingerprint",
}


def _what(feeds: list[dict[str, Any]]) -> str:
    """'tor_exit "Nick" (feed consensus, confidence 0.90, source ...)' for each listing."""
    parts = []
    for f in sorted(feeds, key=lambda f: (-float(f["confidence"] or 0), str(f["feed"]))):
        value = f["value"] if f["match"] == "exact" else (
            f"*.{f['value']}" if f["match"] == "subdomains" else f"{f['value']} and below")
        label = f' "{f["label"]}"' if f["label"] else ""
        parts.append(f"{f['category']}{label} {value} (feed {f['feed']}, confidence "
                     f"{float(f['confidence'] or 0):.2f}, source {f['source'] or 'unstated'})")
    return "; ".join(parts)


def _findings(ctx: Context, family: str) -> Iterator[Finding]:
    if not prepare(ctx):
        return
    technique, strategy, weight = FAMILIES[family]
    what = FAMILY_WORDS[family]
    for r in _groups(ctx, family):
        observed, direction = str(r["observed"]), str(r["dir"])
        many = r["client"] is None  # more than intel.max_clients clients: one finding for all
        clients = [str(c) for c in clean_list(r["clients"])]
        client = f"{r['n_clients']} hosts" if many else str(r["client"])
        feeds = [f for f in r["feeds"] if f]
        servers = sorted(str(v) for v in clean_list(r["servers"]))
        ports = sorted(int(p) for p in clean_list(r["ports"]))
        connected = int(r["n_flow"] or 0) + int(r["n_app"] or 0) > 0
        conf = float(r["confidence"] or 0.0) * weight
        if direction == "in":
            conf *= INBOUND_WEIGHT
        elif not connected:
            conf *= LOOKUP_ONLY_WEIGHT
        conf = round(min(conf, 0.99), 3)
        severity = "low" if direction == "in" else severity_for(conf)
        if many and severity in ("high", "critical"):
            severity = "medium"
        counts = (f"{r['n']} record(s): {r['n_flow']} flow(s), {r['n_app']} TLS/HTTP/proxy "
                  f"record(s), {r['n_dns']} DNS record(s)")
        entities: dict[str, Any]
        if direction == "in":
            server = servers[0] if servers else None
            title = f"{observed} ({what}) connected to {server or 'an internal server'}"
            explanation = (f"{observed}, {what}, connected to internal "
                           f"{', '.join(servers[:5]) or 'servers'}: {counts}. Listed as "
                           f"{_what(feeds)}.")
            entities = {"client": observed, "server": server, "indicator": observed}
            hosts = sorted({observed, *servers})
        else:
            where = (f" (servers {', '.join(servers[:5])}"
                     + (f", ports {', '.join(map(str, ports[:5]))}" if ports else "") + ")"
                     if servers else " (DNS lookups only, no connection seen)")
            verb = "looked up" if direction == "lookup" else "reached"
            title = f"{client} {verb} {what}: {observed}"
            explanation = (f"{client} touched {observed}, {what}{where}: {counts}. Listed as "
                           f"{_what(feeds)}.")
            if many:
                explanation += (f" More than intel.max_clients clients did, so this one finding "
                                f"stands for all {r['n_clients']} (first: "
                                f"{', '.join(clients)}): a widely used address or name is "
                                "more often a listing mistake than an intrusion; check the "
                                "feed's entry.")
                entities = {"clients": int(r["n_clients"]), "client_sample": clients,
                            "indicator": observed}
            else:
                entities = {"client": client, "indicator": observed}
            if servers and servers[0] != observed:
                entities["server"] = servers[0]
            hosts = sorted({*(clients if many else [client]), *servers})
        entities.update(
            direction=direction, family=family,
            feeds=sorted({str(f["feed"]) for f in feeds}),
            categories=sorted({str(f["category"]) for f in feeds}),
            sources=sorted({str(f["source"]) for f in feeds if f["source"]})[:5])
        yield Finding(
            detector=f"intel.{family}", title=title, technique=technique, strategy=strategy,
            severity=severity, confidence=conf,
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities=entities, evidence=evidence_of(r["ev"]), evidence_total=int(r["n"]),
            explanation=explanation,
            mitigation=_mitigation(family, None if many else client, observed,
                                   bool(r["is_address"]), servers, direction),
            hosts=hosts)


def _mitigation(family: str, client: str | None, observed: str, is_address: bool,
                servers: list[str], direction: str) -> Mitigation:
    acts: list[Action] = []
    if direction == "in":
        acts.extend(actions(nft_drop(observed, servers[0] if servers else None)))
        acts.append(Action(kind="gateway", text=(
            f"ingress policy: deny {family} sources (hopguard policy block set fed from the "
            "intel store)")))
        return Mitigation(ids=["M1037"], actions=acts)
    if is_address:
        acts.extend(actions(nft_drop(client, observed)))
        acts.append(Action(kind="nft", text=(
            f"add element inet hopguard intel_block_v{6 if ':' in observed else 4} "
            f"{{ {observed} }}")))
    elif family == "fingerprint":
        acts.append(Action(kind="ips", text=(
            f'alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"hopguard intel fingerprint '
            f'{observed}"; {"ja4.hash" if "_" in observed else "ja3.hash"}; '
            f'content:"{observed}"; sid:{sid_for("intel-fp:" + observed)}; rev:1;)')))
    else:
        acts.append(Action(kind="ips", text=(
            f'alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"hopguard intel {family} '
            f'{observed}"; tls.sni; dotprefix; content:".{observed}"; endswith; nocase; '
            f'sid:{sid_for("intel-sni:" + observed)}; rev:1;)')))
        acts.append(Action(kind="gateway", text=(
            f"DNS RPZ: {observed} CNAME . ; proxy: deny dstdomain .{observed}")))
        for server in servers[:3]:
            acts.extend(actions(nft_drop(client, server)))
    ids = ["M1037", "M1031"] if family != "fingerprint" else ["M1031", "M1020"]
    return Mitigation(ids=ids, actions=acts)


@detector("intel.tor", technique="T1090.003", tables=("flow", "tls", "http", "dns", "proxy"),
          summary="flows, TLS, HTTP, proxy requests and DNS touching Tor relays and exits")
def tor(ctx: Context) -> Iterator[Finding]:
    return _findings(ctx, "tor")


@detector("intel.vpn", technique="T1090.002", tables=("flow", "tls", "http", "dns", "proxy"),
          summary="traffic to VPN and anonymising proxy services (feeds and seed lists)")
def vpn(ctx: Context) -> Iterator[Finding]:
    return _findings(ctx, "vpn")


@detector("intel.tunnel", technique="T1572", tables=("flow", "tls", "http", "dns", "proxy"),
          summary="traffic to tunnel services listed by imported feeds")
def tunnel(ctx: Context) -> Iterator[Finding]:
    return _findings(ctx, "tunnel")


@detector("intel.ioc", technique="T1090", tables=("flow", "tls", "http", "dns", "proxy"),
          summary="traffic to any other imported indicator (C2 servers, malicious domains)")
def ioc(ctx: Context) -> Iterator[Finding]:
    return _findings(ctx, "ioc")


@detector("intel.fingerprint", technique="T1090", tables=("tls",),
          summary="TLS fingerprints (JA3, JA3S, JA4) listed by imported feeds")
def fingerprint(ctx: Context) -> Iterator[Finding]:
    return _findings(ctx, "fingerprint")
