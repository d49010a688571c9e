#!/usr/bin/env bash
# Learning-speed curves (issue: why RRW learns slowly at CPU scale): nnU-Net's Dice+CE vs RW loss with RRW maps,
# under nnU-Net's SGD (lr 0.01), the RW paper's Adam (lr 1e-4) and Adam at lr 1e-3, one seed each, same set and
# budget as studies/convergence_cdf (20 ACDC-like cases of 10x64x64, 2d small plans, 60 epochs x 25 iterations).
#   bash studies/rrw_learning_speed/run.sh [WORKDIR]      # resumable: finished runs are skipped
# Writes cdf_results.csv (final validation Dice), curves.csv (nnU-Net's per-epoch pseudo Dice) and curves.png here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../convergence_set.sh" "${1:-/tmp/nnunet_losses_cdf}"
nnunet-losses study cdf -d 27 -c 2d -p nnUNetSmallPlans --seeds 1 --epochs 60 --iterations 25 --val-iterations 5 --device cpu --parallel 2 \
  --trainers nnUNetTrainerDiceCE nnUNetTrainerRRW nnUNetTrainerDiceCEAdam nnUNetTrainerRRWAdam nnUNetTrainerDiceCEAdam1e3 nnUNetTrainerRRWAdam1e3 \
  --out "$here"
python "$here/curves.py" "$here"
