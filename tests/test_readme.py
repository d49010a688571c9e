"""Every command in the README is checked: it exists, its options are accepted, its files exist.

The commands' effects are covered by the other tests (setup_maps, trainers, studies, the
demo); here each README command line is parsed and validated against the real argument
parsers (ours, and nnU-Net's help texts).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest

from nnunet_losses import cli, demo
from nnunet_losses.nnunet import setup_maps, small_plans
from nnunet_losses.nnunet.preflight import package_trainer_names
from nnunet_losses.nnunet.run_settings import BUDGET_VARIABLES, SEED_VARIABLE
from nnunet_losses.study import cli as study_cli

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PARSERS = {
    "setup-maps": setup_maps.build_parser,
    "small-plans": small_plans.build_parser,
    "study": lambda: study_cli.build_parser("nnunet-losses study"),
    "demo": demo.build_parser,
}
KNOWN_VARIABLES = {SEED_VARIABLE, *BUDGET_VARIABLES.values(), "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"}


def readme_commands() -> list[str]:
    """Command lines of the README's bash blocks, split at '&&', without comments."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


@cache
def nnunet_help(program: str) -> str:
    return subprocess.run([program, "-h"], capture_output=True, text=True, timeout=120).stdout


def check_command(command: str) -> None:
    for inner in re.findall(r"\$\(([^)]*)\)", command):  # command substitutions are commands too
        check_command(inner)
    words = shlex.split(re.sub(r"\$\([^)]*\)", "SUBSTITUTED", command))
    if words[0] == "export" or "=" in words[0]:
        assignments = [w for w in words if "=" in w and not w.startswith("-")]
        for assignment in assignments:
            assert assignment.partition("=")[0] in KNOWN_VARIABLES, f"unknown variable in: {command}"
        words = [w for w in words if w != "export" and w not in assignments]
        if not words:
            return
    program, arguments = words[0], words[1:]
    if program == "nnunet-losses":
        subcommand, rest = arguments[0], arguments[1:]
        assert subcommand in cli.COMMANDS, command
        if subcommand == "trainers-path":
            assert not rest and cli.trainers_path().is_dir()
            return
        parsed = PARSERS[subcommand]().parse_args(rest)
        trainers = set(getattr(parsed, "trainers", None) or [])
        assert trainers <= set(package_trainer_names()) | {"nnUNetTrainer"}, trainers
    elif program.startswith("nnUNetv2_"):
        help_text = nnunet_help(program)
        assert help_text, f"{program} is not installed"
        for flag in (a for a in arguments if a.startswith("-")):
            assert re.search(rf"(^|[\s\[,]){re.escape(flag)}([\s\],]|$)", help_text, flags=re.M), f"{program} has no option {flag}"
        if "-tr" in arguments:
            assert arguments[arguments.index("-tr") + 1] in package_trainer_names()
    elif program == "python" and arguments[:2] == ["-m", "pytest"]:
        markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
        options = arguments[2:]
        if "-m" in options:
            marker = options[options.index("-m") + 1].split()[-1]
            assert any(m.startswith(f"{marker}:") for m in markers), marker
    elif program == "python" and arguments[:2] == ["-m", "venv"]:
        return
    elif program == "python" and arguments[0] == "setup_maps.py":
        setup_maps.build_parser().parse_args(arguments[1:])
    elif program in ("python", "bash"):
        assert (REPO / arguments[0]).is_file(), command
    elif program == "pip":
        extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert arguments[0] == "install" and all(e in extras for e in re.findall(r"\[(\w+)\]", " ".join(arguments)))
    elif program == "source":
        return
    else:
        raise AssertionError(f"unchecked README command: {command}")


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_is_valid(command):
    check_command(command)


def test_readme_lists_every_trainer():
    for name in package_trainer_names():
        assert name in README or name.replace("Gradual", "").replace("Equal", "") in README, name


def test_readme_figures_exist():
    for path in re.findall(r"\]\(((?:studies|benchmarks)/[^)]+)\)", README):
        assert (REPO / path).is_file(), path


def test_readme_trainer_example_defines_a_working_trainer():
    """The README's 'new combination' example defines a trainer whose loss computes."""
    import types

    import numpy as np
    import torch

    from nnunet_losses.losses import CompositeLoss
    from nnunet_losses.maps import rrw_compact
    from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses

    (code,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    namespace: dict = {}
    exec(code, namespace)
    trainers = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, nnUNetTrainerLosses) and v is not nnUNetTrainerLosses]
    assert len(trainers) == 1
    fake_self = types.SimpleNamespace(num_epochs=10)
    terms = trainers[0].loss_terms(fake_self)
    loss = CompositeLoss(terms, trainers[0].loss_weights(fake_self, tuple(terms)))
    target = torch.from_numpy(np.random.default_rng(0).integers(0, 4, (2, 1, 12, 12)))
    rrw = torch.from_numpy(np.stack([rrw_compact(t[0], 4) for t in target.numpy()]))
    value = loss(torch.randn(2, 4, 12, 12), target, rrw=rrw)
    assert torch.isfinite(value) and loss.required_maps == ("rrw",)
