"""Which addresses belong to which endpoint: the bridge between host names and IPs.

Theory of operation: endpoint telemetry names a machine (``host``: the Sysmon ``Computer``, the
auditd ``node=``, the macOS or ESXi host name); network telemetry names addresses. To put a
``socat`` process start and the relay it makes on the wire into one incident, each host name
needs its addresses. They come, best first, from:

1. ``[inventory] hosts`` (``name=ip`` entries): what the site declares; always wins.
2. The endpoint's own connection events joined to the flows a sensor saw. An inbound
   connection logged on host H from ``client:port`` at time t is the flow from ``client:port``
   near t, and that flow's responder address is H's. An outbound connection to ``server:port``
   at t gives the originator of the flow to ``server:port`` that started nearest t (from the
   port the endpoint logged, when it logs one: Sysmon ``SourcePort``); a DNAT'd inbound leg
   matches the original and the forwarded flow, and the forwarded one (to a port the host
   serves, else the later) is the host's. Each endpoint event is one vote, shared among equal
   candidates; an address goes to the host with the most votes, and an address two hosts claim
   equally goes to neither.
3. Addresses the endpoint reports as its own: the local address of an outbound connection
   (Sysmon ``SourceIp``), a bind to a specific address (auditd ``bind`` of ``10.10.2.7:1080``),
   and the destination a port-forward rule rewrites (``ip daddr 10.10.2.7 tcp dport 2222 dnat
   to ...``, ``-d 10.10.2.7 ... -j DNAT``): a DNAT relay logs no connection of its own.

Loopback, unspecified and link-local addresses never count: they name every machine.
The map is built once per analyze run (``ctx.cache``) from small aggregates; the flow side of
the join is one hash join over the flows of the few client ports the endpoints logged.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict

from hopguard.analytics.base import Context
from hopguard.errors import ConfigError

logger = logging.getLogger(__name__)

# seconds between an endpoint's connection event and the flow's start that still match
JOIN_SKEW = 5.0

# a host's further addresses need at least this share of its best address's votes
SECOND_SHARE = 0.5

_CACHE_KEY = "hg_hosts"


def _usable(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip.strip("[]").split("%")[0])
    except ValueError:
        return False
    return not (addr.is_loopback or addr.is_unspecified or addr.is_link_local
                or addr.is_multicast)


def declared_hosts(entries: list[str]) -> dict[str, list[str]]:
    """``[inventory] hosts`` as a map; a malformed entry is a configuration error."""
    out: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, ip = entry.partition("=")
        name, ip = name.strip(), ip.strip()
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"inventory.hosts: {entry!r} is not name=ip") from None
        if not sep or not name:
            raise ConfigError(f"inventory.hosts: {entry!r} is not name=ip")
        out.setdefault(name, [])
        if ip not in out[name]:
            out[name].append(ip)
    return out


_LEARN_SQL = f"""
WITH nc AS (
    SELECT row_number() OVER () AS n, host, direction, src_ip, src_port, dst_ip, dst_port,
           epoch(ts) AS t
    FROM netconn WHERE host IS NOT NULL AND ts IS NOT NULL
),
listening AS (SELECT DISTINCT host, dst_port AS port FROM nc WHERE direction = 'listen'),
cand AS (
    -- inbound: the flow from the logged client address and port; its responder is the host
    SELECT nc.n, nc.host, 'in' AS dir, f.dst_ip AS ip, l.port IS NOT NULL AS listened,
           epoch(f.ts) AS ft, abs(epoch(f.ts) - nc.t) AS skew
    FROM nc JOIN flow f ON f.src_ip = nc.src_ip AND f.src_port = nc.src_port
    LEFT JOIN listening l ON l.host = nc.host AND l.port = f.dst_port
    WHERE nc.direction = 'inbound' AND abs(epoch(f.ts) - nc.t) <= {JOIN_SKEW}
    UNION ALL
    -- outbound: the flow to the logged server (from the logged local port when there is one);
    -- its originator is the host
    SELECT nc.n, nc.host, 'out', f.src_ip, true, epoch(f.ts), abs(epoch(f.ts) - nc.t)
    FROM nc JOIN flow f ON f.dst_ip = nc.dst_ip AND f.dst_port = nc.dst_port
    WHERE nc.direction = 'outbound' AND (nc.src_port IS NULL OR f.src_port = nc.src_port)
      AND abs(epoch(f.ts) - nc.t) <= {JOIN_SKEW}
),
served AS (    -- a DNAT'd inbound leg matches two flows: keep the one to a port the host serves
    SELECT * FROM cand QUALIFY listened OR NOT bool_or(listened) OVER (PARTITION BY n)
),
kept AS (
    -- inbound: else the later flow (the forwarded packet is seen after the original);
    -- outbound: the flow that started nearest the connect (other clients of a busy server
    -- connect at other times)
    SELECT * FROM served
    QUALIFY CASE WHEN dir = 'in' THEN ft = max(ft) OVER (PARTITION BY n)
                 ELSE skew = min(skew) OVER (PARTITION BY n) END
),
votes AS (     -- one vote per endpoint event, shared among its candidate flows
    SELECT host, ip, 1.0 / count(*) OVER (PARTITION BY n) AS v FROM kept
    UNION ALL  -- what the endpoint says is its own address
    SELECT host, src_ip, 1.0 FROM nc WHERE direction = 'outbound' AND src_ip IS NOT NULL
    UNION ALL
    SELECT host, dst_ip, 1.0 FROM nc WHERE direction = 'listen' AND dst_ip IS NOT NULL
    UNION ALL  -- a port forward names the forwarding host's own address as what it rewrites
    SELECT host, nullif(regexp_extract(detail, '(?:ip6? daddr|-d) \\[?([0-9A-Fa-f.:]+)', 1), ''),
           1.0
    FROM config_change
    WHERE host IS NOT NULL AND source IN ('nft', 'iptables')
      AND regexp_matches(detail, '(?i)(dnat to|redirect to|-j dnat|-j redirect)')
)
SELECT host, ip, sum(v) AS votes FROM votes WHERE ip IS NOT NULL GROUP BY ALL
"""


def host_addresses(ctx: Context) -> dict[str, list[str]]:
    """Host name -> its addresses, best first (declared, then by votes)."""
    cached = ctx.cache.get(_CACHE_KEY)
    if cached is not None:
        return dict(cached)
    declared = declared_hosts(list(ctx.settings.inventory.hosts))
    claimed = {ip for ips in declared.values() for ip in ips}
    votes: dict[str, dict[str, float]] = defaultdict(dict)  # ip -> host -> votes
    for row in ctx.rows(_LEARN_SQL):
        if _usable(row["ip"]) and row["ip"] not in claimed:
            votes[row["ip"]][row["host"]] = float(row["votes"])
    learnt: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for ip, by_host in votes.items():
        ranked = sorted(by_host.items(), key=lambda kv: (-kv[1], kv[0]))
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            logger.info("address %s is claimed equally by %s; left unassigned", ip,
                        ", ".join(h for h, _ in ranked))
            continue
        learnt[ranked[0][0]].append((ranked[0][1], ip))
    result = {name: list(ips) for name, ips in declared.items()}
    for name, pairs in learnt.items():
        ips = result.setdefault(name, [])
        best = sorted(pairs, key=lambda p: (-p[0], p[1]))
        top = best[0][0]
        # a second address needs real support: a whole vote and half the best one's
        ips.extend(ip for v, ip in best
                   if ip not in ips and (v == top or (v >= 1.0 and v >= SECOND_SHARE * top)))
    ctx.cache[_CACHE_KEY] = result
    return dict(result)


def address_of(ctx: Context, host: str | None) -> str | None:
    """The best address of ``host``, or None when neither the inventory nor the telemetry
    gives one."""
    if not host:
        return None
    ips = host_addresses(ctx).get(host)
    return ips[0] if ips else None


def hosts_of(ctx: Context) -> dict[str, str]:
    """Address -> host name, for reports that want a name beside an IP."""
    out: dict[str, str] = {}
    for name, ips in host_addresses(ctx).items():
        for ip in ips:
            out.setdefault(ip, name)
    return out
