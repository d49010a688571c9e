"""``nnunet-losses study status DIR``: which runs of a study are done, running, failed or left.

Reads only the study folder (``study.json``, the run markers, the result records and nnU-Net's outputs),
so it can follow a study that runs in another process or on a cluster. States are
those of :mod:`.runs`; done runs show their final mean foreground Dice, diverged ones
where their loss became non-finite (they count at Dice 0), running ones their process,
failed ones their error and the last lines of their ``train.log``. Unfinished runs show
how far their training got, from the trainer's ``progress.json`` (epochs and iterations
completed, the last pseudo Dice) or, for trainers that write none, nnU-Net's log; runs
that were interrupted (a time limit, a preemption, Ctrl-C) how often they resumed and
the epochs each interruption lost. Studies run with ``--executor slurm`` get a column
with each run's newest Slurm job: its id and what ``scontrol show job`` says about it
(state, reason, how often Slurm requeued it). Below the table, one line per trainer:
its runs counted in the results (done + diverged) and how many diverged.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..files import read_json
from .progress import finished_epochs, recorded_epochs, trainer_progress
from .results import summary_dice
from .runs import RunStatus, State, read_result, study_statuses, tail_lines
from .slurm import SlurmUnavailable, job_info, recorded_jobs
from .spec import load_spec

LOG_LINES = 5


def _detail(status: RunStatus) -> str:
    if status.state is State.DONE:
        record = read_result(status.paths)
        try:
            dice = record["dice_mean"] if record is not None else summary_dice(status.paths.summary)[0]
        except (OSError, ValueError, KeyError):
            return "summary.json unreadable"
        return f"Dice {dice:.4f}" + (f" ({status.detail})" if status.detail else "") + _resumptions(status)
    if status.state in (State.RUNNING, State.INTERRUPTED, State.FAILED):
        return "; ".join(part for part in (_training_progress(status), status.detail) if part) + _resumptions(status)
    return status.detail


def _training_progress(status: RunStatus) -> str:
    """``epoch 3/8 (24 iterations), pseudo Dice 0.412`` from ``progress.json``; the epochs of nnU-Net's log without it."""
    output = status.paths.output_folder
    progress = trainer_progress(output)
    if progress is None:
        epochs = finished_epochs(output)
        return f"epoch {epochs}/{recorded_epochs(output) or '?'} (nnU-Net's log)" if epochs else ""
    dice = progress.get("pseudo_dice")
    text = f"epoch {progress['epoch']}/{progress.get('num_epochs', '?')} ({progress.get('iterations', '?')} iterations)"
    return text + (f", pseudo Dice {dice:.3f}" if isinstance(dice, (int, float)) else "")


def _resumptions(status: RunStatus) -> str:
    """``, resumed 2x after interruptions (epochs lost: 1, 0)`` from ``attempts.json``, empty if never interrupted."""
    attempts = read_json(status.paths.attempts)
    interrupted = [a for a in attempts if isinstance(a, dict) and a.get("interrupted")] if isinstance(attempts, list) else []
    if not interrupted:
        return ""
    lost = ", ".join("?" if a.get("epochs_lost") is None else str(a["epochs_lost"]) for a in interrupted)
    return f"; interrupted {len(interrupted)}x (epochs lost: {lost})"


def slurm_column(status: RunStatus) -> str:
    """The run's newest Slurm job and Slurm's word on it, empty for a run without jobs."""
    jobs = recorded_jobs(status.paths)
    if not jobs:
        return ""
    try:
        job = job_info(jobs[-1])
    except SlurmUnavailable:
        return f"{jobs[-1]} (controller does not answer)"
    return job.describe() if job is not None else f"{jobs[-1]} (ended, no longer known to Slurm)"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def status_report(study_dir: Path, log_lines: int = LOG_LINES) -> str:
    """The status table of a study, a count per state, and the log tails of failed runs."""
    spec = load_spec(study_dir)
    statuses = study_statuses(study_dir, spec)
    slurm = [slurm_column(s) for s in statuses]
    if any(slurm):
        rows = [("trainer", "seed", "fold", "state", "slurm job", "detail")]
        rows += [(s.run.trainer, str(s.run.seed), str(s.run.fold), s.state.value, job or "-", _detail(s)) for s, job in zip(statuses, slurm)]
    else:
        rows = [("trainer", "seed", "fold", "state", "detail")]
        rows += [(s.run.trainer, str(s.run.seed), str(s.run.fold), s.state.value, _detail(s)) for s in statuses]
    counts = Counter(s.state for s in statuses)
    lines = [
        f"{spec.kind} study {study_dir}: {spec.dataset} {spec.configuration}, plans {spec.plans}",
        "",
        format_table(rows),
        "",
        f"{len(statuses)} runs: " + ", ".join(f"{counts[state]} {state.value}" for state in State),
    ]
    for trainer in spec.trainers:
        states = Counter(s.state for s in statuses if s.run.trainer == trainer)
        counted = states[State.DONE] + states[State.DIVERGED]
        lines.append(f"{trainer}: {counted} counted (done or diverged), {states[State.DIVERGED]} diverged, {states[State.FAILED]} failed")
    for status in statuses:
        if status.state is State.FAILED:
            lines += ["", f"--- {status.run}: last lines of {status.paths.log}"]
            lines += [f"    {line}" for line in tail_lines(status.paths.log, log_lines)] or ["    (no log)"]
    return "\n".join(lines)
