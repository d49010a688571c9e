"""One attempt of one run: the ``nnUNetv2_train`` command, its environment, its markers.

Every executor runs the same command, nnU-Net's own::

    nnUNetv2_train <dataset> <configuration> <fold> -p <plans> -tr <trainer> -device <device> [-num_gpus G] [--c]

with the run's environment: ``nnUNet_results`` = the run folder (so runs never
overwrite each other), the study's seed and budget as ``NNUNET_LOSSES_*`` variables
(any inherited ones are removed), and nnU-Net's worker counts sized to the cores the
run may use: ``nnUNet_n_proc_DA = cores - 1`` (0 = augmentation in the main process)
and ``nnUNet_def_n_proc = cores``, unless these two are set in the environment.
``--c`` is added when a checkpoint exists, so an interrupted or failed run continues
from its last checkpoint (or, from ``checkpoint_final.pth``, only redoes the validation).

Pinning: with ``cores`` given, the child is bound to those cores with
``os.sched_setaffinity`` before it executes (``preexec_fn``); every thread and worker
process it starts inherits the set. nnU-Net still calls ``torch.set_num_threads`` with
the machine's core count on CPU, so its threads share the pinned cores.

The child runs in its own session (process group), and the group is ended on every
exit path: when the training exits (normally, with an error, or killed, even by
SIGKILL, which leaves nnU-Net's augmentation workers without a parent) whatever is
left of the group is killed. Stopping an attempt (Ctrl-C, SIGTERM or an error in the
study) sends SIGTERM to the training's main process only, so that its augmentation
workers go on serving while a trainer of the package finishes its step, saves
nnU-Net's ``checkpoint_latest.pth`` at the start of the epoch in progress and exits
with status 75 (:data:`INTERRUPTED`); after a grace period of
:data:`TERMINATE_GRACE_SECONDS` whatever is left of the group is killed.

Exit status 75, or an exit after the stop was requested, makes the attempt
*interrupted*: no ``failed.json``, not counted against ``--retries``, resumed with
``--c``. Its entry in ``attempts.json`` records where the trainer stopped (the newest
entry of ``interruptions.json`` of the attempt: signal, epoch, iterations done in it)
and ``epochs_lost``: 1 when iterations of the epoch in progress were done and are
redone on resumption, 0 when it stopped between epochs. Without such an entry (the
signal came before the trainer's handler was installed, during start-up, or the
trainer is not the package's) it is the number of epochs completed (``progress.json``)
that the checkpoint the run resumes from does not hold. ``running.json`` is removed when
an attempt ends. A run folder that cannot be written raises :class:`RunFolderError`
before anything starts, so the study reports that run and goes on with the others.

:meth:`RunLaunch.start` and :meth:`ActiveRun.finish` let the local executor run
several attempts and a Slurm job run one (:mod:`.slurm`).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from ..nnunet import INTERRUPTED_EXIT_CODE
from ..nnunet.run_settings import BUDGET_VARIABLES, SEED_VARIABLE
from .results import completed_epochs, record_result
from ..files import read_json, write_json
from .runs import RunPaths, error_summary, tail_lines
from .spec import Run, StudySpec

STUDY_VARIABLES = (SEED_VARIABLE, *BUDGET_VARIABLES.values())
TERMINATE_GRACE_SECONDS = 60
INTERRUPTED = INTERRUPTED_EXIT_CODE
"""Exit status 75 (EX_TEMPFAIL) of a training stopped by a signal after saving its checkpoint: resumed, never a failure."""


class RunFolderError(RuntimeError):
    """A run's folder cannot be written; the run is not started."""

    def __init__(self, paths: RunPaths, error: OSError) -> None:
        super().__init__(
            f"cannot write to the run folder {paths.run_dir} ({error.strerror or error}); "
            "fix its permissions (or free the disk), then run the same study command again to run it"
        )


@dataclass(frozen=True)
class RunOutcome:
    """How an attempt ended; ``error`` is a one-line summary when it failed."""

    run: Run
    returncode: int
    seconds: float
    resumed: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def interrupted(self) -> bool:
        return self.returncode == INTERRUPTED


@dataclass(frozen=True)
class RunLaunch:
    """Everything needed to run one attempt anywhere; picklable, so Slurm jobs can carry it."""

    run: Run
    paths: RunPaths
    command: tuple[str, ...]
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: StudySpec, paths: RunPaths, run: Run, device: str, gpus: int = 1) -> RunLaunch:
        command = ["nnUNetv2_train", spec.dataset, spec.configuration, str(run.fold), "-p", spec.plans, "-tr", run.trainer, "-device", device]
        if gpus > 1:
            command += ["-num_gpus", str(gpus)]
        variables = {"nnUNet_results": str(paths.results_root), **spec.settings_environment(run)}
        return cls(run, paths, tuple(command), variables)

    def to_json(self) -> dict:
        """The launch as JSON, for a Slurm job's ``launch.json``."""
        run, paths = self.run, self.paths
        return {
            "run": {"trainer": run.trainer, "seed": run.seed, "fold": run.fold},
            "run_dir": str(paths.run_dir),
            "output_folder": str(paths.output_folder),
            "command": list(self.command),
            "variables": self.variables,
        }

    @classmethod
    def from_json(cls, record: dict) -> RunLaunch:
        paths = RunPaths(Path(record["run_dir"]), Path(record["output_folder"]))
        return cls(Run(**record["run"]), paths, tuple(record["command"]), dict(record["variables"]))

    def environment(self, cores: int) -> dict[str, str]:
        """The child's environment: this process's, without inherited study variables, plus the run's."""
        env = {key: value for key, value in os.environ.items() if key not in STUDY_VARIABLES}
        env.update(self.variables)
        env.setdefault("nnUNet_n_proc_DA", str(max(cores - 1, 0)))
        env.setdefault("nnUNet_def_n_proc", str(max(cores, 1)))
        return env

    def start(self, cores: Sequence[int] | None = None) -> ActiveRun:
        """Start ``nnUNetv2_train`` (pinned to ``cores`` if given) and mark the run as running.

        Raises :class:`RunFolderError`, with nothing started, when the run folder cannot be written.
        """
        paths = self.paths
        usable = sorted(cores) if cores is not None else sorted(os.sched_getaffinity(0))
        resumed = paths.resumable
        command = [*self.command, *(["--c"] if resumed else [])]
        try:
            paths.run_dir.mkdir(parents=True, exist_ok=True)
            paths.failed_marker.unlink(missing_ok=True)
            log = open(paths.log, "a")  # closed by ActiveRun.finish / stop
            log.write(f"\n===== {datetime.now().isoformat(timespec='seconds')} on {socket.gethostname()}, cores {usable}: {' '.join(command)}\n")
            log.flush()
        except OSError as error:
            raise RunFolderError(paths, error) from error
        pin = (lambda: os.sched_setaffinity(0, usable)) if cores is not None else None
        try:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(len(usable)),
                preexec_fn=pin,
                start_new_session=True,  # its own process group: stop() and finish() end its workers too
            )
        except BaseException:
            log.close()
            raise
        started = datetime.now().isoformat(timespec="seconds")
        marker = {"pid": process.pid, "host": socket.gethostname(), **_slurm_job(), "started": started, "cores": usable}
        try:
            write_json(paths.running_marker, marker)
        except OSError as error:  # e.g. the disk filled up just now: no untracked training
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            log.close()
            raise RunFolderError(paths, error) from error
        interruptions = read_json(paths.interruptions)
        recorded = len(interruptions) if isinstance(interruptions, list) else 0
        return ActiveRun(self, process, log, time.monotonic(), started, usable, resumed, recorded)


@dataclass
class ActiveRun:
    """An attempt in progress."""

    launch: RunLaunch
    process: subprocess.Popen
    log: IO[str]
    started_monotonic: float
    started: str
    cores: list[int]  # the cores it started on
    resumed: bool
    interruptions_before: int = 0  # entries of interruptions.json when the attempt started
    stop_requested: bool = False
    widened_to: list[int] | None = None  # the wider set it was given once no run waited (LocalExecutor)

    def request_stop(self) -> None:
        """Send SIGTERM to the training's main process (once); it checkpoints and exits with :data:`INTERRUPTED`."""
        if not self.stop_requested and self.process.poll() is None:
            self.stop_requested = True
            try:
                os.kill(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> RunOutcome:
        """Stop the training (:meth:`request_stop`, the group killed after the grace period) and close the attempt."""
        self.request_stop()
        try:
            self.process.wait(TERMINATE_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass  # killed with the rest of its group in finish()
        self._end_group()
        return self.finish(self.process.returncode)

    def finish(self, returncode: int) -> RunOutcome:
        """Close the ended attempt: kill what is left of its group, remove the running marker, record it,
        write ``failed.json`` on an error and ``result.json`` when the run finished or diverged.

        An attempt that exited with :data:`INTERRUPTED`, or after :meth:`request_stop`, is interrupted:
        its outcome has return code :data:`INTERRUPTED` and no ``failed.json`` is written. One stopped after
        nnU-Net had finished the run (its final checkpoint and validation written) counts as finished."""
        self._end_group()
        if self.stop_requested and self.launch.paths.finished:
            returncode = 0
        interrupted = returncode == INTERRUPTED or (self.stop_requested and returncode != 0)
        seconds = self._close(returncode, interrupted)
        if interrupted:
            return RunOutcome(self.launch.run, INTERRUPTED, seconds, self.resumed)
        error = None
        if returncode != 0:
            error = mark_failed(self.launch.paths, returncode, tail_lines(self.launch.paths.log, 40))
        try:
            record_result(self.launch.paths)
        except (OSError, ValueError, KeyError):
            pass  # an unreadable summary.json: the reports name it when they read the run
        return RunOutcome(self.launch.run, returncode, seconds, self.resumed, error)

    def _end_group(self) -> None:
        """SIGKILL every process left in the training's group and wait for the training itself.

        Once the training has exited, what remains of its group (augmentation workers
        orphaned by a SIGKILL, a stuck export process) has no one to serve. The group id
        is the training's pid, which the system does not hand out again while the group
        has members, so only this run's processes are hit.
        """
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def _close(self, returncode: int, interrupted: bool) -> float:
        seconds = time.monotonic() - self.started_monotonic
        self.log.close()
        paths = self.launch.paths
        paths.running_marker.unlink(missing_ok=True)
        attempts = read_json(paths.attempts)
        attempts = attempts if isinstance(attempts, list) else []
        entry = {
            "started": self.started,
            "seconds": round(seconds, 1),
            "returncode": returncode,
            "interrupted": interrupted,
            "resumed": self.resumed,
            "host": socket.gethostname(),
            "cores": self.cores,
            **({"widened_to": self.widened_to} if self.widened_to is not None else {}),
            **_slurm_job(),
        }
        if interrupted:
            entry.update(self._interruption())
        attempts.append(entry)
        write_json(paths.attempts, attempts)
        return seconds

    def _interruption(self) -> dict:
        """Where the trainer stopped (its ``interruptions.json`` entry of this attempt) and the epochs lost."""
        paths = self.launch.paths
        recorded = read_json(paths.interruptions)
        new = recorded[self.interruptions_before :] if isinstance(recorded, list) else []
        if new and isinstance(new[-1], dict):
            return {"interruption": new[-1], "epochs_lost": int(int(new[-1].get("iteration", 0)) > 0)}
        progress = read_json(paths.progress)
        completed = progress.get("epoch", 0) if isinstance(progress, dict) else 0
        return {"interruption": None, "epochs_lost": max(completed - (completed_epochs(paths) or 0), 0)}


def _slurm_job() -> dict:
    """The Slurm job this process runs in (id, and how often Slurm requeued it), empty outside Slurm."""
    if "SLURM_JOB_ID" not in os.environ:
        return {}
    return {"slurm_job_id": os.environ["SLURM_JOB_ID"], "slurm_restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0"))}


def _signal_group(pid: int, number: signal.Signals) -> None:
    try:
        os.killpg(pid, number)
    except ProcessLookupError:
        pass


def mark_failed(paths: RunPaths, returncode: int, log_tail: Sequence[str], reason: str | None = None, slurm_state: str | None = None) -> str:
    """Write ``failed.json`` for a run (with the Slurm state that ended its job, if Slurm did); returns its one-line
    error summary (saying so if it could not be written)."""
    error = reason or error_summary(log_tail, returncode)
    record = {"returncode": returncode, "error": error, "log_tail": list(log_tail)[-10:], "finished": datetime.now().isoformat(timespec="seconds")}
    if slurm_state is not None:
        record["slurm_state"] = slurm_state
    try:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(paths.failed_marker, record)
    except OSError as write_error:
        return f"{error}; not recorded in {paths.failed_marker}: {write_error.strerror or write_error}"
    return error
