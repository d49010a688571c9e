"""Run a study: refuse bad input before anything starts, then launch what is not done.

Order of a study invocation:

1. ``study.json`` in the study folder, if present, must hold the same parameters
   (:func:`.spec.check_spec`);
2. :func:`preflight`: the dataset, plans and configuration exist, the dataset is
   label-based (not region-based), and every trainer is found and has its maps
   (:func:`nnunet_losses.nnunet.preflight.check_trainer`, once per trainer); trainers
   that ignore the ``NNUNET_LOSSES_*`` budget are refused when the study sets one;
   :func:`ensure_splits` then writes nnU-Net's default split if there is none;
3. under a lock on the study folder (one study process per folder; an ``flock`` that
   the system releases when the process dies), ``study.json`` is written and each run's
   state decides (see :mod:`.runs`): ``done`` runs are skipped, ``running`` ones (still
   alive from an earlier invocation or on the cluster) are left alone, ``interrupted``
   and ``left`` ones are launched — with ``--c`` when they have a checkpoint.
   ``failed`` runs stay failed unless ``retry_failed`` is set: a seed whose training
   crashed (e.g. diverged) is a result of a convergence study, and retrying it until it
   succeeds would bias the CDF; retry after transient failures (out of memory, a lost
   node) with ``--retry-failed``. A failed run does not stop the others.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..nnunet.configuration import ConfigurationError, PreprocessedConfiguration, load_configuration
from .collect import foreground_label_names
from .executors import Executor
from .launch import RunLaunch
from .progress import StudyProgress
from .runs import RunStatus, State, study_statuses, write_json
from .spec import StudySpec, check_spec, save_spec

LOCK_FILE = ".study.lock"
RESTARTED_STATES = (State.INTERRUPTED, State.LEFT)


class StudyBusyError(RuntimeError):
    """Another study process works on the same folder."""


def preflight(spec: StudySpec, device: str, local: bool) -> PreprocessedConfiguration:
    """Raise ``ConfigurationError``/``MapError`` unless every run of the study can start."""
    from ..nnunet.preflight import check_trainer
    from ..nnunet.trainer import nnUNetTrainerLosses

    if shutil.which("nnUNetv2_train") is None:
        raise ConfigurationError("nnUNetv2_train is not on PATH; activate the environment where nnU-Net is installed")
    config = load_configuration(spec.dataset, spec.configuration, spec.plans)
    foreground_label_names(json.loads((config.dataset_folder / "dataset.json").read_text()))  # refuses region-based datasets
    for trainer in spec.trainers:
        trainer_class = check_trainer(spec.dataset, spec.configuration, trainer, spec.folds[0], spec.plans)
        if issubclass(trainer_class, nnUNetTrainerLosses):
            continue
        if spec.has_budget:
            raise ConfigurationError(
                f"{trainer} is not a trainer of nnunet-losses and ignores the study's seed and budget "
                "(--epochs/--iterations/--val-iterations); its runs would not be comparable. "
                "Use trainers of nnunet-losses, or a subclass of nnunet_losses.nnunet.trainer.nnUNetTrainerLosses"
            )
        print(f"note: {trainer} is not a trainer of nnunet-losses; its runs ignore the seed (NNUNET_LOSSES_SEED)")
    if local and device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigurationError("--device cuda, but no CUDA device is visible here; use --device cpu or --executor slurm")
    return config


def ensure_splits(config: PreprocessedConfiguration) -> None:
    """Write nnU-Net's default split if the dataset has none yet.

    ``nnUNetTrainer.do_split`` creates ``splits_final.json`` (5 folds, KFold seed 12345, on
    the sorted case identifiers) on the first training, without a lock; runs that start
    together could read it half written. Writing the same split once, atomically, before
    launching avoids that; an existing (e.g. custom) split is left as it is.
    """
    path = config.dataset_folder / "splits_final.json"
    if path.is_file():
        return
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    write_json(path, generate_crossval_split(config.case_identifiers(), seed=12345, n_splits=5))


@contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<study dir>/.study.lock``; refuse if another process holds it."""
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise StudyBusyError(
                f"another study process (pid {handle.read().strip() or '?'}) is working on {study_dir}; "
                "wait for it, or follow it with: nnunet-losses study status " + str(study_dir)
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_study(spec: StudySpec, study_dir: Path, executor: Executor, device: str, gpus: int = 1, retry_failed: bool = False) -> list[RunStatus]:
    """Launch every run that is not done, running or (unless ``retry_failed``) failed; returns the states afterwards."""
    with study_lock(study_dir):
        check_spec(spec, study_dir)
        save_spec(spec, study_dir)
        statuses = study_statuses(study_dir, spec)
        counts = Counter(status.state for status in statuses)
        launched = RESTARTED_STATES + ((State.FAILED,) if retry_failed else ())
        pending = [status for status in statuses if status.state in launched]
        kept_failed = 0 if retry_failed else counts[State.FAILED]
        resumed = sum(status.paths.resumable for status in pending)
        print(
            f"{spec.kind} study in {study_dir}: {len(statuses)} runs, {counts[State.DONE]} done, "
            f"{counts[State.RUNNING]} running elsewhere, {kept_failed} failed (kept; --retry-failed relaunches them), "
            f"{len(pending)} to launch ({resumed} from a checkpoint)"
        )
        for status in statuses:
            if status.state is State.RUNNING:
                print(f"  left alone, still running: {status.run} ({status.detail})")
        launches = [RunLaunch.of(spec, status.paths, status.run, device, gpus) for status in pending]
        progress = StudyProgress(statuses, {status.run for status in pending}, spec.epochs, f"{spec.kind} {spec.dataset}")
        try:
            executor.run(launches, progress)
        finally:
            progress.close()
        return study_statuses(study_dir, spec)
