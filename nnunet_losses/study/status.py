"""``nnunet-losses study status DIR``: which runs of a study are done, running, failed or left.

Reads only the study folder (``study.json``, the run markers, the result records and nnU-Net's outputs),
so it can follow a study that runs in another process or on a cluster. States are
those of :mod:`.runs`; done runs show their final mean foreground Dice, diverged ones
where their loss became non-finite (they count at Dice 0), running ones their process,
failed ones their error and the last lines of their ``train.log``. Below the table, one
line per trainer: its runs counted in the results (done + diverged) and how many diverged.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .results import summary_dice
from .runs import RunStatus, State, read_result, study_statuses, tail_lines
from .spec import load_spec

LOG_LINES = 5


def _detail(status: RunStatus) -> str:
    if status.state is State.DONE:
        record = read_result(status.paths)
        try:
            dice = record["dice_mean"] if record is not None else summary_dice(status.paths.summary)[0]
        except (OSError, ValueError, KeyError):
            return "summary.json unreadable"
        return f"Dice {dice:.4f}" + (f" ({status.detail})" if status.detail else "")
    return status.detail


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def status_report(study_dir: Path, log_lines: int = LOG_LINES) -> str:
    """The status table of a study, a count per state, and the log tails of failed runs."""
    spec = load_spec(study_dir)
    statuses = study_statuses(study_dir, spec)
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
