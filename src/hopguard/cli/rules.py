"""``hopguard rules list|check``: the Sigma rules hopguard runs, and a linter for your own.

``list`` shows the rules ``analyze`` would run (the shipped pack unless ``sigma.pack`` is off,
plus ``sigma.paths`` and any PATH given), with what each detects and where it is defined.
``check PATH...`` loads rule files the way ``analyze`` does and also compiles each rule against
the store's tables in DuckDB, so a rule that pySigma accepts but whose SQL would fail is caught
before a hunt; every problem is printed as ``file:line: message`` and the exit code is 2 when
there is any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from hopguard.cli.common import ConfigOpt, DebugOpt, OutputFormat, SetOpt, err, make_env, out
from hopguard.errors import EXIT_BAD_INPUT
from hopguard.sigma import RuleSet, check_rules, load_rules, pack_dir, rule_paths
from hopguard.store import Store

rules_app = typer.Typer(no_args_is_help=True, help="The Sigma rules over endpoint telemetry.")

PathsArg = Annotated[list[Path] | None, typer.Argument(
    help="Sigma rule files or directories (*.yml, *.yaml).", show_default=False)]


@rules_app.command("list")
def list_cmd(paths: PathsArg = None, config: ConfigOpt = None, set_: SetOpt = None,
             fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
             debug: DebugOpt = False) -> None:
    """List the rules analyze runs: id, level, tool, ATT&CK, analytic, table and file."""
    env = make_env(config, set_, None, debug)
    s = env.settings.sigma
    rs = load_rules(rule_paths(s.pack, [*s.paths, *(paths or [])]),
                    disabled=list(s.disabled), min_level=s.min_level)
    if fmt is OutputFormat.jsonl:
        for r in rs.rules:
            out.print(orjson.dumps({
                "id": r.id, "title": r.title, "level": r.level, "tool": r.tool,
                "techniques": list(r.techniques), "analytics": list(r.analytics),
                "table": r.table, "location": r.location}).decode(), markup=False,
                highlight=False, soft_wrap=True)
    else:
        table = Table(title=f"{len(rs.rules)} Sigma rules", title_justify="left")
        for col in ("level", "tool", "title", "ATT&CK", "analytic", "table", "file"):
            table.add_column(col, overflow="fold")
        order = {lv: i for i, lv in enumerate(("critical", "high", "medium", "low",
                                                "informational"))}
        for r in sorted(rs.rules, key=lambda r: (order.get(r.level, 9), r.tool, r.title)):
            table.add_row(r.level, r.tool, r.title, ", ".join(r.techniques),
                          ", ".join(r.analytics), r.table, _short(r.location))
        out.print(table)
    _report_problems(rs, [])


@rules_app.command("check")
def check_cmd(paths: Annotated[list[Path], typer.Argument(
                  help="Sigma rule files or directories to check.", show_default=False)],
              config: ConfigOpt = None, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Load and compile rules as analyze would; print each problem as file:line."""
    env = make_env(config, set_, None, debug)
    s = env.settings.sigma
    rs = load_rules(paths, disabled=list(s.disabled), min_level="informational")
    with Store.open(":memory:") as store:  # every table, empty: DuckDB binds the SQL
        good, bad = check_rules(store.con, rs.rules)
    out.print(f"{len(good)} rules load and compile; {len(rs.errors) + len(bad)} problems")
    _report_problems(rs, [(r.location, msg) for r, msg in bad])
    if rs.errors or bad:
        raise typer.Exit(EXIT_BAD_INPUT)


def _report_problems(rs: RuleSet, compile_errors: list[tuple[str, str]]) -> None:
    for e in rs.errors:
        err.print(str(e), style="red", markup=False, highlight=False, soft_wrap=True)
    for where, msg in compile_errors:
        err.print(f"DuckDB refuses the compiled rule: {msg} ({where})", style="red",
                  markup=False, highlight=False, soft_wrap=True)
    for note in rs.notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _short(location: str) -> str:
    """A pack rule's location relative to the pack (the rest as given)."""
    base = str(pack_dir())
    return "pack:" + location[len(base) + 1:] if location.startswith(base) else location
