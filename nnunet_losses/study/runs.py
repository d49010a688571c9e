"""Where each run of a study lives and how far it got.

Layout of a study folder::

    <study dir>/study.json                  the parameters (see :mod:`.spec`)
    <study dir>/.study.lock                 held by the study process working on the folder
    <study dir>/cdf_results.csv, cdf.png, compare.md, ...   results (see :mod:`.reports`)
    <study dir>/runs/<trainer>/seed_<k>_fold_<f>/
        train.log                           stdout and stderr of every attempt of nnUNetv2_train
        attempts.json                       one entry per attempt: start, seconds, exit code, cores
        running.json                        present while an attempt runs: pid, host, Slurm job id
        slurm.json, slurm-<job>.out         --executor slurm: the run's job ids, and Slurm's output of its job
        launch.json, slurm_job.sh           --executor slurm: the attempt's command and the job's batch script
        failed.json                         present after a failed attempt: exit code, error summary
        result.json                         the result of a finished or diverged run, small and committed
                                            with the study (:mod:`.results`)
        <Dataset>/<trainer>__<plans>__<configuration>/fold_<f>/   nnU-Net's own output folder
                                            (the run folder is the run's nnUNet_results)
            diverged.json                   written by the trainer when its loss became non-finite
                                            (:mod:`nnunet_losses.nnunet.trainer`)
            progress.json                   written by the trainer after every epoch: epochs and iterations
                                            done, pseudo Dice (read by the progress display and the status)
            interruptions.json              appended by the trainer when a signal stopped it (:mod:`.launch`)

States (:class:`State`), checked in this order:

* ``running``: the run's newest Slurm job (``slurm.json``) is pending, running or being
  requeued (:func:`.slurm.active_job`; also while the controller does not answer), or
  ``running.json`` names a live process: on this host the pid must exist and be an
  ``nnUNetv2_train`` process; on another host the Slurm job must still be in
  ``squeue`` (without ``squeue`` it is assumed alive).
* ``done``: nnU-Net wrote ``checkpoint_final.pth`` and ``validation/summary.json``.
* ``diverged``: the trainer stopped because its loss became non-finite and left
  ``diverged.json`` in nnU-Net's output folder. A result of the study, not a failure:
  it counts as a run with Dice 0 and is never relaunched.
* ``done`` or ``diverged`` from ``result.json`` alone: nnU-Net's outputs are not here
  (a study folder cloned from version control), the committed record is the result.
* ``failed``: the last attempt exited with an error (``failed.json``) without the
  divergence marker: an infrastructure failure (killed, out of memory, a missing file,
  any other error). Failed runs are retried (:mod:`.runner`) and left out of the results.
* ``interrupted``: an attempt started but neither finished nor failed (a stale
  ``running.json`` or a checkpoint without validation); it resumes with ``--c``.
* ``left``: never started.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..files import read_json
from ..nnunet import DIVERGED_MARKER, INTERRUPTIONS_FILE, PROGRESS_FILE
from .slurm import SlurmUnavailable, active_job, recorded_jobs
from .spec import Run, StudySpec

RUNS_FOLDER = "runs"
ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$")


class State(str, Enum):
    DONE = "done"
    DIVERGED = "diverged"
    RUNNING = "running"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    LEFT = "left"


@dataclass(frozen=True)
class RunPaths:
    """The files of one run."""

    run_dir: Path
    output_folder: Path

    @classmethod
    def of(cls, study_dir: Path, spec: StudySpec, run: Run) -> RunPaths:
        run_dir = Path(study_dir) / RUNS_FOLDER / run.trainer / run.name
        output = run_dir / spec.dataset / f"{run.trainer}__{spec.plans}__{spec.configuration}" / f"fold_{run.fold}"
        return cls(run_dir, output)

    @property
    def results_root(self) -> Path:
        """The ``nnUNet_results`` of the run."""
        return self.run_dir

    @property
    def log(self) -> Path:
        return self.run_dir / "train.log"

    @property
    def result(self) -> Path:
        """The committed record of a finished or diverged run (:mod:`.results`)."""
        return self.run_dir / "result.json"

    @property
    def attempts(self) -> Path:
        return self.run_dir / "attempts.json"

    @property
    def running_marker(self) -> Path:
        return self.run_dir / "running.json"

    @property
    def failed_marker(self) -> Path:
        return self.run_dir / "failed.json"

    @property
    def progress(self) -> Path:
        """The trainer's ``progress.json``, rewritten after every epoch."""
        return self.output_folder / PROGRESS_FILE

    @property
    def interruptions(self) -> Path:
        """The trainer's ``interruptions.json``: one entry per signal that stopped it."""
        return self.output_folder / INTERRUPTIONS_FILE

    @property
    def diverged_marker(self) -> Path:
        return self.output_folder / DIVERGED_MARKER

    @property
    def checkpoint_final(self) -> Path:
        return self.output_folder / "checkpoint_final.pth"

    @property
    def checkpoint_latest(self) -> Path:
        return self.output_folder / "checkpoint_latest.pth"

    @property
    def validation(self) -> Path:
        return self.output_folder / "validation"

    @property
    def summary(self) -> Path:
        return self.validation / "summary.json"

    @property
    def finished(self) -> bool:
        return self.checkpoint_final.is_file() and self.summary.is_file()

    @property
    def resumable(self) -> bool:
        """A checkpoint exists, so ``nnUNetv2_train --c`` continues instead of starting over."""
        return self.checkpoint_final.is_file() or self.checkpoint_latest.is_file()


@dataclass(frozen=True)
class RunStatus:
    run: Run
    paths: RunPaths
    state: State
    detail: str = ""


def read_result(paths: RunPaths) -> dict | None:
    """A run's ``result.json`` (:mod:`.results`), or ``None`` when it has none, or an unreadable or unknown one."""
    record = read_json(paths.result)
    if isinstance(record, dict) and record.get("state") in (State.DONE, State.DIVERGED) and isinstance(record.get("dice_mean"), (int, float)):
        return record
    return None


def _is_training_process(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():  # no procfs: the pid exists, trust it
        return True
    try:
        return b"nnUNetv2_train" in cmdline.read_bytes()  # empty for zombies, other text after pid reuse
    except OSError:
        return False


def marker_alive(marker: dict) -> bool:
    """Whether the process named by a ``running.json`` marker is still running."""
    if marker.get("host") == socket.gethostname():
        return _is_training_process(int(marker["pid"]))
    job = marker.get("slurm_job_id")
    squeue = shutil.which("squeue")
    if job and squeue:
        listed = subprocess.run([squeue, "-h", "-j", str(job)], capture_output=True, text=True, timeout=60)
        return bool(listed.stdout.strip())
    return True


def run_status(study_dir: Path, spec: StudySpec, run: Run) -> RunStatus:
    """The state of one run, with a short detail (process, error or checkpoint)."""
    paths = RunPaths.of(study_dir, spec, run)
    if recorded_jobs(paths):
        try:
            job = active_job(paths)
        except SlurmUnavailable as error:
            return RunStatus(run, paths, State.RUNNING, f"Slurm job {recorded_jobs(paths)[-1]}: the controller does not answer ({error})")
        if job is not None:
            return RunStatus(run, paths, State.RUNNING, f"Slurm job {job.describe()}")
    marker = read_json(paths.running_marker)
    stale = ""
    if isinstance(marker, dict):
        where = f"pid {marker.get('pid')} on {marker.get('host')}" + (f", Slurm job {marker['slurm_job_id']}" if marker.get("slurm_job_id") else "")
        if marker_alive(marker):
            return RunStatus(run, paths, State.RUNNING, f"{where} since {marker.get('started', '?')}")
        stale = f"stopped without finishing ({where})"
    if paths.finished:
        return RunStatus(run, paths, State.DONE)
    diverged = read_json(paths.diverged_marker)
    if isinstance(diverged, dict):
        return RunStatus(run, paths, State.DIVERGED, divergence_summary(diverged))
    record = read_result(paths)
    if record is not None:
        return RunStatus(run, paths, State(record["state"]), "from its committed result.json (nnU-Net's outputs are not here)")
    failed = read_json(paths.failed_marker)
    if isinstance(failed, dict):
        return RunStatus(run, paths, State.FAILED, str(failed.get("error", "")))
    if stale or paths.resumable or paths.log.is_file():
        resume = "resumes from its checkpoint" if paths.resumable else "restarts from scratch"
        return RunStatus(run, paths, State.INTERRUPTED, f"{stale or 'not finished'}; {resume}")
    return RunStatus(run, paths, State.LEFT)


def divergence_summary(marker: dict) -> str:
    """One line from a ``diverged.json``: where the loss became non-finite and its values."""
    terms = ", ".join(f"{name}={value}" for name, value in marker.get("loss_terms", {}).items())
    return f"diverged at epoch {marker.get('epoch', '?')}, iteration {marker.get('iteration', '?')}: {terms} ({marker.get('reason', '')})"


def failed_attempts(paths: RunPaths) -> int:
    """Attempts of a run that exited with an error (interrupted ones not counted); at least 1 if ``failed.json`` exists."""
    attempts = read_json(paths.attempts)
    count = sum(1 for a in attempts if a.get("returncode") != 0 and not a.get("interrupted")) if isinstance(attempts, list) else 0
    return max(count, int(paths.failed_marker.is_file()))


def study_statuses(study_dir: Path, spec: StudySpec) -> list[RunStatus]:
    return [run_status(study_dir, spec, run) for run in spec.runs()]


def tail_lines(path: Path, count: int, max_bytes: int = 65536) -> list[str]:
    """The last ``count`` non-empty lines of a text file (reading at most its last ``max_bytes``)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - max_bytes))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-count:]


def error_summary(lines: Sequence[str], returncode: int) -> str:
    """One line saying why a run failed: the last exception line of its log and the exit status."""
    if returncode < 0:
        try:
            status = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            status = f"killed by signal {-returncode}"
    else:
        status = f"exit code {returncode}"
    errors = [match.group(1).strip() for line in lines if (match := ERROR_LINE.match(line))]
    reason = errors[-1] if errors else (lines[-1].strip() if lines else "no output")
    return f"{reason[:300]} ({status})"
