"""The package's trainers through nnU-Net's real commands (nnUNetv2_train / nnUNetv2_predict) on CPU.

All nnU-Net runs of this module are launched once, three at a time, by the ``jobs``
fixture (each with its own nnUNet_results folder); the tests then check what each
job produced. A failed job fails only the tests that look at it.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import sysconfig
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_losses.nnunet.configuration import ConfigurationError, load_configuration
from nnunet_losses.nnunet.map_store import MapStore
from nnunet_losses.nnunet.preflight import find_trainer_class, package_trainer_names
from nnunet_losses.nnunet.run_settings import RunSettings
from nnunet_losses.nnunet.setup_maps import write_configuration_maps
from nnunet_losses.synthetic import write_raw_dataset

from conftest import SMALL_PLANS, announce, run_command

pytestmark = pytest.mark.nnunet
REPO = Path(__file__).resolve().parents[1]
THREE_D_TRAINERS = {"nnUNetTrainerCentroid"}
IGNORE_ID = 203


class Job:
    """One chain of nnU-Net commands with its own results folder."""

    def __init__(self, cardiac, name: str) -> None:
        self.cardiac = cardiac
        self.results = cardiac.workspace.root / "trainer_jobs" / name
        self.outputs: list[str] = []

    def env(self, epochs: int = 1, **extra: str) -> dict[str, str]:
        return self.cardiac.workspace.training_environment(epochs=epochs, nnUNet_results=str(self.results), **extra)

    def train(self, trainer: str, configuration: str = "2d", *extra: str, env: dict | None = None, check: bool = True):
        args = ["nnUNetv2_train", str(self.cardiac.dataset_id), configuration, "0", "-p", SMALL_PLANS, "-tr", trainer, "-device", "cpu", *extra]
        result = run_command(args, env or self.env(), timeout=900, check=check)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def folder(self, trainer: str, configuration: str = "2d", dataset: str | None = None, plans: str = SMALL_PLANS) -> Path:
        return self.results / (dataset or self.cardiac.name) / f"{trainer}__{plans}__{configuration}" / "fold_0"


def checkpoint(folder: Path) -> dict:
    return torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)


# --- the jobs ---------------------------------------------------------------------------------------------------


def train_package_trainer(job: Job, trainer: str) -> None:
    job.train(trainer, "3d_fullres" if trainer in THREE_D_TRAINERS else "2d", env=job.env(NNUNET_LOSSES_SEED="5"))
    if trainer == "nnUNetTrainerRRW":
        predict(job, trainer)
    if trainer == "nnUNetTrainerRWBoundary":
        (job.folder(trainer) / "validation" / "summary.json").unlink()
        job.train(trainer, "2d", "--val")


def predict(job: Job, trainer: str) -> None:
    inputs = job.results / "predict_in"
    inputs.mkdir()
    for image in sorted((job.cardiac.workspace.raw / job.cardiac.name / "imagesTr").glob("*.nii.gz"))[:2]:
        shutil.copy(image, inputs / image.name)
    run_command(
        ["nnUNetv2_predict", "-i", str(inputs), "-o", str(job.results / "predict_out"), "-d", str(job.cardiac.dataset_id), "-c", "2d",
         "-f", "0", "-tr", trainer, "-p", SMALL_PLANS, "-device", "cpu", "-npp", "1", "-nps", "1"],
        job.env(),
    )


def repeat_seeds(job: Job) -> None:
    for seed in ("5", "6"):
        job.train("nnUNetTrainerRRWwCE", env=job.env(NNUNET_LOSSES_SEED=seed))
        shutil.copytree(job.folder("nnUNetTrainerRRWwCE"), job.results / f"seed_{seed}")


def continue_training(job: Job) -> None:
    """A seeded run of a trainer with a nested schedule state, logged to wandb (offline) as nnU-Net does, then --c."""
    wandb = {"NNUNET_LOSSES_SEED": "3", "nnUNet_wandb_enabled": "1", "nnUNet_wandb_mode": "offline", "WANDB_SILENT": "true"}
    job.train("nnUNetTrainerDiceCESoftAdapt", env=job.env(epochs=2, **wandb))
    job.train("nnUNetTrainerDiceCESoftAdapt", "2d", "--c", env=job.env(epochs=3, **wandb))


def without_maps(job: Job) -> None:
    config = load_configuration(job.cardiac.dataset_id, "3d_fullres", SMALL_PLANS)
    MapStore(config).path(config.case_identifiers()[0], "rrw").unlink()
    try:
        job.train("nnUNetTrainerRRW", "3d_fullres", check=False)
    finally:
        write_configuration_maps(config, progress=False)


def no_deep_supervision_and_3d_on_the_fly(job: Job) -> None:
    extra = job.results / "extra_trainers"
    extra.mkdir(parents=True)
    (extra / "no_ds_trainers.py").write_text(textwrap.dedent('''
        from nnunet_losses.nnunet.trainer import nnUNetTrainerLosses
        from nnunet_losses.losses import RegionWiseLoss, SoftDiceLoss


        class nnUNetTrainerRRWBoundaryNoDS(nnUNetTrainerLosses):
            deep_supervision = False

            def loss_terms(self):
                return {"dice": SoftDiceLoss(), "rrw": RegionWiseLoss("rrw"), "rwb": RegionWiseLoss("rw_boundary")}
    '''))
    env = job.env()
    env["nnUNet_extTrainer"] += ":" + str(extra)
    job.train("nnUNetTrainerRRWBoundaryNoDS", env=env)
    job.train("nnUNetTrainerRRWOnTheFly", "3d_fullres")


COMPILED = "nnUNetTrainerRRWDiceGradualCompiledLoss"
COMPILED_MODULE = '''
import json
from pathlib import Path

import torch._dynamo.utils

from nnunet_losses.trainers.losses_region_wise import nnUNetTrainerRRWDiceGradual


class nnUNetTrainerRRWDiceGradualCompiledLoss(nnUNetTrainerRRWDiceGradual):
    """nnU-Net's compile rule forced on while the loss is built; the network stays eager (nnU-Net compiles nothing on a CPU)."""

    def _build_loss(self):
        self.compile_rule_forced = True
        try:
            return super()._build_loss()
        finally:
            self.compile_rule_forced = False

    def _do_i_compile(self):
        return getattr(self, "compile_rule_forced", False)

    def on_train_end(self):
        super().on_train_end()
        frames = dict(torch._dynamo.utils.counters["frames"])
        (Path(self.output_folder) / "dynamo_frames.json").write_text(json.dumps(frames))
'''


def compiled_loss(job: Job) -> None:
    """The seeded run of nnUNetTrainerRRWDiceGradual again, with nnU-Net's compile rule forced on."""
    extra = job.results / "extra_trainers"
    extra.mkdir(parents=True)
    (extra / "compiled_trainers.py").write_text(COMPILED_MODULE)
    env = job.env(NNUNET_LOSSES_SEED="5")
    env["nnUNet_extTrainer"] += ":" + str(extra)
    job.train(COMPILED, env=env)


def ignore_label_dataset(job: Job) -> None:
    workspace = job.cardiac.workspace
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
        run_command(["nnUNetv2_train", str(IGNORE_ID), "2d", "0", "-tr", trainer, "-device", "cpu"], job.env())


def wheel_install(job: Job) -> None:
    """Build a wheel, install it into a fresh environment and train from its trainers folder.

    The fresh environment reaches the dependencies through a .pth line, which does not
    activate the editable install of the repository, so only the wheel's copy is importable.
    """
    python = sys.executable
    env = job.env()
    root = job.results / "wheel"
    root.mkdir(parents=True)
    run_command([python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(REPO)], env)
    run_command([python, "-m", "venv", "--without-pip", str(root / "venv")], env)
    fresh = str(root / "venv" / "bin" / "python")
    site = Path(run_command([fresh, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env, cwd=root).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run_command([python, "-m", "pip", "install", "--no-deps", "--target", str(site), str(next((root / "dist").glob("*.whl")))], env)
    path = run_command([fresh, "-c", "from nnunet_losses.cli import trainers_path; print(trainers_path())"], env, cwd=root).stdout.strip()
    (root / "trainers_path.txt").write_text(path)
    result = run_command(
        [fresh, "-m", "nnunetv2.run.run_training", str(job.cardiac.dataset_id), "2d", "0", "-p", SMALL_PLANS, "-tr", "nnUNetTrainerGDL", "-device", "cpu"],
        job.env(nnUNet_extTrainer=path),
        timeout=900,
        cwd=root,
    )
    job.outputs.append(result.stdout)


PROTOCOL_SUFFIX = "Adam1e3"
COMBINATIONS_TRAINED = ("nnUNetTrainerRRWDiceGradual", "nnUNetTrainerRWBoundaryCEEqual")
"""The RW paper's Fig. 6 combinations trained below (nnUNetTrainerRRWDiceEqual is trained on the ignore-label dataset):
together they take every value of the three class attributes the eight combinations differ by, so the family's one
code path meets each map, regional loss and strategy (checked by test_untrained_combinations_differ_only_by_attributes_the_trained_ones_cover)."""
COMBINATIONS = [name for name in package_trainer_names() if name.startswith(("nnUNetTrainerRRW", "nnUNetTrainerRWBoundary"))
                and name.endswith(("Equal", "Gradual"))]
TRAINED = [name for name in package_trainer_names() if not name.endswith(PROTOCOL_SUFFIX)
           and (name not in COMBINATIONS or name in COMBINATIONS_TRAINED)] + ["nnUNetTrainerRRWDiceGradualAdam1e3"]
"""The trainers each trained for one epoch below. The convergence protocol's Adam 1e-3 twins differ from their
namesakes only by class attributes (optimiser, learning rate, schedule unit; checked by
test_cpu_protocol_trainers_train_with_adam_1e3_and_stretch_gradual_over_the_run): one of them stands for all;
the same holds for the combinations (:data:`COMBINATIONS_TRAINED`)."""


@pytest.fixture(scope="module")
def jobs(cardiac, request) -> dict[str, Job | BaseException]:
    """Run every job three at a time; each entry is the finished Job or the exception it raised."""
    work: dict[str, Callable[[Job], None]] = {
        name: (lambda job, name=name: train_package_trainer(job, name)) for name in TRAINED
    }
    work.update(
        seeds=repeat_seeds,
        resume=continue_training,
        missing_maps=without_maps,
        no_ds=no_deep_supervision_and_3d_on_the_fly,
        ignore=ignore_label_dataset,
        wheel=wheel_install,
        compiled=compiled_loss,
    )

    ended: list[str] = []
    ended_lock = threading.Lock()
    began = time.monotonic()

    def report(name: str, outcome: str) -> None:
        with ended_lock:
            ended.append(name)
            announce(request.config, f"[fixture jobs] {len(ended)}/{len(work)} {name} {outcome} ({time.monotonic() - began:.0f} s)")

    def run(item: tuple[str, Callable[[Job], None]]) -> tuple[str, Job | BaseException]:
        name, function = item
        job = Job(cardiac, name)
        try:
            function(job)
        except BaseException as error:  # reported by the tests that use this job
            report(name, f"FAILED: {type(error).__name__}")
            return name, error
        report(name, "done")
        return name, job

    announce(request.config, f"[fixture jobs] {len(work)} chains of nnU-Net commands (trainings, predictions, a wheel install), 3 at a time ...")

    # long chains first, so the pool drains evenly
    order = sorted(work.items(), key=lambda item: item[0] in TRAINED)
    with ThreadPoolExecutor(3) as pool:
        return dict(pool.map(run, order))


def finished(jobs: dict, name: str) -> Job:
    job = jobs[name]
    if isinstance(job, BaseException):
        raise job
    return job


# --- the tests ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trainer", TRAINED)
def test_trainer_trains_to_checkpoint_final(jobs, trainer):
    job = finished(jobs, trainer)
    folder = job.folder(trainer, "3d_fullres" if trainer in THREE_D_TRAINERS else "2d")
    assert (folder / "checkpoint_final.pth").is_file()
    assert (folder / "validation" / "summary.json").is_file()
    logging = checkpoint(folder)["logging"]
    terms = logging["loss_terms"][0]
    assert terms and all(math.isfinite(v) for v in terms.values()), terms
    assert set(logging["loss_weights"][0]) == set(terms)
    assert (folder / "loss_terms.png").is_file()
    record = json.loads((folder / "nnunet_losses_run.json").read_text())["runs"][-1]
    assert record["trainer"] == trainer and record["num_epochs"] == 1 and record["seed"] == 5


PINNED_EPOCH_0 = {
    # trainer: (epoch 0's loss terms, nnU-Net's train and val loss) of the seeded one-epoch run above (seed 5, 2 iterations),
    # as the trainer computed them before it was split into its loss, map transport, bookkeeping and logging parts. The
    # two trainers that read stored maps are pinned with map format 3 and the maps travelling as float16 (docs/maps.md,
    # "Stored format"); with the float32 maps of format 2 their terms were rw 0.12014861404895782 (RRW + Dice, relative
    # change 4.9e-5, within RRW's 1/510 + 2^-12 = 2.2e-3) and rw 1.493227779865265 (RW-Boundary, 8.6e-6, within 2^-10).
    # Carried as float32 after decoding, the RRW term was 0.12014241516590118 (2.3e-6 from the float16 value).
    "nnUNetTrainerRRWDiceGradual": ({"dice": 0.8318777978420258, "rw": 0.12014268711209297}, 0.8318778276443481, 0.8433590531349182),
    "nnUNetTrainerRRWOnTheFly": ({"rw": 0.11339494585990906}, 0.11339494585990906, 0.09662818163633347),
    "nnUNetTrainerRRWOnDevice": ({"rw": 0.11339494213461876}, 0.11339494585990906, 0.09662818163633347),
    "nnUNetTrainerRWBoundary": ({"rw": 1.4932405948638916}, 1.4932405948638916, -0.07784710824489594),
    "nnUNetTrainerDiceCE": ({"dice_ce": 1.2042160034179688}, 1.2042160034179688, 1.0150036811828613),
}


@pytest.mark.parametrize("trainer", sorted(PINNED_EPOCH_0))
def test_seeded_short_training_keeps_its_loss_values_and_record(jobs, trainer):
    """Precomputed, on-the-fly and device maps, a schedule, nnU-Net's own loss: the values of a seeded run stay
    (float32 summation order aside), and so do its sample seeds and record."""
    terms, train_loss, val_loss = PINNED_EPOCH_0[trainer]
    folder = finished(jobs, trainer).folder(trainer)
    logging = checkpoint(folder)["logging"]
    assert logging["loss_terms"][0] == pytest.approx(terms, rel=1e-6)
    assert (float(logging["train_losses"][0]), float(logging["val_losses"][0])) == pytest.approx((train_loss, val_loss), rel=1e-6)
    [record] = json.loads((folder / "nnunet_losses_run.json").read_text())["runs"]
    assert record["sample_seeds"] == {"main": 2634622467, "train_workers": [], "val_workers": []}
    assert (record["start_epoch"], record["resumed"], record["num_epochs"], record["num_iterations_per_epoch"]) == (0, False, 1, 2)


def test_package_has_every_trainer_of_the_issue():
    names = set(package_trainer_names())
    for expected in (
        "nnUNetTrainerRRW", "nnUNetTrainerRWBoundary", "nnUNetTrainerRRWAdam", "nnUNetTrainerRWBoundaryAdam",
        "nnUNetTrainerRRWDiceEqual", "nnUNetTrainerRRWDiceGradual", "nnUNetTrainerRRWCEEqual", "nnUNetTrainerRRWCEGradual",
        "nnUNetTrainerRWBoundaryDiceEqual", "nnUNetTrainerRWBoundaryDiceGradual", "nnUNetTrainerRWBoundaryCEEqual",
        "nnUNetTrainerRWBoundaryCEGradual", "nnUNetTrainerBoundaryDiceFixed", "nnUNetTrainerBoundaryDiceRamp",
        "nnUNetTrainerBoundaryDiceRebalance", "nnUNetTrainerBoundaryDiceSteal", "nnUNetTrainerTemporal", "nnUNetTrainerGDL",
        "nnUNetTrainerCDL", "nnUNetTrainerCentroid", "nnUNetTrainerOneSidedHD", "nnUNetTrainerRRWwCE", "nnUNetTrainerFocal",
        "nnUNetTrainerTversky", "nnUNetTrainerFocalTversky", "nnUNetTrainerDiceCESoftAdapt", "nnUNetTrainerDiceCECoV",
    ):
        assert expected in names


def test_training_log_shows_terms_and_weights(jobs):
    job = finished(jobs, "nnUNetTrainerRRWDiceGradual")
    folder = job.folder("nnUNetTrainerRRWDiceGradual")
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "loss weights: dice=1, rw=0" in log  # gradual: alpha = 1 at epoch 0
    assert "loss terms (train mean): dice=" in log
    record = json.loads((folder / "nnunet_losses_run.json").read_text())["runs"][-1]
    assert record["schedule"]["name"] == "gradual" and record["maps"] == ["rrw"] and record["map_mode"] == "precomputed"
    adam_job = finished(jobs, "nnUNetTrainerRRWAdam")
    adam = json.loads((adam_job.folder("nnUNetTrainerRRWAdam") / "nnunet_losses_run.json").read_text())["runs"][-1]
    assert adam["optimizer"] == "adam" and adam["initial_lr"] == pytest.approx(1e-4)


def test_predict_with_a_package_trainer(jobs):
    job = finished(jobs, "nnUNetTrainerRRW")
    predictions = sorted((job.results / "predict_out").glob("*.nii.gz"))
    assert len(predictions) == 2
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions[0])))
    assert segmentation.shape == (8, 64, 64) and set(np.unique(segmentation)) <= {0, 1, 2, 3}


def test_validation_only(jobs):
    job = finished(jobs, "nnUNetTrainerRWBoundary")
    assert (job.folder("nnUNetTrainerRWBoundary") / "validation" / "summary.json").is_file()
    assert "Mean Validation Dice" in job.outputs[-1]


def test_continue_training_resumes_the_schedule(jobs):
    """--c restores the adaptive schedule: SoftAdapt's epoch-2 weights come from epochs 0 and 1."""
    job = finished(jobs, "resume")
    logging = checkpoint(job.folder("nnUNetTrainerDiceCESoftAdapt"))["logging"]
    terms, weights = logging["loss_terms"], logging["loss_weights"]
    assert len(terms) == len(weights) == 3
    assert weights[0] == weights[1] == {"dice": 1.0, "ce": 1.0}  # equal until two epochs are complete
    slopes = np.array([terms[1]["dice"] - terms[0]["dice"], terms[1]["ce"] - terms[0]["ce"]])
    expected = 2 * np.exp(0.1 * slopes) / np.exp(0.1 * slopes).sum()
    assert [weights[2]["dice"], weights[2]["ce"]] == pytest.approx(expected.tolist(), rel=1e-6)
    assert weights[2] != {"dice": 1.0, "ce": 1.0}
    assert "loss schedule restored at the end of epoch 1" in job.outputs[-1]


def test_continue_training_continues_the_sample_stream(jobs):
    """--c does not replay epoch 0's samples: the resumed run's seeds are keyed by its start epoch, and recorded."""
    job = finished(jobs, "resume")
    runs = json.loads((job.folder("nnUNetTrainerDiceCESoftAdapt") / "nnunet_losses_run.json").read_text())["runs"]
    assert [(r["start_epoch"], r["resumed"], r["seed"]) for r in runs] == [(0, False, 3), (2, True, 3)]
    first, resumed = runs[0]["sample_seeds"], runs[1]["sample_seeds"]
    assert first["main"] != resumed["main"]
    assert first == RunSettings(3, None, None, None).sample_seeds(0, 0, 0, 0)
    assert resumed == RunSettings(3, None, None, None).sample_seeds(0, 2, 0, 0)


def test_wandb_gets_scalars_and_no_schedule_state(jobs):
    """With nnUNet_wandb_enabled, nnU-Net forwards what the trainer logs to wandb: one scalar per loss term and
    weight; the nested schedule state stays in the checkpoint. The keys are read from wandb's offline run files."""
    job = finished(jobs, "resume")
    runs = sorted((job.folder("nnUNetTrainerDiceCESoftAdapt") / "wandb").glob("offline-run-*/*.wandb"))
    assert len(runs) >= 1
    recorded = b"".join(run.read_bytes() for run in runs)
    for key in ("loss_terms/dice", "loss_terms/ce", "loss_weights/dice", "loss_weights/ce", "train_losses"):
        assert key.encode() in recorded
    assert b"loss_schedule_state" not in recorded
    assert checkpoint(job.folder("nnUNetTrainerDiceCESoftAdapt"))["logging"]["loss_schedule_state"][2] is not None


def test_refuses_to_start_without_maps(jobs, cardiac):
    output = finished(jobs, "missing_maps").outputs[-1]
    assert "nnUNetTrainerRRW needs the maps ['rrw']" in output
    fix = f"Run: nnunet-losses setup-maps -d {cardiac.name} -c 3d_fullres -p {SMALL_PLANS}"
    assert fix in output
    assert "Epoch 0" not in output
    logs = list(finished(jobs, "missing_maps").folder("nnUNetTrainerRRW", "3d_fullres").glob("training_log_*.txt"))
    assert len(logs) == 1 and fix in logs[0].read_text()  # the refusal is in nnU-Net's training log too


def test_deep_supervision_off_and_on_the_fly_3d(jobs):
    job = finished(jobs, "no_ds")
    assert set(checkpoint(job.folder("nnUNetTrainerRRWBoundaryNoDS"))["logging"]["loss_terms"][0]) == {"dice", "rrw", "rwb"}
    assert (job.folder("nnUNetTrainerRRWOnTheFly", "3d_fullres") / "checkpoint_final.pth").is_file()


def test_seed_makes_runs_repeatable(jobs):
    job = finished(jobs, "seeds")
    first = checkpoint(finished(jobs, "nnUNetTrainerRRWwCE").folder("nnUNetTrainerRRWwCE"))["network_weights"]
    again = checkpoint(job.results / "seed_5")["network_weights"]
    other = checkpoint(job.results / "seed_6")["network_weights"]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_compiled_loss_trains_to_the_eager_values(jobs):
    """Where nnU-Net compiles (its rule forced on), the loss terms are compiled and epoch 0 logs the eager values."""
    job = finished(jobs, "compiled")
    folder = job.folder(COMPILED)
    assert "Using torch.compile for the loss terms ['dice', 'rw']" in job.outputs[-1]
    assert json.loads((folder / "dynamo_frames.json").read_text())["ok"] >= 2  # both terms ran compiled
    compiled = checkpoint(folder)["logging"]
    eager = checkpoint(finished(jobs, "nnUNetTrainerRRWDiceGradual").folder("nnUNetTrainerRRWDiceGradual"))["logging"]
    assert compiled["loss_terms"][0] == pytest.approx(eager["loss_terms"][0], rel=1e-5)
    assert compiled["train_losses"][0] == pytest.approx(eager["train_losses"][0], rel=1e-5)
    assert compiled["val_losses"][0] == pytest.approx(eager["val_losses"][0], rel=1e-5)


def test_ignore_label_dataset_trains(jobs):
    job = finished(jobs, "ignore")
    name = next(p.name for p in job.results.iterdir() if p.name.startswith(f"Dataset{IGNORE_ID}"))
    for trainer in ("nnUNetTrainerRRWDiceEqual", "nnUNetTrainerRRWOnTheFly"):
        terms = checkpoint(job.folder(trainer, dataset=name, plans="nnUNetPlans"))["logging"]["loss_terms"][0]
        assert all(math.isfinite(v) for v in terms.values())


def test_wheel_install_provides_the_trainers(jobs):
    job = finished(jobs, "wheel")
    path = Path((job.results / "wheel" / "trainers_path.txt").read_text())
    assert path.is_relative_to(job.results / "wheel" / "venv") and (path / "losses_region_wise.py").is_file()
    assert f"Using trainer 'nnUNetTrainerGDL' from: {path}" in job.outputs[-1]
    assert (job.folder("nnUNetTrainerGDL") / "checkpoint_final.pth").is_file()


def test_region_based_setup_fails_at_start(cardiac):
    from batchgenerators.utilities.file_and_folder_operations import load_json

    plans = load_json(str(cardiac.folder / f"{SMALL_PLANS}.json"))
    plans["continue_training"] = False
    dataset_json = load_json(str(cardiac.folder / "dataset.json"))
    dataset_json["labels"] = {"background": 0, "heart": [1, 2, 3], "left": [2, 3], "cavity": 3}
    dataset_json["regions_class_order"] = [1, 2, 3]
    trainer = find_trainer_class("nnUNetTrainerRRW")(plans, "2d", 0, dataset_json, torch.device("cpu"))
    with pytest.raises(ConfigurationError, match="does not support region-based training"):
        trainer.initialize()


def test_dice_ce_control_computes_nnunets_own_loss_exactly(cardiac):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as NnUNetDefault

    plans = load_json(str(cardiac.folder / f"{SMALL_PLANS}.json"))
    dataset_json = load_json(str(cardiac.folder / "dataset.json"))
    reference = NnUNetDefault({**plans, "continue_training": False}, "2d", 0, dataset_json, torch.device("cpu"))  # nnU-Net pops the key
    control = find_trainer_class("nnUNetTrainerDiceCE")({**plans, "continue_training": False}, "2d", 0, dataset_json, torch.device("cpu"))
    ours, theirs = control._build_loss(), reference._build_loss()
    patch = reference.configuration_manager.patch_size
    shapes = [[round(p * s) for p, s in zip(patch, scale)] for scale in reference._get_deep_supervision_scales()]
    generator = torch.Generator().manual_seed(0)
    output = [torch.randn(2, 4, *shape, generator=generator, requires_grad=True) for shape in shapes]
    target = [torch.randint(0, 4, (2, 1, *shape), generator=generator).float() for shape in shapes]
    expected, value = theirs(output, target), ours(output, target)
    assert len(shapes) > 1 and torch.equal(value, expected)
    assert torch.equal(ours.last_values["dice_ce"], expected.detach())
    assert ours.loss.weights == {"dice_ce": 1.0}
    assert find_trainer_class("nnUNetTrainerDiceCEAdam").optimizer_name == "adam"


def test_untrained_combinations_differ_only_by_attributes_the_trained_ones_cover():
    family = find_trainer_class("nnUNetTrainerRRWDiceEqual").__mro__[1]
    attributes = ("rw_map", "regional", "strategy")
    assert len(COMBINATIONS) == 8 and all(issubclass(find_trainer_class(name), family) for name in COMBINATIONS)
    for name in COMBINATIONS:
        own = {key for key in vars(find_trainer_class(name)) if not key.startswith("__")}
        assert own <= set(attributes), (name, own)  # no method of its own: the family's loss_terms and loss_weights
    values = lambda names: {attribute: {getattr(find_trainer_class(n), attribute) for n in names} for attribute in attributes}
    trained = values([*COMBINATIONS_TRAINED, "nnUNetTrainerRRWDiceEqual"])  # the last: the ignore-label job
    assert values(COMBINATIONS) == trained
    assert trained["rw_map"] == {"rrw", "rw_boundary"} and trained["regional"] == {"dice", "ce"} and len(trained["strategy"]) == 2


def test_cpu_protocol_trainers_train_with_adam_1e3_and_stretch_gradual_over_the_run(cardiac, monkeypatch):
    from batchgenerators.utilities.file_and_folder_operations import load_json

    monkeypatch.setenv("NNUNET_LOSSES_EPOCHS", "40")
    plans = load_json(str(cardiac.folder / f"{SMALL_PLANS}.json"))
    dataset_json = load_json(str(cardiac.folder / "dataset.json"))
    trainer = find_trainer_class("nnUNetTrainerRRWDiceGradualAdam1e3")({**plans, "continue_training": False}, "2d", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    assert type(trainer.optimizer) is torch.optim.Adam and trainer.optimizer.param_groups[0]["initial_lr"] == 1e-3
    assert trainer.num_epochs == 40 and trainer.schedule.unit == "fraction"
    weights = {}
    for epoch in (0, 20, 39):
        trainer.schedule.begin_epoch(epoch)
        weights[epoch] = trainer.schedule.weights
    assert weights[0] == {"dice": 1.0, "rw": 0.0}
    assert weights[20] == pytest.approx({"dice": 0.5, "rw": 0.5}, abs=1e-12)  # alpha = 1 - 20/40
    assert weights[39] == pytest.approx({"dice": 0.025, "rw": 0.975}, abs=1e-12)
    control = find_trainer_class("nnUNetTrainerDiceCEAdam1e3")
    assert issubclass(control, find_trainer_class("nnUNetTrainerDiceCE")) and control.adam_learning_rate == 1e-3
