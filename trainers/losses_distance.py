"""Distance-based trainers: Karimi's one-sided Hausdorff loss (with nnU-Net's Dice, which
Karimi & Salcudean do not specify further) and Wong et al.'s centroid distance loss (its own
per-sample Dice, as the paper defines it)."""
from nnunet_losses.losses import CentroidDistanceLoss, OneSidedHausdorffLoss
from nnunet_losses.nnunet.nnunet_dice import nnunet_dice
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.schedules import TemporalWeighting


class nnUNetTrainerOneSidedHD(nnUNetTrainerLosses):
    """nnU-Net's Dice + one-sided HD (alpha = 2), balanced every epoch to contribute equally, as Karimi et al. do."""

    def loss_terms(self):
        return {"dice": nnunet_dice(self), "hd": OneSidedHausdorffLoss()}

    def loss_weights(self, names):
        return TemporalWeighting(names=names, phase_starts=(1,), importances=((0.5, 0.5), (0.5, 0.5)), num_epochs=self.num_epochs)


class nnUNetTrainerCentroid(nnUNetTrainerLosses):
    """Centroid distance loss L_c = L_Dice * L_d * L_N (Wong et al.).

    ``projection_axes`` are the preprocessed array axes projected away: (0, 2) suits the
    synthetic lamina set (depth, left-right); set them for your data's orientation.
    """

    projection_axes = (0, 2)

    def loss_terms(self):
        return {"centroid": CentroidDistanceLoss(projection_axes=self.projection_axes)}
