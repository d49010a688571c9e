"""Studies over many nnU-Net trainings: convergence CDFs over seeds and cross-validation comparisons.

Command line: ``nnunet-losses study cdf|compare|status`` (:mod:`.cli`). Modules:

* :mod:`.spec` — a study's parameters, its runs (trainer, seed, fold) and ``study.json``;
* :mod:`.runs` — the folder layout of a run and its state (done, running, failed, ...);
* :mod:`.launch` — one attempt of a run: the ``nnUNetv2_train`` command, environment,
  core pinning, markers and log, the stop protocol (SIGTERM, checkpoint, exit status 75);
* :mod:`.executors` — local (sequential or parallel, pinned cores) and Slurm (one job per run, followed);
* :mod:`.slurm` — Slurm jobs: submission, job ids per run, Slurm's states, the job body that
  turns the time-limit signal and preemption into a checkpoint and a requeue;
* :mod:`.progress` — the tqdm progress display of a running study (from the trainers' ``progress.json``);
* :mod:`.runner` — refusal of bad input, the study lock, which runs to launch;
* :mod:`.collect` — per-run Dice from nnU-Net's ``summary.json``, CSV writing;
* :mod:`.case_metrics` — per-case Dice, HD95, ASSD, d_3D and Delta from predictions;
* :mod:`.compare` — mean ± std per trainer and paired tests against a baseline;
* :mod:`.plots` — empirical-CDF plot and box plots;
* :mod:`.reports` — the result files of a study;
* :mod:`.status` — the status table of a study folder.
"""
