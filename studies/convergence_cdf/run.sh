#!/usr/bin/env bash
# The convergence studies of studies/ (RW paper §4.3, Fig. 5) on the ACDC-like synthetic set:
#   studies/convergence_cdf       nnUNetTrainerRWBoundary vs nnUNetTrainerRRW (nnU-Net's SGD, lr 0.01), 10 seeds
#   studies/convergence_cdf_adam  nnUNetTrainerRWBoundaryAdam vs nnUNetTrainerRRWAdam (the paper's Adam, lr 1e-4), 10 seeds
#   bash studies/convergence_cdf/run.sh [WORKDIR]     # nnU-Net folders go to WORKDIR (default /tmp/nnunet_losses_cdf)
# Re-running resumes: finished runs are skipped. Each study folder keeps runs/ (checkpoints,
# not committed) and cdf_results.csv, cdf.png/pdf and study.json (committed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../convergence_set.sh" "${1:-/tmp/nnunet_losses_cdf}"
budget=(--epochs 60 --iterations 25 --val-iterations 5 --device cpu --parallel 2)
nnunet-losses study cdf -d 27 -c 2d -p nnUNetSmallPlans --trainers nnUNetTrainerRWBoundary nnUNetTrainerRRW --seeds 10 "${budget[@]}" --out "$here"
nnunet-losses study cdf -d 27 -c 2d -p nnUNetSmallPlans --trainers nnUNetTrainerRWBoundaryAdam nnUNetTrainerRRWAdam --seeds 10 "${budget[@]}" --out "$here/../convergence_cdf_adam"
