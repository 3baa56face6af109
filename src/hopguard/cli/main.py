"""Entry point: ``hopguard VERB ...``. Maps HopguardError to exit codes and one-line errors."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hopguard import __version__
from hopguard.cli.analyze import exit_code, print_analysis, run_analyze, style_of
from hopguard.cli.common import (
    DEBUG,
    ConfigOpt,
    DbOpt,
    DebugOpt,
    Env,
    OutputFormat,
    SetOpt,
    err,
    make_env,
    out,
    print_arrow,
)
from hopguard.cli.findings import explain_cmd, findings_cmd, report_cmd, write_report
from hopguard.cli.ingest import IngestReport, print_summary, run_ingest
from hopguard.cli.intel import configured_feeds, import_paths, intel_app
from hopguard.cli.lab import lab_app
from hopguard.cli.rules import rules_app
from hopguard.config import iter_options
from hopguard.errors import EXIT_RUNTIME, EXIT_USAGE, HopguardError
from hopguard.intel.feeds import FeedOptions
from hopguard.model import TABLES
from hopguard.store import Store

app = typer.Typer(
    name="hopguard", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Find and stop command-and-control traffic hiding behind proxies (ATT&CK T1090).")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
app.add_typer(config_app, name="config")
app.add_typer(lab_app, name="lab")
app.add_typer(rules_app, name="rules")
app.add_typer(intel_app, name="intel")
app.command("findings")(findings_cmd)
app.command("report")(report_cmd)
app.command("explain")(explain_cmd)

InputsArg = Annotated[list[Path] | None, typer.Argument(
    help="Files or directories (recursively) of telemetry; .gz is read transparently.",
    show_default=False)]
IfaceOpt = Annotated[str | None, typer.Option(
    "--iface", help="Also capture live from this network interface (AF_PACKET; needs root or "
    "CAP_NET_RAW).", show_default=False)]
DurationOpt = Annotated[float | None, typer.Option(
    "--duration", help="Seconds to capture with --iface [default: until Ctrl-C].", min=0.1,
    show_default=False)]
SensorOpt = Annotated[str | None, typer.Option(
    "--sensor", help="Sensor name for network rows [default: ingest.sensor].",
    show_default=False)]
FormatNameOpt = Annotated[str | None, typer.Option(
    "--input-format", help="Skip detection and read every input as this format "
    "(see 'hopguard formats').", show_default=False)]
HostOpt = Annotated[str | None, typer.Option(
    "--host", help="Host name for endpoint rows whose input names none (ESXi shell.log, macOS "
    "unified log).", show_default=False)]
ProgressOpt = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", help="Progress bar on a terminal [default: ingest.progress].",
    show_default=False)]


@app.command()
def ingest(inputs: InputsArg = None, sensor: SensorOpt = None,
           input_format: FormatNameOpt = None, host: HostOpt = None, iface: IfaceOpt = None,
           duration: DurationOpt = None, progress: ProgressOpt = None, config: ConfigOpt = None,
           set_: SetOpt = None,
           db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Add telemetry to the store (each file atomically, once by content; a live capture in
    segments of packets.rotate seconds)."""
    _, report = _ingest(inputs or [], sensor, input_format, host, progress, config, set_, db,
                        debug, iface=iface, duration=duration)
    raise typer.Exit(report.exit_code)


def _ingest(inputs: list[Path], sensor: str | None, input_format: str | None, host: str | None,
            progress: bool | None, config: Path | None, set_: list[str] | None,
            db: Path | None, debug: bool, *, iface: str | None = None,
            duration: float | None = None) -> tuple[Env, IngestReport]:
    """What ingest and hunt share: settings, the ingest itself and its summary."""
    env = make_env(config, set_, db, debug)
    _check_format(input_format)
    report = run_ingest(env, inputs, sensor=sensor, fmt=input_format, host=host,
                        show_progress=progress, iface=iface, duration=duration)
    print_summary(report)
    return env, report


RulesOpt = Annotated[list[Path] | None, typer.Option(
    "--rules", help="Also run the Sigma rules in this file or directory (repeatable; added to "
    "sigma.paths).", show_default=False)]


def _with_rules(env: Env, rules: list[Path] | None) -> None:
    if rules:
        env.settings.sigma.paths = [*env.settings.sigma.paths, *(str(p) for p in rules)]


IntelOpt = Annotated[list[Path] | None, typer.Option(
    "--intel", help="Import this threat-intel feed file before the detectors run (repeatable; "
    "added to intel.feeds; see 'hopguard intel formats').", show_default=False)]


def _with_intel(env: Env, intel: list[Path] | None) -> None:
    """Import the configured and given feeds (each file refreshes its feed, never duplicates)."""
    feeds = configured_feeds(env.settings.intel.feeds) + [(p, "auto") for p in intel or []]
    if feeds:
        import_paths(env, feeds, FeedOptions())


@app.command()
def hunt(inputs: InputsArg = None, sensor: SensorOpt = None,
         input_format: FormatNameOpt = None, host: HostOpt = None, iface: IfaceOpt = None,
         duration: DurationOpt = None, progress: ProgressOpt = None,
         output: Annotated[Path | None, typer.Option(
             "-o", "--output", help="Also write the findings here: an HTML report for *.html, "
             "JSON lines (the findings contract) otherwise.", show_default=False)] = None,
         rules: RulesOpt = None, intel: IntelOpt = None, config: ConfigOpt = None,
         set_: SetOpt = None, db: DbOpt = None, debug: DebugOpt = False) -> None:
    """Ingest, analyze and report in one go (the main job)."""
    env, report = _ingest(inputs or [], sensor, input_format, host, progress, config, set_, db,
                          debug, iface=iface, duration=duration)
    _with_rules(env, rules)
    _with_intel(env, intel)
    analysis = run_analyze(env, show_progress=progress)
    print_analysis(analysis)
    _print_incidents(env)
    _print_findings(env, "medium")
    if output is not None:
        _write_output(env, output)
    raise typer.Exit(report.exit_code or exit_code(analysis))


def _print_findings(env: Env, severity: str) -> None:
    from hopguard.report.findings import FindingFilter, findings_table, load_findings
    with env.open_store(read_only=True) as store:
        found = load_findings(store, FindingFilter(severity=severity, sanctioned=False))
    if found:
        out.print(findings_table(found, title=f"Findings of {severity} severity or higher "
                                 "(not sanctioned)"))


def _write_output(env: Env, output: Path) -> None:
    from hopguard.report.findings import load_findings, write_jsonl
    with env.open_store(read_only=True) as store:
        if output.suffix.lower() in (".html", ".htm"):
            write_report(store, None, output)
            return
        try:
            with output.open("wb") as fh:
                n = write_jsonl(load_findings(store), fh)
        except OSError as exc:
            from hopguard.errors import ConfigError
            raise ConfigError(f"cannot write {output}: {exc.strerror}") from None
    out.print(f"{output}: {n} findings as JSON lines", highlight=False, markup=False)


DetectorsOpt = Annotated[list[str] | None, typer.Option(
    "--detector", "-d", help="Run only this detector or family (repeatable; see "
    "'hopguard detectors') [default: analyze.detectors, else all].", show_default=False)]


@app.command()
def analyze(detector: DetectorsOpt = None,
            verbose: Annotated[bool, typer.Option("--verbose", "-v", help=(
                "Show each detector's findings count and time."))] = False,
            rules: RulesOpt = None, intel: IntelOpt = None, progress: ProgressOpt = None,
            config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None,
            debug: DebugOpt = False) -> None:
    """Run the detectors over the store; findings replace those of the same detectors."""
    env = make_env(config, set_, db, debug)
    _with_rules(env, rules)
    _with_intel(env, intel)
    analysis = run_analyze(env, detector, show_progress=progress)
    print_analysis(analysis, verbose=verbose)
    _print_incidents(env)
    raise typer.Exit(exit_code(analysis))


@app.command()
def detectors() -> None:
    """List the detectors, what each looks for and its ATT&CK technique."""
    from hopguard.analytics.run import load_detectors
    table = Table(title="Detectors (run in this order)", title_justify="left")
    for col in ("name", "ATT&CK", "reads", "what it finds"):
        table.add_column(col)
    for d in load_detectors().values():
        table.add_row(d.name, d.technique, ", ".join(d.tables), d.summary)
    out.print(table)


def _print_incidents(env: Env, limit: int = 30) -> None:
    with env.open_store(read_only=True) as store:
        rows = store.query("SELECT risk, severity, title, hosts, techniques, len(findings) AS n "
                           "FROM incident ORDER BY sanctioned, risk DESC, first_seen LIMIT ?",
                           [limit]).to_pylist()
    if not rows:
        return
    table = Table(title="Incidents (riskiest first; 'hopguard findings' and 'hopguard explain "
                  "ID' for the evidence)", title_justify="left")
    for col in ("risk", "severity", "incident", "hosts", "ATT&CK", "findings"):
        table.add_column(col, justify="right" if col in ("risk", "findings") else "left",
                         overflow="fold")
    for r in rows:
        table.add_row(f"{r['risk']:.0f}", f"[{style_of(r['severity'])}]{r['severity']}[/]",
                      r["title"], ", ".join(r["hosts"][:6]), ", ".join(r["techniques"]),
                      str(r["n"]))
    out.print(table)


def _check_format(name: str | None) -> None:
    if name is None:
        return
    from hopguard.ingest import FORMATS
    if name not in FORMATS:
        from hopguard.errors import ConfigError
        raise ConfigError(f"unknown input format {name!r}; formats: {', '.join(FORMATS)}")


@app.command()
def sql(query: Annotated[str, typer.Argument(help="A DuckDB SQL query over the store.")],
        format_: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
        output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
        config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None,
        debug: DebugOpt = False) -> None:
    """Query the store with SQL (read-only)."""
    env = make_env(config, set_, db, debug)
    with env.open_store(read_only=True) as store:
        result = store.query(query)
    print_arrow(result, format_, output)


@app.command()
def export(parquet: Annotated[Path | None, typer.Option(
               "--parquet", help="Directory for one Parquet file per table.")] = None,
           ecs: Annotated[Path | None, typer.Option(
               "--ecs", help="Directory for one ECS JSON-lines file per table.")] = None,
           tables: Annotated[list[str] | None, typer.Option(
               "--table", help="Only these tables (repeatable).")] = None,
           config: ConfigOpt = None, set_: SetOpt = None, db: DbOpt = None,
           debug: DebugOpt = False) -> None:
    """Export tables to Parquet files or to ECS JSON lines (for a SIEM)."""
    from hopguard.errors import ConfigError
    env = make_env(config, set_, db, debug)
    if parquet is None and ecs is None:
        raise ConfigError("say where to: --parquet DIR and/or --ecs DIR")
    for t in tables or []:
        if t not in TABLES and t != "source_file":
            raise ConfigError(f"unknown table {t!r}; tables: {', '.join(TABLES)}, source_file")
    with env.open_store(read_only=True) as store:
        if parquet is not None:
            counts = store.export_parquet(parquet, tables)
            for name, n in counts.items():
                out.print(f"{parquet / (name + '.parquet')}: {n:,} rows", highlight=False)
        if ecs is not None:
            _export_ecs(store, ecs, [t for t in tables or TABLES if t in TABLES])


def _export_ecs(store: Store, directory: Path, names: list[str]) -> None:
    import orjson

    from hopguard.report.ecs import to_ecs
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = directory / f"{name}.ndjson"
        n = 0
        with target.open("wb") as fh:
            for batch in store.batches(f'SELECT * FROM "{name}"'):
                for doc in to_ecs(name, batch.to_pylist()):
                    fh.write(orjson.dumps(doc) + b"\n")
                    n += 1
        out.print(f"{target}: {n:,} documents", highlight=False)


@app.command()
def formats() -> None:
    """List the input formats hopguard reads, and the tables each fills."""
    from hopguard.ingest import FORMATS
    table = Table(title="Input formats (detected from content)", title_justify="left")
    table.add_column("name")
    table.add_column("what")
    table.add_column("tables")
    for cls in FORMATS.values():
        table.add_row(cls.name, cls.description, ", ".join(cls.tables))
    out.print(table)


@app.command()
def tables(name: Annotated[str | None, typer.Argument(help="One table (default: all).")] = None,
           markdown: Annotated[bool, typer.Option("--markdown", help="As Markdown.")] = False
           ) -> None:
    """List the stored tables and their columns, with types and ECS names."""
    from hopguard.model.tables import markdown as tables_markdown
    from hopguard.store.db import duck_type
    if name is not None and name not in TABLES:
        from hopguard.errors import ConfigError
        raise ConfigError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    if markdown:
        out.print(tables_markdown(), markup=False, highlight=False, end="")
        return
    for t in [TABLES[name]] if name else TABLES.values():
        table = Table(title=f"{t.name}: {t.doc}", title_justify="left")
        for col in ("column", "type", "ECS", "meaning"):
            table.add_column(col)
        for c in t.columns:
            table.add_row(c.name, duck_type(c.type), c.ecs, c.doc)
        out.print(table)


@config_app.command("dump")
def config_dump(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print every option with its value, default, bounds and help (as TOML)."""
    env_settings = make_env(config, set_, None, False).settings
    section = ""
    for info in iter_options(env_settings):
        sec, _, key = info.key.partition(".")
        if sec != section:
            out.print(f"\n[{sec}]", markup=False, highlight=False)
            section = sec
        bounds = []
        if info.min is not None:
            bounds.append(f"min {_num(info.min)}")
        if info.max is not None:
            bounds.append(f"max {_num(info.max)}")
        if info.choices:
            bounds.append("one of " + ", ".join(info.choices))
        extra = f" ({'; '.join(bounds)})" if bounds else ""
        out.print(f"# {info.help} [{info.type}, default {_toml(info.default)}]{extra}",
                  markup=False, highlight=False, soft_wrap=True)
        out.print(f"{key} = {_toml(info.value)}", markup=False, highlight=False, soft_wrap=True)


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


@app.command()
def version() -> None:
    """Print hopguard's version."""
    out.print(f"hopguard {__version__}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="hopguard", standalone_mode=False)
        # without standalone mode, an Exit raised by a command comes back as its exit code
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
    except HopguardError as exc:
        if DEBUG["on"]:
            traceback.print_exc()
        err.print(f"hopguard: {exc}", markup=False, highlight=False)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        err.print("hopguard: interrupted", highlight=False)
        return 130
    except typer.TyperException as exc:  # usage errors: bad options, missing arguments
        show = getattr(exc, "show", None)
        if show is not None:
            show(file=sys.stderr)
        else:
            err.print(f"hopguard: {exc}", markup=False, highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("hopguard: interrupted; files not finished were not stored", highlight=False)
        return 130
    except Exception as exc:  # the last boundary: no traceback unless --debug
        if DEBUG["on"]:
            raise
        err.print(f"hopguard: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
                  markup=False, highlight=False)
        return EXIT_RUNTIME
    return 0


if __name__ == "__main__":
    sys.exit(main())
