"""``hopguard lab``: labelled traffic made by real tools in network namespaces (root)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hopguard.cli.common import DebugOpt, err, make_env, out

lab_app = typer.Typer(no_args_is_help=True, help="Labelled proxy, relay and tunnel traffic "
                      "from real tools in network namespaces (needs root).")


@lab_app.command("list")
def lab_list() -> None:
    """List the scenarios."""
    from hopguard.lab.scenarios import SCENARIOS
    table = Table(title="Lab scenarios", title_justify="left")
    table.add_column("name")
    table.add_column("ATT&CK")
    table.add_column("what happens")
    for cls in SCENARIOS.values():
        table.add_row(cls.name, cls.technique, cls.description)
    out.print(table)


@lab_app.command("run")
def lab_run(scenario: Annotated[str, typer.Argument(help="Scenario name ('hopguard lab list').")],
            output: Annotated[Path, typer.Option("--out", help="Directory for capture.pcap, "
                                                 "audit.log, nft-monitor.log, truth.json.")]
            = Path("out/lab"),
            seed: Annotated[int, typer.Option("--seed", help="Seed for traffic timing.")] = 1,
            duration: Annotated[float, typer.Option(
                "--duration", min=3, max=3600, help="Seconds of scenario traffic.")] = 12.0,
            capture_host: Annotated[list[str] | None, typer.Option(
                "--capture-host", help="Also capture this host's own interface to "
                "OUT/capture-HOST.pcap (repeatable).")] = None,
            keep_logs: Annotated[bool, typer.Option(
                "--keep-logs", help="Copy the tools' own logs to OUT/logs.")] = False,
            debug: DebugOpt = False) -> None:
    """Run one scenario and write its four files."""
    from hopguard.lab.run import run_scenario
    make_env(None, None, None, debug)
    err.print(f"lab: running {scenario} for about {duration:g} s …", highlight=False)
    truth = run_scenario(scenario, output, seed=seed, duration=duration, keep_logs=keep_logs,
                         capture_hosts=tuple(capture_host or ()))
    for name in ("capture.pcap", "audit.log", "nft-monitor.log", "truth.json"):
        path = output / name
        out.print(f"{path}: {path.stat().st_size:,} bytes", highlight=False)
    out.print(f"{len(truth.relays)} relays, {len(truth.chains)} chains, "
              f"{len(truth.proxies)} proxies, {len(truth.tools)} tool runs in truth.json",
              highlight=False)


@lab_app.command("clean")
def lab_clean() -> None:
    """Remove namespaces and audit rules left by a lab run that was killed."""
    from hopguard.lab.net import sweep
    from hopguard.lab.record import audit_rules_with_key
    from hopguard.lab.sys import require_root, run
    require_root()
    gone = sweep()
    rules = audit_rules_with_key()
    for rule in rules:
        key = rule.split("key=")[-1].strip()
        run(["auditctl", "-D", "-k", key], check=False)
    out.print(f"removed {len(gone)} namespaces and {len(rules)} audit rules", highlight=False)
