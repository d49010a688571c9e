"""The progress display of a running study: a tqdm bar with done/failed/running counts.

The bar counts finished runs (done or failed) out of all runs of the study, those
finished by earlier invocations included. One line per finished attempt is printed
above the bar, so logs of non-interactive sessions (where tqdm hides the bar) still
show what happened.
"""
from __future__ import annotations

from tqdm import tqdm

from .launch import RunOutcome


class StudyProgress:
    """Counts and displays the runs of one study invocation."""

    def __init__(self, total: int, done: int, failed: int, description: str) -> None:
        self.done, self.failed, self.running = done, failed, 0
        self._bar = tqdm(total=total, initial=done + failed, desc=description, unit="run", dynamic_ncols=True, disable=None)
        self._refresh()

    def started(self) -> None:
        self.running += 1
        self._refresh()

    def finished(self, outcome: RunOutcome) -> None:
        self.running -= 1
        if outcome.ok:
            self.done += 1
            tqdm.write(f"done    {outcome.run} ({outcome.seconds:.0f} s{', resumed' if outcome.resumed else ''})")
        else:
            self.failed += 1
            tqdm.write(f"FAILED  {outcome.run}: {outcome.error}")
        self._bar.update(1)
        self._refresh()

    def _refresh(self) -> None:
        self._bar.set_postfix(done=self.done, failed=self.failed, running=self.running, refresh=True)

    def close(self) -> None:
        self._bar.close()
