"""``nnunet-losses setup-maps`` / ``setup_maps.py``: write the maps of preprocessed cases.

Run after nnU-Net's preprocessing::

    nnunet-losses setup-maps -d 27 -c 2d 3d_fullres [-p nnUNetPlans] [--maps rrw signed_distance] [-np 4]

For every case of every configuration it computes the requested map kinds on the
whole case at the configuration's spacing (``--per-slice``: on each slice, as 2d
configurations see the data) and stores them beside the preprocessed data (see
:mod:`.map_store`). Valid maps are kept, so a second run does nothing and an
interrupted run resumes; missing, stale or damaged maps (checked down to the hash of
their values) are (re)written; ``--overwrite`` rewrites everything. Maps of an older map
format version are rewritten with a note saying so.

Memory: a case's maps are computed and written one channel at a time (the own-class
distance is computed once and shared), so a worker holds a few arrays of the case's size
whatever the number of classes (:func:`write_case`).

Safety with several users and runs:

* every configuration is checked (exists, label-based) before any folder is created;
* one run at a time per dataset: a run holds a lock on
  ``nnunet_losses_maps/.setup_maps.lock``; a second run waits for it (and then finds
  its maps valid). The lock is a POSIX record lock (``lockf``), which worker processes
  do not inherit and the system releases when the run dies;
* the slicing is part of what a re-run keeps: without ``--per-slice``/``--no-per-slice``
  the slicing recorded for the folder (``setup_maps.json``, or else the maps' metadata)
  is used; an explicit change says what it rewrites;
* all cases are checked before anything is written, so a read-only folder of valid
  maps is fine, and one that needs writing is refused before any work;
* write errors (full disk, permissions) stop the run with one line naming the file;
  finished cases are kept and no partial file is left.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import blosc2
import numpy as np
from tqdm import tqdm

from ..maps import MAP_KINDS
from .configuration import ConfigurationError, PreprocessedConfiguration, load_configuration, writable_directory
from .map_layout import map_stack_channels
from .map_store import MAP_FOLDER_NAME, MAP_FORMAT_VERSION, MapError, MapStore, MapWriteError, OlderMapFormatError, read_segmentation

DEFAULT_KINDS = tuple(MAP_KINDS)
LOCK_FILE = ".setup_maps.lock"


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


Job = tuple[str, tuple[str, ...], bool, bool]
"""(case, kinds, per_slice, overwrite)"""


def needs_writing(store: MapStore, job: Job) -> tuple[str, tuple[str, ...], bool]:
    """The kinds of a case whose maps must be (re)written: missing, stale, damaged, of an older map
    format, of the other slicing, or all with ``overwrite``; and whether one of them is of an older
    format. Valid files of the other kinds are left as they are."""
    case, kinds, per_slice, overwrite = job
    states = {kind: _state(store, case, kind, per_slice) for kind in kinds}
    return case, tuple(kind for kind in kinds if overwrite or states[kind] != "valid"), "older format" in states.values()


def _state(store: MapStore, case: str, kind: str, per_slice: bool) -> str:
    """``"valid"``, ``"older format"`` or ``"invalid"``."""
    try:
        return "valid" if bool(store.verify(case, kind, content=True)["per_slice"]) == per_slice else "invalid"
    except OlderMapFormatError:
        return "older format"
    except MapError:
        return "invalid"


def write_case(store: MapStore, job: Job) -> CaseResult:
    """Compute and write the maps of one case (the job's kinds only), one channel at a time.

    Each kind's channels (:func:`~.map_layout.map_stack_channels`, the values of
    :func:`~.map_layout.compute_map_stack`) are computed, encoded and written one after the other
    (:meth:`~.map_store.MapStore.write_channels`): peak memory is a few arrays of the case's size,
    whatever its class count.
    """
    case, kinds, per_slice, _ = job
    config = store.config
    content, fingerprint = read_segmentation(store.seg_file(case))
    spacing = config.case_spacing(config.load_properties(case))
    shape = tuple(content.shape[1:])
    streams = map_stack_channels(content[0], kinds, config.num_classes, config.ignore_label, spacing, per_slice)
    del content  # the streams hold the labels they need
    written = sum(store.write_channels(case, kind, channels, count, shape, per_slice, spacing, fingerprint) for kind, (count, channels) in streams.items())
    return CaseResult(case, written=True, voxels=int(np.prod(shape)), bytes=written)


_WORKER_STORE: MapStore | None = None


def _init_worker(dataset: str, configuration: str, plans: str) -> None:
    global _WORKER_STORE
    blosc2.set_nthreads(1)
    _WORKER_STORE = MapStore(load_configuration(dataset, configuration, plans))


def _in_worker(function: Callable[[MapStore, Job], object], job: Job) -> object:
    assert _WORKER_STORE is not None
    return function(_WORKER_STORE, job)


def _map_jobs(function: Callable[[MapStore, Job], object], store: MapStore, jobs: list[Job], pool: Pool | None, bar: tqdm) -> list:
    """``function(store, job)`` for every job, in this process or in the pool's workers (any order)."""
    results = []
    outputs = pool.imap_unordered(functools.partial(_in_worker, function), jobs) if pool else (function(store, job) for job in jobs)
    for output in outputs:
        results.append(output)
        bar.update()
    return results


@contextlib.contextmanager
def _worker_pool(config: PreprocessedConfiguration, processes: int) -> Iterator[Pool | None]:
    if processes <= 1:
        yield None
        return
    # fork reuses the imports of this process; spawn (slower to start) where fork is unavailable
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with context.Pool(processes, initializer=_init_worker, initargs=(config.dataset_name, config.configuration, config.plans_name)) as pool:
        yield pool


@contextlib.contextmanager
def dataset_lock(dataset_folder: Path) -> Iterator[None]:
    """Hold the dataset's maps lock for the duration; wait (saying for whom) while another run holds it.

    In a folder this process cannot write, the lock is taken shared on an existing lock
    file, or not at all: such a run only checks maps and refuses to write.
    """
    lock_file = dataset_folder / MAP_FOLDER_NAME / LOCK_FILE
    try:
        lock_file.parent.mkdir(exist_ok=True)
        descriptor, mode = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666), fcntl.LOCK_EX
    except OSError:
        try:
            descriptor, mode = os.open(lock_file, os.O_RDONLY), fcntl.LOCK_SH
        except OSError:
            yield
            return
    try:
        try:
            fcntl.lockf(descriptor, mode | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
            print(
                f"waiting for another setup_maps (pid {holder}) working on {dataset_folder.name} to finish "
                f"(lock {lock_file}) ...",
                file=sys.stderr,
                flush=True,
            )
            fcntl.lockf(descriptor, mode)
        if mode == fcntl.LOCK_EX:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def choose_slicing(store: MapStore, kinds: tuple[str, ...], requested: bool | None) -> bool:
    """The slicing of this run: the one requested, else the one recorded for the folder, else whole volume.

    Changing the slicing of existing maps is said on stderr; a folder whose maps mix
    both slicings without a record needs an explicit choice.
    """
    recorded = store.recorded_per_slice()
    if recorded is None:
        existing = store.existing_per_slice(kinds)
        if len(existing) > 1 and requested is None:
            raise MapError(
                f"the maps in {store.folder} mix per-slice and whole-volume maps. "
                f"Run: {store.config.setup_maps_command('--per-slice')} (or --no-per-slice)"
            )
        recorded = existing.pop() if len(existing) == 1 else None
    if requested is None:
        return bool(recorded)
    if recorded is not None and requested != recorded:
        print(f"note: the maps in {store.folder} were computed {_slicing(recorded)}; rewriting them {_slicing(requested)}", file=sys.stderr)
    return requested


def _slicing(per_slice: bool) -> str:
    return "per slice (--per-slice)" if per_slice else "on the whole volume (--no-per-slice)"


def _prepare_folder(store: MapStore, per_slice: bool, writing: bool) -> None:
    """Before writing: a writable folder (clear error otherwise) and the slicing recorded.

    A run that writes nothing records the slicing only where it can: a read-only folder
    of valid maps stays usable, and their metadata still holds the slicing.
    """
    if writing:
        writable_directory(store.folder)
    if store.recorded_per_slice() == per_slice:
        return
    try:
        store.record_per_slice(per_slice)
    except OSError as error:
        if writing:
            raise MapWriteError(f"cannot write {store.slicing_record}: {error.strerror}. Fix the folder and run again") from error


def write_configuration_maps(
    config: PreprocessedConfiguration,
    kinds: Sequence[str] = DEFAULT_KINDS,
    per_slice: bool | None = None,
    processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> Summary:
    """Write the maps of every case of one configuration that has no valid ones; returns what was done.

    ``per_slice=None`` keeps the slicing recorded for the folder (whole volume for a new one).
    """
    config.require_label_based()
    store = MapStore(config)
    cases = config.case_identifiers()
    start = time.perf_counter()
    name = f"{config.dataset_name} {config.configuration}"
    with dataset_lock(config.dataset_folder):
        chosen = choose_slicing(store, tuple(kinds), per_slice)
        jobs = [(case, tuple(kinds), chosen, overwrite) for case in cases]
        try:
            with _worker_pool(config, processes) as pool:
                with tqdm(total=len(jobs), desc=f"check maps {name}", unit="case", disable=not progress) as bar:
                    checked = _map_jobs(needs_writing, store, jobs, pool, bar)
                needed = {case: kinds_to_write for case, kinds_to_write, _ in checked}
                older = sum(1 for _, _, older_format in checked if older_format)
                if older:
                    print(
                        f"note: {older} of {len(cases)} cases of {name} have maps in an older map format; "
                        f"rewriting them in format version {MAP_FORMAT_VERSION}",
                        file=sys.stderr,
                        flush=True,
                    )
                to_write = [(case, needed[case], chosen, overwrite) for case in cases if needed[case]]
                _prepare_folder(store, chosen, bool(to_write))
                with tqdm(total=len(to_write), desc=f"write maps {name}", unit="case", disable=not progress or not to_write) as bar:
                    results: list[CaseResult] = _map_jobs(write_case, store, to_write, pool, bar)
        finally:  # the pool is stopped here: writers it stopped on an error leave temporary files
            store.remove_partial_files()
    return Summary(
        configuration=config.configuration,
        cases=len(cases),
        written=len(results),
        skipped=len(cases) - len(results),
        seconds=time.perf_counter() - start,
        bytes=sum(r.bytes for r in results),
        voxels=sum(r.voxels for r in results),
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
    parser.add_argument(
        "--per-slice",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compute 2D maps on each slice (for 2d configurations); --no-per-slice: on the whole volume. "
        "Default: keep the slicing of the existing maps (whole volume for new ones)",
    )
    parser.add_argument("--overwrite", action="store_true", help="rewrite maps that are still valid")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> list[Summary]:
    """Check every configuration first (nothing is created for a bad one), then write their maps."""
    configs = [load_configuration(args.dataset, configuration, args.plans) for configuration in args.configurations]
    for config in configs:
        config.require_label_based()
    summaries = []
    for config in configs:
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
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
