"""The lab outputs shipped in examples/lab (made by `make lab-data`) still agree with their own
truth.json: relay legs in the capture, tools' execve in audit.log. Needs tcpdump, not root."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.lab.check import FILES, check_run

pytestmark = pytest.mark.integration
EXAMPLES = sorted((ROOT / "examples" / "lab").glob("*/truth.json"))


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("truth", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_matches_its_truth(truth: Path, tmp_path: Path) -> None:
    if shutil.which("tcpdump") is None:
        pytest.fail("tcpdump is needed ('make test' as root installs it)")
    src = truth.parent
    for name in FILES:
        if name != "capture.pcap":
            shutil.copy(src / name, tmp_path / name)
    with gzip.open(src / "capture.pcap.gz", "rb") as fh, (tmp_path / "capture.pcap").open(
            "wb") as out:
        shutil.copyfileobj(fh, out)
    got = check_run(tmp_path)
    assert got["scenario"] == src.name and got["tools"]


@pytest.mark.parametrize("truth", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_findings(truth: Path) -> None:
    """What `make demo` shows: every planted item of the shipped recordings is found, the
    sanctioned proxy is reported as sanctioned, no medium+ finding is about a benign host."""
    from hopguard.lab.truth import Truth
    from tests.lab.evaluate import hunt, score
    findings, _ = hunt(truth.parent)
    s = score(truth.parent.name, Truth.read(truth), findings)
    print(s.line())
    assert not s.missed, s.line()
    assert not s.benign_alarms, s.line()


@pytest.mark.parametrize("truth", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_endpoint_findings(truth: Path) -> None:
    """The shipped recordings' audit.log names each proxy tool the scenario ran, and each relay
    shares its incident with that endpoint evidence."""
    from hopguard.lab.truth import Truth
    from tests.lab.evaluate import endpoint_score, hunt
    findings, _ = hunt(truth.parent)
    s = endpoint_score(truth.parent.name, Truth.read(truth), findings)
    print(s.line())
    assert s.tools or truth.parent.name in ("domain-fronting", "tor-relay"), \
        "a proxy tool was run"
    assert not s.missed_tools, s.line()
    assert not s.unmerged, s.line()


def test_example_tor_relay_intel() -> None:
    """The shipped tor-relay recording with its hand-made consensus: intel findings cite
    exactly the flows to the listed relay (see tests/lab/test_intel.py)."""
    from tests.lab.test_intel import check_tor_run
    check_tor_run(ROOT / "examples" / "lab" / "tor-relay")
