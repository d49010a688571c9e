"""``nnunet-losses study``: convergence CDFs over seeds, budget tests, cross-validation comparisons, status.

    nnunet-losses study cdf -d 27 -c 2d --trainers nnUNetTrainerRWBoundary nnUNetTrainerRRW --seeds 50 --epochs 50
    nnunet-losses study budget studies/convergence_protocol studies/convergence_budget_3x --control nnUNetTrainerDiceCE --trainers nnUNetTrainerRRW --out budget
    nnunet-losses study compare -d 27 -c 2d --trainers nnUNetTrainerRRW nnUNetTrainerFocal --baseline nnUNetTrainerRRW
    nnunet-losses study status study_cdf_Dataset027_ACDC_2d

Every run is nnU-Net's ``nnUNetv2_train`` with its own ``nnUNet_results`` below
``<out>/runs/``, on ``--device``; without it, on CUDA when a CUDA device is visible and
on the CPU otherwise (Slurm jobs: CUDA), and the study prints which. Invoking the same study again resumes it: finished and diverged runs
are kept (a run whose loss became non-finite is a result, counted at Dice 0), unfinished
ones are restarted, from their last checkpoint when they have one, and runs that failed
for any other reason are launched again until they have failed ``--retries`` + 1 times
(``--retry-failed`` starts that count afresh). Exit status: 0 when every run is done or
diverged, 1 when some failed or did not finish (results are still written from the
others) or the study was refused, 2 for usage errors, 130 when interrupted (Ctrl-C or
SIGTERM: the trainings are stopped and resume on the next invocation).
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..arguments import positive_int
from ..nnunet.configuration import ConfigurationError, resolve_dataset_name
from ..nnunet.map_store import MapError
from .runs import RunStatus, State, study_statuses
from .spec import StudyMismatchError, StudySpec, check_spec

if TYPE_CHECKING:
    from .executors import Executor

REFUSALS = (ConfigurationError, MapError, StudyMismatchError)


def _add_common(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The options shared by ``cdf`` and ``compare``; returns the budget group (each adds its --epochs)."""
    data = parser.add_argument_group("data and trainers")
    data.add_argument("-d", "--dataset", required=True, help="dataset id or name, as for nnUNetv2_train")
    data.add_argument("-c", "--configuration", required=True, help="nnU-Net configuration, e.g. 2d or 3d_fullres")
    data.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    data.add_argument(
        "--trainers",
        nargs="+",
        required=True,
        metavar="TRAINER",
        help="nnU-Net trainer class names; in study cdf NAME:N runs that trainer with seeds 0..N-1 instead of --seeds",
    )
    budget = parser.add_argument_group("budget per run (NNUNET_LOSSES_* variables of the trainers)")
    budget.add_argument("--iterations", type=positive_int, help="training iterations per epoch (nnU-Net: 250)")
    budget.add_argument("--val-iterations", type=positive_int, help="validation iterations per epoch (nnU-Net: 50)")
    run = parser.add_argument_group("execution")
    run.add_argument("--out", type=Path, help="study folder (default ./study_<kind>_<Dataset>_<configuration>)")
    run.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        help="nnUNetv2_train -device (default: cuda if a CUDA device is visible here, else cpu; cuda with --executor slurm)",
    )
    run.add_argument("--executor", choices=("local", "slurm"), default="local", help="where runs execute (default local)")
    run.add_argument("--parallel", type=positive_int, default=1, help="local: runs at a time, each pinned to its own share of the cores")
    run.add_argument(
        "--retries",
        type=int,
        default=1,
        metavar="N",
        help="launch a run that failed (killed, out of memory, any error other than a diverged loss) again until it has failed N+1 times (default 1)",
    )
    run.add_argument("--retry-failed", action="store_true", help="forget the failures of earlier invocations: failed runs get --retries anew")
    run.add_argument(
        "--gpus", type=int, default=1, help="GPUs per run (default 1; more train with nnU-Net's DDP; Slurm requests them per job; 0 with --device cpu)"
    )
    slurm = parser.add_argument_group("Slurm (--executor slurm: one batch job per run, requeued at its time limit)")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument("--time-limit", type=positive_int, metavar="MINUTES", help="time limit per job in minutes")
    slurm.add_argument("--cpus-per-task", type=positive_int, help="CPU cores per job")
    slurm.add_argument(
        "--signal-lead",
        type=positive_int,
        metavar="SECONDS",
        help="Slurm signals a job this long before its time limit; the training saves its checkpoint and the job is requeued (default 300)",
    )
    return budget


def _panel(text: str) -> tuple[str, tuple[str, ...]]:
    """``TITLE=TRAINER,TRAINER,...`` -> ``(TITLE, (TRAINER, ...))``."""
    title, _, names = text.partition("=")
    trainers = tuple(name.strip() for name in names.split(",") if name.strip())
    if not title.strip() or not trainers:
        raise argparse.ArgumentTypeError(f"expected TITLE=TRAINER[,TRAINER...], got {text!r}")
    return title.strip(), trainers


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Studies over many nnUNetv2_train runs: convergence CDFs over seeds, cross-validation comparisons, status.",
        epilog="examples:\n" + "\n".join(line for line in __doc__.splitlines() if line.startswith("    nnunet-losses")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{cdf,budget,compare,status}")

    cdf = commands.add_parser(
        "cdf",
        help="train each trainer with many seeds; CSV and empirical-CDF plot of the final validation Dice",
        description="Convergence study (region-wise loss paper §4.3-4.4): one run per trainer and seed (seeds 0..N-1) "
        "on one fold; writes cdf_results.csv, cdf.png and cdf.pdf.",
    )
    _add_common(cdf).add_argument("--epochs", type=positive_int, required=True, help="epochs per run (the paper: 50)")
    cdf.add_argument("--seeds", type=positive_int, default=50, help="number of seeds per trainer, 0..N-1 (default 50)")
    cdf.add_argument("--fold", type=int, default=0, help="fold to train and validate on (default 0)")
    cdf.add_argument(
        "--control",
        metavar="TRAINER",
        help="a trainer known to converge (e.g. nnUNetTrainerDiceCE): also write cdf_summary.csv/.md, the fraction of runs "
        "per trainer whose Dice is >= the control's median minus --tolerance, with exact binomial intervals",
    )
    cdf.add_argument("--tolerance", type=float, default=0.05, help="convergence tolerance below the control's median Dice (default 0.05)")
    cdf.add_argument(
        "--panel",
        action="append",
        type=_panel,
        default=[],
        metavar="TITLE=TRAINER,...",
        help="repeatable: also draw cdf_panels.png with one panel per --panel, holding these trainers and the --control "
        "(e.g. one panel per map, as in the RW paper's Fig. 6c)",
    )

    compare = commands.add_parser(
        "compare",
        help="train each trainer on each fold; per-case metrics and paired tests against a baseline",
        description="Cross-validation comparison: one run per trainer and fold; writes compare_cases.csv, "
        "compare_summary.csv, compare.md and compare_<metric>.png.",
    )
    _add_common(compare).add_argument("--epochs", type=positive_int, help="epochs per run (default nnU-Net's 1000)")
    compare.add_argument("--baseline", required=True, help="trainer the others are tested against (one of --trainers)")
    compare.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds (default 0 1 2 3 4)")
    compare.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    compare.add_argument("--permutations", type=positive_int, default=10000, help="permutations of the paired test (default 10000)")

    budget = commands.add_parser(
        "budget",
        help="converged fraction against budget, from finished cdf studies of one protocol at several budgets",
        description="Budget test: reads cdf_results.csv and study.json of each study folder (one per budget), judges each "
        "against its own --control (median - --tolerance), and writes budget_summary.csv/.md (exact intervals, two-sided "
        "Fisher exact test of each budget against the smallest) and budget.png/.pdf in --out. Trains nothing.",
    )
    budget.add_argument("study_dirs", type=Path, nargs="+", metavar="DIR", help="cdf study folders, one per budget")
    budget.add_argument("--control", required=True, metavar="TRAINER", help="the control trainer of every study (e.g. nnUNetTrainerDiceCE)")
    budget.add_argument("--trainers", nargs="+", required=True, help="trainers to compare across the budgets (the control is added)")
    budget.add_argument("--tolerance", type=float, default=0.05, help="convergence tolerance below each control's median Dice (default 0.05)")
    budget.add_argument("--out", type=Path, required=True, help="folder of the budget summary and figure")

    status = commands.add_parser("status", help="done / running / failed / left runs of a study folder", description="Show the runs of a study folder.")
    status.add_argument("study_dir", type=Path, metavar="DIR")
    return parser


def trainers_and_seed_counts(entries: Sequence[str], allow_counts: bool) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """``["A", "B:20"]`` -> ``(("A", "B"), (("B", 20),))``; ``ConfigurationError`` for a bad count, or a count where none is allowed."""
    trainers, counts = [], []
    for entry in entries:
        name, colon, count = entry.partition(":")
        trainers.append(name)
        if not colon:
            continue
        if not allow_counts:
            raise ConfigurationError(f"--trainers {entry}: a seed count (NAME:N) is for study cdf only")
        if not count.isdigit() or int(count) < 1:
            raise ConfigurationError(f"--trainers {entry}: the seed count after ':' must be a positive integer")
        counts.append((name, int(count)))
    return tuple(trainers), tuple(sorted(counts))


def spec_from_args(args: argparse.Namespace) -> StudySpec:
    dataset = resolve_dataset_name(args.dataset)
    trainers, seed_counts = trainers_and_seed_counts(args.trainers, allow_counts=args.command == "cdf")
    seeds = tuple(range(args.seeds)) if args.command == "cdf" else (args.seed,)
    folds = (args.fold,) if args.command == "cdf" else tuple(args.folds)
    try:
        return StudySpec(
            args.command, dataset, args.configuration, args.plans, trainers, seeds, folds, args.epochs, args.iterations, args.val_iterations, seed_counts
        )
    except ValueError as error:  # duplicate trainers, folds or seeds
        raise ConfigurationError(str(error)) from None


def _executor(args: argparse.Namespace, study_dir: Path) -> Executor:
    from .executors import LocalExecutor, SlurmExecutor
    from .slurm import SlurmOptions

    if args.executor == "local":
        return LocalExecutor(args.parallel)
    if shutil.which("sbatch") is None:
        raise ConfigurationError("--executor slurm needs Slurm's sbatch, which is not on PATH here; run the study on a Slurm login node")
    gpus = args.gpus if args.device == "cuda" else 0
    lead = {} if args.signal_lead is None else {"signal_lead_seconds": args.signal_lead}
    return SlurmExecutor(SlurmOptions(args.partition, gpus, args.time_limit, args.cpus_per_task, **lead))


def choose_device(args: argparse.Namespace) -> str:
    """``--device`` when given; otherwise cuda if a CUDA device is visible (always for Slurm jobs, which run elsewhere), else cpu."""
    if args.device is not None:
        return args.device
    if args.executor == "slurm":
        print("device: cuda (the default for --executor slurm; pass --device cpu for CPU jobs)")
        return "cuda"
    import torch

    if torch.cuda.is_available():
        print(f"device: cuda ({torch.cuda.device_count()} visible; pass --device cpu to train on the CPU)")
        return "cuda"
    print("device: cpu (no CUDA device is visible here; pass --device to choose)")
    return "cpu"


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    names = [entry.partition(":")[0] for entry in args.trainers]
    if len(set(names)) != len(names):
        parser.error(f"--trainers has duplicates: {args.trainers}")
    if args.command == "cdf" and args.control is not None and args.control not in names:
        parser.error(f"--control {args.control} must be one of --trainers {names}")
    if args.command == "cdf" and not 0 <= args.tolerance < 1:
        parser.error(f"--tolerance must be in [0, 1), got {args.tolerance}")
    if args.command == "cdf":
        titles = [title for title, _ in args.panel]
        unknown = [trainer for _, trainers in args.panel for trainer in trainers if trainer not in names]
        if len(set(titles)) != len(titles):
            parser.error(f"--panel titles must differ: {titles}")
        if unknown:
            parser.error(f"--panel trainers must be among --trainers {names}: {unknown}")
    if args.command == "compare":
        if args.baseline not in args.trainers:
            parser.error(f"--baseline {args.baseline} must be one of --trainers {args.trainers}")
        if len(set(args.folds)) != len(args.folds):
            parser.error(f"--folds has duplicates: {args.folds}")
    slurm_only = [f"--{name.replace('_', '-')}" for name in ("partition", "time_limit", "cpus_per_task", "signal_lead") if getattr(args, name) is not None]
    if args.executor == "local" and slurm_only:
        parser.error(f"{', '.join(slurm_only)} only apply to --executor slurm")
    if args.device == "cpu" and args.gpus not in (0, 1):
        parser.error("--gpus applies to --device cuda (--device cpu runs use no GPU; --gpus 0 says so)")
    if args.device == "cuda" and args.gpus < 1:
        parser.error(f"--gpus must be a positive integer with --device cuda, got {args.gpus}")
    if args.retries < 0:
        parser.error(f"--retries must be 0 or more, got {args.retries}")
    if args.executor == "slurm" and args.parallel != 1:
        parser.error("--parallel applies to --executor local; Slurm runs every job as soon as it is scheduled")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_interruptibly(spec: StudySpec, study_dir: Path, executor: Executor, args: argparse.Namespace) -> list[RunStatus]:
    """:func:`.runner.run_study` with SIGTERM handled like Ctrl-C: the trainings are stopped and recorded."""
    from .runner import run_study

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run_study(spec, study_dir, executor, args.device, args.gpus, args.retries, args.retry_failed)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_reports(args: argparse.Namespace, spec: StudySpec, study_dir: Path, statuses: list[RunStatus], dataset_folder: Path) -> None:
    """The result files of the runs counted so far (also after an interruption: the finished runs are results)."""
    from .reports import write_cdf_report, write_compare_report

    if spec.kind == "cdf":
        written = write_cdf_report(spec, study_dir, statuses, dataset_folder, args.control, args.tolerance, dict(args.panel))
    else:
        written = write_compare_report(spec, study_dir, statuses, dataset_folder, args.baseline, args.permutations)
    names = [str(path.relative_to(study_dir)) for path in written]
    print(f"wrote {', '.join(names[:4])}{f' and {len(names) - 4} more' if len(names) > 4 else ''} in {study_dir}")


def run_command(args: argparse.Namespace) -> int:
    """Refuse bad input, run the study, write its results; the exit status of :mod:`.cli`."""
    from .runner import StudyBusyError, ensure_splits, preflight

    try:
        spec = spec_from_args(args)
        study_dir = (args.out or Path.cwd() / f"study_{spec.kind}_{spec.dataset}_{spec.configuration}").resolve()
        check_spec(spec, study_dir)
        config = preflight(spec, args.device, local=args.executor == "local")
        executor = _executor(args, study_dir)
        ensure_splits(config)
    except REFUSALS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        statuses = _run_interruptibly(spec, study_dir, executor, args)
    except (StudyMismatchError, StudyBusyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; the same command resumes the study (state: nnunet-losses study status {study_dir})", file=sys.stderr)
        _write_reports(args, spec, study_dir, study_statuses(study_dir, spec), config.dataset_folder)
        return 130
    _write_reports(args, spec, study_dir, statuses, config.dataset_folder)
    unfinished = [status for status in statuses if status.state not in (State.DONE, State.DIVERGED)]
    if unfinished:
        print(f"{len(unfinished)} of {len(statuses)} runs are not done; see: nnunet-losses study status {study_dir}", file=sys.stderr)
        return 1
    return 0


def budget_command(args: argparse.Namespace) -> int:
    """``study budget``: the budget report from finished studies; exit 1 with a one-line reason when it cannot be made."""
    from .budget import write_budget_report

    try:
        written = write_budget_report(args.study_dirs, args.trainers, args.control, args.out, args.tolerance)
    except (OSError, ValueError, StudyMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(path.name for path in written)} in {args.out}")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "nnunet-losses study") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "status":
        from .status import status_report

        try:
            print(status_report(args.study_dir))
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "budget":
        return budget_command(args)
    args.device = choose_device(args)
    _check_usage(parser, args)
    return run_command(args)
