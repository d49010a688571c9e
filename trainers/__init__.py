"""nnU-Net trainers of nnunet-losses; the folder that nnUNet_extTrainer points at."""
