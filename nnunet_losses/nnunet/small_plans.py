"""A small plans variant for CPU tests, demos and studies: fewer features, stages and samples.

``nnunet-losses small-plans -d 101`` copies ``nnUNetPlans.json`` to ``nnUNetSmallPlans.json``
with, in each chosen configuration, the first ``len(features)`` stages of nnU-Net's
network (same kernels and strides, ``features`` channels), a smaller batch and
optionally a smaller patch. The data identifier is kept, so the variant trains on the
already preprocessed data and its maps: no second preprocessing run is needed::

    nnUNetv2_train 101 2d 0 -p nnUNetSmallPlans -tr nnUNetTrainerRRW
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import write_json
from .configuration import ConfigurationError, preprocessed_root, resolve_dataset_name

SMALL_PLANS = "nnUNetSmallPlans"


def shrink_configuration(configuration: dict, features: Sequence[int], batch_size: int, patch_size: Sequence[int] | None) -> dict:
    """A copy of one plans configuration with a smaller network, batch and patch."""
    shrunk = json.loads(json.dumps(configuration))
    arch = shrunk["architecture"]["arch_kwargs"]
    stages = len(features)
    if stages < 2 or stages > arch["n_stages"]:
        raise ConfigurationError(f"features must have between 2 and {arch['n_stages']} entries, got {list(features)}")
    arch["n_stages"] = stages
    arch["features_per_stage"] = [int(f) for f in features]
    for key in ("kernel_sizes", "strides", "n_conv_per_stage"):
        arch[key] = arch[key][:stages]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][: stages - 1]
    patch = list(patch_size) if patch_size is not None else shrunk["patch_size"]
    divisor = np.prod(np.array(arch["strides"]), axis=0)
    if len(patch) != len(divisor) or any(p % d for p, d in zip(patch, divisor)):
        raise ConfigurationError(f"patch size {patch} must have {len(divisor)} entries divisible by {divisor.tolist()}")
    shrunk["patch_size"] = [int(p) for p in patch]
    shrunk["batch_size"] = int(batch_size)
    return shrunk


def make_small_plans(
    dataset: str | int,
    configurations: Sequence[str] = ("2d",),
    features: Sequence[int] = (8, 16, 32, 64),
    batch_size: int = 2,
    patch_size: Sequence[int] | None = None,
    source_plans: str = "nnUNetPlans",
    target_plans: str = SMALL_PLANS,
) -> Path:
    """Write ``<target_plans>.json`` beside the source plans; returns its path."""
    folder = preprocessed_root() / resolve_dataset_name(dataset)
    source = folder / f"{source_plans}.json"
    if not source.is_file():
        raise ConfigurationError(f"{source} not found: run nnUNetv2_plan_and_preprocess -d {dataset} first")
    plans = json.loads(source.read_text())
    for name in configurations:
        if name not in plans["configurations"]:
            raise ConfigurationError(f"configuration {name!r} is not in {source.name}; available: {list(plans['configurations'])}")
        plans["configurations"][name] = shrink_configuration(plans["configurations"][name], features, batch_size, patch_size)
    plans["plans_name"] = target_plans
    return write_json(folder / f"{target_plans}.json", plans)


def build_parser(prog: str = "nnunet-losses small-plans") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Write a small plans variant (fewer features, stages and samples) for CPU tests, demos and studies."
    )
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("-c", "--configurations", nargs="+", default=["2d"])
    parser.add_argument("--features", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patch-size", nargs="+", type=int, default=None)
    parser.add_argument("-p", "--source-plans", default="nnUNetPlans")
    parser.add_argument("--name", default=SMALL_PLANS, help=f"name of the new plans (default {SMALL_PLANS})")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "nnunet-losses small-plans") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        path = make_small_plans(args.dataset, args.configurations, args.features, args.batch_size, args.patch_size, args.source_plans, args.name)
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
