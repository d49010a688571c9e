"""What a study trains: its parameters, its runs, and ``study.json``, which pins them.

A study is a grid of nnU-Net trainings, one per (trainer, seed, fold). The parameters
that decide what a run computes (dataset, configuration, plans, trainers, seeds, folds
and the epoch/iteration budget) are written to ``<study dir>/study.json`` by the first
invocation. A later invocation on the same folder must ask for the same study, or it
is refused (:class:`StudyMismatchError`): finished runs are reused, so mixing budgets
or datasets in one folder would mix incomparable results. A study with more trainers or
seeds than the saved one *extends* it (:func:`extends`): its finished runs are kept. How runs are executed
(device, executor, parallelism) is not part of the study and may change between
invocations.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from .. import __version__
from ..files import write_json
from ..nnunet.run_settings import BUDGET_VARIABLES, SEED_VARIABLE

STUDY_FILE = "study.json"
StudyKind = Literal["cdf", "compare"]


class StudyMismatchError(RuntimeError):
    """The study folder holds a study with other parameters."""


@dataclass(frozen=True, order=True)
class Run:
    """One nnU-Net training of a study."""

    trainer: str
    seed: int
    fold: int

    @property
    def name(self) -> str:
        """Folder name of the run below ``runs/<trainer>/``."""
        return f"seed_{self.seed}_fold_{self.fold}"

    def __str__(self) -> str:
        return f"{self.trainer} seed {self.seed} fold {self.fold}"


@dataclass(frozen=True)
class StudySpec:
    """The parameters of a study; ``None`` budgets mean nnU-Net's defaults (1000 epochs, 250/50 iterations)."""

    kind: StudyKind
    dataset: str
    configuration: str
    plans: str
    trainers: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...]
    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None
    seed_counts: tuple[tuple[str, int], ...] = ()
    """``(trainer, N)``: that trainer runs seeds ``0..N-1`` instead of :attr:`seeds` (``--trainers NAME:N``)."""

    def __post_init__(self) -> None:
        for name in ("trainers", "seeds", "folds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"a study needs at least one entry in {name}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {list(values)}")
        for trainer, count in self.seed_counts:
            if trainer not in self.trainers:
                raise ValueError(f"seed count given for {trainer}, which is not one of the trainers")
            if count < 1:
                raise ValueError(f"{trainer} needs at least one seed, got {count}")

    def seeds_of(self, trainer: str) -> tuple[int, ...]:
        """The seeds ``trainer`` runs: ``0..N-1`` where :attr:`seed_counts` names it, else :attr:`seeds`."""
        counts = dict(self.seed_counts)
        return tuple(range(counts[trainer])) if trainer in counts else self.seeds

    def seeds_description(self) -> str:
        """``10 seeds per trainer``, or the range where the counts differ: ``5-20 seeds per trainer``."""
        counts = sorted({len(self.seeds_of(trainer)) for trainer in self.trainers})
        amount = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        return f"{amount} seed{'s' if counts[-1] != 1 else ''} per trainer"

    def runs(self) -> list[Run]:
        """Every (trainer, seed, fold) of the study, trainers in the given order."""
        return [Run(trainer, seed, fold) for trainer in self.trainers for seed in self.seeds_of(trainer) for fold in self.folds]

    @property
    def has_budget(self) -> bool:
        return any(value is not None for value in (self.epochs, self.iterations, self.val_iterations))

    def settings_environment(self, run: Run) -> dict[str, str]:
        """The ``NNUNET_LOSSES_*`` variables of one run (see :mod:`nnunet_losses.nnunet.run_settings`)."""
        budget = {"num_epochs": self.epochs, "num_iterations_per_epoch": self.iterations, "num_val_iterations_per_epoch": self.val_iterations}
        env = {BUDGET_VARIABLES[key]: str(value) for key, value in budget.items() if value is not None}
        env[SEED_VARIABLE] = str(run.seed)
        return env

    # --- study.json ----------------------------------------------------------------------------

    def to_json(self) -> dict:
        data = {**asdict(self), "trainers": list(self.trainers), "seeds": list(self.seeds), "folds": list(self.folds)}
        data["seed_counts"] = dict(sorted(self.seed_counts))
        return data

    @classmethod
    def from_json(cls, data: dict) -> StudySpec:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        for name in ("trainers", "seeds", "folds"):
            values[name] = tuple(values[name])
        values["seed_counts"] = tuple(sorted(values.get("seed_counts", {}).items()))
        return cls(**values)

    def differences(self, other: StudySpec) -> dict[str, tuple[object, object]]:
        """Parameters that differ, as ``{name: (self's, other's)}``; the order of trainers does not count."""
        mine, theirs = self.to_json(), other.to_json()
        mine["trainers"], theirs["trainers"] = sorted(mine["trainers"]), sorted(theirs["trainers"])
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


def load_spec(study_dir: Path) -> StudySpec:
    """The spec saved in ``study_dir``; ``FileNotFoundError`` with a clear message if there is none."""
    path = study_dir / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{study_dir} holds no study ({STUDY_FILE} is missing)")
    return StudySpec.from_json(json.loads(path.read_text()))


def extends(spec: StudySpec, saved: StudySpec) -> bool:
    """Whether ``spec`` is ``saved`` with more runs: every saved run is one of its runs, and only trainers,
    seeds and seed counts differ (so the finished runs stay comparable with the new ones)."""
    growable = {"trainers", "seeds", "seed_counts"}
    return set(saved.differences(spec)) <= growable and set(saved.runs()) <= set(spec.runs())


def check_spec(spec: StudySpec, study_dir: Path) -> bool:
    """Raise :class:`StudyMismatchError` if ``study_dir`` holds another study (no ``study.json`` is fine).

    A study that :func:`extends` the saved one (more trainers or seeds, same data and budget) is accepted;
    returns whether it does, so the caller rewrites ``study.json`` (:func:`save_spec` with ``extended``).
    """
    try:
        saved = load_spec(study_dir)
    except FileNotFoundError:
        return False
    differences = saved.differences(spec)
    if differences and extends(spec, saved):
        return True
    if differences:
        lines = "\n".join(f"  {key}: saved {old!r}, requested {new!r}" for key, (old, new) in differences.items())
        raise StudyMismatchError(
            f"{study_dir} holds a study with other parameters ({STUDY_FILE}):\n{lines}\n"
            "Repeat the saved parameters to resume it (more trainers or seeds extend it), or pass another --out for a new study."
        )
    return False


def save_spec(spec: StudySpec, study_dir: Path, extended: bool = False) -> None:
    """Write ``study.json`` (atomically) unless it exists; an ``extended`` study replaces it."""
    path = study_dir / STUDY_FILE
    if path.is_file() and not extended:
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {**spec.to_json(), "nnunet_losses_version": __version__})
