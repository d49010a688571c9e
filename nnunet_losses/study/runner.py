"""Run a study: refuse bad input before anything starts, then launch what is not done.

Order of a study invocation:

1. ``study.json`` in the study folder, if present, must hold the same parameters or
   fewer trainers and seeds, which the invocation extends (:func:`.spec.check_spec`);
2. :func:`preflight`: the dataset, plans and configuration exist, the dataset is
   label-based (not region-based), and every trainer is found and has its maps
   (:func:`nnunet_losses.nnunet.preflight.check_trainer`, once per trainer); trainers
   that ignore the ``NNUNET_LOSSES_*`` budget are refused when the study sets one;
   :func:`ensure_splits` then writes nnU-Net's default split if there is none (the nnU-Net
   internal used here: ``generate_crossval_split``, ``nnunetv2/utilities/crossval_split.py``);
3. under a lock on the study folder (one study process per folder; an ``flock`` that
   the system releases when the process dies), ``study.json`` is written and each run's
   state decides (see :mod:`.runs`): ``done`` and ``diverged`` runs are results and are
   skipped, ``running`` ones (still alive from an earlier invocation) are left alone,
   except runs whose Slurm job is pending or running, which a Slurm executor follows
   to their end (never submitting them again); ``interrupted`` and ``left`` ones are
   launched — with ``--c`` when they have a checkpoint. An attempt stopped by a signal
   after saving its checkpoint (exit status 75: a time limit, a preemption, Ctrl-C) is
   interrupted, not failed: Slurm requeues its job, and locally the next invocation
   resumes it.
4. ``failed`` runs (an error without the trainer's divergence marker: killed, out of
   memory, a missing file) are infrastructure failures, not results: a run is launched
   again, in this invocation and in later ones, until it has failed ``retries + 1``
   times in all (``--retries``, default 1; counted from ``attempts.json``); then it is
   kept as failed, reported, and left out of the results. ``retry_failed``
   (``--retry-failed``, after fixing the cause) forgets the failures of earlier
   invocations. A failed run does not stop the others. A run whose Slurm job was
   cancelled (``scancel``) is not launched again by the invocation that saw it end.
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
from ..files import read_json, write_json
from .runs import RunStatus, State, failed_attempts, study_statuses
from .spec import Run, StudySpec, check_spec, save_spec

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


def _retry_budget_left(status: RunStatus, retries: int, forgiven: dict[Run, int]) -> bool:
    """Whether a failed run may be launched again: fewer than ``retries + 1`` counted failures."""
    return failed_attempts(status.paths) - forgiven.get(status.run, 0) <= retries


def _cancelled(status: RunStatus) -> bool:
    """The run's Slurm job was cancelled (``scancel``): someone stopped it on purpose."""
    failed = read_json(status.paths.failed_marker)
    return isinstance(failed, dict) and failed.get("slurm_state") == "CANCELLED"


def run_study(
    spec: StudySpec, study_dir: Path, executor: Executor, device: str, gpus: int = 1, retries: int = 1, retry_failed: bool = False
) -> list[RunStatus]:
    """Launch every run that is not done, diverged, running or out of retries; returns the states afterwards.

    Runs that fail are launched again, round after round, while their retries last (see the module docstring).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    with study_lock(study_dir):
        extended = check_spec(spec, study_dir)
        if extended:
            print(f"extending the study in {study_dir} to {len(spec.runs())} runs; study.json is rewritten, finished runs are kept")
        save_spec(spec, study_dir, extended)
        statuses = study_statuses(study_dir, spec)
        forgiven = {s.run: failed_attempts(s.paths) for s in statuses if s.state is State.FAILED} if retry_failed else {}
        counts = Counter(status.state for status in statuses)
        failed = [status for status in statuses if status.state is State.FAILED]
        retried = [status for status in failed if _retry_budget_left(status, retries, forgiven)]
        followed = [status for status in statuses if status.state is State.RUNNING and executor.follows(status)]
        pending = [status for status in statuses if status.state in RESTARTED_STATES] + retried
        resumed = sum(status.paths.resumable for status in pending)
        print(
            f"{spec.kind} study in {study_dir}: {len(statuses)} runs, {counts[State.DONE]} done, {counts[State.DIVERGED]} diverged, "
            f"{counts[State.RUNNING]} running elsewhere, {len(failed)} failed ({len(retried)} retried, "
            f"{len(failed) - len(retried)} out of retries: --retry-failed relaunches them), "
            f"{len(pending)} to launch ({resumed} from a checkpoint)" + (f", {len(followed)} followed" if followed else "")
        )
        for status in statuses:
            if status.state is State.RUNNING:
                print(f"  {'followed' if status in followed else 'left alone'}, still running: {status.run} ({status.detail})")
        pending = followed + pending
        progress = StudyProgress(statuses, {status.run for status in pending}, spec.epochs, f"{spec.kind} {spec.dataset}")
        try:
            for round_ in range(retries + 1):  # bounded also where a failure leaves no attempt record (a lost Slurm job)
                if round_ > 0:
                    for status in pending:
                        print(f"retrying {status.run} (failure {failed_attempts(status.paths) - forgiven.get(status.run, 0)} of at most {retries + 1}): {status.detail}")
                    progress.add(status.run for status in pending)
                executor.run([RunLaunch.of(spec, status.paths, status.run, device, gpus) for status in pending], progress)
                launched = {status.run for status in pending}
                after = [status for status in study_statuses(study_dir, spec) if status.run in launched and status.state is State.FAILED]
                pending = [status for status in after if _retry_budget_left(status, retries, forgiven) and not _cancelled(status)]
                if not pending:
                    break
        finally:
            progress.close()
        return study_statuses(study_dir, spec)
