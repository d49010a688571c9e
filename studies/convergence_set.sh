# The data of the convergence studies, sourced by their run.sh: `source studies/convergence_set.sh WORKDIR`.
# Points nnU-Net at WORKDIR (nnUNet_raw/_preprocessed/_results) and the package trainers, and makes what is missing:
# the ACDC-like synthetic set (Dataset027, 20 cases of 10x64x64), nnU-Net's 2d planning and preprocessing, the small
# plans (features 8-64, batch 8) and the maps. Every step keeps what is already there.
work="$1"
export nnUNet_raw="$work/nnUNet_raw" nnUNet_preprocessed="$work/nnUNet_preprocessed" nnUNet_results="$work/nnUNet_results"
export nnUNet_extTrainer="$(nnunet-losses trainers-path)"
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
python - <<'PY'
import os
from nnunet_losses.synthetic import write_raw_dataset
write_raw_dataset("cardiac", os.environ["nnUNet_raw"], 27, 20, seed=0, shape=(10, 64, 64))
PY
[ -d "$nnUNet_preprocessed/Dataset027_SyntheticCardiac/nnUNetPlans_2d" ] || nnUNetv2_plan_and_preprocess -d 27 -c 2d -np 2
nnunet-losses small-plans -d 27 -c 2d --features 8 16 32 64 --batch-size 8
nnunet-losses setup-maps -d 27 -c 2d -p nnUNetSmallPlans --quiet
