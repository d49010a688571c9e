"""Region-wise loss trainers (Valverde et al., "Region-wise loss for biomedical image
segmentation"): RRW and RW-Boundary maps, alone and with Dice or CE under the equal and
gradual strategies (§4.3-4.4; ``docs/schedules.md``). The combinations keep the paper's
reference code's Dice: per sample, background included."""
from nnunet_losses.losses import CrossEntropyLoss, RegionWiseLoss, RRWWeightedCrossEntropyLoss, SoftDiceLoss
from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
from nnunet_losses.schedules import Equal, Gradual


class nnUNetTrainerRRW(nnUNetTrainerLosses):
    """RW loss with rectified RW maps (eq. 4), precomputed on the whole case by setup_maps.py."""

    def loss_terms(self):
        return {"rw": RegionWiseLoss("rrw")}


class nnUNetTrainerRRWOnTheFly(nnUNetTrainerRRW):
    """RRW maps recomputed on each augmented patch, as the RW reference code does."""

    map_mode = "on_the_fly"


class nnUNetTrainerRWBoundary(nnUNetTrainerLosses):
    """RW loss with RW-Boundary maps (eq. 3), i.e. Kervadec's boundary loss on all classes, alone."""

    def loss_terms(self):
        return {"rw": RegionWiseLoss("rw_boundary")}


class nnUNetTrainerRRWOnDevice(nnUNetTrainerRRW):
    """RRW maps of each augmented patch, computed on the training device from the final target at every scale."""

    map_mode = "device"


class nnUNetTrainerRWBoundaryOnDevice(nnUNetTrainerRWBoundary):
    """RW-Boundary maps of each augmented patch (mm of the patch's spacing), computed on the training device."""

    map_mode = "device"


class nnUNetTrainerRRWAdam(nnUNetTrainerRRW):
    """nnUNetTrainerRRW with the RW paper's optimiser: Adam, learning rate 1e-4 (poly decay kept)."""

    optimizer_name = "adam"


class nnUNetTrainerRWBoundaryAdam(nnUNetTrainerRWBoundary):
    """nnUNetTrainerRWBoundary with Adam, learning rate 1e-4."""

    optimizer_name = "adam"


class nnUNetTrainerRRWwCE(nnUNetTrainerLosses):
    """Cross-entropy weighted by 1 + |RRW value at the true class| (the RW paper's wCE row)."""

    def loss_terms(self):
        return {"wce": RRWWeightedCrossEntropyLoss()}


def _regional(name: str):
    """The RW paper's extra loss: its Dice (all classes, per sample) or cross-entropy."""
    return SoftDiceLoss(include_background=True) if name == "dice" else CrossEntropyLoss()


class _RWCombination(nnUNetTrainerLosses):
    rw_map = "rrw"
    regional = "dice"
    strategy = Equal
    schedule_unit = "epoch"  # the paper's per-epoch rule; "fraction" stretches it over the run's epochs

    def loss_terms(self):
        return {self.regional: _regional(self.regional), "rw": RegionWiseLoss(self.rw_map)}

    def loss_weights(self, names):
        return self.strategy(names=names, num_epochs=self.num_epochs, unit=self.schedule_unit)


class nnUNetTrainerRRWDiceEqual(_RWCombination):
    """Dice + RW(RRW)."""


class nnUNetTrainerRRWDiceGradual(_RWCombination):
    """a Dice + (1 - a) RW(RRW), a = max((100 - epoch)/100, 0.01)."""

    strategy = Gradual


class nnUNetTrainerRRWCEEqual(_RWCombination):
    """CE + RW(RRW)."""

    regional = "ce"


class nnUNetTrainerRRWCEGradual(_RWCombination):
    """a CE + (1 - a) RW(RRW)."""

    regional, strategy = "ce", Gradual


class nnUNetTrainerRWBoundaryDiceEqual(_RWCombination):
    """Dice + RW(RW-Boundary)."""

    rw_map = "rw_boundary"


class nnUNetTrainerRWBoundaryDiceGradual(_RWCombination):
    """a Dice + (1 - a) RW(RW-Boundary)."""

    rw_map, strategy = "rw_boundary", Gradual


class nnUNetTrainerRWBoundaryCEEqual(_RWCombination):
    """CE + RW(RW-Boundary)."""

    rw_map, regional = "rw_boundary", "ce"


class nnUNetTrainerRWBoundaryCEGradual(_RWCombination):
    """a CE + (1 - a) RW(RW-Boundary)."""

    rw_map, regional, strategy = "rw_boundary", "ce", Gradual
