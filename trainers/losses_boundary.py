"""Kervadec's boundary loss with Dice under the fixed, ramp, rebalance and steal schedules
(Kervadec et al., "Boundary loss for highly unbalanced segmentation", and its breast
ultrasound study; ``docs/schedules.md``). The boundary term covers the foreground
classes, as in Kervadec's code; the papers prescribe no Dice variant, so the Dice term is
nnU-Net's own (:func:`~nnunet_losses.nnunet.nnunet_dice.nnunet_dice`: the plans'
``batch_dice``, background excluded, DDP gather)."""
from nnunet_losses.losses import BoundaryLoss
from nnunet_losses.nnunet.nnunet_dice import nnunet_dice
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.schedules import Fixed, LinearRamp, Rebalance, Steal


class _BoundaryDice(nnUNetTrainerLosses):
    schedule_class = Fixed
    schedule_arguments: dict = {}

    def loss_terms(self):
        return {"dice": nnunet_dice(self), "boundary": BoundaryLoss(include_background=False)}

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
