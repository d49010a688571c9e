"""Per-case metrics of a run's validation predictions against nnU-Net's ground truth.

Predictions: ``fold_X/validation/<case><file_ending>``, written by nnU-Net's final
validation in the original image geometry. Ground truth:
``nnUNet_preprocessed/<Dataset>/gt_segmentations/<case><file_ending>``. Both are read
with SimpleITK; the spacing comes from the ground truth's header, reversed from
SimpleITK's (x, y, z) to numpy's axis order (z, y, x). Voxels carrying the ignore label
in the ground truth are set to background in both arrays, which leaves them out of
every count.

Per foreground class ``c`` (masks ``pred == c``, ``gt == c``), with
:mod:`nnunet_losses.metrics`: ``dice_<c>`` (``2|P∩G|/(|P|+|G|)``), ``hd95_<c>`` and
``assd_<c>`` in mm (:func:`~nnunet_losses.metrics.surface_metrics`); ``<metric>_mean``
is their mean over classes, ignoring undefined (NaN) values. On the foreground
(``pred > 0``, ``gt > 0``): ``d3d``, the centroid distance ``d_3D`` in mm, and
``delta = |N_GT - N_pred|``, the difference in connected-component counts
(centroid-distance loss paper, Eqs. (7)-(8)).

Missed classes count against the model. When exactly one of prediction and reference
contains class ``c`` (a missed or a hallucinated class), ``dice_<c>`` is 0 and
``hd95_<c>`` and ``assd_<c>`` take the worst case, the diagonal of the ground-truth
image in mm (:func:`~nnunet_losses.metrics.image_diagonal`); ``missed_<c>`` is then 1
(else 0), so tables can say how many cases the worst case applied to
(:func:`worst_case_applied`). When both are empty, ``dice_<c>`` is NaN (nnU-Net's
convention: undefined, left out of ``dice_mean``) and ``hd95_<c>``, ``assd_<c>`` are 0
(the surfaces agree). ``d3d`` stays NaN when either foreground is empty.

A **diverged** run (see :mod:`.runs`) has no predictions; it is scored as a model that
predicts background everywhere on its fold's validation cases (:func:`diverged_case_metrics`):
Dice 0 and the worst-case distances for every class the reference contains.
Definitions: ``docs/metrics.md``.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..metrics import component_count_difference, d_3d, dice, one_mask_empty, surface_metrics

CLASS_METRICS = ("dice", "hd95", "assd")
WORST_CASE_METRICS = ("hd95", "assd")
FOREGROUND_METRICS = ("d3d", "delta")
MISSED = "missed"


def metric_names(labels: Mapping[int, str]) -> list[str]:
    """Column names in output order: per class and mean for each class metric, then the foreground metrics."""
    names = []
    for metric in CLASS_METRICS:
        names += [f"{metric}_{name}" for name in labels.values()] + [f"{metric}_mean"]
    return names + list(FOREGROUND_METRICS)


def missed_names(labels: Mapping[int, str]) -> list[str]:
    """The per-case flag columns ``missed_<class>``: 1 when exactly one of prediction and reference has the class."""
    return [f"{MISSED}_{name}" for name in labels.values()]


def worst_case_applied(metric: str, values: Mapping[str, float]) -> bool | None:
    """Whether ``metric`` of one case used the worst case (``None`` for metrics without one).

    ``hd95_<c>``/``assd_<c>``: class ``c`` was missed or hallucinated (``missed_<c>``);
    ``hd95_mean``/``assd_mean``: any class was.
    """
    kind, _, name = metric.partition("_")
    if kind not in WORST_CASE_METRICS:
        return None
    if name == "mean":
        return any(value == 1 for key, value in values.items() if key.startswith(f"{MISSED}_"))
    return values[f"{MISSED}_{name}"] == 1


def higher_is_better(metric: str) -> bool:
    """Dice columns improve upwards; distances and component differences downwards."""
    return metric.startswith("dice")


def read_labels(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label image as a numpy array and its spacing (mm), both in numpy axis order."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(float(s) for s in reversed(image.GetSpacing()))


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], labels: Mapping[int, str], ignore_label: int | None = None) -> dict[str, float]:
    """Every metric of :func:`metric_names` and the flags of :func:`missed_names` for one case."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if ignore_label is not None:
        ignored = gt == ignore_label
        pred, gt = np.where(ignored, 0, pred), np.where(ignored, 0, gt)
    values: dict[str, float] = {}
    for label, name in labels.items():
        p, g = pred == label, gt == label
        values[f"dice_{name}"] = dice(p, g)
        surface = surface_metrics(p, g, spacing)
        values[f"hd95_{name}"], values[f"assd_{name}"] = surface["hausdorff95"], surface["assd"]
        values[f"{MISSED}_{name}"] = float(one_mask_empty(p, g))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN is NaN, as intended
        for metric in CLASS_METRICS:
            values[f"{metric}_mean"] = float(np.nanmean([values[f"{metric}_{name}"] for name in labels.values()]))
    values["d3d"] = d_3d(pred > 0, gt > 0, spacing)
    values["delta"] = float(component_count_difference(pred > 0, gt > 0))
    return values


def validation_case_metrics(
    validation_folder: Path, gt_folder: Path, file_ending: str, labels: Mapping[int, str], ignore_label: int | None = None
) -> dict[str, dict[str, float]]:
    """``{case: metrics}`` for every prediction in a run's validation folder."""
    results = {}
    for prediction in sorted(validation_folder.glob(f"*{file_ending}")):
        case = prediction.name[: -len(file_ending)]
        pred, _ = read_labels(prediction)
        gt, spacing = read_labels(gt_folder / prediction.name)
        results[case] = case_metrics(pred, gt, spacing, labels, ignore_label)
    return results


def diverged_case_metrics(
    gt_folder: Path, file_ending: str, cases: Sequence[str], labels: Mapping[int, str], ignore_label: int | None = None
) -> dict[str, dict[str, float]]:
    """``{case: metrics}`` of a diverged run: an all-background prediction scored against each case's ground truth."""
    results = {}
    for case in cases:
        gt, spacing = read_labels(gt_folder / f"{case}{file_ending}")
        results[case] = case_metrics(np.zeros_like(gt), gt, spacing, labels, ignore_label)
    return results
