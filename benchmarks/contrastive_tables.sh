#!/usr/bin/env bash
# The Seq-FashionMNIST tables of FNC2 + HSD and Co2L, from finished runs under runs/seq-fmnist. Run them first:
#   OUT=runs/seq-fmnist ALL_CLASSIFIERS=1 benchmarks/run_seq_fmnist.sh /tmp/t.md configs/seq-fmnist/{fnc2,co2l,fnc2-200,fnc2-500,co2l-200,co2l-500}.yaml
#   OUT=runs/seq-fmnist SEEDS=1 ALL_CLASSIFIERS=1 benchmarks/run_seq_fmnist.sh /tmp/t.md configs/seq-fmnist/ablations/fnc2-{gamma0,gamma2,linear,constant,cosine,ird,no-old-negatives,long}.yaml
# (finished runs are reused), then:
#   benchmarks/contrastive_tables.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/seq-fmnist}
S=configs/seq-fmnist
A=$S/ablations
$PY benchmarks/summarize_runs.py "$RUNS" $S/{fnc2,co2l,fnc2-200,co2l-200,fnc2-500,co2l-500}.yaml \
  --all-classifiers > benchmarks/seq_fmnist_contrastive.md
$PY benchmarks/summarize_runs.py "$RUNS" $S/fnc2.yaml $A/fnc2-{gamma0,gamma2,linear,constant,cosine,ird,no-old-negatives,long}.yaml --seeds 0 \
  --all-classifiers > benchmarks/seq_fmnist_fnc2_ablations.md
$PY benchmarks/contrastive_targets.py "$RUNS" > benchmarks/contrastive_targets.md
wc -l benchmarks/seq_fmnist_contrastive.md benchmarks/seq_fmnist_fnc2_ablations.md benchmarks/contrastive_targets.md
