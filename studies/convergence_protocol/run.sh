#!/usr/bin/env bash
# The CPU-scale convergence protocol (RW paper Fig. 5 and Fig. 6c, at 2-core scale), with nnU-Net's Dice+CE as control.
# 20 ACDC-like synthetic cases of 10x64x64, 2d small plans (8-64 features, batch 8), Adam lr 1e-3
# (trainers/losses_adam_1e3.py), 40 epochs x 25 iterations, fold 0:
#   control Dice+CE 20 seeds; RRW and RW-Boundary alone 50 seeds each (Fig. 5's count); RRW with maps of the
#   augmented patch (on the fly, the RW reference code's per-patch normalisation) 20 seeds; the 8 combinations of
#   Fig. 6 (Dice/CE x equal/gradual x RRW/RW-Boundary) 5 seeds each: 180 runs of about 3 minutes, 2 at a time.
#   bash studies/convergence_protocol/run.sh [WORKDIR]    # resumable: finished runs are skipped
# Writes cdf_results.csv, cdf_summary.md/.csv (fraction of runs within 0.05 of the control's median), cdf.png and
# cdf_panels.png (Fig. 5's maps, the normalisation arm, and Fig. 6c's layout: one panel per map, the map alone, its
# four combinations; the control in each) here. Each finished run leaves runs/<trainer>/<run>/result.json, which is
# committed: a fresh clone resumes the study without training the finished runs again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../convergence_set.sh" "${1:-/tmp/nnunet_losses_cdf}"
combinations=()
panels=()
for map in RRW RWBoundary; do
  panel="nnUNetTrainer${map}Adam1e3"
  for regional in Dice CE; do for strategy in Equal Gradual; do
    combinations+=("nnUNetTrainer${map}${regional}${strategy}Adam1e3:5")
    panel+=",nnUNetTrainer${map}${regional}${strategy}Adam1e3"
  done; done
  panels+=(--panel "${map/RWBoundary/RW-Boundary} maps=${panel}")
done
nnunet-losses study cdf -d 27 -c 2d -p nnUNetSmallPlans --epochs 40 --iterations 25 --val-iterations 5 --device cpu --parallel 2 \
  --trainers nnUNetTrainerDiceCEAdam1e3:20 nnUNetTrainerRRWAdam1e3:50 nnUNetTrainerRWBoundaryAdam1e3:50 "${combinations[@]}" \
  nnUNetTrainerRRWOnTheFlyAdam1e3:20 --seeds 5 --control nnUNetTrainerDiceCEAdam1e3 \
  --panel "Fig. 5: the maps alone=nnUNetTrainerRRWAdam1e3,nnUNetTrainerRWBoundaryAdam1e3" \
  --panel "RRW normalisation: whole case vs patch=nnUNetTrainerRRWAdam1e3,nnUNetTrainerRRWOnTheFlyAdam1e3" \
  "${panels[@]}" --out "$here"
