"""The ``nnunet-losses`` command: one subcommand per job, each with its own ``--help``.

Subcommands are imported only when run, so ``nnunet-losses trainers-path`` stays fast.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .trainer_folder import trainers_path

COMMANDS: dict[str, tuple[str, str]] = {
    "trainers-path": ("nnunet_losses.cli", "print the folder to export as nnUNet_extTrainer"),
    "setup-maps": ("nnunet_losses.nnunet.setup_maps", "write the maps of preprocessed cases (same as python setup_maps.py)"),
    "small-plans": ("nnunet_losses.nnunet.small_plans", "write a small plans variant for CPU runs (nnUNetSmallPlans)"),
    "study": ("nnunet_losses.study.cli", "seed studies (convergence CDF), cross-validation comparisons, their status"),
    "demo": ("nnunet_losses.demo", "synthetic data -> nnU-Net -> RW-Boundary vs RRW trainings, CDF plot, pictures (CPU, < 10 min)"),
}


TRAINERS_PATH_USAGE = """usage: nnunet-losses trainers-path

Print the folder holding the package's nnU-Net trainers. nnU-Net finds trainers outside
its own package only through the nnUNet_extTrainer variable:

    export nnUNet_extTrainer=$(nnunet-losses trainers-path)"""


def print_trainers_path(argv: Sequence[str]) -> int:
    """``nnunet-losses trainers-path [-h]``: print the trainers folder, or the usage; the exit status."""
    if list(argv) in (["-h"], ["--help"]):
        print(TRAINERS_PATH_USAGE)
        return 0
    if argv:
        print(f"nnunet-losses trainers-path: takes no arguments, got {' '.join(argv)}\n\n{TRAINERS_PATH_USAGE}", file=sys.stderr)
        return 2
    print(trainers_path())
    return 0


def usage() -> str:
    """The top-level usage: one line per subcommand."""
    lines = ["usage: nnunet-losses COMMAND [options]   (nnunet-losses COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<16} {description}" for name, (_, description) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``nnunet-losses COMMAND ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"nnunet-losses: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if command == "trainers-path":
        return print_trainers_path(rest)
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest, prog=f"nnunet-losses {command}")


if __name__ == "__main__":
    sys.exit(main())
