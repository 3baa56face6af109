"""What every command shares: settings, the store, output formats and the error boundary."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from hopguard.config import Settings, load_settings
from hopguard.errors import ConfigError
from hopguard.logs import setup_logging
from hopguard.store import Store

out = Console()
if not out.is_terminal:  # files and pipes: wide enough that paths do not fold
    out = Console(width=200)
err = Console(stderr=True, soft_wrap=True)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    jsonl = "jsonl"


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.",
                                                show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a setting: section.key=value (repeatable).", show_default=False)]
DbOpt = Annotated[Path | None, typer.Option(
    "--db", help="DuckDB store file [default: store.path, ./hopguard.duckdb].",
    show_default=False)]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]


@dataclass(slots=True)
class Env:
    settings: Settings
    db: Path
    debug: bool

    def open_store(self, *, read_only: bool = False) -> Store:
        return Store.open(self.db, read_only=read_only, threads=self.settings.store.threads,
                          memory_limit=self.settings.store.memory_limit)


DEBUG = {"on": False}


def make_env(config: Path | None, sets: Sequence[str] | None, db: Path | None,
             debug: bool) -> Env:
    DEBUG["on"] = debug
    settings = load_settings(config, sets or ())
    setup_logging(settings.log.level, debug=debug)
    return Env(settings=settings, db=db or Path(settings.store.path), debug=debug)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return ", ".join(_cell(x) for x in v)
    return str(v)


def _json_default(v: Any) -> Any:
    return str(v)


def print_arrow(result: pa.Table, fmt: OutputFormat, output: Path | None = None,
                *, title: str | None = None) -> None:
    rows = result.to_pylist()
    if fmt is OutputFormat.table:
        table = Table(title=title, show_lines=False)
        for name in result.column_names:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row[n]) for n in result.column_names))
        if output is not None:
            with output.open("w") as target:
                Console(file=target, width=200).print(table)
        else:
            out.print(table)
        return
    fh: IO[str] = output.open("w", newline="") if output is not None else io.StringIO()
    try:
        if fmt is OutputFormat.csv:
            writer = csv.writer(fh)
            writer.writerow(result.column_names)
            for row in rows:
                writer.writerow([_cell(row[n]) for n in result.column_names])
        else:
            for row in rows:
                fh.write(orjson.dumps(row, default=_json_default,
                                      option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z).decode())
                fh.write("\n")
        if isinstance(fh, io.StringIO):
            sys.stdout.write(fh.getvalue())
    finally:
        fh.close()


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
