"""Tests of the many-class CT-like phantom and of writing it as an nnU-Net raw dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_losses.synthetic.many_organs import many_organs_case, many_organs_labels, write_many_organs_dataset

SHAPE, SPACING = (16, 64, 56), (2.5, 1.0, 1.2)


@pytest.mark.parametrize("num_classes", [2, 5, 24])
def test_every_class_is_present_and_dtypes_shape_spacing(num_classes):
    image, labels, spacing = many_organs_case(7, num_classes, SHAPE, SPACING)
    assert image.dtype == np.float32 and labels.dtype == np.uint8
    assert image.shape == labels.shape == SHAPE and spacing == SPACING
    assert set(np.unique(labels)) == set(range(num_classes))
    assert image.min() >= -1024 and image.max() <= 3071
    assert np.median(image[labels > 0]) > 0 and np.median(image[:, 0, 0]) < -900  # structures are tissue, the corners air


def test_same_seed_same_case_different_seed_different_case():
    a, b, c = (many_organs_case(seed, 8, SHAPE, SPACING) for seed in (3, 3, 4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_sizes_vary_within_a_case():
    _, labels, _ = many_organs_case(0, 32, (32, 96, 96), SPACING)
    counts = np.bincount(labels.ravel(), minlength=32)[1:]
    assert counts.max() > 10 * counts.min()


@pytest.mark.parametrize("num_classes", [1, 257, 2.0, True])
def test_bad_class_counts_are_refused(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        many_organs_case(0, num_classes, SHAPE, SPACING)


def test_written_dataset_is_an_nnunet_raw_dataset(tmp_path):
    folder = write_many_organs_dataset(tmp_path, 993, 2, 6, seed=1, shape=SHAPE, spacing=SPACING)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == many_organs_labels(6) and dataset["channel_names"] == {"0": "CT"}
    assert dataset["numTraining"] == 2
    label = sitk.ReadImage(str(folder / "labelsTr" / "organs_001.nii.gz"))
    assert label.GetSpacing() == pytest.approx(tuple(reversed(SPACING)))
    assert sitk.GetArrayFromImage(label).shape == SHAPE
    assert write_many_organs_dataset(tmp_path, 993, 2, 6, seed=1, shape=SHAPE, spacing=SPACING) == folder  # kept as it is
    with pytest.raises(FileExistsError):
        write_many_organs_dataset(tmp_path, 993, 2, 7, seed=1, shape=SHAPE, spacing=SPACING)
