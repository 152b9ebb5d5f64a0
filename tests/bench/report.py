"""`make bench`: every benchmark in turn, then one table of all their figures, written
as JSON too (build/bench/results.json). Each figure is read against a baseline measured
in the same run, or against an absolute goal where the issue sets one.

Run: `python -m tests.bench.report [--only NAME ...] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from tests.bench.bench_cluster import Row, print_table
from tests.support.cluster import REPO_ROOT

OUT = REPO_ROOT / "build" / "bench"
# Each benchmark, and its arguments for a full run and for --quick.
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "bench_reconcile": ([], []),
    "bench_cluster": ([], ["--rounds", "1", "--idle-seconds", "20", "--wide-replicas", "0"]),
    "bench_fleet": ([], ["--nodes", "100", "--models", "20"]),
    "bench_cachefill": ([], ["--file-gib", "0.25", "--repeats", "1", "--rate-mib", "0"]),
    "bench_admission": ([], ["--edits", "10", "--blocks", "1"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.report")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), default=None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    failed = []
    for name in args.only or BENCHES:
        full, quick = BENCHES[name]
        path = OUT / f"{name}.json"
        path.unlink(missing_ok=True)
        print(f"== {name}", flush=True)
        command = [sys.executable, "-m", f"tests.bench.{name}", "--json", str(path)]
        result = subprocess.run([*command, *(quick if args.quick else full)], check=False)
        if result.returncode != 0 or not path.exists():
            failed.append(name)
            continue
        rows += [Row(**{k: v for k, v in r.items() if k not in {"ratio", "met"}})
                 for r in json.loads(path.read_text())]  # fmt: skip
    print()
    print_table(rows)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    results = {
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "rows": [r.as_json() for r in rows],
        "failed": failed,
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {OUT / 'results.json'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
