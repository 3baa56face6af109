"""A workstation talking to a "Tor relay" that a hand-made consensus lists (T1090.003).

No real Tor network exists in the lab (it has no internet). What a sensor sees of a Tor client
is TLS connections to relay ORPorts whose addresses the published consensus lists; that is what
the scenario makes: an internet host ``tor-relay`` serves TLS on 9001, and the run writes a
network-status consensus (Tor dir-spec v3 format, written here) that lists it with the Guard and
Fast flags, beside relays that are nowhere in the lab. A second internet host ``tls-9001``
serves the same TLS on the same port and is in no consensus: connections to it must not be
reported. ws-042 (the compromised workstation) connects to both; ws-051 (benign) connects to the
unlisted one only. The consensus is in ``<run>/intel/cached-consensus``, outside what ingest
reads; ``hopguard hunt --intel <run>/intel/cached-consensus <run>`` uses it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from hopguard.lab.env import Env
from hopguard.lab.scenarios.base import Scenario, note, register, tool_run

RELAY = ("tor-relay", "203.0.113.91")
UNLISTED = ("tls-9001", "203.0.113.92")
OR_PORT = 9001
CLIENT = "ws-042"
BYSTANDER = "ws-051"
CONSENSUS = Path("intel") / "cached-consensus"

# Relays of the consensus that are not in the lab: (nickname, address, ORPort, DirPort, flags).
# Addresses from the documentation ranges; 203.0.113.93 is an exit nobody contacts.
OTHERS = (
    ("labExitOne", "203.0.113.93", 443, 0, "Exit Fast Running Stable Valid"),
    ("docGuard", "198.51.100.23", 9001, 9030, "Fast Guard Running Stable V2Dir Valid"),
    ("docMiddle", "198.51.100.24", 9001, 0, "Fast Running Valid"),
    ("docBadExit", "198.51.100.25", 443, 0, "BadExit Exit Fast Running Valid"),
)


def _b64(seed: str) -> str:
    """A 20-byte digest in the consensus's unpadded base64 (as identities are written)."""
    return base64.b64encode(hashlib.sha1(seed.encode()).digest()).decode().rstrip("=")


def consensus_text(relays: list[tuple[str, str, int, int, str]], valid_after: datetime) -> str:
    """A network-status consensus (dir-spec v3, "ns" flavour) listing ``relays``."""
    fmt = "%Y-%m-%d %H:%M:%S"
    fresh, until = valid_after + timedelta(hours=1), valid_after + timedelta(hours=3)
    lines = [
        "network-status-version 3",
        "vote-status consensus",
        "consensus-method 32",
        f"valid-after {valid_after.strftime(fmt)}",
        f"fresh-until {fresh.strftime(fmt)}",
        f"valid-until {until.strftime(fmt)}",
        "voting-delay 300 300",
        "known-flags Authority BadExit Exit Fast Guard HSDir Running Stable V2Dir Valid",
        "params CircuitPriorityHalflifeMsec=30000",
        "dir-source labauth " + hashlib.sha1(b"labauth").hexdigest().upper()
        + " 192.0.2.1 192.0.2.1 80 443",
        "contact lab operator",
        "vote-digest " + hashlib.sha1(b"vote").hexdigest().upper(),
    ]
    published = (valid_after - timedelta(hours=2)).strftime(fmt)
    for nick, ip, or_port, dir_port, flags in relays:
        lines += [
            f"r {nick} {_b64('id' + nick)} {_b64('desc' + nick)} {published} {ip} {or_port} "
            f"{dir_port}",
            f"s {flags}",
            "v Tor 0.4.8.13",
            "pr Cons=1-2 Desc=1-2 Link=1-5 Relay=1-4",
            "w Bandwidth=2048",
            "p " + ("accept 80,443" if "Exit" in flags.split() else "reject 1-65535"),
        ]
    lines += ["directory-footer", "bandwidth-weights Wbd=0 Wbe=0 Wbg=4194 Wbm=10000",
              "directory-signature " + hashlib.sha1(b"labauth").hexdigest().upper() + " "
              + hashlib.sha1(b"signing").hexdigest().upper(),
              "-----BEGIN SIGNATURE-----", base64.b64encode(b"lab" * 43).decode(),
              "-----END SIGNATURE-----"]
    return "\n".join(lines) + "\n"


@register
class TorRelay(Scenario):
    name: ClassVar[str] = "tor-relay"
    description: ClassVar[str] = (
        "ws-042 makes TLS connections to 203.0.113.91:9001, a relay the run's hand-made Tor "
        "consensus lists, and to 203.0.113.92:9001, an identical server no consensus lists; "
        "ws-051 uses the unlisted one only (T1090.003, Tor by its published relay list)")
    technique: ClassVar[str] = "T1090.003"

    def run(self, env: Env) -> None:
        lab = env.lab
        servers = []
        for name, ip in (RELAY, UNLISTED):
            lab.add_host(name, ip)
            env.truth.hosts[name] = {"ip": ip, "side": "inet"}
            servers.append(lab.spawn(name, [
                env.python, "-m", "hopguard.lab.servers", "--port", str(OR_PORT),
                "--cert", str(env.work / "web.crt"), "--key", str(env.work / "web.key")],
                name="tls"))
            lab.wait_port(name, OR_PORT)
        started = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
        rounds = max(3, int(env.duration / 4))
        for n in range(rounds):
            if env.stop_event.is_set():
                break
            proc = env.curl(CLIENT, f"https://{RELAY[1]}:{OR_PORT}/cell/{n}", "-k")
            if n == 0:  # what the "Tor client" ran (a plain TLS client: no proxy tool)
                env.truth.tools.append(tool_run(proc))
            env.curl(CLIENT, f"https://{UNLISTED[1]}:{OR_PORT}/page/{n}", "-k")
            if n % 2 == 0:
                env.curl(BYSTANDER, f"https://{UNLISTED[1]}:{OR_PORT}/page/{n}", "-k")
            env.stop_event.wait(env.rnd.uniform(0.8, 1.6))
        time.sleep(0.5)
        for proc in servers:
            lab.stop(proc)
        path = env.out / CONSENSUS
        path.parent.mkdir(parents=True, exist_ok=True)
        relays = [("labGuard", RELAY[1], OR_PORT, 0, "Fast Guard Running Stable Valid"),
                  *OTHERS]
        path.write_text(consensus_text(relays, started - timedelta(minutes=10)))
        note(env, "tor-relay", client=env.ip(CLIENT), relay=RELAY[1], port=OR_PORT,
             unlisted=UNLISTED[1], bystander=env.ip(BYSTANDER), consensus=str(CONSENSUS))
