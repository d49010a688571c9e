"""Kervadec's boundary loss with Dice under the fixed, ramp, rebalance and steal schedules
(boundary-loss breast-ultrasound paper; SPEC §2). The boundary term covers the
foreground classes, as in Kervadec's code; Dice excludes background, as nnU-Net's."""
from nnunet_losses.losses import BoundaryLoss, SoftDiceLoss
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.schedules import Fixed, LinearRamp, Rebalance, Steal


class _BoundaryDice(nnUNetTrainerLosses):
    schedule_class = Fixed
    schedule_arguments: dict = {}

    def loss_terms(self):
        foreground = list(range(1, self.label_manager.num_segmentation_heads))
        return {"dice": SoftDiceLoss(), "boundary": BoundaryLoss(classes=foreground)}

    def loss_weights(self, names):
        return self.schedule_class(**self.schedule_arguments, names=names, num_epochs=self.num_epochs)


class nnUNetTrainerBoundaryDiceFixed(_BoundaryDice):
    """Dice + 0.1 boundary ("linear combination", fixed alpha)."""

    schedule_arguments = {"alpha": 0.1}


class nnUNetTrainerBoundaryDiceRamp(_BoundaryDice):
    """Dice + a boundary, a = min(0.01 + 0.01 epoch, 1) ("linear scheduling")."""

    schedule_class = LinearRamp


class nnUNetTrainerBoundaryDiceRebalance(_BoundaryDice):
    """(1 - a) Dice + a boundary, a = min(0.01 + 0.01 epoch, 1) (Kervadec's rebalance)."""

    schedule_class = Rebalance


class nnUNetTrainerBoundaryDiceSteal(_BoundaryDice):
    """a Dice + b boundary; a -= 0.01 per epoch (floor 0.1), b = 0.01 + 0.01 epoch (Kervadec's code)."""

    schedule_class = Steal


class nnUNetTrainerBoundaryDiceRampOnDevice(nnUNetTrainerBoundaryDiceRamp):
    """nnUNetTrainerBoundaryDiceRamp with the signed distances computed on the training device, per augmented patch."""

    map_mode = "device"
