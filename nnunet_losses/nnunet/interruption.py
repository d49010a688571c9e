"""SIGTERM, SIGUSR1 or SIGUSR2 stop a training with a checkpoint at the start of the epoch in progress.

A cluster stops a job at its time limit or on preemption with a signal (Slurm:
SIGTERM, or the signal of ``--signal``, some time before SIGKILL). nnU-Net writes
``checkpoint_latest.pth`` only every 50 epochs, so without this a stopped training
loses up to 49 epochs. While nnU-Net's ``run_training`` runs, :class:`InterruptionGuard`
turns those signals into a clean stop:

1. At the start of every epoch ``e`` it keeps nnU-Net's checkpoint of that moment in
   memory (``save_checkpoint`` into bytes, stored so that ``--c`` starts epoch ``e``; the
   network and optimiser state: about 8 bytes per parameter with SGD momentum, 12 with
   Adam; the logging lists hold the ``e`` completed epochs).
2. A signal only sets a flag. After the training or validation step in progress (and at
   the start of the next epoch) the trainer finds it, writes that checkpoint as
   ``checkpoint_latest.pth`` (atomically, rank 0), appends ``{"signal", "epoch": e,
   "iteration": training iterations done in epoch e, "time"}`` to ``interruptions.json``,
   stops nnU-Net's augmentation workers and exits with status 75 (``EX_TEMPFAIL``,
   :data:`~nnunet_losses.nnunet.INTERRUPTED_EXIT_CODE`).
3. ``nnUNetv2_train ... --c`` loads that checkpoint and trains epochs ``e ..
   num_epochs - 1``: the interrupted run ends with exactly the epochs, iterations and
   logging entries of an uninterrupted one; the iterations of epoch ``e`` done before
   the signal are lost (at most one epoch per interruption), their weight updates with
   them.

Before the first epoch starts (nnU-Net's ``on_train_start``: data loaders, unpacking) a
signal exits with status 75 at once, without a checkpoint; after the last epoch has
ended it is ignored and the training ends normally (final checkpoint, validation).
Before ``run_training`` (building the trainer, loading the ``--c`` checkpoint: seconds)
the signals keep their default effect, so a process that merely builds a trainer (a
study's preflight) keeps its own signal handling.

nnU-Net's augmentation workers are forked from the trainer and inherit these handlers;
in a worker they do nothing, so a signal sent to the whole process group (as Slurm may
do) leaves the workers serving batches until the checkpoint is written. Under DDP every
rank checks the flag of all ranks (one ``all_reduce`` per step), so all stop at the same
step; the ranks are processes that nnU-Net spawns, so the signal must reach them (Slurm
signals every process of the job step), not only the launching process.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import distributed as dist

from ..files import read_json, write_atomically, write_json
from . import INTERRUPTED_EXIT_CODE, INTERRUPTIONS_FILE
from .bookkeeping import now
from .internals import checkpoint_at_epoch_start, stop_augmentation_workers

if TYPE_CHECKING:
    from .trainer import nnUNetTrainerLosses

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
CHECKPOINT = "checkpoint_latest.pth"
"""nnU-Net's name for the checkpoint ``--c`` resumes from when there is no final one."""


class TrainingInterrupted(SystemExit):
    """A signal stopped the training; the process exits with status 75."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERRUPTED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InterruptionGuard:
    """The signal handlers of one training and the checkpoint kept for them."""

    def __init__(self) -> None:
        self.main_pid: int | None = None
        self.phase = "idle"  # "starting" (run_training before the first epoch), "training", "ending"
        self.received: str | None = None
        self.checkpoint: bytes | None = None

    def install(self) -> None:
        """Handle :data:`SIGNALS` in this process from now on (called when nnU-Net's ``run_training`` starts)."""
        self.main_pid = os.getpid()
        self.phase = "starting"
        for number in SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, number: int, frame) -> None:
        if os.getpid() != self.main_pid:  # a forked augmentation worker: keep serving batches
            return
        name = signal.Signals(number).name
        if self.phase == "starting":
            message = f"{name} received before the first epoch started: stopped without a checkpoint"
            print(message, file=sys.stderr)
            raise TrainingInterrupted(message)
        if self.phase == "training":
            self.received = name

    def epoch_started(self, trainer: nnUNetTrainerLosses) -> None:
        """Keep the checkpoint of the start of ``trainer.current_epoch``; stop here if a signal came meanwhile."""
        self.checkpoint = checkpoint_at_epoch_start(trainer)
        self.phase = "training"
        self.stop_if_signalled(trainer, 0)

    def training_ended(self) -> None:
        """The last epoch has ended: signals no longer stop the training."""
        self.phase = "ending"

    def stop_if_signalled(self, trainer: nnUNetTrainerLosses, iterations: int) -> None:
        """Between steps: if a signal came (to any DDP rank), save, record and exit with status 75."""
        requested = self.received is not None
        if trainer.is_ddp:
            flag = torch.tensor([int(requested)], device=trainer.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        if requested:
            self._stop(trainer, iterations)

    def _stop(self, trainer: nnUNetTrainerLosses, iterations: int) -> None:
        name = self.received or "a signal to another DDP rank"
        epoch = trainer.current_epoch
        folder = Path(trainer.output_folder)
        if self.checkpoint is not None:
            write_atomically(folder / CHECKPOINT, self.checkpoint)
        if trainer.local_rank == 0:
            entries = read_json(folder / INTERRUPTIONS_FILE) or []
            entries.append({"signal": name, "epoch": epoch, "iteration": iterations, "time": now()})
            write_json(folder / INTERRUPTIONS_FILE, entries)
        message = (
            f"{name} received in epoch {epoch} after {iterations} training iterations: stopped; {CHECKPOINT} resumes at the "
            f"start of epoch {epoch} (nnUNetv2_train with --c)"
        )
        trainer.print_to_log_file(message)
        stop_augmentation_workers(trainer)
        raise TrainingInterrupted(message)
