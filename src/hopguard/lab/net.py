"""Hosts as network namespaces, a LAN and an "internet", and the processes that run on them.

Theory of operation. A lab run has a random four-hex-digit id; every namespace it creates is
named ``hg<id>-<name>``, so runs never collide and a crashed run can be swept (``sweep``). The
switch namespace holds two bridges: ``lan`` (10.10.0.0/16) and ``inet`` (203.0.113.0/24, a
documentation range that only exists inside the lab). The router namespace sits on both, forwards
and masquerades LAN traffic to the internet side, like an office NAT. Every host gets one veth
port on its bridge.

Processes are started with ``Lab.spawn``: the child writes the host's audit login id
(``/proc/self/loginuid``, 70000 + host index) before it enters the host's namespace, drops to the
requested user and execs the tool. The kernel keeps that login id on every descendant, so audit
records can be attributed to a lab host (and filtered from the rest of the machine) without any
cooperation from the tool, and the pid we get back is the tool's own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hopguard.lab.sys import LabError, private_files, require_root, require_tools, run, setns

logger = logging.getLogger(__name__)

LAN = ipaddress.ip_network("10.10.0.0/16")
INET = ipaddress.ip_network("203.0.113.0/24")
ROUTER_LAN = "10.10.0.1"
ROUTER_INET = "203.0.113.1"
AUID_BASE = 70000
PREFIX = "hg"
LAB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(slots=True)
class Host:
    name: str
    ip: str
    side: str  # "lan" or "inet"
    index: int
    ns: str

    @property
    def auid(self) -> int:
        return AUID_BASE + self.index

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.ns}"


@dataclass(slots=True)
class Proc:
    host: Host
    argv: list[str]
    user: str
    popen: subprocess.Popen[bytes]
    started: float
    ended: float | None = None
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass(slots=True)
class Lab:
    """One lab run. Use as a context manager: everything is removed on exit."""

    workdir: Path
    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    etc: dict[str, str] = field(default_factory=dict)  # lab files bound over /etc in children
    _namespaces: list[str] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    # Spawns and the start of teardown take turns: once close() has begun no process starts
    # (a background thread's spawn in flight would otherwise escape the teardown's list and
    # outlive the run).
    _spawn_lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: bool = False

    # -- building -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        require_root()
        require_tools("ip", "nft")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._build_core()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, name: str) -> str:
        return f"{PREFIX}{self.run_id}-{name}"

    def _add_ns(self, name: str) -> str:
        ns = self.ns(name)
        run(["ip", "netns", "add", ns])
        self._namespaces.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def _build_core(self) -> None:
        sw = self._add_ns("sw")
        for br in ("lan", "inet"):
            run(["ip", "-n", sw, "link", "add", br, "type", "bridge"])
            # no STP / forwarding delay: ports forward at once
            run(["ip", "-n", sw, "link", "set", br, "type", "bridge", "forward_delay", "0",
                 "stp_state", "0"])
            run(["ip", "-n", sw, "link", "set", br, "up"])
        rt = self._add_ns("router")
        self._port(rt, "eth0", "lan", "r0")
        self._port(rt, "eth1", "inet", "r1")
        run(["ip", "-n", rt, "addr", "add", f"{ROUTER_LAN}/16", "dev", "eth0"])
        run(["ip", "-n", rt, "addr", "add", f"{ROUTER_INET}/24", "dev", "eth1"])
        run(["ip", "netns", "exec", rt, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        run(["ip", "netns", "exec", rt, "nft", "-f", "-"], input=(
            "table ip lab_nat {\n chain postrouting {\n"
            "  type nat hook postrouting priority srcnat; policy accept;\n"
            '  oifname "eth1" masquerade\n }\n}\n'))

    def _port(self, ns: str, ifname: str, bridge: str, tag: str) -> None:
        port = f"{PREFIX}{self.run_id}{tag}"[:15]
        sw = self.ns("sw")
        run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", ifname,
             "netns", ns])
        run(["ip", "-n", sw, "link", "set", port, "master", bridge, "up"])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])

    def add_host(self, name: str, ip: str) -> Host:
        """A host on the LAN (10.10/16) or the internet side (203.0.113/24), by its address."""
        if name in self.hosts:
            raise LabError(f"host {name} exists already")
        addr = ipaddress.ip_address(ip)
        side = "lan" if addr in LAN else "inet" if addr in INET else ""
        if not side or ip in (ROUTER_LAN, ROUTER_INET):
            raise LabError(f"{ip} is not a free lab address (LAN {LAN}, internet {INET})")
        ns = self._add_ns(name)
        host = Host(name=name, ip=ip, side=side, index=len(self.hosts) + 1, ns=ns)
        self._port(ns, "eth0", side, f"h{host.index}")
        prefix = LAN.prefixlen if side == "lan" else INET.prefixlen
        run(["ip", "-n", ns, "addr", "add", f"{ip}/{prefix}", "dev", "eth0"])
        gw = ROUTER_LAN if side == "lan" else ROUTER_INET
        run(["ip", "-n", ns, "route", "add", "default", "via", gw])
        self.hosts[name] = host
        return host

    def host_of_auid(self) -> dict[int, str]:
        return {h.auid: h.name for h in self.hosts.values()}

    # -- processes ----------------------------------------------------------------------

    def spawn(self, host: str | Host, argv: Sequence[str], *, user: str = "root",
              name: str | None = None, stdin: int | None = subprocess.DEVNULL,
              env: dict[str, str] | None = None, cwd: str | None = None) -> Proc:
        """Start ``argv`` on a host as ``user``; returns at once (the tool runs on)."""
        h = host if isinstance(host, Host) else self.hosts[host]
        pw = pwd.getpwnam(user)
        seq = next(self._seq)  # unique under the background threads' concurrent spawns
        log = self.workdir / "logs" / f"{h.name}-{name or Path(argv[0]).name}-{seq}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("wb")
        netns = h.netns_path
        auid = h.auid
        binds = dict(self.etc)

        def child() -> None:  # runs in the forked child, before exec
            with open("/proc/self/loginuid", "w") as fh:
                fh.write(str(auid))
            setns(netns)
            if binds:
                private_files(binds)
            os.setsid()
            if pw.pw_uid != 0:
                os.initgroups(pw.pw_name, pw.pw_gid)
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

        base_env = {"PATH": LAB_PATH, "HOME": pw.pw_dir, "USER": pw.pw_name, "LANG": "C.UTF-8"}
        argv = list(argv)
        if "/" not in argv[0]:
            # resolve here: the child's PATH search would leave a failed execve per directory
            # in the audit log before the real one
            exe = shutil.which(argv[0], path=LAB_PATH)
            if exe is None:
                raise LabError(f"{argv[0]} is not installed (PATH {LAB_PATH})")
            argv[0] = exe
        with self._spawn_lock:
            if self._closing:
                out.close()
                raise LabError(f"the lab is shutting down: {argv[0]} not started on {h.name}")
            try:
                popen = subprocess.Popen(argv, preexec_fn=child, stdin=stdin, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env={**base_env, **(env or {})}, cwd=cwd or "/",
                                         close_fds=True)
            finally:
                out.close()
            proc = Proc(host=h, argv=argv, user=user, popen=popen, started=time.time(),
                        log=log)
            self.procs.append(proc)
        logger.info("%s: started %s (pid %d)", h.name, " ".join(argv), popen.pid)
        return proc

    def run_on(self, host: str | Host, argv: Sequence[str], *, user: str = "root",
               timeout: float = 60, name: str | None = None,
               env: dict[str, str] | None = None) -> Proc:
        """Run a command on a host to completion; raises LabError when it fails."""
        proc = self.spawn(host, argv, user=user, name=name, env=env)
        try:
            code = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise LabError(f"{' '.join(argv)} on {proc.host.name} took over {timeout} s") \
                from None
        proc.ended = time.time()
        if code != 0:
            tail = proc.log.read_text(errors="replace")[-400:] if proc.log else ""
            raise LabError(f"{' '.join(argv)} on {proc.host.name} exited {code}: {tail}")
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, timeout: float = 5,
             also: Sequence[int] = ()) -> None:
        """Stop a tool and wait until nothing of it is left: every process (zombies included)
        in the sessions of its process tree and of the trees of ``also`` (relaying processes
        it did not start itself, such as an sshd session), SIGKILLed after ``timeout``."""
        sids = tree_sessions(proc.pid, *also)
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout)
        if proc.ended is None:
            proc.ended = time.time()
        settle(sids, timeout)

    def wait_port(self, host: str | Host, port: int, timeout: float = 10) -> None:
        """Wait until something listens on TCP ``port`` on the host."""
        h = host if isinstance(host, Host) else self.hosts[host]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = run(["ip", "netns", "exec", h.ns, "ss", "-Htln", f"sport = :{port}"],
                      check=False).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise LabError(f"nothing listens on {h.name}:{port} after {timeout} s")

    # -- teardown -----------------------------------------------------------------------

    def close(self) -> None:
        with self._spawn_lock:
            self._closing = True
        for proc in reversed(self.procs):
            try:
                self.stop(proc, timeout=3)
            except Exception:  # teardown goes on whatever one process does
                logger.exception("stopping %s", proc.argv)
        for ns in reversed(self._namespaces):
            kill_namespace(ns)
        self._namespaces.clear()


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a process, zombies included; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[3])


def _all_stats() -> dict[int, tuple[int, int]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := proc_stat(int(entry.name))) is not None:
            found[int(entry.name)] = st
    return found


def tree_sessions(*pids: int) -> set[int]:
    """Session ids of these processes and of all their descendants, as they are now.

    Lab tools start in sessions of their own, and so do sshd's connections and the commands
    sshd runs; when a parent dies first its children are reparented and reaped later, so
    waiting for the main pid alone does not tell that they are gone."""
    stats = _all_stats()
    tree: set[int] = set()
    todo = [p for p in pids if p in stats]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(c for c, (ppid, _) in stats.items() if ppid == pid and c not in tree)
    return {stats[p][1] for p in tree}


def settle(sids: set[int], timeout: float = 5) -> None:
    """Wait until no process (zombies included) is left in these sessions; SIGKILL what is
    still alive after ``timeout`` and wait a little more."""
    deadline, killed = time.monotonic() + timeout, False
    while sids:
        left = [p for p, (_, sid) in _all_stats().items() if sid in sids]
        if not left:
            return
        if time.monotonic() > deadline:
            if killed:
                logger.warning("processes %s of sessions %s outlived their tool", left,
                               sorted(sids))
                return
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 3
        time.sleep(0.05)


def kill_namespace(ns: str, wait: float = 5.0) -> None:
    """Kill every process in a namespace, wait until they are gone, then delete it."""
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    pids = [int(p) for p in out.split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Orphans are reaped by pid 1 a little later; until then they still show in /proc.
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        if pids:
            time.sleep(0.05)
    run(["ip", "netns", "del", ns], check=False)


def lab_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.split() and line.split()[0].startswith(PREFIX) and "-" in line.split()[0]
            and len(line.split()[0].split("-")[0]) == len(PREFIX) + 4]


def sweep() -> list[str]:
    """Remove namespaces left by crashed lab runs."""
    gone = lab_namespaces()
    for ns in gone:
        kill_namespace(ns)
    return gone
