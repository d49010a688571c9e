"""A one-case nnU-Net preprocessed dataset written directly (no planning, no preprocessing run).

For tests of the map store at sizes and class counts that nnU-Net's own preprocessing
would take minutes for: the folder has what :func:`nnunet_losses.nnunet.configuration.load_configuration`
and nnU-Net's blosc2 dataset read (``dataset.json``, a plans file with one 3d_fullres
configuration, ``<case>.b2nd``, ``<case>_seg.b2nd``, ``<case>.pkl``), in nnU-Net's layout.
"""
from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import blosc2
import numpy as np

DATA_IDENTIFIER = "nnUNetPlans_3d_fullres"


def write_preprocessed_case(
    preprocessed: Path,
    dataset_name: str,
    labels: np.ndarray,
    num_classes: int,
    spacing: Sequence[float],
    patch_size: Sequence[int],
    case: str = "case_000",
) -> Path:
    """Write ``labels`` (z, y, x) as the only case of ``dataset_name`` under ``preprocessed``; returns the dataset folder."""
    folder = preprocessed / dataset_name
    data = folder / DATA_IDENTIFIER
    data.mkdir(parents=True)
    dataset_json = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{f"organ_{k:03d}": k for k in range(1, num_classes)}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    plans = {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": list(labels.shape),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": DATA_IDENTIFIER,
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": list(labels.shape),
                "spacing": list(spacing),
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "architecture": {},
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    blosc2.asarray(np.zeros((1, *labels.shape), dtype=np.float32), urlpath=str(data / f"{case}.b2nd"), mode="w")
    blosc2.asarray(labels[None].astype(np.int8 if num_classes <= 127 else np.int16), urlpath=str(data / f"{case}_seg.b2nd"), mode="w")
    properties = {"spacing": list(spacing), "shape_before_cropping": list(labels.shape), "class_locations": {}}
    with open(data / f"{case}.pkl", "wb") as handle:
        pickle.dump(properties, handle)
    return folder
