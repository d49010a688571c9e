"""The one-node Slurm cluster of ``.ci/slurm-cluster.sh`` for the tests marked ``slurm``.

The session fixture :func:`slurm_cluster` starts it (or reuses a running one) and points
Slurm's commands at it (``SLURM_CONF``); where it cannot start, every test that needs it
fails with the script's reason. Slurm delays a requeued job's start by two minutes
(its ``BeginTime``); the fixture lets such jobs start at once, so that tests with several
requeues stay short. The count of jobs Slurm has seen comes from Slurm itself: job ids are
handed out one after another, so a probe job submitted before and after a study brackets
the ids of every job submitted in between.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "slurm-cluster.sh"


def slurm(*args: str) -> str:
    """Run a Slurm command; its stdout (raises with its stderr on failure)."""
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job`` of one job as a dict (JobState, Restarts, Reason, ...)."""
    return dict(field.split("=", 1) for field in slurm("scontrol", "show", "job", "-o", job_id).split() if "=" in field)


@dataclass
class SlurmCluster:
    conf: Path

    def probe_job_id(self) -> int:
        """Submit (and cancel) a held job: its id is one more than that of every job submitted before it."""
        job_id = slurm("sbatch", "--parsable", "--hold", "--job-name=probe", "--output=/dev/null", "--wrap", "true").strip().split(";")[0]
        slurm("scancel", job_id)
        return int(job_id)

    def restart_controller(self) -> None:
        subprocess.run([str(CLUSTER_SCRIPT), "restart-controller"], check=True, capture_output=True, text=True, timeout=120)

    def wait_until(self, condition, timeout: float, what: str, step: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(step)


def _start_requeued_jobs_at_once(stop: threading.Event) -> None:
    """Slurm holds a requeued job until two minutes after the requeue (Reason=BeginTime); start it now instead."""
    while not stop.wait(1.0):
        result = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i %r"], capture_output=True, text=True, timeout=60)
        for line in result.stdout.splitlines():
            job_id, _, reason = line.partition(" ")
            if reason.strip() == "BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    started = subprocess.run([str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.fail(f"the local Slurm cluster did not start ({CLUSTER_SCRIPT} start): {(started.stderr or started.stdout).strip()}")
    conf = Path(started.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF="))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    stop = threading.Event()
    releaser = threading.Thread(target=_start_requeued_jobs_at_once, args=(stop,), name="slurm-begin-time", daemon=True)
    releaser.start()
    yield SlurmCluster(conf)
    stop.set()
    releaser.join()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
