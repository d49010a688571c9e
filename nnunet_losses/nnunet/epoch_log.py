"""The loss terms, their weights and the schedule state in nnU-Net's log, per epoch.

nnU-Net keeps one list entry per epoch for each key of its local log (``LocalLogger``),
stores those lists in every checkpoint and plots them in ``progress.png``. The package
adds three keys (:data:`LOG_KEYS`): ``loss_terms`` (each term's training mean),
``loss_weights`` and ``loss_schedule_state`` (the schedule's state at the end of the
epoch, which ``--c`` restores). Terms and weights also go, one scalar per term
(``loss_terms/<name>``), to every other logger nnU-Net runs (wandb with
``nnUNet_wandb_enabled``); the nested, sometimes ``None`` schedule state stays in the local
log and the checkpoint. The training log gets a line of weights at the start of each
epoch and a line of term means at its end; ``loss_terms.png`` is redrawn after every
epoch (:mod:`.progress_plot`).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..schedules import WeightSchedule
from .internals import local_log, log_locally, log_scalar_elsewhere
from .progress_plot import plot_loss_terms

if TYPE_CHECKING:
    from .trainer import nnUNetTrainerLosses

LOG_KEYS = ("loss_terms", "loss_weights", "loss_schedule_state")


def ensure_log_keys(trainer: nnUNetTrainerLosses) -> None:
    """Add the package's keys to nnU-Net's log, ``None`` for epochs logged without them (an older checkpoint)."""
    log = local_log(trainer)
    epochs_logged = len(log.get("train_losses", []))
    for key in LOG_KEYS:
        log.setdefault(key, [None] * epochs_logged)


def format_values(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in values.items())


def log_epoch_start(trainer: nnUNetTrainerLosses, weights: Mapping[str, float]) -> None:
    trainer.print_to_log_file("loss weights:", format_values(weights))


def log_epoch_end(trainer: nnUNetTrainerLosses, means: Mapping[str, float], weights: Mapping[str, float], schedule: WeightSchedule | None) -> None:
    """Terms and weights of this epoch (local log and other loggers), the schedule state (local log only), a log line."""
    for key, values in (("loss_terms", means), ("loss_weights", weights)):
        log_locally(trainer, key, dict(values))
        for name, value in values.items():
            log_scalar_elsewhere(trainer, f"{key}/{name}", value)
    log_locally(trainer, "loss_schedule_state", None if schedule is None else schedule.state_dict())
    trainer.print_to_log_file("loss terms (train mean):", format_values(means))


def plot_epoch(trainer: nnUNetTrainerLosses) -> None:
    """Redraw ``loss_terms.png`` in the output folder (rank 0)."""
    if trainer.local_rank == 0:
        plot_loss_terms(local_log(trainer), Path(trainer.output_folder) / "loss_terms.png")


def restore_schedule(trainer: nnUNetTrainerLosses, schedule: WeightSchedule | None) -> None:
    """After nnU-Net loaded a checkpoint: the schedule's state at the end of the last completed epoch."""
    ensure_log_keys(trainer)
    states = local_log(trainer)["loss_schedule_state"]
    last = trainer.current_epoch - 1
    if schedule is not None and 0 <= last < len(states) and states[last] is not None:
        schedule.load_state_dict(states[last])
        trainer.print_to_log_file(f"loss schedule restored at the end of epoch {last}")
