"""The shipped Sigma pack against its cases (tests/data/sigma/cases_*.yml), in DuckDB and Python.

Each case names a rule, a table and one event. The event is written as a row into a real
in-memory store, the rule's compiled SQL condition runs over that table, so does the scan
endpoint.sigma runs (literal prefilter, per-rule gate, once per distinct event, joined back),
and the Python reference matcher runs over the same event; all must agree with the case's
``match``. Every
rule of the pack must have at least one positive case and carry attack.t* tags, analytics and a
tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hopguard.sigma.loader import Rule, load_rules, pack_dir
from hopguard.sigma.matcher import PyMatcher
from hopguard.sigma.scan import compile_distinct_scan, rows_of
from hopguard.store import Store
from tests.unit.analytics.util import at, put

CASES = Path(__file__).resolve().parents[2] / "data" / "sigma"
PACK = load_rules([pack_dir()])
RULES = {r.id: r for r in PACK.rules}
MATCHER = PyMatcher(PACK.rules)


def _cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted(CASES.glob("cases_*.yml")):
        for i, case in enumerate(yaml.safe_load(f.read_text(encoding="utf-8")) or []):
            out.append((f"{f.stem}#{i}", case))
    return out


ALL = _cases()


def test_pack_loads_cleanly() -> None:
    assert PACK.errors == []
    assert len(PACK.rules) >= 20
    assert MATCHER.unsupported == {}


@pytest.mark.parametrize("rule", PACK.rules, ids=lambda r: Path(r.path).stem)
def test_rule_metadata_and_positive_case(rule: Rule) -> None:
    assert any(t.lower().startswith("attack.t") for t in rule.tags), rule.location
    assert rule.analytics and all("/AN" in a for a in rule.analytics), rule.location
    assert rule.tool, rule.location
    positives = [c for _, c in ALL if c["rule"] == rule.id and c["match"]]
    assert positives, f"{rule.title} ({rule.location}) has no positive case"


@pytest.mark.parametrize(("where", "case"), ALL, ids=[w for w, _ in ALL])
def test_case(where: str, case: dict[str, Any]) -> None:
    rule = RULES.get(case["rule"])
    assert rule is not None, f"{where}: no rule {case['rule']} in the pack"
    assert case["table"] == rule.table, where
    store = Store.open(":memory:")
    try:
        put(store, rule.table, [{"ts": at(0), **case["event"]}])
        n = store.query(f'SELECT count(*) AS n FROM "{rule.table}" WHERE {rule.condition}'
                        ).to_pylist()[0]["n"]
        # what endpoint.sigma runs: the prefiltered, gated scan once per distinct event, joined
        # back to the rows (a literal prefilter that dropped a positive would show here)
        scan = compile_distinct_scan(rule.table, [rule])
        scanned = store.con.execute(rows_of(scan, ["ts"])).fetchall()
    finally:
        store.close()
    assert bool(n) is case["match"], f"{where}: SQL of {rule.title} gave {bool(n)}"
    assert bool(scanned) is case["match"], f"{where}: the scan of {rule.title} disagrees"
    got_py = rule.id in MATCHER.match(rule.table, case["event"])
    assert got_py is case["match"], f"{where}: Python matcher of {rule.title} gave {got_py}"
