"""`hopguard analyze` and the analysis half of `hopguard hunt`: run the detectors, then show
what they found (incidents by risk, the detectors' own figures, what was left out)."""

from __future__ import annotations

from rich.table import Table

from hopguard.analytics.run import AnalyzeReport, analyze
from hopguard.cli.common import Env, err, out
from hopguard.errors import EXIT_RUNTIME

_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan",
          "info": "dim"}


def run_analyze(env: Env, detectors: list[str] | None = None, *,
                show_progress: bool | None = None) -> AnalyzeReport:
    progress = env.settings.ingest.progress if show_progress is None else show_progress
    with env.open_store(read_only=False) as store:
        if progress and err.is_terminal:
            with err.status("analyzing") as status:
                report = analyze(store, env.settings, detectors=detectors,
                                 progress=lambda name: status.update(f"running {name}"))
        else:
            report = analyze(store, env.settings, detectors=detectors)
    return report


def print_analysis(report: AnalyzeReport, *, verbose: bool = False) -> None:
    if verbose:
        table = Table(title="Detectors", title_justify="left")
        for col in ("detector", "findings", "seconds", "error"):
            table.add_column(col, justify="right" if col in ("findings", "seconds") else "left")
        for r in report.runs:
            table.add_row(r.name, str(r.findings), f"{r.seconds:.2f}", r.error or "")
        out.print(table)
    for note in report.notes:
        out.print(f"note: {note}", style="dim", highlight=False)
    for r in report.failed:
        err.print(f"hopguard: detector {r.name} failed: {r.error} (its previous findings are kept;"
                  " rerun with --debug for the traceback)", markup=False, highlight=False)
    counts: dict[str, int] = {}
    for f in report.findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    summary = ", ".join(f"{counts[s]} {s}" for s in ("critical", "high", "medium", "low", "info")
                        if s in counts) or "none"
    out.print(f"{len(report.findings)} findings ({summary}) in {report.incidents} incidents, "
              f"{report.seconds:.2f} s", highlight=False)


def exit_code(report: AnalyzeReport) -> int:
    return EXIT_RUNTIME if report.failed else 0


def style_of(severity: str) -> str:
    return _STYLE.get(severity, "")
