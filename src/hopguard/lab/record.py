"""What a lab run records: the LAN span, kernel audit events, nftables changes.

Capture: tcpdump on the switch namespace's ``lan`` bridge sees every frame between LAN hosts and
the router (the span port of an office switch). Audit: the audit subsystem is not namespaced, so
rules match only processes whose login id lies in the lab's range (see net.py); auditd runs in
the foreground and its event stream is kept; at the end, events of lab hosts are written to
``audit.log`` with ``node=<host>`` in front, as auditd's ``name_format`` would. nft: ``nft
monitor`` runs in each namespace that may change its ruleset; its lines get an ISO 8601 time and
the host name in front.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import re
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from hopguard.lab.net import AUID_BASE, Lab
from hopguard.lab.sys import LabError, require_tools, run

logger = logging.getLogger(__name__)


class Capture:
    """tcpdump on one interface of one namespace: by default the switch's LAN bridge (the span
    port); ``host=`` captures that host's own interface instead."""

    def __init__(self, lab: Lab, path: Path, bridge: str = "lan", host: str | None = None) -> None:
        require_tools("tcpdump")
        self.lab, self.path = lab, path
        self.ns = lab.hosts[host].ns if host else lab.ns("sw")
        self.bridge = "eth0" if host else bridge
        self.label = host or bridge
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        logs = self.lab.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        err = (logs / f"tcpdump-{self.label}.log").open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "tcpdump", "-i", self.bridge, "-n", "-U",
             "-s", "0", "-w", str(self.path)], stdout=err, stderr=subprocess.STDOUT)
        err.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # tcpdump writes the file header once it listens
            if self.path.exists() and self.path.stat().st_size >= 24:
                time.sleep(0.2)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise LabError(f"tcpdump did not start on {self.label}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            time.sleep(0.3)  # let the last frames in
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class NftMonitor:
    """``nft monitor`` in several namespaces, merged into one timestamped log."""

    def __init__(self, lab: Lab, path: Path) -> None:
        self.lab, self.path = lab, path
        self.procs: list[tuple[str, subprocess.Popen[bytes], threading.Thread]] = []
        self.lock = threading.Lock()
        self.fh = path.open("w")

    def watch(self, host: str) -> None:
        ns = self.lab.hosts[host].ns if host in self.lab.hosts else self.lab.ns(host)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        t = threading.Thread(target=self._pump, args=(host, proc), daemon=True)
        t.start()
        self.procs.append((host, proc, t))
        time.sleep(0.1)  # nft monitor subscribes before we return

    def _pump(self, host: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            stamp = datetime.now(UTC).isoformat(timespec="microseconds")
            with self.lock:
                self.fh.write(f"{stamp} host={host} {line}\n")
                self.fh.flush()

    def stop(self) -> None:
        time.sleep(0.2)
        for _, proc, t in self.procs:
            if proc.poll() is None:
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            t.join(5)
        self.fh.close()


_AUID = re.compile(r"\bauid=(\d+)")
_STAMP = re.compile(r"msg=audit\(([\d.]+:\d+)\)")


class Audit:
    """Kernel audit of the lab's processes, through a foreground auditd."""

    SYSCALLS = "execve,connect,accept,accept4,bind,listen"

    def __init__(self, lab: Lab, path: Path) -> None:
        require_tools("auditd", "auditctl")
        self.lab, self.path = lab, path
        self.key = f"hopguard-lab-{lab.run_id}"
        self.raw = lab.workdir / "audit-raw.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.enabled_before: str | None = None
        self.rules_added = False
        self.external_log: Path | None = None
        self.external_offset = 0

    def start(self) -> None:
        status = run(["auditctl", "-s"]).stdout
        self.enabled_before = _status(status, "enabled")
        pid = _status(status, "pid")
        if pid not in (None, "0") and Path(f"/proc/{pid}").exists():
            # an audit daemon runs already: read what it writes from now on
            self.external_log = Path("/var/log/audit/audit.log")
            self.external_offset = self.external_log.stat().st_size \
                if self.external_log.exists() else 0
        else:
            raw = self.raw.open("wb")
            self.proc = subprocess.Popen(["auditd", "-f", "-n"], stdout=raw,
                                         stderr=subprocess.STDOUT)
            raw.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pid = _status(run(["auditctl", "-s"]).stdout, "pid")
                if pid not in (None, "0"):
                    break
                if self.proc.poll() is not None:
                    raise LabError("auditd did not start: "
                                   + self.raw.read_text(errors="replace")[-300:])
                time.sleep(0.05)
        run(["auditctl", "-e", "1"])
        lo, hi = AUID_BASE, AUID_BASE + 999
        for arch in ("b64", "b32"):
            run(["auditctl", "-a", "always,exit", "-F", f"arch={arch}", "-S",
                 self.SYSCALLS if arch == "b64" else "execve", "-F", f"auid>={lo}",
                 "-F", f"auid<={hi}", "-k", self.key])
        self.rules_added = True

    def stop(self) -> None:
        time.sleep(0.5)  # let the kernel's backlog reach auditd
        if self.rules_added:
            run(["auditctl", "-D", "-k", self.key], check=False)
            self.rules_added = False
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.enabled_before is not None:
            run(["auditctl", "-e", self.enabled_before if self.enabled_before in ("0", "1")
                 else "0"], check=False)
            self.enabled_before = None
        self._write()

    def _source_lines(self) -> list[str]:
        if self.external_log is not None:
            with self.external_log.open("rb") as fh:
                fh.seek(self.external_offset)
                data = fh.read()
        else:
            data = self.raw.read_bytes() if self.raw.exists() else b""
        return [ln for ln in data.decode("utf-8", "replace").splitlines()
                if ln.startswith(("type=", "node="))]

    def _write(self) -> None:
        """Keep the events of lab hosts; put ``node=<host>`` in front of each of their lines."""
        hosts = self.lab.host_of_auid()
        lines = self._source_lines()
        owner: dict[str, str] = {}
        for line in lines:
            if " type=SYSCALL " in f" {line}" or line.startswith("type=SYSCALL"):
                s, a = _STAMP.search(line), _AUID.search(line)
                if s and a and int(a.group(1)) in hosts:
                    owner[s.group(1)] = hosts[int(a.group(1))]
        with self.path.open("w") as out:
            for line in lines:
                s = _STAMP.search(line)
                if s and s.group(1) in owner:
                    out.write(f"node={owner[s.group(1)]} {_enriched(line)}\n")


_ID_FIELD = re.compile(r"\b(auid|uid|euid|suid|fsuid|gid|egid|sgid|fsgid)=(\d+)\b")


def _enriched(line: str) -> str:
    """A SYSCALL record in auditd's ENRICHED log_format: the raw record, a GS byte (0x1d) and
    the ids resolved to names (``UID="www-data"``), as auditd writes with ``log_format =
    ENRICHED``. ``auditd -f`` prints raw records whatever the configuration says, so the lab
    resolves them itself, with the same passwd and group files auditd would read: the lab's
    hosts are namespaces of this machine."""
    if "type=SYSCALL " not in line or "\x1d" in line:
        return line
    names = []
    for key, num in _ID_FIELD.findall(line):
        name = _id_name(key, int(num))
        if name is not None:
            names.append(f'{key.upper()}="{name}"')
    return f"{line}\x1d{' '.join(names)}" if names else line


def _id_name(key: str, num: int) -> str | None:
    if num == 4294967295:
        return "unset"
    try:
        if "gid" in key:
            return grp.getgrgid(num).gr_name
        return pwd.getpwuid(num).pw_name
    except KeyError:
        return None


def _status(text: str, key: str) -> str | None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == key:
            return parts[1]
    return None


def audit_rules_with_key(prefix: str = "hopguard-lab-") -> list[str]:
    out = run(["auditctl", "-l"], check=False).stdout
    return [line for line in out.splitlines() if prefix in line]
