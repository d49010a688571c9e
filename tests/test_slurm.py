"""Studies on a real one-node Slurm cluster (``.ci/slurm-cluster.sh``): time limits, preemption, restarts.

The protocol tests run the study's Slurm executor against ``nnUNetv2_train`` replaced by
a small program that keeps the trainer's side of the interruption contract (a
``progress.json`` per epoch; on SIGTERM/SIGUSR1 the step finishes, the checkpoint is
saved at the start of the epoch in progress, ``interruptions.json`` gets an entry, exit
status 75; ``--c`` resumes from the checkpoint), with epochs of a fixed length, so the
timing of Slurm's signals is under the test's control and each test takes seconds of
training. The tests through nnU-Net's real ``nnUNetv2_train`` are in ``test_study.py``
(``-m slurm``) and below (marked ``nnunet``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnunet_losses.study.executors import SlurmExecutor
from nnunet_losses.study.runner import run_study
from nnunet_losses.study.runs import RunPaths, State, study_statuses
from nnunet_losses.study.slurm import SlurmOptions, recorded_jobs
from nnunet_losses.study.spec import Run, StudySpec, save_spec
from nnunet_losses.study.status import status_report

from slurm_cluster import job_fields, slurm, slurm_cluster  # noqa: F401  (the fixture)

CONTRACT_TRAINER = '''
"""nnUNetv2_train as the package's trainers behave towards the study: progress, checkpoint on a signal, exit 75."""
import json, os, signal, sys, time
from datetime import datetime
from pathlib import Path

import torch

args = sys.argv[1:]
dataset, configuration, fold = args[0], args[1], args[2]
trainer, plans = args[args.index("-tr") + 1], args[args.index("-p") + 1]
out = Path(os.environ["nnUNet_results"]) / dataset / f"{trainer}__{plans}__{configuration}" / f"fold_{fold}"
out.mkdir(parents=True, exist_ok=True)
epochs, iterations = int(os.environ["NNUNET_LOSSES_EPOCHS"]), int(os.environ.get("NNUNET_LOSSES_ITERATIONS", "4"))
step_seconds = float(os.environ["CONTRACT_STEP_SECONDS"])
stop = []
for number in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(number, lambda signum, frame: stop.append(signal.Signals(signum).name))

def write(path, content):
    temporary = path.with_name("." + path.name + ".tmp")
    temporary.write_text(json.dumps(content))
    temporary.replace(path)

def read(path, default):
    return json.loads(path.read_text()) if path.is_file() else default

start = torch.load(out / "checkpoint_latest.pth")["current_epoch"] if "--c" in args and (out / "checkpoint_latest.pth").is_file() else 0
record = read(out / "nnunet_losses_run.json", {"runs": []})
record["runs"].append({"start_epoch": start, "resumed": "--c" in args, "num_epochs": epochs, "trainer": trainer})
write(out / "nnunet_losses_run.json", record)
print(f"training {trainer} from epoch {start}", flush=True)
for epoch in range(start, epochs):
    for iteration in range(iterations):
        if stop:
            torch.save({"current_epoch": epoch}, out / "checkpoint_latest.pth")
            entries = read(out / "interruptions.json", [])
            write(out / "interruptions.json", entries + [{"signal": stop[0], "epoch": epoch, "iteration": iteration, "time": datetime.now().isoformat()}])
            print(f"{stop[0]}: checkpoint at the start of epoch {epoch}, {iteration} iterations of it lost", flush=True)
            sys.exit(75)
        time.sleep(step_seconds)
    write(out / "progress.json", {"epoch": epoch + 1, "num_epochs": epochs, "iterations": (epoch + 1) * iterations,
                                  "num_iterations_per_epoch": iterations, "pseudo_dice": 0.5, "ema_pseudo_dice": 0.5,
                                  "epoch_seconds": iterations * step_seconds, "time": datetime.now().isoformat()})
torch.save({"current_epoch": epochs}, out / "checkpoint_final.pth")
(out / "validation").mkdir(exist_ok=True)
seed = int(os.environ["NNUNET_LOSSES_SEED"])
write(out / "validation" / "summary.json", {"foreground_mean": {"Dice": 0.5 + seed / 100}, "mean": {"1": {"Dice": 0.5 + seed / 100}}})
print("done", flush=True)
'''


@pytest.fixture
def contract_trainer(tmp_path, monkeypatch):
    """``nnUNetv2_train`` on PATH is the contract program; ``step`` sets the seconds per iteration."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "nnUNetv2_train"
    program.write_text(f"#!{sys.executable}\n" + CONTRACT_TRAINER)
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CONTRACT_STEP_SECONDS", "0.5")
    for variable in ("NNUNET_LOSSES_SEED", "NNUNET_LOSSES_EPOCHS", "NNUNET_LOSSES_ITERATIONS", "NNUNET_LOSSES_VAL_ITERATIONS"):
        monkeypatch.delenv(variable, raising=False)
    return program


def _spec(seeds: int, epochs: int) -> StudySpec:
    return StudySpec("cdf", "Dataset999_Contract", "2d", "plans", ("nnUNetTrainerContract",), tuple(range(seeds)), (0,), epochs, 4)


def _run(spec: StudySpec, study_dir: Path, options: SlurmOptions, retries: int = 1) -> tuple[list, str]:
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        statuses = run_study(spec, study_dir, SlurmExecutor(options, poll_seconds=1), device="cpu", gpus=0, retries=retries)
    return statuses, output.getvalue()


def _attempts(paths: RunPaths) -> list[dict]:
    return json.loads(paths.attempts.read_text())


@pytest.mark.slurm
def test_a_time_limit_shorter_than_the_training_requeues_the_job_until_the_run_is_done(slurm_cluster, contract_trainer, tmp_path):
    """64 epochs of 1 s against a 1-minute limit signalled 58 s ahead. Slurm checks time limits every 30 s, so a job
    gets the signal 2 to 32 s after it started (each start of the requeued job included), of which a few seconds go to
    starting Python and the training: an attempt trains at most 30 s, so 64 s of training are signalled at least twice.
    The job checkpoints, is requeued and resumes with --c until all epochs are done, and no retry is used."""
    spec = _spec(seeds=1, epochs=64)
    first = slurm_cluster.probe_job_id()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONTRACT_STEP_SECONDS", "0.25")
        statuses, output = _run(spec, tmp_path, SlurmOptions(gpus=0, time_limit_minutes=1, signal_lead_seconds=58), retries=0)
    jobs_seen = slurm_cluster.probe_job_id() - first - 1
    [status] = statuses
    assert status.state is State.DONE, output
    paths = status.paths
    [job_id] = recorded_jobs(paths)
    assert jobs_seen == 1  # one submission; every resumption is the same job, requeued
    attempts = _attempts(paths)
    interrupted = [a for a in attempts if a["interrupted"]]
    restarts = int(job_fields(job_id)["Restarts"])
    # a requeued start that Slurm dropped as non-startable (under load) is requeued again, and said so
    lost = output.count(f"Slurm job {job_id} requeued again: its requeued start")
    assert len(interrupted) >= 2 and restarts == len(interrupted) + lost, (attempts, output)
    assert [a["interrupted"] for a in attempts] == [True] * len(interrupted) + [False] and attempts[-1]["returncode"] == 0
    counts = [a["slurm_restarts"] for a in attempts]
    assert all(a["slurm_job_id"] == job_id for a in attempts) and counts[0] == 0 and counts == sorted(set(counts)) and counts[-1] == restarts
    for attempt in interrupted:
        if attempt["returncode"] == 75:  # the trainer's handler: the step finished, the checkpoint saved
            assert attempt["interruption"]["signal"] == "SIGTERM" and attempt["epochs_lost"] == int(attempt["interruption"]["iteration"] > 0)
        else:  # SIGTERM before the trainer installed its handler (during start-up): nothing trained, nothing lost
            assert (attempt["returncode"], attempt["interruption"], attempt["epochs_lost"]) == (-15, None, 0)
    assert sum(a["returncode"] == 75 for a in interrupted) >= 2
    progress = json.loads(paths.progress.read_text())
    assert (progress["epoch"], progress["iterations"]) == (64, 256)  # the epochs and iterations of an uninterrupted run
    record = json.loads((paths.output_folder / "nnunet_losses_run.json").read_text())["runs"]
    assert [entry["resumed"] for entry in record][1:] == [True] * (len(record) - 1)  # one entry per start of the training
    assert [a["resumed"] for a in attempts][-1] is True
    assert not paths.failed_marker.exists() and json.loads(paths.result.read_text())["state"] == "done"
    assert "requeueing job" in (paths.run_dir / f"slurm-{job_id}.out").read_text()
    report = status_report(tmp_path)
    assert f"{job_id} COMPLETED, requeued {restarts}x" in report
    lost = ", ".join(str(a["epochs_lost"]) for a in interrupted)
    assert f"interrupted {len(interrupted)}x (epochs lost: {lost})" in report


@pytest.mark.slurm
def test_preemption_requeues_and_scancel_reports_slurm_state_while_the_others_go_on(slurm_cluster, contract_trainer, tmp_path):
    """Three runs: one preempted (scontrol requeue) mid-training resumes and is done, one cancelled (scancel) is
    failed with Slurm's state, not retried; the third is untouched."""
    spec = _spec(seeds=3, epochs=6)
    save_spec(spec, tmp_path)
    paths = {seed: RunPaths.of(tmp_path, spec, Run("nnUNetTrainerContract", seed, 0)) for seed in range(3)}

    def disturb() -> None:
        for seed in (0, 1):
            slurm_cluster.wait_until(lambda: paths[seed].progress.is_file(), 120, f"seed {seed}'s first epoch")
        slurm("scontrol", "requeue", recorded_jobs(paths[0])[-1])
        slurm("scancel", recorded_jobs(paths[1])[-1])

    import threading

    disturber = threading.Thread(target=disturb)
    disturber.start()
    statuses, output = _run(spec, tmp_path, SlurmOptions(gpus=0), retries=1)
    disturber.join()
    states = {status.run.seed: status for status in statuses}
    assert states[0].state is State.DONE and states[2].state is State.DONE, output
    preempted = _attempts(paths[0])
    assert [a["returncode"] for a in preempted] == [75, 0] and preempted[0]["interruption"]["signal"] == "SIGTERM"
    assert int(job_fields(recorded_jobs(paths[0])[0])["Restarts"]) == 1
    assert states[1].state is State.FAILED and len(recorded_jobs(paths[1])) == 1  # not retried although --retries 1
    failed = json.loads(paths[1].failed_marker.read_text())
    assert failed["slurm_state"] == "CANCELLED" and f"Slurm job {recorded_jobs(paths[1])[0]} CANCELLED" in failed["error"]
    assert f"FAILED  nnUNetTrainerContract seed 1 fold 0: Slurm job {recorded_jobs(paths[1])[0]} CANCELLED" in output
    assert [a["returncode"] for a in _attempts(paths[2])] == [0] and len(recorded_jobs(paths[2])) == 1


LOCAL_STUDY_PROCESS = """
import sys
from pathlib import Path
from nnunet_losses.study.executors import LocalExecutor
from nnunet_losses.study.runner import run_study
from nnunet_losses.study.spec import StudySpec
spec = StudySpec("cdf", "Dataset999_Contract", "2d", "plans", ("nnUNetTrainerContract",), (0, 1), (0,), 16, 4)
run_study(spec, Path(sys.argv[1]), LocalExecutor(parallel=2), device="cpu")
"""


def test_ctrl_c_of_a_local_study_checkpoints_its_trainings_and_the_next_invocation_resumes_them(contract_trainer, tmp_path):
    """SIGINT (Ctrl-C) of a local study while two trainings run: each gets SIGTERM (its main process only), saves its
    checkpoint and exits 75; the attempts are interrupted (not failed), and the next invocation resumes them with --c
    to the same epochs and iterations as uninterrupted runs."""
    spec = _spec(seeds=2, epochs=16)  # 32 s of training each: a loaded machine still signals them mid-training
    paths = [RunPaths.of(tmp_path, spec, run) for run in spec.runs()]
    study = subprocess.Popen([sys.executable, "-c", LOCAL_STUDY_PROCESS, str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not all(p.progress.is_file() for p in paths):
        assert time.monotonic() < deadline and study.poll() is None, "the trainings did not start"
        time.sleep(0.2)
    study.send_signal(signal.SIGINT)
    assert study.wait(120) != 0 and "KeyboardInterrupt" in study.stderr.read()
    for p in paths:
        [attempt] = _attempts(p)
        assert (attempt["returncode"], attempt["interrupted"]) == (75, True) and attempt["interruption"]["signal"] == "SIGTERM"
        assert attempt["epochs_lost"] == int(attempt["interruption"]["iteration"] > 0) and not p.failed_marker.exists()
    assert {status.state for status in study_statuses(tmp_path, spec)} == {State.INTERRUPTED}
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        from nnunet_losses.study.executors import LocalExecutor

        statuses = run_study(spec, tmp_path, LocalExecutor(parallel=2), device="cpu")
    assert [status.state for status in statuses] == [State.DONE, State.DONE], output.getvalue()
    assert "0 failed" in output.getvalue() and "2 to launch (2 from a checkpoint)" in output.getvalue()
    for p in paths:
        assert [(a["returncode"], a["resumed"]) for a in _attempts(p)] == [(75, False), (0, True)]
        progress = json.loads(p.progress.read_text())
        assert (progress["epoch"], progress["iterations"]) == (16, 64)


STUDY_PROCESS = """
import sys
from pathlib import Path
from nnunet_losses.study.executors import SlurmExecutor
from nnunet_losses.study.runner import run_study
from nnunet_losses.study.slurm import SlurmOptions
from nnunet_losses.study.spec import StudySpec
spec = StudySpec("cdf", "Dataset999_Contract", "2d", "plans", ("nnUNetTrainerContract",), (0, 1, 2), (0,), 6, 4)
run_study(spec, Path(sys.argv[1]), SlurmExecutor(SlurmOptions(gpus=0), poll_seconds=1), device="cpu", gpus=0)
"""


@pytest.mark.slurm
def test_a_killed_study_is_followed_by_the_next_invocation_and_a_controller_restart_loses_nothing(slurm_cluster, contract_trainer, tmp_path):
    """SIGKILL of the study process while its jobs run; a new invocation follows them (no second submission) through
    a restart of slurmctld, and every run is done with exactly one job."""
    spec = _spec(seeds=3, epochs=6)
    first = slurm_cluster.probe_job_id()
    study = subprocess.Popen([sys.executable, "-c", STUDY_PROCESS, str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths = [RunPaths.of(tmp_path, spec, run) for run in spec.runs()]
    slurm_cluster.wait_until(lambda: all(recorded_jobs(p) for p in paths) and paths[0].progress.is_file(), 120, "the jobs to run")
    os.kill(study.pid, signal.SIGKILL)
    study.wait()
    assert {status.state for status in study_statuses(tmp_path, spec)} == {State.RUNNING}

    import threading

    def restart_while_followed() -> None:
        epoch = lambda: json.loads(paths[0].progress.read_text())["epoch"]  # noqa: E731
        slurm_cluster.wait_until(lambda: epoch() >= 3, 120, "seed 0's third epoch (the new invocation follows by then)")
        slurm_cluster.restart_controller()

    restarter = threading.Thread(target=restart_while_followed)
    restarter.start()
    statuses, output = _run(spec, tmp_path, SlurmOptions(gpus=0))
    restarter.join()
    jobs_seen = slurm_cluster.probe_job_id() - first - 1
    assert [status.state for status in statuses] == [State.DONE] * 3, output
    assert "3 followed" in output and "0 to launch" in output
    assert [len(recorded_jobs(p)) for p in paths] == [1, 1, 1] and jobs_seen == 3
    assert all([a["returncode"] for a in _attempts(p)] == [0] for p in paths)


def test_the_job_script_asks_for_the_signal_ahead_of_the_limit_and_requeueing(tmp_path):
    from nnunet_losses.study.slurm import job_script

    script = job_script(tmp_path / "launch.json", "nnunet-losses:T:seed_0_fold_0", tmp_path / "slurm-%j.out",
                        SlurmOptions("gpu", 2, 90, 8, 600))
    assert script.splitlines() == [
        "#!/bin/bash",
        "#SBATCH --job-name=nnunet-losses:T:seed_0_fold_0",
        f"#SBATCH --output={tmp_path}/slurm-%j.out",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@600",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --time=90",
        "#SBATCH --cpus-per-task=8",
        f"exec {sys.executable} -m nnunet_losses.study.slurm {tmp_path}/launch.json",
    ]
    assert "gpus" not in job_script(tmp_path / "l.json", "n", tmp_path / "o", SlurmOptions(gpus=0))
