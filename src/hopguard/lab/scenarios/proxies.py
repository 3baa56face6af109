"""Proxy servers and chains: SOCKS4/5 servers, HTTP CONNECT abuse, proxychains, multi-hop chains,
beaconing through a proxy, domain fronting.

Conventions (shared by every scenario here):

* A relay's ``client`` is the address the relay's own peer connects from, its ``upstream`` the
  address it connects to; a multi-hop path is one relay per hop plus a ``chains`` entry in path
  order. Relays that run on internet hosts (the attacker's own hops) are not in ``relays``: the
  LAN span cannot see their outbound leg. They are in ``notes`` as JSON objects of kind
  ``external-relay`` (and their hops in ``chains``, their listeners in ``proxies``).
* Every entry in ``notes`` is a JSON object with a ``kind``.
* Hosts used by a scenario for its own (non-benign) purposes are taken out of ``benign_hosts``.
* Server processes (proxies, relays, the edge) are recorded as ``tools`` with their lifetimes;
  the scenario's own client runs (curl, ssh, proxychains4) too, each with its own pid and
  times; cover traffic from benign hosts is not (it is counted in a note).
* A relay's window is its server's lifetime (for sshd's forwarding end: the ssh session's).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from hopguard.lab.env import NAMES, Env
from hopguard.lab.net import Proc
from hopguard.lab.scenarios.base import (
    Scenario,
    not_benign,
    note,
    process_relay,
    register,
    tool_run,
)
from hopguard.lab.sys import run
from hopguard.lab.truth import Fronting, Proxy, Relay, iso

logger = logging.getLogger(__name__)

C2 = NAMES["c2.example.net"]
WEB = NAMES["www.example.com"]


# -- helpers ------------------------------------------------------------------------------------


def end_of(proc: Proc) -> str:
    return iso(proc.ended or time.time())


def tool(env: Env, proc: Proc) -> None:
    """Record a process this scenario started (its real pid, user and times)."""
    env.truth.tools.append(tool_run(proc))


def relay(env: Env, server: Proc, *, client: str, in_port: int, upstream: str, up_port: int,
          tool_name: str, user: str | None = None) -> None:
    """A relay by a server process, for the server's lifetime."""
    env.truth.relays.append(process_relay(server, client=client, in_port=in_port,
                                          upstream=upstream, up_port=up_port, tool=tool_name,
                                          user=user))


def proxy(env: Env, server: Proc, *, port: int, protocol: str, tool_name: str) -> None:
    env.truth.proxies.append(Proxy(
        proxy=server.host.ip, host=server.host.name, port=port, protocol=protocol,
        tool=tool_name, sanctioned=False, pid=server.pid, start=iso(server.started),
        end=end_of(server)))


def add_inet_host(env: Env, name: str, ip: str) -> None:
    """An extra internet host for this scenario (the office's hosts file does not name it)."""
    env.lab.add_host(name, ip)
    env.truth.hosts[name] = {"ip": ip, "side": env.lab.hosts[name].side}


def drive(env: Env, actions: list[Callable[[], Proc]], gap: float = 1.0) -> list[Proc]:
    """Run every action at least once, then keep cycling through them until about
    ``env.duration`` seconds have passed; a short random pause after each."""
    deadline = time.monotonic() + env.duration
    done: list[Proc] = []
    i = 0
    while i < len(actions) or (time.monotonic() < deadline and not env.stop_event.is_set()):
        done.append(actions[i % len(actions)]())
        i += 1
        env.stop_event.wait(gap * env.rnd.uniform(0.5, 1.5))
    return done


def curl(env: Env, host: str, url: str, *extra: str) -> Proc:
    """An HTTPS request that trusts the lab's web and C2 certificates."""
    return env.curl(host, url, "--cacert", str(cacerts(env)), *extra)


def cacerts(env: Env) -> str:
    bundle = env.work / "lab-ca.pem"
    if not bundle.exists():
        bundle.write_text((env.work / "web.crt").read_text() + (env.work / "c2.crt").read_text())
    return str(bundle)


def ssh_via(env: Env, host: str, target: str, proxy_command: str) -> Proc:
    """A short SSH session to ``target`` whose TCP connection goes through ``proxy_command``."""
    return env.lab.run_on(host, [*env.ssh_cmd(), "-o", f"ProxyCommand={proxy_command}",
                                 f"root@{target}", "hostname; id -un; sleep 0.3"],
                          name="ssh", timeout=30)


def microsocks(env: Env, host: str, user: str, port: int = 1080) -> Proc:
    server = env.lab.spawn(host, ["microsocks", "-i", env.ip(host), "-p", str(port)], user=user,
                           name="microsocks")
    env.lab.wait_port(host, port)
    return server


def exe_name(proc: Proc) -> str:
    return proc.argv[0].rsplit("/", 1)[-1]


def stop_all(env: Env, *procs: Proc) -> None:
    """Stop servers, and wait for the processes they forked (dante's children outlive their
    mother for a moment) so that nothing of theirs is left when the scenario returns."""
    time.sleep(0.3)  # the last relayed connections close
    for p in procs:
        env.lab.stop(p)  # waits until nothing of the tool is left


# -- 1. SOCKS servers -----------------------------------------------------------------------------


DANTE_CONF = """\
logoutput: stderr
internal: {ip} port = {port}
external: {ip}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{
  from: 10.10.0.0/16 to: 0.0.0.0/0
  log: connect disconnect error
}}
socks pass {{
  from: 10.10.0.0/16 to: 0.0.0.0/0
  command: connect
  protocol: tcp
  log: connect disconnect error
}}
"""


@register
class SocksServers(Scenario):
    name: ClassVar[str] = "socks-servers"
    description: ClassVar[str] = (
        "www-data on app-07 runs microsocks (SOCKS5, :1080) and root on db-09 runs dante "
        "(SOCKS4 and SOCKS5, :1080); ws-042 reaches the C2 and a web site over HTTPS and "
        "internal sshd (db-09:22, app-07:22) through them (T1090.001 internal proxy)")
    technique: ClassVar[str] = "T1090.001"

    def run(self, env: Env) -> None:
        lab, app, db, ws = env.lab, env.ip("app-07"), env.ip("db-09"), env.ip("ws-042")
        not_benign(env, "db-09")
        conf = env.work / "danted.conf"
        conf.write_text(DANTE_CONF.format(ip=db, port=1080))
        micro = microsocks(env, "app-07", "www-data")
        dante = lab.spawn("db-09", ["danted", "-f", str(conf), "-p",
                                    str(env.work / "danted.pid")], name="danted")
        lab.wait_port("db-09", 1080)

        # (server proc, protocol, target ip, target port, action)
        flows: list[tuple[Proc, str, str, int, Callable[[], Proc]]] = [
            (micro, "socks5", C2, 443, lambda: curl(
                env, "ws-042", "https://c2.example.net/beacon", "--socks5-hostname",
                f"{app}:1080")),
            (micro, "socks5", db, 22, lambda: ssh_via(
                env, "ws-042", db, f"ncat --proxy {app}:1080 --proxy-type socks5 %h %p")),
            (dante, "socks4", WEB, 443, lambda: curl(
                env, "ws-042", "https://www.example.com/bytes/20000", "--socks4",
                f"{db}:1080", "--resolve", f"www.example.com:443:{WEB}")),
            (dante, "socks4", app, 22, lambda: ssh_via(
                env, "ws-042", app, f"ncat --proxy {db}:1080 --proxy-type socks4 %h %p")),
            (dante, "socks5", C2, 443, lambda: curl(
                env, "ws-042", "https://c2.example.net/beacon", "--socks5-hostname",
                f"{db}:1080")),
        ]
        runs = drive(env, [f[4] for f in flows], gap=0.8)
        stop_all(env, micro, dante)

        tool(env, micro)
        tool(env, dante)
        proxy(env, micro, port=1080, protocol="socks5", tool_name="microsocks")
        proxy(env, dante, port=1080, protocol="socks4", tool_name="danted")
        proxy(env, dante, port=1080, protocol="socks5", tool_name="danted")
        seen: set[tuple[int, str, int]] = set()
        for server, _protocol, target, port, _ in flows:
            if (server.pid, target, port) in seen:
                continue  # dante relays ws-042 to the C2 once, whichever SOCKS version
            seen.add((server.pid, target, port))
            # dante's mother (root) forks the children that relay, as user.unprivileged
            relay(env, server, client=ws, in_port=1080, upstream=target, up_port=port,
                  tool_name=exe_name(server), user="nobody" if server is dante else None)
        for p in runs:
            tool(env, p)
        note(env, "dante", pid=dante.pid, detail=(
            "danted's mother process (root) forks the children that accept and relay; they "
            "connect upstream with euid nobody (user.unprivileged)"))
        note(env, "socks-flows", flows=[
            {"client": ws, "proxy": f"{s.host.ip}:1080", "protocol": proto,
             "target": f"{t}:{tp}"} for s, proto, t, tp, _ in flows])




# -- 2. HTTP CONNECT to non-web ports --------------------------------------------------------------


@register
class ConnectAbuse(Scenario):
    name: ClassVar[str] = "connect-abuse"
    description: ClassVar[str] = (
        "www-data on app-07 runs an unsanctioned tinyproxy on :8888 that allows CONNECT to any "
        "port; ws-042 tunnels SSH to db-09:22 (ssh ProxyCommand ncat --proxy-type http) and "
        "TLS to the C2 on 203.0.113.66:8443 through it (T1090.001, T1572)")
    technique: ClassVar[str] = "T1090.001"

    def run(self, env: Env) -> None:
        lab, app, db, ws = env.lab, env.ip("app-07"), env.ip("db-09"), env.ip("ws-042")
        conf = env.work / "tinyproxy-app07.conf"
        # no ConnectPort line: tinyproxy then allows CONNECT to every port
        conf.write_text(f"Port 8888\nListen {app}\nTimeout 60\nMaxClients 20\n"
                        "Allow 10.10.0.0/16\nLogLevel Connect\n")
        c2_alt = lab.spawn("c2", [env.python, "-m", "hopguard.lab.servers", "--port", "8443",
                                  "--cert", str(env.work / "c2.crt"), "--key",
                                  str(env.work / "c2.key")], name="https-8443")
        tp = lab.spawn("app-07", ["tinyproxy", "-d", "-c", str(conf)], user="www-data",
                       name="tinyproxy")
        lab.wait_port("c2", 8443)
        lab.wait_port("app-07", 8888)
        flows: list[tuple[str, int, Callable[[], Proc]]] = [
            (db, 22, lambda: ssh_via(
                env, "ws-042", db, f"ncat --proxy {app}:8888 --proxy-type http %h %p")),
            (C2, 8443, lambda: curl(
                env, "ws-042", "https://c2.example.net:8443/beacon", "--proxy",
                f"http://{app}:8888", "--proxytunnel")),
        ]
        runs = drive(env, [f[2] for f in flows], gap=1.0)
        stop_all(env, tp, c2_alt)

        tool(env, tp)
        tool(env, c2_alt)
        proxy(env, tp, port=8888, protocol="http-connect", tool_name="tinyproxy")
        for target, port, _ in flows:
            relay(env, tp, client=ws, in_port=8888, upstream=target, up_port=port,
                  tool_name="tinyproxy")
        for p in runs:
            tool(env, p)
        note(env, "connect-targets", proxy=f"{app}:8888", client=ws,
             connect=["10.10.5.9:22", "c2.example.net:8443"],
             detail="CONNECT requests name non-web ports; the proxy resolves c2.example.net")


# -- 3. proxychains through two SOCKS hops ---------------------------------------------------------


HOP2 = ("hop2", "203.0.113.80")


@register
class ProxychainsTwoHops(Scenario):
    name: ClassVar[str] = "proxychains-two-hops"
    description: ClassVar[str] = (
        "ws-042 runs proxychains4 (strict chain) through microsocks on app-07 (www-data) and "
        "microsocks on an internet host hop2 (203.0.113.80) to beacon to the C2 "
        "(T1090.003 multi-hop proxy)")
    technique: ClassVar[str] = "T1090.003"

    def run(self, env: Env) -> None:
        lab, app, ws = env.lab, env.ip("app-07"), env.ip("ws-042")
        add_inet_host(env, *HOP2)
        hop2_ip = HOP2[1]
        first = microsocks(env, "app-07", "www-data")
        second = microsocks(env, "hop2", "nobody")
        conf = env.work / "proxychains.conf"
        conf.write_text("strict_chain\nquiet_mode\ntcp_read_time_out 15000\n"
                        "tcp_connect_time_out 8000\n[ProxyList]\n"
                        f"socks5 {app} 1080\nsocks5 {hop2_ip} 1080\n")
        argv = ["proxychains4", "-q", "-f", str(conf), "curl", "-sS", "-o", "/dev/null",
                "--max-time", "20", "--cacert", str(env.work / "c2.crt"), "--resolve",
                f"c2.example.net:443:{C2}", "https://c2.example.net/beacon"]
        runs = drive(env, [lambda: lab.run_on("ws-042", argv, name="proxychains4",
                                              timeout=30)], gap=1.5)
        stop_all(env, first, second)

        tool(env, first)
        tool(env, second)
        proxy(env, first, port=1080, protocol="socks5", tool_name="microsocks")
        proxy(env, second, port=1080, protocol="socks5", tool_name="microsocks")
        relay(env, first, client=ws, in_port=1080, upstream=hop2_ip, up_port=1080,
              tool_name="microsocks")
        env.truth.chains.append([ws, app, hop2_ip, C2])
        note(env, "external-relay", relay=hop2_ip, host="hop2", client=app,
             client_seen_as="203.0.113.1", in_port=1080, upstream=C2, up_port=443,
             tool="microsocks", pid=second.pid, user="nobody", start=iso(second.started),
             end=end_of(second),
             detail="second hop on the internet side: its outbound leg never crosses the LAN; "
                    "it sees app-07 as the router's NAT address")
        for p in runs:
            tool(env, p)


# -- 4. a chain of three hops mixing tools ---------------------------------------------------------


@register
class ThreeHopChain(Scenario):
    name: ClassVar[str] = "three-hop-chain"
    description: ClassVar[str] = (
        "www-data on app-07 runs socat TCP-LISTEN:2222 → db-09:22; ws-042 opens ssh -L "
        "127.0.0.1:9443:203.0.113.66:443 to root@db-09 through that relay, so db-09's sshd "
        "connects out to the C2; ws-042 beacons into the tunnel (T1090.003, T1572)")
    technique: ClassVar[str] = "T1090.003"

    def run(self, env: Env) -> None:
        lab, app, db, ws = env.lab, env.ip("app-07"), env.ip("db-09"), env.ip("ws-042")
        not_benign(env, "db-09")
        socat = lab.spawn("app-07", ["socat", "TCP-LISTEN:2222,fork,reuseaddr",
                                     f"TCP:{db}:22"], user="www-data", name="socat")
        lab.wait_port("app-07", 2222)
        ssh = lab.spawn("ws-042", [*env.ssh_cmd(), "-N", "-o", "ExitOnForwardFailure=yes",
                                   "-o", "ServerAliveInterval=5", "-L",
                                   f"127.0.0.1:9443:{C2}:443", "-p", "2222", f"root@{app}"],
                        name="ssh-L")
        lab.wait_port("ws-042", 9443, timeout=15)
        forwarder = sshd_session_of(env, "db-09", peer=app)
        runs = drive(env, [lambda: curl(env, "ws-042", "https://c2.example.net:9443/beacon",
                                        "--resolve", "c2.example.net:9443:127.0.0.1")],
                     gap=1.5)
        stop_all(env, ssh, socat)

        tool(env, socat)
        tool(env, ssh)
        relay(env, socat, client=ws, in_port=2222, upstream=db, up_port=22, tool_name="socat")
        # the forwarding end is sshd's post-auth child on db-09 (forked, never exec'd); it
        # lives as long as the ssh session
        env.truth.relays.append(Relay(
            relay=db, host="db-09", client=app, in_port=22, upstream=C2, up_port=443,
            tool="sshd", kind="process", pid=forwarder, user="root", start=iso(ssh.started),
            end=end_of(ssh)))
        env.truth.chains.append([ws, app, db, C2])
        for p in runs:
            tool(env, p)
        note(env, "ssh-forward", client=ws, local="127.0.0.1:9443", remote=f"{C2}:443",
             via=f"{app}:2222", sshd=db, sshd_pid=forwarder)


def sshd_session_of(env: Env, host: str, *, peer: str, timeout: float = 5) -> int | None:
    """The pid of the sshd process on ``host`` that serves the session from ``peer`` (the
    post-auth child, titled ``sshd: user`` or ``sshd: user@tty``), from the sockets it holds."""
    ns = env.lab.hosts[host].ns
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(["ip", "netns", "exec", ns, "ss", "-Htnp", "state", "established",
                   f"( sport = :22 and dst {peer} )"], check=False).stdout
        for pid in (int(p) for p in re.findall(r"pid=(\d+)", out)):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            # the post-auth child is "sshd: root" (with -N no channel ever adds "@notty");
            # the monitor is "sshd: root [priv]", the pre-auth child "[net]"/"[preauth]"
            if title.startswith("sshd: ") and "[" not in title:
                return pid
        time.sleep(0.1)
    logger.warning("no sshd session from %s on %s", peer, host)
    return None


# -- 5. beaconing through the sanctioned proxy -----------------------------------------------------


@register
class ProxyBeacon(Scenario):
    name: ClassVar[str] = "proxy-beacon"
    description: ClassVar[str] = (
        "ws-042 beacons over HTTPS to c2.example.net/beacon through the sanctioned proxy-01 "
        "(CONNECT via 10.10.0.5:3128) every ~2 s ± 30 %, among the office's ordinary proxied "
        "browsing (T1071.001, T1090.002 through an existing proxy)")
    technique: ClassVar[str] = "T1071.001"

    INTERVAL: ClassVar[float] = 2.0
    JITTER: ClassVar[float] = 0.3

    def run(self, env: Env) -> None:
        ws, proxy_ip = env.ip("ws-042"), env.ip("proxy-01")
        deadline = time.monotonic() + env.duration
        runs: list[Proc] = []
        while not env.stop_event.is_set():
            due = time.monotonic() + self.INTERVAL * env.rnd.uniform(1 - self.JITTER,
                                                                      1 + self.JITTER)
            runs.append(curl(env, "ws-042", "https://c2.example.net/beacon", "--proxy",
                             f"http://{proxy_ip}:3128"))
            if due > deadline and len(runs) >= 3:
                break
            env.stop_event.wait(max(0.0, due - time.monotonic()))
        for p in runs:
            tool(env, p)
        starts = [p.started for p in runs]
        note(env, "beacon", client=ws, host="ws-042", proxy=f"{proxy_ip}:3128",
             proxy_sanctioned=True, method="CONNECT", inner_destination="c2.example.net:443",
             inner_ip=C2, path="/beacon", interval_s=self.INTERVAL, jitter=self.JITTER,
             count=len(runs), pids=[p.pid for p in runs], times=[iso(t) for t in starts],
             gaps_s=[round(b - a, 3) for a, b in itertools.pairwise(starts)],
             detect=("the client's connections all go to the sanctioned proxy; the CONNECT "
                     "request line names c2.example.net:443 (in the LAN capture, before TLS), "
                     "at a near-regular ~2 s interval unlike the office's browsing; the proxy's "
                     "own outbound leg (10.10.0.5 -> 203.0.113.66:443) follows each one"))


# -- 6. domain fronting through a CDN edge ---------------------------------------------------------


EDGE = ("edge", "203.0.113.90")
FRONT = "cdn-front.example.net"
HIDDEN = "hidden-c2.example.org"


@register
class DomainFronting(Scenario):
    name: ClassVar[str] = "domain-fronting"
    description: ClassVar[str] = (
        "a CDN edge (203.0.113.90) serves TLS for cdn-front.example.net and routes by Host; "
        "ws-042 sends SNI cdn-front.example.net with Host hidden-c2.example.org, which the "
        "edge fetches from the C2; ws-051 visits the front site itself (T1090.004)")
    technique: ClassVar[str] = "T1090.004"

    def run(self, env: Env) -> None:
        lab, ws = env.lab, env.ip("ws-042")
        name, edge_ip = EDGE
        add_inet_host(env, name, edge_ip)
        key, crt = env.work / "edge.key", env.work / "edge.crt"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "30", "-subj", f"/CN={FRONT}", "-addext",
             f"subjectAltName=DNS:{FRONT},DNS:*.{FRONT}", "-keyout", str(key), "-out",
             str(crt)])
        edge = lab.spawn(name, [env.python, "-m", "hopguard.lab.edge", "--port", "443",
                                "--cert", str(crt), "--key", str(key), "--site", FRONT,
                                "--origin", f"{HIDDEN}={C2}:443:c2.example.net",
                                "--origin-ca", str(env.work / "c2.crt"),
                                # what a TLS-terminating CDN/gateway logs: SNI and Host of each
                                # connection under one flow_id (fronting.sni_host reads it)
                                "--eve", str(env.out / "edge-eve.json")], name="edge")
        lab.wait_port(name, 443)
        resolve = f"{FRONT}:443:{edge_ip}"

        def fronted() -> Proc:
            return env.curl("ws-042", f"https://{FRONT}/beacon", "--cacert", str(crt),
                            "--resolve", resolve, "-H", f"Host: {HIDDEN}")

        def front_site() -> Proc:
            page = env.rnd.choice(["/", "/assets/app.js", "/img/logo.png"])
            return env.curl("ws-051", f"https://{FRONT}{page}", "--cacert", str(crt),
                            "--resolve", resolve)

        runs = drive(env, [fronted, front_site, fronted], gap=1.0)
        stop_all(env, edge)

        tool(env, edge)
        beacons = [p for p in runs if p.host.name == "ws-042"]
        for p in beacons:
            tool(env, p)
        env.truth.chains.append([ws, edge_ip, C2])
        if beacons:
            env.truth.fronting.append(Fronting(
                client=ws, edge=edge_ip, front_sni=FRONT, hidden_host=HIDDEN,
                origin=f"{C2}:443", requests=len(beacons), start=iso(beacons[0].started),
                end=iso(beacons[-1].ended or beacons[-1].started)))
        note(env, "domain-fronting", front_sni=FRONT, hidden_host=HIDDEN, edge=edge_ip,
             origin=f"{C2}:443", origin_name="c2.example.net", client=ws,
             requests=len(beacons), pids=[p.pid for p in beacons],
             cover_client=env.ip("ws-051"),
             cover_requests=len(runs) - len(beacons),
             detail=("SNI and certificate say the front domain for both clients; only the "
                     "HTTP Host inside TLS differs. The edge's own request log (JSON lines, "
                     "logs/edge-edge-*.log with --keep-logs) shows sni/host/route per request; "
                     "edge-eve.json is the edge's gateway log (Suricata EVE tls + http events "
                     "per connection) that hopguard ingests"))
