"""Lab tests: real tools in network namespaces. They need root; CI runs as root."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from hopguard.lab.net import AUID_BASE, lab_namespaces


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("lab tests must run as root in CI")
        pytest.skip("lab tests need root")


def lab_processes() -> list[int]:
    """Processes whose audit login id marks them as started by a lab."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            auid = int((entry / "loginuid").read_text())
        except (OSError, ValueError):
            continue
        if AUID_BASE <= auid < AUID_BASE + 1000:
            found.append(int(entry.name))
    return found


def lab_audit_rules() -> list[str]:
    out = subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "hopguard-lab" in line]


def leftovers() -> dict[str, list[object]]:
    """What lab runs left on the machine, looked at while no lab run is active (the lab's
    lock), so a run in another process cannot show up half-built."""
    from hopguard.lab.run import lab_lock
    lock = lab_lock()
    try:
        return {"namespaces": list(lab_namespaces()), "processes": list(lab_processes()),
                "audit rules": list(lab_audit_rules())}
    finally:
        lock.close()


def syns(pcap: Path) -> list[tuple[str, int, str, int]]:
    """(src, sport, dst, dport) of every TCP SYN in a capture, as tcpdump reads it."""
    out = subprocess.run(["tcpdump", "-nr", str(pcap), "tcp[tcpflags] & tcp-syn != 0 and "
                          "tcp[tcpflags] & tcp-ack == 0"], capture_output=True,
                         text=True).stdout
    pat = re.compile(r" IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+):")
    return [(m[1], int(m[2]), m[3], int(m[4])) for m in pat.finditer(out)]


# Scenarios that need a longer run than the default to show what they plant (the beacon needs
# enough connections to have intervals to score).
DURATIONS = {"proxy-beacon": 40.0}


@pytest.fixture(scope="session")
def scenario_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """scenario_run(name) -> output directory of one run of that scenario, made once per test
    session and shared by every test that looks at it; each run must leave the machine as it
    found it."""
    from hopguard.lab.run import run_scenario
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            before = leftovers()
            out = tmp_path_factory.mktemp(name)
            run_scenario(name, out, duration=DURATIONS.get(name, 8.0))
            assert leftovers() == before, f"{name}: the run left something behind"
            done[name] = out
        return done[name]

    return get
