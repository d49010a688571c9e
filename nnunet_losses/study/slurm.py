"""Slurm jobs of a study: submission, the job ids of each run, what Slurm says about them, and the job body.

One batch job per run (:func:`submit`). Its script runs the job body,
``python -m nnunet_losses.study.slurm <run dir>/launch.json``, which runs the run's
``nnUNetv2_train`` attempt (:meth:`.launch.RunLaunch.start`) and turns Slurm's signals into
the trainer's checkpoint:

* **Time limit.** The job is submitted with ``--signal=B:USR1@<lead>``: ``lead`` seconds
  before its limit Slurm sends SIGUSR1 to the job body (only to it: ``B:``). The body sends
  SIGTERM to the training's main process, which finishes its step, saves nnU-Net's
  ``checkpoint_latest.pth`` at the start of the epoch in progress and exits with status 75;
  the body then requeues its own job (``scontrol requeue``). The requeued job (same job
  id) starts the attempt again, which resumes with ``--c``.
* **Preemption, ``scontrol requeue``, ``scancel``.** Slurm sends SIGTERM to every process of
  the job (then SIGKILL after the cluster's ``KillWait``); the training checkpoints and exits
  75 the same way, the body forwards its own SIGTERM and ends, and Slurm requeues the job or,
  after ``scancel``, ends it as ``CANCELLED``.

An attempt stopped this way is *interrupted*, never *failed*: it does not count against
``--retries`` (:mod:`.launch`). Slurm delays a requeued job's start (its ``BeginTime``, two
minutes in Slurm 22.05) before scheduling it again.

Job ids of a run are recorded in ``<run dir>/slurm.json`` (``{"jobs": [{"job_id": "12",
"submitted": "..."}]}``) right after ``sbatch`` returns, so a later study invocation finds a
run's job while it is pending or running and follows it instead of submitting another
(:func:`active_job`). Job states come from ``scontrol show job`` (the controller keeps a
job for ``MinJobAge`` seconds after it ends) and need no accounting database. A controller
that does not answer (e.g. while ``slurmctld`` restarts) raises :class:`SlurmUnavailable`;
callers then keep what they knew instead of taking the job for gone.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..files import read_json, write_atomically, write_json

if TYPE_CHECKING:
    from .launch import RunLaunch
    from .runs import RunPaths

JOBS_FILE = "slurm.json"
LAUNCH_FILE = "launch.json"
TIME_LIMIT_SIGNAL = signal.SIGUSR1
ENDED_STATES = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "SPECIAL_EXIT"}
)
"""Slurm job states after which the job does not run again (every other state: pending, running, requeued, completing, ...)."""
FIELD = re.compile(r"(\w+)=(\S*)")
COMMAND_SECONDS = 60


class SlurmUnavailable(RuntimeError):
    """Slurm's controller did not answer."""


@dataclass(frozen=True)
class SlurmJob:
    """What ``scontrol show job`` says about a job."""

    job_id: str
    state: str
    reason: str
    restarts: int
    exit_code: str

    @property
    def active(self) -> bool:
        """Pending, running, requeued or completing: the job may still run (again)."""
        return self.state not in ENDED_STATES

    def describe(self) -> str:
        """``12 RUNNING``, ``12 PENDING (BeginTime)``, ``12 CANCELLED, exit 0:15``, with the restarts if any."""
        text = f"{self.job_id} {self.state}"
        if self.reason not in ("", "None"):
            text += f" ({self.reason})"
        if not self.active and self.exit_code not in ("", "0:0"):
            text += f", exit {self.exit_code}"
        if self.restarts:
            text += f", requeued {self.restarts}x"
        return text


def _slurm(command: Sequence[str]) -> subprocess.CompletedProcess:
    """Run a Slurm command; :class:`SlurmUnavailable` when it cannot reach the controller."""
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=COMMAND_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SlurmUnavailable(f"{command[0]}: {error}") from error
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        raise SlurmUnavailable(f"{' '.join(command)}: {(result.stderr or result.stdout).strip()}")
    return result


def requeue(job_id: str) -> bool:
    """``scontrol requeue`` of an ended job (pending again, same job id, ``Restarts`` + 1); ``False`` once the
    controller has forgotten the job."""
    return _slurm(["scontrol", "requeue", str(job_id)]).returncode == 0


def job_info(job_id: str) -> SlurmJob | None:
    """Slurm's view of a job, ``None`` once the controller has forgotten it (``MinJobAge`` after its end)."""
    result = _slurm(["scontrol", "show", "job", "-o", str(job_id)])
    fields = dict(FIELD.findall(result.stdout)) if result.returncode == 0 else {}
    if "JobState" not in fields:
        return None
    return SlurmJob(str(job_id), fields["JobState"], fields.get("Reason", ""), int(fields.get("Restarts", "0") or 0), fields.get("ExitCode", ""))


def recorded_jobs(paths: RunPaths) -> list[str]:
    """The Slurm job ids submitted for a run, oldest first."""
    record = read_json(paths.run_dir / JOBS_FILE)
    jobs = record.get("jobs") if isinstance(record, dict) else None
    return [str(job["job_id"]) for job in jobs if isinstance(job, dict) and "job_id" in job] if isinstance(jobs, list) else []


def active_job(paths: RunPaths) -> SlurmJob | None:
    """The run's newest Slurm job if Slurm still has it pending or running (raises :class:`SlurmUnavailable`)."""
    jobs = recorded_jobs(paths)
    if not jobs:
        return None
    job = job_info(jobs[-1])
    return job if job is not None and job.active else None


@dataclass(frozen=True)
class SlurmOptions:
    """What every job of a study asks Slurm for."""

    partition: str | None = None
    gpus: int = 1
    time_limit_minutes: int | None = None
    cpus_per_task: int | None = None
    signal_lead_seconds: int = 300

    def directives(self) -> list[str]:
        lines = ["--nodes=1", "--ntasks=1", "--requeue", "--open-mode=append", f"--signal=B:{TIME_LIMIT_SIGNAL.name[3:]}@{self.signal_lead_seconds}"]
        if self.partition:
            lines.append(f"--partition={self.partition}")
        if self.gpus:
            lines.append(f"--gpus-per-node={self.gpus}")
        if self.time_limit_minutes:
            lines.append(f"--time={self.time_limit_minutes}")
        if self.cpus_per_task:
            lines.append(f"--cpus-per-task={self.cpus_per_task}")
        return lines


def job_script(launch_file: Path, job_name: str, output: Path, options: SlurmOptions) -> str:
    """The batch script of one run: Slurm's directives, then the job body in this Python."""
    directives = [f"--job-name={job_name}", f"--output={output}", *options.directives()]
    body = f"exec {shlex.quote(sys.executable)} -m nnunet_losses.study.slurm {shlex.quote(str(launch_file))}"
    return "#!/bin/bash\n" + "".join(f"#SBATCH {line}\n" for line in directives) + body + "\n"


def submit(launch: RunLaunch, options: SlurmOptions) -> str:
    """Submit one run's job; records and returns its job id."""
    paths = launch.paths
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    launch_file = write_json(paths.run_dir / LAUNCH_FILE, launch.to_json())
    name = f"nnunet-losses:{launch.run.trainer}:{launch.run.name}"
    script = write_atomically(paths.run_dir / "slurm_job.sh", job_script(launch_file, name, paths.run_dir / "slurm-%j.out", options))
    result = _slurm(["sbatch", "--parsable", str(script)])
    job_id = result.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmUnavailable(f"sbatch {script} gave no job id: {result.stdout.strip()} {result.stderr.strip()}")
    record = read_json(paths.run_dir / JOBS_FILE)
    jobs = record.get("jobs", []) if isinstance(record, dict) else []
    write_json(paths.run_dir / JOBS_FILE, {"jobs": [*jobs, {"job_id": job_id, "submitted": datetime.now().isoformat(timespec="seconds")}]})
    return job_id


def requeue_self(job_id: str) -> None:
    """Ask Slurm to requeue this job. The requeue ends this job's processes, ``scontrol`` among them, with SIGTERM,
    so only an error message of ``scontrol`` says that it failed."""
    result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=COMMAND_SECONDS)
    if result.returncode != 0 and result.stderr.strip():
        print(f"nnunet-losses: scontrol requeue {job_id} failed: {result.stderr.strip()}; the next study invocation resumes the run", flush=True)


def run_job(launch_file: Path) -> int:
    """The body of a run's Slurm job: one attempt, Slurm's signals forwarded to the training (module docstring).

    The signal handlers are installed first, before the imports of the launch (which load torch): a signal that
    comes before the training started requeues the job (time limit) or ends it (SIGTERM) without starting it.
    Returns the training's exit status (75 when it was interrupted).
    """
    received: list[int] = []
    active = None

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        if active is not None:
            active.request_stop()

    for number in (TIME_LIMIT_SIGNAL, signal.SIGTERM):
        signal.signal(number, forward)
    from .launch import INTERRUPTED, RunLaunch

    if not received:
        active = RunLaunch.from_json(read_json(launch_file)).start()
        if received:
            active.request_stop()
        while (returncode := active.process.poll()) is None:
            time.sleep(0.5)
        signal.signal(TIME_LIMIT_SIGNAL, signal.SIG_IGN)  # the training has ended: a late time-limit signal changes nothing
        if not active.finish(returncode).interrupted:
            return returncode
    if TIME_LIMIT_SIGNAL in received and signal.SIGTERM not in received:
        job_id = os.environ["SLURM_JOB_ID"]
        print(f"nnunet-losses: {TIME_LIMIT_SIGNAL.name} before the time limit; requeueing job {job_id}, which resumes the run from its checkpoint", flush=True)
        requeue_self(job_id)
    return INTERRUPTED


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1])))
