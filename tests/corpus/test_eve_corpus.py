"""EVE conformance against OISF/suricata-verify (read in place from ../shared/data/public).

The corpus holds suricata-verify's captures and ``test.yaml`` checks, but no eve.json that
Suricata wrote for them. So, besides ingesting any real eve.json present (none today; that test
skips), the checks themselves are the oracle:

- schema: the EVE field names this reader relies on appear in the checks, spelled the same;
- shape: every positive ``match`` block of an event type we store is turned back into an EVE
  record (dotted keys unflattened; keys the block does not constrain, such as timestamp, get
  fixed defaults), ingested, and each constrained field must come out in its column.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from hopguard.ingest.pipeline import ingest_file
from hopguard.store import Store

pytestmark = pytest.mark.corpus

STORED = ("flow", "tls", "http", "dns", "alert")

# EVE field names (dotted, list indices dropped) the reader uses that suricata-verify's checks
# in the corpus also use. Fields we read that no check mentions (dns.*, tls.ja3s,
# http.http_user_agent, http.request_headers ...) are covered by tests/unit/ingest/test_eve.py.
READER_FIELDS_IN_CHECKS = (
    "event_type", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto",
    "app_proto_orig", "community_id", "tx_id",
    "flow.pkts_toserver", "flow.pkts_toclient", "flow.bytes_toserver", "flow.bytes_toclient",
    "flow.state", "tcp.tcp_flags_ts", "tcp.tcp_flags_tc",
    "tls.sni", "tls.version", "tls.subject", "tls.issuerdn", "tls.fingerprint", "tls.notbefore",
    "tls.notafter", "tls.ja3.hash", "tls.ja4", "tls.client_alpns", "tls.server_alpns",
    "http.http_method", "http.url", "http.protocol", "http.status",
    "alert.signature_id", "alert.signature",
)

# What our own mapping derives from the flags two checks pin down (docs/formats/eve.md).
EXPECTED_STATE = {"bug-2646-01": "SF", "bug-2646-02": "RSTO"}


# -- a reader for the small YAML subset of test.yaml match blocks ----------------------------

def _scalar(text: str) -> Any:
    v = text.strip()
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1].replace("''", "'")
    if len(v) >= 2 and v[0] == v[-1] == '"':
        return orjson.loads(v)
    if v.startswith("[") and v.endswith("]"):
        return [_scalar(x) for x in v[1:-1].split(",") if x.strip()]
    if v in ("true", "false"):
        return v == "true"
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    return v


def match_blocks(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(count, match mapping) per check; folded plain scalars are joined with a space."""
    lines = text.splitlines()
    out: list[tuple[int, dict[str, Any]]] = []
    count = 1
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("count:"):
            count = int(stripped.split(":", 1)[1])
        if stripped != "match:":
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        raw: dict[str, str] = {}
        key_indent: int | None = None
        last = ""
        i += 1
        while i < len(lines):
            line = lines[i]
            body = line.strip()
            if not body or body.startswith("#"):
                i += 1
                continue
            ind = len(line) - len(line.lstrip())
            if ind <= indent:
                break
            if key_indent is None:
                key_indent = ind
            if ind == key_indent:
                last, _, value = body.partition(":")
                raw[last] = value.strip()
            else:
                raw[last] += " " + body
            i += 1
        out.append((count, {k: _scalar(v) for k, v in raw.items()}))
        count = 1
    return out


_TOKEN = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"tls.client_alpns[1]": "h2"} -> {"tls": {"client_alpns": [None, "h2"]}}."""
    root: dict[str, Any] = {}
    for dotted, value in flat.items():
        steps: list[str | int] = []
        for name, idx in _TOKEN.findall(dotted):
            steps.append(name)
            steps.extend(int(n) for n in re.findall(r"\d+", idx))
        node: Any = root
        for step, nxt in zip(steps, [*steps[1:], None], strict=True):
            last = nxt is None
            if isinstance(step, int):
                while len(node) <= step:
                    node.append(None)
                if last:
                    node[step] = value
                elif node[step] is None:
                    node[step] = [] if isinstance(nxt, int) else {}
                node = node[step]
            else:
                if last:
                    node[step] = value
                else:
                    node = node.setdefault(step, [] if isinstance(nxt, int) else {})
    return root


def expected_columns(flat: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The table and the column values a check's fields must produce."""
    table = flat["event_type"]
    want: dict[str, Any] = {}
    simple = {"src_ip": "src_ip", "src_port": "src_port", "dest_ip": "dst_ip",
              "dest_port": "dst_port"}
    for k, col in simple.items():
        if k in flat:
            want[col] = flat[k]
    if "proto" in flat and table in ("flow", "alert", "dns"):
        want["proto"] = str(flat["proto"]).lower()
    if table == "flow":
        for k, col in (("flow.bytes_toserver", "src_bytes"), ("flow.bytes_toclient", "dst_bytes"),
                       ("flow.pkts_toserver", "src_pkts"), ("flow.pkts_toclient", "dst_pkts"),
                       ("community_id", "community_id")):
            if k in flat:
                want[col] = flat[k]
    elif table == "tls":
        for k, col in (("tls.sni", "sni"), ("tls.version", "version"),
                       ("tls.subject", "cert_subject"), ("tls.issuerdn", "cert_issuer"),
                       ("tls.ja3.hash", "ja3"), ("tls.ja4", "ja4")):
            if k in flat:
                want[col] = flat[k]
        if "tls.fingerprint" in flat:
            want["cert_fuids"] = ["sha1:" + flat["tls.fingerprint"]]
        for k, col in (("tls.notbefore", "cert_not_before"), ("tls.notafter", "cert_not_after")):
            if k in flat:
                want[col] = datetime.fromisoformat(flat[k])
        server = [v for k, v in sorted(flat.items()) if k.startswith("tls.server_alpns[")]
        client = [v for k, v in sorted(flat.items()) if k.startswith("tls.client_alpns[")]
        if server or client:
            want["alpn"] = server or client
    elif table == "http":
        for k, col in (("http.http_method", "method"), ("http.url", "uri"),
                       ("http.protocol", "version"), ("http.status", "status")):
            if k in flat:
                want[col] = flat[k]
        if flat.get("http.http_method") == "CONNECT":
            want["is_proxy_request"] = True
        if "tx_id" in flat:
            want["trans_depth"] = flat["tx_id"] + 1
    elif table == "alert":
        for k, col in (("alert.signature_id", "signature_id"), ("alert.signature", "signature"),
                       ("app_proto", "app_proto")):
            if k in flat:
                want[col] = flat[k]
    return table, want


def _checks(corpus: Path) -> list[tuple[str, int, dict[str, Any]]]:
    base = corpus / "suricata-verify" / "tests"
    if not base.is_dir():
        pytest.skip(f"no suricata-verify tests under {base}")
    out: list[tuple[str, int, dict[str, Any]]] = []
    for yml in sorted(base.rglob("test.yaml")):
        name = yml.parent.relative_to(base).as_posix()
        out.extend((name, count, flat) for count, flat in match_blocks(yml.read_text()))
    assert out, "no checks parsed from suricata-verify test.yaml files"
    return out


# -- tests ---------------------------------------------------------------------------------------

def test_yaml_subset_reader() -> None:
    text = ("checks:\n- filter:\n    count: 2\n    match:\n      tls.issuerdn: C=US, O=X,\n"
            "        CN=Y\n      tls.notafter: '2020-05-13T12:00:00'\n      n: 7\n"
            "      e: [1,2]\n      tls.client_alpns[1]: h2\n- filter:\n    count: 0\n"
            "    match:\n      event_type: alert\n")
    blocks = match_blocks(text)
    assert blocks == [(2, {"tls.issuerdn": "C=US, O=X, CN=Y", "tls.notafter": "2020-05-13T12:00:00",
                           "n": 7, "e": [1, 2], "tls.client_alpns[1]": "h2"}),
                      (0, {"event_type": "alert"})]
    assert unflatten(blocks[0][1])["tls"] == {"issuerdn": "C=US, O=X, CN=Y",
                                              "notafter": "2020-05-13T12:00:00",
                                              "client_alpns": [None, "h2"]}


def test_reader_field_names_appear_in_checks(public_corpus: Path) -> None:
    seen = {re.sub(r"\[\d+\]", "", k) for _, _, flat in _checks(public_corpus) for k in flat}
    missing = [f for f in READER_FIELDS_IN_CHECKS if f not in seen]
    assert not missing, f"EVE names the reader uses but suricata-verify does not: {missing}"


def test_checks_round_trip_through_reader(public_corpus: Path, tmp_path: Path) -> None:
    cases: list[tuple[str, dict[str, Any]]] = []
    lines: list[bytes] = []
    for name, count, flat in _checks(public_corpus):
        if count == 0 or "event_type" not in flat:
            continue  # a negative check, or not about one event
        rec = unflatten(flat)
        # keys the check does not constrain: fixed defaults
        rec.setdefault("timestamp", "2024-01-01T00:00:00.000000+0000")
        rec.setdefault("flow_id", 1000 + len(lines))
        if rec["event_type"] == "flow":
            rec.setdefault("flow", {}).setdefault("start", "2024-01-01T00:00:00.000000+0000")
            rec.setdefault("src_ip", "192.0.2.1")
            rec.setdefault("dest_ip", "192.0.2.2")
        if rec["event_type"] == "alert":
            rec.setdefault("alert", {}).setdefault("signature_id", 1)
        cases.append((name, flat))
        lines.append(orjson.dumps(rec))
    p = tmp_path / "eve.json"
    p.write_bytes(b"\n".join(lines) + b"\n")
    store = Store.open(":memory:")
    try:
        res = ingest_file(store, p, sensor="sv", max_shown=1000)
        assert res.failure is None, res.failure
        assert res.stats.errors == 0, res.stats.shown
        stored = 0
        for lineno, (name, flat) in enumerate(cases, start=1):
            table, want = expected_columns(flat)
            if table not in STORED:
                continue
            got = store.query(f'SELECT * FROM "{table}" WHERE record = {lineno}').to_pylist()
            assert len(got) == 1, (name, flat)
            row = got[0]
            for col, value in want.items():
                assert row[col] == value, (name, col, row[col], value)
            if table == "flow" and name in EXPECTED_STATE:
                assert row["state"] == EXPECTED_STATE[name], (name, row["state"])
            stored += 1
        assert stored >= 15  # tls, flow, http and alert checks all took part
        assert {"eve quic", "eve ssh", "eve websocket", "eve stats"} <= set(res.stats.skipped)
    finally:
        store.close()
