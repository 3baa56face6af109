"""Run the detectors over a store and keep their findings.

Theory of operation: ``analyze`` builds one :class:`Context` over the store's connection, runs
each selected detector in registration order, marks what the inventory declares as sanctioned
(kept, at low severity at most), gives every finding its stable id, groups the findings into
incidents (correlate/) and replaces the stored findings and incidents of the detectors that ran,
all in one transaction: a failed run leaves the previous results as they were. A detector that
raises is a bug; the others still run, and the failure is reported with the detector's name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from hopguard.analytics.base import (
    DETECTORS,
    SEVERITY_RANK,
    Context,
    Detector,
    Finding,
    Inventory,
)
from hopguard.config import Settings
from hopguard.errors import ConfigError
from hopguard.model import arrow_schema
from hopguard.store import Store

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class DetectorRun:
    name: str
    findings: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass(slots=True)
class AnalyzeReport:
    findings: list[Finding] = field(default_factory=list)
    incidents: int = 0
    runs: list[DetectorRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[DetectorRun]:
        return [r for r in self.runs if r.error]


def load_detectors() -> dict[str, Detector]:
    """Import every detector module (they register themselves) and return the registry."""
    from hopguard.analytics import load_all
    load_all()
    return DETECTORS


def select(names: list[str]) -> list[Detector]:
    """Detectors by exact name or dotted prefix ('proxy' selects proxy.socks, proxy.hub ...)."""
    registry = load_detectors()
    if not names:
        return list(registry.values())
    chosen: list[Detector] = []
    for want in names:
        hits = [d for n, d in registry.items() if n == want or n.startswith(want + ".")]
        if not hits:
            raise ConfigError(f"unknown detector {want!r}; detectors: {', '.join(registry)}")
        chosen.extend(d for d in hits if d not in chosen)
    return [d for d in registry.values() if d in chosen]  # registration order


def mark_sanctioned(f: Finding, inventory: Inventory) -> None:
    """Findings about declared infrastructure stay, marked and at low severity at most."""
    e = f.entities
    declared = (
        ("proxy" in e and inventory.is_proxy(e["proxy"], e.get("port")))
        or ("relay" in e and inventory.is_relay(e["relay"], e.get("in_port")))
        or ("hub" in e and inventory.is_relay(e["hub"]))
        or (bool(e.get("chain")) and all(inventory.is_relay(h) for h in e["chain"][1:-1])))
    if declared:
        f.sanctioned = True
    if f.sanctioned and SEVERITY_RANK[f.severity] > SEVERITY_RANK["low"]:
        f.severity = "low"


def analyze(store: Store, settings: Settings, *, detectors: list[str] | None = None,
            progress: Callable[[str], None] | None = None) -> AnalyzeReport:
    started = time.monotonic()
    chosen = select(detectors if detectors is not None else settings.analyze.detectors)
    inventory = Inventory.from_settings(settings)
    con = store.con
    inventory.define_macros(con)
    ctx = Context(con=con, settings=settings, inventory=inventory)
    report = AnalyzeReport()
    for det in chosen:
        if progress is not None:
            progress(det.name)
        run = DetectorRun(det.name)
        t0 = time.monotonic()
        try:
            found = list(det.fn(ctx))
        except Exception as exc:  # a detector bug must not cost the others their results
            logger.exception("detector %s failed", det.name)
            run.error = f"{type(exc).__name__}: {exc}"
            found = []
        run.seconds = time.monotonic() - t0
        for f in found:
            mark_sanctioned(f, inventory)
            f.finalize(settings.analyze.id_bucket, settings.analyze.max_evidence)
        run.findings = len(found)
        report.findings.extend(found)
        report.runs.append(run)
    report.findings = _dedupe(report.findings)
    report.notes = ctx.notes
    ran = [d.name for d in chosen if not any(r.name == d.name and r.error for r in report.runs)]
    report.incidents = _store(store, settings, ran, report.findings, ctx.notes)
    con.execute("DROP TABLE IF EXISTS hg_addr")
    for (name,) in con.execute(  # the intel detectors' per-run match tables
            "SELECT table_name FROM duckdb_tables() WHERE temporary "
            "AND starts_with(table_name, 'hg_intel_')").fetchall():
        con.execute(f'DROP TABLE IF EXISTS "{name}"')
    report.seconds = time.monotonic() - started
    return report


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per id (the same entities in the same bucket): the most severe wins and the
    time span covers both."""
    by_id: dict[str, Finding] = {}
    for f in findings:
        have = by_id.get(f.id)
        if have is None:
            by_id[f.id] = f
            continue
        keep, other = (f, have) if SEVERITY_RANK[f.severity] > SEVERITY_RANK[have.severity] \
            else (have, f)
        keep.first_seen = min(keep.first_seen, other.first_seen)
        keep.last_seen = max(keep.last_seen, other.last_seen)
        by_id[f.id] = keep
    return list(by_id.values())


def _store(store: Store, settings: Settings, detector_names: list[str],
           findings: list[Finding], notes: list[str]) -> int:
    """Replace the findings of the detectors that ran, then rebuild every incident from all
    stored findings (those of detectors that did not run this time included); one
    transaction. Returns the number of incidents."""
    from hopguard.correlate import correlate
    con = store.con
    con.execute("BEGIN TRANSACTION")
    try:
        if detector_names:
            marks = ", ".join("?" for _ in detector_names)
            con.execute(f"DELETE FROM finding WHERE detector IN ({marks})", detector_names)
        ids = {f.id for f in findings}
        kept = [Finding.from_row(r) for r in store.query("SELECT * FROM finding").to_pylist()
                if r["id"] not in ids]
        con.execute("DELETE FROM finding")
        con.execute("DELETE FROM incident")
        every = kept + findings
        incidents = correlate(every, settings)
        if every:
            store.write("finding", pa.Table.from_pylist([f.as_row() for f in every],
                                                        schema=arrow_schema("finding")))
        if incidents:
            store.write("incident", pa.Table.from_pylist(incidents,
                                                         schema=arrow_schema("incident")))
        store.set_meta(NOTES_KEY, orjson.dumps(notes).decode())
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(incidents)


NOTES_KEY = "analyze_notes"


def stored_notes(store: Store) -> list[str]:
    """What the last analysis said it left out (excluded services, saturated buckets ...)."""
    raw = store.meta(NOTES_KEY)
    notes = orjson.loads(raw) if raw else []
    return [str(n) for n in notes] if isinstance(notes, list) else []
