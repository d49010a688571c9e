"""The study's Adam variants at lr 1e-3 (ten times the RW paper's 1e-4), for the learning-speed curves."""
from nnunet_losses.trainers.losses_control import nnUNetTrainerDiceCEAdam
from nnunet_losses.trainers.losses_region_wise import nnUNetTrainerRRWAdam


class nnUNetTrainerDiceCEAdam1e3(nnUNetTrainerDiceCEAdam):
    """nnU-Net's Dice + CE with Adam, lr 1e-3."""

    adam_learning_rate = 1e-3


class nnUNetTrainerRRWAdam1e3(nnUNetTrainerRRWAdam):
    """RW loss with RRW maps with Adam, lr 1e-3."""

    adam_learning_rate = 1e-3
