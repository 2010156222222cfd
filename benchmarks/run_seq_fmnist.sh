#!/usr/bin/env bash
# Runs a set of Seq-FashionMNIST configs over seeds 0..SEEDS-1, JOBS single-threaded runs at a time (EXTRA: more
# key=value overrides for every run; ALL_CLASSIFIERS=1: a row per classifier), then writes the
# mean ± std table (WALL_SECONDS=1: wall time per run in seconds). Finished runs (results.json present) are reused.
#   benchmarks/run_seq_fmnist.sh OUT_TABLE.md CONFIG.yaml [CONFIG.yaml ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/seq-fmnist}
SEEDS=${SEEDS:-3}
JOBS=${JOBS:-2}
table=$1; shift
mkdir -p "$OUT"
for seed in $(seq 0 $((SEEDS - 1))); do
  for cfg in "$@"; do echo "$cfg $seed"; done
done | xargs -P "$JOBS" -n 2 sh -c '
  name=$(basename "$0" .yaml)-seed$1
  [ -f "'"$OUT"'/$name/results.json" ] && exit 0
  OMP_NUM_THREADS=1 '"$PY"' -m protosphere.cli run "$0" seed=$1 output_dir='"$OUT"' fabric.threads=1 '"${EXTRA:-}"' \
    --overwrite --no-progress > "'"$OUT"'/$name.log" 2>&1 || { echo "FAILED: $name (see '"$OUT"'/$name.log)"; exit 1; }
  echo "done: $name"'
$PY benchmarks/summarize_runs.py "$OUT" "$@" ${ALL_CLASSIFIERS:+--all-classifiers} ${WALL_SECONDS:+--seconds} > "$table"
cat "$table"
