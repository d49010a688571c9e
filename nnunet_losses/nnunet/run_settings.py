"""Per-run settings that nnU-Net's command line has no flag for, read from the environment.

``nnUNetv2_train`` accepts no seed and no epoch budget; trainers of this package read:

* ``NNUNET_LOSSES_SEED`` — seeds Python, NumPy and PyTorch (network initialisation,
  case and patch sampling in the main process) when the trainer is built, and the
  augmentation workers (one seed each, derived from it) when they start. nnU-Net's
  multi-process augmenter still delivers batches in the order workers finish them
  and cuDNN autotuning stays on, so a seeded GPU run is repeatable in its
  initialisation and in the sample stream of each worker, not bit for bit.
* ``NNUNET_LOSSES_EPOCHS``, ``NNUNET_LOSSES_ITERATIONS``, ``NNUNET_LOSSES_VAL_ITERATIONS``
  — the number of epochs, training iterations per epoch and validation iterations per
  epoch (nnU-Net's defaults: 1000, 250, 50), for short runs and seed studies.

Every run writes what it used to ``nnunet_losses_run.json`` in its output folder.
"""
from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch

SEED_VARIABLE = "NNUNET_LOSSES_SEED"
BUDGET_VARIABLES = {
    "num_epochs": "NNUNET_LOSSES_EPOCHS",
    "num_iterations_per_epoch": "NNUNET_LOSSES_ITERATIONS",
    "num_val_iterations_per_epoch": "NNUNET_LOSSES_VAL_ITERATIONS",
}


def _positive_int(variable: str) -> int | None:
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not an integer") from None
    if value < 0 or (value == 0 and variable != SEED_VARIABLE):
        raise ValueError(f"{variable}={raw!r} must be {'>= 0' if variable == SEED_VARIABLE else 'positive'}")
    return value


@dataclass(frozen=True)
class RunSettings:
    seed: int | None
    num_epochs: int | None
    num_iterations_per_epoch: int | None
    num_val_iterations_per_epoch: int | None

    @classmethod
    def from_environment(cls) -> RunSettings:
        return cls(
            seed=_positive_int(SEED_VARIABLE),
            **{attribute: _positive_int(variable) for attribute, variable in BUDGET_VARIABLES.items()},
        )

    def budget(self) -> dict[str, int]:
        """The budget attributes to set on the trainer (only those given)."""
        return {k: v for k, v in asdict(self).items() if k != "seed" and v is not None}

    def worker_seeds(self, count: int, stream: int) -> list[int] | None:
        """Distinct, reproducible seeds for ``count`` augmentation workers of one loader (``stream``)."""
        if self.seed is None:
            return None
        loader = np.random.SeedSequence([self.seed, stream])
        return [int(s.generate_state(1)[0]) for s in loader.spawn(count)]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
