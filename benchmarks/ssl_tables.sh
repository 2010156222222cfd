#!/usr/bin/env bash
# The Seq-FashionMNIST tables of the continual self-supervised methods, from finished runs under runs/ssl. Run them
# first, e.g. on the short CPU protocol (1 epoch per task):
#   OUT=runs/ssl EXTRA="train.epochs=1" benchmarks/run_seq_fmnist.sh /tmp/ssl.md configs/ssl/{simclr,moco,cassle,sycon}-class-il.yaml
# likewise -data-il; -domain-il with EXTRA="train.epochs=1 data.train_fraction=0.2" (12,000 images per rotation, the
# size of a class-IL task, so every scenario trains the same number of steps); SEEDS=1 for the
# sycon-queue-*/sycon-predictor-* ablations (sycon-class-il is their 4k-queue / 2048-wide reference); then
#   benchmarks/ssl_tables.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/ssl}
S=configs/ssl
for scenario in class-il data-il domain-il; do
  $PY benchmarks/summarize_runs.py "$RUNS" $S/{simclr,moco,cassle,sycon}-$scenario.yaml --all-classifiers
  echo
done > benchmarks/seq_fmnist_ssl.md
$PY benchmarks/summarize_runs.py "$RUNS" $S/{simclr,cassle-simclr,sycon-simclr}-class-il.yaml --all-classifiers \
  > benchmarks/seq_fmnist_ssl_simclr_base.md
$PY benchmarks/summarize_runs.py "$RUNS" $S/sycon-queue-{1k,16k,65k}.yaml $S/sycon-class-il.yaml \
  $S/sycon-predictor-{256,1024,4096}.yaml --seeds 0 > benchmarks/seq_fmnist_ssl_ablations.md
$PY benchmarks/ssl_targets.py "$RUNS" > benchmarks/ssl_targets.md
# the configs' own 5-epoch schedule, where it was run (OUT=runs/ssl-e5 SEEDS=1 benchmarks/run_seq_fmnist.sh ...)
if [ -d "${RUNS_E5:-runs/ssl-e5}" ]; then
  $PY benchmarks/summarize_runs.py "${RUNS_E5:-runs/ssl-e5}" $S/{moco,cassle,sycon}-class-il.yaml --all-classifiers \
    > benchmarks/seq_fmnist_ssl_e5.md
fi
wc -l benchmarks/seq_fmnist_ssl*.md benchmarks/ssl_targets.md
