#!/usr/bin/env bash
# The 12 runs of the authors' own code on protosphere's Seq-FashionMNIST work: samix FNC2 + HSD and Co2L, buffer 0 and
# 200, seeds 0 1 2 — two at a time (JOBS), one thread each. A run whose OUT/<code>-<config>-seed<S>.json exists is
# skipped, so an interrupted batch resumes where it stopped. Logs: OUT/logs/<name>.log.
#
#   bash benchmarks/authors/run_all.sh [OUT]        (default OUT: runs/authors)
#   env: AUTHORS_PYTHON (/work/authors/venv/bin/python), SAMIX (/work/authors/samix), CO2L (/work/authors/Co2L), JOBS (2),
#        EXTRA (more harness flags, e.g. "--probe-tasks last": probe the final model only, not after every task)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export OUT=${1:-runs/authors} HERE
export PY=${AUTHORS_PYTHON:-/work/authors/venv/bin/python} EXTRA=${EXTRA:-}
SAMIX=${SAMIX:-/work/authors/samix}
CO2L=${CO2L:-/work/authors/Co2L}
JOBS=${JOBS:-2}
mkdir -p "$OUT/logs"

runs() {  # one line per run: name script args...
  for seed in 0 1 2; do
    for buffer in 0 200; do
      suffix=""; [ "$buffer" = 200 ] && suffix="-200"
      echo "samix-fnc2$suffix-seed$seed samix_fnc2.py --samix $SAMIX --seed $seed --buffer $buffer"
      echo "co2l-co2l$suffix-seed$seed co2l.py --co2l $CO2L --seed $seed --buffer $buffer"
    done
  done
}

run_one() {
  local name=$1 script=$2; shift 2
  if [ -f "$OUT/$name.json" ]; then echo "skip  $name ($OUT/$name.json exists)"; return 0; fi
  echo "start $name  $(date +%T)"
  if OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" "$HERE/$script" "$@" $EXTRA --out "$OUT" > "$OUT/logs/$name.log" 2>&1; then
    echo "done  $name  $(date +%T)"
  else
    echo "FAILED $name (see $OUT/logs/$name.log)"; return 1
  fi
}
export -f run_one

runs | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
status=$?
echo "finished: $(ls "$OUT"/*.json 2>/dev/null | wc -l) result files in $OUT"
exit $status
