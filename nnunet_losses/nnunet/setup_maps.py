"""``setup_maps.py`` / ``nnunet-losses setup-maps``: write the maps of preprocessed cases.

Run after nnU-Net's preprocessing::

    python setup_maps.py -d 27 -c 2d 3d_fullres [-p nnUNetPlans] [--maps rrw signed_distance] [-np 4]

For every case of every configuration it computes the requested map kinds on the
whole case at the configuration's spacing (``--per-slice``: on each slice, as 2d
configurations see the data) and stores them beside the preprocessed data (see
:mod:`.map_store`). Valid maps are kept, so a second run does nothing and an
interrupted run resumes; missing, stale or unreadable maps are (re)written;
``--overwrite`` rewrites everything.
"""
from __future__ import annotations

import argparse
import errno
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass

import blosc2
import numpy as np
from tqdm import tqdm

from ..maps import MAP_KINDS
from .configuration import ConfigurationError, PreprocessedConfiguration, load_configuration, writable_directory
from .map_layout import compute_map_stack
from .map_store import MapError, MapStore, read_segmentation

DEFAULT_KINDS = tuple(MAP_KINDS)


class MapWriteError(RuntimeError):
    """Writing maps failed (e.g. a full disk); finished cases are kept, nothing partial is left."""


@dataclass
class CaseResult:
    case: str
    written: bool
    voxels: int = 0
    bytes: int = 0


@dataclass
class Summary:
    configuration: str
    cases: int
    written: int
    skipped: int
    seconds: float
    bytes: int
    voxels: int

    @property
    def bytes_per_voxel(self) -> float:
        return self.bytes / self.voxels if self.voxels else 0.0

    def __str__(self) -> str:
        rate = f", {self.bytes_per_voxel:.2f} bytes/voxel" if self.written else ""
        return (
            f"{self.configuration}: {self.cases} cases, {self.written} written, {self.skipped} already valid, "
            f"{self.seconds:.1f} s{rate}"
        )


def _needs_writing(store: MapStore, case: str, kinds: Sequence[str], per_slice: bool, overwrite: bool) -> bool:
    if overwrite:
        return True
    try:
        return any(bool(store.verify(case, kind)["per_slice"]) != per_slice for kind in kinds)
    except MapError:
        return True


def process_case(store: MapStore, case: str, kinds: Sequence[str], per_slice: bool, overwrite: bool) -> CaseResult:
    """Compute and write the maps of one case unless valid ones exist."""
    if not _needs_writing(store, case, kinds, per_slice, overwrite):
        return CaseResult(case, written=False)
    config = store.config
    content, fingerprint = read_segmentation(store.seg_file(case))
    segmentation = content[0]
    spacing = config.case_spacing(config.load_properties(case))
    maps = compute_map_stack(segmentation, kinds, config.num_classes, config.ignore_label, spacing, per_slice)
    written = 0
    for kind, values in maps.items():
        try:
            written += store.write(case, kind, values, per_slice, spacing, fingerprint)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise MapWriteError(
                    f"disk full while writing the {kind!r} map of case {case} in {store.folder}. No partial file was left "
                    "and finished cases are kept: free some space and run the same command again to resume"
                ) from error
            raise
    return CaseResult(case, written=True, voxels=int(np.prod(segmentation.shape)), bytes=written)


_WORKER_STORE: MapStore | None = None


def _init_worker(dataset: str, configuration: str, plans: str) -> None:
    global _WORKER_STORE
    blosc2.set_nthreads(1)
    _WORKER_STORE = MapStore(load_configuration(dataset, configuration, plans))


def _process_in_worker(args: tuple[str, tuple[str, ...], bool, bool]) -> CaseResult:
    assert _WORKER_STORE is not None
    return process_case(_WORKER_STORE, *args)


def write_configuration_maps(
    config: PreprocessedConfiguration,
    kinds: Sequence[str] = DEFAULT_KINDS,
    per_slice: bool = False,
    processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> Summary:
    """Write the maps of every case of one configuration; returns what was done."""
    store = MapStore(config)
    writable_directory(store.folder)
    store.remove_partial_files()
    cases = config.case_identifiers()
    start = time.perf_counter()
    jobs = [(case, tuple(kinds), per_slice, overwrite) for case in cases]
    bar = tqdm(total=len(cases), desc=f"maps {config.dataset_name} {config.configuration}", unit="case", disable=not progress)
    results: list[CaseResult] = []
    if processes <= 1:
        for job in jobs:
            results.append(process_case(store, *job))
            bar.update()
    else:
        # fork reuses the imports of this process; spawn (slower to start) where fork is unavailable
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        initargs = (config.dataset_name, config.configuration, config.plans_name)
        with context.Pool(processes, initializer=_init_worker, initargs=initargs) as pool:
            for result in pool.imap_unordered(_process_in_worker, jobs):
                results.append(result)
                bar.update()
    bar.close()
    written = [r for r in results if r.written]
    return Summary(
        configuration=config.configuration,
        cases=len(cases),
        written=len(written),
        skipped=len(cases) - len(written),
        seconds=time.perf_counter() - start,
        bytes=sum(r.bytes for r in written),
        voxels=sum(r.voxels for r in written),
    )


def build_parser(prog: str = "setup_maps.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Write the distance/RW maps of nnU-Net's preprocessed cases (run after nnU-Net's preprocessing)."
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset name or id, e.g. 27 or Dataset027_ACDC")
    parser.add_argument("-c", "--configurations", nargs="+", required=True, help="configurations, e.g. 2d 3d_fullres")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("--maps", nargs="+", default=list(DEFAULT_KINDS), choices=list(MAP_KINDS), help="map kinds (default: all)")
    parser.add_argument("-np", "--processes", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--per-slice", action="store_true", help="compute 2D maps on each slice (for 2d configurations)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite maps that are still valid")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> list[Summary]:
    summaries = []
    for configuration in args.configurations:
        config = load_configuration(args.dataset, configuration, args.plans)
        summary = write_configuration_maps(
            config, args.maps, per_slice=args.per_slice, processes=args.processes, overwrite=args.overwrite, progress=not args.quiet
        )
        print(summary)
        summaries.append(summary)
    return summaries


def main(argv: Sequence[str] | None = None, prog: str = "setup_maps.py") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        run(args)
    except (ConfigurationError, MapError, MapWriteError) as error:
        print(f"error: {error}")
        return 1
    return 0
