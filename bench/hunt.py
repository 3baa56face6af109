"""hopguard hunt on a day of 5,000,000 Zeek conn flows: time, memory and relay accuracy.

The conn.log comes from bench/gen_conn.py (the flow model of analytics-notes §2: busy DNS
resolvers and web proxies that bridge benignly, SMB, DCs, DMZ, scans; 200 planted relay
chains = 340 true pairs, and 200 near-miss decoys). It is cached in --workdir, keyed by the
number of flows and the seed.

Runs, each in a fresh process, on the same file, in the same run (wall time and peak RSS from
/usr/bin/time -v, else getrusage of the child; hopguard is one process, so the largest RSS in
the tree is its own):

1. reference: DuckDB alone, ``CREATE TABLE AS SELECT * FROM read_csv(...)`` of the TSV into a
   fresh database file with the settings of hopguard's Zeek fast path (the header's types,
   delim, skip, quote='', escape='', nullstr, strict_mode, rejects table).
2. ``hopguard ingest`` alone (the ingest share of the hunt; and whether the Zeek fast path was
   taken: it stores flow.record as NULL, the line path numbers the records).
3. ``hopguard hunt --db fresh --no-progress --set inventory.proxies=[the 3 web proxies]``:
   ingest + analyze + report.

Then the findings are read back from the hunt's store and scored against the truth file:

* pairs: a planted pair (in_uid, out_uid) is found when a bridge.relay finding lists both
  legs' uids in its evidence, or (when evidence was capped) when a finding's entities equal the
  pair's (client, relay, in_port, upstream, up_port). Planted relays never share an address,
  so the entities identify one pair. Precision is over bridge.relay findings that are not
  sanctioned (the declared proxies' findings are allow-listed, and shown as a count): a finding
  is correct when it names a planted pair.
* chains: a chain.multihop finding is correct when its {"chain": [...]} equals a planted
  chain's address list. Recall is over planted chains with at least --chain-min-relays relays
  (chain.min_relays: a one-relay "chain" is a bridge.relay finding); a one-relay planted chain
  that is reported as a chain is not counted as wrong.

Targets: hunt <= 3x the reference's seconds, peak RSS < 4 GB, recall and precision >= 0.99
(pairs and chains). Exit status: 0 met, 1 a target missed or a run failed, 2 not measured.

Usage: python bench/hunt.py [--flows N] [--seed S] [--repeat N] [--workdir DIR] [--keep]
                            [--steps reference,ingest,hunt] [--json OUT] [--rebuild]
       python bench/hunt.py --flows 200000      (quick)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gen_conn
from pcap import Run, hopguard_cmd, measure, tail, warm

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("reference", "ingest", "hunt")
TARGET_RATIO = 3.0
TARGET_RSS_MB = 4096.0
TARGET_RECALL = 0.99
TARGET_PRECISION = 0.99

# The fast path's read_csv settings (src/hopguard/ingest/zeek.py, _fast_tsv and _csv_type)
_CSV_TYPE = {"time": "DOUBLE", "interval": "DOUBLE", "double": "DOUBLE", "count": "BIGINT",
             "int": "BIGINT", "port": "BIGINT", "bool": "BOOLEAN"}
_REFERENCE = """\
import sys, duckdb
log, db, columns, skip = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
con = duckdb.connect(db)
con.execute(
    f"CREATE TABLE conn AS SELECT * FROM read_csv('{log}', delim='\\t', header=false, "
    f"skip={skip}, columns={columns}, quote='', escape='', nullstr='-', auto_detect=false, "
    "store_rejects=true, rejects_table='hg_rejects', rejects_scan='hg_reject_scans', "
    "compression='none', strict_mode=true, max_line_size=2097152)")
print(con.execute("SELECT count(*) FROM conn").fetchall()[0][0])
con.close()
"""


def reference_columns() -> str:
    return "{" + ", ".join(f"'{f}': '{_CSV_TYPE.get(t, 'VARCHAR')}'"
                           for f, t in zip(gen_conn.FIELDS, gen_conn.TYPES, strict=True)) + "}"


def header_lines(log: Path) -> int:
    n = 0
    with log.open("rb") as fh:
        for line in fh:
            if not line.startswith(b"#"):
                return n
            n += 1
    return n


def fresh(db: Path) -> None:
    for p in (db, db.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)


def run_reference(log: Path, work: Path, attempt: int, timeout: float | None) -> Run:
    db = work / f"reference{attempt}.duckdb"
    fresh(db)
    out = work / f"reference{attempt}.log"
    run = measure("duckdb", [sys.executable, "-c", _REFERENCE, str(log), str(db),
                             reference_columns(), str(header_lines(log))], out, timeout)
    fresh(db)
    if run.rc != 0:
        run.note = run.note or f"exit {run.rc}"
        print(f"  reference failed ({run.note}); {out}:\n{tail(out)}", flush=True)
    return run


def proxies_setting(truth: dict[str, Any]) -> str:
    return "inventory.proxies=[" + ", ".join(f'"{p}:3128"' for p in truth["proxies"]) + "]"


def run_hopguard(step: str, log: Path, truth: dict[str, Any], work: Path, attempt: int,
                 timeout: float | None) -> tuple[Run, Path]:
    db = work / f"{step}{attempt}.duckdb"
    fresh(db)
    out = work / f"{step}{attempt}.log"
    cmd = [*hopguard_cmd(), step, "--db", str(db), "--no-progress"]
    if step == "hunt":
        cmd += ["--set", proxies_setting(truth)]
    run = measure(f"hopguard {step}", [*cmd, str(log)], out, timeout)
    if run.rc != 0:
        run.note = run.note or f"exit {run.rc}"
        print(f"  hopguard {step} failed ({run.note}); {out}:\n{tail(out)}", flush=True)
    return run, db


# --------------------------------------------------------------------------- scoring

@dataclass
class Score:
    flows_stored: int = 0
    fast_path: bool | None = None
    detectors: list[str] = field(default_factory=list)
    relay_findings: int = 0
    relay_sanctioned: int = 0
    pairs_true: int = 0
    pairs_found: int = 0
    pairs_found_by_uid: int = 0
    relay_correct: int = 0
    relay_wrong: list[dict[str, Any]] = field(default_factory=list)
    decoys_reported: int = 0
    chain_findings: int = 0
    chains_true: int = 0
    chains_found: int = 0
    chains_found_reported: int = 0  # chain findings that equal a planted chain
    chain_wrong: list[list[str]] = field(default_factory=list)
    findings_by_detector: dict[str, int] = field(default_factory=dict)

    @property
    def pair_recall(self) -> float:
        return self.pairs_found / self.pairs_true if self.pairs_true else float("nan")

    @property
    def pair_precision(self) -> float:
        n = self.relay_correct + len(self.relay_wrong)
        return self.relay_correct / n if n else float("nan")

    @property
    def chain_recall(self) -> float:
        return self.chains_found / self.chains_true if self.chains_true else float("nan")

    @property
    def chain_precision(self) -> float:
        n = self.chains_found_reported + len(self.chain_wrong)
        return self.chains_found_reported / n if n else float("nan")


def _ip_key(e: dict[str, Any]) -> tuple[str, str, int, str, int]:
    return (str(e.get("client")), str(e.get("relay")), int(e.get("in_port") or -1),
            str(e.get("upstream")), int(e.get("up_port") or -1))


def score(db: Path, truth: dict[str, Any], min_relays: int) -> Score:
    import duckdb

    s = Score()
    con = duckdb.connect(str(db), read_only=True)
    try:
        got = con.execute("SELECT count(*), count(*) FILTER (WHERE record IS NULL) FROM flow"
                          ).fetchall()[0]
        s.flows_stored, s.fast_path = int(got[0]), got[0] > 0 and got[1] == got[0]
        have = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        rows = con.execute(
            "SELECT detector, entities, evidence, coalesce(sanctioned, false) FROM finding"
        ).fetchall() if "finding" in have else []
    finally:
        con.close()
    for det, *_ in rows:
        s.findings_by_detector[det] = s.findings_by_detector.get(det, 0) + 1
    s.detectors = sorted(s.findings_by_detector)

    pairs = truth["pairs"]
    s.pairs_true = len(pairs)
    by_uid = {(p["in_uid"], p["out_uid"]): p for p in pairs}
    by_key = {_ip_key(p): p for p in pairs}
    decoy_uids = {d["in_uid"] for d in truth["decoys"]} | {d["out_uid"] for d in truth["decoys"]}
    found_uid: set[tuple[str, str]] = set()
    found_key: set[tuple[str, str]] = set()
    for det, ent_s, ev_s, sanctioned in rows:
        if det != "bridge.relay":
            continue
        s.relay_findings += 1
        ent = json.loads(ent_s or "{}")
        uids = {str(e.get("uid")) for e in json.loads(ev_s or "[]") if isinstance(e, dict)}
        hits = [k for k in by_uid if k[0] in uids and k[1] in uids]
        found_uid.update(hits)
        p = by_key.get(_ip_key(ent))
        if p is not None:
            found_key.add((p["in_uid"], p["out_uid"]))
        if sanctioned:
            s.relay_sanctioned += 1
            continue
        if hits or p is not None:
            s.relay_correct += 1
        else:
            s.relay_wrong.append(ent)
            s.decoys_reported += bool(uids & decoy_uids)
    s.pairs_found_by_uid = len(found_uid)
    s.pairs_found = len(found_uid | found_key)

    planted = {tuple(c["ips"]): c for c in truth["chains"]}
    expected = {k for k, c in planted.items() if len(c["ips"]) - 2 >= min_relays}
    s.chains_true = len(expected)
    seen: set[tuple[str, ...]] = set()
    for det, ent_s, _ev, sanctioned in rows:
        if det != "chain.multihop":
            continue
        s.chain_findings += 1
        route = tuple(str(x) for x in json.loads(ent_s or "{}").get("chain", []))
        if route in planted:
            s.chains_found_reported += 1
            seen.add(route)
        elif not sanctioned:
            s.chain_wrong.append(list(route))
    s.chains_found = len(seen & expected)
    return s


# --------------------------------------------------------------------------- report

def best_of(runs: list[Run]) -> Run:
    good = [r for r in runs if r.rc == 0]
    pick = min(good or runs, key=lambda r: r.seconds)
    return Run(pick.tool, pick.seconds, max(r.rss_mb for r in runs), pick.rc, pick.note)


def fmt(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=5_000_000,
                    help="flows in the generated conn.log (quick run: 200000)")
    ap.add_argument("--seed", type=int, default=1, help="generator seed")
    ap.add_argument("--repeat", type=int, default=1, help="runs per step, best time kept")
    ap.add_argument("--workdir", type=Path,
                    default=Path(tempfile.gettempdir()) / "hopguard-bench-hunt",
                    help="where the conn.log is built and cached, and the runs happen")
    ap.add_argument("--steps", default=",".join(STEPS),
                    help="comma-separated subset of " + ",".join(STEPS))
    ap.add_argument("--chain-min-relays", type=int, default=2,
                    help="relays a planted chain needs to be expected as a chain.multihop "
                    "finding (hopguard's chain.min_relays)")
    ap.add_argument("--keep", action="store_true", help="keep the stores and logs of the runs")
    ap.add_argument("--rebuild", action="store_true", help="build the conn.log even if cached")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--timeout", type=float, help="seconds allowed per run")
    args = ap.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := set(steps) - set(STEPS):
        ap.error(f"unknown steps: {', '.join(sorted(unknown))}")
    if args.flows < 1000 or args.repeat < 1:
        ap.error("--flows must be >= 1000 and --repeat positive")

    built = gen_conn.build(args.workdir, args.flows, args.seed, args.rebuild)
    truth = json.loads(built.truth.read_text())
    how = "cached" if built.cached else f"built in {built.seconds:.1f} s"
    print(f"conn.log {built.log}: {built.flows:,} flows, {built.bytes / 1e6:,.0f} MB, "
          f"{len(truth['pairs'])} planted pairs in {len(truth['chains'])} chains, "
          f"{len(truth['decoys'])} decoys ({how})", flush=True)
    warm(built.log)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} before the runs "
          "(other work on the machine slows every run)", flush=True)

    runs: dict[str, list[Run]] = {s: [] for s in steps}
    run_dir = args.workdir / "runs"
    run_dir.mkdir(exist_ok=True)
    hunt_db: Path | None = None
    sc: Score | None = None
    ingest_fast: bool | None = None
    try:
        for attempt in range(args.repeat):
            for step in steps:
                if step == "reference":
                    run = run_reference(built.log, run_dir, attempt, args.timeout)
                else:
                    run, db = run_hopguard(step, built.log, truth, run_dir, attempt,
                                           args.timeout)
                    if run.rc == 0 and db.exists():
                        got = score(db, truth, args.chain_min_relays)
                        if step == "hunt":
                            sc, hunt_db = got, db
                        else:
                            ingest_fast = got.fast_path
                    if not (args.keep and step == "hunt" and attempt == args.repeat - 1):
                        fresh(db)
                runs[step].append(run)
                print(f"  run {attempt + 1}: {run.tool:<16} {run.seconds:8.2f} s "
                      f"{run.rss_mb:9,.1f} MB peak RSS  {'ok' if run.rc == 0 else 'FAILED'}",
                      flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    best = {s: best_of(rs) for s, rs in runs.items()}
    ref, hunt = best.get("reference"), best.get("hunt")
    ok_ref = ref is not None and ref.rc == 0
    print(f"\n{'run':<18}{'seconds':>10}{'x reference':>13}{'peak RSS MB':>14}")
    for r in best.values():
        ratio = f"{r.seconds / ref.seconds:.2f}x" if ok_ref and ref and r.rc == 0 else "-"
        print(f"{r.tool:<18}{r.seconds:>10.2f}{ratio:>13}{r.rss_mb:>14,.1f}"
              + (f"  ({r.note})" if r.note else ""))
    if ingest_fast is not None:
        print(f"ingest took the Zeek fast path (DuckDB read_csv): {'yes' if ingest_fast else 'NO'}")

    goals: dict[str, bool | None] = {
        "time_ratio": None, "peak_rss": None, "pair_recall": None, "pair_precision": None,
        "chain_recall": None, "chain_precision": None}
    figures: dict[str, float] = {}
    if hunt is not None and hunt.rc == 0:
        goals["peak_rss"] = hunt.rss_mb < TARGET_RSS_MB
        if ok_ref and ref is not None:
            figures["ratio"] = hunt.seconds / ref.seconds
            goals["time_ratio"] = figures["ratio"] <= TARGET_RATIO
    if sc is not None:
        print(f"\nhunt store: {sc.flows_stored:,} flows (fast path: "
              f"{'yes' if sc.fast_path else 'NO'}); findings by detector: "
              + (", ".join(f"{d} {n}" for d, n in sorted(sc.findings_by_detector.items()))
                 or "none"))
        print(f"bridge.relay: {sc.relay_findings} findings ({sc.relay_sanctioned} sanctioned), "
              f"{sc.pairs_found}/{sc.pairs_true} planted pairs found "
              f"({sc.pairs_found_by_uid} by evidence uids), {sc.relay_correct} correct, "
              f"{len(sc.relay_wrong)} wrong ({sc.decoys_reported} of them decoys)")
        for e in sc.relay_wrong[:10]:
            print(f"    wrong: {e}")
        print(f"chain.multihop: {sc.chain_findings} findings, {sc.chains_found}/{sc.chains_true} "
              f"planted chains with >= {args.chain_min_relays} relays found, "
              f"{len(sc.chain_wrong)} wrong")
        for c in sc.chain_wrong[:10]:
            print(f"    wrong: {' > '.join(c)}")
        detectors_present = {"bridge.relay", "chain.multihop"} <= set(sc.detectors)
        figures.update(pair_recall=sc.pair_recall, pair_precision=sc.pair_precision,
                       chain_recall=sc.chain_recall, chain_precision=sc.chain_precision)
        for name, target in (("pair_recall", TARGET_RECALL),
                             ("pair_precision", TARGET_PRECISION),
                             ("chain_recall", TARGET_RECALL),
                             ("chain_precision", TARGET_PRECISION)):
            v = figures[name]
            goals[name] = None if v != v and not detectors_present else (v == v and v >= target)

    print(f"\n{'target':<34}{'measured':>12}  verdict")
    rows = [("hunt / reference seconds <= 3x", figures.get("ratio", float("nan")),
             "time_ratio"),
            ("hunt peak RSS < 4 GB (MB)", hunt.rss_mb if hunt else float("nan"), "peak_rss"),
            ("pair recall >= 0.99", figures.get("pair_recall", float("nan")), "pair_recall"),
            ("pair precision >= 0.99", figures.get("pair_precision", float("nan")),
             "pair_precision"),
            ("chain recall >= 0.99", figures.get("chain_recall", float("nan")), "chain_recall"),
            ("chain precision >= 0.99", figures.get("chain_precision", float("nan")),
             "chain_precision")]
    for label, value, key in rows:
        g = goals[key]
        print(f"{label:<34}{fmt(value) if key != 'peak_rss' else f'{value:,.0f}':>12}  "
              f"{'not measured' if g is None else 'met' if g else 'NOT MET'}")

    if args.json:
        args.json.write_text(json.dumps({
            "conn_log": {**asdict(built), "log": str(built.log), "truth": str(built.truth)},
            "runs": {s: [asdict(r) for r in rs] for s, rs in runs.items()},
            "best": {s: asdict(r) for s, r in best.items()},
            "ingest_fast_path": ingest_fast,
            "score": None if sc is None else {
                **asdict(sc), "pair_recall": sc.pair_recall,
                "pair_precision": sc.pair_precision, "chain_recall": sc.chain_recall,
                "chain_precision": sc.chain_precision},
            "figures": figures, "goals": goals,
            "load_before": load[0], "load_after": os.getloadavg()[0],
            "kept_store": str(hunt_db) if args.keep and hunt_db else None,
        }, indent=2, default=str))
    if any(r.rc != 0 for r in best.values()):
        print("A RUN FAILED")
        return 1
    if any(g is False for g in goals.values()):
        print("TARGETS NOT MET")
        return 1
    if None in goals.values():
        print("targets not fully measured (see --steps and the notes above)")
        return 2
    print("targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
