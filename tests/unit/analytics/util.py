"""Helpers for detector tests: rows into a real in-memory store, detectors run as the CLI runs
them (analytics.run.analyze), findings back as dicts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from hopguard.analytics.run import AnalyzeReport, analyze
from hopguard.config import Settings, load_settings
from hopguard.model import arrow_schema
from hopguard.store import Store

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def at(seconds: float) -> datetime:
    """T0 + seconds as the naive UTC datetime the store keeps."""
    return datetime.fromtimestamp(T0 + seconds, UTC).replace(tzinfo=None)


def put(store: Store, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows (missing columns NULL; ``ts`` may be seconds after T0) into ``table``."""
    schema = arrow_schema(table)
    fixed = []
    for r in rows:
        d = {name: None for name in schema.names}
        d.update(r)
        for key in ("ts",):
            if isinstance(d[key], (int, float)):
                d[key] = at(float(d[key]))
        for key in ("src_bursts", "dst_bursts"):
            if d.get(key) is not None:
                d[key] = [at(float(x)) if isinstance(x, (int, float)) else x for x in d[key]]
        d.setdefault("sensor", "test")
        fixed.append(d)
    store.write(table, pa.Table.from_pylist(fixed, schema=schema))


def settings(*overrides: str) -> Settings:
    """Defaults plus ``section.key=value`` overrides, no configuration files."""
    return load_settings(None, overrides, environ={}, layers=[])


def run(store: Store, *detectors: str, overrides: tuple[str, ...] = ()) -> AnalyzeReport:
    report = analyze(store, settings(*overrides), detectors=list(detectors) or None)
    assert not report.failed, report.failed
    return report


def findings(store: Store, detector_prefix: str = "") -> list[dict[str, Any]]:
    """Stored findings (entities, evidence and mitigation decoded), optionally one family."""
    rows = store.query("SELECT * FROM finding WHERE starts_with(detector, ?) "
                       "ORDER BY first_seen, id", [detector_prefix]).to_pylist()
    for r in rows:
        for key in ("entities", "evidence", "mitigation"):
            r[key] = json.loads(r[key])
    return rows
