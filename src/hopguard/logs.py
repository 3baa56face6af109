"""Logging set-up for the CLI: hopguard's own diagnostics on stderr (findings are not logs)."""

from __future__ import annotations

import logging

from rich.logging import RichHandler


def setup_logging(level: str, *, debug: bool = False) -> None:
    root = logging.getLogger("hopguard")
    root.handlers.clear()
    handler = RichHandler(show_path=debug, rich_tracebacks=debug, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.WARNING))
    root.propagate = False
