"""Detectors: tables in, findings out (see base.py for the contract, run.py for the runner).

Each module registers its detectors when imported; ``load_all`` imports them in the order they
run (the chain detector walks the relay pairs the relay detector leaves in the context).
"""

from __future__ import annotations

import importlib

MODULES = ("bridge", "chains", "proxies", "tunnels", "fronting", "intel", "endpoint",
           "attribution", "changes")


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"hopguard.analytics.{name}")
