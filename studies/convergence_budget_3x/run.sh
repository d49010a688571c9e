#!/usr/bin/env bash
# The budget test of the convergence protocol: the same data, plans and optimiser as studies/convergence_protocol
# (20 ACDC-like synthetic cases of 10x64x64, 2d small plans, Adam lr 1e-3), at 3x its budget: 120 epochs x 25
# iterations (3000 iterations), fold 0; control Dice+CE, RRW and RW-Boundary alone, 10 seeds each: 30 runs of about
# 9 minutes, 2 at a time. The convergence threshold is this budget's own control median - 0.05.
#   bash studies/convergence_budget_3x/run.sh [WORKDIR]    # resumable: finished runs are skipped
# Writes cdf_results.csv, cdf_summary.md/.csv, cdf.png and cdf_panels.png (Fig. 5's layout: RRW, RW-Boundary and the
# control) here; each finished run leaves runs/<trainer>/<run>/result.json, which is committed. Then the budget test
# against studies/convergence_protocol (1000 iterations): budget_summary.md/.csv and budget.png (converged fraction
# against budget, exact intervals, Fisher exact test), from the two studies' committed CSVs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../convergence_set.sh" "${1:-/tmp/nnunet_losses_cdf}"
nnunet-losses study cdf -d 27 -c 2d -p nnUNetSmallPlans --epochs 120 --iterations 25 --val-iterations 5 --device cpu --parallel 2 \
  --trainers nnUNetTrainerDiceCEAdam1e3 nnUNetTrainerRRWAdam1e3 nnUNetTrainerRWBoundaryAdam1e3 --seeds 10 \
  --control nnUNetTrainerDiceCEAdam1e3 \
  --panel "Fig. 5 at 3x the budget=nnUNetTrainerRRWAdam1e3,nnUNetTrainerRWBoundaryAdam1e3" --out "$here"
nnunet-losses study budget "$here/../convergence_protocol" "$here" --control nnUNetTrainerDiceCEAdam1e3 \
  --trainers nnUNetTrainerRRWAdam1e3 nnUNetTrainerRWBoundaryAdam1e3 --out "$here"
