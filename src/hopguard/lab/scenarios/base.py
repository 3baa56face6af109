"""The scenario contract and registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from hopguard.lab.env import Env


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
