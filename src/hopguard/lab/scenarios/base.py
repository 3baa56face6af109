"""The scenario contract and registry."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, ClassVar

from hopguard.lab.truth import Relay, ToolRun, iso

if TYPE_CHECKING:
    from hopguard.lab.env import Env
    from hopguard.lab.net import Proc


class Scenario:
    """One labelled situation. ``run`` starts its tools, drives traffic for about
    ``env.duration`` seconds while the background traffic goes on, and records in ``env.truth``
    what it started (addresses, ports, pids, times)."""

    name: ClassVar[str]
    description: ClassVar[str]
    technique: ClassVar[str]
    watch_nft: ClassVar[tuple[str, ...]] = ()  # hosts whose nft changes are recorded

    def run(self, env: Env) -> None:
        raise NotImplementedError


SCENARIOS: dict[str, type[Scenario]] = {}


def register(cls: type[Scenario]) -> type[Scenario]:
    SCENARIOS[cls.name] = cls
    return cls


# -- what every scenario records ---------------------------------------------------------

def tool_run(proc: Proc) -> ToolRun:
    """What a process really ran, from its Proc: host, argv (as exec'd), user, pid and times."""
    return ToolRun(host=proc.host.name, ip=proc.host.ip, argv=list(proc.argv), user=proc.user,
                   pid=proc.pid, start=iso(proc.started), end=iso(proc.ended or time.time()))


def process_relay(server: Proc, *, client: str, in_port: int, upstream: str, up_port: int,
                  tool: str, user: str | None = None) -> Relay:
    """A relay by a server process on its host, for the server's lifetime."""
    return Relay(relay=server.host.ip, host=server.host.name, client=client, in_port=in_port,
                 upstream=upstream, up_port=up_port, tool=tool, kind="process", pid=server.pid,
                 user=user or server.user, start=iso(server.started),
                 end=iso(server.ended or time.time()))


def note(env: Env, kind: str, **fields: Any) -> None:
    """A fact truth.json has no field for, as a JSON object with a ``kind``."""
    env.truth.notes.append(json.dumps({"kind": kind, **fields}, sort_keys=True))


def not_benign(env: Env, *hosts: str) -> None:
    """Hosts a scenario uses for its own purposes are no longer benign."""
    env.truth.benign_hosts = [h for h in env.truth.benign_hosts if h not in hosts]
