"""``hopguard findings``, ``hopguard report`` and ``hopguard explain``: stored findings out.

Registered in cli/main.py as commands (``app.command("findings")(findings_cmd)`` ...). All three
open the store read-only; what they print is built in report/.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from hopguard.cli.common import ConfigOpt, DbOpt, DebugOpt, SetOpt, make_env, out
from hopguard.errors import ConfigError
from hopguard.report.findings import (
    FindingFilter,
    findings_table,
    jsonl_lines,
    load_findings,
    write_jsonl,
)
from hopguard.store import Store


class FindingsFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"
    html = "html"


class Severity(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


SeverityOpt = Annotated[Severity | None, typer.Option(
    "--severity", "-s", help="Only findings at least this severe.", show_default=False)]
DetectorOpt = Annotated[str | None, typer.Option(
    "--detector", help="Only detectors whose name starts with this (proxy, bridge.relay ...).",
    show_default=False)]
FHostOpt = Annotated[str | None, typer.Option(
    "--host", help="Only findings involving this address.", show_default=False)]
IncidentOpt = Annotated[str | None, typer.Option(
    "--incident", help="Only findings of this incident (id or a prefix of it).",
    show_default=False)]
SanctionedOpt = Annotated[bool | None, typer.Option(
    "--sanctioned/--no-sanctioned", help="Only findings about declared infrastructure, or only "
    "the others [default: both].", show_default=False)]
OutputOpt = Annotated[Path | None, typer.Option(
    "-o", "--output", help="Write to this file instead of the terminal.", show_default=False)]


def _filter(severity: Severity | None, detector: str | None, host: str | None,
            incident: str | None, sanctioned: bool | None) -> FindingFilter:
    return FindingFilter(severity=severity.value if severity else None, detector=detector or "",
                         host=host or "", incident=incident or "", sanctioned=sanctioned)


def write_report(store: Store, flt: FindingFilter | None, output: Path, *,
                 title: str = "hopguard report") -> None:
    """Build the HTML report from the store, write it to ``output`` and say what it holds."""
    from hopguard.report.html import build_report, render_html
    data = build_report(store, flt, title=title)
    try:
        output.write_text(render_html(data), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {output}: {exc.strerror}") from None
    out.print(f"{output}: {len(data.findings)} findings, {len(data.incidents)} incidents",
              highlight=False, markup=False)


def findings_cmd(
        severity: SeverityOpt = None, detector: DetectorOpt = None, host: FHostOpt = None,
        incident: IncidentOpt = None, sanctioned: SanctionedOpt = None,
        format_: Annotated[FindingsFormat, typer.Option(
            "--format", "-f", help="table for people, jsonl for tools (the findings contract), "
            "html for a self-contained report (needs -o).")] = FindingsFormat.table,
        ecs: Annotated[bool, typer.Option(
            "--ecs", help="With jsonl: Elastic Common Schema field names.")] = False,
        output: OutputOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
        db: DbOpt = None, debug: DebugOpt = False) -> None:
    """List stored findings, most severe first, then by time."""
    env = make_env(config, set_, db, debug)
    flt = _filter(severity, detector, host, incident, sanctioned)
    if ecs and format_ is not FindingsFormat.jsonl:
        raise ConfigError("--ecs goes with --format jsonl")
    if format_ is FindingsFormat.html and output is None:
        raise ConfigError("--format html writes a file: say where with -o FILE")
    with env.open_store(read_only=True) as store:
        if format_ is FindingsFormat.html:
            assert output is not None
            write_report(store, flt, output)
            return
        found = load_findings(store, flt)
    if format_ is FindingsFormat.jsonl:
        if output is not None:
            with output.open("wb") as fh:
                write_jsonl(found, fh, ecs=ecs)
        else:
            for line in jsonl_lines(found, ecs=ecs):
                sys.stdout.write(line.decode())
            sys.stdout.flush()
        return
    title = f"{len(found)} findings" + (" (filtered)" if flt != FindingFilter() else "")
    table = findings_table(found, title=title)
    if output is not None:
        from rich.console import Console
        with output.open("w") as target:
            Console(file=target, width=200).print(table)
    else:
        out.print(table)


def report_cmd(
        output: Annotated[Path, typer.Option(
            "-o", "--output", help="The HTML file to write.")] = Path("report.html"),
        severity: SeverityOpt = None, detector: DetectorOpt = None, host: FHostOpt = None,
        incident: IncidentOpt = None, sanctioned: SanctionedOpt = None,
        title: Annotated[str, typer.Option("--title", help="The report's heading.")]
        = "hopguard report",
        config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None,
        debug: DebugOpt = False) -> None:
    """Write a self-contained HTML report (no external resources): summary, incidents by risk
    with chains drawn, every finding with its explanation, mitigation and evidence."""
    env = make_env(config, set_, db, debug)
    flt = _filter(severity, detector, host, incident, sanctioned)
    with env.open_store(read_only=True) as store:
        write_report(store, flt if flt != FindingFilter() else None, output, title=title)


class ExplainFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"


def explain_cmd(
        ident: Annotated[str, typer.Argument(
            metavar="ID", help="A finding or incident id, or a prefix of at least 6 characters.")],
        format_: Annotated[ExplainFormat, typer.Option(
            "--format", "-f", help="table: text for people; jsonl: one JSON object with the "
            "stored rows.")] = ExplainFormat.table,
        output: OutputOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
        db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Show a finding and its evidence chain down to the stored rows and input files (for an
    incident: each of its findings, strongest first)."""
    from hopguard.report.explain import (
        explain_finding,
        finding_lines,
        incident_lines,
        incident_of,
        resolve,
    )
    from hopguard.report.findings import findings_by_id
    env = make_env(config, set_, db, debug)
    with env.open_store(read_only=True) as store:
        hit = resolve(store, ident)
        if hit.kind == "incident":
            inc, members = incident_of(store, hit.id)
            explained = [explain_finding(store, f) for f in members]
            doc: dict[str, object] = {"incident": inc,
                                      "findings": [e.as_dict() for e in explained]}
            lines = list(incident_lines(inc, explained))
        else:
            finding = findings_by_id(store, [hit.id])[hit.id]
            ex = explain_finding(store, finding)
            doc = ex.as_dict()
            lines = list(finding_lines(ex))
    if format_ is ExplainFormat.jsonl:
        data = orjson.dumps(doc, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z,
                            default=str) + b"\n"
        if output is not None:
            output.write_bytes(data)
        else:
            sys.stdout.write(data.decode())
            sys.stdout.flush()
        return
    text = "\n".join(lines) + "\n"
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        out.print(text, markup=False, highlight=False, end="", soft_wrap=True)
