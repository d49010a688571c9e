"""The CPU-scale convergence protocol's trainers (``studies/convergence_protocol``): Adam at lr 1e-3.

At the protocol's budget (a few hundred iterations) the RW paper's Adam lr 1e-4 leaves even
nnU-Net's Dice + CE short of its plateau (``studies/rrw_learning_speed``); at 1e-3 it
converges. Every trainer here is its namesake without the ``Adam1e3`` suffix with Adam,
lr 1e-3, nnU-Net's weight decay and poly schedule. The gradual combinations stretch the
paper's rule over the run (``unit="fraction"``: ``alpha = max(1 - epoch / num_epochs, 0.01)``,
so at 40 epochs alpha is 0.5 at epoch 20 and 0.025 in the last epoch, as the paper's
100-epoch ramp is in a 100-epoch training).
"""
from nnunet_losses.trainers.losses_control import nnUNetTrainerDiceCE
from nnunet_losses.trainers.losses_region_wise import (
    nnUNetTrainerRRW,
    nnUNetTrainerRRWCEEqual,
    nnUNetTrainerRRWCEGradual,
    nnUNetTrainerRRWDiceEqual,
    nnUNetTrainerRRWDiceGradual,
    nnUNetTrainerRRWOnTheFly,
    nnUNetTrainerRWBoundary,
    nnUNetTrainerRWBoundaryCEEqual,
    nnUNetTrainerRWBoundaryCEGradual,
    nnUNetTrainerRWBoundaryDiceEqual,
    nnUNetTrainerRWBoundaryDiceGradual,
)


class _Adam1e3:
    optimizer_name = "adam"
    adam_learning_rate = 1e-3
    schedule_unit = "fraction"


class nnUNetTrainerDiceCEAdam1e3(_Adam1e3, nnUNetTrainerDiceCE):
    """The protocol's control: nnU-Net's own Dice + CE."""


class nnUNetTrainerRRWAdam1e3(_Adam1e3, nnUNetTrainerRRW):
    """RW loss with RRW maps alone."""


class nnUNetTrainerRWBoundaryAdam1e3(_Adam1e3, nnUNetTrainerRWBoundary):
    """RW loss with RW-Boundary maps alone."""


class nnUNetTrainerRRWDiceEqualAdam1e3(_Adam1e3, nnUNetTrainerRRWDiceEqual):
    """Dice + RW(RRW)."""


class nnUNetTrainerRRWDiceGradualAdam1e3(_Adam1e3, nnUNetTrainerRRWDiceGradual):
    """a Dice + (1 - a) RW(RRW), a stretched over the run."""


class nnUNetTrainerRRWCEEqualAdam1e3(_Adam1e3, nnUNetTrainerRRWCEEqual):
    """CE + RW(RRW)."""


class nnUNetTrainerRRWCEGradualAdam1e3(_Adam1e3, nnUNetTrainerRRWCEGradual):
    """a CE + (1 - a) RW(RRW), a stretched over the run."""


class nnUNetTrainerRWBoundaryDiceEqualAdam1e3(_Adam1e3, nnUNetTrainerRWBoundaryDiceEqual):
    """Dice + RW(RW-Boundary)."""


class nnUNetTrainerRWBoundaryDiceGradualAdam1e3(_Adam1e3, nnUNetTrainerRWBoundaryDiceGradual):
    """a Dice + (1 - a) RW(RW-Boundary), a stretched over the run."""


class nnUNetTrainerRWBoundaryCEEqualAdam1e3(_Adam1e3, nnUNetTrainerRWBoundaryCEEqual):
    """CE + RW(RW-Boundary)."""


class nnUNetTrainerRWBoundaryCEGradualAdam1e3(_Adam1e3, nnUNetTrainerRWBoundaryCEGradual):
    """a CE + (1 - a) RW(RW-Boundary), a stretched over the run."""


class nnUNetTrainerRRWOnTheFlyAdam1e3(_Adam1e3, nnUNetTrainerRRWOnTheFly):
    """RW loss with RRW maps of the augmented patch (the RW reference code's per-patch normalisation)."""
