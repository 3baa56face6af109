"""Loading rule directories: good rules load, each broken one is reported at file:line."""

from __future__ import annotations

from pathlib import Path

from hopguard.sigma import load_rules, pack_dir

GOOD = """\
title: Netsh portproxy added
id: 0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d5e
status: test
description: a port proxy forwards a local port
tags:
  - attack.command-and-control
  - attack.t1090.001
logsource:
  category: process_creation
  product: windows
detection:
  sel:
    Image|endswith: '\\netsh.exe'
    CommandLine|contains|all: [interface, portproxy, add]
  condition: sel
analytics: ["DET0445/AN1229"]
tool: netsh portproxy
falsepositives: [admins]
level: high
"""

YAML_BROKEN = """\
title: broken yaml
id: 0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d51
logsource:
  category: process_creation
detection:
  sel:
    CommandLine: [unclosed
  condition: sel
"""

BAD_MODIFIER = """\
title: bad modifier
id: 0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d52
logsource:
  category: process_creation
detection:
  sel:
    Image|endswith: x
    CommandLine|containz: portproxy
  condition: sel
level: low
"""

BAD_CONDITION = """\
title: bad condition
id: 0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d53
logsource:
  category: process_creation
detection:
  sel:
    CommandLine|contains: portproxy
  condition: sel or filter_that_is_missing
level: low
"""

BAD_LOGSOURCE = """\
title: unsupported logsource
id: 0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d54
logsource:
  product: linux
  service: auditd
detection:
  sel:
    type: EXECVE
  condition: sel
level: low
"""

MULTI = """\
action: global
logsource:
  category: process_creation
  product: linux
level: medium
---
title: first of a collection
id: 0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d55
detection:
  sel:
    CommandLine|contains: socat
  condition: sel
---
title: second of a collection
id: 0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d56
detection:
  sel:
    CommandLine|contains: 'ncat'
  condition: sel and
"""


def _write(d: Path) -> None:
    (d / "good.yml").write_text(GOOD)
    (d / "yaml.yml").write_text(YAML_BROKEN)
    (d / "sub").mkdir()
    (d / "sub" / "modifier.yaml").write_text(BAD_MODIFIER)
    (d / "condition.yml").write_text(BAD_CONDITION)
    (d / "logsource.yml").write_text(BAD_LOGSOURCE)
    (d / "notes.txt").write_text("not a rule")


def test_good_rule_loads_and_each_error_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path)
    rs = load_rules([tmp_path])
    assert [r.title for r in rs.rules] == ["Netsh portproxy added"]
    where = sorted((Path(str(e.location.path)).name, e.location.line) for e in rs.errors
                   if e.location is not None)
    assert where == [("condition.yml", 8), ("logsource.yml", 5), ("modifier.yaml", 8),
                     ("yaml.yml", 8)]
    text = {Path(str(e.location.path)).name: str(e) for e in rs.errors if e.location}
    assert "containz" in text["modifier.yaml"]
    assert "auditd" in text["logsource.yml"]
    assert "filter_that_is_missing" in text["condition.yml"]
    assert "YAML" in text["yaml.yml"]
    assert str(rs.errors[0]).endswith(f":{rs.errors[0].location.line})")  # type: ignore[union-attr]


def test_rule_fields(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    rule = load_rules([tmp_path]).rules[0]
    assert rule.id == "0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d5e"
    assert (rule.level, rule.status, rule.table) == ("high", "test", "process")
    assert rule.techniques == ("T1090.001",)
    assert rule.analytics == ("DET0445/AN1229",)
    assert rule.tool == "netsh portproxy"
    assert rule.falsepositives == ("admins",)
    assert rule.line == 1 and rule.path.endswith("good.yml")
    assert rule.condition.startswith("\"platform\" = 'windows' AND (")
    assert "suffix(lower(\"image\"), '\\netsh.exe')" in rule.condition
    assert '"__lc_command_line"' in rule.scan_condition
    assert set(rule.lowered) == {"command_line", "image"}


def test_collection_with_global_and_error_line_in_later_document(tmp_path: Path) -> None:
    (tmp_path / "multi.yml").write_text(MULTI)
    rs = load_rules([tmp_path])
    assert [(r.title, r.level, r.table, r.line) for r in rs.rules] == [
        ("first of a collection", "medium", "process", 7)]
    assert "platform\" = 'linux'" in rs.rules[0].condition
    assert [(e.location.line if e.location else None) for e in rs.errors] == [19]


def test_disabled_min_level_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(GOOD)
    (tmp_path / "b.yml").write_text(GOOD.replace("Netsh portproxy added", "copy"))
    (tmp_path / "c.yml").write_text(BAD_MODIFIER.replace("containz", "contains")
                                    .replace("bad modifier", "low one"))
    rs = load_rules([tmp_path])
    assert [r.title for r in rs.rules] == ["Netsh portproxy added", "low one"]
    assert any("second one is skipped" in n for n in rs.notes)
    assert [r.title for r in load_rules([tmp_path], min_level="medium").rules] == [
        "Netsh portproxy added"]
    assert [r.title for r in load_rules([tmp_path], disabled=["LOW ONE"]).rules] == [
        "Netsh portproxy added"]
    assert load_rules([tmp_path], disabled=["0f0e3c1a-8a3b-4c55-9d10-6b1f2a3c4d5e"]).rules[0] \
        .title == "low one"


def test_unstored_field_is_noted(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(GOOD.replace("Image|endswith", "OriginalFileName"))
    rs = load_rules([tmp_path])
    assert len(rs.rules) == 1 and rs.rules[0].absent == ("OriginalFileName",)
    assert any("OriginalFileName" in n and "r.yml:1" in n for n in rs.notes)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    rs = load_rules([tmp_path / "nope"])
    assert rs.rules == [] and len(rs.errors) == 1 and "nope" in str(rs.errors[0])


def test_shipped_pack_loads_cleanly() -> None:
    rs = load_rules([pack_dir()])
    assert rs.rules, "the shipped pack is empty"
    assert [str(e) for e in rs.errors] == []
    assert all(r.techniques and r.analytics for r in rs.rules)
