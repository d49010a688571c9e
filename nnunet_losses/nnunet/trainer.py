"""The base class of every trainer of the package: nnU-Net's trainer with a package loss.

A trainer only says which loss terms it uses and how they are weighted::

    class nnUNetTrainerRRWDiceGradual(nnUNetTrainerLosses):
        def loss_terms(self):
            return {"dice": SoftDiceLoss(include_background=True), "rw": RegionWiseLoss("rrw")}

        def loss_weights(self, names):
            return Gradual(names=names, num_epochs=self.num_epochs)

Everything else is nnU-Net's: ``run_training``, ``train_step``, ``validation_step``,
AMP, deep supervision, the learning-rate schedule, checkpoints, ``--c``, ``--val``,
DDP, ``torch.compile``. This class composes the package's pieces and overrides
nnU-Net's hooks to call them:

* the loss (:mod:`.loss_adapter`): the terms and weights above with nnU-Net's
  deep-supervision weights and ignore-label mask, compiled where nnU-Net compiles;
* the maps (:mod:`.map_transport`, :mod:`.dataset`, :mod:`.transforms`): precomputed
  ones through nnU-Net's data loader, recomputed on the augmented patch in the
  augmentation workers (``map_mode = "on_the_fly"``), or computed on the training device
  from nnU-Net's final target (``map_mode = "device"``); missing, stale or wrong maps,
  and region-based label setups, are refused before the first iteration;
* run bookkeeping (:mod:`.bookkeeping`): seed and budget, run record, divergence
  (:class:`~.bookkeeping.TrainingDiverged`, ``diverged.json``), ``progress.json``;
* the signal-triggered checkpoint (:mod:`.interruption`): SIGTERM, SIGUSR1 or SIGUSR2
  stop the training with a checkpoint that ``--c`` resumes at the start of the epoch
  in progress, exit status 75;
* logging (:mod:`.epoch_log`): terms, weights and schedule state per epoch in nnU-Net's
  log, its checkpoint and ``loss_terms.png``, the schedule restored on ``--c``.

nnU-Net internals beyond its hooks are reached through :mod:`.internals` only, which
also hands out nnU-Net's ``nnUNetTrainer`` (the base class) and checks the installed
nnU-Net when a trainer is built. ``PolyLRScheduler``
(``nnunetv2/training/lr_scheduler/polylr.py``) is nnU-Net's learning-rate schedule, used
here with Adam as nnU-Net uses it with SGD.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from ..losses import SegmentationLoss
from ..schedules import WeightSchedule
from . import epoch_log
from .bookkeeping import RunBookkeeping
from .configuration import PreprocessedConfiguration, configuration_from_managers, require_label_based
from .dataset import CaseMapsDataset, CropHandoff
from .internals import check_nnunet, deep_supervision_scales, deep_supervision_weights, nnUNetTrainer, nnunet_compiles
from .interruption import InterruptionGuard
from .loss_adapter import NnUNetLoss, build_package_loss
from .map_store import MapError, MapStore
from .map_transport import MapTransport
from .transforms import add_map_transforms


class nnUNetTrainerLosses(nnUNetTrainer):
    """nnU-Net trainer whose loss is a weighted sum of package loss terms."""

    map_mode: ClassVar[Literal["precomputed", "on_the_fly", "device"]] = "precomputed"
    optimizer_name: ClassVar[Literal["sgd", "adam"]] = "sgd"
    adam_learning_rate: ClassVar[float] = 1e-4
    deep_supervision: ClassVar[bool] = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        check_nnunet(self.print_to_log_file)
        self.bookkeeping = RunBookkeeping.from_environment()
        self.resumed_from_checkpoint = False  # set by load_checkpoint (nnUNetv2_train --c)
        self.bookkeeping.apply_budget_and_init_seed(self)
        if self.optimizer_name == "adam":
            self.initial_lr = self.adam_learning_rate
        self.enable_deep_supervision = self.deep_supervision
        self.map_transport: MapTransport | None = None
        self.map_slicing: dict[str, bool] = {}
        self.crop_handoffs = {"train": CropHandoff(), "val": CropHandoff()}  # dataset -> map transforms, per loader
        self.interruption = InterruptionGuard()
        epoch_log.ensure_log_keys(self)

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

    @property
    def schedule(self) -> WeightSchedule | None:
        """The weight schedule of the loss (``None`` for fixed weights, or before the loss is built)."""
        return None if self.loss is None else self.loss.schedule

    @property
    def current_weights(self) -> dict[str, float]:
        return self.loss.loss.weights

    def _build_loss(self) -> NnUNetLoss:
        require_label_based(self.dataset_json["labels"], f"{type(self).__name__}: {self.plans_manager.dataset_name}")
        terms = self.loss_terms()
        compiled = nnunet_compiles(self)
        loss = build_package_loss(
            terms, self.loss_weights(tuple(terms)), deep_supervision_weights(self), self.label_manager.ignore_label,
            self.label_manager.num_segmentation_heads, compiled,
        )
        if compiled:
            self.print_to_log_file(f"Using torch.compile for the loss terms {list(terms)}")
        self.map_transport = (
            MapTransport(loss.layout, self.map_mode, deep_supervision_scales(self), self.configuration_manager.spacing, self.label_manager.ignore_label)
            if loss.layout is not None
            else None
        )
        return loss

    def configure_optimizers(self):
        if self.optimizer_name == "sgd":
            return super().configure_optimizers()
        optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # --- maps through the data pipeline ------------------------------------------------------------

    def get_tr_and_val_datasets(self):
        train, val = super().get_tr_and_val_datasets()
        if self.map_transport is None or self.map_mode != "precomputed":
            return train, val
        store, kinds = MapStore(self.preprocessed_config), self.map_transport.layout.kinds
        handoffs = self.crop_handoffs
        return CaseMapsDataset(train, store, kinds, handoffs["train"]), CaseMapsDataset(val, store, kinds, handoffs["val"])

    def _with_maps(self, pipeline, scales, loader: str):
        if self.map_transport is None:
            return pipeline
        return add_map_transforms(pipeline, self.map_transport, scales, self.crop_handoffs[loader])

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug, **kwargs):
        pipeline = super().get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug, **kwargs
        )
        return self._with_maps(pipeline, deep_supervision_scales, "train")

    def get_validation_transforms(self, deep_supervision_scales, **kwargs):
        return self._with_maps(super().get_validation_transforms(deep_supervision_scales, **kwargs), deep_supervision_scales, "val")

    def _maps_of(self, batch: dict) -> list[torch.Tensor] | None:
        """The maps of ``batch``, leaving nnU-Net's own target in it."""
        return None if self.map_transport is None else self.map_transport.take(batch, self.device)

    # --- nnU-Net's steps -------------------------------------------------------------------------

    def train_step(self, batch: dict) -> dict:
        with self.loss.carrying(self._maps_of(batch)):
            result = super().train_step(batch)
        self.bookkeeping.record_step(self, float(result["loss"]))
        self.interruption.stop_if_signalled(self, self.bookkeeping.steps)
        return result

    def validation_step(self, batch: dict) -> dict:
        with self.loss.carrying(self._maps_of(batch)):
            result = super().validation_step(batch)
        self.interruption.stop_if_signalled(self, self.bookkeeping.steps)
        return result

    # --- epochs ----------------------------------------------------------------------------------

    def run_training(self) -> None:
        self.interruption.install()
        super().run_training()

    def on_epoch_start(self) -> None:
        self.interruption.epoch_started(self)
        super().on_epoch_start()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.schedule is not None:
            self.schedule.begin_epoch(self.current_epoch)
        self.bookkeeping.start_epoch()
        epoch_log.log_epoch_start(self, self.current_weights)

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        if self.schedule is not None:
            self.schedule.end_epoch()
        epoch_log.log_epoch_end(self, self.bookkeeping.epoch_means(), self.current_weights, self.schedule)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()
        epoch_log.plot_epoch(self)
        self.bookkeeping.write_progress(self)

    def on_train_end(self) -> None:
        self.interruption.training_ended()
        super().on_train_end()

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        self.resumed_from_checkpoint = True
        epoch_log.restore_schedule(self, self.schedule)

    # --- start of training: maps, seeds, record --------------------------------------------------

    def _require_maps(self) -> None:
        if self.map_transport is None or self.map_mode != "precomputed":
            return
        kinds = list(self.map_transport.layout.kinds)
        train_keys, val_keys = self.do_split()
        try:
            self.map_slicing = MapStore(self.preprocessed_config).verify_all(sorted(set(train_keys) | set(val_keys)), tuple(kinds))
        except MapError as error:
            message = f"{type(self).__name__} needs the maps {kinds}: {error}"
            self.print_to_log_file(message)
            raise MapError(message) from error
        self.print_to_log_file(f"maps {kinds} verified; computed per slice: {self.map_slicing}")

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        self._require_maps()
        self.bookkeeping.clear_divergence(self)
        super().on_train_start()
        self.bookkeeping.seed_sample_stream(self)
        self.bookkeeping.write_run_record(self)
