"""The standard lab office every scenario runs in, and its benign background traffic.

LAN (10.10.0.0/16): ws-042 and ws-051 (workstations), proxy-01 (the sanctioned forward proxy,
tinyproxy on 3128), dns-01 (dnsmasq), app-07 (a Linux server with sshd, where relays get planted)
and db-09 (an internal server with sshd). Internet (203.0.113.0/24): web (HTTP and HTTPS for
several names) and c2 (the attacker's HTTPS server). Background traffic, for the whole run:
browsing through the sanctioned proxy, direct HTTPS, DNS lookups, a bulk download and
interactive SSH sessions.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from hopguard.lab.net import Lab, Proc
from hopguard.lab.record import Audit, Capture, NftMonitor
from hopguard.lab.sys import LabError, require_tools, run
from hopguard.lab.truth import Proxy, Truth, iso

logger = logging.getLogger(__name__)

LAN_HOSTS = {"ws-042": "10.10.1.42", "ws-051": "10.10.1.51", "proxy-01": "10.10.0.5",
             "dns-01": "10.10.0.2", "app-07": "10.10.2.7", "db-09": "10.10.5.9"}
INET_HOSTS = {"web": "203.0.113.10", "c2": "203.0.113.66"}
NAMES = {"www.example.com": "203.0.113.10", "docs.example.org": "203.0.113.10",
         "updates.example.net": "203.0.113.10", "c2.example.net": "203.0.113.66",
         "cdn-static.example.net": "203.0.113.66"}
TOOLS = ("tcpdump", "auditd", "auditctl", "nft", "socat", "curl", "tinyproxy", "dnsmasq",
         "/usr/sbin/sshd", "ssh", "ssh-keygen", "openssl", "dig")


@dataclass
class Env:
    """A running office: the lab, its recorders, keys and certificates, the truth being written."""

    lab: Lab
    out: Path
    truth: Truth
    rnd: random.Random
    duration: float
    python: str
    bulk_bytes: int = 2_000_000  # the largest background download (example data uses less)
    ssh_key: Path = field(init=False)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.lab.workdir

    def ip(self, host: str) -> str:
        return self.lab.hosts[host].ip

    # -- set-up -------------------------------------------------------------------------

    def build(self) -> None:
        # Lab processes see their own resolver and host names, never the machine's.
        resolv, hosts = self.work / "resolv.conf", self.work / "hosts"
        resolv.write_text("nameserver 10.10.0.2\noptions timeout:1 attempts:1\n")
        hosts.write_text("127.0.0.1 localhost\n" + "".join(
            f"{ip} {name}\n" for name, ip in {**LAN_HOSTS, **INET_HOSTS, **NAMES}.items()))
        self.lab.etc.update({"/etc/resolv.conf": str(resolv), "/etc/hosts": str(hosts)})
        # Plain shell start-up files for root: the machine's own (version managers and the
        # like) would otherwise run in every lab SSH session and flood audit.log.
        for rc in (".bashrc", ".profile", ".bash_profile", ".bash_login"):
            if Path("/root", rc).is_file():
                plain = self.work / f"root{rc}"
                plain.write_text("# lab: a plain start-up file\n")
                self.lab.etc[f"/root/{rc}"] = str(plain)
        for name, ip in {**LAN_HOSTS, **INET_HOSTS}.items():
            self.lab.add_host(name, ip)
            self.truth.hosts[name] = {"ip": ip, "side": self.lab.hosts[name].side}
        self._certs()
        self._keys()
        self._servers()

    def _certs(self) -> None:
        for name in ("web", "c2"):
            sans = ",".join(f"DNS:{n}" for n, ip in NAMES.items() if ip == INET_HOSTS[name])
            run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj",
                 f"/CN={sans.split(',')[0][4:]}", "-addext", f"subjectAltName={sans}",
                 "-keyout", str(self.work / f"{name}.key"), "-out",
                 str(self.work / f"{name}.crt")])

    def _keys(self) -> None:
        self.ssh_key = self.work / "id_lab"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key)])
        (self.work / "authorized_keys").write_text((self.work / "id_lab.pub").read_text())
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.work / "hostkey")])
        (self.work / "sshd_config").write_text(
            f"HostKey {self.work / 'hostkey'}\nAuthorizedKeysFile {self.work / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
            "StrictModes no\nAllowTcpForwarding yes\nGatewayPorts clientspecified\n"
            f"PidFile none\nListenAddress 0.0.0.0\nSubsystem sftp internal-sftp\n")
        for path in (self.ssh_key, self.work / "hostkey"):
            path.chmod(0o600)
        self.work.chmod(0o755)

    def _servers(self) -> None:
        lab = self.lab
        for name in ("web", "c2"):
            lab.spawn(name, [self.python, "-m", "hopguard.lab.servers", "--port", "443",
                             "--cert", str(self.work / f"{name}.crt"), "--key",
                             str(self.work / f"{name}.key")], name="https")
            lab.spawn(name, [self.python, "-m", "hopguard.lab.servers", "--port", "80"],
                      name="http")
        args = ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
                "--listen-address=10.10.0.2", "--user=root", "--pid-file="]
        args += [f"--address=/{n}/{ip}" for n, ip in NAMES.items()]
        lab.spawn("dns-01", args, name="dnsmasq")
        conf = self.work / "tinyproxy.conf"
        conf.write_text("Port 3128\nListen 10.10.0.5\nTimeout 60\nMaxClients 50\n"
                        "Allow 10.10.0.0/16\nConnectPort 443\nConnectPort 563\nLogLevel Warning\n")
        proxy = lab.spawn("proxy-01", ["tinyproxy", "-d", "-c", str(conf)], name="tinyproxy")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        for host in ("app-07", "db-09"):
            lab.spawn(host, ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.work / "sshd_config")],
                      name="sshd")
        for host, port in (("web", 443), ("c2", 443), ("web", 80), ("proxy-01", 3128),
                           ("app-07", 22), ("db-09", 22)):
            lab.wait_port(host, port)
        self.truth.proxies.append(Proxy(
            proxy="10.10.0.5", host="proxy-01", port=3128, protocol="http-connect",
            tool="tinyproxy", sanctioned=True, pid=proxy.pid, start=iso(proxy.started), end=""))
        self.truth.benign_hosts = ["ws-051", "proxy-01", "dns-01", "db-09", "web"]

    # -- background traffic -------------------------------------------------------------

    def background(self) -> None:
        """Start benign traffic threads; they stop with ``stop_event``."""
        jobs = [self._browse_via_proxy, self._direct_https, self._dns, self._ssh_sessions]
        for job in jobs:
            t = threading.Thread(target=self._loop, args=(job,), daemon=True)
            t.start()
            self.threads.append(t)

    def _loop(self, job) -> None:  # type: ignore[no-untyped-def]
        rnd = random.Random(self.rnd.random())
        while not self.stop_event.is_set():
            try:
                job(rnd)
            except LabError as exc:
                logger.info("background job: %s", exc)
            self.stop_event.wait(rnd.uniform(1.0, 3.0))

    def curl(self, host: str, url: str, *extra: str, timeout: float = 20) -> Proc:
        return self.lab.run_on(host, ["curl", "-sS", "-o", "/dev/null", "--max-time",
                                      str(int(timeout)), *extra, url],
                               timeout=timeout + 5, name="curl")

    def _browse_via_proxy(self, rnd: random.Random) -> None:
        name = rnd.choice(["www.example.com", "docs.example.org", "updates.example.net"])
        client = rnd.choice(["ws-042", "ws-051"])
        size = rnd.choice([2000, 15000, 60000])
        self.curl(client, f"https://{name}/bytes/{size}", "--cacert",
                  str(self.work / "web.crt"), "--proxy", "http://10.10.0.5:3128",
                  "--resolve", f"{name}:443:{NAMES[name]}")

    def _direct_https(self, rnd: random.Random) -> None:
        size = rnd.choice([1000, 5000, self.bulk_bytes])
        self.curl("ws-051", f"https://updates.example.net/bytes/{size}", "--cacert",
                  str(self.work / "web.crt"), "--resolve", "updates.example.net:443:203.0.113.10")

    def _dns(self, rnd: random.Random) -> None:
        name = rnd.choice(list(NAMES))
        self.lab.run_on(rnd.choice(["ws-042", "ws-051"]),
                        ["dig", "+short", "+time=2", "+tries=1", "@10.10.0.2", name],
                        name="dig")

    def _ssh_sessions(self, rnd: random.Random) -> None:
        self.lab.run_on("ws-051", [*self.ssh_cmd(), "root@10.10.5.9",
                                   "uname -a; uptime; sleep 1"], name="ssh", timeout=20)

    def ssh_cmd(self) -> list[str]:
        return ["ssh", "-i", str(self.ssh_key), "-o", "StrictHostKeyChecking=no", "-o",
                "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    def stop_background(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)


def recorders(env: Env) -> tuple[Capture, Audit, NftMonitor]:
    return (Capture(env.lab, env.out / "capture.pcap"),
            Audit(env.lab, env.out / "audit.log"),
            NftMonitor(env.lab, env.out / "nft-monitor.log"))


def check_tools() -> None:
    require_tools(*TOOLS)


def copy_logs(env: Env) -> None:
    logs = env.work / "logs"
    if logs.is_dir():
        shutil.copytree(logs, env.out / "logs", dirs_exist_ok=True)
