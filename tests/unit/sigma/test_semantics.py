"""The Sigma semantics table: every case runs through DuckDB (a row in a real store table, the
rule both as its standalone condition and inside the one-scan query) and through the Python
reference matcher; all three must give the expected answer."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hopguard.sigma import PyMatcher, Rule, compile_scan, load_rules
from hopguard.sigma.scan import compile_distinct_scan, rows_of
from hopguard.store import Store
from tests.unit.analytics.util import put

PROC, NET, REG, CFG, DNS = ("process_creation", "network_connection", "registry_set",
                            "config_change", "dns_query")
TABLE = {PROC: "process", NET: "netconn", REG: "config_change", CFG: "config_change",
         DNS: "dns"}


@dataclass(frozen=True)
class Case:
    name: str
    detection: str
    event: dict[str, Any]
    expected: bool
    category: str = PROC
    product: str | None = "windows"
    extra: dict[str, Any] = field(default_factory=dict)


def C(name: str, detection: str, event: dict[str, Any], expected: bool, **kw: Any) -> Case:
    return Case(name, textwrap.dedent(detection).strip("\n"), event, expected, **kw)


CL = "command_line"
SEL = "sel:\n  {}\ncondition: sel"


def sel(line: str) -> str:
    return SEL.format(line)



def lst(field: str, *values: str) -> str:
    """A selection with one field and a list of values (an OR the backend may merge into one
    RE2 alternation when it has three or more plain string leaves)."""
    items = "".join(f"\n    - '{v}'" for v in values)
    return f"sel:\n  {field}:{items}\ncondition: sel"


MERGED_CASES = [
    C("merged_suffix_list_hit", lst("Image|endswith", "/socat", "/ncat", "\\ncat.exe"),
      {"image": "C:\\Tools\\NCAT.EXE"}, True),
    C("merged_suffix_list_miss", lst("Image|endswith", "/socat", "/ncat", "\\ncat.exe"),
      {"image": "/usr/bin/ncat.bak"}, False),
    C("merged_eq_list_case", lst("User", "www-data", "Apache", "nginx"), {"user": "APACHE"},
      True),
    C("merged_eq_is_whole_value", lst("User", "www-data", "apache", "nginx"),
      {"user": "apache2"}, False),
    C("merged_prefix_list", lst("CommandLine|startswith", "ssh -R", "plink", "autossh"),
      {CL: "PLINK.exe -R 1:2:3"}, True),
    C("merged_contains_list", lst("CommandLine|contains", "portproxy", "tcp-listen", "--broker"),
      {CL: "socat TCP-LISTEN:80 TCP:x:1"}, True),
    C("merged_contains_metachars_literal",
      lst("CommandLine|contains", "a.b", "(x)", "c+d", "e|f", "[g]", "$h^"),
      {CL: "axb yes c++d"}, False),
    C("merged_contains_metachars_hit",
      lst("CommandLine|contains", "a.b", "(x)", "c+d", "e|f", "[g]", "$h^"),
      {CL: "run $H^ now"}, True),
    C("merged_like_percent_underscore_literal",
      lst("CommandLine|contains", "50%", "a_b", "c\\d"), {CL: "50 percent a-b"}, False),
    C("merged_like_percent_hit", lst("CommandLine|contains", "50%", "a_b", "c\\d"),
      {CL: "100% or 50% off"}, True),
    C("merged_backslash_hit", lst("CommandLine|contains", "50%", "a_b", "c\\d"),
      {CL: "C\\D path"}, True),
    C("merged_wildcards", lst("CommandLine", "ssh*-R*", "plink?-R*", "*tcp-listen:*"),
      {CL: "plinkX-R 80"}, True),
    C("merged_wildcard_single_is_one_char", lst("CommandLine", "ssh*-R*", "plink?-R*", "x?y"),
      {CL: "plinkXY-R 80"}, False),
    C("merged_newline_in_data", lst("CommandLine|contains", "portproxy", "tcp-listen", "broker"),
      {CL: "line one\nnetsh interface PORTPROXY add"}, True),
    C("merged_null_column", lst("CommandLine|contains", "portproxy", "tcp-listen", "broker"),
      {CL: None}, False),
    C("merged_not_null_column",
      "sel:\n  CommandLine|contains:\n    - a1\n    - b2\n    - c3\ncondition: not sel",
      {CL: None}, True),
    C("merged_unicode", lst("CommandLine|contains", "прокси", "ärger", "ß"),
      {CL: "ПРОКСИ сервер"}, True),
]

CASES = [
    # -- case-insensitive equality ------------------------------------------------------------
    C("eq_lower_value_upper_data", sel("CommandLine: 'netsh interface portproxy'"),
      {CL: "NETSH INTERFACE PORTPROXY"}, True),
    C("eq_upper_value_lower_data", sel("CommandLine: 'NETSH INTERFACE PORTPROXY'"),
      {CL: "netsh interface portproxy"}, True),
    C("eq_mixed_case", sel("CommandLine: 'NeTsH iNtErFaCe'"), {CL: "nEtSh InTeRfAcE"}, True),
    C("eq_is_not_substring", sel("CommandLine: 'netsh'"), {CL: "netsh.exe interface"}, False),
    C("eq_empty_string", sel("CommandLine: ''"), {CL: ""}, True),
    C("eq_empty_string_vs_text", sel("CommandLine: ''"), {CL: "x"}, False),
    # -- modifiers --------------------------------------------------------------------------------
    C("endswith", sel("Image|endswith: '\\netsh.exe'"),
      {"image": "C:\\Windows\\System32\\NETSH.EXE"}, True),
    C("endswith_negative", sel("Image|endswith: '\\netsh.exe'"),
      {"image": "C:\\netsh.exe.bak"}, False),
    C("startswith", sel("Image|startswith: 'C:\\Program Files\\'"),
      {"image": "c:\\program files\\x.exe"}, True),
    C("startswith_negative", sel("Image|startswith: 'C:\\Program Files\\'"),
      {"image": "D:\\Program Files\\x.exe"}, False),
    C("contains_case", sel("CommandLine|contains: 'PortProxy'"),
      {CL: "netsh interface portproxy add v4tov4"}, True),
    C("contains_all", "sel:\n  CommandLine|contains|all:\n    - interface\n    - portproxy\n"
      "    - add\ncondition: sel", {CL: "NETSH Interface PortProxy ADD v4tov4"}, True),
    C("contains_all_missing_one", "sel:\n  CommandLine|contains|all:\n    - interface\n"
      "    - portproxy\n    - delete\ncondition: sel", {CL: "netsh interface portproxy add"},
      False),
    C("list_is_or", "sel:\n  CommandLine|contains:\n    - plink\n    - 'ssh '\ncondition: sel",
      {CL: "SSH -R 8080:localhost:80 x"}, True),
    C("list_is_or_none", "sel:\n  CommandLine|contains:\n    - plink\n    - 'ssh '\n"
      "condition: sel", {CL: "scp a b"}, False),
    C("all_with_wildcards", "sel:\n  CommandLine|all:\n    - '*-R *'\n    - '*-N*'\n"
      "condition: sel", {CL: "ssh -N -R 9000:x:22 h"}, True),
    C("all_with_wildcards_one_missing", "sel:\n  CommandLine|all:\n    - '*-R *'\n"
      "    - '*-N*'\ncondition: sel", {CL: "ssh -R 9000:x:22 h"}, False),
    # -- wildcards ------------------------------------------------------------------------------
    C("star_inside", sel("CommandLine: 'ssh*-R*'"), {CL: "SSH -f -R 8080:x:80 h"}, True),
    C("star_inside_anchored", sel("CommandLine: 'ssh*-R*'"), {CL: "x ssh -R 1"}, False),
    C("question_one_char", sel("Image: 'netsh?exe'"), {"image": "NETSH.EXE"}, True),
    C("question_not_two_chars", sel("Image: 'netsh?exe'"), {"image": "netsh..exe"}, False),
    C("question_unicode_char", sel("CommandLine: 'caf?'"), {CL: "CAFÉ"}, True),
    C("star_alone_any_value", sel("CommandLine: '*'"), {CL: "anything"}, True),
    C("star_alone_not_null", sel("CommandLine: '*'"), {CL: None}, False),
    C("escaped_star_is_literal", sel("Image: 'C:\\Users\\*'"), {"image": "C:\\Users*"}, True),
    C("escaped_star_not_wildcard", sel("Image: 'C:\\Users\\*'"), {"image": "C:\\Users\\bob"},
      False),
    C("double_backslash_then_star", sel("Image: 'C:\\Users\\\\*'"),
      {"image": "c:\\users\\bob\\x.exe"}, True),
    # -- LIKE metacharacters and backslashes are data -------------------------------------------
    C("percent_literal_contains", sel("CommandLine|contains: '100%'"), {CL: "set 100% now"},
      True),
    C("percent_is_not_wildcard", sel("CommandLine: 'a%c'"), {CL: "abc"}, False),
    C("underscore_is_not_wildcard", sel("CommandLine: 'a_c'"), {CL: "abc"}, False),
    C("underscore_literal", sel("CommandLine: 'a_c'"), {CL: "A_C"}, True),
    C("percent_in_like_pattern", sel("CommandLine: 'a%*c'"), {CL: "A%bc"}, True),
    C("percent_in_like_pattern_literal", sel("CommandLine: 'a%*c'"), {CL: "axbc"}, False),
    C("underscore_in_like_pattern", sel("CommandLine: 'a_*z'"), {CL: "abxz"}, False),
    C("underscore_in_like_pattern_literal", sel("CommandLine: 'a_*z'"), {CL: "a_xz"}, True),
    C("backslash_in_like_pattern", sel("Image: 'C:\\Temp*\\a?.exe'"),
      {"image": "c:\\temp\\sub\\aB.EXE"}, True),
    C("backslash_in_like_pattern_negative", sel("Image: 'C:\\Temp*\\a?.exe'"),
      {"image": "c:\\temp\\sub/ab.exe"}, False),
    C("quote_in_value", sel("CommandLine|contains: \"it's\""), {CL: "IT'S here"}, True),
    # -- regular expressions ---------------------------------------------------------------------
    C("re_case_sensitive", sel("CommandLine|re: '\\s-R\\s*\\d+:'"), {CL: "ssh -R 8080:h:80"},
      True),
    C("re_case_sensitive_negative", sel("CommandLine|re: '\\s-R\\s*\\d+:'"),
      {CL: "ssh -r 8080:h:80"}, False),
    C("re_inline_i", sel("CommandLine|re: '(?i)\\s-R\\s*\\d+:'"), {CL: "SSH -r 80:x"}, True),
    C("re_i_modifier", sel("CommandLine|re|i: 'portproxy'"), {CL: "NETSH PORTPROXY"}, True),
    C("re_unanchored", sel("CommandLine|re: 'proxy'"), {CL: "netsh portproxy add"}, True),
    C("re_anchored", sel("CommandLine|re: '^netsh'"), {CL: "cmd /c netsh"}, False),
    C("re_m_modifier", sel("CommandLine|re|m: '^add$'"), {CL: "x\nadd\ny"}, True),
    C("re_without_m", sel("CommandLine|re: '^add$'"), {CL: "x\nadd\ny"}, False),
    C("re_s_modifier", sel("CommandLine|re|s: 'a.b'"), {CL: "a\nb"}, True),
    C("re_without_s", sel("CommandLine|re: 'a.b'"), {CL: "a\nb"}, False),
    C("re_on_number_column", sel("ProcessId|re: '^12\\d$'"), {"pid": 123}, True),
    # -- CIDR --------------------------------------------------------------------------------------
    C("cidr_v4", sel("DestinationIp|cidr: '10.0.0.0/8'"), {"dst_ip": "10.1.2.3"}, True,
      category=NET),
    C("cidr_v4_outside", sel("DestinationIp|cidr: '10.0.0.0/8'"), {"dst_ip": "11.0.0.1"}, False,
      category=NET),
    C("cidr_v4_22_inside", sel("DestinationIp|cidr: '192.168.4.0/22'"),
      {"dst_ip": "192.168.7.255"}, True, category=NET),
    C("cidr_v4_22_outside", sel("DestinationIp|cidr: '192.168.4.0/22'"),
      {"dst_ip": "192.168.8.0"}, False, category=NET),
    C("cidr_v4_not_an_address", sel("DestinationIp|cidr: '10.0.0.0/8'"),
      {"dst_ip": "10.example.com"}, False, category=NET),
    C("cidr_v4_leading_zero_rejected", sel("DestinationIp|cidr: '10.0.0.0/8'"),
      {"dst_ip": "010.1.1.1"}, False, category=NET),
    C("cidr_v4_list", "sel:\n  DestinationIp|cidr:\n    - 10.0.0.0/8\n    - 172.16.0.0/12\n"
      "condition: sel", {"dst_ip": "172.20.0.9"}, True, category=NET),
    C("cidr_v6", sel("DestinationIp|cidr: 'fd00::/8'"), {"dst_ip": "FD12:3456::1"}, True,
      category=NET),
    C("cidr_v6_full_form", sel("DestinationIp|cidr: '2001:db8::/32'"),
      {"dst_ip": "2001:0db8:0:0:0:0:0:1"}, True, category=NET),
    C("cidr_v6_outside", sel("DestinationIp|cidr: '2001:db8::/32'"), {"dst_ip": "2001:db9::1"},
      False, category=NET),
    C("cidr_v6_partial_nibble_in", sel("DestinationIp|cidr: '2001:db8:0:4000::/50'"),
      {"dst_ip": "2001:db8:0:7fff::1"}, True, category=NET),
    C("cidr_v6_partial_nibble_out", sel("DestinationIp|cidr: '2001:db8:0:4000::/50'"),
      {"dst_ip": "2001:db8:0:8000::1"}, False, category=NET),
    C("cidr_v6_loopback", sel("DestinationIp|cidr: '::1/128'"), {"dst_ip": "::1"}, True,
      category=NET),
    C("cidr_v6_vs_v4_text", sel("DestinationIp|cidr: '::/0'"), {"dst_ip": "10.0.0.1"}, False,
      category=NET),
    # -- windash ---------------------------------------------------------------------------------
    C("windash_dash", sel("CommandLine|windash|contains: ' -R '"), {CL: "plink -R 80:x:80 h"},
      True),
    C("windash_slash", sel("CommandLine|windash|contains: ' -R '"), {CL: "plink.exe /R 80:x h"},
      True),
    C("windash_en_dash", sel("CommandLine|windash|contains: ' -R '"), {CL: "plink \u2013R 80"},
      True),
    C("windash_em_dash", sel("CommandLine|windash|contains: ' -R '"), {CL: "plink \u2014R 80"},
      True),
    C("windash_no_dash", sel("CommandLine|windash|contains: ' -R '"), {CL: "plink R 80"}, False),
    C("windash_with_other_field_and", "sel:\n  Image|endswith: '\\plink.exe'\n"
      "  CommandLine|windash|contains: ' -R '\ncondition: sel",
      {"image": "C:\\plink.exe", CL: "x y"}, False),
    # -- exists, null, absent fields --------------------------------------------------------------
    C("exists_true_present", sel("CommandLine|exists: true"), {CL: "x"}, True),
    C("exists_true_null", sel("CommandLine|exists: true"), {CL: None}, False),
    C("exists_false_null", sel("CommandLine|exists: false"), {CL: None}, True),
    C("exists_unstored_field", sel("OriginalFileName|exists: true"), {CL: "x"}, False),
    C("null_matches_null", sel("ParentImage: null"), {"parent_image": None}, True),
    C("null_vs_value", sel("ParentImage: null"), {"parent_image": "C:\\x.exe"}, False),
    C("unstored_field_never_equal", sel("OriginalFileName: 'netsh.exe'"),
      {"image": "netsh.exe"}, False),
    C("unstored_field_or_stored", "sel:\n  - OriginalFileName: 'netsh.exe'\n"
      "  - Image|endswith: '\\netsh.exe'\ncondition: sel", {"image": "C:\\netsh.exe"}, True),
    C("null_column_contains", sel("CommandLine|contains: 'x'"), {CL: None}, False),
    # -- numbers -----------------------------------------------------------------------------------
    C("gt_true", sel("DestinationPort|gt: 1024"), {"dst_port": 8080}, True, category=NET),
    C("gt_false", sel("DestinationPort|gt: 1024"), {"dst_port": 443}, False, category=NET),
    C("gte_equal", sel("DestinationPort|gte: 1024"), {"dst_port": 1024}, True, category=NET),
    C("lt_null", sel("DestinationPort|lt: 1024"), {"dst_port": None}, False, category=NET),
    C("lte_pid", sel("ProcessId|lte: 4"), {"pid": 4}, True),
    C("gt_on_text_column", sel("CommandLine|gt: 10"), {CL: " 12 "}, True),
    C("gt_on_non_number_text", sel("CommandLine|gt: 10"), {CL: "twelve"}, False),
    C("number_equals_int_column", sel("DestinationPort: 443"), {"dst_port": 443}, True,
      category=NET),
    C("quoted_number_vs_int_column", sel("DestinationPort: '443'"), {"dst_port": 443}, True,
      category=NET),
    C("number_vs_text_column", sel("User: 0"), {"user": "0"}, True),
    # -- keywords ---------------------------------------------------------------------------------
    C("keyword_in_command_line", "keywords:\n  - portproxy\ncondition: keywords",
      {CL: "netsh interface PortProxy add"}, True),
    C("keyword_in_parent_command_line", "keywords:\n  - portproxy\ncondition: keywords",
      {"parent_command_line": "cmd /c netsh PORTPROXY"}, True),
    C("keyword_absent", "keywords:\n  - portproxy\ncondition: keywords", {CL: "netsh"}, False),
    C("keyword_wildcard", "keywords:\n  - 'ssh*-R'\ncondition: keywords",
      {CL: "x SSH -N -r y"}, True),
    # -- conditions --------------------------------------------------------------------------------
    C("one_of_sel_star", "sel1:\n  CommandLine|contains: plink\nsel2:\n  CommandLine|contains: "
      "ssh\ncondition: 1 of sel*", {CL: "ssh -R"}, True),
    C("all_of_sel_star_one", "sel1:\n  CommandLine|contains: '-R'\nsel2:\n  CommandLine|"
      "contains: ssh\ncondition: all of sel*", {CL: "plink -R"}, False),
    C("all_of_sel_star_both", "sel1:\n  CommandLine|contains: '-R'\nsel2:\n  CommandLine|"
      "contains: ssh\ncondition: all of sel*", {CL: "ssh -R"}, True),
    C("all_of_them", "a:\n  Image|endswith: ssh\nb:\n  CommandLine|contains: '-D'\n"
      "condition: all of them", {"image": "/usr/bin/ssh", CL: "ssh -D 1080"}, True,
      product="linux", extra={"platform": "linux"}),
    C("not_filter_hits", "sel:\n  CommandLine|contains: portproxy\nfilter:\n  User: SYSTEM\n"
      "condition: sel and not filter", {CL: "portproxy", "user": "system"}, False),
    C("not_filter_misses", "sel:\n  CommandLine|contains: portproxy\nfilter:\n  User: SYSTEM\n"
      "condition: sel and not filter", {CL: "portproxy", "user": "bob"}, True),
    C("not_over_unstored_field", "sel:\n  CommandLine|contains: portproxy\nfilter:\n"
      "  OriginalFileName: x\ncondition: sel and not filter", {CL: "portproxy"}, True),
    C("not_over_null_column", "sel:\n  CommandLine|contains: portproxy\nfilter:\n"
      "  ParentImage|endswith: explorer.exe\ncondition: sel and not filter",
      {CL: "portproxy", "parent_image": None}, True),
    C("not_not", "sel:\n  CommandLine|contains: a\ncondition: not (not sel)", {CL: "A"}, True),
    C("parens_or_then_and", "a:\n  CommandLine|contains: x\nb:\n  CommandLine|contains: y\n"
      "c:\n  CommandLine|contains: z\ncondition: (a or b) and c", {CL: "x"}, False),
    C("parens_and_inside_or", "a:\n  CommandLine|contains: x\nb:\n  CommandLine|contains: y\n"
      "c:\n  CommandLine|contains: z\ncondition: a or (b and c)", {CL: "x"}, True),
    C("map_list_is_or", "sel:\n  - CommandLine|contains: one\n  - Image|endswith: two.exe\n"
      "condition: sel", {"image": "C:\\TWO.EXE"}, True),
    # -- unicode, platforms, other tables -------------------------------------------------------
    C("unicode_umlaut", sel("CommandLine|contains: 'ÄRGER'"), {CL: "kein ärger"}, True),
    C("unicode_cyrillic", sel("CommandLine: 'ПРОКСИ'"), {CL: "прокси"}, True),
    C("unicode_not_ascii_fold", sel("CommandLine: 'cafe'"), {CL: "café"}, False),
    C("platform_filter", sel("CommandLine|contains: ssh"), {CL: "ssh -R"}, False,
      product="linux"),
    C("platform_filter_match", sel("CommandLine|contains: ssh"), {CL: "ssh -R"}, True,
      product="linux", extra={"platform": "linux"}),
    C("no_product_any_platform", sel("CommandLine|contains: ssh"), {CL: "ssh -R"}, True,
      product=None, extra={"platform": "macos"}),
    C("registry_target_object", sel("TargetObject|contains: 'Internet Settings\\ProxyServer'"),
      {"object": "HKU\\S-1\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings"
       "\\ProxyServer", "source": "registry"}, True, category=REG),
    C("registry_needs_registry_source", sel("TargetObject|contains: 'ProxyServer'"),
      {"object": "ProxyServer", "source": "netsh"}, False, category=REG),
    C("initiated_true", sel("Initiated: 'true'"), {"direction": "outbound"}, True, category=NET),
    C("initiated_false", sel("Initiated: 'true'"), {"direction": "inbound"}, False,
      category=NET),
    C("config_change_detail", sel("Detail|contains: 'dnat to'"),
      {"source": "nft", "detail": "tcp dport 8443 DNAT to 10.0.0.5:443"}, True,
      category=CFG, product=None, extra={"platform": "linux"}),
    C("dns_query", sel("QueryName|endswith: '.trycloudflare.com'"),
      {"query": "abc.TryCloudflare.com"}, True, category=DNS),
    C("fieldref_equal", sel("ParentImage|fieldref: Image"),
      {"image": "C:\\a.exe", "parent_image": "c:\\A.EXE"}, True),
    C("fieldref_differs", sel("ParentImage|fieldref: Image"),
      {"image": "C:\\a.exe", "parent_image": "C:\\b.exe"}, False),
    C("cased_modifier", sel("CommandLine|cased: 'Foo'"), {CL: "foo"}, False),
    C("cased_modifier_match", sel("CommandLine|cased|contains: 'Foo'"), {CL: "a Foo b"}, True),
]


def _rule_text(case: Case) -> str:
    ls = f"  category: {case.category}\n"
    if case.product:
        ls += f"  product: {case.product}\n"
    return (f"title: {case.name}\nid: 11111111-2222-4333-8444-555555555555\nstatus: test\n"
            f"logsource:\n{ls}detection:\n{textwrap.indent(case.detection, '  ')}\n"
            "level: medium\n")


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    s = Store.open(":memory:")
    yield s
    s.close()


def _load(case: Case, tmp: Path) -> Rule:
    path = tmp / f"{case.name}.yml"
    path.write_text(_rule_text(case), encoding="utf-8")
    rs = load_rules([path])
    assert not rs.errors, [str(e) for e in rs.errors]
    assert len(rs.rules) == 1
    return rs.rules[0]


CASES += MERGED_CASES


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_semantics(case: Case, store: Store, tmp_path: Path) -> None:
    rule = _load(case, tmp_path)
    table = TABLE[case.category]
    assert rule.table == table
    event: dict[str, Any] = {"platform": "windows", **case.extra, **case.event}
    for t in ("process", "netconn", "config_change", "dns"):
        store.con.execute(f'DELETE FROM "{t}"')
    put(store, table, [{"ts": 0.0, "file_id": 1, "record": 7, **event}])
    # 1. the standalone condition
    alone = store.con.execute(f'SELECT count(*) FROM "{table}" WHERE {rule.condition}').fetchone()
    # 2. the one-scan query
    scan = store.con.execute(compile_scan(table, [rule]).sql).fetchall()
    # 3. the Python reference
    py = PyMatcher([rule]).match(table, event)
    # 4. the distinct-event scan and its join back to rows (what endpoint.sigma runs)
    dscan = compile_distinct_scan(table, [rule])
    rows = store.con.execute(rows_of(dscan, ["record"])).fetchall()
    assert alone is not None
    got = (alone[0] == 1, len(scan) == 1 and scan[0][-1] == [0], py == [rule.id],
           rows == [(7, [0])])
    assert got == (case.expected,) * 4, f"{case.name}: sql, scan, python, distinct = {got}"


def test_distinct_scan_gives_the_row_scan_pairs(store: Store) -> None:
    """The whole shipped pack over repeated, NULL-holed and planted events: the distinct-event
    scan joined back to rows yields exactly the row-by-row scan's (row, rule) pairs."""
    from hopguard.sigma import pack_dir
    rules = [r for r in load_rules([pack_dir()]).rules if r.table == "process"]
    lines = [
        ("linux", "/usr/bin/socat", "socat TCP-LISTEN:8443,fork TCP:203.0.113.66:443", "www-data"),
        ("linux", "/usr/bin/ls", "ls -la", "root"),
        ("linux", None, "ssh -N -R 2222:10.10.5.9:22 root@203.0.113.7", None),
        ("windows", "C:\\Windows\\System32\\netsh.exe",
         "netsh interface portproxy add v4tov4 listenport=8080 connectaddress=10.0.0.1", None),
        ("windows", "C:\\Windows\\System32\\netsh.exe", "netsh interface portproxy show all",
         "CORP\\bob"),
        ("macos", "/usr/sbin/networksetup", None, "root"),
    ]
    rows = [{"ts": float(i), "file_id": 1, "record": i, "platform": p, "image": img,
             "command_line": cmd, "user": user, "host": f"h{i % 3}"}
            for i in range(120) for p, img, cmd, user in [lines[i % len(lines)]]]
    put(store, "process", rows)
    scan = compile_scan("process", rules)
    rec = scan.keys.index("record")
    by_row = {(r[rec], i) for r in store.con.execute(scan.sql).fetchall() for i in r[-1]}
    d = compile_distinct_scan("process", rules)
    assert d.rules == scan.rules
    by_distinct = {(r[0], i) for r in store.con.execute(rows_of(d, ["record"])).fetchall()
                   for i in r[-1]}
    assert by_row == by_distinct
    assert len({rec for rec, _ in by_row}) >= 60  # socat, ssh -R, netsh add and show match
    # the matches come from at most six distinct events behind 120 rows
    assert len(store.con.execute(d.sql).fetchall()) <= len(lines)


def test_long_lists_become_one_alternation(tmp_path: Path) -> None:
    """The MERGED_CASES above go through the merged form (three or more leaves), two values
    stay separate leaves."""
    merged = _load(MERGED_CASES[0], tmp_path)
    assert "regexp_matches(" in merged.condition and "^(?s:" in merged.scan_condition
    two = _load(C("two", lst("Image|endswith", "/socat", "/ncat"), {}, True), tmp_path)
    assert "regexp_matches(" not in two.condition and "suffix(" in two.condition
