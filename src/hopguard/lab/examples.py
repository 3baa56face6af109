"""``make lab-data``: regenerate the curated lab outputs shipped in examples/lab/.

Each chosen scenario runs briefly with a fixed seed; its audit.log, nft-monitor.log and
truth.json are kept as they are and its capture is kept gzipped (hopguard reads .gz
transparently). Needs root, like every lab run.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
from pathlib import Path

from hopguard.lab.run import run_scenario
from hopguard.lab.scenarios import SCENARIOS

CURATED = ("socat-relay", "nft-dnat", "socks-servers", "three-hop-chain", "domain-fronting",
           "tor-relay")


def regenerate(dest: Path, names: tuple[str, ...] = CURATED, duration: float = 6.0) -> list[str]:
    done = []
    for name in names:
        if name not in SCENARIOS:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            run_scenario(name, out, seed=2026, duration=duration, bulk_bytes=100_000)
            target = dest / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for f in ("audit.log", "nft-monitor.log", "truth.json", "hopguard.toml",
                      "edge-eve.json"):
                if (out / f).exists():  # edge-eve.json: the CDN edge's log (domain fronting)
                    shutil.copy(out / f, target / f)
            if (out / "intel").is_dir():  # feeds the run wrote (tor-relay's consensus)
                shutil.copytree(out / "intel", target / "intel")
            with (out / "capture.pcap").open("rb") as src, \
                    gzip.open(target / "capture.pcap.gz", "wb", compresslevel=9) as dst:
                shutil.copyfileobj(src, dst)
        done.append(name)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--dest", type=Path, default=Path("examples/lab"))
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--only", action="append", choices=CURATED,
                    help="Regenerate only this scenario (repeatable).")
    args = ap.parse_args()
    names = tuple(args.only) if args.only else CURATED
    for name in regenerate(args.dest, names, duration=args.duration):
        print(f"{args.dest / name}: regenerated")


if __name__ == "__main__":
    main()
