"""Every nnU-Net internal the package relies on, used here and nowhere else, and the start-up check.

nnU-Net's trainer is extended by overriding its methods (``_build_loss``,
``get_training_transforms``, ``train_step``, ``on_epoch_end``, ...: what nnU-Net's own
trainer variants do, :mod:`.trainer` does that). Beyond those hooks the package needs a
few things nnU-Net offers no interface for; each one is reached through a function of
this module only (``tests/test_nnunet_internals.py`` fails when one is used anywhere else
or a new one appears), so a new nnU-Net version is checked here:

* ``nnUNetTrainer._get_deep_supervision_scales`` and ``nnUNetTrainer._do_i_compile``
  (``nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py``): the scales of the targets
  and nnU-Net's rule for ``torch.compile`` (CUDA, not Windows, ``nnUNet_compile``);
* nnU-Net's own loss, ``nnUNetTrainer._build_loss`` called past any override, and the
  ``weight_factors`` of its ``DeepSupervisionWrapper``
  (``nnunetv2/training/loss/deep_supervision.py``): nnU-Net's deep-supervision weights;
* ``nnUNetTrainer.save_checkpoint``, which stores ``current_epoch + 1`` (it is called at
  the end of an epoch, before ``on_epoch_end`` increments the epoch): a checkpoint that
  resumes at the start of epoch ``e`` is saved with ``current_epoch = e - 1``, as
  nnU-Net's ``on_train_end`` does for ``checkpoint_final.pth``;
* ``MetaLogger.local_logger`` and ``MetaLogger.loggers``, ``LocalLogger.my_fantastic_logging``
  and ``LocalLogger.log`` (``nnunetv2/training/logging/nnunet_logger.py``): the per-epoch
  lists that nnU-Net checkpoints and plots, and the other loggers (wandb);
* ``NonDetMultiThreadedAugmenter`` / ``MultiThreadedAugmenter``'s ``num_processes``,
  ``seeds``, ``restart`` and ``_finish`` (``batchgenerators/dataloading/nondet_multi_threaded_augmenter.py``,
  ``batchgenerators/dataloading/multi_threaded_augmenter.py``): reseeding and stopping
  nnU-Net's augmentation workers;
* ``nnUNetTrainer`` itself, the base class of :mod:`.trainer`, which imports it from here.

:func:`check_nnunet` runs when a package trainer is built: it warns when the installed
nnU-Net is not the one the package was tested with (naming both) and raises
:class:`NnUNetIncompatible` when one of these internals is missing.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import warnings
from collections.abc import Sequence
from typing import Any

from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from nnunetv2.training.logging.nnunet_logger import LocalLogger, MetaLogger
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

TESTED_NNUNET = "2.8.1"
"""The nnunetv2 release the package's tests run against."""
SUPPORTED_NNUNET = ">=2.8,<2.9"
"""The nnunetv2 versions ``pyproject.toml`` accepts (a test keeps the two equal)."""

TRAINER_FILE = "nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py"
LOGGER_FILE = "nnunetv2/training/logging/nnunet_logger.py"
AUGMENTER_FILE = "batchgenerators/dataloading/nondet_multi_threaded_augmenter.py"
REQUIRED = {
    "nnUNetTrainer._get_deep_supervision_scales": (lambda: hasattr(nnUNetTrainer, "_get_deep_supervision_scales"), TRAINER_FILE),
    "nnUNetTrainer._do_i_compile": (lambda: hasattr(nnUNetTrainer, "_do_i_compile"), TRAINER_FILE),
    "nnUNetTrainer._build_loss": (lambda: hasattr(nnUNetTrainer, "_build_loss"), TRAINER_FILE),
    "nnUNetTrainer.save_checkpoint": (lambda: hasattr(nnUNetTrainer, "save_checkpoint"), TRAINER_FILE),
    "DeepSupervisionWrapper.weight_factors": (
        lambda: hasattr(DeepSupervisionWrapper(lambda *a: 0, [1.0]), "weight_factors"),
        "nnunetv2/training/loss/deep_supervision.py",
    ),
    "LocalLogger.my_fantastic_logging": (lambda: isinstance(getattr(LocalLogger(), "my_fantastic_logging", None), dict), LOGGER_FILE),
    "LocalLogger.log": (lambda: hasattr(LocalLogger, "log"), LOGGER_FILE),
    "MetaLogger.local_logger": (lambda: "local_logger" in MetaLogger.__init__.__code__.co_names, LOGGER_FILE),
    "MetaLogger.loggers": (lambda: "loggers" in MetaLogger.__init__.__code__.co_names, LOGGER_FILE),
    "NonDetMultiThreadedAugmenter.restart": (lambda: hasattr(NonDetMultiThreadedAugmenter, "restart"), AUGMENTER_FILE),
    "NonDetMultiThreadedAugmenter._finish": (lambda: hasattr(NonDetMultiThreadedAugmenter, "_finish"), AUGMENTER_FILE),
    "NonDetMultiThreadedAugmenter.seeds": (lambda: "seeds" in NonDetMultiThreadedAugmenter.__init__.__code__.co_names, AUGMENTER_FILE),
}
"""Each internal used below, a check that the installed version has it, and nnU-Net's file that defines it."""


class NnUNetIncompatible(RuntimeError):
    """The installed nnU-Net lacks something this package relies on."""


_checked = False


def check_nnunet(log) -> None:
    """Warn (once per process, also through ``log``) when nnunetv2 is not the tested version; raise when an internal is missing."""
    global _checked
    installed = importlib.metadata.version("nnunetv2")
    missing = [f"{name} ({file})" for name, (present, file) in REQUIRED.items() if not present()]
    if missing:
        raise NnUNetIncompatible(
            f"nnunetv2 {installed} lacks {', '.join(missing)}, which nnunet-losses relies on; it was tested with nnunetv2 "
            f"{TESTED_NNUNET}. Install a supported nnU-Net: pip install 'nnunetv2{SUPPORTED_NNUNET}'"
        )
    if installed != TESTED_NNUNET and not _checked:
        message = (
            f"nnunetv2 {installed} is installed; nnunet-losses was tested with nnunetv2 {TESTED_NNUNET} "
            f"(supported: {SUPPORTED_NNUNET}). Its trainers rely on nnU-Net internals; check the results of a short run."
        )
        warnings.warn(message, stacklevel=2)
        log(message)
    _checked = True


# --- the trainer ----------------------------------------------------------------------------------------------------


def deep_supervision_scales(trainer: nnUNetTrainer) -> list[list[float]] | None:
    """nnU-Net's target scales (one per network output; ``None`` without deep supervision)."""
    return trainer._get_deep_supervision_scales()


def nnunet_compiles(trainer: nnUNetTrainer) -> bool:
    """Whether nnU-Net compiles the network and its loss for this trainer (``_do_i_compile``)."""
    return trainer._do_i_compile()


def nnunet_default_loss(trainer: nnUNetTrainer):
    """The loss ``nnUNetTrainer._build_loss`` builds for ``trainer`` (Dice + CE, deep supervision), past any override."""
    return nnUNetTrainer._build_loss(trainer)


def deep_supervision_weights(trainer: nnUNetTrainer) -> tuple[float, ...] | None:
    """nnU-Net's weight of each deep-supervision output, read from the loss nnU-Net builds; ``None`` without it.

    ``1 / 2^i`` normalised to sum 1 with the lowest output at 0 (``1e-6`` under DDP
    without compile), whatever nnU-Net's version decides: the weights are nnU-Net's own.
    """
    reference = nnunet_default_loss(trainer)
    return tuple(float(w) for w in reference.weight_factors) if isinstance(reference, DeepSupervisionWrapper) else None


def checkpoint_at_epoch_start(trainer: nnUNetTrainer) -> bytes | None:
    """nnU-Net's checkpoint of the trainer now, at the start of ``trainer.current_epoch``, as bytes; ``--c`` from it
    starts that epoch. ``None`` where nnU-Net writes no checkpoint (DDP ranks other than 0, ``--disable_checkpointing``)."""
    if trainer.local_rank != 0 or trainer.disable_checkpointing:
        return None
    buffer = io.BytesIO()
    trainer.current_epoch -= 1  # save_checkpoint stores current_epoch + 1
    try:
        trainer.save_checkpoint(buffer)
    finally:
        trainer.current_epoch += 1
    return buffer.getvalue()


# --- nnU-Net's logger -----------------------------------------------------------------------------------------------


def local_log(trainer: nnUNetTrainer) -> dict[str, list]:
    """nnU-Net's per-epoch lists (``my_fantastic_logging``): what its checkpoint stores and ``progress.png`` plots."""
    return trainer.logger.local_logger.my_fantastic_logging


def log_locally(trainer: nnUNetTrainer, key: str, value: Any) -> None:
    """Log ``value`` for the current epoch in nnU-Net's local log only (nested values other loggers cannot take)."""
    trainer.logger.local_logger.log(key, value, trainer.current_epoch)


def log_scalar_elsewhere(trainer: nnUNetTrainer, key: str, value: float) -> None:
    """Log a scalar for the current epoch in every logger nnU-Net runs besides its local one (wandb)."""
    for logger in trainer.logger.loggers:
        logger.log(key, float(value), trainer.current_epoch)


# --- nnU-Net's augmentation workers ---------------------------------------------------------------------------------


def reseedable_workers(augmenter) -> int:
    """Number of worker processes of an augmenter whose workers can be reseeded (0 for nnU-Net's single-threaded one)."""
    return int(augmenter.num_processes) if isinstance(augmenter, (NonDetMultiThreadedAugmenter, MultiThreadedAugmenter)) else 0


def reseed_workers(augmenter, seeds: Sequence[int]) -> None:
    """Restart the augmenter's workers, worker ``i`` seeded with ``seeds[i]`` (batchgenerators seeds each worker's NumPy)."""
    augmenter.seeds = [int(s) for s in seeds]
    augmenter.restart()


def stop_augmentation_workers(trainer: nnUNetTrainer) -> None:
    """Stop the training and validation workers, as nnU-Net's ``on_train_end`` does (their messages silenced)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for augmenter in (trainer.dataloader_train, trainer.dataloader_val):
            if isinstance(augmenter, (NonDetMultiThreadedAugmenter, MultiThreadedAugmenter)):
                augmenter._finish()

