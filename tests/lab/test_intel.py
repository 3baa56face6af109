"""The tor-relay lab run through the intel detectors: with the run's hand-made consensus
imported, intel findings cite exactly the flows to the listed relay (and, as a low inbound
finding, the relay's own flows into the LAN: its server looks its name up at the lab's
resolver), and nothing about the identical unlisted server or the bystander that used only
that one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hopguard.analytics.run import analyze
from hopguard.config import load_settings
from hopguard.ingest.pipeline import ingest_file
from hopguard.intel.store import import_feed
from hopguard.lab.truth import Truth
from hopguard.store import Store
from tests.lab.evaluate import run_feeds, run_files
from tests.unit.analytics.util import findings as stored_findings

pytestmark = [pytest.mark.lab, pytest.mark.root]


def tor_run_facts(out: Path) -> dict[str, object]:
    truth = Truth.read(out / "truth.json")
    notes = [json.loads(n) for n in truth["notes"] if n.startswith("{")]
    (fact,) = [n for n in notes if n.get("kind") == "tor-relay"]
    return fact


def check_tor_run(out: Path) -> None:
    fact = tor_run_facts(out)
    relay, unlisted = fact["relay"], fact["unlisted"]
    settings = load_settings(out / "hopguard.toml", (), environ={},
                             layers=[out / "hopguard.toml"])
    settings.analyze.max_evidence = 10_000  # every flow listed, none summarised
    store = Store.open(":memory:")
    try:
        for path in run_files(out):
            assert ingest_file(store, path, sensor="lab").failure is None
        (feed,) = run_feeds(out)
        stats = import_feed(store, feed)
        assert stats.errors == 0 and stats.kinds == {"ip": 5}, stats.line()
        report = analyze(store, settings, detectors=["intel"])
        assert not report.failed, report.failed
        to_relay = {r["uid"] for r in store.query(
            "SELECT uid FROM flow WHERE dst_ip = ?", [relay]).to_pylist()}
        from_relay = {r["uid"] for r in store.query(  # the relay's own lookups, for one
            "SELECT uid FROM flow WHERE src_ip = ? AND hg_internal(dst_ip)", [relay]
        ).to_pylist()}
        to_unlisted = store.query(
            "SELECT count(*) AS n FROM flow WHERE dst_ip = ?", [unlisted]).to_pylist()[0]["n"]
        found = [f for f in stored_findings(store) if f["detector"].startswith("intel.")]
    finally:
        store.close()
    assert len(to_relay) >= 3 and to_unlisted >= 3, (to_relay, to_unlisted)
    assert {f["detector"] for f in found} == {"intel.tor"}, found
    assert all(f["entities"]["indicator"] == relay for f in found)
    (out_f,) = [f for f in found if f["entities"]["direction"] == "out"]
    e = out_f["entities"]
    assert (e["client"], e["indicator"]) == (fact["client"], relay)
    assert e["categories"] == ["tor_relay"] and e["feeds"] == [feed.name]
    assert out_f["severity"] in ("medium", "high") and out_f["technique"] == "T1090.003"
    assert {ev["uid"] for ev in out_f["evidence"] if ev["table"] == "flow"} == to_relay
    cited = {ev["uid"] for f in found for ev in f["evidence"] if ev["table"] == "flow"}
    assert cited == to_relay | from_relay, sorted(cited ^ (to_relay | from_relay))
    assert all(f["severity"] == "low" for f in found if f["entities"]["direction"] == "in")
    assert unlisted not in json.dumps(found, default=str), "the unlisted server is named"


def test_tor_relay_intel_findings(scenario_run) -> None:  # type: ignore[no-untyped-def]
    check_tor_run(scenario_run("tor-relay"))
