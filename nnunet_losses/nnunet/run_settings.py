"""Per-run settings that nnU-Net's command line has no flag for, read from the environment.

``nnUNetv2_train`` accepts no seed and no epoch budget; trainers of this package read:

* ``NNUNET_LOSSES_SEED`` — seeds Python, NumPy and PyTorch (network initialisation) when
  the trainer is built, and, when training starts, the sample stream: the main
  process (case and patch sampling without workers) and each augmentation worker.
  Every seed is derived from it with NumPy's ``SeedSequence`` and keyed by
  - the DDP rank (nnU-Net gives every rank the same trainer, ``nnunetv2/run/run_training.py``;
    with one seed for all, every GPU would draw the same cases and augmentations), and
  - the epoch at which training starts (``--c`` resumes at the checkpoint's epoch:
    the stream continues with new samples instead of replaying epoch 0's).
  nnU-Net's multi-process augmenter still delivers batches in the order workers
  finish them and cuDNN autotuning stays on, so a seeded GPU run is repeatable in its
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

    def _derived(self, *keys: int) -> np.random.SeedSequence:
        assert self.seed is not None
        return np.random.SeedSequence([self.seed, *keys])

    def init_seed(self, rank: int) -> int:
        """Seed of the global generators when the trainer is built (network initialisation)."""
        return int(self._derived(INIT_STREAM, rank).generate_state(1)[0])

    def sample_seeds(self, rank: int, start_epoch: int, train_workers: int, val_workers: int) -> dict[str, int | list[int]]:
        """Seeds of the sample stream of a training that starts at ``start_epoch`` on ``rank``:
        ``main`` (the global generators) and one per augmentation worker of each loader."""
        stream = self._derived(SAMPLE_STREAM, rank, start_epoch)
        main, train, val = stream.spawn(3)
        return {
            "main": int(main.generate_state(1)[0]),
            "train_workers": [int(s.generate_state(1)[0]) for s in train.spawn(train_workers)],
            "val_workers": [int(s.generate_state(1)[0]) for s in val.spawn(val_workers)],
        }


INIT_STREAM, SAMPLE_STREAM = 0, 1
"""Keys that keep the initialisation seed and the sample-stream seeds apart."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (CPU and CUDA)."""
    import torch  # here, not at module level: the study's job bodies and `study status` import this module

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
