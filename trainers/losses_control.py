"""Controls for the studies: nnU-Net's own loss under the package's seed, budget and run record."""
from nnunet_losses.nnunet.loss_adapter import NnUNetOwnLoss
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses


class nnUNetTrainerDiceCE(nnUNetTrainerLosses):
    """Dice + CE exactly as ``nnUNetTrainer._build_loss`` builds it, nnU-Net's SGD.

    The loss object is nnU-Net's own (``DC_and_CE_loss`` with ``batch_dice`` from the plans,
    ``smooth = 1e-5``, background excluded from Dice, ``weight_ce = weight_dice = 1``, the
    ignore label, ``MemoryEfficientSoftDiceLoss``, wrapped in ``DeepSupervisionWrapper``
    with weights ``1/2^i``, the lowest scale 0, normalised to sum 1), called unchanged;
    this trainer adds ``NNUNET_LOSSES_SEED``, the ``NNUNET_LOSSES_*`` budget, the run
    record and the divergence check. Its one logged term is ``dice_ce`` (``dice_bce`` on
    region-based datasets, where nnU-Net builds ``DC_and_BCE_loss``).
    """

    def _build_loss(self) -> NnUNetOwnLoss:
        native = super(nnUNetTrainerLosses, self)._build_loss()  # nnUNetTrainer._build_loss
        return NnUNetOwnLoss(native, "dice_bce" if self.label_manager.has_regions else "dice_ce")


class nnUNetTrainerDiceCEAdam(nnUNetTrainerDiceCE):
    """:class:`nnUNetTrainerDiceCE` with the RW paper's optimiser: Adam, lr 1e-4, nnU-Net's weight decay and poly schedule."""

    optimizer_name = "adam"
