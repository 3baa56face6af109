"""Run one scenario end to end and write its four files."""

from __future__ import annotations

import fcntl
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import IO

from hopguard.errors import ConfigError
from hopguard.lab.env import Env, check_tools, copy_logs, recorders
from hopguard.lab.net import Lab
from hopguard.lab.record import Capture
from hopguard.lab.scenarios import SCENARIOS
from hopguard.lab.sys import LabError, require_root
from hopguard.lab.truth import Truth, iso

logger = logging.getLogger(__name__)


def run_scenario(name: str, out: Path, *, seed: int = 1, duration: float = 12.0,
                 keep_logs: bool = False, bulk_bytes: int = 2_000_000,
                 capture_hosts: tuple[str, ...] = ()) -> Truth:
    """Build the office, run the scenario with background traffic, record, tear down."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; scenarios: {', '.join(SCENARIOS)}")
    require_root()
    check_tools()
    scenario = SCENARIOS[name]()
    out.mkdir(parents=True, exist_ok=True)
    lock = lab_lock()
    work = Path(tempfile.mkdtemp(prefix="hopguard-lab-"))
    truth = Truth(scenario=name, run_id="", seed=seed)
    previous = _trap_signals()
    try:
        with Lab(workdir=work) as lab:
            truth.run_id = lab.run_id
            env = Env(lab=lab, out=out, truth=truth, rnd=random.Random(seed), duration=duration,
                      python=sys.executable, bulk_bytes=bulk_bytes)
            env.build()
            capture, audit, nft = recorders(env)
            unknown = [h for h in capture_hosts if h not in lab.hosts]
            if unknown:
                raise ConfigError(f"no host {', '.join(unknown)} in the office; hosts: "
                                  f"{', '.join(lab.hosts)}")
            host_captures = [Capture(lab, out / f"capture-{h}.pcap", host=h)
                             for h in capture_hosts]
            try:  # whatever started is stopped in the finally, also when a later start fails
                capture.start()
                for c in host_captures:
                    c.start()
                audit.start()
                for host in ("router", *scenario.watch_nft):
                    nft.watch(host)
                truth.started = iso(time.time())
                env.background()
                scenario.run(env)
                env.stop_background()
                truth.ended = iso(time.time())
            except BaseException:
                keep_logs = True  # the tools' own logs say why
                raise
            finally:
                env.stop_event.set()
                nft.stop()
                capture.stop()
                for c in host_captures:
                    c.stop()
                audit.stop()
                if keep_logs:
                    copy_logs(env)
        truth.write(out / "truth.json")
        write_inventory(truth, out / "hopguard.toml")
        return truth
    finally:
        _restore_signals(previous)
        shutil.rmtree(work, ignore_errors=True)
        lock.close()


LOCK = Path("/run/hopguard-lab.lock")


def lab_lock(timeout: float = 600) -> IO[str]:
    """The kernel's audit subsystem is one per machine: lab runs take turns."""
    fh = LOCK.open("w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.close()
                raise LabError(f"another lab run holds {LOCK} for over {timeout:.0f} s") \
                    from None
            time.sleep(0.2)


def _trap_signals() -> dict[int, object]:
    """SIGTERM and SIGHUP become KeyboardInterrupt, so the with-blocks tear the lab down."""
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    previous: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, raise_interrupt)
    return previous


def _restore_signals(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def write_inventory(truth: Truth, path: Path) -> None:
    """The office's declared infrastructure as a hopguard configuration, what a site would
    write: the LAN is internal and the sanctioned proxies are declared, so `hopguard hunt
    --config hopguard.toml` over the run's files reports them as sanctioned."""
    from hopguard.lab.net import LAN
    proxies = sorted({f"{p.proxy}:{p.port}" for p in truth.proxies if p.sanctioned})
    quoted = ", ".join(f'"{p}"' for p in proxies)
    path.write_text("# written by 'hopguard lab run': the lab office's declared infrastructure\n"
                    "[inventory]\n"
                    f'networks = ["{LAN}"]\n'
                    f"proxies = [{quoted}]\n")

