"""Bad inputs and accidents, reproduced on real nnU-Net data: damaged map files, full disks,
concurrent setup_maps runs, per-slice maps, region-based datasets, read-only folders,
unwritable run folders and a training killed with SIGKILL.

Every test checks the one-line message the user gets, the exit status, and that no valid
file was lost. ``docs/bad_inputs.md`` lists these cases with what the user sees.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import blosc2
import numpy as np
import pytest

from nnunet_losses.nnunet import map_store as map_store_module
from nnunet_losses.nnunet.configuration import PreprocessedConfiguration, load_configuration
from nnunet_losses.nnunet.map_store import CorruptMapsError, MapStore, MapWriteError, MissingMapsError
from nnunet_losses.nnunet.setup_maps import LOCK_FILE, write_configuration_maps
from nnunet_losses.files import read_json
from nnunet_losses.study.runs import RunPaths
from nnunet_losses.study.spec import StudySpec

from conftest import SMALL_PLANS, run_command

pytestmark = pytest.mark.nnunet
SMALL_DISK_ID, REGIONS_ID = 211, 212  # ids no other test module uses: nnU-Net resolves an id across all its folders
KINDS = ("rrw", "signed_distance")
RERUN = "finished cases are kept and no partial file was left: run the same command again to resume"


def setup_maps(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_command(["nnunet-losses", "setup-maps", *args, "--quiet"], env, check=False)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Name -> (size, mtime) of every file in a maps folder."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def verify_everything(store: MapStore) -> None:
    store.verify_all(store.config.case_identifiers(), KINDS, content=True)


@pytest.fixture
def maps_2d(cardiac) -> Iterator[PreprocessedConfiguration]:
    """The 2d maps of the shared dataset, which a test may damage; whole-volume and valid again afterwards."""
    config = load_configuration(cardiac.dataset_id, "2d", SMALL_PLANS)
    yield config
    write_configuration_maps(config, per_slice=False, progress=False)
    verify_everything(MapStore(config))


def copy_dataset(cardiac, dataset_id: int, suffix: str, dataset_json: dict | None = None) -> tuple[str, Path]:
    """A copy of the shared dataset's 2d preprocessed data under another id (no maps)."""
    name = f"Dataset{dataset_id:03d}_{suffix}"
    target = cardiac.workspace.preprocessed / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(cardiac.folder, target, ignore=shutil.ignore_patterns("nnunet_losses_maps", "*_3d_fullres", "gt_segmentations"))
    for plans_file in target.glob("nnUNet*Plans.json"):
        plans = json.loads(plans_file.read_text())
        plans["dataset_name"] = name
        plans_file.write_text(json.dumps(plans))
    if dataset_json is not None:
        (target / "dataset.json").write_text(json.dumps(dataset_json))
    return name, target


# --- 1: damaged map data -----------------------------------------------------------------------------------


def test_damaged_map_data_is_found_by_its_hash_and_rewritten_by_a_plain_run(cardiac, maps_2d):
    store = MapStore(maps_2d)
    case = maps_2d.case_identifiers()[0]
    path = store.path(case, "rrw")
    fix = f"nnunet-losses setup-maps -d {cardiac.name} -c 2d -p {SMALL_PLANS}"
    original = path.read_bytes()
    good_values = blosc2.open(str(path))[:]
    # single-byte flips in the data section until one decodes without error to other values
    silent = None
    for offset in range(len(original) // 3, len(original) // 3 + 400, 7):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            values = blosc2.open(str(path))[:]
        except Exception:
            continue
        if not np.array_equal(values, good_values):
            silent = offset
            break
    assert silent is not None, "no single-byte flip decoded silently"
    store.verify(case, "rrw")  # header and metadata intact: the cheap checks pass, as in the report
    message = f"the 'rrw' map of case {case} is damaged ({path}: its values differ from those written (content hash mismatch)). Run: {fix}"
    with pytest.raises(CorruptMapsError) as caught:
        store.verify(case, "rrw", content=True)
    assert str(caught.value) == message

    # random bytes over the data section, until blosc2 cannot decode it any more
    noise = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    raw = None
    for start in range(1000, len(original) - 1000, 1000):
        path.write_bytes(original[:start] + noise + original[start + len(noise):])
        try:
            blosc2.open(str(path))[:]
        except Exception as error:
            raw = error
            break
    assert raw is not None, "blosc2 decoded every damaged file"
    store.read_metadata(case, "rrw")  # the header still reads
    with pytest.raises(CorruptMapsError) as caught:
        store.verify(case, "rrw", content=True)
    assert str(caught.value) == f"the 'rrw' map of case {case} is damaged ({path}: {raw}). Run: {fix}"

    others = {name: state for name, state in snapshot(store.folder).items() if name != path.name}
    result = setup_maps(cardiac.workspace.environment(), "-d", str(cardiac.dataset_id), "-c", "2d", "-p", SMALL_PLANS)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("2d: 6 cases, 1 written, 5 already valid, ")
    assert {name: state for name, state in snapshot(store.folder).items() if name != path.name} == others
    np.testing.assert_array_equal(blosc2.open(str(path))[:], good_values)
    verify_everything(store)


# --- 2: write errors and concurrent runs ---------------------------------------------------------------


def test_blosc2_runtime_error_on_a_full_disk_is_one_line_and_leaves_nothing_partial(maps_2d, monkeypatch):
    store = MapStore(maps_2d)
    real_empty = blosc2.empty

    def full_disk(shape, dtype=None, urlpath=None, **kwargs):
        real_empty((1, 1), dtype, urlpath=urlpath, mode="w")  # part of the file was written
        raise RuntimeError("Error while creating the NDArray")  # what blosc2 raises on a full disk

    before = snapshot(store.folder)
    monkeypatch.setattr(map_store_module.blosc2, "empty", full_disk)
    monkeypatch.setattr(map_store_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**6, 10**6 - 4096, 4096))
    case = maps_2d.case_identifiers()[0]
    with pytest.raises(MapWriteError) as caught:
        write_configuration_maps(maps_2d, overwrite=True, progress=False)
    assert str(caught.value) == (
        f"cannot write the 'rrw' map of case {case} to {store.path(case, 'rrw')}: disk full (0.0 MiB free; "
        f"blosc2: Error while creating the NDArray). Free some space; {RERUN}"
    )
    assert snapshot(store.folder) == before  # no partial file, and the existing maps are untouched


def test_other_blosc2_errors_are_not_taken_for_a_full_disk(maps_2d, monkeypatch):
    def broken(shape, dtype=None, urlpath=None, **kwargs):
        raise RuntimeError("Error while creating the NDArray")

    monkeypatch.setattr(map_store_module.blosc2, "empty", broken)
    with pytest.raises(RuntimeError, match="^Error while creating the NDArray$") as caught:
        write_configuration_maps(maps_2d, overwrite=True, progress=False)
    assert not isinstance(caught.value, MapWriteError)
    assert not list(MapStore(maps_2d).folder.glob("*.partial-*"))


@contextmanager
def small_filesystem(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}); the simulated test covers it")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_small_filesystem_stops_with_one_line_and_keeps_finished_cases(cardiac, tmp_path):
    name, folder = copy_dataset(cardiac, SMALL_DISK_ID, "SmallDisk")
    try:
        with small_filesystem(tmp_path / "small", "300k"):  # a 2d case's maps take about 120 KB (stored compactly)
            (folder / "nnunet_losses_maps").symlink_to(tmp_path / "small")
            result = setup_maps(cardiac.workspace.environment(), "-d", str(SMALL_DISK_ID), "-c", "2d", "-p", SMALL_PLANS)
            store = MapStore(load_configuration(SMALL_DISK_ID, "2d", SMALL_PLANS))
            assert (result.returncode, result.stdout) == (1, "")
            line = re.fullmatch(
                rf"error: cannot write the '(rrw|signed_distance)' map of case (cardiac_\d+) to {re.escape(str(store.folder))}/\2__\1\.b2nd: "
                rf"disk full \(.+\)\. Free some space; {re.escape(RERUN)}\n",
                result.stderr,
            )
            assert line, result.stderr
            assert not list(store.folder.glob("*.partial-*"))
            finished = sorted(store.folder.glob("*.b2nd"))
            assert {"cardiac_000__rrw.b2nd", "cardiac_000__signed_distance.b2nd"} <= {file.name for file in finished}
            for file in finished:
                case, kind = file.stem.split("__")
                store.verify(case, kind, content=True)
    finally:
        shutil.rmtree(folder)


def test_second_setup_maps_on_a_dataset_waits_for_the_first(cardiac, tmp_path):
    config = load_configuration(cardiac.dataset_id, "3d_fullres", SMALL_PLANS)
    store = MapStore(config)
    env = cardiac.workspace.environment()
    args = ["-d", str(cardiac.dataset_id), "-c", "3d_fullres", "-p", SMALL_PLANS, "--quiet"]
    go = tmp_path / "go"
    held_writer = (  # the first run holds its first temporary file open until the test says go
        "import os, sys, time\n"
        "import blosc2\n"
        "create = blosc2.empty\n"
        "def held(*args, **kwargs):\n"
        "    stored = create(*args, **kwargs)\n"
        f"    while not os.path.exists({str(go)!r}):\n"
        "        time.sleep(0.02)\n"
        "    return stored\n"
        "blosc2.empty = held\n"
        "from nnunet_losses.nnunet.setup_maps import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    first = subprocess.Popen([sys.executable, "-c", held_writer, *args, "--overwrite"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = cardiac.folder / "nnunet_losses_maps" / LOCK_FILE
    deadline = time.monotonic() + 120
    while not list(store.folder.glob(f"*.partial-{first.pid}.b2nd")):
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.poll() is not None else "timeout"
        time.sleep(0.02)
    [in_progress] = store.folder.glob(f"*.partial-{first.pid}.b2nd")
    assert lock.read_text() == str(first.pid)
    second = subprocess.Popen(["nnunet-losses", "setup-maps", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = second.stderr.readline()
    assert waiting == f"waiting for another setup_maps (pid {first.pid}) working on {cardiac.name} to finish (lock {lock}) ...\n"
    assert in_progress.is_file() and second.poll() is None  # the second run touched nothing of the first
    go.touch()
    first_out, first_err = first.communicate(timeout=120)
    second_out, second_err = second.communicate(timeout=120)
    assert (first.returncode, first_err) == (0, "")
    assert first_out.startswith("3d_fullres: 6 cases, 6 written, 0 already valid, ")
    assert (second.returncode, second_err) == (0, "")
    assert second_out.startswith("3d_fullres: 6 cases, 0 written, 6 already valid, ")
    assert not list(store.folder.glob("*.partial-*"))
    verify_everything(store)


def test_cleanup_keeps_temporary_files_of_live_writers(maps_2d):
    store = MapStore(maps_2d)
    live = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        kept = store.folder / f"cardiac_000__rrw.partial-{live.pid}.b2nd"
        removed = store.folder / f"cardiac_000__rrw.partial-{dead.pid}.b2nd"
        kept.write_bytes(b"in progress")
        removed.write_bytes(b"left by a killed run")
        assert store.remove_partial_files() == 1
        assert kept.is_file() and not removed.exists()
    finally:
        live.kill()
        live.wait()
        kept.unlink()


# --- 3: per-slice maps stay per slice ------------------------------------------------------------------


def test_per_slice_maps_are_kept_by_a_plain_run_and_named_in_the_fix(cardiac, maps_2d):
    store = MapStore(maps_2d)
    env = cardiac.workspace.environment()
    args = ["-d", str(cardiac.dataset_id), "-c", "2d", "-p", SMALL_PLANS]
    result = setup_maps(env, *args, "--per-slice")
    assert (result.returncode, result.stderr) == (0, f"note: the maps in {store.folder} were computed on the whole volume (--no-per-slice); rewriting them per slice (--per-slice)\n")
    assert result.stdout.startswith("2d: 6 cases, 6 written, 0 already valid, ")
    written = snapshot(store.folder)

    result = setup_maps(env, *args)  # the plain re-run that used to rewrite everything on the whole volume
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("2d: 6 cases, 0 written, 6 already valid, ")
    assert snapshot(store.folder) == written
    assert store.verify_all(maps_2d.case_identifiers(), KINDS, content=True) == {"rrw": True, "signed_distance": True}

    case = maps_2d.case_identifiers()[2]
    store.path(case, "signed_distance").unlink()
    with pytest.raises(MissingMapsError) as caught:
        store.verify(case, "signed_distance")
    assert str(caught.value) == (
        f"no 'signed_distance' map for case {case} ({store.path(case, 'signed_distance')}). "
        f"Run: nnunet-losses setup-maps -d {cardiac.name} -c 2d -p {SMALL_PLANS} --per-slice"
    )
    store.slicing_record.unlink()  # maps written before the record existed: their metadata decides
    result = setup_maps(env, *args)
    assert result.stdout.startswith("2d: 6 cases, 1 written, 5 already valid, ")
    assert store.verify(case, "signed_distance", content=True)["per_slice"] is True
    assert store.recorded_per_slice() is True


# --- 4: region-based datasets --------------------------------------------------------------------------


def test_region_based_dataset_is_refused_before_any_folder_is_created(cardiac):
    dataset_json = json.loads((cardiac.folder / "dataset.json").read_text())
    dataset_json["labels"] = {"background": 0, "heart": [1, 2, 3], "left_heart": [2, 3], "LV": 3}
    dataset_json["regions_class_order"] = [1, 2, 3]
    name, folder = copy_dataset(cardiac, REGIONS_ID, "Regions", dataset_json)
    try:
        before = sorted(p.name for p in folder.iterdir())
        result = setup_maps(cardiac.workspace.environment(), "-d", str(REGIONS_ID), "-c", "2d", "-p", SMALL_PLANS)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            f"error: {name} is region-based (dataset.json gives labels as lists of values, overlapping regions); "
            "nnunet-losses does not support region-based training: its maps and losses need one label per voxel. "
            "Train it with nnU-Net's own trainers, or re-create it with one value per label\n"
        )
        assert sorted(p.name for p in folder.iterdir()) == before
    finally:
        shutil.rmtree(folder)


# --- 6: a read-only folder of valid maps -----------------------------------------------------------------


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only: a read-only bind mount as root (root ignores permission bits), else modes."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        undo = [["umount", str(folder)]]
    else:
        paths = [folder, *folder.rglob("*")]
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        undo = [["chmod", "-R", "u+w", str(folder)]]
    try:
        yield
    finally:
        for command in undo:
            subprocess.run(command, check=True)


def test_read_only_folder_of_valid_maps_is_fine(cardiac, maps_2d):
    store = MapStore(maps_2d)
    before = snapshot(store.folder)
    with read_only(cardiac.folder / "nnunet_losses_maps"):
        with pytest.raises(OSError) as denied:
            (store.folder / "probe").write_text("")
        assert denied.value.errno in (errno.EROFS, errno.EACCES)
        result = setup_maps(cardiac.workspace.environment(), "-d", str(cardiac.dataset_id), "-c", "2d", "-p", SMALL_PLANS)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("2d: 6 cases, 0 written, 6 already valid, ")
    assert snapshot(store.folder) == before


# --- 5: study runs -------------------------------------------------------------------------------------


@contextmanager
def unwritable(folder: Path) -> Iterator[str]:
    """Make ``folder`` unwritable (immutable as root); yields the error text writing there gives."""
    folder.mkdir(parents=True)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder unwritable for root here (chattr unavailable)")
        undo, reason = ["chattr", "-i", str(folder)], os.strerror(errno.EPERM)
    else:
        folder.chmod(0o555)
        undo, reason = ["chmod", "755", str(folder)], os.strerror(errno.EACCES)
    try:
        yield reason
    finally:
        subprocess.run(undo, check=True)


def process_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def training_with_workers(paths: RunPaths, study: subprocess.Popen) -> tuple[int, list[int]]:
    """Wait until the run's training runs with its augmentation workers; returns (training pid, worker pids)."""
    deadline = time.monotonic() + 180
    while True:
        assert study.poll() is None and time.monotonic() < deadline, f"{paths.run_dir} never ran with augmentation workers"
        marker = read_json(paths.running_marker)
        if isinstance(marker, dict):
            leader = int(marker["pid"])
            workers = [pid for pid in process_group(leader) if pid != leader]
            if workers:
                return leader, workers
        time.sleep(0.2)


@dataclass(frozen=True)
class StudyAccidents:
    """One real study of three runs: seed 0's folder unwritable, seed 1's training SIGKILLed, the study SIGTERMed during seed 2."""

    paths: list[RunPaths]
    reason: str
    returncode: int
    stdout: str
    stderr: str
    killed: int
    killed_workers: list[int]
    stopped: int
    stopped_workers: list[int]


@pytest.fixture(scope="module")
def study_accidents(cardiac, tmp_path_factory) -> StudyAccidents:
    study_dir = tmp_path_factory.mktemp("accidents") / "study"
    spec = StudySpec("cdf", cardiac.name, "2d", SMALL_PLANS, ("nnUNetTrainerRRW",), (0, 1, 2), (0,), 1, 10000, 1)
    paths = [RunPaths.of(study_dir, spec, run) for run in spec.runs()]
    env = cardiac.workspace.environment()
    env.pop("nnUNet_n_proc_DA", None)  # the study gives each training cores - 1 = at least one augmentation worker
    argv = ["nnunet-losses", "study", "cdf", "-d", str(cardiac.dataset_id), "-c", "2d", "-p", SMALL_PLANS, "--trainers", "nnUNetTrainerRRW"]
    argv += ["--seeds", "3", "--epochs", "1", "--iterations", "10000", "--val-iterations", "1", "--device", "cpu", "--out", str(study_dir)]
    with unwritable(paths[0].run_dir) as reason:
        study = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            killed, killed_workers = training_with_workers(paths[1], study)
            os.kill(killed, signal.SIGKILL)
            stopped, stopped_workers = training_with_workers(paths[2], study)
            study.send_signal(signal.SIGTERM)
            stdout, stderr = study.communicate(timeout=120)
        finally:
            if study.poll() is None:
                study.kill()
                study.communicate()
    return StudyAccidents(paths, reason, study.returncode, stdout, stderr, killed, killed_workers, stopped, stopped_workers)


def test_unwritable_run_folder_is_reported_and_the_other_runs_go_on(study_accidents):
    blocked = study_accidents.paths[0]
    message = (
        f"cannot write to the run folder {blocked.run_dir} ({study_accidents.reason}); fix its permissions (or free the disk), "
        "then run the same study command again to run it"
    )
    assert f"FAILED  nnUNetTrainerRRW seed 0 fold 0: {message} (log: {blocked.log})\n" in study_accidents.stdout
    assert "Traceback" not in study_accidents.stdout + study_accidents.stderr
    assert list(blocked.run_dir.iterdir()) == []
    assert [paths.log.is_file() for paths in study_accidents.paths[1:]] == [True, True]  # the next runs started


def test_sigkilled_run_leaves_no_augmentation_workers(study_accidents):
    paths = study_accidents.paths[1]
    assert study_accidents.killed_workers  # nnU-Net's augmentation workers were running
    assert process_group(study_accidents.killed) == []
    assert [pid for pid in study_accidents.killed_workers if alive(pid)] == []
    failed = read_json(paths.failed_marker)
    assert failed["returncode"] == -signal.SIGKILL and failed["error"].endswith("(killed by SIGKILL)")
    assert f"FAILED  nnUNetTrainerRRW seed 1 fold 0: {failed['error']} (log: {paths.log})\n" in study_accidents.stdout
    assert not paths.running_marker.exists()


def test_sigterm_of_the_study_stops_the_whole_process_group(study_accidents):
    paths = study_accidents.paths[2]
    assert study_accidents.returncode == 130
    assert study_accidents.stderr.endswith(f"interrupted; the same command resumes the study (state: nnunet-losses study status {paths.run_dir.parents[2]})\n")
    assert study_accidents.stopped_workers
    assert process_group(study_accidents.stopped) == []
    assert [pid for pid in study_accidents.stopped_workers if alive(pid)] == []
    assert [attempt["interrupted"] for attempt in json.loads(paths.attempts.read_text())] == [True]
    assert not paths.running_marker.exists() and not paths.failed_marker.exists()
