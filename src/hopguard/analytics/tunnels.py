"""Tunnel, Tor and tool-fingerprint detectors (T1572, T1571, T1090.003).

Theory of operation: each detector is a few columnar queries over the protocol tables, grouped
in SQL down to one row per finding, then shaped into findings in Python.

``tunnel.unusual_port``  SSH on a port outside ``tunnel.ssh_ports`` (the ssh table and flows whose
    detected service is ssh), TLS on an SSH port or a clear-text port (22, 23, 53, 80, 2222:
    ports where a TLS handshake is a disguise, not STARTTLS) and, at info, TLS to an external
    server on a port outside ``tunnel.tls_ports``. Grouped per (server, port, protocol) with the
    clients counted; a service with ``tunnel.busy_clients`` clients or more is reported at info
    (the site uses it). Known tool defaults (ligolo-ng 11601 and its ``ligolo`` certificate,
    chisel's ``SSH-chisel-*`` banners, cloudflared 7844, frp 7000) raise the confidence.
``tunnel.service``  TLS SNI, DNS questions and HTTP Host names matched against the shipped list
    of tunnel-service suffixes (rules/intel/tunnel_services.tsv, read by ``intel.seeds``) plus
    ``tunnel.service_domains``. Each suffix says whether it names the tunnel *agent's* control
    endpoint (connect.ngrok-agent.com, *.cftunnel.com, argotunnel.com: a tunnel client runs on
    the host, medium) or a tunnel's public *edge* (*.ngrok-free.app, *.trycloudflare.com,
    loca.lt: the host reaches somebody's tunnel, low). One finding per (client, service).
``tunnel.tor``  Tor links by their signals, combined into one confidence per (client, relay,
    port): the relay certificate pattern (issuer ``CN=www.<8-20 base32>.com``, subject
    ``CN=www.<8-20 base32>.net``; ET 2018789, Tor's ``crypto_random_hostname``), the SNI pattern
    ``www.<4-25 base32>.com`` that nobody resolved in DNS (the patterns are rows of
    rules/intel/tor.tsv), several such SNIs towards the same relay (Tor draws a new name per
    connection), a Tor port (``tunnel.tor_ports``) and ``.onion`` lookups by the same client. A
    (client, relay, port) whose confidence reaches ``tunnel.tor_min_confidence`` is reported.
    ``.onion`` DNS lookups are also reported on their own (a Tor client or a tor2web user
    leaking the name).
``tunnel.fingerprint``  client fingerprints that are priors only (rules/intel/fingerprints.tsv:
    Go crypto/tls defaults used by chisel, frp, ligolo-ng, gost, cloudflared and Sliver; ngrok's
    agent; the old Tor client JA3; a few C2 and VPN clients): info, or low when the same client
    already has a tunnel.* finding. Never medium or above.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from hopguard.analytics.base import (
    Action,
    Context,
    Evidence,
    Finding,
    Mitigation,
    detector,
    is_v6,
    nft_drop_rule,
    severity_for,
    ts_of,
)
from hopguard.intel import seeds

logger = logging.getLogger(__name__)

# ctx.cache key: clients the other tunnel.* detectors of this run reported.
FLAGGED = "tunnel.flagged_clients"

# Evidence rows pulled per finding before finalize() caps them (keeps big groups cheap).
EVIDENCE_PULL = 50

# Ports where a TLS handshake has no business: not STARTTLS ports (21, 25, 110, 143, 587 carry
# TLS after a clear-text upgrade), but SSH, telnet, DNS and plain HTTP.
TLS_DISGUISE_PORTS = (22, 23, 53, 80, 2222)
# Ports whose protocols carry TLS legitimately (STARTTLS upgrades, RDP, databases, XMPP): no
# TLS finding there.
TLS_NATIVE_PORTS = (21, 25, 110, 143, 389, 587, 1433, 3306, 3389, 5222, 5269, 5432)
# Web and DNS ports: SSH there is hiding in allowed egress.
SSH_DISGUISE_PORTS = (53, 80, 443, 8080, 8443)

# Tool defaults from detection-notes §6 (port -> tool).
TOOL_PORTS = {11601: "ligolo-ng agent port", 7844: "cloudflared edge port",
              7000: "frp control port"}

# Fingerprint priors (library fingerprints, not tool fingerprints: a hint, never a verdict) and
# Tor's random-name patterns ("www." + base32 + ".com"/".net"; certificates 8-20 characters,
# ET 2018789; the SNI 4-25, tortls.c crypto_random_hostname) are rows of the shipped seed lists
# (rules/intel/fingerprints.tsv, tor.tsv), read through intel.seeds.

# Signal weights of tunnel.tor (added, capped at TOR_CAP).
W_CERT = 0.6  # issuer and subject both match
W_ISSUER = 0.45  # only the issuer known and matching
W_SNI = 0.15  # pattern SNI that no DNS lookup explains
W_SNI_DIGIT = 0.05  # ... and it has a base32 digit (a word like www.google.com has none)
W_SNI_DNS_SEEN = 0.05  # ... and the client's own lookups are in the store, yet not this one
W_MULTI_SNI = 0.1  # several pattern SNIs towards the same relay
W_PORT = 0.1  # a Tor port
W_ONION = 0.1  # the client looked up .onion names
W_FANOUT = 0.1  # the client used pattern SNIs towards three relays or more
TOR_CAP = 0.97


# -- shipped lists (intel.seeds) -----------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class Suffix:
    suffix: str
    label: str  # service or provider
    kind: str = ""  # tunnel services: agent or edge


def shipped_services() -> list[Suffix]:
    """The shipped tunnel-service suffixes. Rows the list marks ``exact`` are left out: the
    suffix join would widen them to every name below."""
    return [Suffix(suffix=t.suffix, label=t.service, kind=t.kind)
            for t in seeds.tunnel_services() if t.match == "suffix"]


def shipped_cdns() -> list[Suffix]:
    """The shipped CDN front-end suffixes."""
    return [Suffix(suffix=c.suffix, label=c.provider) for c in seeds.cdn_domains()]


def norm_name(name: str) -> str:
    """Lower case, no trailing dot, no leading '*.' or '.'."""
    name = name.strip().lower().rstrip(".")
    while name.startswith(("*.", ".")):
        name = name[2:] if name.startswith("*.") else name[1:]
    return name


def suffix_table(ctx: Context, table: str, entries: Iterable[Suffix]) -> str:
    """A temp table (suffix, label, kind) the queries join on."""
    rows = {e.suffix: e for e in entries if e.suffix}
    ctx.execute(f"CREATE OR REPLACE TEMP TABLE {table} "
                "(suffix VARCHAR, label VARCHAR, kind VARCHAR)")
    if rows:
        ctx.con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)",
                            [[e.suffix, e.label, e.kind] for e in rows.values()])
    return table


# SQL: a host name as compared (lower case, no trailing dot, no :port; bracketed IPv6 kept).
def name_sql(col: str) -> str:
    return (f"nullif(rtrim(lower(regexp_replace(trim({col}), ':[0-9]+$', '')), '.'), '')")


def full_match_sql(pattern: str) -> str:
    """An anchored seed pattern as DuckDB's regexp_full_match wants it: without the anchors
    (the match is whole anyway) and with quotes doubled for the SQL literal."""
    return pattern.removeprefix("^").removesuffix("$").replace("'", "''")


def suffix_match_sql(name: str, table: str) -> str:
    return f"({name} = {table}.suffix OR ends_with({name}, '.' || {table}.suffix))"


def has_table(ctx: Context, name: str) -> bool:
    return bool(ctx.rows("SELECT count(*) AS n FROM information_schema.tables "
                         "WHERE table_name = ?", [name])[0]["n"])


# -- mitigations -----------------------------------------------------------------------------

def sid_for(key: str) -> int:
    """A stable Suricata sid in the local range (9 000 000 - 9 999 999) for a rule text key."""
    return 9_000_000 + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 1_000_000


def nft_drop(client: str | None, server: str | None, port: int | None = None,
             proto: str = "tcp") -> Action | None:
    """The nft drop rule for a pair (none without a server to name)."""
    if not server:
        return None
    return Action(kind="nft", text=nft_drop_rule(client, server, port, proto))


def actions(*items: Action | None) -> list[Action]:
    return [a for a in items if a is not None]


def evidence_of(items: list[dict[str, Any]] | None) -> list[Evidence]:
    return [Evidence(table=e["tbl"], uid=e.get("uid"), summary=e.get("summary") or "")
            for e in items or [] if e]


def flag(ctx: Context, *clients: str | None) -> None:
    ctx.cache.setdefault(FLAGGED, set()).update(c for c in clients if c)


def clean_list(values: list[Any] | None) -> list[Any]:
    return [v for v in values or [] if v is not None]


# -- tunnel.unusual_port ---------------------------------------------------------------------

@detector("tunnel.unusual_port", technique="T1571", tables=("ssh", "tls", "flow"),
          summary="SSH or TLS on a port where that protocol does not belong")
def unusual_port(ctx: Context) -> Iterator[Finding]:
    s = ctx.settings.tunnel
    ssh_ports = sorted({p for p in s.ssh_ports if p is not None}) or [22]
    tls_ports = sorted({p for p in s.tls_ports if p is not None}) or [443]
    disguise_tls = sorted(set(TLS_DISGUISE_PORTS) | set(ssh_ports))
    addr = ctx.addresses()
    q = f"""
    WITH ssh_obs AS (
        SELECT uid, ts, src_ip, dst_ip, dst_port, 'ssh' AS proto,
               coalesce(client, '') || ' / ' || coalesce(server, '') AS detail,
               (coalesce(client, '') ILIKE 'SSH-chisel%'
                OR coalesce(server, '') ILIKE 'SSH-chisel%') AS tool_hit
        FROM ssh WHERE dst_ip IS NOT NULL AND dst_port IS NOT NULL
        UNION ALL
        SELECT f.uid, f.ts, f.src_ip, f.dst_ip, f.dst_port, 'ssh', 'flow service ' || f.service,
               false
        FROM flow f
        WHERE list_contains(string_split(lower(coalesce(f.service, '')), ','), 'ssh')
          AND f.dst_ip IS NOT NULL AND f.dst_port IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM ssh x WHERE x.uid = f.uid)
    ), tls_obs AS (
        SELECT uid, ts, src_ip, dst_ip, dst_port, 'tls' AS proto,
               'SNI ' || coalesce(nullif(sni, ''), '(none)') || ', subject '
                   || coalesce(cert_subject, '?') AS detail,
               (coalesce(cert_subject, '') ILIKE '%CN=ligolo%') AS tool_hit
        FROM tls t WHERE dst_ip IS NOT NULL AND dst_port IS NOT NULL
          -- QUIC and DTLS handshakes (UDP) are not TCP tunnels
          AND NOT EXISTS (SELECT 1 FROM flow x WHERE x.uid = t.uid AND x.proto = 'udp')
        UNION ALL
        SELECT f.uid, f.ts, f.src_ip, f.dst_ip, f.dst_port, 'tls', 'flow service ' || f.service,
               false
        FROM flow f
        WHERE (list_contains(string_split(lower(coalesce(f.service, '')), ','), 'ssl')
               OR list_contains(string_split(lower(coalesce(f.service, '')), ','), 'tls'))
          AND f.dst_ip IS NOT NULL AND f.dst_port IS NOT NULL
          AND coalesce(f.proto, 'tcp') = 'tcp'
          AND NOT EXISTS (SELECT 1 FROM tls x WHERE x.uid = f.uid)
    ), obs AS (
        SELECT *, CASE WHEN dst_port IN ({",".join(map(str, SSH_DISGUISE_PORTS))})
                       THEN 'disguise' ELSE 'other' END AS kind
        FROM ssh_obs WHERE dst_port NOT IN ({",".join(map(str, ssh_ports))})
        UNION ALL
        SELECT *, CASE WHEN dst_port IN ({",".join(map(str, disguise_tls))}) THEN 'disguise'
                       ELSE 'other' END
        FROM tls_obs
        WHERE dst_port NOT IN ({",".join(map(str, sorted(set(tls_ports) | set(TLS_NATIVE_PORTS))))})
    )
    SELECT o.dst_ip AS server, o.dst_port AS port, o.proto, any_value(o.kind) AS kind,
           coalesce(bool_or(o.tool_hit), false) AS tool_hit,
           coalesce(any_value(a.internal), false) AS server_internal,
           min(o.ts) AS first_seen, max(o.ts) AS last_seen, count(*) AS conns,
           count(DISTINCT o.src_ip) AS n_clients,
           list_slice(list(DISTINCT o.src_ip), 1, 20) AS clients,
           list_slice(list({{'tbl': CASE WHEN o.detail LIKE 'flow service%' THEN 'flow'
                                         ELSE o.proto END,
                             'uid': o.uid,
                             'summary': coalesce(o.src_ip, '?') || ' -> ' || o.dst_ip || ':'
                                        || o.dst_port || ' ' || upper(o.proto) || ': '
                                        || coalesce(o.detail, '')}}
                           ORDER BY o.ts), 1, {EVIDENCE_PULL}) AS ev
    FROM obs o LEFT JOIN {addr} a ON a.ip = o.dst_ip
    WHERE o.ts IS NOT NULL
    GROUP BY o.dst_ip, o.dst_port, o.proto
    ORDER BY first_seen
    """
    for r in ctx.rows(q):
        proto, port, server = r["proto"], int(r["port"]), r["server"]
        disguise, external = r["kind"] == "disguise", not r["server_internal"]
        tool = TOOL_PORTS.get(port)
        if proto == "tls" and not disguise and not external and not tool and not r["tool_hit"]:
            continue  # TLS on an odd internal port is everyday (management UIs, agents)
        if proto == "ssh":
            conf = 0.6 if disguise else 0.4
            why = (f"SSH on port {port}, a web/DNS port where SSH hides in allowed egress"
                   if disguise else f"SSH on port {port}, outside tunnel.ssh_ports {ssh_ports}")
        elif disguise:
            conf = 0.55
            why = f"TLS on port {port}, where a TLS handshake is a disguise (not STARTTLS)"
        else:
            conf = 0.2
            why = f"TLS to an external server on port {port}, outside tunnel.tls_ports"
        if external and (proto == "ssh" or disguise):
            conf += 0.1
        extras = []
        if tool:
            conf += 0.2
            extras.append(f"port {port} is the {tool}")
        if r["tool_hit"]:
            conf += 0.25
            extras.append("a tool artifact was seen (ligolo certificate or chisel SSH banner)")
        busy = int(r["n_clients"]) >= s.busy_clients
        conf = round(min(conf, 0.95), 3)
        severity = "info" if busy else severity_for(conf)
        clients = clean_list(r["clients"])
        explanation = (
            f"{why}. {r['conns']} connection(s) from {r['n_clients']} client(s) "
            f"({', '.join(clients[:5])}{' ...' if len(clients) > 5 else ''}) to "
            f"{'external' if external else 'internal'} server {server}"
            + (f"; {'; '.join(extras)}" if extras else "")
            + (f"; {r['n_clients']} clients >= tunnel.busy_clients {s.busy_clients}, so it is "
               "reported as a service the site uses" if busy else "") + ".")
        sid = sid_for(f"unusual:{server}:{port}:{proto}")
        fam = "ip6" if is_v6(server) else "ip"
        first_client = clients[0] if len(clients) == 1 else None
        mitigation = Mitigation(ids=["M1031", "M1037"], actions=actions(
            nft_drop(first_client, server, port),
            Action(kind="ips", text=(
                f'alert {proto} $HOME_NET any -> {server} {port} (msg:"hopguard '
                f'{proto.upper()} on non-standard port {port}"; flow:to_server,established; '
                f"sid:{sid}; rev:1;)")),
            Action(kind="gateway", text=(
                f"egress policy: allow {proto.upper()} only on ports "
                f"{ssh_ports if proto == 'ssh' else tls_ports}; deny {fam} {server} port {port} "
                "unless declared in [inventory]"))))
        flag(ctx, *clients)
        yield Finding(
            detector="tunnel.unusual_port",
            title=f"{proto.upper()} on non-standard port {server}:{port}",
            technique="T1571" if proto == "tls" or disguise else "T1572",
            strategy="DET0445/AN1230", severity=severity, confidence=round(conf, 3),
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"server": server, "port": port, "protocol": proto,
                      "clients": sorted(clients)},
            evidence=evidence_of(r["ev"]), evidence_total=int(r["conns"]),
            explanation=explanation, mitigation=mitigation)


# -- tunnel.service --------------------------------------------------------------------------

def service_suffixes(ctx: Context) -> list[Suffix]:
    extra = [Suffix(suffix=norm_name(d), label=norm_name(d), kind="agent")
             for d in ctx.settings.tunnel.service_domains if d and d.strip()]
    return [*shipped_services(), *extra]


@detector("tunnel.service", technique="T1572", tables=("tls", "dns", "http"),
          summary="hosts reaching tunnel services (ngrok, cloudflared, localtunnel ...)")
def tunnel_service(ctx: Context) -> Iterator[Finding]:
    sfx = suffix_table(ctx, "hg_tunnel_sfx", service_suffixes(ctx))
    q = f"""
    WITH obs AS (
        SELECT 'tls' AS tbl, uid, ts, src_ip AS client, dst_ip AS server, dst_port AS port,
               {name_sql('sni')} AS name FROM tls
        UNION ALL
        SELECT 'dns', uid, ts, coalesce(src_ip, host), NULL, NULL, {name_sql('query')} FROM dns
        UNION ALL
        SELECT 'http', uid, ts, src_ip, dst_ip, dst_port, {name_sql('host')} FROM http
    ), names AS (SELECT DISTINCT name FROM obs WHERE name IS NOT NULL),
    hit AS (
        SELECT name, arg_max({sfx}.label, length({sfx}.suffix)) AS service,
               arg_max({sfx}.kind, length({sfx}.suffix)) AS kind,
               arg_max({sfx}.suffix, length({sfx}.suffix)) AS suffix
        FROM names JOIN {sfx} ON {suffix_match_sql('names.name', sfx)}
        GROUP BY name
    )
    SELECT o.client, h.service, min(o.ts) AS first_seen, max(o.ts) AS last_seen,
           count(*) AS n, count(*) FILTER (WHERE o.tbl = 'dns') AS n_dns,
           count(*) FILTER (WHERE o.tbl = 'tls') AS n_tls,
           count(*) FILTER (WHERE o.tbl = 'http') AS n_http,
           bool_or(h.kind = 'agent') AS agent,
           list_slice(list(DISTINCT o.name), 1, 10) AS names,
           list_slice(list(DISTINCT o.server) FILTER (WHERE o.tbl <> 'dns'), 1, 10) AS servers,
           list_slice(list(DISTINCT o.port) FILTER (WHERE o.tbl <> 'dns'), 1, 5) AS ports,
           list_slice(list(DISTINCT h.suffix), 1, 10) AS suffixes,
           list_slice(list({{'tbl': o.tbl, 'uid': o.uid,
                             'summary': upper(o.tbl) || ' ' || o.name
                                 || coalesce(' -> ' || o.server || ':' || o.port, '')}}
                           ORDER BY o.ts), 1, {EVIDENCE_PULL}) AS ev
    FROM obs o JOIN hit h USING (name)
    WHERE o.client IS NOT NULL AND o.ts IS NOT NULL
    GROUP BY o.client, h.service
    ORDER BY first_seen
    """
    for r in ctx.rows(q):
        client, service = r["client"], r["service"]
        connected = r["n_tls"] + r["n_http"] > 0
        agent = bool(r["agent"])
        conf = round((0.65 if agent else 0.35) + (0.1 if connected else 0.0), 3)
        names = clean_list(r["names"])
        servers = sorted(clean_list(r["servers"]))
        role = ("the tunnel agent's control endpoint: a tunnel client runs on this host"
                if agent else "a tunnel's public edge: this host reaches somebody's tunnel")
        explanation = (
            f"{client} used {service} ({role}): {r['n']} record(s) "
            f"({r['n_tls']} TLS SNI, {r['n_dns']} DNS, {r['n_http']} HTTP Host) naming "
            f"{', '.join(names[:5])}"
            + (f"; servers {', '.join(servers[:5])}" if servers else "; DNS lookups only")
            + ".")
        sfx_list = clean_list(r["suffixes"])
        acts: list[Action] = []
        for suffix in sfx_list[:3]:
            sid = sid_for(f"svc:{suffix}")
            acts.append(Action(kind="ips", text=(
                f'alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"hopguard tunnel service '
                f'{service} ({suffix})"; tls.sni; dotprefix; content:".{suffix}"; endswith; '
                f"nocase; sid:{sid}; rev:1;)")))
            acts.append(Action(kind="gateway", text=(
                f"DNS RPZ: {suffix} CNAME . and *.{suffix} CNAME . ; proxy: deny dstdomain "
                f".{suffix}")))
        for server in servers[:3]:
            a = nft_drop(client, server)
            if a is not None:
                acts.append(a)
        flag(ctx, client)
        yield Finding(
            detector="tunnel.service",
            title=f"{client} uses tunnel service {service}",
            technique="T1572", strategy="DET0445/AN1230",
            severity=severity_for(conf), confidence=round(conf, 3),
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "service": service},
            evidence=evidence_of(r["ev"]), evidence_total=int(r["n"]),
            explanation=explanation,
            mitigation=Mitigation(ids=["M1037", "M1031"], actions=acts),
            hosts=[client, *servers])


# -- tunnel.tor ------------------------------------------------------------------------------

@detector("tunnel.tor", technique="T1090.003", tables=("tls", "x509", "dns"),
          summary="Tor relay links by certificate, SNI pattern, ports and .onion lookups")
def tor(ctx: Context) -> Iterator[Finding]:
    s = ctx.settings.tunnel
    ports = sorted({p for p in s.tor_ports if p is not None}) or [-1]
    pat = seeds.tor_patterns()
    # The certificate: the handshake row's own subject/issuer, else the x509 row of its leaf
    # (Zeek 4+ keeps them only in x509.log).
    q = f"""
    WITH t AS (
        SELECT t.uid, t.ts, t.src_ip AS client, t.dst_ip AS relay, t.dst_port AS port,
               lower(rtrim(trim(t.sni), '.')) AS sni,
               coalesce(t.cert_issuer, x.issuer) AS issuer,
               coalesce(t.cert_subject, x.subject) AS subject
        FROM tls t LEFT JOIN x509 x
             ON x.fingerprint = t.cert_fuids[1] AND t.cert_subject IS NULL
        WHERE t.src_ip IS NOT NULL AND t.dst_ip IS NOT NULL AND t.ts IS NOT NULL
    ), looked_up AS (
        SELECT DISTINCT lower(rtrim(query, '.')) AS name FROM dns WHERE query IS NOT NULL
    ), dns_clients AS (
        SELECT DISTINCT coalesce(src_ip, host) AS client FROM dns
    ), onion AS (
        SELECT coalesce(src_ip, host) AS client, count(*) AS n,
               list_slice(list(DISTINCT lower(query)), 1, 5) AS names
        FROM dns WHERE lower(rtrim(query, '.')) LIKE '%.onion'
        GROUP BY 1
    ), sig AS (
        SELECT t.*,
               coalesce(regexp_full_match(trim(t.issuer), '{full_match_sql(pat.issuer)}'), false)
                   AS issuer_hit,
               coalesce(regexp_full_match(trim(t.subject), '{full_match_sql(pat.subject)}'), false)
                   AS subject_hit,
               coalesce(regexp_full_match(t.sni, '{full_match_sql(pat.sni)}'), false)
                   AND t.sni NOT IN (SELECT name FROM looked_up) AS sni_hit,
               coalesce(regexp_matches(split_part(t.sni, '.', 2), '[2-7]'), false) AS sni_digit
        FROM t
    ), relay_sni AS (
        SELECT client, relay, port, count(DISTINCT sni) FILTER (WHERE sni_hit) AS n_sni
        FROM sig GROUP BY ALL
    ), fan AS (
        SELECT client, count(DISTINCT relay) FILTER (WHERE sni_hit) AS n_relays
        FROM sig GROUP BY client
    )
    SELECT s.client, s.relay, s.port, min(s.ts) AS first_seen, max(s.ts) AS last_seen,
           count(*) AS conns,
           bool_or(s.issuer_hit AND s.subject_hit) AS cert_hit,
           bool_or(s.issuer_hit AND s.subject IS NULL) AS issuer_only,
           bool_or(s.sni_hit) AS sni_hit, bool_or(s.sni_hit AND s.sni_digit) AS sni_digit,
           any_value(rs.n_sni) AS n_sni, any_value(f.n_relays) AS n_relays,
           any_value(o.n) AS onion_n, any_value(o.names) AS onion_names,
           bool_or(dc.client IS NOT NULL) AS client_has_dns,
           count(*) FILTER (WHERE s.issuer_hit OR s.sni_hit) AS n_hits,
           list_slice(list({{'tbl': 'tls', 'uid': s.uid,
                             'summary': s.client || ' -> ' || s.relay || ':' || s.port
                                 || ' SNI ' || coalesce(s.sni, '(none)') || ', issuer '
                                 || coalesce(s.issuer, '?') || ', subject '
                                 || coalesce(s.subject, '?')}}
                           ORDER BY s.ts) FILTER (WHERE s.issuer_hit OR s.sni_hit),
                      1, {EVIDENCE_PULL}) AS ev
    FROM sig s
    JOIN relay_sni rs USING (client, relay, port)
    JOIN fan f USING (client)
    LEFT JOIN onion o ON o.client = s.client
    LEFT JOIN dns_clients dc ON dc.client = s.client
    GROUP BY s.client, s.relay, s.port
    HAVING bool_or(s.issuer_hit OR s.sni_hit)
    ORDER BY first_seen
    """
    for r in ctx.rows(q):
        conf, parts = 0.0, []
        if r["cert_hit"]:
            conf += W_CERT
            parts.append("relay certificate pattern (issuer CN=www.<base32>.com, subject "
                         "CN=www.<base32>.net)")
        elif r["issuer_only"]:
            conf += W_ISSUER
            parts.append("issuer CN=www.<base32>.com (subject not logged)")
        if r["sni_hit"]:
            conf += W_SNI
            parts.append("SNI www.<base32>.com that no DNS lookup in the store explains")
            if r["sni_digit"]:
                conf += W_SNI_DIGIT
                parts.append("SNI with base32 digits")
            if r["client_has_dns"]:
                conf += W_SNI_DNS_SEEN
                parts.append("the client's own DNS lookups are stored, yet not this name")
        n_sni = int(r["n_sni"] or 0)
        if n_sni >= 2:
            conf += W_MULTI_SNI
            parts.append(f"{n_sni} different random SNIs towards this relay")
        port = int(r["port"]) if r["port"] is not None else None
        if port in ports:
            conf += W_PORT
            parts.append(f"Tor port {port}")
        if r["onion_n"]:
            conf += W_ONION
            parts.append(f"{r['onion_n']} .onion lookup(s) by the client")
        if int(r["n_relays"] or 0) >= 3:
            conf += W_FANOUT
            parts.append(f"random SNIs towards {r['n_relays']} relays from this client")
        conf = round(min(conf, TOR_CAP), 3)
        if conf + 1e-9 < s.tor_min_confidence:
            continue
        client, relay = r["client"], r["relay"]
        explanation = (
            f"{client} -> {relay}:{port}: {r['n_hits']} of {r['conns']} TLS handshake(s) look "
            f"like a Tor link: {'; '.join(parts)}. Confidence {conf:.2f} "
            f"(tunnel.tor_min_confidence {s.tor_min_confidence}).")
        sid = sid_for(f"tor:{relay}:{port}")
        mitigation = Mitigation(ids=["M1037", "M1031"], actions=actions(
            nft_drop(client, relay, port),
            Action(kind="ips", text=(
                f'alert tls $EXTERNAL_NET any -> $HOME_NET any (msg:"hopguard Tor relay '
                f'certificate"; flow:established,to_client; tls.cert_issuer; '
                f'pcre:"/^CN=www\\.[a-z2-7]{{8,20}}\\.com$/"; tls.cert_subject; '
                f'pcre:"/^CN=www\\.[a-z2-7]{{8,20}}\\.net$/"; sid:{sid}; rev:1;)')),
            Action(kind="gateway", text=(
                "egress policy: deny Tor relay and bridge addresses (refresh the list from "
                "the Tor consensus or ET tor.rules); alert on CONNECT/SNI to "
                "check.torproject.org"))))
        flag(ctx, client)
        yield Finding(
            detector="tunnel.tor", title=f"Tor link {client} -> {relay}:{port}",
            technique="T1090.003", strategy="DET0359/AN1021",
            severity=severity_for(conf), confidence=round(conf, 3),
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "relay": relay, "in_port": port},
            evidence=evidence_of(r["ev"]), evidence_total=int(r["n_hits"]),
            explanation=explanation, mitigation=mitigation)
    yield from _onion(ctx)


def _onion(ctx: Context) -> Iterator[Finding]:
    q = f"""
    SELECT coalesce(src_ip, host) AS client, min(ts) AS first_seen, max(ts) AS last_seen,
           count(*) AS n, list_slice(list(DISTINCT lower(rtrim(query, '.'))), 1, 10) AS names,
           list_slice(list(DISTINCT dst_ip) FILTER (WHERE dst_ip IS NOT NULL), 1, 5)
               AS resolvers,
           list_slice(list({{'tbl': 'dns', 'uid': uid,
                             'summary': 'DNS ' || query || coalesce(' via ' || dst_ip, '')}}
                           ORDER BY ts), 1, {EVIDENCE_PULL}) AS ev
    FROM dns
    WHERE lower(rtrim(query, '.')) LIKE '%.onion' AND coalesce(src_ip, host) IS NOT NULL
      AND ts IS NOT NULL
    GROUP BY 1 ORDER BY first_seen
    """
    for r in ctx.rows(q):
        client, names = r["client"], clean_list(r["names"])
        conf = 0.5
        flag(ctx, client)
        yield Finding(
            detector="tunnel.tor", title=f"{client} looked up .onion names",
            technique="T1090.003", strategy="DET0359/AN1021",
            severity=severity_for(conf), confidence=conf,
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "onion": sorted(names)[:10]},
            evidence=evidence_of(r["ev"]), evidence_total=int(r["n"]),
            explanation=(f"{client} sent {r['n']} DNS question(s) for .onion names "
                         f"({', '.join(names[:5])}): a Tor client or tor2web use leaking the "
                         "hidden-service name to the resolver."),
            mitigation=Mitigation(ids=["M1037"], actions=[
                Action(kind="gateway", text="DNS RPZ: onion CNAME . (answer NXDOMAIN for .onion "
                       "and log the asking host)"),
                Action(kind="ips", text=(
                    'alert dns $HOME_NET any -> any any (msg:"hopguard .onion lookup"; '
                    'dns.query; content:".onion"; endswith; nocase; '
                    f'sid:{sid_for("onion")}; rev:1;)'))]))


# -- tunnel.fingerprint ------------------------------------------------------------------------

def fingerprint_priors(ctx: Context) -> dict[str, str]:
    priors = seeds.fingerprint_priors()
    for item in ctx.settings.tunnel.fingerprints:
        fp, _, label = item.partition("=")
        if fp.strip():
            priors[fp.strip().lower()] = label.strip() or "configured prior"
    return priors


@detector("tunnel.fingerprint", technique="T1572", tables=("tls",),
          summary="TLS client fingerprints of tunnel tools' libraries (weak priors, info/low)")
def fingerprint(ctx: Context) -> Iterator[Finding]:
    priors = fingerprint_priors(ctx)
    ctx.execute("CREATE OR REPLACE TEMP TABLE hg_fp_prior (fp VARCHAR, label VARCHAR)")
    ctx.con.executemany("INSERT INTO hg_fp_prior VALUES (?, ?)", [[k, v] for k, v in
                                                                   priors.items()])
    addr = ctx.addresses()
    q = f"""
    WITH m AS (
        SELECT t.uid, t.ts, t.src_ip AS client, t.dst_ip AS server, t.dst_port AS port,
               t.sni, p.fp, p.label
        FROM tls t JOIN hg_fp_prior p ON p.fp = lower(t.ja4) OR p.fp = lower(t.ja3)
        WHERE t.src_ip IS NOT NULL AND t.ts IS NOT NULL
    )
    SELECT m.client, m.fp, any_value(m.label) AS label, min(m.ts) AS first_seen,
           max(m.ts) AS last_seen, count(*) AS n,
           count(DISTINCT m.server) FILTER (WHERE NOT coalesce(a.internal, false))
               AS n_external,
           list_slice(list(DISTINCT m.server), 1, 10) AS servers,
           list_slice(list({{'tbl': 'tls', 'uid': m.uid,
                             'summary': m.client || ' -> ' || coalesce(m.server, '?') || ':'
                                 || coalesce(CAST(m.port AS VARCHAR), '?') || ' SNI '
                                 || coalesce(nullif(m.sni, ''), '(none)')}}
                           ORDER BY m.ts), 1, {EVIDENCE_PULL}) AS ev
    FROM m LEFT JOIN {addr} a ON a.ip = m.server
    GROUP BY m.client, m.fp ORDER BY first_seen
    """
    rows = ctx.rows(q)
    if not rows:
        return
    flagged: set[str] = ctx.cache.get(FLAGGED, set())
    for r in rows:
        client = r["client"]
        other = client in flagged
        conf = 0.3 if other else 0.15  # a prior: low at most, never medium
        servers = clean_list(r["servers"])
        sid = sid_for(f"fp:{r['fp']}")
        keyword = "ja4.hash" if "_" in r["fp"] else "ja3.hash"
        yield Finding(
            detector="tunnel.fingerprint",
            title=f"{client} TLS fingerprint of {r['label'].split(' (')[0]}",
            technique="T1572", strategy="DET0445/AN1230",
            severity="low" if other else "info", confidence=conf,
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "fingerprint": r["fp"]},
            evidence=evidence_of(r["ev"]), evidence_total=int(r["n"]),
            explanation=(
                f"{client} made {r['n']} TLS handshake(s) with fingerprint {r['fp']} "
                f"({r['label']}) to {len(servers)} server(s), {r['n_external']} external. "
                "A library fingerprint is a prior, not a verdict"
                + ("; this client also has another tunnel finding." if other else ".")),
            mitigation=Mitigation(ids=["M1031"], actions=[
                Action(kind="ips", text=(
                    f'alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"hopguard tunnel-tool '
                    f'TLS fingerprint {r["fp"]}"; {keyword}; content:"{r["fp"]}"; '
                    f"sid:{sid}; rev:1;)")),
                Action(kind="host", text=(
                    f"check which process on {client} opens TLS with this fingerprint "
                    "(ss -tnp / Sysmon EID 3) and whether it is an approved tool"))]),
            hosts=[client, *servers[:5]])
