"""A signal stops a training with a checkpoint at the start of the epoch in progress; ``--c`` ends it like an
uninterrupted one.

Real ``nnUNetv2_train`` runs on CPU (small plans, 4 epochs of 4 iterations, one augmentation
worker process per loader, so the seeded sample stream is the same in every run): one
uninterrupted, one whose trainer sends SIGTERM to its whole process group (its
augmentation workers included, as Slurm may signal every process of a job step) during
the second training step of epoch 1, then resumed with ``--c``. The signal handlers
themselves are checked in small scripts: a forked process ignores them, and a signal
before the first epoch exits with status 75 at once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from nnunet_losses.files import read_json
from nnunet_losses.nnunet import INTERRUPTED_EXIT_CODE, INTERRUPTIONS_FILE, PROGRESS_FILE, RUN_RECORD

from conftest import SMALL_PLANS, announce, run_command

TRAINER = "nnUNetTrainerRRW"
SIGNALLED = "nnUNetTrainerRRWSignalled"
SIGNALLED_MODULE = '''
import os
import signal
from pathlib import Path

from nnunet_losses.trainers.losses_region_wise import nnUNetTrainerRRW


class nnUNetTrainerRRWSignalled(nnUNetTrainerRRW):
    """nnUNetTrainerRRW that, the first time it gets there, sends SIGTERM to its process group during the second
    training step of epoch 1."""

    def train_step(self, batch):
        if self.current_epoch == 1 and self.bookkeeping.steps == 1 and not (Path(self.output_folder) / "interruptions.json").exists():
            os.killpg(os.getpgid(0), signal.SIGTERM)
        return super().train_step(batch)
'''
EPOCHS, ITERATIONS = 4, 4
NNUNET_LISTS = ("mean_fg_dice", "ema_fg_dice", "dice_per_class_or_region", "train_losses", "val_losses", "lrs",
                "epoch_start_timestamps", "epoch_end_timestamps", "loss_terms", "loss_weights", "loss_schedule_state")


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


class Runs:
    """The uninterrupted run, the interrupted one and what was seen of it."""

    def __init__(self, cardiac, root: Path) -> None:
        self.cardiac = cardiac
        self.root = root
        self.progress_seen: list[dict] = []
        (root / "extra_trainers").mkdir()
        (root / "extra_trainers" / "signalled_trainers.py").write_text(SIGNALLED_MODULE)

    def env(self, name: str) -> dict[str, str]:
        env = self.cardiac.workspace.training_environment(
            epochs=EPOCHS, iterations=ITERATIONS, nnUNet_results=str(self.root / name), NNUNET_LOSSES_SEED="4"
        )
        extra = os.pathsep.join([env["nnUNet_extTrainer"], str(self.root / "extra_trainers")])
        return {**env, "nnUNet_n_proc_DA": "1", "nnUNet_extTrainer": extra}  # one forked augmentation worker per loader

    def args(self, trainer: str, *extra: str) -> list[str]:
        return ["nnUNetv2_train", str(self.cardiac.dataset_id), "2d", "0", "-p", SMALL_PLANS, "-tr", trainer, "-device", "cpu", *extra]

    def folder(self, name: str) -> Path:
        trainer = TRAINER if name == "uninterrupted" else SIGNALLED
        return self.root / name / self.cardiac.name / f"{trainer}__{SMALL_PLANS}__2d" / "fold_0"

    def interrupt(self) -> subprocess.CompletedProcess:
        """Run the signalled trainer in a process group of its own, noting every progress.json it writes."""
        progress = self.folder("interrupted") / PROGRESS_FILE
        process = subprocess.Popen(self.args(SIGNALLED), env=self.env("interrupted"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 900
        while process.poll() is None and time.monotonic() < deadline:
            seen = read_json(progress)
            if seen is not None and seen not in self.progress_seen:
                self.progress_seen.append(seen)
            time.sleep(0.05)
        process.wait(timeout=60)
        reader.join(timeout=60)
        return subprocess.CompletedProcess(process.args, process.returncode, "".join(output), "")


@pytest.fixture(scope="module")
def runs(cardiac, tmp_path_factory, request) -> Runs:
    runs = Runs(cardiac, tmp_path_factory.mktemp("interruption"))
    announce(request.config, f"[fixture runs] {TRAINER}: {EPOCHS} epochs x {ITERATIONS} iterations, uninterrupted and SIGTERM + --c ...")
    uninterrupted = threading.Thread(target=lambda: run_command(runs.args(TRAINER), runs.env("uninterrupted"), timeout=900))
    uninterrupted.start()
    runs.interrupted = runs.interrupt()
    runs.stopped_checkpoint = checkpoint(runs.folder("interrupted") / "checkpoint_latest.pth") \
        if (runs.folder("interrupted") / "checkpoint_latest.pth").is_file() else None
    runs.resumed = run_command(runs.args(SIGNALLED, "--c"), runs.env("interrupted"), timeout=900, check=False)
    uninterrupted.join()
    return runs


def test_sigterm_to_the_process_group_stops_with_status_75_and_a_checkpoint_of_the_epoch_start(runs):
    result = runs.interrupted
    assert result.returncode == INTERRUPTED_EXIT_CODE, result.stdout[-3000:]
    [entry] = json.loads((runs.folder("interrupted") / INTERRUPTIONS_FILE).read_text())
    epoch = 1
    assert (entry["signal"], entry["epoch"], entry["iteration"]) == ("SIGTERM", epoch, 2)  # the step in progress finished
    assert f"SIGTERM received in epoch {epoch} after 2 training iterations" in result.stdout
    saved = runs.stopped_checkpoint
    assert saved is not None and saved["current_epoch"] == epoch  # --c starts the epoch that was in progress
    assert {key: len(saved["logging"][key]) for key in NNUNET_LISTS} == dict.fromkeys(NNUNET_LISTS, epoch)
    reference = checkpoint(runs.folder("uninterrupted") / "checkpoint_final.pth")["logging"]
    for key in ("loss_terms", "train_losses", "val_losses", "mean_fg_dice"):  # same seed, same samples until the signal
        assert saved["logging"][key] == reference[key][:epoch]


def test_resumed_run_ends_with_the_epochs_and_iterations_of_an_uninterrupted_one(runs):
    assert runs.resumed.returncode == 0, runs.resumed.stdout[-3000:] + runs.resumed.stderr[-3000:]
    assert len(json.loads((runs.folder("interrupted") / INTERRUPTIONS_FILE).read_text())) == 1
    for name in ("interrupted", "uninterrupted"):
        folder = runs.folder(name)
        final = checkpoint(folder / "checkpoint_final.pth")
        assert final["current_epoch"] == EPOCHS
        assert {key: len(final["logging"][key]) for key in NNUNET_LISTS} == dict.fromkeys(NNUNET_LISTS, EPOCHS)
        assert not (folder / "checkpoint_latest.pth").exists()
        progress = json.loads((folder / PROGRESS_FILE).read_text())
        assert (progress["epoch"], progress["num_epochs"], progress["iterations"], progress["num_iterations_per_epoch"]) == (
            EPOCHS, EPOCHS, EPOCHS * ITERATIONS, ITERATIONS
        )
    starts = json.loads((runs.folder("interrupted") / RUN_RECORD).read_text())["runs"]
    assert [(run["start_epoch"], run["resumed"]) for run in starts] == [(0, False), (1, True)]
    assert [run["num_epochs"] for run in starts] == [EPOCHS, EPOCHS]


def test_progress_file_is_written_after_every_epoch(runs):
    """Each progress.json seen while the run trained, and the last one, agree with nnU-Net's own log."""
    assert [seen["epoch"] for seen in runs.progress_seen] == [1]  # epoch 0 completed, then the signal came in epoch 1
    assert runs.progress_seen[0]["iterations"] == ITERATIONS
    folder = runs.folder("uninterrupted")
    progress = json.loads((folder / PROGRESS_FILE).read_text())
    logging = checkpoint(folder / "checkpoint_final.pth")["logging"]
    assert progress["pseudo_dice"] == pytest.approx(float(logging["mean_fg_dice"][-1]), rel=1e-12)
    assert progress["ema_pseudo_dice"] == pytest.approx(float(logging["ema_fg_dice"][-1]), rel=1e-12)
    assert progress["epoch_seconds"] == pytest.approx(logging["epoch_end_timestamps"][-1] - logging["epoch_start_timestamps"][-1])
    assert set(progress) == {"epoch", "num_epochs", "iterations", "num_iterations_per_epoch", "pseudo_dice", "ema_pseudo_dice",
                             "epoch_seconds", "time"}


HANDLER_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, time
    from nnunet_losses.nnunet.interruption import InterruptionGuard

    guard = InterruptionGuard()
    guard.install()
    if sys.argv[1] == "training":
        guard.phase = "training"

        def worker():  # a forked augmentation worker: the inherited handler must leave it running
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)

        child = multiprocessing.get_context("fork").Process(target=worker)
        child.start()
        child.join()
        print("child", child.exitcode, guard.received)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)
        print("main", guard.received)
    else:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(5)
        print("not stopped")
    """
)


def test_forked_workers_ignore_the_signal_and_the_trainer_records_it(tmp_path):
    script = tmp_path / "handlers.py"
    script.write_text(HANDLER_SCRIPT)
    result = subprocess.run([sys.executable, str(script), "training"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["child 0 None", "main SIGUSR1"]


def test_a_signal_before_the_first_epoch_exits_75_at_once(tmp_path):
    script = tmp_path / "handlers.py"
    script.write_text(HANDLER_SCRIPT)
    result = subprocess.run([sys.executable, str(script), "starting"], capture_output=True, text=True, timeout=600)
    assert result.returncode == INTERRUPTED_EXIT_CODE and "not stopped" not in result.stdout
    assert "SIGUSR2 received before the first epoch started: stopped without a checkpoint" in result.stderr
