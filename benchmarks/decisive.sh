#!/usr/bin/env bash
# Tables (b)-(g) in regime 2, in PLAN.md's order; needs table (a) first (python benchmarks/study_converged.py:
# M_d and M_s come from benchmarks/results/study_converged.json). Resumable: finished runs are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1  # two one-thread workers
$PY benchmarks/decisive.py --tables e --sizes 0.1,0.05      # (e) at both sizes,
$PY benchmarks/decisive.py --tables b,c,d --sizes 0.05      # then (b)-(d) at 5% ((b) is skipped when M_d = M_s),
$PY benchmarks/decisive.py --tables b,c,d --sizes 0.1       # then at 10%
$PY benchmarks/decisive.py --tables f --sizes 0.1,0.05      # exploratory, after (c)-(e) (PLAN.md, table (f))
$PY benchmarks/study_converged.py --seeds 3,4,5 --gate-only  # new seeds' dense models, then the confirmation:
$PY benchmarks/decisive.py --tables g --sizes 0.1,0.05      # the two best at 5% (seeds 0-2) judged on seeds 3-5
$PY benchmarks/decisive.py --summary-only --sizes 0.1,0.05
