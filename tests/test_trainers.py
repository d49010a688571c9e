"""The package's trainers through nnU-Net's real commands (nnUNetv2_train / nnUNetv2_predict) on CPU."""
from __future__ import annotations

import json
import math
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_losses.nnunet.configuration import load_configuration
from nnunet_losses.nnunet.map_store import MapStore
from nnunet_losses.nnunet.preflight import package_trainer_names
from nnunet_losses.nnunet.setup_maps import write_configuration_maps
from nnunet_losses.synthetic import write_raw_dataset

from conftest import SMALL_PLANS, run_command

pytestmark = pytest.mark.nnunet
REPO = Path(__file__).resolve().parents[1]
THREE_D_TRAINERS = {"nnUNetTrainerCentroid"}


def output_folder(results: Path, dataset: str, trainer: str, configuration: str, fold: int = 0) -> Path:
    return results / dataset / f"{trainer}__{SMALL_PLANS}__{configuration}" / f"fold_{fold}"


def train(cardiac, trainer: str, configuration: str = "2d", *extra: str, env: dict | None = None, check: bool = True):
    env = env or cardiac.workspace.training_environment()
    args = ["nnUNetv2_train", str(cardiac.dataset_id), configuration, "0", "-p", SMALL_PLANS, "-tr", trainer, "-device", "cpu", *extra]
    return run_command(args, env, timeout=900, check=check)


def checkpoint(folder: Path, name: str = "checkpoint_final.pth") -> dict:
    return torch.load(folder / name, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def trained_all(cardiac):
    """Every package trainer, trained through nnUNetv2_train (1 epoch, 2 iterations), two at a time."""
    names = package_trainer_names()

    def run(name: str) -> tuple[str, str]:
        configuration = "3d_fullres" if name in THREE_D_TRAINERS else "2d"
        return name, configuration, train(cardiac, name, configuration)

    with ThreadPoolExecutor(2) as pool:
        return {name: (configuration, result) for name, configuration, result in pool.map(run, names)}


def test_every_trainer_trains_to_checkpoint_final(cardiac, trained_all):
    assert len(trained_all) >= 30
    for name, (configuration, _) in trained_all.items():
        folder = output_folder(cardiac.workspace.results, cardiac.name, name, configuration)
        assert (folder / "checkpoint_final.pth").is_file(), name
        assert (folder / "validation" / "summary.json").is_file(), name
        logging = checkpoint(folder)["logging"]
        terms = logging["loss_terms"][0]
        assert terms and all(math.isfinite(v) for v in terms.values()), (name, terms)
        assert set(logging["loss_weights"][0]) == set(terms), name
        assert (folder / "loss_terms.png").is_file(), name
        record = json.loads((folder / "nnunet_losses_run.json").read_text())["runs"][-1]
        assert record["trainer"] == name and record["num_epochs"] == 1


def test_training_log_shows_terms_and_weights(cardiac, trained_all):
    folder = output_folder(cardiac.workspace.results, cardiac.name, "nnUNetTrainerRRWDiceGradual", "2d")
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "loss weights: dice=1, rw=0" in log  # gradual: alpha = 1 at epoch 0
    assert "loss terms (train mean): dice=" in log
    record = json.loads((folder / "nnunet_losses_run.json").read_text())["runs"][-1]
    assert record["schedule"]["name"] == "gradual" and record["maps"] == ["rrw"] and record["map_mode"] == "precomputed"
    adam = json.loads((output_folder(cardiac.workspace.results, cardiac.name, "nnUNetTrainerRRWAdam", "2d") / "nnunet_losses_run.json").read_text())
    assert adam["runs"][-1]["optimizer"] == "adam" and adam["runs"][-1]["initial_lr"] == pytest.approx(1e-4)


def test_predict_with_a_package_trainer(cardiac, trained_all, tmp_path):
    images = cardiac.workspace.raw / cardiac.name / "imagesTr"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for image in sorted(images.glob("*.nii.gz"))[:2]:
        shutil.copy(image, inputs / image.name)
    for trainer in ("nnUNetTrainerRRW", "nnUNetTrainerTemporal"):
        out = tmp_path / trainer
        run_command(
            ["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", str(cardiac.dataset_id), "-c", "2d", "-f", "0",
             "-tr", trainer, "-p", SMALL_PLANS, "-device", "cpu", "-npp", "1", "-nps", "1"],
            cardiac.workspace.environment(),
        )
        predictions = sorted(out.glob("*.nii.gz"))
        assert len(predictions) == 2
        segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions[0])))
        assert segmentation.shape == (8, 64, 64) and set(np.unique(segmentation)) <= {0, 1, 2, 3}


def test_validation_only(cardiac, trained_all):
    folder = output_folder(cardiac.workspace.results, cardiac.name, "nnUNetTrainerRWBoundary", "2d")
    (folder / "validation" / "summary.json").unlink()
    train(cardiac, "nnUNetTrainerRWBoundary", "2d", "--val")
    assert (folder / "validation" / "summary.json").is_file()


def test_continue_training_resumes_the_schedule(cardiac):
    """--c restores the adaptive schedule: SoftAdapt's epoch-2 weights come from epochs 0 and 1."""
    trainer = "nnUNetTrainerDiceCESoftAdapt"
    train(cardiac, trainer, env=cardiac.workspace.training_environment(epochs=2))
    train(cardiac, trainer, "2d", "--c", env=cardiac.workspace.training_environment(epochs=3))
    logging = checkpoint(output_folder(cardiac.workspace.results, cardiac.name, trainer, "2d"))["logging"]
    terms, weights = logging["loss_terms"], logging["loss_weights"]
    assert len(terms) == len(weights) == 3
    assert weights[0] == weights[1] == {"dice": 1.0, "ce": 1.0}  # equal until two epochs are complete
    slopes = np.array([terms[1]["dice"] - terms[0]["dice"], terms[1]["ce"] - terms[0]["ce"]])
    expected = 2 * np.exp(0.1 * slopes) / np.exp(0.1 * slopes).sum()
    assert [weights[2]["dice"], weights[2]["ce"]] == pytest.approx(expected.tolist(), rel=1e-6)
    assert weights[2] != {"dice": 1.0, "ce": 1.0}


def test_refuses_to_start_without_maps(cardiac):
    config = load_configuration(cardiac.dataset_id, "3d_fullres", SMALL_PLANS)
    store = MapStore(config)
    case = config.case_identifiers()[0]
    store.path(case, "rrw").unlink()
    try:
        result = train(cardiac, "nnUNetTrainerRRW", "3d_fullres", check=False)
    finally:
        write_configuration_maps(config, progress=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "nnUNetTrainerRRW needs the maps ['rrw']" in output
    assert f"Run: python setup_maps.py -d {cardiac.name} -c 3d_fullres -p {SMALL_PLANS}" in output
    assert "Epoch 0" not in output


def test_trainers_with_deep_supervision_off_and_on_the_fly_3d(cardiac, tmp_path):
    extra = tmp_path / "extra_trainers"
    extra.mkdir()
    (extra / "no_ds_trainers.py").write_text(textwrap.dedent('''
        from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
        from nnunet_losses.losses import RegionWiseLoss, SoftDiceLoss


        class nnUNetTrainerRRWBoundaryNoDS(nnUNetTrainerLosses):
            deep_supervision = False

            def loss_terms(self):
                return {"dice": SoftDiceLoss(), "rrw": RegionWiseLoss("rrw"), "rwb": RegionWiseLoss("rw_boundary")}
    '''))
    env = cardiac.workspace.training_environment()
    env["nnUNet_extTrainer"] = env["nnUNet_extTrainer"] + ":" + str(extra)
    train(cardiac, "nnUNetTrainerRRWBoundaryNoDS", "2d", env=env)
    folder = output_folder(cardiac.workspace.results, cardiac.name, "nnUNetTrainerRRWBoundaryNoDS", "2d")
    assert set(checkpoint(folder)["logging"]["loss_terms"][0]) == {"dice", "rrw", "rwb"}
    train(cardiac, "nnUNetTrainerRRWOnTheFly", "3d_fullres")
    assert (output_folder(cardiac.workspace.results, cardiac.name, "nnUNetTrainerRRWOnTheFly", "3d_fullres") / "checkpoint_final.pth").is_file()


def test_seed_makes_runs_repeatable(cardiac):
    trainer = "nnUNetTrainerRRWwCE"
    folder = output_folder(cardiac.workspace.results, cardiac.name, trainer, "2d")
    weights = []
    for seed in ("5", "5", "6"):
        train(cardiac, trainer, env=cardiac.workspace.training_environment(NNUNET_LOSSES_SEED=seed))
        weights.append(checkpoint(folder)["network_weights"])
        assert json.loads((folder / "nnunet_losses_run.json").read_text())["runs"][-1]["seed"] == int(seed)
    same = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    different = any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert same and different


def test_region_based_setup_fails_at_start(cardiac):
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from nnunet_losses.nnunet.preflight import find_trainer_class

    plans = load_json(str(cardiac.folder / f"{SMALL_PLANS}.json"))
    plans["continue_training"] = False
    dataset_json = load_json(str(cardiac.folder / "dataset.json"))
    dataset_json["labels"] = {"background": 0, "heart": [1, 2, 3], "left": [2, 3], "cavity": 3}
    dataset_json["regions_class_order"] = [1, 2, 3]
    trainer = find_trainer_class("nnUNetTrainerRRW")(plans, "2d", 0, dataset_json, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="does not support region-based training"):
        trainer.initialize()


IGNORE_ID = 203


def test_ignore_label_dataset_trains(workspace):
    folder = write_raw_dataset("cardiac", workspace.raw, IGNORE_ID, 5, seed=11, shape=(6, 48, 48))
    for label_file in (folder / "labelsTr").glob("*.nii.gz"):  # the annotator skipped the first two slices
        image = sitk.ReadImage(str(label_file))
        labels = sitk.GetArrayFromImage(image)
        labels[:2] = 4
        edited = sitk.GetImageFromArray(labels)
        edited.CopyInformation(image)
        sitk.WriteImage(edited, str(label_file))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    dataset_json["labels"]["ignore"] = 4
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(IGNORE_ID), "-c", "2d", "-np", "1"], workspace.environment())
    config = load_configuration(IGNORE_ID, "2d")
    assert config.ignore_label == 4 and config.num_classes == 4
    write_configuration_maps(config, progress=False)
    for trainer in ("nnUNetTrainerRRWDiceEqual", "nnUNetTrainerRRWOnTheFly"):
        run_command(["nnUNetv2_train", str(IGNORE_ID), "2d", "0", "-tr", trainer, "-device", "cpu"], workspace.training_environment())
        result = workspace.results / folder.name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
        terms = checkpoint(result)["logging"]["loss_terms"][0]
        assert all(math.isfinite(v) for v in terms.values())


def test_wheel_install_provides_the_trainers(cardiac, tmp_path, python):
    """A wheel installed into a fresh environment ships the trainers folder and trains from it.

    The fresh environment reaches the dependencies through a .pth line, which does not
    activate the editable install of the repository, so only the wheel's copy is importable.
    """
    import sysconfig

    wheels = tmp_path / "wheels"
    env = cardiac.workspace.environment()
    run_command([python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)], env)
    venv = tmp_path / "venv"
    run_command([python, "-m", "venv", "--without-pip", str(venv)], env)
    fresh_python = str(venv / "bin" / "python")
    fresh_site = Path(run_command([fresh_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env, cwd=tmp_path).stdout.strip())
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run_command([python, "-m", "pip", "install", "--no-deps", "--target", str(fresh_site), str(next(wheels.glob("*.whl")))], env)
    path = Path(run_command([fresh_python, "-c", "from nnunet_losses.cli import trainers_path; print(trainers_path())"], env, cwd=tmp_path).stdout.strip())
    assert path.is_relative_to(fresh_site) and (path / "losses_region_wise.py").is_file()
    training = cardiac.workspace.training_environment(nnUNet_extTrainer=str(path))
    result = run_command(
        [fresh_python, "-m", "nnunetv2.run.run_training", str(cardiac.dataset_id), "2d", "0", "-p", SMALL_PLANS, "-tr", "nnUNetTrainerGDL", "-device", "cpu"],
        training,
        timeout=900,
        cwd=tmp_path,
    )
    assert f"Using trainer 'nnUNetTrainerGDL' from: {path}" in result.stdout
    assert (output_folder(cardiac.workspace.results, cardiac.name, "nnUNetTrainerGDL", "2d") / "checkpoint_final.pth").is_file()
