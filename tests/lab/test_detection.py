"""Every lab scenario through the detectors: each planted relay, chain, proxy, fronting client
and beacon is found (recall 100 %), the sanctioned proxy is reported as sanctioned, and no
medium-or-higher finding is about a benign host. Precision and recall are printed per scenario
(pytest -s, or in the summary of a failure)."""

from __future__ import annotations

import pytest

from hopguard.lab.scenarios import SCENARIOS
from hopguard.lab.truth import Truth
from tests.lab.evaluate import endpoint_score, hunt, score

pytestmark = [pytest.mark.lab, pytest.mark.root]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_findings(name: str, scenario_run) -> None:  # type: ignore[no-untyped-def]
    out = scenario_run(name)
    truth = Truth.read(out / "truth.json")
    findings, notes = hunt(out)
    s = score(name, truth, findings)
    print(s.line())
    for note in notes:
        print(f"  note: {note}")
    assert not s.missed, s.line()
    assert not s.benign_alarms, s.line()
    assert s.planted, "every scenario plants something"



@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_endpoint_findings(name: str, scenario_run) -> None:  # type: ignore[no-untyped-def]
    """The audit.log of every scenario names each proxy tool it ran, and each relay's network
    finding shares one incident with the endpoint evidence of the tool that made it."""
    out = scenario_run(name)
    truth = Truth.read(out / "truth.json")
    findings, _ = hunt(out)
    s = endpoint_score(name, truth, findings)
    print(s.line())
    assert not s.missed_tools, s.line()
    assert not s.unmerged, s.line()
