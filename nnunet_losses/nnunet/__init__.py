"""The nnU-Net integration: the only subpackage that imports nnunetv2.

* :mod:`.internals` — every nnU-Net internal the package relies on, and the start-up check of the installed nnU-Net;
* :mod:`.configuration` — dataset, plans and configuration resolved as nnU-Net does, with clear errors;
* :mod:`.map_layout` — which maps a trainer needs, stacked as channels, computed from nnU-Net labels;
* :mod:`.map_store` — where maps live beside the preprocessed data, atomic writes, staleness checks;
* :mod:`.setup_maps` — ``setup_maps.py`` / ``nnunet-losses setup-maps``;
* :mod:`.dataset` — where nnU-Net's own data loader cut each crop, handed on with the case's map files;
* :mod:`.patch_sampling` — the maps of one augmented patch, read once from its case's files;
* :mod:`.transforms` — maps to nnU-Net's target through its augmentation and deep supervision, or recomputed on the patch;
* :mod:`.map_transport` — how maps travel with nnU-Net's target from the augmentation to the loss;
* :mod:`.loss_adapter` — the ``loss(output, target)`` object nnU-Net calls;
* :mod:`.trainer` — :class:`~.trainer.nnUNetTrainerLosses`, the base of every trainer in ``trainers/``;
* :mod:`.run_settings` — seed and budget from the environment;
* :mod:`.bookkeeping` — seeds, budget, run record, divergence and progress file of a training;
* :mod:`.interruption` — a signal-triggered checkpoint at the start of the epoch in progress;
* :mod:`.epoch_log` — loss terms, weights and schedule state in nnU-Net's log, ``loss_terms.png``;
* :mod:`.progress_plot` — ``loss_terms.png``;
* :mod:`.small_plans` — a small plans variant for CPU tests, demos and studies;
* :mod:`.preflight` — trainer lookup and readiness checks before launching trainings.

The files a training leaves in its nnU-Net output folder for the studies to read are named here,
so that readers import their names from one place.
"""

DIVERGED_MARKER = "diverged.json"
"""Written when the loss diverged (:mod:`.bookkeeping`); a study counts the run as diverged, not failed."""

RUN_RECORD = "nnunet_losses_run.json"
"""One entry per start of a training (seed, budget, loss, maps, ``"resumed"`` for ``--c`` starts; :mod:`.bookkeeping`)."""

PROGRESS_FILE = "progress.json"
"""Rewritten after every epoch: epochs and iterations completed, pseudo Dice, epoch time (:mod:`.bookkeeping`)."""

INTERRUPTIONS_FILE = "interruptions.json"
"""One entry per signal-triggered stop: signal, epoch in progress, iterations done in it, time (:mod:`.interruption`)."""

INTERRUPTED_EXIT_CODE = 75
"""Exit status of a training stopped by SIGTERM, SIGUSR1 or SIGUSR2 (``EX_TEMPFAIL``): resume it with ``--c``."""
