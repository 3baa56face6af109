"""Layered settings: defaults < files < environment < --set, each checked against its bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from hopguard.config import iter_options, load_settings
from hopguard.errors import ConfigError


def test_layers_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("[ingest]\nsensor = 'from-a'\nmax_errors_shown = 7\n")
    b.write_text("[ingest]\nsensor = 'from-b'\n")
    s = load_settings(layers=[a, b], environ={})
    assert s.ingest.sensor == "from-b" and s.ingest.max_errors_shown == 7
    s = load_settings(layers=[a, b], environ={"HOPGUARD_INGEST_SENSOR": "env"})
    assert s.ingest.sensor == "env"
    s = load_settings(layers=[a, b], environ={"HOPGUARD_INGEST_SENSOR": "env"},
                      overrides=["ingest.sensor=cli", "inventory.proxies=['10.0.0.5:3128']"])
    assert s.ingest.sensor == "cli" and s.inventory.proxies == ["10.0.0.5:3128"]


@pytest.mark.parametrize("override,message", [
    ("store.batch_rows=10", "below the minimum"),
    ("store.batch_rows=99999999", "above the maximum"),
    ("store.batch_rows=lots", "expected int"),
    ("log.level=loud", "not one of"),
    ("ingest.fast_zeek_tsv=maybe", "expected bool"),
    ("nosuch.key=1", "unknown setting"),
    ("ingest", "expects section.key=value"),
])
def test_bad_values_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(layers=[], environ={}, overrides=[override])


def test_every_option_has_help() -> None:
    for info in iter_options(load_settings(layers=[], environ={})):
        assert info.help and info.help.endswith(".")
