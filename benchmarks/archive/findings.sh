#!/usr/bin/env bash
# Superseded (2026-11-29) by the gated regime of benchmarks/PLAN.md; kept so its results can be rerun.
# The runs behind the "Earlier runs" section of benchmarks/RESULTS.md: every variant is the quickstart recipe with 8,000 training
# images (data.train_subset=8000), 3 seeds, and the dense model of each seed shared by all variants (the
# `constant` run trains it). Runs land in benchmarks/archive/runs/findings/ and are reused across the commands, so
# rerunning this script only computes what is missing. About 40 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: leaves a core to benchmarks/archive/study_grid.py
common=(--recipe quickstart.yaml --seeds 0 1 2 --share-dense --group findings --set data.train_subset=8000
        --set augment.policy=randaugment)  # the default when these ran; quickstart and the default are now crop + flip
constant=(--variant constant augment.schedule.kind=constant)
linear=(--variant linear augment.schedule.kind=linear)

$PY benchmarks/archive/variants.py --name schedule_constant_vs_linear "${common[@]}" "${constant[@]}" "${linear[@]}"
$PY benchmarks/archive/variants.py --name aux_plain_rep_heads "${common[@]}" "${constant[@]}" "${linear[@]}" \
  --variant rep augment.schedule.kind=linear aux.kind=rep \
  --variant heads augment.schedule.kind=linear aux.kind=heads
$PY benchmarks/archive/variants.py --name teacher_criteria "${common[@]}" "${constant[@]}" "${linear[@]}" \
  --variant linear_kd augment.schedule.kind=linear teacher.kd_weight=0.5 \
  --variant teacher_weight augment.schedule.kind=teacher teacher.difficulty.mode=weight \
  --variant abc augment.schedule.kind=teacher teacher.difficulty.mode=weight teacher.kd_weight=0.5 aux.kind=rep
$PY benchmarks/archive/variants.py --name full_vs_tp_baseline "${common[@]}" "${constant[@]}" \
  --variant tp_baseline augment.schedule.kind=constant augment.policy=none augment.erasing=false \
  --variant abc augment.schedule.kind=teacher teacher.difficulty.mode=weight teacher.kd_weight=0.5 aux.kind=rep
