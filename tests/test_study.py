"""Seed studies and comparisons through nnU-Net's real ``nnUNetv2_train`` on CPU.

Trainings are tiny (small plans, 1 epoch, 2 iterations, 1 validation iteration) and
run two at a time; each still takes ~30 s, mostly nnU-Net's final validation, so the
runs are shared: one CDF study (3 trainers x 2 seeds, one trainer failing on purpose)
serves the layout, CSV, plot, failure, status and restart tests; the Slurm test (on the
local cluster of ``.ci/slurm-cluster.sh``) redoes one deleted and one interrupted run of
it as Slurm jobs, and the comparison reuses its fold-0 runs and trains fold 1 only. Tests of the statistics,
the status table and the restart rules work on hand-made folders and need no nnU-Net.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nnunet_losses.study.cli import main as study_main
from nnunet_losses.study.case_metrics import case_metrics, diverged_case_metrics
from nnunet_losses.study.collect import cdf_rows, foreground_label_names
from nnunet_losses.study.results import dice_columns, summary_dice
from nnunet_losses.study.compare import markdown_table, summarise
from nnunet_losses.study.executors import SlurmExecutor, split_cores
from nnunet_losses.study.launch import RunLaunch, RunOutcome
from nnunet_losses.study.plots import cdf_figure, cdf_legend_label
from nnunet_losses.study.progress import StudyProgress, finished_epochs
from nnunet_losses.study.reports import write_cdf_report, write_compare_report
from nnunet_losses.study.runner import StudyBusyError, run_study, study_lock
from nnunet_losses.files import write_json
from nnunet_losses.study.runs import RunPaths, State, run_status, study_statuses
from nnunet_losses.study.slurm import SlurmOptions, recorded_jobs
from nnunet_losses.study.spec import Run, StudyMismatchError, StudySpec, check_spec, extends, load_spec, save_spec
from nnunet_losses.study.status import status_report
from nnunet_losses.nnunet.configuration import ConfigurationError

from conftest import SMALL_PLANS, announce
from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)

RRW, RWB, FAILING = "nnUNetTrainerRRW", "nnUNetTrainerRWBoundary", "nnUNetTrainerStudyFailing"
TINY = ["-p", SMALL_PLANS, "--epochs", "1", "--iterations", "2", "--val-iterations", "1"]  # no --device: chosen automatically
FAILING_MODULE = '''
import os

from nnunet_losses.trainers.losses_region_wise import nnUNetTrainerRRW


class nnUNetTrainerStudyFailing(nnUNetTrainerRRW):
    """Builds like RRW (so it passes the preflight) and fails when training starts."""

    def on_train_start(self):
        cores = sorted(os.sched_getaffinity(0))
        raise RuntimeError(f"deliberate failure, seed {os.environ['NNUNET_LOSSES_SEED']}, cores {cores}")
'''
NAN = "nnUNetTrainerStudyNaN"
NAN_MODULE = '''
import torch

from nnunet_losses.trainers.losses_control import nnUNetTrainerDiceCE


class NaNFromEpoch1(torch.nn.Module):
    """nnU-Net's loss, times NaN from the trainer's epoch 1 on."""

    def __init__(self, loss, trainer):
        super().__init__()
        self.loss, self.trainer = loss, [trainer]

    def forward(self, output, target):
        value = self.loss(output, target)
        return value * float("nan") if self.trainer[0].current_epoch >= 1 else value


class nnUNetTrainerStudyNaN(nnUNetTrainerDiceCE):
    """Dice + CE whose loss turns NaN in epoch 1: the training diverges mid-run."""

    def _build_loss(self):
        loss = super()._build_loss()
        loss.native = NaNFromEpoch1(loss.native, self)
        return loss
'''


def invoke(*argv: str) -> tuple[int, str, float]:
    """``nnunet-losses study ARGV`` in this process: exit status, stdout+stderr, seconds."""
    output = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = study_main(list(argv))
    return code, output.getvalue(), time.monotonic() - start


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def attempts(study_dir: Path, trainer: str, name: str) -> list[dict]:
    return json.loads((study_dir / "runs" / trainer / name / "attempts.json").read_text())


@pytest.fixture(scope="module")
def study_env(workspace, tmp_path_factory):
    """Tiny-run process counts, and a failing trainer appended to nnUNet_extTrainer."""
    extra = tmp_path_factory.mktemp("failing_trainer")
    (extra / "failing_trainers.py").write_text(FAILING_MODULE)
    (extra / "nan_trainers.py").write_text(NAN_MODULE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_extTrainer", os.pathsep.join([os.environ["nnUNet_extTrainer"], str(extra)]))
        patch.setenv("nnUNet_def_n_proc", "1")
        patch.setenv("nnUNet_n_proc_DA", "0")
        patch.setenv("nnUNet_compile", "false")
        for variable in ("NNUNET_LOSSES_SEED", "NNUNET_LOSSES_EPOCHS", "NNUNET_LOSSES_ITERATIONS", "NNUNET_LOSSES_VAL_ITERATIONS"):
            patch.delenv(variable, raising=False)
        yield


@dataclass(frozen=True)
class CdfStudy:
    dir: Path
    argv: tuple[str, ...]
    code: int
    output: str
    seconds: float


@pytest.fixture(scope="module")
def cdf_study(cardiac, study_env, tmp_path_factory, request) -> CdfStudy:
    study_dir = tmp_path_factory.mktemp("cdf") / "study"
    argv = ("cdf", "-d", str(cardiac.dataset_id), "-c", "2d", "--trainers", RRW, RWB, FAILING, "--seeds", "2", "--parallel", "2", "--out", str(study_dir), *TINY)
    announce(request.config, f"[fixture cdf_study] nnunet-losses study cdf: 3 trainers x 2 seeds, 2 at a time, in {study_dir} ...")
    study = CdfStudy(study_dir, argv, *invoke(*argv))
    announce(request.config, f"[fixture cdf_study] exit status {study.code} ({study.seconds:.0f} s)")
    return study


# --- the CDF study through nnUNetv2_train ------------------------------------------------------


@pytest.mark.nnunet
def test_each_run_trains_in_its_own_results_folder(cdf_study, cardiac):
    assert cdf_study.code == 1, cdf_study.output  # two runs failed on purpose
    spec = load_spec(cdf_study.dir)
    assert spec.seeds == (0, 1) and spec.folds == (0,) and spec.epochs == 1
    for trainer in (RRW, RWB):
        for seed in (0, 1):
            paths = RunPaths.of(cdf_study.dir, spec, Run(trainer, seed, 0))
            assert paths.run_dir == cdf_study.dir / "runs" / trainer / f"seed_{seed}_fold_0"
            assert paths.output_folder == paths.run_dir / cardiac.name / f"{trainer}__{SMALL_PLANS}__2d" / "fold_0"
            assert paths.finished and paths.log.is_file()
            assert not paths.running_marker.exists() and not paths.failed_marker.exists()
            record = json.loads((paths.output_folder / "nnunet_losses_run.json").read_text())["runs"][-1]
            assert (record["trainer"], record["seed"], record["num_epochs"], record["num_iterations_per_epoch"]) == (trainer, seed, 1, 2)
    assert not any(cardiac.workspace.results.glob(f"{cardiac.name}/*StudyFailing*")), "runs must not write to the global nnUNet_results"


@pytest.mark.nnunet
def test_without_device_the_study_trains_on_cuda_if_visible_else_on_the_cpu(cdf_study):
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert "--device" not in cdf_study.argv
    assert f"device: {expected} (" in cdf_study.output
    commands = [path.read_text().split("\n=====")[1].splitlines()[0] for path in cdf_study.dir.glob("runs/*/*/train.log")]
    assert len(commands) == 6 and all(command.endswith(f"-device {expected}") for command in commands), commands


@pytest.mark.nnunet
def test_progress_names_each_log_and_counts_the_epochs_of_nnunet_logs(cdf_study, cardiac):
    spec = load_spec(cdf_study.dir)
    for trainer, seed in ((RRW, 0), (RWB, 1)):
        paths = RunPaths.of(cdf_study.dir, spec, Run(trainer, seed, 0))
        assert f"started {trainer} seed {seed} fold 0; log: {paths.log}\n" in cdf_study.output
        assert finished_epochs(paths.output_folder) == 1  # from nnU-Net's own training_log_*.txt
    assert finished_epochs(RunPaths.of(cdf_study.dir, spec, Run(FAILING, 0, 0)).output_folder) == 0  # failed before epoch 0
    log = RunPaths.of(cdf_study.dir, spec, Run(FAILING, 1, 0)).log
    assert f"FAILED  {FAILING} seed 1 fold 0: RuntimeError: deliberate failure, seed 1" in cdf_study.output and f"(log: {log})" in cdf_study.output
    assert f"cdf {cardiac.name}: epochs 4/4 (100 %); runs: 4 done, 0 running, 2 failed, 0 waiting; " in cdf_study.output


@pytest.mark.nnunet
def test_parallel_runs_are_pinned_to_disjoint_cores(cdf_study):
    core_sets = split_cores(sorted(os.sched_getaffinity(0)), 2)
    first_attempts = [attempts(cdf_study.dir, trainer, f"seed_{seed}_fold_0")[0] for trainer in (RRW, RWB, FAILING) for seed in (0, 1)]
    started_on = [attempt["cores"] for attempt in first_attempts]
    unions = [sorted(set(a) | set(b)) for a in core_sets for b in core_sets]  # a slot's share, or all free cores for the last run
    assert all(cores in unions for cores in started_on)
    assert started_on[0] != started_on[1]  # the first two runs start together, on disjoint sets
    all_cores = sorted(os.sched_getaffinity(0))
    assert all(attempt.get("widened_to", all_cores) == all_cores for attempt in first_attempts)  # widened only to every core
    # the child process saw its pinned set (the failing trainer reports its affinity when it fails): the set it started
    # on, or the wider one if the last other run ended first; failed.json is the last attempt's
    last = attempts(cdf_study.dir, FAILING, "seed_0_fold_0")[-1]
    failed = json.loads((cdf_study.dir / "runs" / FAILING / "seed_0_fold_0" / "failed.json").read_text())
    assert any(f"cores {cores}" in failed["error"] for cores in (last["cores"], last.get("widened_to", last["cores"])))


@pytest.mark.nnunet
def test_cdf_results_csv_and_plot(cdf_study):
    rows = read_csv(cdf_study.dir / "cdf_results.csv")
    assert list(rows[0]) == ["trainer", "seed", "fold", "status", "dice_mean", "dice_RV", "dice_MYO", "dice_LV", "epochs", "seconds", "error"]
    done = [row for row in rows if row["status"] == "done"]
    assert sorted((row["trainer"], row["seed"]) for row in done) == [(RRW, "0"), (RRW, "1"), (RWB, "0"), (RWB, "1")]
    for row in done:
        for column in ("dice_mean", "dice_RV", "dice_MYO", "dice_LV"):
            assert 0.0 <= float(row[column]) <= 1.0
        assert row["epochs"] == "1" and float(row["seconds"]) > 0 and row["error"] == ""
    for name in ("cdf.png", "cdf.pdf"):
        assert (cdf_study.dir / name).stat().st_size > 1000


@pytest.mark.nnunet
def test_finished_runs_survive_a_clone_that_holds_only_their_result_records(cdf_study, tmp_path):
    """Each finished run left result.json; a study folder with nothing else (what git keeps) counts them as done,
    with the same rows as the CSV made from nnU-Net's outputs, and launches none of them again."""
    spec = load_spec(cdf_study.dir)
    original = {(row["trainer"], row["seed"]): row for row in read_csv(cdf_study.dir / "cdf_results.csv")}
    clone = tmp_path / "clone"
    kept = [path.relative_to(cdf_study.dir) for path in cdf_study.dir.glob("runs/*/*/result.json")]
    assert sorted(str(path.parent) for path in kept) == sorted(f"runs/{t}/seed_{s}_fold_0" for t in (RRW, RWB) for s in (0, 1))
    for path in [Path("study.json"), *kept]:
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cdf_study.dir / path, clone / path)
    statuses = [status for status in study_statuses(clone, spec) if status.run.trainer != FAILING]
    assert {status.state for status in statuses} == {State.DONE}
    assert all("committed result.json" in status.detail for status in statuses)
    for row in cdf_rows(statuses, {1: "RV", 2: "MYO", 3: "LV"}):
        assert {key: "" if value is None else str(value) for key, value in row.items()} == original[(row["trainer"], str(row["seed"]))]
    with pytest.raises(ConfigurationError, match="known here only from its result.json"):
        write_compare_report(spec, clone, statuses, Path("unused"), RRW)


@pytest.mark.nnunet
def test_failed_run_is_reported_and_the_others_go_on(cdf_study):
    rows = {(row["trainer"], row["seed"]): row for row in read_csv(cdf_study.dir / "cdf_results.csv")}
    for seed in ("0", "1"):
        row = rows[(FAILING, seed)]
        assert row["status"] == "failed" and row["dice_mean"] == ""
        assert f"RuntimeError: deliberate failure, seed {seed}" in row["error"] and "exit code 1" in row["error"]
    assert f"FAILED  {FAILING} seed 0 fold 0" in cdf_study.output
    assert "not done" in cdf_study.output
    # an infrastructure failure is retried once (--retries 1 by default), then reported
    assert [a["returncode"] for a in attempts(cdf_study.dir, FAILING, "seed_1_fold_0")] == [1, 1]
    assert f"retrying {FAILING} seed 1 fold 0 (failure 1 of at most 2)" in cdf_study.output


@pytest.mark.nnunet
def test_status_lists_done_and_failed_runs_with_log_tails(cdf_study):
    code, output, _ = invoke("status", str(cdf_study.dir))
    assert code == 0
    assert "6 runs: 4 done, 0 diverged, 0 running, 2 failed, 0 interrupted, 0 left" in output
    assert output.count(" done ") == 4 and "Dice 0." in output
    assert f"--- {FAILING} seed 1 fold 0: last lines of" in output
    assert "    RuntimeError: deliberate failure, seed 1" in output


@pytest.mark.nnunet
def test_second_invocation_skips_finished_and_failed_runs(cdf_study):
    before = {path: path.stat().st_mtime_ns for path in cdf_study.dir.glob("runs/*/*/attempts.json")}
    code, output, seconds = invoke(*cdf_study.argv)
    assert code == 1 and "4 done, 0 diverged, 0 running elsewhere, 2 failed (0 retried, 2 out of retries" in output and "0 to launch" in output
    assert {path: path.stat().st_mtime_ns for path in cdf_study.dir.glob("runs/*/*/attempts.json")} == before
    assert seconds < 30


@pytest.mark.nnunet
def test_other_parameters_in_the_same_folder_are_refused(cdf_study):
    argv = [*cdf_study.argv]
    argv[argv.index("--epochs") + 1] = "2"
    code, output, _ = invoke(*argv)
    assert code == 1
    assert "holds a study with other parameters" in output and "epochs: saved 1, requested 2" in output
    assert load_spec(cdf_study.dir).epochs == 1


@pytest.mark.nnunet
@pytest.mark.slurm
def test_deleted_and_interrupted_runs_are_redone_as_slurm_jobs_with_the_local_results(cdf_study, cardiac, slurm_cluster):
    """The deleted run is trained again as a Slurm job (all cores of the node, not one pinned core) and gets exactly
    the Dice values it had when trained locally: nnU-Net on the CPU with the study's seed is deterministic here."""
    spec = load_spec(cdf_study.dir)
    local = {(row["trainer"], row["seed"]): row for row in read_csv(cdf_study.dir / "cdf_results.csv")}
    deleted = RunPaths.of(cdf_study.dir, spec, Run(RRW, 1, 0))
    shutil.rmtree(deleted.run_dir)
    interrupted = RunPaths.of(cdf_study.dir, spec, Run(RWB, 1, 0))
    interrupted.summary.unlink()  # as if stopped during nnU-Net's final validation ...
    interrupted.result.unlink()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_json(interrupted.running_marker, {"pid": gone.pid, "host": socket.gethostname(), "started": "before"})  # ... by a kill -9
    assert run_status(cdf_study.dir, spec, Run(RWB, 1, 0)).state is State.INTERRUPTED
    kept = attempts(cdf_study.dir, RWB, "seed_0_fold_0")

    executor = SlurmExecutor(SlurmOptions(gpus=0, time_limit_minutes=10), poll_seconds=1)
    with contextlib.redirect_stdout(io.StringIO()):
        statuses = run_study(spec, cdf_study.dir, executor, device="cpu", gpus=0)
    states = {str(s.run): s.state for s in statuses}
    assert states[f"{RRW} seed 1 fold 0"] is State.DONE and states[f"{RWB} seed 1 fold 0"] is State.DONE
    assert deleted.finished and [a["resumed"] for a in attempts(cdf_study.dir, RRW, "seed_1_fold_0")] == [False]
    assert interrupted.finished and [a["resumed"] for a in attempts(cdf_study.dir, RWB, "seed_1_fold_0")] == [False, True]
    assert interrupted.log.read_text().rstrip().split("\n=====")[-1].splitlines()[0].endswith("--c")
    assert not interrupted.running_marker.exists()
    assert attempts(cdf_study.dir, RWB, "seed_0_fold_0") == kept
    for paths in (deleted, interrupted):
        [job] = recorded_jobs(paths)
        assert [a["slurm_job_id"] for a in json.loads(paths.attempts.read_text()) if "slurm_job_id" in a] == [job]
    write_cdf_report(spec, cdf_study.dir, statuses, cardiac.folder)
    rows = {(row["trainer"], row["seed"]): row for row in read_csv(cdf_study.dir / "cdf_results.csv")}
    assert sum(row["status"] == "done" for row in rows.values()) == 4
    dice = [column for column in rows[(RRW, "1")] if column.startswith("dice_")]
    assert {c: rows[(RRW, "1")][c] for c in dice} == {c: local[(RRW, "1")][c] for c in dice}  # exactly, as text
    assert {c: rows[(RWB, "1")][c] for c in dice} == {c: local[(RWB, "1")][c] for c in dice}


@pytest.mark.nnunet
def test_a_run_whose_loss_turns_nan_counts_as_diverged_at_dice_0(cardiac, study_env, tmp_path):
    study_dir = tmp_path / "study"
    argv = ("cdf", "-d", str(cardiac.dataset_id), "-c", "2d", "--trainers", NAN, "--seeds", "1", "--out", str(study_dir), "--device", "cpu",
            "-p", SMALL_PLANS, "--epochs", "2", "--iterations", "2", "--val-iterations", "1")
    code, output, _ = invoke(*argv)
    assert code == 0, output  # a diverged run is a result, not a failure
    paths = RunPaths.of(study_dir, load_spec(study_dir), Run(NAN, 0, 0))
    marker = json.loads(paths.diverged_marker.read_text())
    assert marker["epoch"] == 1 and marker["iteration"] == 0 and marker["loss_terms"] == {"dice_ce": "nan"} and marker["total_loss"] == "nan"
    assert "TrainingDiverged: epoch 1, iteration 0" in paths.log.read_text()
    assert len(attempts(study_dir, NAN, "seed_0_fold_0")) == 1  # never retried
    assert f"DIVERGED {NAN} seed 0 fold 0: diverged at epoch 1, iteration 0: dice_ce=nan" in output
    [row] = read_csv(study_dir / "cdf_results.csv")
    assert row["status"] == "diverged" and row["epochs"] == "1"
    assert [float(row[c]) for c in ("dice_mean", "dice_RV", "dice_MYO", "dice_LV")] == [0.0, 0.0, 0.0, 0.0]
    assert (study_dir / "cdf.png").stat().st_size > 1000
    code, status, _ = invoke("status", str(study_dir))
    assert code == 0 and "1 runs: 0 done, 1 diverged" in status and f"{NAN}: 1 counted (done or diverged), 1 diverged, 0 failed" in status
    code, output, _ = invoke(*argv)
    assert code == 0 and "0 done, 1 diverged" in output and "0 to launch" in output


# --- refusals before anything is launched ------------------------------------------------------


@pytest.mark.nnunet
def test_unknown_trainer_is_refused_before_launching(cardiac, study_env, tmp_path):
    out = tmp_path / "study"
    code, output, _ = invoke("cdf", "-d", str(cardiac.dataset_id), "-c", "2d", "--trainers", RRW, "nnUNetTrainerNoSuchLoss", "--seeds", "2", "--out", str(out), *TINY)
    assert code == 1
    assert "unknown trainer 'nnUNetTrainerNoSuchLoss'" in output and RRW in output
    assert not out.exists()


@pytest.mark.nnunet
def test_missing_maps_are_refused_before_launching(cardiac, study_env, tmp_path):
    from nnunet_losses.nnunet.configuration import load_configuration
    from nnunet_losses.nnunet.map_store import MapStore

    map_file = MapStore(load_configuration(cardiac.dataset_id, "2d", SMALL_PLANS)).path("cardiac_000", "rrw")
    hidden = map_file.with_name("hidden-by-test")
    map_file.rename(hidden)
    try:
        out = tmp_path / "study"
        code, output, _ = invoke("cdf", "-d", str(cardiac.dataset_id), "-c", "2d", "--trainers", RRW, "--seeds", "2", "--out", str(out), *TINY)
    finally:
        hidden.rename(map_file)
    assert code == 1
    assert f"{RRW} needs the maps ['rrw']" in output and "cardiac_000" in output
    assert not out.exists()


def test_usage_errors():
    with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()):
        study_main(["compare", "-d", "1", "-c", "2d", "--trainers", RRW, RWB, "--baseline", "nnUNetTrainerX"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        study_main(["cdf", "-d", "1", "-c", "2d", "--trainers", RRW, "--epochs", "1", "--partition", "gpu"])


def readme_cluster_commands() -> list[list[str]]:
    """The ``nnunet-losses study`` command lines of the README's "On a cluster" section, split into arguments."""
    section = (Path(__file__).resolve().parents[1] / "README.md").read_text().split("### On a cluster", 1)[1].split("\n#", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line)[2:] for line in block.splitlines() if line.startswith("nnunet-losses study ")]


@pytest.mark.nnunet
@pytest.mark.slurm
def test_the_readme_cluster_commands_train_every_run_as_a_slurm_job_with_the_local_results(cdf_study, cardiac, slurm_cluster, tmp_path):
    """The README's CPU-partition command, with the test dataset, 1 seed and the tiny budget of the local study: every
    run is one Slurm job, and cdf_results.csv holds exactly the Dice values of the same runs trained locally."""
    gpu, cdf, status = readme_cluster_commands()
    assert gpu[gpu.index("--partition") + 1] == "gpu" and gpu[gpu.index("--gpus") + 1] == "1"
    assert cdf[cdf.index("--partition") + 1] == "cpu" and cdf[cdf.index("--gpus") + 1] == "0" and status[0] == "status"
    study_dir = tmp_path / "study"
    argv = [*cdf]
    argv[argv.index("-d") + 1] = str(cardiac.dataset_id)
    argv[argv.index("--seeds") + 1] = "1"
    epochs = argv.index("--epochs")
    argv[epochs : epochs + 2] = [*TINY[2:], "-p", SMALL_PLANS, "--out", str(study_dir)]
    first = slurm_cluster.probe_job_id()
    code, output, _ = invoke(*argv)
    assert code == 0, output
    assert slurm_cluster.probe_job_id() - first - 1 == 2  # one job per run
    local = {(row["trainer"], row["seed"]): row for row in read_csv(cdf_study.dir / "cdf_results.csv")}
    rows = read_csv(study_dir / "cdf_results.csv")
    assert len(rows) == 2
    for row in rows:
        expected = local[(row["trainer"], row["seed"])]
        assert {k: v for k, v in row.items() if k != "seconds"} == {k: v for k, v in expected.items() if k != "seconds"}
    assert (study_dir / "cdf.png").stat().st_size > 1000
    code, report, _ = invoke("status", str(study_dir))
    assert code == 0 and "2 runs: 2 done" in report and "slurm job" in report
    lines = {tuple(line.split()[:2]): line for line in report.splitlines() if line.startswith("nnUNetTrainer")}
    for status in study_statuses(study_dir, load_spec(study_dir)):
        [job] = recorded_jobs(status.paths)
        assert f"  {job} COMPLETED  " in lines[(status.run.trainer, str(status.run.seed))]


@pytest.mark.nnunet
@pytest.mark.slurm
def test_a_preempted_nnunet_job_checkpoints_is_requeued_and_ends_with_all_its_epochs(cardiac, study_env, slurm_cluster, tmp_path):
    """nnUNetv2_train as a Slurm job, requeued (as by a preemption) after its first epoch: the trainer saves its
    checkpoint and exits 75, Slurm starts the same job again, it resumes with --c and ends done with the epochs and
    iterations of an uninterrupted run; no retry is used."""
    spec = StudySpec("cdf", cardiac.name, "2d", SMALL_PLANS, (RRW,), (0,), (0,), 3, 6, 1)
    paths = RunPaths.of(tmp_path, spec, Run(RRW, 0, 0))
    import threading

    def preempt() -> None:
        slurm_cluster.wait_until(lambda: paths.progress.is_file(), 300, "the first epoch of the training")
        subprocess.run(["scontrol", "requeue", recorded_jobs(paths)[0]], check=True, capture_output=True)

    preempter = threading.Thread(target=preempt)
    preempter.start()
    with contextlib.redirect_stdout(io.StringIO()) as output:
        [status] = run_study(spec, tmp_path, SlurmExecutor(SlurmOptions(gpus=0), poll_seconds=1), device="cpu", gpus=0, retries=0)
    preempter.join()
    assert status.state is State.DONE, output.getvalue()
    [job] = recorded_jobs(paths)
    tried = json.loads(paths.attempts.read_text())
    assert [(a["returncode"], a["resumed"], a["slurm_job_id"]) for a in tried] == [(75, False, job), (0, True, job)]
    stopped = tried[0]["interruption"]
    assert stopped["signal"] == "SIGTERM" and tried[0]["epochs_lost"] == int(stopped["iteration"] > 0)
    progress = json.loads(paths.progress.read_text())
    assert (progress["epoch"], progress["iterations"]) == (3, 18)
    record = json.loads((paths.output_folder / "nnunet_losses_run.json").read_text())["runs"]
    assert [entry["resumed"] for entry in record] == [False, True] and record[1]["start_epoch"] == stopped["epoch"]


# --- comparison ---------------------------------------------------------------------------------


@pytest.mark.nnunet
def test_compare_two_trainers_on_two_folds(cdf_study, cardiac, tmp_path):
    study_dir = tmp_path / "compare"
    for trainer in (RRW, RWB):  # the same seed-0, fold-0 runs as the CDF study's: reuse them
        shutil.copytree(cdf_study.dir / "runs" / trainer / "seed_0_fold_0", study_dir / "runs" / trainer / "seed_0_fold_0")
    code, output, _ = invoke(
        "compare", "-d", str(cardiac.dataset_id), "-c", "2d", "--trainers", RRW, RWB, "--baseline", RRW,
        "--folds", "0", "1", "--parallel", "2", "--out", str(study_dir), "--device", "cpu", *TINY,
    )
    assert code == 0, output
    assert "2 done" in output and "2 to launch" in output

    splits = json.loads((cardiac.folder / "splits_final.json").read_text())
    validation = {case: fold for fold in (0, 1) for case in splits[fold]["val"]}
    cases = read_csv(study_dir / "compare_cases.csv")
    assert sorted((row["trainer"], row["case"]) for row in cases) == sorted((t, c) for t in (RRW, RWB) for c in validation)
    for row in cases:
        assert int(row["fold"]) == validation[row["case"]]
        assert 0.0 <= float(row["dice_mean"]) <= 1.0
        assert math.isnan(float(row["hd95_mean"])) or float(row["hd95_mean"]) >= 0
        assert float(row["delta"]) >= 0
    # per-case Dice agrees with nnU-Net's own evaluation of the same predictions
    summary = json.loads((study_dir / "runs" / RRW / "seed_0_fold_1" / cardiac.name / f"{RRW}__{SMALL_PLANS}__2d" / "fold_1" / "validation" / "summary.json").read_text())
    for entry in summary["metric_per_case"]:
        case = Path(entry["prediction_file"]).name.removesuffix(".nii.gz")
        ours = next(row for row in cases if row["trainer"] == RRW and row["case"] == case)
        assert float(ours["dice_RV"]) == pytest.approx(entry["metrics"]["1"]["Dice"], abs=1e-9, nan_ok=True)

    summaries = read_csv(study_dir / "compare_summary.csv")
    assert {(row["trainer"], row["metric"]) for row in summaries} >= {(RWB, "dice_mean"), (RRW, "hd95_mean"), (RWB, "d3d"), (RWB, "delta")}
    baseline_row = next(row for row in summaries if row["trainer"] == RRW and row["metric"] == "dice_mean")
    assert baseline_row["p_permutation"] == "" and baseline_row["baseline"] == RRW
    other = next(row for row in summaries if row["trainer"] == RWB and row["metric"] == "dice_mean")
    assert 0 < float(other["p_permutation"]) <= 1 and other["t_alternative"] == "greater" and other["n_pairs"] == str(len(validation))
    report = (study_dir / "compare.md").read_text()
    assert f"{RRW} (baseline)" in report and "p_perm=" in report and "| dice_mean |" in report
    assert (study_dir / "compare_dice_mean.png").stat().st_size > 1000 and (study_dir / "compare_hd95_RV.png").is_file()


# --- pure parts: statistics, collection, status, restart rules ---------------------------------


def test_statistics_table_on_synthetic_cases():
    rng = np.random.default_rng(0)
    ids = [f"case_{i:02d}" for i in range(12)]
    base_dice, base_hd = rng.uniform(0.7, 0.9, 12), rng.uniform(5, 15, 12)
    cases = {
        "base": {c: {"dice_mean": d, "hd95_mean": h} for c, d, h in zip(ids, base_dice, base_hd)},
        "better": {c: {"dice_mean": d + 0.05 + rng.normal(0, 0.01), "hd95_mean": h - 2 + rng.normal(0, 0.5)} for c, d, h in zip(ids, base_dice, base_hd)},
        "worse": {c: {"dice_mean": d - 0.05 + rng.normal(0, 0.01), "hd95_mean": h + 2 + rng.normal(0, 0.5)} for c, d, h in zip(ids, base_dice, base_hd)},
        "few": {ids[0]: {"dice_mean": 0.5, "hd95_mean": 3.0}, "other_case": {"dice_mean": 0.4, "hd95_mean": math.nan}},
    }
    table = {(s.trainer, s.metric): s for s in summarise(cases, ["dice_mean", "hd95_mean"], "base", n_permutations=2000)}
    for metric in ("dice_mean", "hd95_mean"):
        assert table[("base", metric)].p_permutation is None and table[("base", metric)].n == 12
        better, worse = table[("better", metric)], table[("worse", metric)]
        assert better.p_permutation < 0.01 and worse.p_permutation < 0.01  # two-sided: both differ
        assert better.p_t_test < 0.01 and worse.p_t_test > 0.99  # one-tailed: only "better" is better
        assert better.n_pairs == 12
    assert table[("better", "dice_mean")].t_alternative == "greater" and table[("better", "hd95_mean")].t_alternative == "less"
    assert table[("better", "dice_mean")].mean == pytest.approx(np.mean([v["dice_mean"] for v in cases["better"].values()]))
    assert table[("better", "dice_mean")].std == pytest.approx(np.std([v["dice_mean"] for v in cases["better"].values()], ddof=1))
    few = table[("few", "dice_mean")]
    assert few.p_permutation is None and few.n_pairs == 1 and few.n == 2  # one case in common with the baseline
    assert table[("few", "hd95_mean")].n == 1  # NaN left out
    markdown = markdown_table(list(table.values()), ["base", "better", "worse", "few"], "base")
    assert "| metric | base (baseline) | better | worse | few |" in markdown
    dice_row = next(line for line in markdown.splitlines() if line.startswith("| dice_mean"))
    assert dice_row.count("*") == 3  # both tests of "better", the two-sided test of "worse"
    assert "p_perm=n/a" in dice_row


def test_collection_from_a_hand_made_summary(tmp_path):
    dataset_json = {"labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3, "ignore": 4}}
    labels = foreground_label_names(dataset_json)
    assert labels == {1: "RV", 2: "MYO", 3: "LV"}
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"foreground_mean": {"Dice": 0.8}, "mean": {"1": {"Dice": 0.7}, "2": {"Dice": 0.9}}, "metric_per_case": []}))
    mean, per_label = summary_dice(summary)
    assert (mean, per_label) == (0.8, {"1": 0.7, "2": 0.9})
    values = dice_columns({"state": "done", "dice_mean": mean, "dice_per_label": per_label}, labels)
    assert values["dice_mean"] == 0.8 and values["dice_RV"] == 0.7 and values["dice_MYO"] == 0.9
    assert math.isnan(values["dice_LV"])
    with pytest.raises(ConfigurationError, match="region-based"):
        foreground_label_names({"labels": {"background": 0, "whole": [1, 2]}})


def _hand_made_study(study_dir: Path) -> tuple[StudySpec, dict[str, RunPaths], subprocess.Popen]:
    """Six runs: done, failed, running (a live process named like nnUNetv2_train), stale marker, never started, diverged."""
    spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (0, 1, 2, 3, 4, 5), (0,), 1)
    save_spec(spec, study_dir)
    states = ("done", "failed", "running", "stale", "left", "diverged")
    paths = {state: RunPaths.of(study_dir, spec, Run("A", seed, 0)) for seed, state in enumerate(states)}
    diverged = paths["diverged"]  # the trainer's marker, and the failed.json the launcher writes for its exit code
    diverged.output_folder.mkdir(parents=True)
    write_json(diverged.diverged_marker, {"epoch": 3, "iteration": 7, "loss_terms": {"rw": "nan"}, "total_loss": "nan", "reason": "a loss value is not finite"})
    write_json(diverged.failed_marker, {"returncode": 1, "error": "TrainingDiverged: ... (exit code 1)"})
    done = paths["done"]
    done.validation.mkdir(parents=True)
    done.checkpoint_final.write_bytes(b"")
    done.summary.write_text(json.dumps({"foreground_mean": {"Dice": 0.8765}}))
    failed = paths["failed"]
    failed.run_dir.mkdir(parents=True)
    failed.log.write_text("epoch 0\nTraceback (most recent call last):\nValueError: loss became NaN\n")
    write_json(failed.failed_marker, {"returncode": 1, "error": "ValueError: loss became NaN (exit code 1)"})
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "nnUNetv2_train"])
    host = socket.gethostname()
    paths["running"].run_dir.mkdir(parents=True)
    write_json(paths["running"].running_marker, {"pid": process.pid, "host": host, "started": "now"})
    gone = subprocess.Popen([sys.executable, "-c", "pass", "nnUNetv2_train"])
    gone.wait()
    paths["stale"].output_folder.mkdir(parents=True)
    paths["stale"].checkpoint_latest.write_bytes(b"")
    write_json(paths["stale"].running_marker, {"pid": gone.pid, "host": host, "started": "before"})
    return spec, paths, process


def test_status_table_of_done_failed_running_interrupted_and_left_runs(tmp_path):
    spec, _, process = _hand_made_study(tmp_path)
    try:
        report = status_report(tmp_path)
        code, output, _ = invoke("status", str(tmp_path))
    finally:
        process.kill()
        process.wait()
    assert code == 0 and output.strip() == report
    lines = {line.split()[1]: line for line in report.splitlines() if line.startswith("A ")}
    assert "done" in lines["0"] and "Dice 0.8765" in lines["0"]
    assert "failed" in lines["1"] and "ValueError: loss became NaN" in lines["1"]
    assert "running" in lines["2"] and f"pid {process.pid}" in lines["2"]
    assert "interrupted" in lines["3"] and "resumes from its checkpoint" in lines["3"]
    assert lines["4"].split()[3] == "left"
    assert "diverged" in lines["5"] and "diverged at epoch 3, iteration 7: rw=nan (a loss value is not finite)" in lines["5"]
    assert "6 runs: 1 done, 1 diverged, 1 running, 1 failed, 1 interrupted, 1 left" in report
    assert "A: 2 counted (done or diverged), 1 diverged, 1 failed" in report
    assert "--- A seed 1 fold 0: last lines of" in report and "    ValueError: loss became NaN" in report


def test_status_shows_the_progress_file_and_the_interruptions_of_unfinished_runs(tmp_path):
    """An interrupted run: its epochs, iterations and pseudo Dice from the trainer's progress.json, and its
    interruptions from attempts.json; a run of a trainer without progress.json: the epochs of nnU-Net's log."""
    spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (0, 1), (0,), 8)
    save_spec(spec, tmp_path)
    package, other = (RunPaths.of(tmp_path, spec, Run("A", seed, 0)) for seed in (0, 1))
    package.output_folder.mkdir(parents=True)
    package.checkpoint_latest.write_bytes(b"")
    write_json(package.progress, {"epoch": 3, "num_epochs": 8, "iterations": 24, "num_iterations_per_epoch": 8, "pseudo_dice": 0.41234})
    write_json(package.attempts, [{"returncode": 75, "interrupted": True, "epochs_lost": 1}, {"returncode": -15, "interrupted": True, "epochs_lost": 0}])
    other.output_folder.mkdir(parents=True)
    other.log.write_text("===== an attempt of nnUNetv2_train, stopped\n")
    _nnunet_epoch(other.output_folder / "training_log_1.txt", 0, ended=True)
    _nnunet_epoch(other.output_folder / "training_log_1.txt", 1, ended=False)
    report = status_report(tmp_path)
    lines = {line.split()[1]: line for line in report.splitlines() if line.startswith("A ")}
    assert "interrupted  epoch 3/8 (24 iterations), pseudo Dice 0.412; not finished; resumes from its checkpoint; interrupted 2x (epochs lost: 1, 0)" in lines["0"]
    assert "interrupted  epoch 1/? (nnU-Net's log); not finished; restarts from scratch" in lines["1"]
    assert "slurm job" not in report


class RecordingExecutor:
    """Records what the runner launches, runs nothing."""

    def __init__(self) -> None:
        self.launches: list[RunLaunch] = []
        self.rounds: list[list[int]] = []

    def run(self, launches, progress):
        self.launches += launches
        self.rounds.append(sorted(launch.run.seed for launch in launches))
        return []

    def follows(self, status):
        return False


@pytest.mark.parametrize(
    ("retries", "retry_failed", "rounds"), [(1, False, [[1, 3, 4], [1]]), (0, False, [[3, 4]]), (0, True, [[1, 3, 4]]), (2, True, [[1, 3, 4], [1], [1]])]
)
def test_restart_rules(tmp_path, retries, retry_failed, rounds):
    spec, paths, process = _hand_made_study(tmp_path)
    executor = RecordingExecutor()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            run_study(spec, tmp_path, executor, device="cpu", retries=retries, retry_failed=retry_failed)
    finally:
        process.kill()
        process.wait()
    launched = {launch.run.seed: launch for launch in executor.launches}
    # never done (0), running (2) or diverged (5); the failed run (1, one failure) while it has a retry left, and
    # never more than `retries` extra rounds (this executor records no attempt, as a lost Slurm job)
    assert executor.rounds == rounds
    launch = launched[3]
    assert launch.command[:4] == ("nnUNetv2_train", "Dataset999_Test", "2d", "0") and launch.command[-2:] == ("-device", "cpu")
    assert launch.variables == {
        "nnUNet_results": str(paths["stale"].run_dir),
        "NNUNET_LOSSES_EPOCHS": "1",
        "NNUNET_LOSSES_SEED": "3",
    }
    assert paths["stale"].resumable and not paths["left"].resumable  # --c is added at start for the first only


def test_a_second_study_process_on_the_same_folder_is_refused(tmp_path):
    spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (0,), (0,), 1)
    with study_lock(tmp_path), pytest.raises(StudyBusyError, match=f"another study process \\(pid {os.getpid()}\\)"):
        run_study(spec, tmp_path, RecordingExecutor(), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run_study(spec, tmp_path, RecordingExecutor(), device="cpu")  # released again


def test_run_environment_and_core_split(monkeypatch):
    spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (7,), (0,), epochs=5)
    launch = RunLaunch.of(spec, RunPaths.of(Path("/study"), spec, Run("A", 7, 0)), Run("A", 7, 0), "cuda", gpus=2)
    assert launch.command[-4:] == ("-device", "cuda", "-num_gpus", "2")
    monkeypatch.setenv("NNUNET_LOSSES_ITERATIONS", "99")  # inherited: must not leak into the run
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    monkeypatch.setenv("nnUNet_def_n_proc", "3")  # set by the user: kept
    env = launch.environment(cores=4)
    assert "NNUNET_LOSSES_ITERATIONS" not in env and env["NNUNET_LOSSES_EPOCHS"] == "5" and env["NNUNET_LOSSES_SEED"] == "7"
    assert env["nnUNet_n_proc_DA"] == "3" and env["nnUNet_def_n_proc"] == "3"
    assert split_cores([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    assert split_cores([5, 3], 2) == [[3], [5]]
    with pytest.raises(ConfigurationError, match="--parallel 3 needs at least 3 CPU cores"):
        split_cores([0, 1], 3)


def test_study_json_round_trip_and_differences(tmp_path):
    spec = StudySpec("compare", "Dataset999_Test", "2d", "plans", ("A", "B"), (0,), (0, 1), None, 10, None)
    save_spec(spec, tmp_path)
    assert load_spec(tmp_path) == spec
    assert spec.differences(StudySpec("compare", "Dataset999_Test", "2d", "plans", ("B", "A"), (0,), (0, 1), None, 10, None)) == {}
    assert set(spec.differences(StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A", "B"), (0, 1), (0, 1), 3, 10, None))) == {"kind", "seeds", "epochs"}
    with pytest.raises(ValueError, match="duplicates"):
        StudySpec("cdf", "D", "2d", "p", ("A", "A"), (0,), (0,))


def test_more_trainers_or_seeds_extend_a_study_and_nothing_else_does(tmp_path):
    saved = StudySpec("cdf", "D", "2d", "p", ("A", "B"), (0, 1), (0,), 4, 10, None, (("A", 5),))
    save_spec(saved, tmp_path)
    more_seeds = StudySpec("cdf", "D", "2d", "p", ("A", "B"), (0, 1), (0,), 4, 10, None, (("A", 9), ("B", 3)))
    more_trainers = StudySpec("cdf", "D", "2d", "p", ("A", "B", "C"), (0, 1), (0,), 4, 10, None, (("A", 5),))
    assert extends(more_seeds, saved) and extends(more_trainers, saved)
    fewer_seeds = StudySpec("cdf", "D", "2d", "p", ("A", "B"), (0, 1), (0,), 4, 10, None, (("A", 3),))
    other_budget = StudySpec("cdf", "D", "2d", "p", ("A", "B", "C"), (0, 1), (0,), 8, 10, None, (("A", 5),))
    other_seeds = StudySpec("cdf", "D", "2d", "p", ("A", "B"), (2, 3), (0,), 4, 10, None, (("A", 5),))
    assert not any(extends(spec, saved) for spec in (fewer_seeds, other_budget, other_seeds))
    assert check_spec(saved, tmp_path) is False and check_spec(more_seeds, tmp_path) is True
    for refused in (fewer_seeds, other_budget, other_seeds):
        with pytest.raises(StudyMismatchError, match="more trainers or seeds extend it"):
            check_spec(refused, tmp_path)
    save_spec(more_seeds, tmp_path)
    assert load_spec(tmp_path) == saved  # an existing study.json is kept unless the study was extended
    save_spec(more_seeds, tmp_path, extended=True)
    assert load_spec(tmp_path) == more_seeds and len(more_seeds.runs()) == 9 * 1 + 3 * 1


def test_an_unreadable_or_unknown_result_record_does_not_count(tmp_path):
    spec = StudySpec("cdf", "D", "2d", "p", ("A",), (0, 1, 2), (0,))
    paths = [RunPaths.of(tmp_path, spec, run) for run in spec.runs()]
    for path in paths:
        path.run_dir.mkdir(parents=True)
    paths[0].result.write_text('{"state": "done", "dice_mean"')  # half written
    write_json(paths[1].result, {"state": "failed", "dice_mean": 0.5})
    write_json(paths[2].result, {"state": "diverged", "dice_mean": 0.0, "dice_per_label": {}, "epochs": 2, "error": "diverged at epoch 2"})
    assert [status.state for status in study_statuses(tmp_path, spec)] == [State.LEFT, State.LEFT, State.DIVERGED]
    row = cdf_rows([run_status(tmp_path, spec, spec.runs()[2])], {1: "RV"})[0]
    assert (row["status"], row["dice_mean"], row["dice_RV"], row["epochs"], row["error"]) == ("diverged", 0.0, 0.0, 2, "diverged at epoch 2")


def _nnunet_epoch(log: Path, epoch: int, ended: bool) -> None:
    """Append the lines nnU-Net's ``print_to_log_file`` writes when an epoch starts (and ends)."""
    lines = [f"2026-11-30 13:12:32.906878: Epoch {epoch} ", "2026-11-30 13:12:32.906933: Current learning rate: 0.01 "]
    if ended:
        lines += ["2026-11-30 13:12:33.837247: Pseudo dice [np.float32(0.0822)] ", "2026-11-30 13:12:33.837301: Epoch time: 0.93 s "]
    with open(log, "a") as handle:
        handle.write("\n".join(lines) + "\n")


def test_progress_line_every_30_seconds_from_the_logs_of_running_runs(tmp_path):
    """Not a terminal: the bar's numbers as a line at start, then whenever 30 s have passed, and at the end."""
    spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (0, 1, 2), (0,), 4)
    save_spec(spec, tmp_path)
    paths = {seed: RunPaths.of(tmp_path, spec, Run("A", seed, 0)) for seed in (0, 1, 2)}
    paths[0].validation.mkdir(parents=True)  # done before this invocation
    paths[0].checkpoint_final.write_bytes(b"")
    paths[0].summary.write_text("{}")
    paths[2].run_dir.mkdir(parents=True)
    write_json(paths[2].running_marker, {"pid": 1})  # left by an interrupted attempt: not a start
    statuses = study_statuses(tmp_path, spec)
    now = [0.0]
    output = io.StringIO()
    progress = StudyProgress(statuses, {Run("A", 1, 0), Run("A", 2, 0)}, 4, "cdf D", file=output, refresh_seconds=3600, clock=lambda: now[0])
    running = paths[1]
    running.output_folder.mkdir(parents=True)
    write_json(running.running_marker, {"pid": 1})
    log = running.output_folder / "training_log_2026_11_30_13_12_32.txt"
    _nnunet_epoch(log, 0, ended=True)
    _nnunet_epoch(log, 1, ended=False)  # epoch 1 runs: not counted yet
    now[0] = 10.0
    progress.started()
    now[0] = 29.9
    progress.poll()
    now[0] = 30.0
    progress.poll()
    resumed = running.output_folder / "training_log_2026_11_30_13_20_00.txt"  # --c: a new log from epoch 2 on
    _nnunet_epoch(resumed, 2, ended=True)
    now[0] = 61.0
    progress.poll()
    running.running_marker.unlink()
    _nnunet_epoch(resumed, 3, ended=True)
    progress.finished(RunOutcome(Run("A", 1, 0), 0, 61.0, False))
    now[0] = 75.0
    progress.close()
    assert output.getvalue().splitlines() == [
        "cdf D: epochs 4/12 (33 %); runs: 1 done, 0 running, 0 failed, 2 waiting; 0:00 elapsed",
        f"started A seed 1 fold 0; log: {running.log}",
        "cdf D: epochs 5/12 (41 %); runs: 1 done, 1 running, 0 failed, 1 waiting; 0:30 elapsed",
        "cdf D: epochs 7/12 (58 %); runs: 1 done, 1 running, 0 failed, 1 waiting; 1:01 elapsed",
        "done    A seed 1 fold 0 (61 s)",
        "cdf D: epochs 8/12 (66 %); runs: 2 done, 0 running, 0 failed, 1 waiting; 1:15 elapsed",
    ]


def test_progress_thread_rereads_the_logs_without_being_asked(tmp_path):
    spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (0,), (0,), 3)
    paths = RunPaths.of(tmp_path, spec, Run("A", 0, 0))
    output = io.StringIO()
    progress = StudyProgress(study_statuses(tmp_path, spec), {Run("A", 0, 0)}, 3, "cdf D", file=output, refresh_seconds=0.05, line_seconds=0.05)
    try:
        paths.output_folder.mkdir(parents=True)
        _nnunet_epoch(paths.output_folder / "training_log_1.txt", 0, ended=True)
        _nnunet_epoch(paths.output_folder / "training_log_1.txt", 1, ended=True)
        deadline = time.monotonic() + 20
        while "epochs 2/3 (66 %)" not in output.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        progress.close()
    assert "cdf D: epochs 2/3 (66 %); runs: 0 done, 0 running, 0 failed, 1 waiting;" in output.getvalue()


def test_device_choice_without_device(monkeypatch, capsys):
    """Given: as given. Local: cuda if torch sees a CUDA device, else cpu. Slurm: cuda (the jobs run on other machines)."""
    import argparse

    import torch

    from nnunet_losses.study.cli import choose_device

    assert choose_device(argparse.Namespace(device="cpu", executor="local")) == "cpu" and capsys.readouterr().out == ""
    assert choose_device(argparse.Namespace(device=None, executor="slurm")) == "cuda"
    assert capsys.readouterr().out == "device: cuda (the default for --executor slurm; pass --device cpu for CPU jobs)\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device(argparse.Namespace(device=None, executor="local")) == "cpu"
    assert capsys.readouterr().out == "device: cpu (no CUDA device is visible here; pass --device to choose)\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_device(argparse.Namespace(device=None, executor="local")) == "cuda"
    assert capsys.readouterr().out == "device: cuda (2 visible; pass --device cpu to train on the CPU)\n"


def test_diverged_runs_count_at_dice_0_in_the_rows_and_the_legend(tmp_path):
    spec, _, process = _hand_made_study(tmp_path)
    try:
        statuses = study_statuses(tmp_path, spec)
    finally:
        process.kill()
        process.wait()
    rows = {row["seed"]: row for row in cdf_rows([s for s in statuses if s.run.seed in (1, 5)], {1: "RV"})}  # no empty checkpoints
    assert rows[5]["status"] == "diverged" and rows[5]["dice_mean"] == 0.0 and rows[5]["dice_RV"] == 0.0 and rows[5]["epochs"] == 3
    assert rows[5]["error"].startswith("diverged at epoch 3")
    assert rows[1]["status"] == "failed" and rows[1]["dice_mean"] is None
    assert cdf_legend_label("A", [0.8765, 0.0], diverged=1, failed=1) == "A (n=2, median 0.438, 1 diverged, 1 failed)"
    assert cdf_legend_label("B", [0.5], diverged=0, failed=0) == "B (n=1, median 0.500)"
    assert cdf_legend_label("C", [], diverged=0, failed=2) == "C (n=0, 2 failed)"


def test_missed_classes_take_the_image_diagonal_and_are_counted():
    spacing, diagonal = (2.0, 1.0), math.sqrt(20.0**2 + 20.0**2)  # 10 x 20 voxels at (2, 1) mm
    gt = np.zeros((10, 20), np.uint8)
    gt[2:5, 3:9], gt[6:8, 12:16] = 1, 2
    hit_a = np.where(gt == 1, 1, 0).astype(np.uint8)  # class 2 missed
    values = case_metrics(hit_a, gt, spacing, {1: "A", 2: "B"})
    assert values["dice_A"] == 1.0 and values["hd95_A"] == 0.0 and values["missed_A"] == 0.0
    assert values["dice_B"] == 0.0 and values["missed_B"] == 1.0
    assert values["hd95_B"] == pytest.approx(diagonal, rel=1e-15) and values["assd_B"] == pytest.approx(diagonal, rel=1e-15)
    assert values["hd95_mean"] == pytest.approx(diagonal / 2, rel=1e-15) and values["dice_mean"] == 0.5
    both_empty = case_metrics(np.zeros_like(gt), np.zeros_like(gt), spacing, {1: "A"})
    assert math.isnan(both_empty["dice_A"]) and both_empty["hd95_A"] == 0.0 and both_empty["missed_A"] == 0.0
    exact = case_metrics(gt, gt, spacing, {1: "A", 2: "B"})
    cases = {"base": {"c1": exact, "c2": exact}, "missing": {"c1": values, "c2": exact}}
    table = {(s.trainer, s.metric): s for s in summarise(cases, ["dice_mean", "hd95_B", "hd95_A", "assd_mean"], "base", n_permutations=100)}
    assert table[("missing", "hd95_B")].n_worst_case == 1 and table[("missing", "assd_mean")].n_worst_case == 1
    assert table[("missing", "hd95_A")].n_worst_case == 0 and table[("base", "hd95_B")].n_worst_case == 0
    assert table[("missing", "dice_mean")].n_worst_case is None
    assert table[("missing", "hd95_B")].mean == pytest.approx(diagonal / 2, rel=1e-15)
    assert "(n=2, 1 worst case)" in markdown_table(list(table.values()), ["base", "missing"], "base")


def test_a_diverged_run_is_scored_as_predicting_background_everywhere(tmp_path):
    import SimpleITK as sitk

    gt = np.zeros((1, 10, 20), np.uint8)
    gt[0, 2:5, 3:9] = 1
    image = sitk.GetImageFromArray(gt)
    image.SetSpacing((1.0, 2.0, 5.0))  # SimpleITK's (x, y, z): numpy axes (z, y, x) get (5, 2, 1) mm
    sitk.WriteImage(image, str(tmp_path / "case_00.nii.gz"))
    [(case, values)] = diverged_case_metrics(tmp_path, ".nii.gz", ["case_00"], {1: "A", 2: "B"}).items()
    diagonal = math.sqrt(5.0**2 + 20.0**2 + 20.0**2)
    assert case == "case_00" and values["dice_A"] == 0.0 and values["missed_A"] == 1.0 and values["missed_B"] == 0.0
    assert values["hd95_A"] == pytest.approx(diagonal, rel=1e-12) and values["assd_A"] == pytest.approx(diagonal, rel=1e-12)
    assert math.isnan(values["dice_B"]) and values["hd95_B"] == 0.0 and values["delta"] == 1.0


# --- per-trainer seed counts and the convergence summary against a control ------------------------


def test_trainers_take_their_own_seed_counts_and_the_study_json_keeps_them(tmp_path):
    from nnunet_losses.study.cli import trainers_and_seed_counts

    trainers, counts = trainers_and_seed_counts(["C:3", "A", "B:1"], allow_counts=True)
    assert trainers == ("C", "A", "B") and counts == (("B", 1), ("C", 3))
    spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", trainers, (0, 1), (0,), 2, seed_counts=counts)
    assert [(run.trainer, run.seed) for run in spec.runs()] == [("C", 0), ("C", 1), ("C", 2), ("A", 0), ("A", 1), ("B", 0)]
    assert spec.seeds_description() == "1-3 seeds per trainer"
    assert StudySpec("cdf", "D", "2d", "p", ("A",), (0, 1), (0,)).seeds_description() == "2 seeds per trainer"
    save_spec(spec, tmp_path)
    assert json.loads((tmp_path / "study.json").read_text())["seed_counts"] == {"B": 1, "C": 3}
    assert load_spec(tmp_path) == spec
    assert spec.differences(StudySpec("cdf", "Dataset999_Test", "2d", "plans", trainers, (0, 1), (0,), 2)) == {"seed_counts": ({"B": 1, "C": 3}, {})}
    old = {key: value for key, value in StudySpec("cdf", "D", "2d", "p", ("A",), (0,), (0,)).to_json().items() if key != "seed_counts"}
    assert StudySpec.from_json(old).seed_counts == ()  # study.json files written before seed counts existed
    for entries, allow, message in ((["A:0"], True, "positive integer"), (["A:x"], True, "positive integer"), (["A:2"], False, "study cdf only")):
        with pytest.raises(ConfigurationError, match=message):
            trainers_and_seed_counts(entries, allow)
    with pytest.raises(ValueError, match="not one of the trainers"):
        StudySpec("cdf", "D", "2d", "p", ("A",), (0,), (0,), seed_counts=(("B", 2),))


def test_control_must_be_a_trainer_of_the_study():
    panels = (["--panel", f"map={RRW},nnUNetTrainerX"], ["--panel", f"a={RRW}", "--panel", f"a={RWB}"], ["--panel", "a="], ["--panel", RRW])
    for extra in (["--control", "nnUNetTrainerX"], ["--control", RRW, "--tolerance", "1.5"], *panels):
        with pytest.raises(SystemExit) as stop, contextlib.redirect_stderr(io.StringIO()):
            study_main(["cdf", "-d", "1", "-c", "2d", "--trainers", f"{RRW}:3", RWB, "--epochs", "1", "--device", "cpu", *extra])
        assert stop.value.code == 2


def test_convergence_rows_against_the_control_median_by_hand():
    from nnunet_losses.study.convergence import convergence_markdown, convergence_rows, convergence_threshold

    control = [0.90, 0.95, 0.97]
    threshold = convergence_threshold(control, 0.05)
    assert threshold == pytest.approx(0.90, abs=1e-15)
    rows = {row.trainer: row for row in convergence_rows({"control": control, "X": [0.0, 0.5, 0.91, 0.96], "empty": []}, {"X": 1}, threshold)}
    assert set(rows) == {"control", "X"}  # a trainer without counted runs has no line
    x = rows["X"]
    assert (x.n, x.diverged, x.converged, x.converged_fraction) == (4, 1, 2, 0.5)
    # Clopper-Pearson for 2 of 4: [B(0.025; 2, 3), B(0.975; 3, 2)], the beta quantiles 0.067586..., 0.932414...
    assert x.ci_low == pytest.approx(0.0675858, abs=1e-6) and x.ci_high == pytest.approx(0.9324142, abs=1e-6)
    assert (x.median, x.q25, x.q75, x.minimum, x.maximum) == pytest.approx((0.705, 0.375, 0.9225, 0.0, 0.96), abs=1e-12)
    c = rows["control"]
    assert c.converged == 3 and c.ci_high == 1.0 and c.ci_low == pytest.approx(0.025 ** (1 / 3), abs=1e-9)  # 3 of 3: [0.025^(1/3), 1]
    table = convergence_markdown(list(rows.values()), "control", threshold, 0.05)
    assert ">= 0.900: the median of the control control minus 0.05" in table
    assert "| X | 4 | 1 | 2/4 = 0.50 | 0.07-0.93 | 0.705 | 0.375-0.922 | 0.000-0.960 |" in table
    with pytest.raises(ValueError, match="no counted run"):
        convergence_threshold([], 0.05)


def test_cdf_report_with_a_control_writes_the_summary_and_marks_the_threshold(tmp_path):
    spec, paths, process = _hand_made_study(tmp_path)
    try:
        statuses = [s for s in study_statuses(tmp_path, spec) if s.run.seed in (1, 5)]  # failed and diverged
    finally:
        process.kill()
        process.wait()
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "RV": 1}}))
    written = write_cdf_report(spec, tmp_path, statuses, dataset, control="A")
    assert {path.name for path in written} == {"cdf_results.csv", "cdf_summary.csv", "cdf_summary.md", "cdf.png", "cdf.pdf"}
    [row] = read_csv(tmp_path / "cdf_summary.csv")
    # the one counted run of A is the diverged one (Dice 0): median 0, threshold -0.05, so it "converged" like its control
    assert row["trainer"] == "A" and row["n"] == "1" and row["diverged"] == "1" and row["converged"] == "1" and float(row["median"]) == 0.0
    assert "| A (control) | 1 | 1 | 1/1 = 1.00 |" in (tmp_path / "cdf_summary.md").read_text()
    plain = tmp_path / "plain"
    plain.mkdir()
    without = write_cdf_report(spec, plain, statuses, dataset)
    assert {path.name for path in without} == {"cdf_results.csv", "cdf.png", "cdf.pdf"}
    panelled = write_cdf_report(spec, plain, statuses, dataset, control="A", panels={"alone": ["A"]})
    assert {"cdf_panels.png", "cdf_panels.pdf"} <= {path.name for path in panelled}


def test_cdf_panels_hold_their_trainers_and_the_control_in_one_colour(tmp_path):
    """Fig. 6c's layout: one panel per group, each with the control's curve (same colour everywhere) and the threshold."""
    dice = {"control": [0.9, 0.96, 0.98], "A": [0.0, 0.5], "A+Dice": [0.95], "B": [0.2], "B+Dice": []}
    panels = {"map A": ["control", "A", "A+Dice"], "map B": ["control", "B", "B+Dice"]}
    figure = cdf_figure(dice, {"A": 1}, {"B": 2}, "study", unfinished=3, threshold=(0.91, "converged"), panels=panels)
    assert [ax.get_title() for ax in figure.axes] == ["map A", "map B"]
    assert figure._suptitle.get_text() == "study\nnot shown: 2 failed and 3 unfinished run(s)"
    legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in figure.axes]
    assert legends == [
        ["control (n=3, median 0.960)", "A (n=2, median 0.250, 1 diverged)", "A+Dice (n=1, median 0.950)", "converged"],
        ["control (n=3, median 0.960)", "B (n=1, median 0.200, 2 failed)", "B+Dice (n=0)", "converged"],
    ]
    lines = [{line.get_label(): line for line in ax.get_lines()} for ax in figure.axes]
    assert lines[0]["control (n=3, median 0.960)"].get_color() == lines[1]["control (n=3, median 0.960)"].get_color()
    assert len({line.get_color() for ax_lines in lines for label, line in ax_lines.items() if label != "converged"}) == 5
    np.testing.assert_array_equal(lines[0]["A (n=2, median 0.250, 1 diverged)"].get_xdata(), [-0.02, 0.0, 0.5, 1.02])
    np.testing.assert_array_equal(lines[0]["A (n=2, median 0.250, 1 diverged)"].get_ydata(), [0.0, 0.5, 1.0, 1.0])
    assert all(list(ax_lines["converged"].get_xdata()) == [0.91, 0.91] for ax_lines in lines)
    single = cdf_figure(dice, {}, {}, "study")
    assert len(single.axes) == 1 and single.axes[0].get_title() == "study" and len(single.axes[0].get_legend().get_texts()) == 5


def test_an_interrupted_study_still_writes_the_results_of_its_finished_runs(monkeypatch, tmp_path):
    import nnunet_losses.study.cli as cli
    import nnunet_losses.study.runner as runner

    written = []

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_study", interrupted)
    monkeypatch.setattr(cli, "spec_from_args", lambda args: StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (0,), (0,), 1))
    monkeypatch.setattr(runner, "preflight", lambda spec, device, local: SimpleNamespace(dataset_folder=tmp_path))
    monkeypatch.setattr(runner, "ensure_splits", lambda config: None)
    monkeypatch.setattr(cli, "_write_reports", lambda args, spec, study_dir, statuses, folder: written.append((study_dir, [s.state for s in statuses])))
    code, output, _ = invoke("cdf", "-d", "1", "-c", "2d", "--trainers", "A", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "s"))
    assert code == 130 and "interrupted; the same command resumes the study" in output
    assert written == [(tmp_path / "s", [State.LEFT])]
