"""Tests of the synthetic phantoms and of writing them as nnU-Net raw datasets."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_losses.synthetic import (
    DATASET_KINDS,
    cardiac_case,
    intima_media_case,
    lamina_case,
    write_raw_dataset,
)
from nnunet_losses.synthetic.raw_dataset import case_seed

GENERATORS = {"cardiac": cardiac_case, "intima_media": intima_media_case, "lamina": lamina_case}
SMALL = {  # small, anisotropic grids (every axis a different size and spacing)
    "cardiac": ((6, 48, 40), (7.0, 1.25, 1.5)),
    "intima_media": ((1, 48, 64), (1.0, 0.05, 0.07)),
    "lamina": ((20, 50, 26), (0.9, 1.1, 1.3)),
}
SEEDS = range(8)


def test_registry_matches_the_generators():
    assert set(DATASET_KINDS) == set(GENERATORS)
    for kind, spec in DATASET_KINDS.items():
        assert spec.generate is GENERATORS[kind]
        assert spec.labels["background"] == 0
        assert sorted(spec.labels.values()) == list(range(len(spec.labels)))


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_same_seed_same_case_different_seed_different_case(kind):
    generate = GENERATORS[kind]
    image_a, labels_a, spacing_a = generate(3)
    image_b, labels_b, spacing_b = generate(3)
    image_c, labels_c, _ = generate(4)
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    assert spacing_a == spacing_b
    assert not np.array_equal(image_a, image_c)
    assert not np.array_equal(labels_a, labels_c)


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_dtypes_shape_spacing_and_label_set(kind):
    shape, spacing = SMALL[kind]
    image, labels, returned_spacing = GENERATORS[kind](0, shape=shape, spacing=spacing)
    assert image.dtype == np.float32 and labels.dtype == np.uint8
    assert image.shape == labels.shape == shape
    assert returned_spacing == spacing and all(isinstance(s, float) for s in returned_spacing)
    assert np.all(np.isfinite(image)) and image.min() >= 0.0
    assert set(np.unique(labels)) == set(DATASET_KINDS[kind].labels.values())


@pytest.mark.parametrize("kind, shape", [("cardiac", (5, 20, 64)), ("intima_media", (2, 64, 64)),
                                         ("lamina", (20, 30, 26)), ("cardiac", (4, 32))])
def test_invalid_shapes_are_rejected(kind, shape):
    with pytest.raises(ValueError, match="shape"):
        GENERATORS[kind](0, shape=shape)


def test_cardiac_myocardium_encloses_the_lv_in_every_slice():
    neighbourhood = np.ones((3, 3), dtype=bool)
    checked = 0
    for seed in SEEDS:
        _, labels, _ = cardiac_case(seed)
        for plane in labels:
            lv = plane == 3
            if lv.any():
                ring = ndimage.binary_dilation(lv, neighbourhood) & ~lv
                assert np.all(plane[ring] == 2), f"seed {seed}: LV touches a class other than MYO"
                checked += 1
    assert checked >= 5 * len(SEEDS)


def test_cardiac_classes_present_at_the_base_and_absent_towards_the_apex():
    empty_slices = 0
    for seed in SEEDS:
        _, labels, _ = cardiac_case(seed)
        present = [set(np.unique(plane)) for plane in labels]
        assert present[0] == {0, 1, 2, 3}, f"seed {seed}: basal slice lacks a class"
        assert not present[-1] & {1, 3}, f"seed {seed}: last slice holds RV or LV"
        assert {0, 2, 3} in present, f"seed {seed}: no apical slice with LV/MYO only"
        first_without_rv = next(k for k, p in enumerate(present) if 1 not in p)
        assert all(1 not in p for p in present[first_without_rv:]), "RV must end before the apex"
        empty_slices += sum(p == {0} for p in present)
    assert empty_slices > 0


def test_cardiac_intensities_blood_bright_myocardium_dark_scale_varies():
    medians = []
    for seed in SEEDS:
        image, labels, _ = cardiac_case(seed)
        base_image, base_labels = image[0], labels[0]
        blood = base_image[base_labels == 3].mean()
        assert blood > 1.8 * base_image[base_labels == 2].mean()
        assert base_image[base_labels == 1].mean() > 1.8 * base_image[base_labels == 2].mean()
        medians.append(np.median(image))
    assert max(medians) > 2.0 * min(medians)


def test_intima_media_band_thickness_and_partial_annotation():
    for seed in SEEDS:
        image, labels, _ = intima_media_case(seed)
        band = labels[0] == 1
        columns = np.flatnonzero(band.any(axis=0))
        width = band.shape[1]
        assert 0 < columns[0] and columns[-1] < width - 1, "annotation must be a strict subset"
        assert np.array_equal(columns, np.arange(columns[0], columns[-1] + 1)), "columns not contiguous"
        for c in columns:
            rows = np.flatnonzero(band[:, c])
            assert 3 <= rows.size <= 6, f"seed {seed}, column {c}: thickness {rows.size}"
            assert rows[-1] - rows[0] + 1 == rows.size, f"seed {seed}, column {c}: band has a gap"


def test_intima_media_band_is_visible_beyond_the_annotation():
    for seed in SEEDS:
        image, labels, _ = intima_media_case(seed)
        plane, band = image[0], labels[0] == 1
        columns = np.flatnonzero(band.any(axis=0))
        for edge, outside in ((columns[0], range(columns[0] - 5, columns[0])),
                              (columns[-1], range(columns[-1] + 1, columns[-1] + 6))):
            top = int(np.flatnonzero(band[:, edge])[0])
            cols = [c for c in outside if 0 <= c < plane.shape[1]]
            lumen = plane[top - 8:top - 2, cols].mean()
            wall = plane[top:top + 8, cols].mean()
            assert wall > 2.0 * lumen, f"seed {seed}: no band beside column {edge}"


def _lamina_pairs(labels: np.ndarray) -> np.ndarray:
    """Centroids of the 26-connected laminae sorted along axis 1, shape (pairs, 2, 3)."""
    components, count = cc3d.connected_components(labels, connectivity=26, return_N=True)
    centroids = np.array(ndimage.center_of_mass(labels, components, range(1, count + 1)))
    assert count % 2 == 0, f"{count} laminae cannot form pairs"
    centroids = centroids[np.argsort(centroids[:, 1], kind="stable")].reshape(-1, 2, 3)
    return np.take_along_axis(centroids, np.argsort(centroids[:, :, 2], axis=1)[..., None], axis=1)


def test_lamina_components_are_pairs_symmetric_about_the_column():
    for seed in SEEDS:
        image, labels, _ = lamina_case(seed)
        pairs = _lamina_pairs(labels)
        assert 6 <= len(pairs) <= 10
        left, right = pairs[:, 0], pairs[:, 1]
        np.testing.assert_allclose(left[:, :2], right[:, :2], atol=0.5)  # same depth and level
        # The spinous-process column: the darkest line left-right above the laminae.
        top = int(np.flatnonzero(labels.any(axis=(1, 2)))[0])
        profile = ndimage.gaussian_filter1d(image[:top].mean(axis=0), 1.0, axis=1)
        levels = np.round((left[:, 1] + right[:, 1]) / 2).astype(int)
        column = np.argmin(profile[levels], axis=1)
        np.testing.assert_allclose(column - left[:, 2], right[:, 2] - column, atol=3.0)
        np.testing.assert_allclose((left[:, 2] + right[:, 2]) / 2, column, atol=1.5)
        assert np.all(right[:, 2] - left[:, 2] > 6.0)
        steps = np.diff(levels)
        assert steps.max() - steps.min() <= 2, f"seed {seed}: irregular spacing {steps}"
        depths = slice(top, int(np.flatnonzero(labels.any(axis=(1, 2)))[-1]) + 1)
        assert image[labels == 1].mean() > 1.3 * image[depths][labels[depths] == 0].mean()


@pytest.mark.parametrize("shape, pairs", [((24, 48, 24), 6), ((24, 132, 24), 10)])
def test_lamina_pair_count_follows_the_length(shape, pairs):
    for seed in SEEDS:
        assert len(_lamina_pairs(lamina_case(seed, shape=shape)[1])) == pairs


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_written_dataset_reads_back_with_spacing_and_labels(kind, tmp_path):
    shape, spacing = SMALL[kind]
    folder = write_raw_dataset(kind, tmp_path, 7, 2, seed=5, shape=shape, spacing=spacing)
    spec = DATASET_KINDS[kind]
    assert folder == tmp_path / f"Dataset007_{spec.default_name}"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": spec.channel_name}
    assert meta["labels"] == dict(spec.labels)
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    for index in range(2):
        case = f"{spec.case_prefix}_{index:03d}"
        image = sitk.ReadImage(str(folder / "imagesTr" / f"{case}_0000.nii.gz"))
        labels = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
        expected_image, expected_labels, _ = spec.generate(case_seed(5, index), shape=shape, spacing=spacing)
        for written in (image, labels):
            assert written.GetSize() == shape[::-1]
            np.testing.assert_allclose(written.GetSpacing(), spacing[::-1])
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected_image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), expected_labels)
    assert not [p for p in folder.rglob(".*")], "temporary files left behind"


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_written_dataset_passes_nnunet_integrity_check(kind, tmp_path, capfd):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    shape, spacing = SMALL[kind]
    folder = write_raw_dataset(kind, tmp_path, 11, 2, shape=shape, spacing=spacing)
    capfd.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)  # raises on a broken dataset
    report = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in report
    assert "Error" not in report and "Warning" not in report and "WARNING" not in report


def test_failed_write_leaves_no_partial_files(tmp_path, monkeypatch):
    def write_then_fail(image, path, useCompression=False):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_raw_dataset("cardiac", tmp_path, 5, 1)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    monkeypatch.undo()
    folder = write_raw_dataset("cardiac", tmp_path, 5, 1)  # empty leftovers do not block a retry
    assert (folder / "dataset.json").is_file()


def test_existing_dataset_is_reused_refused_or_overwritten(tmp_path):
    shape, spacing = SMALL["lamina"]
    folder = write_raw_dataset("lamina", tmp_path, 3, 2, shape=shape, spacing=spacing)
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*.nii.gz")}
    assert write_raw_dataset("lamina", tmp_path, 3, 2, shape=shape, spacing=spacing) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.nii.gz")} == stamps

    with pytest.raises(FileExistsError, match=folder.name):
        write_raw_dataset("lamina", tmp_path, 3, 1, shape=shape, spacing=spacing)
    with pytest.raises(FileExistsError, match=folder.name):
        write_raw_dataset("lamina", tmp_path, 3, 2, seed=1, shape=shape, spacing=spacing)
    (folder / "labelsTr" / "lamina_001.nii.gz").unlink()
    with pytest.raises(FileExistsError, match=folder.name):
        write_raw_dataset("lamina", tmp_path, 3, 2, shape=shape, spacing=spacing)

    write_raw_dataset("lamina", tmp_path, 3, 1, shape=shape, spacing=spacing, overwrite=True)
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 1
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["lamina_000_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["lamina_000.nii.gz"]

    with pytest.raises(FileExistsError, match=folder.name):  # same id, other name
        write_raw_dataset("lamina", tmp_path, 3, 1, dataset_name="Other", overwrite=True)


def test_invalid_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="cardiac, intima_media, lamina"):
        write_raw_dataset("brain", tmp_path, 1, 1)
    with pytest.raises(ValueError, match="num_cases"):
        write_raw_dataset("cardiac", tmp_path, 1, 0)
    with pytest.raises(ValueError, match="dataset_name"):
        write_raw_dataset("cardiac", tmp_path, 1, 1, dataset_name="two words")
    assert not any(tmp_path.iterdir())


def test_synthetic_does_not_import_nnunet():
    code = ("import sys, nnunet_losses.synthetic; "
            "sys.exit(any(m.split('.')[0] == 'nnunetv2' for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
