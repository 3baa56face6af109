"""hopguard's Sigma engine: rule files -> DuckDB SQL over the endpoint tables.

* :mod:`~hopguard.sigma.fields` - logsources and fields -> tables, row filters and columns;
* :mod:`~hopguard.sigma.semantics` - Sigma value semantics (case, wildcards, |re, |cidr ...),
  written once for SQL and Python;
* :mod:`~hopguard.sigma.backend` - the pySigma ``TextQueryBackend`` writing DuckDB booleans;
* :mod:`~hopguard.sigma.loader` - files -> :class:`Rule` values, broken rules as located errors;
* :mod:`~hopguard.sigma.scan` - many rules over one table in one scan;
* :mod:`~hopguard.sigma.matcher` - the pure-Python reference evaluator.

The shipped pack is data: ``src/hopguard/rules/sigma/<platform>/*.yml`` (:func:`pack_dir`).
"""

from __future__ import annotations

from hopguard.sigma.loader import LEVELS, Rule, RuleSet, load_rules, pack_dir, rule_paths
from hopguard.sigma.matcher import PyMatcher
from hopguard.sigma.scan import ScanQuery, check_rules, compile_scan

__all__ = ["LEVELS", "PyMatcher", "Rule", "RuleSet", "ScanQuery", "check_rules", "compile_scan",
           "load_rules", "pack_dir", "rule_paths"]
