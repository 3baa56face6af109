"""``hopguard ingest`` (and the ingest half of ``hunt``): files and directories into the store."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from hopguard.cli.common import Env, err, out
from hopguard.config import Settings
from hopguard.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_RUNTIME,
    HopguardError,
    InputError,
    SourceLocation,
    UnknownFormatError,
)
from hopguard.ingest.base import IngestStats
from hopguard.ingest.flows import FlowSettings
from hopguard.ingest.live import capture_live
from hopguard.ingest.pipeline import FileResult, ingest_file
from hopguard.store import Store

logger = logging.getLogger(__name__)


class RecordsPerSecond(ProgressColumn):
    """Rows stored so far and their rate, for the file being read."""

    def render(self, task: Task) -> Text:
        rows = int(task.fields.get("rows", 0))
        started = float(task.fields.get("started", time.monotonic()))
        elapsed = max(time.monotonic() - started, 1e-6)
        return Text(f"{rows:,} rows {rows / elapsed:,.0f}/s", style="progress.data.speed")


@dataclass(slots=True)
class IngestReport:
    results: list[FileResult] = field(default_factory=list)
    unrecognised: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if any(r.failure is not None and not isinstance(r.failure, InputError)
               for r in self.results):
            return EXIT_RUNTIME
        if any(r.failure is not None or r.stats.errors for r in self.results):
            return EXIT_BAD_INPUT
        if not self.results:
            return EXIT_BAD_INPUT
        return EXIT_OK


def expand_inputs(inputs: Sequence[Path]) -> Iterator[tuple[Path, bool]]:
    """Files to read, each with whether the user named it explicitly."""
    for item in inputs:
        if item.is_dir():
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name, False
        else:
            yield item, True


def flow_settings(s: Settings) -> FlowSettings:
    p = s.packets
    return FlowSettings(reassembly_bytes=p.reassembly_bytes, tcp_timeout=p.tcp_timeout,
                        udp_timeout=p.udp_timeout, icmp_timeout=p.icmp_timeout,
                        active_timeout=p.active_timeout, burst_gap=p.burst_gap,
                        max_bursts=p.max_bursts, workers=p.workers)


def run_ingest(env: Env, inputs: Sequence[Path], *, sensor: str | None, fmt: str | None,
               host: str | None = None, show_progress: bool | None = None,
               iface: str | None = None, duration: float | None = None) -> IngestReport:
    s = env.settings
    report = IngestReport()
    files = list(expand_inputs(inputs))
    if not files and iface is None:
        raise InputError("no input files given (and no --iface)")
    progress_on = s.ingest.progress if show_progress is None else show_progress
    progress_on = progress_on and err.is_terminal
    started = time.monotonic()
    with env.open_store() as store, Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), RecordsPerSecond(), TimeElapsedColumn(),
            console=err, disable=not progress_on, transient=True) as progress:
        for path, explicit in files:
            size = path.stat().st_size if path.is_file() else 0
            task = progress.add_task(path.name, total=size or None, rows=0,
                                     started=time.monotonic())

            def on_bytes(done: int, task: TaskID = task) -> None:
                progress.update(task, completed=done)

            def on_rows(rows: int, task: TaskID = task) -> None:
                progress.update(task, rows=rows)

            try:
                result = ingest_file(
                    store, path, sensor=sensor or s.ingest.sensor, fmt=fmt, host=host,
                    batch_rows=s.store.batch_rows, max_shown=s.ingest.max_errors_shown,
                    max_record_bytes=s.ingest.max_record_bytes,
                    fast_zeek_tsv=s.ingest.fast_zeek_tsv, flow=flow_settings(s),
                    progress=on_bytes, on_rows=on_rows)
            except HopguardError as exc:
                result = FileResult(path=path, format=fmt or "?", stats=IngestStats(),
                                    failure=exc)
            except Exception as exc:  # a bug in a reader: isolate it, keep going
                if env.debug:
                    raise
                logger.error("internal error while reading %s: %r", path, exc)
                result = FileResult(path=path, format=fmt or "?", stats=IngestStats(),
                                    failure=HopguardError(
                                        f"internal error ({type(exc).__name__}: {exc}); nothing "
                                        "of this file was stored; rerun with --debug",
                                        SourceLocation(path=str(path))))
            progress.remove_task(task)
            if isinstance(result.failure, UnknownFormatError) and not explicit:
                report.unrecognised.append(path)
                continue
            report.results.append(result)
            _print_problems(result)
        if iface is not None:
            report.results.append(_live(env, store, progress, iface, duration, sensor))
    report.seconds = time.monotonic() - started
    return report


def _live(env: Env, store: Store, progress: Progress, iface: str, duration: float | None,
          sensor: str | None) -> FileResult:
    s = env.settings
    task = progress.add_task(f"live:{iface}", total=None, rows=0, started=time.monotonic())

    def on_packets(n: int, _rows: int) -> None:
        progress.update(task, rows=n)

    err.print(f"capturing on {iface}" + (f" for {duration:g} s" if duration else
                                         " until Ctrl-C"), style="dim")
    try:
        live = capture_live(store, iface, sensor=sensor or s.ingest.sensor, duration=duration,
                            flow=flow_settings(s), rotate=s.packets.rotate,
                            batch_rows=s.store.batch_rows, max_shown=s.ingest.max_errors_shown,
                            on_packets=on_packets)
    except HopguardError as exc:
        result = FileResult(path=Path(f"live:{iface}"), format="live", stats=IngestStats(),
                            failure=exc)
        _print_problems(result)
        return result
    finally:
        progress.remove_task(task)
    err.print(f"{iface}: {live.packets:,} packets in {live.seconds:.1f} s, "
              f"{len(live.segments)} segments", style="dim")
    return FileResult(path=Path(f"live:{iface}"), format="live", stats=live.stats)


def _print_problems(result: FileResult) -> None:
    if result.failure is not None:
        err.print(f"hopguard: {result.failure}", markup=False, highlight=False)
        return
    for e in result.stats.shown:
        err.print(f"hopguard: {e.message} ({e.location})", markup=False, highlight=False)
    hidden = result.stats.errors - len(result.stats.shown)
    if hidden > 0:
        err.print(f"hopguard: … and {hidden} more bad records in {result.path}", markup=False,
                  highlight=False)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_summary(report: IngestReport) -> None:
    per_table: dict[str, int] = {}
    table = Table(title="Ingest summary", title_justify="left")
    for col in ("file", "format", "rows added", "skipped", "errors", "status"):
        table.add_column(col, justify="right" if col in ("rows added", "skipped", "errors")
                         else "left", overflow="fold")
    for r in report.results:
        for t, n in r.stats.added.items():
            per_table[t] = per_table.get(t, 0) + n
        if r.duplicate_of is not None:
            status = f"already stored (as {r.duplicate_of})"
        elif r.failure is not None:
            status = "[red]not stored[/red]"
        elif r.stats.errors:
            status = "[yellow]stored, with damage[/yellow]"
        else:
            status = "[green]stored[/green]"
        table.add_row(_display(r.path), r.format, f"{r.stats.rows:,}",
                      f"{sum(r.stats.skipped.values()):,}", f"{r.stats.errors:,}", status)
    out.print(table)
    totals = Table(title="Rows added per table", title_justify="left")
    totals.add_column("table")
    totals.add_column("rows added", justify="right")
    totals.add_column("skipped", justify="right")
    totals.add_column("errors", justify="right")
    skipped: dict[str, int] = {}
    for r in report.results:
        for what, n in r.stats.skipped.items():
            skipped[what] = skipped.get(what, 0) + n
    for t in sorted(per_table):
        totals.add_row(t, f"{per_table[t]:,}", "", "")
    for what in sorted(skipped):
        totals.add_row(f"[dim]{what}[/dim]", "", f"{skipped[what]:,}", "")
    n_err = sum(r.stats.errors for r in report.results)
    totals.add_row("[bold]all[/bold]", f"{sum(per_table.values()):,}",
                   f"{sum(skipped.values()):,}", f"{n_err:,}")
    out.print(totals)
    rows = sum(per_table.values())
    rate = rows / report.seconds if report.seconds > 0 else 0.0
    line = (f"{len(report.results)} files, {rows:,} rows in {report.seconds:.2f} s "
            f"({rate:,.0f} rows/s)")
    if report.unrecognised:
        line += (f"; {len(report.unrecognised)} files in directories were not telemetry "
                 "hopguard reads")
    out.print(line, highlight=False)
