"""Where the runs of a study execute: on this machine, or as Slurm jobs through submitit.

:class:`LocalExecutor` runs ``parallel`` trainings at a time on this machine. The
cores this process may use (``os.sched_getaffinity``) are split into ``parallel``
disjoint, contiguous sets, and each training is pinned to one set (see
:mod:`.launch`), so concurrent CPU trainings do not compete for cores and nnU-Net's
worker counts follow the set's size. With ``--device cuda`` the concurrent runs share
the visible GPUs.

:class:`SubmititExecutor` submits one job per run (``submitit.AutoExecutor``,
``cluster="slurm"`` from the command line; ``cluster="local"`` runs the same jobs as
local processes, as the tests do). Each job
runs :meth:`.RunLaunch.execute`, the same ``nnUNetv2_train`` command, on the cores
and GPUs Slurm gives it. Interrupting the study leaves submitted jobs running; a
later invocation sees them as running and does not launch them again.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..nnunet.configuration import ConfigurationError
from .launch import ActiveRun, RunFolderError, RunLaunch, RunOutcome, mark_failed
from .progress import StudyProgress
from .runs import tail_lines

POLL_SECONDS = 0.5


class Executor(Protocol):
    def run(self, launches: Sequence[RunLaunch], progress: StudyProgress) -> list[RunOutcome]:
        """Run every launch to its end, reporting to ``progress``; one outcome per launch."""


def split_cores(cores: Sequence[int], parallel: int) -> list[list[int]]:
    """``parallel`` disjoint, contiguous, non-empty sets covering ``cores`` (sizes differ by at most 1)."""
    cores = sorted(cores)
    if parallel < 1:
        raise ConfigurationError(f"--parallel must be at least 1, got {parallel}")
    if parallel > len(cores):
        raise ConfigurationError(
            f"--parallel {parallel} needs at least {parallel} CPU cores to give each run its own; "
            f"this process may use {len(cores)} ({cores}). Use --parallel {len(cores)} or less"
        )
    return [[int(core) for core in chunk] for chunk in np.array_split(np.array(cores), parallel)]


START_FAILED = -1
"""The return code recorded for a run that could not be started (or, on Slurm, died outside the training)."""


class LocalExecutor:
    """Up to ``parallel`` trainings at a time on this machine, each pinned to its own cores.

    A run whose folder cannot be written is reported as failed and the others go on;
    any error or interruption of the study stops every training it started.
    """

    def __init__(self, parallel: int = 1, cores: Sequence[int] | None = None) -> None:
        self.core_sets = split_cores(os.sched_getaffinity(0) if cores is None else cores, parallel)

    def run(self, launches: Sequence[RunLaunch], progress: StudyProgress) -> list[RunOutcome]:
        waiting = deque(launches)
        free = deque(self.core_sets)
        active: list[tuple[ActiveRun, list[int]]] = []
        outcomes: list[RunOutcome] = []
        try:
            while waiting or active:
                while waiting and free:
                    launch = waiting.popleft()
                    try:
                        attempt = launch.start(free[0])
                    except RunFolderError as error:
                        outcome = RunOutcome(launch.run, START_FAILED, 0.0, False, str(error))
                        outcomes.append(outcome)
                        progress.finished(outcome)
                        continue
                    active.append((attempt, free.popleft()))
                    progress.started()
                still_active = []
                for attempt, cores in active:
                    returncode = attempt.process.poll()
                    if returncode is None:
                        still_active.append((attempt, cores))
                        continue
                    outcome = attempt.finish(returncode)
                    outcomes.append(outcome)
                    progress.finished(outcome)
                    free.append(cores)
                active = still_active
                if active and not (waiting and free):
                    time.sleep(POLL_SECONDS)
        except BaseException:
            for attempt, _ in active:
                attempt.stop()
            raise
        return outcomes


class SubmititExecutor:
    """One submitit job per run: Slurm on a cluster, or submitit's local executor."""

    def __init__(
        self,
        folder: Path,
        cluster: str | None = None,
        partition: str | None = None,
        gpus: int = 1,
        time_limit_minutes: int | None = None,
        cpus_per_task: int | None = None,
        poll_seconds: float = 10.0,
    ) -> None:
        import submitit

        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        self.executor.update_parameters(
            name="nnunet-losses",
            gpus_per_node=gpus,
            timeout_min=time_limit_minutes,
            cpus_per_task=cpus_per_task,
            slurm_partition=partition,
        )
        self.poll_seconds = poll_seconds

    def run(self, launches: Sequence[RunLaunch], progress: StudyProgress) -> list[RunOutcome]:
        if not launches:
            return []
        with self.executor.batch():
            jobs = [self.executor.submit(launch.execute) for launch in launches]
        pending = dict(zip(jobs, launches))
        seen_running: set = set()
        outcomes: list[RunOutcome] = []
        while pending:
            for job, launch in list(pending.items()):
                if job.done():
                    if job not in seen_running:
                        progress.started()
                    outcome = self._outcome(job, launch)
                    outcomes.append(outcome)
                    progress.finished(outcome)
                    del pending[job]
                elif job not in seen_running and job.state == "RUNNING":
                    seen_running.add(job)
                    progress.started()
            if pending:
                time.sleep(self.poll_seconds)
        return outcomes

    @staticmethod
    def _outcome(job, launch: RunLaunch) -> RunOutcome:
        """The job's outcome; a job that died outside the training (time limit, node failure) counts as failed."""
        try:
            return job.result()
        except Exception as error:  # submitit re-raises the job's failure here
            message = str(error).strip()
            reason = f"job {job.job_id} failed: {message.splitlines()[-1] if message else type(error).__name__}"
            return RunOutcome(launch.run, START_FAILED, 0.0, False, mark_failed(launch.paths, START_FAILED, tail_lines(launch.paths.log, 40), reason))
