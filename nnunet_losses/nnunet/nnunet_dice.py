"""nnU-Net's own Dice term, as a loss term of the package (``docs/losses.md``).

nnU-Net internals used here (and nowhere else in the package): ``MemoryEfficientSoftDiceLoss``
(``nnunetv2/training/loss/dice.py``) and ``softmax_helper_dim1``
(``nnunetv2/utilities/helpers.py``), built with the arguments ``nnUNetTrainer._build_loss``
(``nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py``) gives its Dice: the plans'
``batch_dice``, background excluded (``do_bg=False``), ``smooth=1e-5`` and
``ddp=trainer.is_ddp`` (with ``batch_dice``, nnU-Net gathers the batch statistics of all DDP
ranks with its ``AllGatherGrad``, so every rank sees the Dice of the global batch).

The ignore label is handled as ``DC_and_CE_loss`` handles it: the package's loss adapter
passes ``mask = target != ignore_label``, ignored voxels become class 0
(:class:`~nnunet_losses.losses.inputs.LossInput`) and the mask is nnU-Net's ``loss_mask``.

**Value.** nnU-Net's object returns ``-Dice`` (in ``[-1, 0]``); this term returns
``1 + that = 1 - Dice`` (in ``[0, 1]``), with the identical gradient. The offset keeps the
term non-negative and on the scale of the package's :class:`~nnunet_losses.losses.SoftDiceLoss`,
which the schedules that read loss values rely on: SoftAdapt uses differences of epoch
means (unchanged by the offset), the coefficient-of-variation weighting and Karimi's
per-epoch balancing use ratios of values, which a negative Dice would turn around.
Only ``reduction="mean"``: nnU-Net's object returns one value for the batch.
"""
from __future__ import annotations

from typing import Any

from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1
from torch import Tensor

from ..losses import SegmentationLoss
from ..losses.inputs import LossInput, Reduction

NNUNET_DICE_SMOOTH = 1e-5


class NnUNetDiceLoss(SegmentationLoss):
    """``1 + MemoryEfficientSoftDiceLoss(...)`` as ``nnUNetTrainer._build_loss`` configures it (``1 - Dice``)."""

    pooled_over_batch = "nnU-Net's Dice returns one value for the batch"

    def __init__(self, batch_dice: bool, ddp: bool = False, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.batch_dice = batch_dice
        self.ddp = ddp
        self.dice = MemoryEfficientSoftDiceLoss(
            apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice, do_bg=False, smooth=NNUNET_DICE_SMOOTH, ddp=ddp
        )

    def compute(self, batch: LossInput) -> Tensor:
        return 1.0 + self.dice(batch.logits, batch.labels.unsqueeze(1), loss_mask=batch.mask)


def nnunet_dice(trainer: Any) -> NnUNetDiceLoss:
    """The Dice term of ``trainer`` (an nnU-Net trainer): its plans' ``batch_dice`` and its DDP state."""
    return NnUNetDiceLoss(batch_dice=trainer.configuration_manager.batch_dice, ddp=trainer.is_ddp)
