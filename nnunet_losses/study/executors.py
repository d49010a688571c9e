"""Where the runs of a study execute: on this machine, or as Slurm jobs.

:class:`LocalExecutor` runs ``parallel`` trainings at a time on this machine, each
pinned to its own disjoint, contiguous set of the cores this process may use
(``os.sched_getaffinity``; see :mod:`.launch`), so concurrent CPU trainings do not
compete for cores and nnU-Net's worker counts follow the set's size. The runs that
start together share the free cores equally (:func:`cores_for_starts`): while at least
``parallel`` runs remain, each gets a ``parallel``-th of the cores; the last runs of a
study, fewer than the free slots, get all the free cores between them. Once no run
waits, the cores a finished training leaves are given to the trainings still running
(:func:`cores_when_none_waits`, :func:`pin_process_group`), so the last trainings of a
study never leave cores idle; ``attempts.json`` records the final set. With
``--device cuda`` the concurrent runs share the visible GPUs.

:class:`SlurmExecutor` submits one batch job per run (:mod:`.slurm`): each runs the
same ``nnUNetv2_train`` attempt on the cores and GPUs Slurm gives it, checkpoints on
Slurm's signal before the time limit or on preemption, and is requeued until the run
ends. A run whose job of an earlier invocation is still pending or running is followed,
never submitted again. The executor polls ``scontrol show job`` every ``poll_seconds``;
while the controller does not answer (a restart of ``slurmctld``) it keeps waiting, for
at most ``unavailable_seconds``. When a job has ended, the run folder says how the run
ended; a job that Slurm ended before the run did (``scancel``, the time limit reached
without a checkpoint, a node failure) makes the run failed with Slurm's state and
reason. Interrupting the study leaves the jobs running.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from ..files import read_json
from ..nnunet.configuration import ConfigurationError
from .launch import INTERRUPTED, ActiveRun, RunFolderError, RunLaunch, RunOutcome, mark_failed
from .progress import StudyProgress
from .results import training_seconds
from .runs import RunStatus, State, tail_lines
from .slurm import SlurmJob, SlurmOptions, SlurmUnavailable, active_job, job_info, recorded_jobs, requeue, submit

POLL_SECONDS = 0.5


class Executor(Protocol):
    def run(self, launches: Sequence[RunLaunch], progress: StudyProgress) -> list[RunOutcome]:
        """Run every launch to its end, reporting to ``progress``; one outcome per launch."""

    def follows(self, status: RunStatus) -> bool:
        """Whether a run that is running elsewhere is followed to its end by :meth:`run` (else left alone)."""


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


def cores_for_starts(free_cores: Sequence[int], free_slots: int, waiting: int) -> list[list[int]]:
    """The cores of each run that starts now: the free cores split among ``min(waiting, free_slots)`` runs.

    With at least as many waiting runs as free slots, every slot's run gets an equal share
    (at the start of a study: the sets of :func:`split_cores`); with fewer, the waiting runs
    share all the free cores, so none idles. Empty when nothing can start.
    """
    starting = min(waiting, free_slots, len(free_cores))
    return split_cores(free_cores, starting) if starting > 0 else []


def cores_when_none_waits(held: Sequence[Sequence[int]], free_cores: Sequence[int]) -> list[list[int]]:
    """The cores of each running training once no run waits: its own, plus a share of the free cores.

    The free cores are split as by :func:`split_cores` among the first ``min(len(held),
    len(free_cores))`` trainings, so that the last trainings of a study use the cores
    the finished ones left idle.
    """
    shares = split_cores(free_cores, min(len(held), len(free_cores))) if free_cores and held else []
    return [sorted([*own, *(shares[index] if index < len(shares) else [])]) for index, own in enumerate(held)]


def pin_process_group(group: int, cores: Sequence[int]) -> None:
    """Pin every thread of every process of process group ``group`` to ``cores`` (Linux ``/proc``).

    A training runs in its own process group (its augmentation workers included); threads
    and processes that end meanwhile are skipped. Threads started later inherit the new
    set from the thread that starts them.
    """
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name: state, ppid, pgrp, ...
        except OSError:  # the process has ended
            continue
        if int(fields[2]) != group:
            continue
        for task in (stat.parent / "task").glob("[0-9]*"):
            try:
                os.sched_setaffinity(int(task.name), cores)
            except OSError:  # the thread has ended
                continue


START_FAILED = -1
"""The return code recorded for a run that could not be started (or, on Slurm, died outside the training)."""


class LocalExecutor:
    """Up to ``parallel`` trainings at a time on this machine, each pinned to its own cores.

    A run whose folder cannot be written is reported as failed and the others go on;
    any error or interruption of the study stops every training it started.
    """

    def __init__(
        self, parallel: int = 1, cores: Sequence[int] | None = None, repin: Callable[[int, Sequence[int]], None] = pin_process_group
    ) -> None:
        self.cores = sorted(os.sched_getaffinity(0) if cores is None else cores)
        split_cores(self.cores, parallel)  # refuses more runs at a time than cores
        self.parallel = parallel
        self.repin = repin

    def run(self, launches: Sequence[RunLaunch], progress: StudyProgress) -> list[RunOutcome]:
        waiting = deque(launches)
        free = list(self.cores)
        active: list[tuple[ActiveRun, list[int]]] = []
        outcomes: list[RunOutcome] = []
        try:
            while waiting or active:
                while shares := cores_for_starts(free, self.parallel - len(active), len(waiting)):
                    launch, cores = waiting.popleft(), shares[0]
                    try:
                        attempt = launch.start(cores)
                    except RunFolderError as error:
                        outcome = RunOutcome(launch.run, START_FAILED, 0.0, False, str(error))
                        outcomes.append(outcome)
                        progress.finished(outcome)
                        continue
                    active.append((attempt, cores))
                    free = [core for core in free if core not in cores]
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
                    free = sorted(free + cores)
                active = still_active
                if not waiting and free and active:
                    active = self._give_free_cores(active, free)
                    free = []
                if active and not cores_for_starts(free, self.parallel - len(active), len(waiting)):
                    time.sleep(POLL_SECONDS)
        except BaseException:
            for attempt, _ in active:
                attempt.request_stop()  # all at once: the trainings checkpoint together
            for attempt, _ in active:
                attempt.stop()
            raise
        return outcomes

    def _give_free_cores(self, active: list[tuple[ActiveRun, list[int]]], free: list[int]) -> list[tuple[ActiveRun, list[int]]]:
        """Widen the running trainings' pinning to the free cores (:func:`cores_when_none_waits`); the attempt records
        the new set beside the one it started on."""
        widened = cores_when_none_waits([cores for _, cores in active], free)
        for (attempt, cores), wider in zip(active, widened):
            if wider != cores:
                self.repin(attempt.process.pid, wider)
                attempt.widened_to = wider
        return [(attempt, wider) for (attempt, _), wider in zip(active, widened)]

    def follows(self, status: RunStatus) -> bool:
        return False


T = TypeVar("T")
LOST_REQUEUES_RETRIED = 3
"""How often a job whose requeued start Slurm dropped (see :meth:`SlurmExecutor._requeue_was_lost`) is requeued again."""
SLURM_ENDED_RUN = frozenset({"BOOT_FAIL", "CANCELLED", "DEADLINE", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"})
"""Job states in which Slurm, not the run's own end, stopped the job."""


class SlurmExecutor:
    """One Slurm batch job per run, requeued across time limits and preemptions; jobs of earlier invocations followed."""

    def __init__(self, options: SlurmOptions, poll_seconds: float = 10.0, unavailable_seconds: float = 600.0) -> None:
        self.options = options
        self.poll_seconds = poll_seconds
        self.unavailable_seconds = unavailable_seconds

    def follows(self, status: RunStatus) -> bool:
        """Running runs with a recorded Slurm job are followed: :func:`.runs.run_status` found it pending or running
        (or the controller did not answer)."""
        return status.state is State.RUNNING and bool(recorded_jobs(status.paths))

    def run(self, launches: Sequence[RunLaunch], progress: StudyProgress) -> list[RunOutcome]:
        jobs: dict[str, RunLaunch] = {}
        for launch in launches:
            job = self._when_available(lambda: active_job(launch.paths))
            jobs[job.job_id if job is not None else self._when_available(lambda: submit(launch, self.options))] = launch
        seen_running: set[str] = set()
        lost: dict[str, int] = {}  # job id: times requeued again by this invocation
        outcomes: list[RunOutcome] = []
        unanswered_since: float | None = None
        while jobs:
            for job_id, launch in list(jobs.items()):
                try:
                    info = job_info(job_id)
                except SlurmUnavailable as error:
                    unanswered_since = unanswered_since or time.monotonic()
                    if time.monotonic() - unanswered_since > self.unavailable_seconds:
                        raise ConfigurationError(f"Slurm's controller has not answered for {self.unavailable_seconds:.0f} s: {error}") from error
                    break
                unanswered_since = None
                if info is not None and info.active:
                    if info.state == "RUNNING" and job_id not in seen_running:
                        seen_running.add(job_id)
                        progress.started()
                    continue
                if info is not None and lost.get(job_id, 0) < LOST_REQUEUES_RETRIED and self._requeue_was_lost(launch, info):
                    lost[job_id] = lost.get(job_id, 0) + 1
                    if self._when_available(lambda: requeue(job_id)):
                        print(f"Slurm job {job_id} requeued again: its requeued start ({info.describe()}) never reached the run", flush=True)
                        continue
                outcome = self._ended(launch, job_id, info)
                outcomes.append(outcome)
                progress.finished(outcome)
                del jobs[job_id]
            if jobs:
                time.sleep(self.poll_seconds)
        return outcomes

    def _when_available(self, call: Callable[[], T]) -> T:
        """``call()``, repeated while Slurm's controller does not answer (at most ``unavailable_seconds``)."""
        deadline = time.monotonic() + self.unavailable_seconds
        while True:
            try:
                return call()
            except SlurmUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.poll_seconds)

    @staticmethod
    def _requeue_was_lost(launch: RunLaunch, info: SlurmJob) -> bool:
        """Whether Slurm requeued the job after a checkpoint and then failed its new start before the job body ran.

        Under load Slurm can schedule a requeued job on its node before the node has finished ending the previous
        start, and then kills it as non-startable ("Job credential revoked"): the job ends FAILED, restarted, with no
        attempt of that restart in ``attempts.json`` while the previous one was interrupted (checkpointed to resume)."""
        if info.state != "FAILED" or info.restarts < 1 or launch.paths.finished:
            return False
        attempts = read_json(launch.paths.attempts)
        if not isinstance(attempts, list) or not attempts or not attempts[-1].get("interrupted"):
            return False
        return int(attempts[-1].get("slurm_restarts", -1)) < info.restarts

    @staticmethod
    def _ended(launch: RunLaunch, job_id: str, info: SlurmJob | None) -> RunOutcome:
        """The outcome of a run whose job has ended, from the run folder and Slurm's final state."""
        paths, run = launch.paths, launch.run
        attempts = read_json(paths.attempts)
        attempts = attempts if isinstance(attempts, list) else []
        seconds = training_seconds(paths) or 0.0
        resumed = bool(attempts) and bool(attempts[-1].get("resumed"))
        if paths.finished:
            return RunOutcome(run, 0, seconds, resumed)
        failed = read_json(paths.failed_marker)
        if paths.diverged_marker.is_file():  # the trainer's own end; the progress display reads the marker
            return RunOutcome(run, int(failed.get("returncode", 1)) if isinstance(failed, dict) else 1, seconds, resumed)
        stopped_by_slurm = info is not None and info.state in SLURM_ENDED_RUN
        if isinstance(failed, dict) and not stopped_by_slurm:  # the attempt failed: the job body wrote failed.json
            return RunOutcome(run, int(failed.get("returncode", 1)), seconds, resumed, str(failed.get("error", "")))
        if stopped_by_slurm or not (attempts and attempts[-1].get("interrupted")):
            said = f"Slurm job {info.describe()}" if info is not None else f"Slurm job {job_id} (no longer known to Slurm)"
            error = mark_failed(paths, START_FAILED, tail_lines(paths.log, 40), f"{said} ended before the run finished", info.state if info else None)
            return RunOutcome(run, START_FAILED, seconds, resumed, error)
        return RunOutcome(run, INTERRUPTED, seconds, resumed)  # checkpointed, but the job was not requeued: resumed by the next invocation
