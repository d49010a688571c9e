"""The base class of every trainer of the package: nnU-Net's trainer with a package loss.

A trainer only says which loss terms it uses and how they are weighted::

    class nnUNetTrainerRRWDiceGradual(nnUNetTrainerLosses):
        def loss_terms(self):
            return {"dice": SoftDiceLoss(include_background=True), "rw": RegionWiseLoss("rrw")}

        def loss_weights(self, names):
            return Gradual(names=names, num_epochs=self.num_epochs)

Everything else is nnU-Net's: ``run_training``, ``train_step``, ``validation_step``,
AMP, deep supervision, the learning-rate schedule, checkpoints, ``--c``, ``--val``,
DDP. This class only

* builds the loss (with nnU-Net's deep-supervision weights and ignore-label mask),
* brings the maps each batch needs (precomputed ones through the data loader, see
  :mod:`.dataset`; recomputed on the augmented patch in the augmentation workers,
  ``map_mode = "on_the_fly"``; or computed on the training device from the final target
  of every deep-supervision scale, ``map_mode = "device"``, see :mod:`.transforms`) and
  hands them to the loss right before nnU-Net's step functions run,
* drives the weight schedule (begin/observe/end of each epoch), logs the loss terms
  and weights per epoch in nnU-Net's log, its checkpoint and ``loss_terms.png``, and
  restores the schedule on ``--c``,
* refuses to start, before the first iteration, when maps are missing, stale or of the
  wrong kind, and on region-based label setups (not supported by these losses),
* applies the seed and budget of :mod:`.run_settings` and records them,
* stops a training whose loss diverged (:class:`TrainingDiverged`), leaving
  ``diverged.json`` in the output folder for the studies to count it.

**Divergence.** After every training iteration the loss terms (averaged over DDP
ranks) are checked: when any term, or nnU-Net's total loss of the step, is not finite,
or a weight schedule refuses the values, the trainer writes ``diverged.json``
(``{"epoch", "iteration", "loss_terms", "total_loss", "reason", "time"}``, rank 0) into
its output folder and raises :class:`TrainingDiverged`, so ``nnUNetv2_train`` exits
with an error. The marker is what a study reads to count the run as diverged rather
than failed (:mod:`nnunet_losses.study.runs`); a new start of the same training
(``--c`` included) removes an old marker before its first iteration.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal

import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import distributed as dist

from .. import __version__
from . import DIVERGED_MARKER
from ..losses import CompositeLoss, SegmentationLoss
from ..schedules import WeightSchedule
from .configuration import PreprocessedConfiguration, configuration_from_managers
from .dataset import MapAttachingDataset
from .loss_adapter import NnUNetLoss, device_maps
from .map_layout import MapLayout
from .map_store import MapError, MapStore
from .progress_plot import plot_loss_terms
from .run_settings import RunSettings, seed_everything
from .transforms import add_map_transforms

LOG_KEYS = ("loss_terms", "loss_weights", "loss_schedule_state")
RUN_RECORD = "nnunet_losses_run.json"


class TrainingDiverged(RuntimeError):
    """The loss became non-finite (or a schedule refused its values); ``diverged.json`` says when."""


class nnUNetTrainerLosses(nnUNetTrainer):
    """nnU-Net trainer whose loss is a weighted sum of package loss terms."""

    map_mode: ClassVar[Literal["precomputed", "on_the_fly", "device"]] = "precomputed"
    optimizer_name: ClassVar[Literal["sgd", "adam"]] = "sgd"
    adam_learning_rate: ClassVar[float] = 1e-4
    deep_supervision: ClassVar[bool] = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.run_settings = RunSettings.from_environment()
        for attribute, value in self.run_settings.budget().items():
            setattr(self, attribute, value)
        self.sample_seeds: dict | None = None
        if self.run_settings.seed is not None:
            seed_everything(self.run_settings.init_seed(self.local_rank))
        if self.optimizer_name == "adam":
            self.initial_lr = self.adam_learning_rate
        self.enable_deep_supervision = self.deep_supervision
        self.schedule: WeightSchedule | None = None
        self.map_layout: MapLayout | None = None
        self.map_slicing: dict[str, bool] = {}
        self._term_sums: dict[str, float] = {}
        self._term_count = 0
        self._ensure_log_keys()

    # --- what subclasses define ------------------------------------------------------------------

    def loss_terms(self) -> dict[str, SegmentationLoss]:
        """The named loss terms. Subclasses must override this."""
        raise NotImplementedError(f"{type(self).__name__} must define loss_terms()")

    def loss_weights(self, names: tuple[str, ...]) -> WeightSchedule | Mapping[str, float]:
        """Weights of the terms: fixed numbers or a schedule. Default: 1 each."""
        return {name: 1.0 for name in names}

    # --- loss, optimiser -------------------------------------------------------------------------

    @property
    def preprocessed_config(self) -> PreprocessedConfiguration:
        return configuration_from_managers(
            self.plans_manager, self.configuration_name, self.dataset_json, self.preprocessed_dataset_folder_base
        )

    def _build_loss(self) -> NnUNetLoss:
        if self.label_manager.has_regions:
            raise RuntimeError(
                f"{type(self).__name__} does not support region-based training (dataset.json 'regions_class_order'): "
                "its losses need one softmax class per label. Use a label-based dataset.json."
            )
        reference = super()._build_loss()  # only for nnU-Net's own deep-supervision weights
        ds_weights = reference.weight_factors if isinstance(reference, DeepSupervisionWrapper) else None
        terms = self.loss_terms()
        weights = self.loss_weights(tuple(terms))
        self.schedule = weights if isinstance(weights, WeightSchedule) else None
        composite = CompositeLoss(terms, weights)
        kinds = composite.required_maps
        self.map_layout = MapLayout(kinds, self.label_manager.num_segmentation_heads) if kinds else None
        return NnUNetLoss(composite, ds_weights, self.label_manager.ignore_label, self.map_layout)

    def configure_optimizers(self):
        if self.optimizer_name == "sgd":
            return super().configure_optimizers()
        optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # --- maps through the data pipeline ------------------------------------------------------------

    def get_tr_and_val_datasets(self):
        train, val = super().get_tr_and_val_datasets()
        if self.map_layout is None or self.map_mode != "precomputed":
            return train, val
        store = MapStore(self.preprocessed_config)
        return MapAttachingDataset(train, store, self.map_layout.kinds), MapAttachingDataset(val, store, self.map_layout.kinds)

    def _with_maps(self, pipeline: ComposeTransforms, deep_supervision_scales) -> ComposeTransforms:
        if self.map_layout is None:
            return pipeline
        return add_map_transforms(
            pipeline,
            self.map_layout,
            self.map_mode,
            self.configuration_manager.spacing,
            self.label_manager.ignore_label,
            deep_supervision_scales,
        )

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug, **kwargs):
        pipeline = super().get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug, **kwargs
        )
        return self._with_maps(pipeline, deep_supervision_scales)

    def get_validation_transforms(self, deep_supervision_scales, **kwargs):
        return self._with_maps(super().get_validation_transforms(deep_supervision_scales, **kwargs), deep_supervision_scales)

    def _hand_maps_to_loss(self, batch: dict) -> None:
        """Split ``[segs..., maps...]`` back into nnU-Net's target and the loss's maps; in the device mode, compute
        the maps of nnU-Net's target."""
        if self.map_layout is None:
            return
        target = batch["target"]
        if self.map_mode == "device":
            segs = [seg.to(self.device, non_blocking=True) for seg in (target if isinstance(target, list) else [target])]
            maps = self._device_maps(segs)
        else:
            half = len(target) // 2
            segs, maps = target[:half], list(target[half:])
        batch["target"] = segs if self.enable_deep_supervision else segs[0]
        self.loss.attach_maps(maps)

    def _device_maps(self, segs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Maps of every scale's target, computed on ``self.device`` (see :func:`.loss_adapter.device_maps`)."""
        scales = self._get_deep_supervision_scales() if self.enable_deep_supervision else [[1] * (segs[0].ndim - 2)]
        return device_maps(segs, self.map_layout, self.configuration_manager.spacing, self.label_manager.ignore_label, scales)

    def train_step(self, batch: dict) -> dict:
        self._hand_maps_to_loss(batch)
        result = super().train_step(batch)
        self._record_terms(float(result["loss"]))
        return result

    def validation_step(self, batch: dict) -> dict:
        self._hand_maps_to_loss(batch)
        return super().validation_step(batch)

    # --- schedule and logging --------------------------------------------------------------------

    def _ensure_log_keys(self) -> None:
        logging = self.logger.local_logger.my_fantastic_logging
        epochs_logged = len(logging.get("train_losses", []))
        for key in LOG_KEYS:
            logging.setdefault(key, [None] * epochs_logged)

    @property
    def current_weights(self) -> dict[str, float]:
        return self.loss.loss.weights

    def _record_terms(self, total_loss: float) -> None:
        """Add this step's loss terms to the epoch sums and the schedule; stop if the training diverged."""
        values = self.loss.last_values
        names = list(values)
        stacked = torch.stack([values[name].detach().float() for name in names])
        if self.is_ddp:  # every rank must see the same values, or the schedules drift apart
            dist.all_reduce(stacked)
            stacked /= dist.get_world_size()
        numbers = dict(zip(names, stacked.tolist()))
        if not all(math.isfinite(value) for value in (*numbers.values(), total_loss)):
            self._diverged(numbers, total_loss, "a loss value is not finite")
        for name, value in numbers.items():
            self._term_sums[name] = self._term_sums.get(name, 0.0) + value
        self._term_count += 1
        if self.schedule is not None:
            try:
                self.schedule.observe(numbers)
            except ValueError as error:
                self._diverged(numbers, total_loss, str(error), error)

    def _diverged(self, numbers: Mapping[str, float], total_loss: float, reason: str, cause: Exception | None = None) -> None:
        """Write ``diverged.json`` (rank 0) and raise :class:`TrainingDiverged`."""
        marker = Path(self.output_folder) / DIVERGED_MARKER
        if self.local_rank == 0:
            record = {
                "epoch": self.current_epoch,
                "iteration": self._term_count,
                "loss_terms": {name: repr(value) for name, value in numbers.items()},
                "total_loss": repr(total_loss),
                "reason": reason,
                "time": datetime.now().isoformat(timespec="seconds"),
            }
            temporary = marker.with_suffix(".tmp")
            temporary.write_text(json.dumps(record, indent=2))
            temporary.replace(marker)
        message = f"epoch {self.current_epoch}, iteration {self._term_count}: loss terms {numbers}, total {total_loss}: {reason}; the training diverged (recorded in {marker})"
        self.print_to_log_file(message)
        raise TrainingDiverged(message) from cause

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.schedule is not None:
            self.schedule.begin_epoch(self.current_epoch)
        self._term_sums, self._term_count = {}, 0
        self.print_to_log_file("loss weights:", _format(self.current_weights))

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        if self.schedule is not None:
            self.schedule.end_epoch()
        means = {name: total / max(self._term_count, 1) for name, total in self._term_sums.items()}
        self._log_epoch_values("loss_terms", means)
        self._log_epoch_values("loss_weights", self.current_weights)
        self.logger.local_logger.log("loss_schedule_state", None if self.schedule is None else self.schedule.state_dict(), self.current_epoch)
        self.print_to_log_file("loss terms (train mean):", _format(means))

    def _log_epoch_values(self, key: str, values: Mapping[str, float]) -> None:
        """``values`` of this epoch: whole in nnU-Net's local log (checkpoint, plots), one scalar per term
        (``key/name``) in every other logger nnU-Net runs (wandb with ``nnUNet_wandb_enabled``, which forwards
        whatever ``MetaLogger.log`` gets, ``nnunetv2/training/logging/nnunet_logger.py``). The schedule state is
        nested and sometimes ``None``: it stays in the local log and the checkpoint only."""
        self.logger.local_logger.log(key, dict(values), self.current_epoch)
        for logger in self.logger.loggers:
            for name, value in values.items():
                logger.log(f"{key}/{name}", float(value), self.current_epoch)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        if self.local_rank == 0:
            plot_loss_terms(self.logger.local_logger.my_fantastic_logging, Path(self.output_folder) / "loss_terms.png")

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        self._ensure_log_keys()
        states = self.logger.local_logger.my_fantastic_logging["loss_schedule_state"]
        last = self.current_epoch - 1
        if self.schedule is not None and 0 <= last < len(states) and states[last] is not None:
            self.schedule.load_state_dict(states[last])
            self.print_to_log_file(f"loss schedule restored at the end of epoch {last}")

    # --- start of training: maps, seeds, record --------------------------------------------------

    def _require_maps(self) -> None:
        if self.map_layout is None or self.map_mode != "precomputed":
            return
        train_keys, val_keys = self.do_split()
        try:
            self.map_slicing = MapStore(self.preprocessed_config).verify_all(sorted(set(train_keys) | set(val_keys)), self.map_layout.kinds)
        except MapError as error:
            message = f"{type(self).__name__} needs the maps {list(self.map_layout.kinds)}: {error}"
            self.print_to_log_file(message)
            raise MapError(message) from error
        self.print_to_log_file(f"maps {list(self.map_layout.kinds)} verified; computed per slice: {self.map_slicing}")

    def _seed_sample_stream(self) -> None:
        """Seed the main process and restart the augmentation workers with seeds of this rank and start epoch."""
        augmenters = (self.dataloader_train, self.dataloader_val)
        workers = [getattr(a, "num_processes", 0) if hasattr(a, "restart") else 0 for a in augmenters]
        self.sample_seeds = self.run_settings.sample_seeds(self.local_rank, self.current_epoch, *workers)
        seed_everything(self.sample_seeds["main"])
        for augmenter, seeds in zip(augmenters, (self.sample_seeds["train_workers"], self.sample_seeds["val_workers"])):
            if seeds:
                augmenter.seeds = seeds
                augmenter.restart()

    def _write_run_record(self) -> None:
        if self.local_rank != 0:
            return
        path = Path(self.output_folder) / RUN_RECORD
        record = json.loads(path.read_text()) if path.is_file() else {"runs": []}
        record["runs"].append(
            {
                "started": datetime.now().isoformat(timespec="seconds"),
                "start_epoch": self.current_epoch,
                "resumed": self.current_epoch > 0,
                "trainer": type(self).__name__,
                "seed": self.run_settings.seed,
                "sample_seeds": self.sample_seeds,
                "world_size": dist.get_world_size() if self.is_ddp else 1,
                "num_epochs": self.num_epochs,
                "num_iterations_per_epoch": self.num_iterations_per_epoch,
                "num_val_iterations_per_epoch": self.num_val_iterations_per_epoch,
                "loss_terms": {name: repr(term) for name, term in self.loss.loss.terms.items()},
                "schedule": None if self.schedule is None else {"name": self.schedule.key, **self.schedule.config()},
                "map_mode": self.map_mode if self.map_layout is not None else None,
                "maps": list(self.map_layout.kinds) if self.map_layout is not None else [],
                "maps_per_slice": self.map_slicing,
                "optimizer": self.optimizer_name,
                "initial_lr": self.initial_lr,
                "device": str(self.device),
                "versions": {"nnunet_losses": __version__, "torch": torch.__version__},
            }
        )
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        temporary.replace(path)

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        self._require_maps()
        if self.local_rank == 0:
            (Path(self.output_folder) / DIVERGED_MARKER).unlink(missing_ok=True)
        super().on_train_start()
        if self.run_settings.seed is not None:
            self._seed_sample_stream()
            self.print_to_log_file(
                f"seed {self.run_settings.seed} (NNUNET_LOSSES_SEED), rank {self.local_rank}, sample stream from epoch {self.current_epoch}"
            )
        self._write_run_record()


def _format(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in values.items())
