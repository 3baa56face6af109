"""Process-level relay attribution: which process on which endpoint relays connections
(``endpoint.relay``, T1090.001; DET0445 AN1230 Linux, AN1229 Windows, AN1231 macOS).

Theory of operation. A relay accepts a connection and opens another one to carry it. Endpoint
connection events (``netconn``: Sysmon EID 3 ``Initiated`` false/true, Security 5156, auditd
``accept``/``connect``/``bind``) say which process did each, so the relay can be named by binary,
command line, user and pid, which the network side (bridge.relay) cannot do. Two shapes:

``process``  an inbound connection accepted by process L from ``client``, followed within
    ``attribution.window`` seconds by an outbound connection to ``upstream:up_port`` made by L
    itself (microsocks, tinyproxy, stunnel) or by a descendant at most ``attribution.depth``
    generations below it (socat ``fork``: a forked child that never exec'd and so has no
    process row, only netconn rows whose ``ppid`` is L; ``ncat -lk --sh-exec``: L -> forked
    child -> ``sh -c`` -> ncat; dante: pre-forked children). The tree is walked upwards from the
    connecting pid using, per host, the process row of each pid nearest before the connection
    (``ppid``) and, for pids that never exec'd, the ``ppid`` of their netconn rows. When the walk
    reaches a pid nothing was logged for (ncat's forked child), the link is still made if L's
    command line contains the command the orphan ran (``--sh-exec "ncat X 443"`` and
    ``sh -c "ncat X 443"``), or, failing that, if the orphan's known child started within the
    window after the accept, runs as L's user and has a higher pid than L (pids grow). The
    explanation says when a link was inferred this way.
``multiplexed``  one long-lived connection carries many relayed ones, so there is no timing
    pair: (a) the session child of a login service (sshd, dropbear) born within the window after
    its parent accepted ``client``, which later makes outbound connections *itself* (``ssh -L``,
    ``-D`` and ``-J`` on the server side: sshd only connects out to forward); (b) a known tunnel
    client (ssh, plink, chisel, frpc ...) whose first outbound connection is the tunnel and whose
    later outbound connections to other destinations are forwards (``ssh -R`` on the client
    side: ``client`` is the tunnel's peer, ``in_port`` the tunnel's port).

What is left out, and why (from the lab's audit logs):

- upstreams that are unspecified (sshd's session child "connects" to ``::``/``0.0.0.0`` port 22
  on every login) or port 53 (auditd labels resolver UDP connects ``tcp``; every server that
  resolves a name would pair);
- in the multiplexed form, loopback upstreams (ssh's own probe of its forwarded listener) and
  the processes a login session execs (a user who logs in and runs curl is not a relay);
- in the process form, the children of a login service (the same reason); the session itself
  is handled by the multiplexed form;
- pairs where both legs are loopback or link-local: a local program talking to a local
  service through a local one (or the Windows kernel's SMB to its own fe80:: address), unless
  the binary is a known forwarder (socat/ncat between two local ports is
  how a relay is tested before it is exposed). A loopback client with a real upstream is kept:
  it is the relay end of a local port forward.

``in_port`` comes from the accepting process's own bind (``listen`` row) or the local port of
the inbound row where the source logs it (Sysmon), else from the client's outbound netconn row
to the relay's address within one second of the accept. Upstreams on application-backend ports
(databases, caches, directory services: ``attribution.backend_ports``) are reported at low: a web
application that accepts a request and queries its database has the same shape.

Severity: high when the upstream is external, the user is a service account or the binary is a
known relay tool; medium otherwise. Relays declared in ``[inventory] relays``/``proxies`` are
marked sanctioned by run.py through the ``relay`` and ``in_port`` entities.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import logging
import re
import shlex
from collections import defaultdict
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
    is_v6,
    nft_drop_rule,
    ts_of,
)
from hopguard.analytics.hosts import address_of, hosts_of

logger = logging.getLogger(__name__)

# Binaries whose job is to relay; their pairs are high and loopback pairs are kept.
RELAY_TOOLS = frozenset({
    "socat", "ncat", "nc", "netcat", "nc.openbsd", "nc.traditional", "microsocks", "danted",
    "sockd", "3proxy", "tinyproxy", "stunnel", "stunnel4", "chisel", "frpc", "frps", "gost",
    "ligolo", "ligolo-ng", "agent", "rinetd", "redir", "sshuttle", "plink", "plink.exe",
    "ssh", "sshd", "ssh.exe", "sshd.exe", "autossh", "rpivot", "revsocks", "iox", "ew",
    "earthworm", "htran", "venom", "ngrok", "cloudflared", "squid", "privoxy", "polipo",
    "proxychains4", "netsh.exe", "ss-local", "ss-server", "v2ray", "xray", "brook", "tor",
})
# Command-line marks of relay tools that run under an interpreter (sshuttle's server).
TOOL_SIGNATURES = ("sshuttle", "assembler.py")
# Clients whose one connection can carry many (the multiplexed form, client side).
TUNNEL_CLIENTS = frozenset({
    "ssh", "ssh.exe", "plink", "plink.exe", "autossh", "chisel", "chisel.exe", "frpc",
    "frpc.exe", "gost", "ligolo", "agent", "revsocks", "rpivot", "iox", "cloudflared", "ngrok",
})
# Login services: their session children are the relays, their own descendants are users.
LOGIN_SERVICES = frozenset({"sshd", "sshd.exe", "dropbear", "sshd-session"})
# Account names that run services rather than people (plus numeric uids 1..999).
SERVICE_USERS = frozenset({
    "www-data", "nobody", "apache", "nginx", "httpd", "daemon", "backup", "www", "_www",
    "tomcat", "jenkins", "postgres", "mysql", "redis", "proxy", "squid", "sshd", "bin", "sys",
    "mail", "news", "uucp", "lp", "list", "irc", "gnats", "systemd-network", "_apt",
    "nt authority\\network service", "nt authority\\local service", "iusr",
})
# Debian's fixed uids, so an auditd RAW log's numeric uid reads as a name.
WELL_KNOWN_UIDS = {"0": "root", "1": "daemon", "2": "bin", "13": "proxy", "33": "www-data",
                   "34": "backup", "65534": "nobody"}
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "busybox", "cmd.exe",
                    "powershell.exe", "pwsh", "pwsh.exe"})
# Seconds before the accept a connect may be stamped and still pair (same-millisecond order).
SKEW = 0.005
# Seconds around an accept in which the client's own connect row gives the relay's port.
PEER_WINDOW = 1.0
# ... and, when the relay's address is unknown, before the accept by at most this much.
PEER_STRICT = 0.05
# Evidence rows kept per finding before finalize() caps them.
MAX_ROWS = 50

_NETCONN_SQL = """
SELECT epoch(ts) AS t, ts, coalesce(host, sensor) AS host, pid, ppid, image, user, direction,
       src_ip, src_port, dst_ip, dst_port, file_id, record, platform
FROM netconn
WHERE ts IS NOT NULL AND pid IS NOT NULL AND coalesce(host, sensor) IS NOT NULL
  AND direction IN ('inbound', 'outbound', 'listen')
ORDER BY t
"""

_PROCESS_SQL = """
SELECT epoch(ts) AS t, coalesce(host, sensor) AS host, pid, ppid, image, command_line, user
FROM process
WHERE ts IS NOT NULL AND pid IS NOT NULL AND coalesce(host, sensor) IN (SELECT unnest(?))
ORDER BY t
"""


def base_name(image: str | None) -> str:
    """``/usr/bin/socat`` -> ``socat``, ``C:\\Windows\\netsh.exe`` -> ``netsh.exe``."""
    if not image:
        return ""
    return re.split(r"[\\/]", image.strip().strip('"'))[-1].lower()


def user_name(user: str | None) -> str | None:
    if user is None:
        return None
    return WELL_KNOWN_UIDS.get(user, user)


def is_service_account(user: str | None) -> bool:
    if not user:
        return False
    u = user.lower()
    if u.isdigit():
        return 0 < int(u) < 1000
    return u in SERVICE_USERS or u.endswith("$") or "\\svc_" in u or u.startswith("svc_")


def _loopback(ip: str | None) -> bool:
    return bool(ip) and (str(ip).startswith("127.") or ip in ("::1", "[::1]"))


def _on_host(ip: str | None) -> bool:
    """Loopback or link-local: traffic that stays on the machine or its link (Windows SMB from
    the kernel to its own fe80:: address looks like a relay otherwise)."""
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(str(ip).strip("[]").split("%")[0])
    except ValueError:
        return False
    return addr.is_loopback or addr.is_link_local


def _unusable_upstream(ip: str | None, port: int | None) -> bool:
    return (not ip or ip in ("0.0.0.0", "::", "[::]") or port in (None, 0, 53))


@dataclass(slots=True)
class _Proc:
    t: float
    ppid: int | None
    image: str | None
    command_line: str | None
    user: str | None


@dataclass(slots=True)
class _Tree:
    """Per host: pid -> process rows by start time, and pid -> netconn ppid."""

    procs: dict[int, list[_Proc]] = field(default_factory=lambda: defaultdict(list))
    starts: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    net_ppid: dict[int, int] = field(default_factory=dict)
    first_seen: dict[int, float] = field(default_factory=dict)

    def proc(self, pid: int, t: float) -> _Proc | None:
        """The process row of ``pid`` nearest before ``t`` (a little after it, too: an exec
        stamped in the same millisecond as its first connection)."""
        starts = self.starts.get(pid)
        if not starts:
            return None
        i = bisect.bisect_right(starts, t + SKEW) - 1
        return self.procs[pid][i] if i >= 0 else self.procs[pid][0]

    def parent(self, pid: int, t: float) -> int | None:
        p = self.proc(pid, t)
        if p is not None and p.ppid is not None:
            return p.ppid
        return self.net_ppid.get(pid)

    def known(self, pid: int) -> bool:
        return pid in self.starts or pid in self.net_ppid


@dataclass(slots=True)
class _Pair:
    host: str
    relay_pid: int  # the process reported as the relay
    client: str
    in_port: int | None
    upstream: str
    up_port: int
    t_in: float
    t_out: float
    rows: list[dict[str, Any]]
    kind: str
    link: str  # how the two legs were tied together


@dataclass(slots=True)
class _Group:
    pairs: list[_Pair] = field(default_factory=list)


def _walk(tree: _Tree, pid: int, target: int, t: float, depth: int) -> tuple[int, int | None]:
    """Generations from ``pid`` up to ``target`` (0: the same process), -1 when not reached
    within ``depth``; second value: the first pid on the way that nothing was logged for."""
    cur = pid
    for gen in range(depth + 1):
        if cur == target:
            return gen, None
        if gen == depth:
            break
        parent = tree.parent(cur, t)
        if parent is None:
            return -1, cur
        if not tree.known(parent) and parent != target:
            return -1, parent
        cur = parent
    return -1, None


def _sh_payload(command_line: str | None) -> str | None:
    """The command of ``sh -c "X"`` (else the command line itself)."""
    if not command_line:
        return None
    try:
        argv = shlex.split(command_line)
    except ValueError:
        argv = command_line.split()
    if len(argv) >= 3 and base_name(argv[0]) in SHELLS and argv[1] in ("-c", "/c"):
        return argv[2]
    return command_line


def _inferred(tree: _Tree, listener: int, orphan: int, conn_pid: int, t_in: float,
              t_out: float, window: float) -> str | None:
    """Whether an unlogged fork ``orphan`` is plausibly the listener's child (see the module
    docstring); returns how, or None."""
    # a fork of the listener has a higher pid than the listener (pids grow; a wrap is rare)
    # and is not one of the listener's own ancestors
    if orphan <= listener or _walk(tree, listener, orphan, t_in, 10)[0] >= 0:
        return None
    lp = tree.proc(listener, t_in)
    # the processes the orphan started (that exec'd), and the connecting one
    below = [p for p, rows in tree.procs.items()
             if p != listener and any(r.ppid == orphan for r in rows)]
    for pid in [*below, conn_pid]:
        p = tree.proc(pid, t_out)
        if p is None:
            continue
        payload = _sh_payload(p.command_line)
        if lp is not None and lp.command_line and payload and len(payload) >= 6 \
                and payload in lp.command_line:
            return f"the listener's command line contains '{payload}'"
    for pid in below:
        p = tree.proc(pid, t_out)
        if (p is not None and lp is not None and p.user == lp.user
                and t_in - SKEW <= p.t <= t_in + window and listener < orphan < pid):
            return (f"pid {orphan} (never exec'd, nothing logged) started a child "
                    f"{p.t - t_in:.3f} s after the accept, as the listener's user")
    return None


def _evidence(rows: list[dict[str, Any]]) -> list[Evidence]:
    out = []
    for r in rows[:MAX_ROWS]:
        if r["direction"] == "inbound":
            what = "accept from " + (hostport(r["src_ip"], r["src_port"]) if r["src_port"]
                                     else str(r["src_ip"]))
        elif r["direction"] == "listen":
            what = f"bind {hostport(r['dst_ip'], r['dst_port'])}"
        else:
            what = f"connect to {hostport(r['dst_ip'], r['dst_port'])}"
        ev = f"{r['file_id']}:{r['record']}" if r["file_id"] is not None else None
        out.append(Evidence(table="netconn", event=ev, summary=(
            f"{r['ts']:%H:%M:%S.%f}"[:-3] + f" {r['host']} pid {r['pid']} "
            f"{base_name(r['image'])} {what}")))
    return out


@detector("endpoint.relay", summary="a process accepts connections and opens matching outbound "
          "ones (socat, ncat --sh-exec, SOCKS servers, sshd forwarding): the relay named by "
          "binary, command line, user and pid", technique="T1090.001", tables=("netconn",))
def endpoint_relay(ctx: Context) -> list[Finding]:
    window = float(ctx.settings.attribution.window)
    depth = int(ctx.settings.attribution.depth)
    rows = ctx.rows(_NETCONN_SQL)
    if not rows:
        return []
    by_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_host[r["host"]].append(r)
    hosts = sorted(h for h, rs in by_host.items()
                   if any(r["direction"] == "outbound" for r in rs))
    trees: dict[str, _Tree] = {h: _Tree() for h in hosts}
    if hosts:
        for p in ctx.rows(_PROCESS_SQL, [hosts]):
            tree = trees[p["host"]]
            tree.procs[p["pid"]].append(_Proc(p["t"], p["ppid"], p["image"],
                                              p["command_line"], p["user"]))
            tree.starts[p["pid"]].append(p["t"])
    pairs: list[_Pair] = []
    for host in hosts:
        tree, hrows = trees[host], by_host[host]
        for r in hrows:
            if r["ppid"] is not None:
                tree.net_ppid.setdefault(r["pid"], r["ppid"])
            tree.first_seen.setdefault(r["pid"], r["t"])
        for pid, starts in tree.starts.items():
            tree.first_seen[pid] = min(tree.first_seen.get(pid, starts[0]), starts[0])
        pairs.extend(_process_pairs(tree, host, hrows, window, depth))
        pairs.extend(_multiplexed_pairs(tree, host, hrows, window))
    if not pairs:
        return []
    return _findings(ctx, pairs, by_host, trees, window)


def _process_pairs(tree: _Tree, host: str, hrows: list[dict[str, Any]], window: float,
                   depth: int) -> list[_Pair]:
    inbound = [r for r in hrows if r["direction"] == "inbound" and r["src_ip"]]
    outbound = [r for r in hrows if r["direction"] == "outbound"
                and not _unusable_upstream(r["dst_ip"], r["dst_port"])]
    if not inbound or not outbound:
        return []
    out_t = [r["t"] for r in outbound]
    own: dict[int, set[tuple[str, int]]] = defaultdict(set)  # pid -> its bound addresses
    for r in hrows:
        if r["direction"] == "listen" and r["dst_port"]:
            own[r["pid"]].add((r["dst_ip"], r["dst_port"]))
    found: list[_Pair] = []
    used: set[int] = set()  # an outbound leg pairs with one accept (the nearest before it)
    for i in reversed(inbound):  # latest accept first, so each connect takes the nearest
        image = base_name(i["image"])
        if image in LOGIN_SERVICES:
            continue
        lo = bisect.bisect_left(out_t, i["t"] - SKEW)
        hi = bisect.bisect_right(out_t, i["t"] + window)
        for k in range(lo, hi):
            o = outbound[k]
            if k in used:
                continue
            if (o["dst_ip"], o["dst_port"]) in own.get(o["pid"], set()) | own.get(i["pid"], set()):
                continue  # a probe of its own listener (ssh -L checks the port it forwards)
            if _on_host(i["src_ip"]) and _on_host(o["dst_ip"]) and \
                    base_name(o["image"]) not in RELAY_TOOLS and image not in RELAY_TOOLS:
                continue
            gen, orphan = _walk(tree, o["pid"], i["pid"], o["t"], depth)
            link = "the same process" if gen == 0 else f"{gen} generation(s) below the listener"
            if gen < 0:
                if orphan is None:
                    continue
                how = _inferred(tree, i["pid"], orphan, o["pid"], i["t"], o["t"], window)
                if how is None:
                    continue
                link = f"through pid {orphan}, inferred: {how}"
            # a login service between them means a user's session, not a relay
            if _through_login(tree, o["pid"], i["pid"], o["t"], depth):
                continue
            used.add(k)
            found.append(_Pair(host=host, relay_pid=i["pid"], client=i["src_ip"],
                               in_port=i["dst_port"], upstream=o["dst_ip"],
                               up_port=o["dst_port"], t_in=i["t"], t_out=o["t"],
                               rows=[i, o], kind="process", link=link))
    return found


def _through_login(tree: _Tree, pid: int, top: int, t: float, depth: int) -> bool:
    cur = pid
    for _ in range(depth + 1):
        if cur == top:
            return False
        p = tree.proc(cur, t)
        if p is not None and base_name(p.image) in LOGIN_SERVICES:
            return True
        parent = tree.parent(cur, t)
        if parent is None:
            return False
        cur = parent
    return False


def _multiplexed_pairs(tree: _Tree, host: str, hrows: list[dict[str, Any]],
                       window: float) -> list[_Pair]:
    found: list[_Pair] = []
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in hrows:
        by_pid[r["pid"]].append(r)
    accepts = [r for r in hrows if r["direction"] == "inbound" and r["src_ip"]
               and base_name(r["image"]) in LOGIN_SERVICES]
    sessions: dict[int, dict[str, Any]] = {}  # session child pid -> its parent's accept
    for pid, prow in by_pid.items():
        parent = tree.parent(pid, prow[0]["t"])
        born = tree.first_seen.get(pid, prow[0]["t"])
        if base_name(prow[0]["image"]) in LOGIN_SERVICES and parent is not None:
            cands = [a for a in accepts if a["pid"] == parent
                     and a["t"] - SKEW <= born <= a["t"] + window]
            if cands:
                sessions[pid] = cands[-1]
    for pid, prow in by_pid.items():
        outs = [r for r in prow if r["direction"] == "outbound"
                and not _unusable_upstream(r["dst_ip"], r["dst_port"])
                and not _loopback(r["dst_ip"])]
        if not outs:
            continue
        image = base_name(prow[0]["image"])
        parent = tree.parent(pid, prow[0]["t"])
        born = tree.first_seen.get(pid, prow[0]["t"])
        # (a) a login service's session child: born right after its parent accepted a client
        session = sessions.get(pid)
        # ... or a server the session runs over its stdin (sshuttle's python server): a direct
        # child that is a relay tool or keeps connecting out in separate bursts
        if session is None and parent in sessions:
            proc = tree.proc(pid, outs[0]["t"])
            cmd = (proc.command_line if proc else None) or ""
            bursts = 1 + sum(1 for a, b in itertools.pairwise(outs)
                             if b["t"] - a["t"] > window)
            if image in RELAY_TOOLS or any(sig in cmd for sig in TOOL_SIGNATURES) \
                    or bursts >= 3:
                session = sessions[parent]
                born = session["t"]
        if session is not None:
            for o in outs:
                if o["t"] < session["t"]:
                    continue
                found.append(_Pair(host=host, relay_pid=pid, client=session["src_ip"],
                                   in_port=session["dst_port"], upstream=o["dst_ip"],
                                   up_port=o["dst_port"], t_in=session["t"], t_out=o["t"],
                                   rows=[session, o], kind="multiplexed",
                                   link=(f"session child of pid {parent}, born "
                                         f"{born - session['t']:.3f} s after the accept"
                                         if pid in sessions else
                                         f"run by the login session pid {parent}")))
            continue
        # (b) a tunnel client: the first outbound connection is the tunnel
        if image in TUNNEL_CLIENTS and len(outs) >= 2:
            tunnel = outs[0]
            for o in outs[1:]:
                if (o["dst_ip"], o["dst_port"]) == (tunnel["dst_ip"], tunnel["dst_port"]):
                    continue
                found.append(_Pair(host=host, relay_pid=pid, client=tunnel["dst_ip"],
                                   in_port=tunnel["dst_port"], upstream=o["dst_ip"],
                                   up_port=o["dst_port"], t_in=tunnel["t"], t_out=o["t"],
                                   rows=[tunnel, o], kind="multiplexed",
                                   link=f"carried over its tunnel to "
                                        f"{hostport(tunnel['dst_ip'], tunnel['dst_port'])}"))
    return found


def _listen_port(tree: _Tree, hrows: list[dict[str, Any]], pid: int, t: float) -> int | None:
    """The port a process (or the listener above it) bound before ``t``."""
    ports = [r["dst_port"] for r in hrows if r["direction"] == "listen" and r["pid"] == pid
             and r["t"] <= t + SKEW and r["dst_port"]]
    if ports:
        return int(ports[-1])
    parent = tree.parent(pid, t)
    if parent is not None:
        ports = [r["dst_port"] for r in hrows if r["direction"] == "listen"
                 and r["pid"] == parent and r["t"] <= t + SKEW and r["dst_port"]]
        if ports:
            return int(ports[-1])
    return None


def _peer_port(by_host: dict[str, list[dict[str, Any]]], relay_ip: str | None,
               client_host: str | None, t: float) -> int | None:
    """The port the client's own connect row names near ``t``: a connect to the relay's
    address from any host, or, when the relay's address is unknown, the nearest non-loopback
    connect of the host that owns the client address."""
    best: tuple[float, int] | None = None
    for host, rows in by_host.items():
        for r in rows:
            if r["direction"] != "outbound" or not r["dst_port"] or abs(r["t"] - t) > PEER_WINDOW:
                continue
            if not relay_ip and not t - PEER_STRICT <= r["t"] <= t + SKEW:
                continue  # by the client host alone: only its connect just before the accept
            if (relay_ip and r["dst_ip"] == relay_ip) or (
                    not relay_ip and host == client_host and not _loopback(r["dst_ip"])):
                d = abs(r["t"] - t)
                if best is None or d < best[0]:
                    best = (d, int(r["dst_port"]))
    return best[1] if best else None


def _findings(ctx: Context, pairs: list[_Pair], by_host: dict[str, list[dict[str, Any]]],
              trees: dict[str, _Tree], window: float) -> list[Finding]:
    addr: dict[str, str | None] = {}
    names = hosts_of(ctx)
    groups: dict[tuple[Any, ...], _Group] = defaultdict(_Group)
    for p in pairs:
        if p.host not in addr:
            addr[p.host] = address_of(ctx, p.host)
        tree, hrows = trees[p.host], by_host[p.host]
        if p.in_port is None and p.kind == "process":
            p.in_port = _listen_port(tree, hrows, p.relay_pid, p.t_in)
        if p.in_port is None and p.kind == "multiplexed" and p.rows[0]["direction"] == "inbound":
            p.in_port = _listen_port(tree, hrows, int(p.rows[0]["pid"]), p.t_in)
        if p.in_port is None and p.rows[0]["direction"] == "inbound":
            p.in_port = _peer_port(by_host, addr[p.host], names.get(p.client), p.t_in)
        proc = tree.proc(p.relay_pid, p.t_in)
        image = (proc.image if proc and proc.image else None) or p.rows[0]["image"]
        groups[(p.host, p.relay_pid, base_name(image), p.client, p.upstream,
                p.up_port)].pairs.append(p)
    out: list[Finding] = []
    for (host, pid, _name, client, upstream, up_port), g in groups.items():
        out.append(_finding(ctx, host, addr[host], pid, client, upstream, up_port, g.pairs,
                            trees[host], window))
    return out


def _describe(tree: _Tree, pid: int, t: float, row: dict[str, Any]
              ) -> tuple[str | None, str | None, str | None]:
    """(image, command line, user) of ``pid`` from its process row, else from its nearest
    exec'd ancestor's command line, else from the netconn row."""
    p = tree.proc(pid, t)
    image = (p.image if p else None) or row["image"]
    user = (p.user if p else None) or row["user"]
    cmd = p.command_line if p else None
    cur, hops = pid, 0
    while cmd is None and hops < 3:
        parent = tree.parent(cur, t)
        if parent is None:
            break
        pp = tree.proc(parent, t)
        if pp is not None and pp.command_line and base_name(pp.image) == base_name(image):
            cmd = pp.command_line
        cur, hops = parent, hops + 1
    return image, cmd, user_name(user)


def _finding(ctx: Context, host: str, ip: str | None, pid: int, client: str, upstream: str,
             up_port: int, pairs: list[_Pair], tree: _Tree, window: float) -> Finding:
    pairs.sort(key=lambda p: p.t_out)
    first = pairs[0]
    kind = "process" if any(p.kind == "process" for p in pairs) else "multiplexed"
    lead_row = next((r for p in pairs for r in p.rows if r["pid"] == pid), first.rows[0])
    image, cmd, user = _describe(tree, pid, first.t_in, lead_row)
    name = base_name(image) or "?"
    in_port = next((p.in_port for p in pairs if p.in_port is not None), None)
    external = not ctx.inventory.is_internal(upstream)
    service = is_service_account(user)
    tool = name in RELAY_TOOLS or any(sig in (cmd or "") for sig in TOOL_SIGNATURES)
    backend = up_port in ctx.settings.attribution.backend_ports and not tool
    reasons = [w for w, on in (("the upstream is external", external),
                               (f"{user} is a service account", service),
                               (f"{name} is a known relay tool", tool)) if on]
    severity = "low" if backend else ("high" if reasons else "medium")
    delays = [p.t_out - p.t_in for p in pairs if p.kind == "process"]
    conf = 0.9 if kind == "process" and len(pairs) >= 2 else 0.8 if kind == "process" else 0.75
    if any("inferred" in p.link for p in pairs):
        conf -= 0.15
    relay = ip or host
    where = f"{host} ({ip})" if ip else host
    port_txt = f":{in_port}" if in_port else ""
    if kind == "process":
        timing = (f"{len(pairs)} accept/connect pair(s); the outbound leg followed the accept "
                  f"after {min(delays):.3f}-{max(delays):.3f} s (window {window:g} s); "
                  f"link: {first.link}")
    else:
        timing = (f"{len(pairs)} outbound connection(s) carried by one long-lived connection "
                  f"({first.link})")
    explanation = (
        f"{name} (pid {pid}, user {user or '?'}) on {where} accepted connections from {client}"
        f"{port_txt} and connected to {hostport(upstream, up_port)}: {timing}. "
        + (f"Severity {severity}: {', '.join(reasons)}." if reasons and not backend else
           f"Port {up_port} is an application-backend port, so this may be an application "
           "tier rather than a relay." if backend else "Internal upstream, ordinary user.")
        + (f" Command line: {cmd}" if cmd else ""))
    rows = [r for p in pairs for r in p.rows]
    seen: set[tuple[Any, Any]] = set()
    uniq = []
    for r in rows:
        key = (r["file_id"], r["record"])
        if key not in seen:
            seen.add(key)
            uniq.append(r)
    fam = "ip6" if is_v6(client) else "ip"
    actions = []
    if in_port:
        actions.append(Action(kind="nft", text=(
            f"nft add rule inet filter input {fam} saddr {client} tcp dport {in_port} drop"
            f"  # on {host}")))
    actions.append(Action(kind="nft", text=nft_drop_rule(ip, upstream, up_port)))
    actions.append(Action(kind="host", text=(
        f"on {host}: stop {name} (pid {pid}, user {user or '?'}) with 'kill {pid}' and remove "
        "what starts it" + (f" ({cmd})" if cmd else ""))))
    platform = lead_row.get("platform") or ""
    analytic = {"windows": "AN1229", "macos": "AN1231"}.get(platform, "AN1230")
    return Finding(
        detector="endpoint.relay",
        title=f"{name} (pid {pid}) on {host} relays {client} to {hostport(upstream, up_port)}",
        technique="T1090.001", strategy=f"DET0445/{analytic}", severity=severity,
        confidence=max(0.3, conf), first_seen=ts_of(min(p.t_in for p in pairs)),
        last_seen=ts_of(max(p.t_out for p in pairs)),
        entities={"relay": relay, "client": client, "in_port": in_port, "upstream": upstream,
                  "up_port": up_port, "host": host, "ip": ip, "process": name, "pid": pid,
                  "user": user, "command_line": cmd, "kind": kind, "pairs": len(pairs)},
        evidence=_evidence(uniq), explanation=explanation,
        mitigation=Mitigation(ids=["M1037", "M1042"], actions=actions),
        hosts=[x for x in (ip, client if client and not _loopback(client) else None, upstream)
               if x], evidence_total=len(uniq))
