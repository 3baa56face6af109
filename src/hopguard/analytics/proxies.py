"""Proxy-protocol detectors: what went through SOCKS, CONNECT and forward proxies, who serves
them, who beacons through them, and which hosts behave like undeclared proxies.

Theory of operation. The ``proxy`` table has one row per handshake seen on the wire (packet
engine, Zeek socks.log/http.log, Suricata EVE): the client (``src_ip``), the proxy
(``dst_ip``:``dst_port``), the protocol, the requested target and the proxy's reply. TLS rows
that share the tunnel's uid carry the *inner* SNI. Four analytics read it:

``proxy.socks`` / ``proxy.connect`` / ``proxy.forward``
    Handshakes grouped per (client, proxy, port, target) with counts, so every proxied
    destination is reported at least as ``info``. Additive signals raise a score in 0..1 that
    sets the severity: a non-web target port (tunnelling another protocol, T1572), a ``.onion``
    or tor2web name (T1090.003), an internal target reached through a proxy (a pivot), an
    external proxy (T1090.002; more so when declared proxies exist and it bypasses them), a proxy
    port outside ``proxy.proxy_ports``, an undeclared proxy when an inventory exists, refused
    or failed-authentication replies (probing, password spraying through the proxy) and an
    inner SNI that differs from the requested name. The
    entities keep ``proxy`` and ``port`` so run.py marks declared proxies as sanctioned (low at
    most); a plain CONNECT to :443 scores 0.
``proxy.server``
    Internal hosts, other than the declared proxies, that answer a proxy protocol (any reply,
    success or refusal, proves the service; an unanswered request is weaker). First seen,
    client and target counts (T1090.001). Loopback proxies (a capture taken on the client) are
    left to the handshake findings.
``proxy.beacon``
    RITA-style beacon scoring on the *inner* destination with the real client: proxy rows give
    the client directly, proxy logs give it in ``X-Forwarded-For``. Per (client, target) in SQL:
    inter-arrival quartiles and median absolute deviation give Bowley-skew and MAD scores (RITA's
    TS score); the same over request sizes from the flow rows of the same uids gives the DS score;
    coverage ``(n - 1) * median interval / span`` says whether the connections fill the whole
    span evenly (a beacon) or come in bursts (browsing). Entities name ``client``, ``target`` and
    the proxy under ``via``: a beacon through a sanctioned proxy is still reported in full.
``proxy.hub``
    From the flow table of any source: an internal host with inbound connections from at least
    ``hub_min_clients`` internal clients and, while one of them is open (plus ``hub_slack``),
    outbound connections to at least ``hub_min_destinations`` external addresses (T1090.001).
    Only connections that carried data both ways count (scans and refused attempts do not make
    a client or a destination).
    Overlap is computed in one window pass: the running maximum end time of inbound flows at
    each outbound start. Servers of other kinds that fan in and out by design (resolvers, NTP,
    DHCP, mail relays, directory services: ``hub_exclude_ports``) are excluded by port on both
    sides, declared proxies and relays are skipped, and a host that also answers a proxy
    protocol is raised to high.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hopguard.analytics.base import (
    Action,
    Context,
    Evidence,
    Finding,
    Mitigation,
    detector,
    hostport,
    is_ip,
    is_v6,
    nft_drop_rule,
    severity_for,
    ts_of,
)

# Tor hidden services and the web gateways that reach them (Sigma's Tor onion rules).
ONION_SUFFIXES = (".onion",)
TOR2WEB_SUFFIXES = (
    ".onion.ly", ".onion.to", ".onion.link", ".onion.cab", ".onion.city", ".onion.direct",
    ".onion.ws", ".onion.pet", ".onion.sh", ".onion.top", ".onion.rip", ".onion.dog",
    ".onion.casa", ".onion.foundation", ".onion.guide", ".onion.in.net", ".onion.nu",
    ".onion.plus", ".onion.re", ".onion.si", ".onion.sx", ".tor2web.org", ".tor2web.io",
    ".tor2web.fi", ".tor2web.blutmagie.de", ".torlink.co", ".onion.gq", ".onion.lt",
    ".s1.tor-gateways.de", ".s2.tor-gateways.de", ".s3.tor-gateways.de", ".s4.tor-gateways.de",
    ".s5.tor-gateways.de", ".tor-gateways.de", ".onion.glass", ".onion.moe")
TOR_CLIENT_PORTS = (9050, 9150)

FAMILY_DETECTOR = {"socks": "proxy.socks", "connect": "proxy.connect", "forward": "proxy.forward"}

# The analytic that fits a network-sensor observation for each technique (attack-t1090.md).
STRATEGY = {
    "T1090": "DET0445/AN1233",
    "T1090.001": "DET0075/AN0208",
    "T1090.002": "DET0325/AN0926",
    "T1090.003": "DET0359/AN1024",
    "T1572": "DET0445/AN1233",
    "T1071.001": "DET0325/AN0926",
}

_SUCCESS_SQL = "(outcome = 'succeeded' OR regexp_matches(coalesce(outcome, ''), '^2[0-9][0-9]'))"
_AUTH_FAIL_SQL = ("(regexp_matches(coalesce(outcome, ''), '^407') OR regexp_matches("
                  "lower(coalesce(outcome, '')), 'auth|password|identd|user-?id'))")
_LOOPBACK_SQL = "({c} LIKE '127.%' OR {c} = '::1')"
_SAFE = re.compile(r"[^A-Za-z0-9._:\-\[\]/]")


# -- small helpers ------------------------------------------------------------------------------

def _is_loopback(ip: str | None) -> bool:
    return bool(ip) and (str(ip).startswith("127.") or ip == "::1")


def target_text(host: str | None, port: int | None) -> str:
    """``host:port`` (``[v6]:port``), ``host`` without a port, ``unknown`` without either."""
    if not host:
        host = "unknown"
    return host if port is None else hostport(host, port)


def _safe(text: str) -> str:
    """A value fit to paste into a rule: no quotes, semicolons or spaces."""
    return _SAFE.sub("", text)


def _sid(*parts: object) -> int:
    """A stable Suricata sid in the local range 1000000-1999999 (one per finding key)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return 1_000_000 + int.from_bytes(digest[:4], "big") % 1_000_000


def _hexbytes(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def _ips_rule(family: str, protocols: list[str], client: str | None, proxy: str | None,
              port: int | None, host: str | None, tport: int | None, sid: int) -> str:
    """A Suricata signature for the handshake: CONNECT/forward by URI or Host, SOCKS by the
    request bytes (RFC 1928 section 4, SOCKS4/4a request layout)."""
    src = client or "any"
    dst = proxy or "any"
    dport = str(port) if port is not None else "any"
    target = _safe(target_text(host, tport))
    msg = f'msg:"hopguard {FAMILY_DETECTOR.get(family, "proxy")} to {target}"'
    head = f"{src} any -> {dst} {dport}"
    tail = f"sid:{sid}; rev:1;)"
    h = _safe(host or "")
    if family == "connect" and h:
        return (f"alert http {head} ({msg}; flow:established,to_server; http.method; "
                f'content:"CONNECT"; http.uri; content:"{_safe(target_text(host, tport))}"; '
                f"nocase; {tail}")
    if family == "forward" and h:
        return (f"alert http {head} ({msg}; flow:established,to_server; http.host; "
                f'content:"{h}"; nocase; {tail}')
    pbytes = (tport or 0).to_bytes(2, "big")
    if family == "socks" and h and tport is not None:
        if is_ip(h) and not is_v6(h):
            addr = ipaddress.ip_address(h).packed
            if any(p.startswith("socks4") for p in protocols):
                req = b"\x04\x01" + pbytes + addr
            else:
                req = b"\x05\x01\x00\x01" + addr + pbytes
            return (f"alert tcp {head} ({msg}; flow:established,to_server; "
                    f'content:"|{_hexbytes(req)}|"; depth:{len(req)}; {tail}')
        if not is_ip(h):
            name = h.encode()[:255]
            if any(p.startswith("socks4") for p in protocols):
                req4a = _hexbytes(b"\x04\x01" + pbytes + b"\x00\x00\x00")
                return (f"alert tcp {head} ({msg}; flow:established,to_server; "
                        f'content:"|{req4a}|"; depth:7; content:"{h}|00|"; distance:0; '
                        f"nocase; {tail}")
            req = b"\x05\x01\x00\x03" + bytes([len(name)])
            return (f"alert tcp {head} ({msg}; flow:established,to_server; "
                    f'content:"|{_hexbytes(req)}|"; content:"{h}"; distance:0; '
                    f'within:{len(name)}; nocase; content:"|{_hexbytes(pbytes)}|"; distance:0; '
                    f"within:2; {tail}")
    return f"alert tcp {head} ({msg}; flow:established,to_server; {tail}"


def _squid_deny(host: str | None, tport: int | None, client: str | None) -> str:
    """A gateway policy line for a declared (Squid-style) proxy: deny this client that target."""
    h = _safe(host or "")
    dst = f"dst {h}" if is_ip(h) else f"dstdomain {h}"
    lines = [f"acl hg_target {dst}"]
    if tport is not None:
        lines.append(f"acl hg_port port {tport}")
    if client:
        lines.append(f"acl hg_client src {client}")
    deny = "http_access deny" + (" hg_client" if client else "") + " hg_target" + \
        (" hg_port" if tport is not None else "")
    return "; ".join(lines) + "; " + deny


# -- proxy.socks / proxy.connect / proxy.forward ------------------------------------------------

@dataclass(slots=True)
class HandshakeGroup:
    """The handshakes of one (family, client, proxy, port, target), scored."""

    row: dict[str, Any]
    score: float = 0.0
    signals: list[str] = field(default_factory=list)
    technique: str = "T1090"

    def add(self, points: float, text: str) -> None:
        self.score += points
        self.signals.append(f"{text} (+{points:.2f})")


def _handshake_rows(ctx: Context, family: str) -> list[dict[str, Any]]:
    addr = ctx.addresses()
    fam_sql = ("CASE WHEN lower(protocol) LIKE 'socks%' THEN 'socks' "
               "WHEN lower(protocol) = 'http-forward' THEN 'forward' "
               "WHEN lower(protocol) LIKE 'http%' THEN 'connect' ELSE 'socks' END")
    return ctx.rows(f"""
        WITH inner_tls AS (
            SELECT uid, any_value(sni) AS sni FROM tls
            WHERE sni IS NOT NULL AND uid IN (SELECT uid FROM proxy WHERE uid IS NOT NULL)
            GROUP BY uid),
        p AS (
            SELECT p.*, {fam_sql} AS family,
                   lower(coalesce(nullif(p.target_host, ''), p.target_ip)) AS thost,
                   t.sni AS inner_sni,
                   {_SUCCESS_SQL} AS ok,
                   (outcome IS NOT NULL AND NOT {_SUCCESS_SQL}) AS failed,
                   (outcome IS NOT NULL AND {_AUTH_FAIL_SQL}) AS auth_failed
            FROM proxy p LEFT JOIN inner_tls t USING (uid))
        SELECT g.*, ca.internal AS client_internal, pa.internal AS proxy_internal,
               ta.internal AS target_ip_internal
        FROM (
            SELECT src_ip AS client, dst_ip AS proxy, dst_port AS port, thost,
                   target_port AS tport, any_value(target_ip) AS target_ip,
                   list(DISTINCT protocol ORDER BY protocol)
                       FILTER (WHERE protocol IS NOT NULL) AS protocols,
                   count(*) AS n, count(*) FILTER (WHERE ok) AS n_ok,
                   count(*) FILTER (WHERE failed) AS n_failed,
                   count(*) FILTER (WHERE auth_failed) AS n_auth_failed,
                   count(DISTINCT "user") AS n_users,
                   list(DISTINCT "user" ORDER BY "user")
                       FILTER (WHERE "user" IS NOT NULL) AS users,
                   list(DISTINCT outcome ORDER BY outcome)
                       FILTER (WHERE outcome IS NOT NULL) AS outcomes,
                   list(DISTINCT lower(inner_sni) ORDER BY lower(inner_sni))
                       FILTER (WHERE inner_sni IS NOT NULL) AS snis,
                   min(ts) AS first_seen, max(ts) AS last_seen,
                   list(uid ORDER BY ts) FILTER (WHERE uid IS NOT NULL) AS uids,
                   list(coalesce(outcome, 'no reply') ORDER BY ts) AS outcome_seq
            FROM p WHERE family = ? AND dst_ip IS NOT NULL
            GROUP BY ALL) g
        LEFT JOIN {addr} ca ON ca.ip = g.client
        LEFT JOIN {addr} pa ON pa.ip = g.proxy
        LEFT JOIN {addr} ta ON ta.ip = g.target_ip
        ORDER BY g.first_seen, g.proxy, g.port, g.client, g.thost""", [family])


def _sni_differs(host: str | None, snis: list[str]) -> list[str]:
    """Inner SNIs that name neither the requested host nor a name under it."""
    if not host or is_ip(host):
        return []
    h = host.rstrip(".").lower()
    return [s for s in snis if s and s.rstrip(".") != h and not s.rstrip(".").endswith("." + h)
            and not h.endswith("." + s.rstrip("."))]


def _score_handshakes(ctx: Context, g: HandshakeGroup, family: str) -> None:
    s = ctx.settings.proxy
    inv = ctx.inventory
    r = g.row
    host, tport = r["thost"], r["tport"]
    client, proxy, port = r["client"], r["proxy"], r["port"]
    declared = inv.is_proxy(proxy, port)
    techniques: list[str] = []
    if family in ("socks", "connect") and tport is not None and tport not in s.web_ports:
        g.add(0.35, f"target port {tport} is not a web port ({', '.join(map(str, s.web_ports))}"
              "): another protocol tunnelled through the proxy")
        techniques.append("T1572")
    elif family == "forward" and tport is not None and tport not in s.web_ports:
        g.add(0.2, f"forward-proxy request to non-web port {tport}")
    if host and host.rstrip(".").endswith(ONION_SUFFIXES):
        g.add(0.6, f"target {host} is a Tor hidden service")
        techniques.insert(0, "T1090.003")
    elif host and host.rstrip(".").endswith(TOR2WEB_SUFFIXES):
        g.add(0.5, f"target {host} is a tor2web gateway name")
        techniques.insert(0, "T1090.003")
    if port in TOR_CLIENT_PORTS and family == "socks":
        g.add(0.2, f"proxy port {port} is the Tor client's SOCKS port")
        if "T1090.003" not in techniques:
            techniques.append("T1090.003")
    target_internal = r["target_ip_internal"]
    if target_internal is None and host and is_ip(host):
        target_internal = inv.is_internal(host)
    if target_internal and not _is_loopback(host) and client != r["target_ip"]:
        if r["client_internal"] is False:
            g.add(0.5, f"an external client ({client}) reaches internal {host} through the proxy")
        elif client and not _is_loopback(client) and client != proxy:
            g.add(0.3, f"internal target {host} reached from {client} through another host "
                  "(pivot)")
        if r["proxy_internal"]:
            techniques.append("T1090.001")
    if r["proxy_internal"] is False and r["client_internal"]:
        g.add(0.2, f"internal client uses an external proxy {proxy}")
        if inv.proxies:  # a sanctioned way out exists: this one goes around it
            g.add(0.3, "the declared proxies are bypassed")
        techniques.append("T1090.002")
    if port is not None and port not in s.proxy_ports and port not in TOR_CLIENT_PORTS:
        g.add(0.15, f"proxy listens on non-standard port {port}")
    if inv.proxies and not declared and r["proxy_internal"] and not _is_loopback(proxy):
        g.add(0.25, f"{proxy}:{port} is not a declared proxy")
    n_failed, n_auth = int(r["n_failed"] or 0), int(r["n_auth_failed"] or 0)
    if n_auth >= s.failure_min or (n_auth and int(r["n_users"] or 0) >= s.failure_min):
        g.add(0.5, f"{n_auth} failed authentications ({r['n_users']} user names): password "
              "spraying through the proxy")
    elif n_failed >= s.failure_min:
        g.add(0.3, f"{n_failed} refused handshakes: probing through the proxy")
    elif n_failed:
        g.add(0.1, f"{n_failed} refused handshake(s)")
    differ = _sni_differs(host, list(r["snis"] or []))
    if differ:
        g.add(0.5, f"inner TLS SNI {', '.join(differ[:3])} differs from the requested {host}")
        techniques.append("T1090.004")
    g.score = round(min(1.0, g.score), 3)
    if techniques:
        g.technique = techniques[0]
    elif r["proxy_internal"] and r["client_internal"]:
        g.technique = "T1090.001" if not declared else "T1090"
    else:
        g.technique = "T1090"


def _handshake_findings(ctx: Context, family: str) -> Iterator[Finding]:
    name = FAMILY_DETECTOR[family]
    label = {"socks": "SOCKS", "connect": "HTTP CONNECT", "forward": "forward-proxy"}[family]
    for r in _handshake_rows(ctx, family):
        g = HandshakeGroup(r)
        _score_handshakes(ctx, g, family)
        client, proxy, port = r["client"], r["proxy"], r["port"]
        target = target_text(r["thost"], r["tport"])
        protocols = list(r["protocols"] or [])
        entities: dict[str, Any] = {"proxy": proxy, "port": port, "target": target,
                                    "client": client, "protocol": protocols}
        if r["target_ip"]:
            entities["target_ip"] = r["target_ip"]
        n = int(r["n"])
        uids = list(r["uids"] or [])
        outs = list(r["outcome_seq"] or [])
        evidence = [Evidence(table="proxy", uid=u, summary=(
            f"{'/'.join(protocols) or label} {client} -> {proxy}:{port} -> {target}: "
            f"{outs[i] if i < len(outs) else ''}"))
            for i, u in enumerate(uids[:ctx.settings.analyze.max_evidence])]
        signals = "; ".join(g.signals) if g.signals else "no risk signal (a plain proxied " \
            "connection, reported so every proxied destination is visible)"
        sni = f" Inner TLS SNI: {', '.join(r['snis'])}." if r["snis"] else ""
        users = f" Users: {', '.join(r['users'][:5])}." if r["users"] else ""
        outcomes = ", ".join(r["outcomes"] or []) or "no reply seen"
        explanation = (
            f"{n} {label} handshake(s) from {client} through {proxy}:{port} to {target} "
            f"({r['n_ok']} succeeded, {r['n_failed']} refused; replies: {outcomes}).{sni}{users}"
            f" Score {g.score:.2f}: {signals}.")
        sev = severity_for(g.score, high=0.8, medium=0.5, low=0.25)
        declared = ctx.inventory.is_proxy(proxy, port)
        actions = []
        if declared and family in ("connect", "forward"):
            actions.append(Action(kind="gateway", text=_squid_deny(r["thost"], r["tport"],
                                                                   client)))
        elif _is_loopback(proxy):
            actions.append(Action(kind="host", text=(
                f"on {client}: find the local proxy listening on port {port} "
                f"(ss -ltnp 'sport = :{port}') and stop it")))
        else:
            actions.append(Action(kind="nft", text=nft_drop_rule(client, proxy, port)))
        actions.append(Action(kind="ips", text=_ips_rule(
            family, protocols, client, proxy, port, r["thost"], r["tport"],
            _sid(name, client, proxy, port, target))))
        mids = ["M1037", "M1031"] + (["M1020"] if "T1090.004" in g.technique else [])
        yield Finding(
            detector=name,
            title=f"{label} via {target_text(proxy, port)} to {target}",
            technique=g.technique, strategy=STRATEGY.get(g.technique, "DET0445/AN1233"),
            severity=sev, confidence=round(min(0.95, max(0.2, g.score)), 3),
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities=entities, evidence=evidence, evidence_total=n, explanation=explanation,
            mitigation=Mitigation(ids=mids, actions=actions),
            hosts=[h for h in (client, proxy, r["target_ip"]) if h])


@detector("proxy.socks", summary="SOCKS4/4a/5 handshakes per client, proxy and inner target, "
          "scored (non-web ports, onion names, pivots, refusals, SNI mismatch)",
          technique="T1090", tables=("proxy", "tls"))
def detect_socks(ctx: Context) -> Iterable[Finding]:
    return list(_handshake_findings(ctx, "socks"))


@detector("proxy.connect", summary="HTTP CONNECT tunnels per client, proxy and inner target, "
          "scored like SOCKS", technique="T1090", tables=("proxy", "tls"))
def detect_connect(ctx: Context) -> Iterable[Finding]:
    return list(_handshake_findings(ctx, "connect"))


@detector("proxy.forward", summary="forward-proxy (absolute-URI) requests per client, proxy "
          "and target", technique="T1090", tables=("proxy",))
def detect_forward(ctx: Context) -> Iterable[Finding]:
    return list(_handshake_findings(ctx, "forward"))


# -- proxy.server -------------------------------------------------------------------------------

@detector("proxy.server", summary="internal hosts that serve a proxy protocol and are not "
          "declared proxies", technique="T1090.001", tables=("proxy",))
def detect_server(ctx: Context) -> Iterable[Finding]:
    addr = ctx.addresses()
    s = ctx.settings.proxy
    rows = ctx.rows(f"""
        WITH p AS (
            SELECT p.*, {_SUCCESS_SQL} AS ok,
                   target_text AS target, ca.internal AS client_internal,
                   ta.internal AS target_internal
            FROM (SELECT *, CASE WHEN coalesce(nullif(target_host, ''), target_ip) IS NULL
                                 THEN NULL
                                 ELSE lower(coalesce(nullif(target_host, ''), target_ip))
                                      || ':' || coalesce(CAST(target_port AS VARCHAR), '?')
                            END AS target_text FROM proxy) p
            JOIN {addr} pa ON pa.ip = p.dst_ip AND pa.internal
            LEFT JOIN {addr} ca ON ca.ip = p.src_ip
            LEFT JOIN {addr} ta ON ta.ip = p.target_ip
            WHERE NOT {_LOOPBACK_SQL.format(c="p.dst_ip")})
        SELECT dst_ip AS proxy, dst_port AS port,
               list(DISTINCT protocol ORDER BY protocol) FILTER (WHERE protocol IS NOT NULL)
                   AS protocols,
               count(*) AS n, count(*) FILTER (WHERE outcome IS NOT NULL) AS answered,
               count(*) FILTER (WHERE ok) AS n_ok,
               count(DISTINCT src_ip) AS n_clients, count(DISTINCT target) AS n_targets,
               list(DISTINCT src_ip ORDER BY src_ip) FILTER (WHERE src_ip IS NOT NULL)
                   AS clients,
               list(DISTINCT target ORDER BY target) FILTER (WHERE target IS NOT NULL)
                   AS targets,
               bool_or(client_internal IS FALSE) AS external_clients,
               bool_or(target_internal AND ok) AS internal_targets,
               min(ts) AS first_seen, max(ts) AS last_seen,
               list(uid ORDER BY ts) FILTER (WHERE uid IS NOT NULL) AS uids,
               list(coalesce(src_ip, '?') || ' -> ' || coalesce(target, '?') || ': '
                    || coalesce(outcome, 'no reply') ORDER BY ts) AS summaries
        FROM p GROUP BY dst_ip, dst_port ORDER BY first_seen, proxy, port""")
    servers: dict[str, list[int]] = {}
    skipped = 0
    for r in rows:
        proxy, port = r["proxy"], r["port"]
        servers.setdefault(proxy, []).append(port)
        if ctx.inventory.is_proxy(proxy, port):
            skipped += 1
            continue
        answered, n_ok = int(r["answered"]), int(r["n_ok"])
        signals = []
        if answered:
            score = 0.6
            signals.append(f"answered {answered} of {r['n']} handshakes ({n_ok} succeeded)")
        else:
            score = 0.3
            signals.append(f"{r['n']} handshakes sent to it, no reply seen")
        if r["internal_targets"]:
            score += 0.15
            signals.append("carried connections to internal targets (pivot)")
        if r["external_clients"]:
            score += 0.15
            signals.append("reached by external clients")
        if port is not None and port not in s.proxy_ports:
            score += 0.1
            signals.append(f"non-standard proxy port {port}")
        score = min(1.0, score)
        protocols = list(r["protocols"] or [])
        clients, targets = list(r["clients"] or []), list(r["targets"] or [])
        uids, summ = list(r["uids"] or []), list(r["summaries"] or [])
        evidence = [Evidence(table="proxy", uid=u, summary=summ[i] if i < len(summ) else "")
                    for i, u in enumerate(uids[:ctx.settings.analyze.max_evidence])]
        first = ts_of(r["first_seen"])
        explanation = (
            f"Internal host {proxy} serves {'/'.join(protocols) or 'a proxy protocol'} on port "
            f"{port}, first seen {first.isoformat()}Z: {r['n_clients']} client(s) "
            f"({', '.join(clients[:5])}{' ...' if len(clients) > 5 else ''}), "
            f"{r['n_targets']} target(s) ({', '.join(targets[:5])}"
            f"{' ...' if len(targets) > 5 else ''}). It is not in [inventory] proxies. "
            f"Score {score:.2f}: {'; '.join(signals)}.")
        yield Finding(
            detector="proxy.server",
            title=f"undeclared {'/'.join(protocols) or 'proxy'} server on "
                  f"{target_text(proxy, port)}",
            technique="T1090.001", strategy=STRATEGY["T1090.001"],
            severity=severity_for(score, high=0.85, medium=0.5, low=0.25),
            confidence=round(min(0.95, score), 3), first_seen=first,
            last_seen=ts_of(r["last_seen"]),
            entities={"proxy": proxy, "port": port, "protocol": protocols,
                      "clients": clients[:50], "n_clients": int(r["n_clients"]),
                      "n_targets": int(r["n_targets"])},
            evidence=evidence, evidence_total=int(r["n"]), explanation=explanation,
            mitigation=Mitigation(ids=["M1031", "M1037"], actions=[
                Action(kind="nft", text=nft_drop_rule(None, proxy, port)),
                Action(kind="host", text=(
                    f"on {proxy}: find the process listening on port {port} "
                    f"(ss -ltnp 'sport = :{port}'), stop it and remove its persistence")),
                Action(kind="ips", text=(
                    f"alert tcp any any -> {proxy} {port} (msg:\"hopguard proxy.server "
                    f"undeclared proxy {_safe(target_text(proxy, port))}\"; "
                    f"flow:established,to_server; sid:{_sid('proxy.server', proxy, port)}; "
                    "rev:1;)")),
                Action(kind="inventory", text=(
                    f"if {proxy}:{port} is an approved proxy, add \"{target_text(proxy, port)}\""
                    " to [inventory] proxies"))]),
            hosts=[proxy, *clients[:20]])
    ctx.cache["proxy.servers"] = servers
    if skipped:
        ctx.note(f"proxy.server: {skipped} declared proxy service(s) not reported")


# -- proxy.beacon -------------------------------------------------------------------------------

@detector("proxy.beacon", summary="RITA-style beaconing to an inner destination through a "
          "proxy, attributed to the real client", technique="T1071.001",
          tables=("proxy", "http", "flow", "tls"))
def detect_beacon(ctx: Context) -> Iterable[Finding]:
    s = ctx.settings.proxy
    rows = ctx.rows("""
        WITH ev0 AS (
            SELECT src_ip AS client, dst_ip AS via, dst_port AS via_port,
                   lower(coalesce(nullif(target_host, ''), target_ip)) AS thost,
                   target_port AS tport, ts, uid
            FROM proxy
            WHERE src_ip IS NOT NULL AND ts IS NOT NULL
              AND coalesce(nullif(target_host, ''), target_ip) IS NOT NULL
            UNION ALL
            -- a proxy's own log (or the sensor behind it): the client is in X-Forwarded-For
            SELECT trim(split_part(x_forwarded_for, ',', 1)), src_ip, NULL,
                   lower(split_part(host, ':', 1)), dst_port, ts, uid
            FROM http
            WHERE nullif(trim(x_forwarded_for), '') IS NOT NULL AND host IS NOT NULL
              AND ts IS NOT NULL
              AND (uid IS NULL OR uid NOT IN (SELECT uid FROM proxy WHERE uid IS NOT NULL))),
        ev AS (  -- one event per connection even when two sensors logged it
            SELECT client, thost, tport, any_value(via) AS via, any_value(via_port) AS via_port,
                   min(ts) AS ts, uid
            FROM ev0 GROUP BY client, thost, tport, coalesce(uid, CAST(ts AS VARCHAR)), uid),
        sized AS (
            SELECT ev.*, f.bytes, t.sni
            FROM ev
            LEFT JOIN (SELECT uid, max(coalesce(src_bytes, 0) + coalesce(dst_bytes, 0)) AS bytes
                       FROM flow WHERE uid IN (SELECT uid FROM ev) GROUP BY uid) f USING (uid)
            LEFT JOIN (SELECT uid, any_value(lower(sni)) AS sni FROM tls
                       WHERE sni IS NOT NULL AND uid IN (SELECT uid FROM ev) GROUP BY uid) t
                 USING (uid)),
        iv AS (
            SELECT *, epoch(ts) - lag(epoch(ts)) OVER (
                PARTITION BY client, thost, tport ORDER BY ts) AS dt
            FROM sized),
        g AS (
            SELECT client, thost, tport, count(*) AS n, min(ts) AS first_seen,
                   max(ts) AS last_seen, epoch(max(ts)) - epoch(min(ts)) AS span,
                   quantile_cont(dt, [0.25, 0.5, 0.75]) AS tq, mad(dt) AS tmad,
                   count(bytes) AS n_sized,
                   quantile_cont(bytes, [0.25, 0.5, 0.75]) AS bq, mad(bytes) AS bmad,
                   list(DISTINCT via || coalesce(':' || via_port, '') ORDER BY
                        via || coalesce(':' || via_port, '')) AS vias,
                   list(DISTINCT via ORDER BY via) AS via_ips,
                   list(uid ORDER BY ts) FILTER (WHERE uid IS NOT NULL) AS uids,
                   list(DISTINCT sni ORDER BY sni) FILTER (WHERE sni IS NOT NULL) AS snis
            FROM iv GROUP BY client, thost, tport HAVING count(*) >= ?)
        SELECT * FROM g ORDER BY first_seen, client, thost""", [s.beacon_min_connections])
    wb = s.beacon_bytes_weight
    for r in rows:
        ts_skew, ts_mad = _regularity(r["tq"], r["tmad"])
        ts_score = (ts_skew + ts_mad) / 2
        span, n = float(r["span"] or 0.0), int(r["n"])
        median_dt = float(r["tq"][1]) if r["tq"] and r["tq"][1] is not None else 0.0
        cover = min(1.0, (n - 1) * median_dt / span) if span > 0 else 0.0
        parts = [(ts_score, 1 - wb - 0.35 if wb else 0.65), (cover, 0.35)]
        ds_text = "request sizes unknown"
        if wb and int(r["n_sized"] or 0) >= n / 2 and r["bq"] is not None:
            ds_skew, ds_mad = _regularity(r["bq"], r["bmad"], min_iqr=10.0)
            parts.append(((ds_skew + ds_mad) / 2, wb))
            ds_text = (f"size skew score {ds_skew:.2f}, size MAD score {ds_mad:.2f} "
                       f"(median {float(r['bq'][1]):.0f} bytes)")
        score = sum(v * w for v, w in parts) / sum(w for _, w in parts)
        if score < s.beacon_score:
            continue
        high_at = s.beacon_score + (1 - s.beacon_score) / 2
        sev = "high" if score >= high_at and n >= 2 * s.beacon_min_connections else "medium"
        client, target = r["client"], target_text(r["thost"], r["tport"])
        vias = list(r["vias"] or [])
        via_ips = [v for v in (r["via_ips"] or []) if v]
        snis = [x for x in (r["snis"] or []) if x]
        uids = list(r["uids"] or [])
        evidence = [Evidence(table="proxy", uid=u, summary=f"{client} via "
                             f"{', '.join(vias)} -> {target}")
                    for u in uids[:ctx.settings.analyze.max_evidence]]
        explanation = (
            f"{client} connected {n} times to {target} through {', '.join(vias)} over "
            f"{span:.1f} s: median interval {median_dt:.2f} s, MAD {float(r['tmad'] or 0):.2f}"
            f" s (timing skew score {ts_skew:.2f}, MAD score {ts_mad:.2f}), coverage "
            f"{cover:.2f}; {ds_text}. Beacon score {score:.2f} >= {s.beacon_score:.2f}."
            + (f" Inner TLS SNI: {', '.join(snis)}." if snis else "")
            + " The proxy hides the client from the destination and the destination from "
              "flow records; the score is computed on the inner destination.")
        host = _safe(r["thost"] or "")
        actions = [Action(kind="gateway", text=_squid_deny(r["thost"], r["tport"], None))]
        actions.append(Action(kind="ips", text=(
            f"alert http {client} any -> any any (msg:\"hopguard proxy.beacon {client} to "
            f"{_safe(target)}\"; flow:established,to_server; http.method; content:\"CONNECT\"; "
            f"http.uri; content:\"{host}\"; nocase; sid:{_sid('proxy.beacon', client, target)}; "
            "rev:1;)")))
        actions.append(Action(kind="host", text=f"isolate {client} and find the process that "
                              f"connects to {target} every ~{median_dt:.0f} s"))
        yield Finding(
            detector="proxy.beacon",
            title=f"{client} beacons to {target} every ~{median_dt:.1f} s through a proxy",
            technique="T1071.001", strategy=STRATEGY["T1071.001"], severity=sev,
            confidence=round(min(0.95, score * min(1.0, n / (2 * s.beacon_min_connections))
                                 + 0.05), 3),
            first_seen=ts_of(r["first_seen"]), last_seen=ts_of(r["last_seen"]),
            entities={"client": client, "target": target, "via": vias,
                      "connections": n, "interval": round(median_dt, 3)},
            evidence=evidence, evidence_total=n, explanation=explanation,
            mitigation=Mitigation(ids=["M1031", "M1037"], actions=actions),
            hosts=[client, *via_ips])


def _regularity(q: list[float] | None, mad: float | None,
                min_iqr: float = 0.0) -> tuple[float, float]:
    """RITA's two regularity subscores from quartiles and MAD: 1 - |Bowley skew| and
    (median - MAD) / median, each in 0..1. Like RITA, a spread below ``min_iqr`` (or below 1 %
    of the median) counts as no skew: the quartiles of near-constant values are noise."""
    if not q or any(v is None for v in q):
        return 0.0, 0.0
    q1, q2, q3 = (float(v) for v in q)
    if q3 - q1 <= max(min_iqr, 0.01 * abs(q2)):
        skew = 1.0
    else:
        skew = 1.0 - min(1.0, abs((q3 + q1 - 2 * q2) / (q3 - q1)))
    m = float(mad or 0.0)
    madscore = max(0.0, (q2 - m) / q2) if q2 > 0 else 0.0
    return skew, madscore


# -- proxy.hub ----------------------------------------------------------------------------------

@detector("proxy.hub", summary="undeclared internal hosts with fan-in from internal clients "
          "and overlapping fan-out to external destinations", technique="T1090.001",
          tables=("flow",))
def detect_hub(ctx: Context) -> Iterable[Finding]:
    s = ctx.settings.proxy
    addr = ctx.addresses()
    excl = ", ".join(str(int(p)) for p in s.hub_exclude_ports) or "-1"
    rows = ctx.rows(f"""
        WITH f AS (
            SELECT f.uid, f.src_ip, f.dst_ip, f.dst_port, f.ts,
                   epoch(f.ts) AS t0, epoch(f.ts) + coalesce(f.duration, 0) AS t1,
                   sa.internal AS si, da.internal AS di
            FROM flow f JOIN {addr} sa ON sa.ip = f.src_ip JOIN {addr} da ON da.ip = f.dst_ip
            WHERE f.ts IS NOT NULL AND f.src_ip <> f.dst_ip
              AND f.src_bytes > 0 AND f.dst_bytes > 0
              AND coalesce(f.dst_port, -1) NOT IN ({excl})
              AND NOT {_LOOPBACK_SQL.format(c="f.src_ip")}
              AND NOT {_LOOPBACK_SQL.format(c="f.dst_ip")}),
        inb AS (SELECT dst_ip AS h, src_ip AS peer, dst_port, uid, t0, t1, 0 AS kind
                FROM f WHERE si AND di),
        cand AS (SELECT h FROM inb GROUP BY h HAVING count(DISTINCT peer) >= ?),
        outb AS (SELECT src_ip AS h, dst_ip AS peer, dst_port, uid, t0, t1, 1 AS kind
                 FROM f WHERE si AND NOT di AND src_ip IN (SELECT h FROM cand)),
        ev AS (
            SELECT *, max(CASE WHEN kind = 0 THEN t1 END) OVER (
                PARTITION BY h ORDER BY t0, kind ROWS UNBOUNDED PRECEDING) AS open_until
            FROM (SELECT * FROM inb WHERE h IN (SELECT h FROM cand) UNION ALL
                  SELECT * FROM outb)),
        covered AS (SELECT * FROM ev WHERE kind = 1 AND t0 <= open_until + ?),
        o AS (SELECT h, count(DISTINCT peer) AS n_dst, count(*) AS n_out_cov,
                     min(t0) AS o_first, max(t0) AS o_last,
                     list(DISTINCT peer ORDER BY peer)[1:20] AS dsts,
                     list(uid ORDER BY t0)[1:20] AS out_uids
              FROM covered GROUP BY h HAVING count(DISTINCT peer) >= ?),
        i AS (SELECT h, count(DISTINCT peer) AS n_cli, count(*) AS n_in,
                     min(t0) AS i_first, max(t1) AS i_last,
                     list(DISTINCT peer ORDER BY peer)[1:50] AS clients,
                     list(DISTINCT dst_port ORDER BY dst_port)[1:10] AS ports,
                     list(uid ORDER BY t0)[1:20] AS in_uids
              FROM inb WHERE h IN (SELECT h FROM o) GROUP BY h)
        SELECT i.*, o.*, (SELECT count(*) FROM outb WHERE outb.h = i.h) AS n_out
        FROM i JOIN o USING (h) ORDER BY i_first, h""",
        [s.hub_min_clients, s.hub_slack, s.hub_min_destinations])
    servers: dict[str, list[int]] = ctx.cache.get("proxy.servers", {})
    for r in rows:
        h = r["h"]
        if ctx.inventory.is_relay(h):
            continue
        n_cli, n_dst = int(r["n_cli"]), int(r["n_dst"])
        n_out, n_cov = int(r["n_out"] or 0), int(r["n_out_cov"])
        ratio = n_cov / n_out if n_out else 0.0
        serves = h in servers
        score = 0.5 + 0.1 * min(1.0, n_cli / (2 * s.hub_min_clients)) + \
            0.1 * min(1.0, n_dst / (2 * s.hub_min_destinations)) + 0.1 * ratio
        if serves:
            score += 0.25
        score = min(1.0, score)
        first = ts_of(min(float(r["i_first"]), float(r["o_first"])))
        last = ts_of(max(float(r["i_last"]), float(r["o_last"])))
        ports = [p for p in (r["ports"] or []) if p is not None]
        clients = list(r["clients"] or [])
        evidence = [Evidence(table="flow", uid=u, summary=f"inbound client -> {h}")
                    for u in (r["in_uids"] or [])[:10] if u]
        evidence += [Evidence(table="flow", uid=u, summary=f"{h} -> external, while a client "
                              "connection was open") for u in (r["out_uids"] or [])[:10] if u]
        explanation = (
            f"{h} accepted {r['n_in']} connections from {n_cli} internal clients (ports "
            f"{', '.join(map(str, ports))}) and, while they were open (+{s.hub_slack:g} s), "
            f"opened {n_cov} connections to {n_dst} external destinations ({ratio:.0%} of its "
            f"{n_out} external connections); thresholds {s.hub_min_clients} clients and "
            f"{s.hub_min_destinations} destinations. "
            + (f"It also answers a proxy protocol on port(s) "
               f"{', '.join(map(str, servers[h]))}. " if serves else "")
            + f"It is not a declared proxy or relay. Score {score:.2f}.")
        actions = [Action(kind="nft", text=f"nft add rule inet filter forward "
                          f"{'ip6' if is_v6(h) else 'ip'} saddr {h} ct state new drop"),
                   Action(kind="inventory", text=f"if {h} is an approved proxy or gateway, add "
                          f"it to [inventory] proxies or relays")]
        if ports:
            actions.append(Action(kind="ips", text=(
                f"alert tcp any any -> {h} {ports[0]} (msg:\"hopguard proxy.hub {h}\"; "
                f"flow:established,to_server; sid:{_sid('proxy.hub', h)}; rev:1;)")))
        yield Finding(
            detector="proxy.hub",
            title=f"{h} acts as an undeclared proxy hub: {n_cli} clients in, "
                  f"{n_dst} external destinations out",
            technique="T1090.001", strategy=STRATEGY["T1090.001"],
            severity="high" if score >= 0.85 else "medium",
            confidence=round(min(0.9, score - 0.1), 3), first_seen=first, last_seen=last,
            entities={"hub": h, "in_ports": ports, "clients": clients,
                      "destinations": n_dst},
            evidence=evidence, evidence_total=int(r["n_in"]) + n_cov,
            explanation=explanation,
            mitigation=Mitigation(ids=["M1031", "M1037"], actions=actions),
            hosts=[h, *clients[:20]])
