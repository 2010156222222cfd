"""Do short runs of every method family give the same results.json as before a change? (a refactor moves no number)

Runs each config below briefly (5 % of Fashion-MNIST, one epoch per task, one thread, seed 0) in a temporary folder,
drops what legitimately changes between two runs of the same code (``timings``, ``environment``, ``code``, ``command``,
wall-clock ``time`` columns), and prints one SHA-256 per run of the rest, canonical JSON with sorted keys. The config
counts through its recorded ``fingerprint`` (every key that changes a number; a key added later at its default keeps
earlier fingerprints), not through the written-out ``config``, which gains every new key. Run it
before a change with ``--save FILE``, after it with ``--check FILE``: every digest must be equal (same machine — floats
are not bit-equal across CPUs — and same torch). ``--keep DIR`` keeps the runs for a diff.

    python benchmarks/qa/results_digest.py --save /tmp/before.json      # on the old commit
    python benchmarks/qa/results_digest.py --check /tmp/before.json     # on the new one: exit 1 on any difference
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [
    "configs/seq-fmnist/er-200.yaml",
    "configs/seq-fmnist/derpp-200.yaml",
    "configs/seq-fmnist/co2l.yaml",
    "configs/seq-fmnist/fnc2.yaml",
    "configs/seq-fmnist/fnc2-200.yaml",
    "configs/seq-fmnist/nct.yaml",
    "configs/ssl/moco-class-il.yaml",
    "configs/ssl/cassle-class-il.yaml",
    "configs/ssl/sycon-class-il.yaml",
    "configs/nc/clop-1.yaml",
]
SHORT = ["data.train_fraction=0.05", "train.epochs=1", "train.first_task_epochs=null", "fabric.threads=1", "seed=0"]
VOLATILE = ("timings", "environment", "code", "command", "config")


def canonical(run: Path) -> dict:
    record = json.loads((run / "results.json").read_text())
    for key in VOLATILE:
        record.pop(key, None)
    rows = list(csv.reader((run / "metrics.csv").open()))
    header = rows[0]
    keep = [i for i, name in enumerate(header) if name != "time"]
    volatile_names = {"img_per_s"}
    metrics = [[r[i] for i in keep] for r in rows if r[header.index("name")] not in volatile_names]
    return {"results": record, "metrics": metrics}


def digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", type=Path, help="write the digests to this JSON file")
    mode.add_argument("--check", type=Path, help="compare with the digests in this JSON file (exit 1 on a difference)")
    p.add_argument("--keep", type=Path, help="keep the runs in this folder (default: a temporary one)")
    p.add_argument("--only", nargs="*", help="config stems to run (default: all)")
    p.add_argument("--runs", type=Path, help="digest the runs already in this folder (a --keep of an earlier call)")
    args = p.parse_args(argv)
    configs = [c for c in CONFIGS if not args.only or Path(c).stem in args.only]
    out = args.keep or Path(tempfile.mkdtemp(prefix="results-digest-"))
    digests = {}
    for config in configs:
        name = f"{Path(config).parent.name}-{Path(config).stem}"
        if args.runs is not None:
            digests[name] = digest(canonical(args.runs / name))
            print(f"{name:28s} {digests[name][:16]}", flush=True)
            continue
        cmd = [
            sys.executable,
            "-m",
            "protosphere.cli",
            "run",
            str(REPO / config),
            *SHORT,
            f"name={name}",
            f"output_dir={out}",
            "--no-progress",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if result.returncode != 0:
            print(f"{name}: the run failed (exit {result.returncode}):\n{result.stderr[-2000:]}", file=sys.stderr)
            return 2
        digests[name] = digest(canonical(out / name))
        print(f"{name:28s} {digests[name][:16]}", flush=True)
    if args.save:
        args.save.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(digests)} digests to {args.save}")
        return 0
    before = json.loads(args.check.read_text())
    differ = [n for n in digests if before.get(n) != digests[n]]
    missing = [n for n in digests if n not in before]
    for n in differ:
        print(
            f"DIFFERS: {n} ({'not in ' + str(args.check) if n in missing else 'results or metrics changed'}; "
            f"rerun with --keep DIR and diff its results.json against the old code's)"
        )
    print(f"{len(digests) - len(differ)}/{len(digests)} runs equal to {args.check}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
