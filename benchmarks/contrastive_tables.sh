#!/usr/bin/env bash
# The Seq-FashionMNIST tables of the contrastive continual methods, from finished runs under runs/seq-fmnist
# (run them first: benchmarks/run_seq_fmnist.sh ... for the configs named below; finished runs are reused).
#   benchmarks/contrastive_tables.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/seq-fmnist}
S=configs/seq-fmnist
A=$S/ablations
$PY benchmarks/summarize_runs.py "$RUNS" $S/{co2l,co2l-200,co2l-500,fnc2,fnc2-200,fnc2-500,nct,nct-200}.yaml \
  --all-classifiers > benchmarks/seq_fmnist_contrastive.md
$PY benchmarks/summarize_runs.py "$RUNS" $S/{finetune,er-200,derpp-200,derpp-500,lwf,joint}-e5.yaml \
  > benchmarks/seq_fmnist_baselines_e5.md
$PY benchmarks/summarize_runs.py "$RUNS" $S/fnc2.yaml $A/fnc2-{gamma0,gamma1,no-old-negatives,ird,prd,cosine,constant}.yaml \
  --seeds 0 --all-classifiers > benchmarks/seq_fmnist_fnc2_ablations.md
$PY benchmarks/summarize_runs.py "$RUNS" $A/nct-distill{1,5,10,20,50}.yaml --all-classifiers \
  > benchmarks/seq_fmnist_nct_distill.md
$PY benchmarks/contrastive_targets.py "$RUNS" > benchmarks/contrastive_targets.md
wc -l benchmarks/seq_fmnist_contrastive.md benchmarks/seq_fmnist_baselines_e5.md benchmarks/seq_fmnist_fnc2_ablations.md \
  benchmarks/seq_fmnist_nct_distill.md benchmarks/contrastive_targets.md
