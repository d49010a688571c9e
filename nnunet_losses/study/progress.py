"""The progress display of a running study: one bar over the epochs of all its runs.

The bar counts nnU-Net epochs. A run's finished epochs are those of the trainer's
``progress.json`` in its output folder (``epoch``: epochs completed, rewritten after each
epoch, the same for local runs and Slurm jobs). For trainers that are not the package's
(nnU-Net's own ``nnUNetTrainer``, which writes no such file) they are read from nnU-Net's
log instead (``fold_<f>/training_log_*.txt``: ``Epoch N`` when epoch ``N`` starts,
``Epoch time: ...`` when it ends; a resumed run adds a log file that goes on from its
checkpoint's epoch). A run's epochs are the study's ``--epochs``, else the
``num_epochs`` of its ``progress.json`` or ``nnunet_losses_run.json``, else nnU-Net's
1000. A done run counts all its epochs; a failed or diverged run only those it
finished, so the bar ends at 100 % when every run has ended (a failed run that is
retried waits again; an interrupted one keeps all its epochs to do). A thread rereads
the files of the unfinished runs every ``refresh_seconds``.

Above the bar: one line per started run with the path of its log (``train.log`` in the
run folder: everything ``nnUNetv2_train`` prints), and one per finished attempt. Where
the output is not a terminal (tqdm then hides its bar), the bar's numbers are printed
as a line every ``line_seconds`` instead, so a log file shows progress at least twice a
minute during training.
"""
from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from .launch import RunOutcome
from ..files import read_json
from ..nnunet import PROGRESS_FILE, RUN_RECORD
from .runs import RunPaths, RunStatus, State, divergence_summary
from .spec import Run

NNUNET_DEFAULT_EPOCHS = 1000
EPOCH_START = re.compile(r": Epoch (\d+)\s*$")
EPOCH_END = re.compile(r": Epoch time: ")


def _log_epochs(text: str) -> int:
    """Epochs one nnU-Net log shows finished: the last started epoch whose end is logged, plus 1."""
    finished, started = 0, None
    for line in text.splitlines():
        if match := EPOCH_START.search(line):
            started = int(match.group(1))
        elif started is not None and EPOCH_END.search(line):
            finished = max(finished, started + 1)
    return finished


def trainer_progress(output_folder: Path) -> dict | None:
    """The trainer's ``progress.json`` (epochs and iterations completed, pseudo Dice, time), ``None`` without one."""
    progress = read_json(Path(output_folder) / PROGRESS_FILE)
    return progress if isinstance(progress, dict) and isinstance(progress.get("epoch"), int) else None


def finished_epochs(output_folder: Path, cache: dict[Path, tuple[tuple[int, int], int]] | None = None) -> int:
    """Epochs finished in ``output_folder``: the trainer's ``progress.json``, else nnU-Net's ``training_log_*.txt``
    files (0 if neither is there).

    ``cache`` maps a log file to its (size, mtime) and epochs; logs that did not change are not read again.
    """
    progress = trainer_progress(output_folder)
    if progress is not None:
        return progress["epoch"]
    cache = {} if cache is None else cache
    finished = 0
    for log in output_folder.glob("training_log_*.txt"):
        try:
            stat = log.stat()
            key = (stat.st_size, stat.st_mtime_ns)
            if log not in cache or cache[log][0] != key:
                cache[log] = (key, _log_epochs(log.read_text(errors="replace")))
        except OSError:
            continue
        finished = max(finished, cache[log][1])
    return finished


def recorded_epochs(output_folder: Path) -> int | None:
    """``num_epochs`` of the trainer's ``progress.json``, else of the newest entry of its ``nnunet_losses_run.json``."""
    progress = trainer_progress(output_folder)
    if progress is not None and isinstance(progress.get("num_epochs"), int):
        return progress["num_epochs"]
    record = read_json(output_folder / RUN_RECORD)
    runs = record.get("runs") if isinstance(record, dict) else None
    if isinstance(runs, list) and runs and isinstance(runs[-1], dict) and isinstance(runs[-1].get("num_epochs"), int):
        return runs[-1]["num_epochs"]
    return None


@dataclass
class _RunEpochs:
    """What the display knows about one run."""

    paths: RunPaths
    state: str  # "done", "diverged", "failed", "interrupted", "waiting" (to launch), "running" (launched here), "elsewhere" (in another process)
    epochs: int | None  # the study's --epochs; None: from the run record, else nnU-Net's default
    finished: int = 0
    announced: bool = False
    logs: dict[Path, tuple[tuple[int, int], int]] = field(default_factory=dict)
    stale_marker: int | None = None  # mtime of a running.json left by an earlier attempt: not a start

    def __post_init__(self) -> None:
        if self.state == "waiting":
            self.stale_marker = self.marker_time()

    def marker_time(self) -> int | None:
        """The ``running.json`` file's modification time in ns, ``None`` without one."""
        try:
            return self.paths.running_marker.stat().st_mtime_ns
        except OSError:
            return None

    @property
    def has_started(self) -> bool:
        """A waiting run's attempt has written its ``running.json``."""
        marker = self.marker_time()
        return marker is not None and marker != self.stale_marker

    @property
    def total(self) -> int:
        if self.state in ("failed", "diverged"):
            return self.finished
        if self.epochs is None:
            self.epochs = recorded_epochs(self.paths.output_folder)
        return self.epochs or NNUNET_DEFAULT_EPOCHS

    def read(self) -> None:
        """Update ``finished``: all epochs of a done run, the logged ones of an unfinished run."""
        if self.state == "done":
            self.finished = self.total
        elif self.state not in ("failed", "diverged"):
            self.finished = min(finished_epochs(self.paths.output_folder, self.logs), self.total)


class StudyProgress:
    """The epochs of one study's runs, as a tqdm bar (a terminal) or as periodic lines (any other output).

    ``statuses`` are all runs of the study, ``pending`` those this invocation launches;
    the executor reports each attempt with :meth:`started` and :meth:`finished`.
    """

    def __init__(
        self,
        statuses: Sequence[RunStatus],
        pending: Collection[Run],
        epochs: int | None,
        description: str,
        file: TextIO | None = None,
        refresh_seconds: float = 5.0,
        line_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = file or sys.stdout
        self._clock = clock
        self._line_seconds = line_seconds
        self._description = description
        self._runs: dict[Run, _RunEpochs] = {}
        for status in statuses:
            if status.run in pending:
                state = "waiting"
            elif status.state in (State.DONE, State.DIVERGED):
                state = status.state.value
            elif status.state is State.RUNNING:
                state = "elsewhere"
            else:
                state = "failed"
            self._runs[status.run] = _RunEpochs(status.paths, state, epochs)
        self._lock = threading.Lock()
        self._began = clock()
        self._last_line: float | None = None
        self._bar = tqdm(total=1, desc=description, unit="epoch", dynamic_ncols=True, disable=None, file=self._file)
        self.poll()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_until_closed, args=(refresh_seconds,), name="study-progress", daemon=True)
        self._thread.start()

    # --- the executor's reports ----------------------------------------------------------------------

    def started(self) -> None:
        """An attempt started; the next waiting run whose ``running.json`` exists is named in :meth:`poll`."""
        self.poll()

    def finished(self, outcome: RunOutcome) -> None:
        """An attempt ended: one line, and the run's epochs are final."""
        with self._lock:
            entry = self._runs[outcome.run]
            entry.read()
            diverged = read_json(entry.paths.diverged_marker)
            entry.state = "done" if outcome.ok else "interrupted" if outcome.interrupted else "diverged" if isinstance(diverged, dict) else "failed"
            entry.read()
            if outcome.interrupted:
                self._write(f"interrupted {outcome.run} after {entry.finished} epochs; the same study command resumes it from its checkpoint")
            elif outcome.ok:
                self._write(f"done    {outcome.run} ({outcome.seconds:.0f} s{', resumed' if outcome.resumed else ''})")
            elif isinstance(diverged, dict):
                self._write(f"DIVERGED {outcome.run}: {divergence_summary(diverged)} (counted at Dice 0; log: {entry.paths.log})")
            else:
                self._write(f"FAILED  {outcome.run}: {outcome.error} (log: {entry.paths.log})")
            self._show()

    def add(self, runs: Iterable[Run]) -> None:
        """Runs launched again (retries of failed attempts): they wait for their new attempt."""
        with self._lock:
            for run in runs:
                entry = self._runs[run]
                entry.state, entry.announced = "waiting", False
                entry.stale_marker = entry.marker_time()
            self._show()

    # --- the display ----------------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        """Runs per state of the display: done, diverged, failed, interrupted, running (here or elsewhere), waiting."""
        counts = {"done": 0, "diverged": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}
        for entry in self._runs.values():
            counts["running" if entry.state in ("running", "elsewhere") else entry.state] += 1
        return counts

    @property
    def epochs(self) -> tuple[int, int]:
        """(finished, total) epochs over all runs."""
        return sum(entry.finished for entry in self._runs.values()), sum(entry.total for entry in self._runs.values())

    def line(self) -> str:
        """The bar's numbers as one line of text."""
        done, total = self.epochs
        counts = self.counts
        elapsed = int(self._clock() - self._began)
        return (
            f"{self._description}: epochs {done}/{total} ({100 * done // max(total, 1)} %); runs: {counts['done']} done, "
            + (f"{counts['diverged']} diverged, " if counts["diverged"] else "")
            + f"{counts['running']} running, {counts['failed']} failed, "
            + (f"{counts['interrupted']} interrupted, " if counts["interrupted"] else "")
            + f"{counts['waiting']} waiting; "
            f"{elapsed // 60}:{elapsed % 60:02d} elapsed"
        )

    def poll(self) -> None:
        """Reread the unfinished runs' logs, name newly started runs, refresh the bar (or print the line when due)."""
        with self._lock:
            for run, entry in self._runs.items():
                if entry.state == "waiting" and entry.has_started:
                    entry.state = "running"
                if entry.state in ("running", "elsewhere") and not entry.announced:
                    entry.announced = True
                    self._write(f"{'started' if entry.state == 'running' else 'running elsewhere'} {run}; log: {entry.paths.log}")
                entry.read()
            self._show()

    def _show(self) -> None:
        done, total = self.epochs
        self._bar.total = total
        self._bar.n = done
        counts = self.counts
        diverged = f", {counts['diverged']} diverged" if counts["diverged"] else ""
        self._bar.set_postfix_str(f"runs: {counts['done']} done{diverged}, {counts['running']} running, {counts['failed']} failed", refresh=False)
        self._bar.refresh()
        now = self._clock()
        if self._bar.disable and (self._last_line is None or now - self._last_line >= self._line_seconds):
            self._last_line = now
            self._write(self.line())

    def _write(self, text: str) -> None:
        tqdm.write(text, file=self._file)
        self._file.flush()

    def _poll_until_closed(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self.poll()

    def close(self) -> None:
        """Stop rereading the logs; a last update (and line), then the bar is closed."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._last_line = None
            self._show()
            self._bar.close()
