"""Every detector over the whole public corpus in one store: hundreds of third-party captures
and Zeek logs, with odd, truncated and hostile content (canonicalised uids shared between
files, flows without times, tunnels, IPv6). No detector may fail, and the findings must keep
the contract's shape."""

from __future__ import annotations

import os

import pytest

from hopguard.analytics.base import SEVERITIES
from hopguard.analytics.run import analyze
from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store
from tests.conftest import PUBLIC_CORPUS
from tests.corpus.oracles import captures_under
from tests.unit.analytics.util import findings, settings

pytestmark = pytest.mark.corpus


def test_every_detector_runs_over_the_corpus() -> None:
    if not PUBLIC_CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"public corpus missing at {PUBLIC_CORPUS} (CI must have ../shared)")
        pytest.skip(f"public corpus not found at {PUBLIC_CORPUS} (set HOPGUARD_CORPUS)")
    store = Store.open(":memory:")
    try:
        caps = captures_under(PUBLIC_CORPUS)
        logs = sorted((PUBLIC_CORPUS / "zeek/testing/btest/Baseline").glob("*/*.log"))
        for path in [*caps, *logs]:
            ingest_file(store, path, sensor="corpus")  # damaged files are reported, not raised
        report = analyze(store, settings())
        assert not report.failed, report.failed
        got = findings(store)
    finally:
        store.close()
    print(f"\n{len(caps)} captures and {len(logs)} Zeek logs: {len(got)} findings from "
          f"{len({f['detector'] for f in got})} detectors in {report.seconds:.2f} s")
    assert len(caps) > 300 and len(got) > 30
    for f in got:
        assert f["severity"] in SEVERITIES and 0 <= f["confidence"] <= 1
        assert f["technique"].startswith("T1") and f["explanation"] and f["evidence"]
        assert f["mitigation"]["ids"] and f["mitigation"]["actions"], f["detector"]
        assert f["hosts"], f["detector"]
