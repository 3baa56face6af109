"""Lab scenarios: each starts real tools in the standard office and records what it started."""

from __future__ import annotations

from hopguard.lab.scenarios import proxies, relays, ssh, tor  # noqa: F401  (registers)
from hopguard.lab.scenarios.base import SCENARIOS, Scenario

__all__ = ["SCENARIOS", "Scenario"]
