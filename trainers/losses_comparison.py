"""The comparison losses of the spine MRI loss study (``docs/losses.md``): focal, Tversky,
focal Tversky, asymmetric F-beta, Dice + focal, and Dice + CE with adaptive weighting. The
study prescribes no Dice variant, so the compounds use nnU-Net's Dice
(:func:`~nnunet_losses.nnunet.nnunet_dice.nnunet_dice`)."""
from nnunet_losses.losses import AsymmetricFBetaLoss, CrossEntropyLoss, FocalLoss, FocalTverskyLoss, TverskyLoss
from nnunet_losses.nnunet.nnunet_dice import nnunet_dice
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.schedules import CoVWeighting, SoftAdapt


class nnUNetTrainerFocal(nnUNetTrainerLosses):
    """Focal loss, gamma = 2."""

    def loss_terms(self):
        return {"focal": FocalLoss()}


class nnUNetTrainerTversky(nnUNetTrainerLosses):
    """Tversky loss, alpha = 0.3 (FP), beta = 0.7 (FN)."""

    def loss_terms(self):
        return {"tversky": TverskyLoss()}


class nnUNetTrainerFocalTversky(nnUNetTrainerLosses):
    """Focal Tversky loss, gamma = 4/3."""

    def loss_terms(self):
        return {"focal_tversky": FocalTverskyLoss()}


class nnUNetTrainerFBeta(nnUNetTrainerLosses):
    """Asymmetric F-beta loss, beta = 1.5."""

    def loss_terms(self):
        return {"fbeta": AsymmetricFBetaLoss()}


class nnUNetTrainerDiceFocal(nnUNetTrainerLosses):
    """nnU-Net's Dice + focal."""

    def loss_terms(self):
        return {"dice": nnunet_dice(self), "focal": FocalLoss()}


class nnUNetTrainerDiceCESoftAdapt(nnUNetTrainerLosses):
    """nnU-Net's Dice + CE weighted by SoftAdapt (beta = 0.1) from the slopes of the epoch means."""

    def loss_terms(self):
        return {"dice": nnunet_dice(self), "ce": CrossEntropyLoss()}

    def loss_weights(self, names):
        return SoftAdapt(names, num_epochs=self.num_epochs)


class nnUNetTrainerDiceCECoV(nnUNetTrainerDiceCESoftAdapt):
    """nnU-Net's Dice + CE weighted by the coefficient of variation of their loss ratios."""

    def loss_weights(self, names):
        return CoVWeighting(names, num_epochs=self.num_epochs)
