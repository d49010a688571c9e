"""The temporal loss of Marzola et al. ("Temporal loss for ultrasound segmentation") and its
parts: GDL, common-support Dice (CDL) and common-support boundary loss (``docs/losses.md``,
``docs/schedules.md``). The phases scale to nnU-Net's epoch budget (the paper's 20 epochs
map onto the whole training). The Dice terms are the paper's generalised Dice."""
from nnunet_losses.losses import CommonSupportBoundaryLoss, CommonSupportDiceLoss, GeneralizedDiceLoss
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.schedules import TemporalWeighting


class nnUNetTrainerGDL(nnUNetTrainerLosses):
    """Generalised Dice loss with batch-wise class weights."""

    def loss_terms(self):
        return {"gdl": GeneralizedDiceLoss()}


class nnUNetTrainerCDL(nnUNetTrainerLosses):
    """Common-support Dice loss (image columns)."""

    def loss_terms(self):
        return {"cdl": CommonSupportDiceLoss()}


class nnUNetTrainerTemporal(nnUNetTrainerLosses):
    """GDL, then GDL/CDL 0.25/0.75, then GDL/CDL/BL 0.1/0.2/0.7, reweighted every epoch."""

    def loss_terms(self):
        return {"gdl": GeneralizedDiceLoss(), "cdl": CommonSupportDiceLoss(), "bl": CommonSupportBoundaryLoss()}

    def loss_weights(self, names):
        return TemporalWeighting(names=names, num_epochs=self.num_epochs, unit="fraction")
