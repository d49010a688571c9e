"""Run bookkeeping of a package trainer: seeds, budget, run record, divergence, progress file.

* Seeds and budget come from the environment (:mod:`.run_settings`): the budget is set on
  the trainer, the initialisation seed when it is built, the sample stream (main process
  and each augmentation worker, keyed by rank and start epoch) when training starts.
* ``nnunet_losses_run.json`` (:data:`~nnunet_losses.nnunet.RUN_RECORD`) gets one entry per
  start (``"resumed": true`` for ``--c`` starts): seeds, budget, loss, maps, optimiser,
  versions.
* **Divergence.** After every training iteration the loss terms (averaged over DDP
  ranks) are checked: when any term, or nnU-Net's total loss of the step, is not finite,
  or a weight schedule refuses the values, ``diverged.json``
  (``{"epoch", "iteration", "loss_terms", "total_loss", "reason", "time"}``, rank 0) is
  written into the output folder and :class:`TrainingDiverged` raised, so
  ``nnUNetv2_train`` exits with an error. The marker is what a study reads to count the
  run as diverged rather than failed (:mod:`nnunet_losses.study.runs`); a new start of
  the same training (``--c`` included) removes an old marker before its first iteration.
* ``progress.json`` (:data:`~nnunet_losses.nnunet.PROGRESS_FILE`), rewritten after every
  epoch (rank 0): ``{"epoch": epochs completed, "num_epochs", "iterations": training
  iterations of the completed epochs, "num_iterations_per_epoch", "pseudo_dice": nnU-Net's
  mean_fg_dice of that epoch, "ema_pseudo_dice": its ema_fg_dice (null where NaN),
  "epoch_seconds", "time"}``; studies read it instead of nnU-Net's log.
"""
from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import distributed as dist

from .. import __version__
from ..files import read_json, write_json
from . import DIVERGED_MARKER, PROGRESS_FILE, RUN_RECORD
from .internals import local_log, reseed_workers, reseedable_workers
from .run_settings import RunSettings, seed_everything

if TYPE_CHECKING:
    from .trainer import nnUNetTrainerLosses


class TrainingDiverged(RuntimeError):
    """The loss became non-finite (or a schedule refused its values); ``diverged.json`` says when."""


def now() -> str:
    """The time as the package's records write it (ISO, seconds)."""
    return datetime.now().isoformat(timespec="seconds")


class RunBookkeeping:
    """What a trainer records about its run, from the seed and budget to the per-epoch progress."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.sample_seeds: dict | None = None
        self.term_sums: dict[str, float] = {}
        self.steps = 0

    @classmethod
    def from_environment(cls) -> RunBookkeeping:
        return cls(RunSettings.from_environment())

    # --- seed and budget -------------------------------------------------------------------------------------------

    def apply_budget_and_init_seed(self, trainer: nnUNetTrainerLosses) -> None:
        """Set the budget's epochs and iterations on the trainer; seed the network initialisation."""
        for attribute, value in self.settings.budget().items():
            setattr(trainer, attribute, value)
        if self.settings.seed is not None:
            seed_everything(self.settings.init_seed(trainer.local_rank))

    def seed_sample_stream(self, trainer: nnUNetTrainerLosses) -> None:
        """Seed the main process and restart the augmentation workers with seeds of this rank and start epoch."""
        if self.settings.seed is None:
            return
        augmenters = (trainer.dataloader_train, trainer.dataloader_val)
        self.sample_seeds = self.settings.sample_seeds(trainer.local_rank, trainer.current_epoch, *map(reseedable_workers, augmenters))
        seed_everything(self.sample_seeds["main"])
        for augmenter, seeds in zip(augmenters, (self.sample_seeds["train_workers"], self.sample_seeds["val_workers"])):
            if seeds:
                reseed_workers(augmenter, seeds)
        trainer.print_to_log_file(
            f"seed {self.settings.seed} (NNUNET_LOSSES_SEED), rank {trainer.local_rank}, sample stream from epoch {trainer.current_epoch}"
        )

    # --- run record ------------------------------------------------------------------------------------------------

    def write_run_record(self, trainer: nnUNetTrainerLosses) -> None:
        """Append this start to ``nnunet_losses_run.json`` (rank 0)."""
        if trainer.local_rank != 0:
            return
        path = Path(trainer.output_folder) / RUN_RECORD
        record = read_json(path) or {"runs": []}
        loss, transport = trainer.loss, trainer.map_transport
        record["runs"].append(
            {
                "started": now(),
                "start_epoch": trainer.current_epoch,
                "resumed": trainer.resumed_from_checkpoint,
                "trainer": type(trainer).__name__,
                "seed": self.settings.seed,
                "sample_seeds": self.sample_seeds,
                "world_size": dist.get_world_size() if trainer.is_ddp else 1,
                "num_epochs": trainer.num_epochs,
                "num_iterations_per_epoch": trainer.num_iterations_per_epoch,
                "num_val_iterations_per_epoch": trainer.num_val_iterations_per_epoch,
                "loss_terms": {name: repr(term) for name, term in loss.loss.terms.items()},
                "schedule": None if loss.schedule is None else {"name": loss.schedule.key, **loss.schedule.config()},
                "map_mode": transport.mode if transport is not None else None,
                "maps": list(transport.layout.kinds) if transport is not None else [],
                "maps_per_slice": trainer.map_slicing,
                "optimizer": trainer.optimizer_name,
                "initial_lr": trainer.initial_lr,
                "device": str(trainer.device),
                "versions": {"nnunet_losses": __version__, "torch": torch.__version__, "nnunetv2": importlib.metadata.version("nnunetv2")},
            }
        )
        write_json(path, record)

    # --- divergence ------------------------------------------------------------------------------------------------

    def clear_divergence(self, trainer: nnUNetTrainerLosses) -> None:
        """Remove the marker of an earlier start (rank 0): this start has not diverged."""
        if trainer.local_rank == 0:
            (Path(trainer.output_folder) / DIVERGED_MARKER).unlink(missing_ok=True)

    def start_epoch(self) -> None:
        self.term_sums, self.steps = {}, 0

    def record_step(self, trainer: nnUNetTrainerLosses, total_loss: float) -> None:
        """Add this step's loss terms to the epoch sums and the schedule; stop if the training diverged."""
        values = trainer.loss.last_values
        names = list(values)
        stacked = torch.stack([values[name].detach().float() for name in names])
        if trainer.is_ddp:  # every rank must see the same values, or the schedules drift apart
            dist.all_reduce(stacked)
            stacked /= dist.get_world_size()
        numbers = dict(zip(names, stacked.tolist()))
        if not all(math.isfinite(value) for value in (*numbers.values(), total_loss)):
            self._diverged(trainer, numbers, total_loss, "a loss value is not finite")
        for name, value in numbers.items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + value
        self.steps += 1
        schedule = trainer.loss.schedule
        if schedule is not None:
            try:
                schedule.observe(numbers)
            except ValueError as error:
                self._diverged(trainer, numbers, total_loss, str(error), error)

    def epoch_means(self) -> dict[str, float]:
        """Each term's mean over this epoch's training steps."""
        return {name: total / max(self.steps, 1) for name, total in self.term_sums.items()}

    def _diverged(
        self, trainer: nnUNetTrainerLosses, numbers: Mapping[str, float], total_loss: float, reason: str, cause: Exception | None = None
    ) -> None:
        """Write ``diverged.json`` (rank 0) and raise :class:`TrainingDiverged`."""
        marker = Path(trainer.output_folder) / DIVERGED_MARKER
        if trainer.local_rank == 0:
            write_json(
                marker,
                {
                    "epoch": trainer.current_epoch,
                    "iteration": self.steps,
                    "loss_terms": {name: repr(value) for name, value in numbers.items()},
                    "total_loss": repr(total_loss),
                    "reason": reason,
                    "time": now(),
                },
            )
        message = (
            f"epoch {trainer.current_epoch}, iteration {self.steps}: loss terms {numbers}, total {total_loss}: {reason}; "
            f"the training diverged (recorded in {marker})"
        )
        trainer.print_to_log_file(message)
        raise TrainingDiverged(message) from cause

    # --- progress --------------------------------------------------------------------------------------------------

    def write_progress(self, trainer: nnUNetTrainerLosses) -> None:
        """Rewrite ``progress.json`` after an epoch has ended (rank 0; nnU-Net has already counted the epoch)."""
        if trainer.local_rank != 0:
            return
        log = local_log(trainer)
        completed = trainer.current_epoch
        write_json(
            Path(trainer.output_folder) / PROGRESS_FILE,
            {
                "epoch": completed,
                "num_epochs": trainer.num_epochs,
                "iterations": completed * trainer.num_iterations_per_epoch,
                "num_iterations_per_epoch": trainer.num_iterations_per_epoch,
                "pseudo_dice": _finite_or_none(log["mean_fg_dice"][-1]),
                "ema_pseudo_dice": _finite_or_none(log["ema_fg_dice"][-1]),
                "epoch_seconds": float(log["epoch_end_timestamps"][-1] - log["epoch_start_timestamps"][-1]),
                "time": now(),
            },
        )


def _finite_or_none(value) -> float | None:
    """nnU-Net's pseudo Dice as JSON: ``None`` where it is NaN (no foreground anywhere in the validation batches)."""
    number = float(value)
    return number if math.isfinite(number) else None
