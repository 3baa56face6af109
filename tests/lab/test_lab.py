"""The lab as a user runs it: `hopguard lab run`, its files, its truth and a clean machine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hopguard.lab.scenarios import SCENARIOS
from tests.lab.check import check_run
from tests.lab.conftest import leftovers

pytestmark = [pytest.mark.lab, pytest.mark.root]


def hopguard(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hopguard", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_socat_relay_from_the_command_line(tmp_path: Path) -> None:
    before = leftovers()
    t0 = time.monotonic()
    proc = hopguard("lab", "run", "socat-relay", "--out", str(tmp_path), "--duration", "10")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s"
    truth = check_run(tmp_path)
    assert [(r["relay"], r["in_port"], r["upstream"], r["up_port"]) for r in truth["relays"]] \
        == [("10.10.2.7", 8443, "203.0.113.66", 443)]
    assert leftovers() == before


def test_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    before = leftovers()
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "hopguard", "lab", "run", "socat-relay",
                                 "--out", str(tmp_path / sig.name), "--duration", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(6)  # the office is up and traffic flows
        assert proc.poll() is None
        proc.send_signal(sig)
        proc.wait(60)
        assert proc.returncode != 0
        assert leftovers() == before, sig.name


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_truth_matches_its_recordings(name: str, scenario_run) -> None:  # type: ignore[no-untyped-def]
    out = scenario_run(name)  # the shared run (tests/lab/test_detection.py reads it too)
    truth = check_run(out)
    assert truth["tools"], "a scenario must record the tools it ran"
    assert (out / "hopguard.toml").read_text().count("10.10.0.5:3128") == 1


def test_capture_of_one_host_on_request(tmp_path: Path) -> None:
    proc = hopguard("lab", "run", "socat-relay", "--out", str(tmp_path), "--duration", "5",
                    "--capture-host", "app-07")
    assert proc.returncode == 0, proc.stderr
    from tests.lab.conftest import syns
    own = syns(tmp_path / "capture-app-07.pcap")
    assert own and all("10.10.2.7" in (s, d) for s, _, d, _ in own)
    bad = hopguard("lab", "run", "socat-relay", "--out", str(tmp_path / "x"),
                   "--capture-host", "nosuch")
    assert bad.returncode == 1 and "no host nosuch" in bad.stderr
