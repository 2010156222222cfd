#!/usr/bin/env bash
# CLOP vs its partner loss alone (λ = 0: supervised NT-Xent, i.e. SupCon over two views) on Fashion-MNIST: a grid of
# learning rates × batch sizes at 10 % and 100 % labels, one short run per cell (small CNN, SGD, cosine schedule,
# no warm-up), JOBS single-threaded runs at a time; finished cells (results.json) are reused. Then the table:
#   benchmarks/clop_grid.sh OUT_TABLE.md
# Environment: OUT (runs/clop-grid), LRS ("0.05 0.2 0.5 1.5 5"), BATCHES ("32 128 512"), FRACTIONS ("0.1 1.0"),
# LAMS ("1.0 0.0"), EPOCHS (1), TRAIN_FRACTION (0.2 of the 60k training images), SEED (0), JOBS (2),
# PROBE_MIN_STEPS (1000: the probe on 10 % labels has ~1,200 rows).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/clop-grid}
table=${1:?usage: benchmarks/clop_grid.sh OUT_TABLE.md}
mkdir -p "$OUT"
for f in ${FRACTIONS:-0.1 1.0}; do for lam in ${LAMS:-1.0 0.0}; do for b in ${BATCHES:-32 128 512}; do
  for lr in ${LRS:-0.05 0.2 0.5 1.5 5}; do echo "$f $lam $b $lr"; done; done; done; done |
xargs -P "${JOBS:-2}" -n 4 sh -c '
  name=clop-f$0-lam$1-b$2-lr$3
  [ -f "'"$OUT"'/$name/results.json" ] && exit 0
  OMP_NUM_THREADS=1 '"$PY"' -m protosphere.cli run configs/nc/clop-10.yaml name=$name output_dir='"$OUT"' \
    seed='"${SEED:-0}"' method.label_fraction=$0 method.lam=$1 method.probe_min_steps=${PROBE_MIN_STEPS:-1000} train.batch_size=$2 optimizer.lr=$3 \
    train.epochs='"${EPOCHS:-1}"' data.train_fraction='"${TRAIN_FRACTION:-0.2}"' fabric.threads=1 \
    --overwrite --no-progress > "'"$OUT"'/$name.log" 2>&1
  echo "$name: exit $?"'
$PY benchmarks/summarize_clop_grid.py "$OUT" > "$table"
cat "$table"
