"""The local executor's core split: exact core lists of each run, with scripted stand-ins for the trainings.

Each stand-in training ends after a given number of polls of its process, so the order
in which runs end, and with it the cores that are free when the next one starts, is
fixed by the test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nnunet_losses.nnunet.configuration import ConfigurationError
from nnunet_losses.study import executors
from nnunet_losses.study.executors import START_FAILED, LocalExecutor, cores_for_starts, cores_when_none_waits, pin_process_group
from nnunet_losses.study.launch import RunFolderError
from nnunet_losses.study.runs import RunPaths
from nnunet_losses.study.spec import Run, StudySpec


@dataclass
class ScriptedProcess:
    """Stands in for ``subprocess.Popen``: ``poll()`` is None until the given number of polls."""

    polls_until_done: int
    pid: int = 0
    polls: int = 0

    def poll(self) -> int | None:
        self.polls += 1
        return 0 if self.polls >= self.polls_until_done else None


@dataclass
class ScriptedAttempt:
    name: str
    process: ScriptedProcess
    cores: list[int]
    widened_to: list[int] | None = None

    def finish(self, returncode: int) -> tuple[str, int]:
        return self.name, returncode

    def request_stop(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class ScriptedLaunch:
    """Stands in for :class:`~nnunet_losses.study.launch.RunLaunch`; records the cores it was started on."""

    name: str
    polls_until_done: int = 1
    folder_error: bool = False
    pid: int = 0
    attempt: ScriptedAttempt | None = None
    run: Run = field(default_factory=lambda: Run("A", 0, 0))

    @property
    def cores(self) -> list[int] | None:
        """The cores the training was started on."""
        return None if self.attempt is None else self.started_on

    def start(self, cores: list[int]) -> ScriptedAttempt:
        if self.folder_error:
            spec = StudySpec("cdf", "Dataset999_Test", "2d", "plans", ("A",), (0,), (0,), epochs=1)
            raise RunFolderError(RunPaths.of(Path("/study"), spec, self.run), PermissionError(13, "Permission denied"))
        self.started_on = list(cores)
        self.attempt = ScriptedAttempt(self.name, ScriptedProcess(self.polls_until_done, self.pid), list(cores))
        return self.attempt


class Progress:
    def __init__(self) -> None:
        self.started_count = 0
        self.finished_outcomes: list = []

    def started(self) -> None:
        self.started_count += 1

    def finished(self, outcome) -> None:
        self.finished_outcomes.append(outcome)


def run_all(launches: list[ScriptedLaunch], parallel: int, cores: list[int], monkeypatch, repins: list | None = None) -> dict[str, list[int] | None]:
    """Run the scripted launches; the cores each was started on (``repins`` collects the widenings)."""
    monkeypatch.setattr(executors, "POLL_SECONDS", 0.0)
    repins = [] if repins is None else repins
    LocalExecutor(parallel, cores, repin=lambda pid, wider: repins.append((pid, list(wider)))).run(launches, Progress())
    return {launch.name: launch.cores for launch in launches}


def test_cores_for_starts_shares_the_free_cores_among_the_runs_that_start():
    assert cores_for_starts([0, 1, 2, 3], free_slots=2, waiting=5) == [[0, 1], [2, 3]]  # enough runs: a share per slot
    assert cores_for_starts([0, 1, 2, 3, 4, 5, 6, 7], free_slots=4, waiting=3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert cores_for_starts([4, 5, 0, 1], free_slots=2, waiting=1) == [[0, 1, 4, 5]]  # the last run: every free core
    assert cores_for_starts([2, 3], free_slots=1, waiting=4) == [[2, 3]]
    assert cores_for_starts([], free_slots=1, waiting=1) == []
    assert cores_for_starts([0, 1], free_slots=0, waiting=3) == []
    assert cores_for_starts([0, 1], free_slots=2, waiting=0) == []


def test_cores_when_none_waits_gives_the_free_cores_to_the_running_trainings():
    assert cores_when_none_waits([[2, 3]], [0, 1]) == [[0, 1, 2, 3]]
    assert cores_when_none_waits([[0, 1], [6, 7]], [2, 3, 4, 5, 8]) == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert cores_when_none_waits([[0], [1], [2]], [3]) == [[0, 3], [1], [2]]  # fewer free cores than trainings
    assert cores_when_none_waits([[0, 1]], []) == [[0, 1]]
    assert cores_when_none_waits([], [0, 1]) == []


def test_more_runs_than_slots_each_run_gets_a_slots_share(monkeypatch):
    launches = [ScriptedLaunch("a", 1), ScriptedLaunch("b", 4, pid=12), ScriptedLaunch("c", 1), ScriptedLaunch("d", 1)]
    # a and b start together; a ends at its first poll, c takes a's cores; c ends, d takes them; d ends while b runs
    repins: list = []
    assert run_all(launches, 2, [0, 1, 2, 3], monkeypatch, repins) == {"a": [0, 1], "b": [2, 3], "c": [0, 1], "d": [0, 1]}
    assert repins == [(12, [0, 1, 2, 3])] and launches[1].attempt.widened_to == [0, 1, 2, 3]  # b, the last, gets d's cores


def test_the_last_run_gets_the_cores_that_are_free(monkeypatch):
    # 3 trainings, 2 at a time: a and b end in the same poll, so c, the last one, starts on all four cores
    launches = [ScriptedLaunch("a", 1), ScriptedLaunch("b", 1), ScriptedLaunch("c", 1)]
    repins: list = []
    assert run_all(launches, 2, [0, 1, 2, 3], monkeypatch, repins) == {"a": [0, 1], "b": [2, 3], "c": [0, 1, 2, 3]}
    assert repins == []
    # b still runs when a ends: c starts on a's cores and, when b ends, is widened to b's as well
    launches = [ScriptedLaunch("a", 1), ScriptedLaunch("b", 2), ScriptedLaunch("c", 3, pid=31)]
    assert run_all(launches, 2, [0, 1, 2, 3], monkeypatch, repins) == {"a": [0, 1], "b": [2, 3], "c": [0, 1]}
    assert repins == [(31, [0, 1, 2, 3])] and launches[2].attempt.widened_to == [0, 1, 2, 3]


def test_pin_process_group_moves_every_thread_of_the_group(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("needs 2 CPU cores to widen a pinning")
    ready = tmp_path / "ready"
    script = (
        "import pathlib, sys, threading, time\n"
        "threads = [threading.Thread(target=time.sleep, args=(60,), daemon=True) for _ in range(3)]\n"
        "[t.start() for t in threads]\n"
        "pathlib.Path(sys.argv[1]).write_text('ready')\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(ready)], preexec_fn=lambda: os.sched_setaffinity(0, cores[:1]), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        threads = [int(task.name) for task in Path(f"/proc/{child.pid}/task").iterdir()]
        assert len(threads) == 4 and all(os.sched_getaffinity(tid) == set(cores[:1]) for tid in threads)
        pin_process_group(child.pid, cores[:2])
        assert all(os.sched_getaffinity(tid) == set(cores[:2]) for tid in threads)
        assert os.sched_getaffinity(os.getpid()) == set(cores)  # this process is not in the child's group
    finally:
        child.kill()
        child.wait()


def test_fewer_runs_than_slots_share_all_cores(monkeypatch):
    launches = [ScriptedLaunch("a"), ScriptedLaunch("b"), ScriptedLaunch("c")]
    assert run_all(launches, 4, list(range(8)), monkeypatch) == {"a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7]}
    assert run_all([ScriptedLaunch("a")], 2, [6, 7], monkeypatch) == {"a": [6, 7]}


def test_five_runs_four_slots_the_fifth_takes_the_first_free_share(monkeypatch):
    launches = [ScriptedLaunch("a", 1), *(ScriptedLaunch(name, 3, pid=pid) for name, pid in zip("bcd", (2, 3, 4))), ScriptedLaunch("e", 1)]
    repins: list = []
    cores = run_all(launches, 4, list(range(8)), monkeypatch, repins)
    assert cores == {"a": [0, 1], "b": [2, 3], "c": [4, 5], "d": [6, 7], "e": [0, 1]}
    # e ends first; nothing waits: its two cores go to b and c, one each
    assert repins == [(2, [0, 2, 3]), (3, [1, 4, 5])]


def test_a_run_that_cannot_start_leaves_its_cores_to_the_next(monkeypatch):
    monkeypatch.setattr(executors, "POLL_SECONDS", 0.0)
    launches = [ScriptedLaunch("broken", folder_error=True), ScriptedLaunch("b"), ScriptedLaunch("c")]
    progress = Progress()
    outcomes = LocalExecutor(2, [0, 1, 2, 3], repin=lambda pid, cores: None).run(launches, progress)
    assert [launch.cores for launch in launches] == [None, [0, 1], [2, 3]]
    assert outcomes[0].returncode == START_FAILED and "cannot write to the run folder" in outcomes[0].error
    assert sorted(outcomes[1:]) == [("b", 0), ("c", 0)] and progress.started_count == 2


def test_more_runs_at_a_time_than_cores_is_refused():
    with pytest.raises(ConfigurationError, match="--parallel 3 needs at least 3 CPU cores"):
        LocalExecutor(3, [0, 1])
