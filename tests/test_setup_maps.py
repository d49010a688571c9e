"""setup_maps.py on real nnU-Net preprocessed data: content, coexistence with nnU-Net, resume, staleness, bad input."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_pickle

from nnunet_losses.maps import rrw_compact, signed_distance_map
from nnunet_losses.nnunet import map_store as map_store_module
from nnunet_losses.nnunet.configuration import ConfigurationError, load_configuration
from nnunet_losses.nnunet.map_store import ENCODINGS, CorruptMapsError, MapStore, MissingMapsError, StaleMapsError
from nnunet_losses.nnunet.setup_maps import MapWriteError, write_configuration_maps
from nnunet_losses.synthetic import write_raw_dataset

from conftest import SMALL_PLANS, run_command

pytestmark = pytest.mark.nnunet
REPO = Path(__file__).resolve().parents[1]


def setup_maps_cli(python: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_command([python, str(REPO / "setup_maps.py"), *args, "--quiet"], env, check=False)


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_maps_exist_and_equal_the_library_maps(cardiac, configuration):
    config = load_configuration(cardiac.dataset_id, configuration, SMALL_PLANS)
    store = MapStore(config)
    plans = json.loads((cardiac.folder / f"{SMALL_PLANS}.json").read_text())
    plan_spacing = plans["configurations"][configuration]["spacing"]
    for case in config.case_identifiers():
        seg = blosc2.open(str(config.data_folder / f"{case}_seg.b2nd"))[0]
        labels = np.where(seg < 0, 0, seg).astype(np.int64)
        properties = load_pickle(str(config.data_folder / f"{case}.pkl"))
        # 2d keeps each case's own slice distance; 3d resamples to the plans' spacing
        slice_axis = plans["transpose_forward"][0]
        spacing = plan_spacing if len(plan_spacing) == 3 else [properties["spacing"][slice_axis], *plan_spacing]
        for kind, expected in (("rrw", rrw_compact(labels, 4, spacing)), ("signed_distance", signed_distance_map(labels, 4, spacing))):
            encoding = ENCODINGS[kind]  # stored compactly: exactly the library map in its stored form
            np.testing.assert_array_equal(blosc2.open(str(store.path(case, kind)))[:], encoding.encode(expected))
            np.testing.assert_array_equal(store.read(case, kind), encoding.decode(encoding.encode(expected)))
        assert store.verify(case, "rrw")["spacing"] == pytest.approx(spacing)


def test_nnunet_sees_the_same_cases_and_still_loads(cardiac):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    raw_cases = sorted(p.name[: -len(".nii.gz")] for p in (cardiac.workspace.raw / cardiac.name / "labelsTr").glob("*.nii.gz"))
    for configuration in ("2d", "3d_fullres"):
        config = load_configuration(cardiac.dataset_id, configuration, SMALL_PLANS)
        dataset_class = infer_dataset_class(str(config.data_folder))  # asserts a single file ending
        assert sorted(dataset_class.get_identifiers(str(config.data_folder))) == raw_cases
        data, seg, _, properties = dataset_class(str(config.data_folder)).load_case(raw_cases[0])
        assert data.shape[1:] == seg.shape[1:] and "class_locations" in properties
        assert not any(MapStore(config).folder.parent.name in p.name for p in config.data_folder.iterdir())


def test_second_run_is_a_no_op(cardiac, python):
    summary = write_configuration_maps(load_configuration(cardiac.dataset_id, "2d", SMALL_PLANS), progress=False)
    assert (summary.cases, summary.written, summary.skipped) == (6, 0, 6)
    result = setup_maps_cli(python, cardiac.workspace.environment(), "-d", str(cardiac.dataset_id), "-c", "2d", "3d_fullres", "-p", SMALL_PLANS)
    assert result.returncode == 0
    assert result.stdout.count("0 written, 6 already valid") == 2


def test_console_command_matches_the_script(cardiac):
    result = run_command(["nnunet-losses", "setup-maps", "-d", str(cardiac.dataset_id), "-c", "2d", "-p", SMALL_PLANS, "--quiet"], cardiac.workspace.environment())
    assert "2d: 6 cases, 0 written, 6 already valid" in result.stdout


def test_killed_run_leaves_no_partial_file_and_resumes(cardiac, python):
    config = load_configuration(cardiac.dataset_id, "3d_fullres", SMALL_PLANS)
    store = MapStore(config)
    env = cardiac.workspace.environment()
    args = [python, str(REPO / "setup_maps.py"), "-d", str(cardiac.dataset_id), "-c", "3d_fullres", "-p", SMALL_PLANS, "--quiet"]
    for _ in range(10):  # kill while a map is being written; retry if the run was too quick to catch
        shutil.rmtree(store.folder)
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caught = False
        while process.poll() is None:
            names = os.listdir(store.folder) if store.folder.is_dir() else []
            if any(".partial-" in n for n in names) and any(n.endswith("__signed_distance.b2nd") for n in names):
                process.send_signal(signal.SIGKILL)
                caught = True
                break
        process.wait()
        if caught:
            break
    assert caught, "the run always finished before it could be interrupted"
    assert list(store.folder.glob("*.partial-*"))  # the killed write left its temporary file
    # maps are written rrw first, then signed_distance: a final signed_distance file means a finished case
    finished = [case for case in config.case_identifiers() if store.path(case, "signed_distance").is_file()]
    assert 1 <= len(finished) < 6
    for path in store.folder.glob("*.b2nd"):  # a file under its final name is always complete
        if ".partial-" not in path.name:
            case, kind = path.stem.split("__")
            store.verify(case, kind)
    summary = write_configuration_maps(config, progress=False)
    assert (summary.written, summary.skipped) == (6 - len(finished), len(finished))
    assert not list(store.folder.glob("*.partial-*"))
    store.verify_all(config.case_identifiers(), ("rrw", "signed_distance"))


@pytest.fixture(scope="module")
def restorable(cardiac):
    """The 2d configuration, whose maps a test may damage; rewritten afterwards."""
    config = load_configuration(cardiac.dataset_id, "2d", SMALL_PLANS)
    yield config
    write_configuration_maps(config, progress=False)


def test_corrupt_map_is_reported_and_rewritten(restorable):
    store = MapStore(restorable)
    case = restorable.case_identifiers()[0]
    path = store.path(case, "rrw")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptMapsError, match=f"rrw.*{case}.*damaged.*Run: nnunet-losses setup-maps -d {restorable.dataset_name} -c 2d -p {SMALL_PLANS}$"):
        store.verify(case, "rrw")
    summary = write_configuration_maps(restorable, progress=False)
    assert summary.written == 1
    store.verify(case, "rrw")


def test_missing_maps_error_names_the_command(restorable):
    store = MapStore(restorable)
    case = restorable.case_identifiers()[1]
    store.path(case, "signed_distance").unlink()
    with pytest.raises(MissingMapsError, match="no 'signed_distance' map for case .*Run: nnunet-losses setup-maps"):
        store.verify_all(restorable.case_identifiers(), ("rrw", "signed_distance"))
    properties = restorable.load_properties(case)
    with pytest.raises(MissingMapsError, match="Run: nnunet-losses setup-maps"):
        store.open(case, "signed_distance", (8, 64, 64), properties)
    write_configuration_maps(restorable, progress=False)


def test_metadata_mismatch_is_stale(restorable):
    store = MapStore(restorable)
    case = restorable.case_identifiers()[0]
    properties = restorable.load_properties(case)
    shape = tuple(blosc2.open(str(store.seg_file(case))).shape[1:])
    store.open(case, "rrw", shape, properties)
    with pytest.raises(StaleMapsError, match="shape"):
        store.open(case, "rrw", (shape[0], shape[1] + 1, shape[2]), properties)
    with pytest.raises(StaleMapsError, match="spacing"):
        store.open(case, "rrw", shape, {**properties, "spacing": [2.0 * s for s in properties["spacing"]]})


def test_disk_full_leaves_no_partial_file(restorable, monkeypatch):
    store = MapStore(restorable)
    real_empty = blosc2.empty

    def full_disk(shape, dtype=None, urlpath=None, **kwargs):
        real_empty((1, 1), dtype, urlpath=urlpath, mode="w")  # something was written before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    before = {p.name: p.stat().st_mtime_ns for p in store.folder.iterdir()}
    monkeypatch.setattr(map_store_module.blosc2, "empty", full_disk)
    with pytest.raises(MapWriteError, match="disk full .* Free some space; finished cases are kept and no partial file was left: run the same command again"):
        write_configuration_maps(restorable, overwrite=True, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in store.folder.iterdir()}
    assert after == before  # no partial file, and the existing maps are untouched


def test_unknown_dataset_configuration_and_plans(cardiac, python):
    env = cardiac.workspace.environment()
    result = setup_maps_cli(python, env, "-d", "999", "-c", "2d")
    assert (result.returncode, result.stdout) == (1, "")
    assert f"Available: ['{cardiac.name}'" in result.stderr and "nnUNetv2_plan_and_preprocess -d 999" in result.stderr
    result = setup_maps_cli(python, env, "-d", str(cardiac.dataset_id), "-c", "3d_lowres")
    assert "configuration '3d_lowres' is not in nnUNetPlans.json; available: ['2d', '3d_fullres']" in result.stderr
    result = setup_maps_cli(python, env, "-d", str(cardiac.dataset_id), "-c", "2d", "-p", "nnUNetResEncPlans")
    assert "plans 'nnUNetResEncPlans' not found" in result.stderr and "nnUNetSmallPlans" in result.stderr


def test_configuration_without_preprocessed_data(cardiac):
    plans = json.loads((cardiac.folder / f"{SMALL_PLANS}.json").read_text())
    plans["configurations"]["2d_unprocessed"] = {**plans["configurations"]["2d"], "data_identifier": "nnUNetSmallPlans_2d_unprocessed"}
    variant = cardiac.folder / "nnUNetUnprocessedPlans.json"
    variant.write_text(json.dumps(plans))
    try:
        with pytest.raises(ConfigurationError, match="no preprocessed data .* Run nnUNetv2_preprocess -d .* -c 2d_unprocessed"):
            load_configuration(cardiac.dataset_id, "2d_unprocessed", "nnUNetUnprocessedPlans")
    finally:
        variant.unlink()


# --- a small dataset of its own, re-preprocessed during the test -------------------------------------------------

STALE_ID = 202


@pytest.fixture(scope="module")
def small_dataset(workspace):
    folder = write_raw_dataset("cardiac", workspace.raw, STALE_ID, 3, seed=7, shape=(6, 48, 48))
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(STALE_ID), "-c", "2d", "-np", "1"], workspace.environment())
    config = load_configuration(STALE_ID, "2d")
    write_configuration_maps(config, progress=False)
    return folder, config


def test_repreprocessing_makes_changed_cases_stale(small_dataset, workspace):
    raw_folder, config = small_dataset
    cases = config.case_identifiers()
    label_file = raw_folder / "labelsTr" / f"{cases[0]}.nii.gz"
    image = sitk.ReadImage(str(label_file))
    labels = sitk.GetArrayFromImage(image)
    labels[labels == 1] = 0  # the annotator removed the right ventricle
    edited = sitk.GetImageFromArray(labels)
    edited.CopyInformation(image)
    sitk.WriteImage(edited, str(label_file))
    run_command(["nnUNetv2_preprocess", "-d", str(STALE_ID), "-c", "2d", "-np", "1"], workspace.environment())

    store = MapStore(config)
    with pytest.raises(StaleMapsError, match=f"case {cases[0]} is stale: the preprocessed segmentation changed.*Run: nnunet-losses setup-maps"):
        store.verify(cases[0], "rrw")
    store.verify(cases[1], "rrw")  # rewritten by nnU-Net with the same labels: still valid
    with pytest.raises(StaleMapsError, match="1 of 3 cases"):
        store.verify_all(cases, ("rrw", "signed_distance"))
    summary = write_configuration_maps(config, progress=False)
    assert (summary.written, summary.skipped) == (1, 2)
    store.verify_all(cases, ("rrw", "signed_distance"))


def test_read_only_folder_is_reported(small_dataset):
    _, config = small_dataset
    store = MapStore(config)
    shutil.rmtree(store.folder.parent)
    locked = config.dataset_folder
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here (chattr unavailable)")
        unlock = ["chattr", "-i", str(locked)]
    else:
        locked.chmod(0o555)
        unlock = ["chmod", "755", str(locked)]
    try:
        with pytest.raises(ConfigurationError, match="cannot write to .*nnunet_losses_maps"):
            write_configuration_maps(config, progress=False)
    finally:
        subprocess.run(unlock, check=True)
    assert write_configuration_maps(config, progress=False).written == 3


def test_map_chunks_hold_one_channel_and_blocks_stay_small(tmp_path):
    """Chunks of one channel (a channel is written without touching the others) sized as nnU-Net sizes its own;
    blocks of at most 64 KiB, one slice thick for a 2d patch (a 2d crop decodes no other slice)."""
    from nnunet_losses.nnunet.map_store import BLOCK_BYTES, chunking, comp_blosc2_params

    assert comp_blosc2_params((1, 64, 160, 160), (64, 128, 128), bytes_per_pixel=2, max_block_nbytes=BLOCK_BYTES) == ((1, 16, 64, 32), (1, 64, 160, 160))
    assert chunking((5, 64, 160, 160), (64, 128, 128), 2) == ((1, 64, 160, 160), (1, 16, 64, 32))
    assert chunking((5, 10, 256, 256), (256, 256), 2) == ((1, 1, 256, 256), (1, 1, 256, 128))
    values = np.random.default_rng(0).random((3, 64, 160, 160), dtype=np.float32) - 1.0
    store = ENCODINGS["rrw"]
    from nnunet_losses.nnunet.map_store import create_map_file

    stored, _ = create_map_file(tmp_path / "maps.b2nd", "rrw", iter(values), values.shape, (64, 128, 128))
    assert stored.chunks == (1, 64, 160, 160) and stored.blocks == (1, 16, 64, 64)
    np.testing.assert_array_equal(stored[:], store.encode(values))
