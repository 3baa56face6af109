"""Domain-fronting detectors (T1090.004, DET0196).

Theory of operation: domain fronting puts one name in the TLS SNI (a front that a CDN serves)
and another in the HTTP Host inside the encrypted stream; the CDN routes on Host. On the wire
only the SNI is visible, so the decisive comparison needs a record that holds both for one
connection: a TLS-inspecting gateway's log, decrypted captures, or Suricata/Zeek logs written by
an edge that terminates TLS. Those land in the tls and http tables with the same ``uid``.

``fronting.sni_host``  joins tls and http on uid; SNI and Host are normalised (lower case, no
    port, no trailing dot) and pairs within the same registered domain are ignored (a wildcard
    certificate serving sibling names). CONNECT requests are skipped: their Host is the proxy
    target, not a request inside the TLS session. Confidence rises when either name is a CDN
    (rules/intel/cdn_domains.tsv via ``intel.seeds``, + ``fronting.cdn_domains``) and when the
    same edge serves the SNI name honestly to others (a multi-tenant front).
``fronting.empty_sni``  TLS without SNI towards a CDN address ("domainless" fronting). An
    address is a CDN's when an SNI towards it, or a DNS answer for a CDN name (query or CNAME
    in the answer), says so. With an HTTP Host on the same connection it is near certain.
``fronting.multi_sni``  one client fingerprint (JA4, else JA3) that only this client uses
    (``fronting.max_fp_clients``) and only towards one CDN (by suffix, else by the same server
    address) with at least ``fronting.min_snis`` distinct SNIs (in two or more domains when only
    the address ties them together): Vectra's
    "multi-home fronted tunnel" shape. A prior-strength signal: low/medium, never high.
"""

from __future__ import annotations

from collections.abc import Iterator

from hopguard.analytics.base import (
    Action,
    Context,
    Evidence,
    Finding,
    Mitigation,
    detector,
    is_ip,
    severity_for,
    ts_of,
)
from hopguard.analytics.tunnels import (
    EVIDENCE_PULL,
    Suffix,
    clean_list,
    evidence_of,
    name_sql,
    nft_drop,
    norm_name,
    shipped_cdns,
    sid_for,
    suffix_match_sql,
    suffix_table,
)

# Second-level labels under which registrations sit one level deeper (example.co.uk). A small
# stand-in for the public suffix list, which the project does not ship.
_SLD = {"co", "com", "net", "org", "gov", "ac", "edu", "ne", "or", "go", "gob", "mil"}


def registered_domain(name: str) -> str:
    """The registrable part of a host name, approximately (example.co.uk, example.com)."""
    labels = [x for x in norm_name(name).split(".") if x]
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SLD:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def cdn_table(ctx: Context) -> str:
    extra = [Suffix(suffix=norm_name(d), label=norm_name(d))
             for d in ctx.settings.fronting.cdn_domains if d and d.strip()]
    return suffix_table(ctx, "hg_cdn_sfx", [*shipped_cdns(), *extra])


def cdn_addresses(ctx: Context, sfx: str) -> str:
    """Temp table hg_cdn_ip(ip, provider): addresses that an SNI or a DNS answer ties to a CDN."""
    if "hg_cdn_ip" in ctx.cache:
        return "hg_cdn_ip"
    ctx.execute(f"""
    CREATE OR REPLACE TEMP TABLE hg_cdn_ip AS
    WITH tn AS (SELECT DISTINCT dst_ip AS ip, {name_sql('sni')} AS name FROM tls
                WHERE dst_ip IS NOT NULL),
    by_sni AS (
        SELECT tn.ip, arg_max({sfx}.label, length({sfx}.suffix)) AS provider
        FROM tn JOIN {sfx} ON {suffix_match_sql('tn.name', sfx)} GROUP BY tn.ip
    ),
    dq AS (SELECT query, answers FROM dns WHERE query IS NOT NULL AND answers IS NOT NULL),
    dn AS (SELECT query, {name_sql('query')} AS name FROM dq
           UNION ALL SELECT query, {name_sql('a')} FROM (SELECT query, unnest(answers) AS a
                                                         FROM dq)),
    cdn_q AS (
        SELECT dn.query, arg_max({sfx}.label, length({sfx}.suffix)) AS provider
        FROM dn JOIN {sfx} ON {suffix_match_sql('dn.name', sfx)} GROUP BY dn.query
    ),
    by_dns AS (
        SELECT a AS ip, any_value(provider) AS provider
        FROM (SELECT dq.query, unnest(dq.answers) AS a FROM dq) x JOIN cdn_q USING (query)
        WHERE regexp_full_match(a, '[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:.]*')
        GROUP BY a
    )
    SELECT ip, any_value(provider) AS provider
    FROM (SELECT * FROM by_sni UNION ALL SELECT * FROM by_dns) GROUP BY ip
    """)
    ctx.cache["hg_cdn_ip"] = True
    return "hg_cdn_ip"


def _mitigation(client: str, edge: str | None, port: int | None, sni: str | None,
                host: str | None) -> Mitigation:
    acts = []
    a = nft_drop(client, edge, port)
    if a is not None:
        acts.append(a)
    if host:
        sid = sid_for(f"front:{host}")
        acts.append(Action(kind="ips", text=(
            f'alert http $HOME_NET any -> any any (msg:"hopguard fronted Host {host}"; '
            f'http.host; content:"{host}"; endswith; nocase; sid:{sid}; rev:1;)')))
    acts.append(Action(kind="gateway", text=(
        "TLS inspection policy: terminate TLS to CDNs and refuse requests whose Host differs "
        f"from the SNI (SNI {sni or '(empty)'}" + (f", Host {host}" if host else "")
        + "); refuse CDN handshakes without SNI")))
    return Mitigation(ids=["M1020", "M1037"], actions=acts)


# -- fronting.sni_host -----------------------------------------------------------------------

@detector("fronting.sni_host", technique="T1090.004", tables=("tls", "http"),
          summary="TLS SNI and HTTP Host differ on one connection (decrypted logs)")
def sni_host(ctx: Context) -> Iterator[Finding]:
    sfx = cdn_table(ctx)
    addr = ctx.addresses()
    q = f"""
    WITH t AS (
        SELECT uid, ts, src_ip, src_port, dst_ip, dst_port, {name_sql('sni')} AS sni FROM tls
        WHERE uid IS NOT NULL
    ), h AS (
        SELECT uid, ts, {name_sql('host')} AS host, method, uri FROM http
        WHERE uid IS NOT NULL AND upper(coalesce(method, '')) <> 'CONNECT'
    ), pair0 AS (
        SELECT t.uid, least(t.ts, h.ts) AS ts, greatest(t.ts, h.ts) AS ts2, t.src_ip AS logged,
               t.src_port, t.dst_ip AS edge, t.dst_port AS port, t.sni, h.host, h.method, h.uri
        FROM t JOIN h USING (uid)
        WHERE t.sni IS NOT NULL AND h.host IS NOT NULL AND t.src_ip IS NOT NULL
    ), inside AS (  -- the log saw a NAT address: the internal flow with the same 4 fields
        SELECT p.uid, arg_min(f.src_ip, abs(epoch(f.ts) - epoch(p.ts))) AS ip,
               arg_min(f.uid, abs(epoch(f.ts) - epoch(p.ts))) AS flow_uid
        FROM (SELECT DISTINCT uid, ts, logged, src_port, edge, port FROM pair0) p
        JOIN {addr} la ON la.ip = p.logged AND NOT la.internal
        JOIN flow f ON f.dst_ip = p.edge AND f.dst_port = p.port AND f.src_port = p.src_port
                   AND f.src_ip <> p.logged AND abs(epoch(f.ts) - epoch(p.ts)) <= ?
        JOIN {addr} fa ON fa.ip = f.src_ip AND fa.internal
        GROUP BY p.uid
    ), pair AS (
        SELECT pair0.*, coalesce(i.ip, pair0.logged) AS client, i.flow_uid
        FROM pair0 LEFT JOIN inside i USING (uid)
    ), honest AS (  -- names an edge serves with SNI = Host (to anyone)
        SELECT DISTINCT edge, sni FROM pair WHERE sni = host
    )
    SELECT p.client, p.edge, p.port, p.sni, p.host, min(p.ts) AS first_seen,
           list_slice(list(DISTINCT p.logged) FILTER (WHERE p.flow_uid IS NOT NULL), 1, 3)
               AS nat_addrs,
           list_slice(list(p.flow_uid) FILTER (WHERE p.flow_uid IS NOT NULL), 1, 10)
               AS flow_uids,
           max(coalesce(p.ts2, p.ts)) AS last_seen, count(DISTINCT p.uid) AS conns,
           count(*) AS requests,
           bool_or(hn.edge IS NOT NULL) AS front_honest,
           (SELECT count(DISTINCT client) FROM pair x
             WHERE x.edge = p.edge AND x.sni = p.sni AND x.sni = x.host) AS honest_clients,
           any_value(cs.label) AS sni_cdn, any_value(ch.label) AS host_cdn,
           list_slice(list({{'tbl': 'http', 'uid': p.uid,
                             'summary': p.client || ' -> ' || coalesce(p.edge, '?') || ':'
                                 || coalesce(CAST(p.port AS VARCHAR), '?') || ' SNI ' || p.sni
                                 || ', Host ' || p.host || ', ' || coalesce(p.method, '?')
                                 || ' ' || coalesce(p.uri, '')}}
                           ORDER BY p.ts), 1, {EVIDENCE_PULL}) AS ev
    FROM pair p
    LEFT JOIN honest hn ON hn.edge = p.edge AND hn.sni = p.sni
    LEFT JOIN {sfx} cs ON {suffix_match_sql('p.sni', 'cs')}
    LEFT JOIN {sfx} ch ON {suffix_match_sql('p.host', 'ch')}
    WHERE p.sni <> p.host AND p.ts IS NOT NULL
    GROUP BY p.client, p.edge, p.port, p.sni, p.host
    ORDER BY first_seen
    """
    nat_window = ctx.settings.fronting.nat_window if ctx.settings.fronting.nat_window > 0 \
        else -1.0
    for r in ctx.rows(q, [nat_window]):
        sni, host, client = r["sni"], r["host"], r["client"]
        if is_ip(host) or is_ip(sni) or registered_domain(sni) == registered_domain(host):
            continue
        conf, why = 0.7, []
        cdn = r["sni_cdn"] or r["host_cdn"]
        if cdn:
            conf += 0.15
            why.append(f"{'the SNI' if r['sni_cdn'] else 'the Host'} is a {cdn} name")
        if r["front_honest"]:
            conf += 0.1
            why.append(f"the same edge serves {sni} with a matching Host to "
                       f"{r['honest_clients']} client(s): a multi-tenant front")
        conf = round(min(conf, 0.95), 3)
        port = int(r["port"]) if r["port"] is not None else None
        explanation = (
            f"{client} opened {r['conns']} TLS connection(s) to {r['edge']}:{port} with SNI "
            f"{sni} and sent {r['requests']} HTTP request(s) inside them with Host {host} "
            f"(registered domains {registered_domain(sni)} vs {registered_domain(host)})"
            + (f"; {'; '.join(why)}" if why else "") + ".")
        nat, flows = clean_list(r["nat_addrs"]), clean_list(r["flow_uids"])
        evidence = evidence_of(r["ev"])
        if nat:
            explanation += (
                f" The log saw the client as {', '.join(nat)} (NAT); internal flow(s) to the "
                f"same server and source port within fronting.nat_window "
                f"{ctx.settings.fronting.nat_window:g} s come from {client}.")
            evidence += [Evidence(table="flow", uid=u, summary=f"{client} -> {r['edge']}:{port}"
                                  " (inside the NAT)") for u in flows[:5]]
        yield Finding(
            detector="fronting.sni_host", title=f"Domain fronting: {client} SNI {sni}, Host {host}",
            technique="T1090.004", strategy="DET0196/AN0565",
            severity=severity_for(conf), confidence=round(conf, 3),
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "edge": r["edge"], "sni": sni, "host": host},
            evidence=evidence, evidence_total=len(evidence) + max(0, int(r["requests"])
                                                                   - len(r["ev"] or [])),
            explanation=explanation, mitigation=_mitigation(client, r["edge"], port, sni, host),
            hosts=[client, r["edge"], *nat])


# -- fronting.empty_sni ----------------------------------------------------------------------

@detector("fronting.empty_sni", technique="T1090.004", tables=("tls", "dns", "http"),
          summary="TLS without SNI towards a CDN address (domainless fronting)")
def empty_sni(ctx: Context) -> Iterator[Finding]:
    sfx = cdn_table(ctx)
    cdn = cdn_addresses(ctx, sfx)
    addr = ctx.addresses()
    q = f"""
    WITH e AS (
        SELECT t.uid, t.ts, t.src_ip AS client, t.dst_ip AS edge, t.dst_port AS port, c.provider
        FROM tls t JOIN {cdn} c ON c.ip = t.dst_ip
        WHERE nullif(trim(coalesce(t.sni, '')), '') IS NULL AND t.src_ip IS NOT NULL
          AND t.ts IS NOT NULL AND coalesce(t.resumed, false) = false
    ), hh AS (
        SELECT uid, any_value({name_sql('host')}) AS host FROM http
        WHERE uid IS NOT NULL AND upper(coalesce(method, '')) <> 'CONNECT' GROUP BY uid
    )
    SELECT e.client, e.edge, e.port, any_value(e.provider) AS provider,
           min(e.ts) AS first_seen, max(e.ts) AS last_seen, count(*) AS conns,
           list_slice(list(DISTINCT hh.host) FILTER (WHERE hh.host IS NOT NULL), 1, 5) AS hosts,
           coalesce(any_value(a.internal), false) AS client_internal,
           list_slice(list({{'tbl': 'tls', 'uid': e.uid,
                             'summary': e.client || ' -> ' || e.edge || ':'
                                 || coalesce(CAST(e.port AS VARCHAR), '?') || ' no SNI ('
                                 || e.provider || ' address)'
                                 || coalesce(', Host ' || hh.host, '')}}
                           ORDER BY e.ts), 1, {EVIDENCE_PULL}) AS ev
    FROM e LEFT JOIN hh USING (uid) LEFT JOIN {addr} a ON a.ip = e.client
    GROUP BY e.client, e.edge, e.port ORDER BY first_seen
    """
    for r in ctx.rows(q):
        hosts = clean_list(r["hosts"])
        conf = 0.85 if hosts else 0.4
        port = int(r["port"]) if r["port"] is not None else None
        client = r["client"]
        explanation = (
            f"{client} made {r['conns']} TLS handshake(s) without SNI to {r['edge']}:{port}, a "
            f"{r['provider']} address (by SNIs or DNS answers seen for it)"
            + (f"; the HTTP Host inside was {', '.join(hosts)}: domainless fronting"
               if hosts else "; no decrypted request shows the Host") + ".")
        yield Finding(
            detector="fronting.empty_sni",
            title=f"TLS without SNI from {client} to {r['provider']} edge {r['edge']}",
            technique="T1090.004", strategy="DET0196/AN0565",
            severity=severity_for(conf), confidence=conf,
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "edge": r["edge"], "provider": r["provider"]},
            evidence=evidence_of(r["ev"]), evidence_total=int(r["conns"]),
            explanation=explanation,
            mitigation=_mitigation(client, r["edge"], port, None, hosts[0] if hosts else None))


# -- fronting.multi_sni ----------------------------------------------------------------------

@detector("fronting.multi_sni", technique="T1090.004", tables=("tls", "dns"),
          summary="one rare client fingerprint across many SNIs on one CDN")
def multi_sni(ctx: Context) -> Iterator[Finding]:
    f = ctx.settings.fronting
    sfx = cdn_table(ctx)
    cdn = cdn_addresses(ctx, sfx)
    q = f"""
    WITH t AS (
        SELECT uid, ts, src_ip AS client, dst_ip, coalesce(nullif(ja4, ''), nullif(ja3, ''))
               AS fp, {name_sql('sni')} AS sni
        FROM tls WHERE src_ip IS NOT NULL AND ts IS NOT NULL
    ), named AS (
        SELECT t.uid, arg_max({sfx}.label, length({sfx}.suffix)) AS provider
        FROM t JOIN {sfx} ON {suffix_match_sql('t.sni', sfx)} GROUP BY t.uid
    ), g AS (
        SELECT t.*, coalesce(n.provider, c.provider, 'address ' || t.dst_ip) AS grp,
               array_to_string(list_slice(string_split(t.sni, '.'), -2, -1), '.') AS dom
        FROM t LEFT JOIN named n USING (uid) LEFT JOIN {cdn} c ON c.ip = t.dst_ip
        WHERE t.fp IS NOT NULL AND t.sni IS NOT NULL
    ), fps AS (
        SELECT fp, count(DISTINCT client) AS n_clients, count(DISTINCT grp) AS n_groups
        FROM g GROUP BY fp
    )
    SELECT g.client, g.fp, g.grp, min(g.ts) AS first_seen, max(g.ts) AS last_seen,
           count(*) AS conns, count(DISTINCT g.sni) AS n_sni, count(DISTINCT g.dom) AS n_dom,
           list_slice(list(DISTINCT g.sni), 1, 10) AS snis,
           list_slice(list(DISTINCT g.dst_ip), 1, 10) AS servers,
           list_slice(list({{'tbl': 'tls', 'uid': g.uid,
                             'summary': g.client || ' -> ' || coalesce(g.dst_ip, '?') || ' SNI '
                                 || g.sni || ' fp ' || g.fp}} ORDER BY g.ts), 1, {EVIDENCE_PULL})
               AS ev
    FROM g JOIN fps USING (fp)
    WHERE fps.n_clients <= ? AND fps.n_groups = 1
    GROUP BY g.client, g.fp, g.grp
    -- many names of one site on its own server are not fronting; on a CDN they may be
    HAVING count(DISTINCT g.sni) >= ?
       AND (count(DISTINCT g.dom) >= 2 OR NOT starts_with(g.grp, 'address '))
    ORDER BY first_seen
    """
    for r in ctx.rows(q, [f.max_fp_clients, f.min_snis]):
        client, snis, servers = r["client"], clean_list(r["snis"]), clean_list(r["servers"])
        conf = round(min(0.35 + 0.03 * max(int(r["n_dom"]) - 2, 0), 0.6), 3)  # medium at most
        by_address = str(r["grp"]).startswith("address ")
        explanation = (
            f"{client} used TLS fingerprint {r['fp']} (seen from no other client, and only "
            f"towards {'server ' + str(r['grp'])[8:] if by_address else r['grp']}) with "
            f"{r['n_sni']} distinct SNIs in {r['n_dom']} domains over {r['conns']} handshakes "
            f"(fronting.min_snis {f.min_snis}): {', '.join(snis[:5])}.")
        yield Finding(
            detector="fronting.multi_sni",
            title=f"{client}: one fingerprint, {r['n_sni']} SNIs on {r['grp']}",
            technique="T1090.004", strategy="DET0196/AN0565",
            severity=severity_for(conf), confidence=round(conf, 3),
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "fingerprint": r["fp"], "cdn": r["grp"]},
            evidence=evidence_of(r["ev"]), evidence_total=int(r["conns"]),
            explanation=explanation,
            mitigation=_mitigation(client, servers[0] if len(servers) == 1 else None,
                                   None, snis[0] if snis else None, None),
            hosts=[client, *[s for s in servers if is_ip(s)][:5]])
