"""The nnU-Net integration: the only subpackage that imports nnunetv2.

* :mod:`.configuration` — dataset, plans and configuration resolved as nnU-Net does, with clear errors;
* :mod:`.map_layout` — which maps a trainer needs, stacked as channels, computed from nnU-Net labels;
* :mod:`.map_store` — where maps live beside the preprocessed data, atomic writes, staleness checks;
* :mod:`.setup_maps` — ``setup_maps.py`` / ``nnunet-losses setup-maps``;
* :mod:`.dataset` — precomputed maps attached to nnU-Net's cases for its own data loader;
* :mod:`.transforms` — maps through nnU-Net's augmentation and deep supervision, or recomputed on the patch;
* :mod:`.loss_adapter` — the ``loss(output, target)`` object nnU-Net calls;
* :mod:`.trainer` — :class:`~.trainer.nnUNetTrainerLosses`, the base of every trainer in ``trainers/``;
* :mod:`.run_settings` — seed and budget from the environment;
* :mod:`.progress_plot` — ``loss_terms.png``;
* :mod:`.small_plans` — a small plans variant for CPU runs;
* :mod:`.preflight` — trainer lookup and readiness checks before launching trainings.
"""

DIVERGED_MARKER = "diverged.json"
"""The file a trainer writes into its output folder when its loss diverged (:mod:`.trainer`); studies read it."""
