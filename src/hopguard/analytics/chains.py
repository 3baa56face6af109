"""chain.multihop: relay pairs joined into paths A -> B -> ... -> Z (T1090.003).

Theory of operation. bridge.relay leaves one row per (inbound leg, outbound leg) pair in the
temp table named by ``ctx.cache["relay_pairs"]``. Two pairs chain when the outbound flow of one
is the inbound flow of the next (``out_uid = in_uid``): the same connection left relay B and
entered relay C. A recursive CTE (analytics-notes §3.7) starts from pairs whose inbound flow is
nobody's outbound flow, extends a path one pair at a time up to chain.max_hops flows, refuses a
step to an address already on the path (no loops), and keeps only maximal paths (no pair
continues them, or the hop bound stopped them).

What counts as a chain follows the lab truth: socat-relay (one relay, two flows) lists no chain,
three-hop-chain lists [ws-042, app-07, db-09, c2] (two relays, three flows). So a path needs
chain.min_relays (default 2) relays; a single relay is already a bridge.relay finding. The bench's
planted "2-flow chains" are single relays and are counted through bridge.relay.

Proxy handshakes extend paths past what the sensor sees. A SOCKS or CONNECT request on a
connection names the hop after its destination, and a second request inside the tunnel (the
packet engine parses tunnelled bytes again on the same uid) names the one after that. So a path
whose last connection carries such requests goes on to their targets, and a connection that no
relay pair covers but that carries two or more nested requests (proxychains through SOCKS
servers whose onward legs cross no sensor) is a path of its own: client, proxy, each target.

One finding per distinct address path and destination port, with every flow path as evidence.
"""

from __future__ import annotations

from typing import Any

from hopguard.analytics.base import (
    Action,
    Context,
    Evidence,
    Finding,
    Mitigation,
    detector,
    hostport,
    severity_for,
    ts_of,
)
from hopguard.analytics.bridge import HANDSHAKE_OK, relay_pairs


@detector("chain.multihop", summary="relay pairs and nested proxy handshakes joined into "
          "multi-hop paths", technique="T1090.003", tables=("flow", "proxy"))
def multihop(ctx: Context) -> list[Finding]:
    pairs = relay_pairs(ctx)
    s = ctx.settings.chain
    max_hops, min_relays = int(s.max_hops), int(s.min_relays)
    walks = ctx.rows(f"""
        WITH RECURSIVE p AS (
            SELECT in_uid, out_uid, src, host, dst, in_port, up_port, kind, in_ts, out_end,
                   in_end FROM {pairs}),
        walk(last_uid, route, relays, kinds, uids, first_port, dest_port, t0, t1, hops) AS (
            SELECT out_uid, [src, host, dst], [host], [kind], [in_uid, out_uid], in_port,
                   up_port, in_ts, greatest(in_end, out_end), 2
            FROM p WHERE in_uid NOT IN (SELECT out_uid FROM p)
            UNION ALL
            SELECT q.out_uid, list_append(w.route, q.dst), list_append(w.relays, q.host),
                   list_append(w.kinds, q.kind), list_append(w.uids, q.out_uid), w.first_port,
                   q.up_port, w.t0, greatest(w.t1, q.in_end, q.out_end), w.hops + 1
            FROM walk w JOIN p q ON q.in_uid = w.last_uid
            WHERE w.hops < {max_hops} AND NOT list_contains(w.route, q.dst))
        SELECT w.route, w.relays, w.kinds, w.uids, w.first_port, w.dest_port, w.t0, w.t1,
               w.hops >= {max_hops} AS truncated, h.targets, h.ports, h.protos
        FROM walk w LEFT JOIN ({_HANDSHAKES}) h ON h.uid = w.last_uid
        WHERE w.hops >= {max_hops} OR NOT EXISTS (
            SELECT 1 FROM p q
            WHERE q.in_uid = w.last_uid AND NOT list_contains(w.route, q.dst))""")
    # Connections no relay pair covers whose handshakes name two or more hops (proxychains
    # through SOCKS servers whose onward legs the sensor does not see).
    nested = ctx.rows(f"""
        SELECT h.*, f.src_ip, f.dst_ip, f.dst_port, epoch(f.ts) AS t0,
               epoch(f.ts) + coalesce(f.duration, 0) AS t1
        FROM ({_HANDSHAKES}) h JOIN flow f USING (uid)
        WHERE len(h.targets) >= 2 AND f.ts IS NOT NULL AND f.src_ip IS NOT NULL
          AND f.dst_ip IS NOT NULL
          AND h.uid NOT IN (SELECT in_uid FROM {pairs} UNION SELECT out_uid FROM {pairs})""")
    paths: dict[tuple[tuple[str, ...], int], dict[str, Any]] = {}
    for w in walks:
        route, relays = [str(x) for x in w["route"]], [str(x) for x in w["relays"]]
        kinds, dport = [str(k) for k in w["kinds"]], w["dest_port"]
        route, relays, kinds, dport = _extend(route, relays, kinds, dport, w)
        _add(paths, route, relays, kinds, w["first_port"], dport, list(w["uids"]),
             float(w["t0"]), float(w["t1"]), bool(w["truncated"]))
    for n in nested:
        route, relays, kinds = [str(n["src_ip"]), str(n["dst_ip"])], [], []
        route, relays, kinds, dport = _extend(route, relays, kinds, n["dst_port"], n)
        _add(paths, route, relays, kinds, n["dst_port"], dport, [n["uid"]], float(n["t0"]),
             float(n["t1"]), False)
    return [_finding(ctx, r) for r in sorted(paths.values(), key=lambda r: r["first"])
            if int(r["relays_n"]) >= min_relays]


# Successful handshakes per connection in order: a SOCKS or CONNECT request names the next hop;
# a second request inside the tunnel (the packet engine parses tunnelled bytes again on the same
# uid) names the hop after it.
_HANDSHAKES = f"""
    SELECT uid, list(coalesce(target_ip, target_host) ORDER BY ts) AS targets,
           list(target_port ORDER BY ts) AS ports, list(protocol ORDER BY ts) AS protos
    FROM proxy
    WHERE uid IS NOT NULL AND coalesce(target_ip, target_host) IS NOT NULL
      AND target_port IS NOT NULL
      AND {HANDSHAKE_OK}
    GROUP BY uid"""


def _extend(route: list[str], relays: list[str], kinds: list[str], dport: Any,
            hs: dict[str, Any]) -> tuple[list[str], list[str], list[str], Any]:
    """Append the hops that the last leg's proxy handshakes name: the leg's destination is then
    a proxy (a relay of the handshake's kind) and each named target the next hop."""
    targets = [str(t) for t in (hs.get("targets") or [])]
    ports = list(hs.get("ports") or [])
    protos = [str(p) for p in (hs.get("protos") or [])]
    for target, port, proto in zip(targets, ports, protos, strict=False):
        if target in route:
            continue
        relays = [*relays, route[-1]]
        kinds = [*kinds, proto]
        route = [*route, target]
        dport = port
    return route, relays, kinds, dport


def _add(paths: dict[tuple[tuple[str, ...], int], dict[str, Any]], route: list[str],
         relays: list[str], kinds: list[str], first_port: Any, dport: Any, uids: list[Any],
         t0: float, t1: float, truncated: bool) -> None:
    key = (tuple(route), int(dport or 0))
    r = paths.get(key)
    if r is None:
        paths[key] = {"route": route, "relays": relays, "kinds": kinds, "relays_n": len(relays),
                      "first_port": first_port, "dest_port": dport, "paths": 1, "first": t0,
                      "last": t1, "truncated": truncated, "uid_paths": [uids]}
        return
    r["paths"] += 1
    r["first"], r["last"] = min(r["first"], t0), max(r["last"], t1)
    r["truncated"] = r["truncated"] or truncated
    r["uid_paths"].append(uids)


def _finding(ctx: Context, r: dict[str, Any]) -> Finding:
    route = [str(x) for x in r["route"]]
    relays = [str(x) for x in r["relays"]]
    kinds = [str(k) for k in (r["kinds"] or [])] or ["process"] * len(relays)
    dest = route[-1]
    dport = r["dest_port"]
    destination = hostport(dest, dport)
    n_rel, paths = int(r["relays_n"]), int(r["paths"])
    r["dest_internal"] = ctx.inventory.is_internal(dest)
    r["uid_paths"] = r["uid_paths"][:max(1, ctx.settings.analyze.max_evidence)]
    conf = 0.65 + 0.1 * min(2, n_rel - 2) + (0.0 if r["dest_internal"] else 0.1) \
        + (0.05 if paths >= 2 else 0.0)
    conf = min(0.95, conf)
    hops = len(route) - 1
    # one record per connection: the legs of a long tunnel are shared by every path through it
    in_paths: dict[str, list[int]] = {}
    position: dict[str, tuple[int, int]] = {}
    for i, up in enumerate(r["uid_paths"]):
        for j, uid in enumerate(up):
            in_paths.setdefault(str(uid), []).append(i + 1)
            position.setdefault(str(uid), (j, len(up)))
    evidence = []
    for uid, where in in_paths.items():
        j, n = position[uid]
        hop = f"{route[j]} -> {route[j + 1]}" if j + 1 < len(route) else route[j]
        evidence.append(Evidence(
            table="flow", uid=uid, summary=f"flow {j + 1} of {n} ({hop}), in "
            f"{'path ' + str(where[0]) if len(where) == 1 else f'{len(where)} paths'}"))
    first, last = relays[0], relays[-1]
    fam = "ip6" if ":" in first else "ip"
    explanation = (
        f"{paths} connection path(s) crossed {n_rel} relays: "
        f"{' -> '.join(route)} ({hops} hops, destination {destination}). Each step is a "
        f"bridge.relay pair whose outbound flow is the next pair's inbound flow, or a hop named "
        f"by a SOCKS/CONNECT request on the last connection seen; relay kinds "
        f"{', '.join(f'{h}={k}' for h, k in zip(relays, kinds, strict=False))}."
        + (f" The path reached chain.max_hops={ctx.settings.chain.max_hops} and may go on."
           if r["truncated"] else "")
        + f" Destination is {'internal' if r['dest_internal'] else 'external'}.")
    actions = [
        Action(kind="nft", text=f"on {first}: nft add rule inet filter input {fam} saddr "
               f"{route[0]} tcp dport {r['first_port']} drop"),
        Action(kind="nft", text=f"on {last} or its gateway: nft add rule inet filter output "
               f"{fam} daddr {dest} tcp dport {dport} drop"),
        Action(kind="gateway", text=f"deny {route[0]} -> {first}:{r['first_port']} and "
               f"{last} -> {destination}; isolate {', '.join(relays)} for triage"),
    ]
    return Finding(
        detector="chain.multihop",
        title=f"multi-hop relay chain {' -> '.join(route)} ({n_rel} relays) to {destination}",
        technique="T1090.003", strategy="DET0359/AN1021", severity=severity_for(conf),
        confidence=conf, first_seen=ts_of(r["first"]), last_seen=ts_of(r["last"]),
        entities={"chain": route, "hops": hops,
                  "relays": [{"relay": h, "kind": k}
                             for h, k in zip(relays, kinds, strict=False)],
                  "destination": destination},
        evidence=evidence, evidence_total=len(evidence),
        explanation=explanation, mitigation=Mitigation(ids=["M1037", "M1031"], actions=actions),
        hosts=route)
