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
left of the group is killed; stopping an attempt (Ctrl-C, SIGTERM or an error in the
study) terminates the whole group, then kills what remains. Its ``running.json`` is
removed and the attempt is recorded as interrupted. A run folder that cannot be
written raises :class:`RunFolderError` before anything starts, so the study reports
that run and goes on with the others.

:meth:`RunLaunch.execute` runs an attempt to its end (the body of a Slurm job);
:meth:`RunLaunch.start` and :meth:`ActiveRun.finish` let the local executor run several.
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
from typing import IO

from ..nnunet.run_settings import BUDGET_VARIABLES, SEED_VARIABLE
from .results import record_result
from ..files import read_json, write_json
from .runs import RunPaths, error_summary, tail_lines
from .spec import Run, StudySpec

STUDY_VARIABLES = (SEED_VARIABLE, *BUDGET_VARIABLES.values())
TERMINATE_GRACE_SECONDS = 30


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
        marker = {"pid": process.pid, "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "started": started, "cores": usable}
        try:
            write_json(paths.running_marker, marker)
        except OSError as error:  # e.g. the disk filled up just now: no untracked training
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            log.close()
            raise RunFolderError(paths, error) from error
        return ActiveRun(self, process, log, time.monotonic(), started, usable, resumed)

    def execute(self, cores: Sequence[int] | None = None) -> RunOutcome:
        """Run one attempt to its end; stops the child if this process is interrupted."""
        active = self.start(cores)
        try:
            returncode = active.process.wait()
        except BaseException:
            active.stop()
            raise
        return active.finish(returncode)


@dataclass
class ActiveRun:
    """An attempt in progress."""

    launch: RunLaunch
    process: subprocess.Popen
    log: IO[str]
    started_monotonic: float
    started: str
    cores: list[int]
    resumed: bool

    def stop(self) -> None:
        """End the training's process group (SIGTERM, SIGKILL after a grace period); record the attempt as interrupted."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(TERMINATE_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                pass  # killed with the rest of its group just below
        self._end_group()
        self._close(self.process.returncode, interrupted=True)

    def finish(self, returncode: int) -> RunOutcome:
        """Close the ended attempt: kill what is left of its group, remove the running marker, record it,
        write ``failed.json`` on an error and ``result.json`` when the run finished or diverged."""
        self._end_group()
        seconds = self._close(returncode, interrupted=False)
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
        attempts.append(
            {
                "started": self.started,
                "seconds": round(seconds, 1),
                "returncode": returncode,
                "interrupted": interrupted,
                "resumed": self.resumed,
                "host": socket.gethostname(),
                "cores": self.cores,
            }
        )
        write_json(paths.attempts, attempts)
        return seconds


def _signal_group(pid: int, number: signal.Signals) -> None:
    try:
        os.killpg(pid, number)
    except ProcessLookupError:
        pass


def mark_failed(paths: RunPaths, returncode: int, log_tail: Sequence[str], reason: str | None = None) -> str:
    """Write ``failed.json`` for a run; returns its one-line error summary (saying so if it could not be written)."""
    error = reason or error_summary(log_tail, returncode)
    try:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            paths.failed_marker,
            {"returncode": returncode, "error": error, "log_tail": list(log_tail)[-10:], "finished": datetime.now().isoformat(timespec="seconds")},
        )
    except OSError as write_error:
        return f"{error}; not recorded in {paths.failed_marker}: {write_error.strerror or write_error}"
    return error
