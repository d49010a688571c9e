"""Where maps live beside nnU-Net's preprocessed data, how they are written and checked.

Layout: ``nnUNet_preprocessed/<Dataset>/nnunet_losses_maps/<data_identifier>/<case>__<kind>.b2nd``.
The maps sit outside nnU-Net's ``<data_identifier>`` folder on purpose: nnU-Net takes
every ``*.b2nd`` there for a case and asserts a single file ending, and it deletes that
folder when preprocessing is re-run. Out here they survive re-preprocessing and are
then detected as stale.

Each file is a blosc2 array (float32, lossless ZSTD level 1 with byte shuffle: as small
as LZ4HC level 5 on distance maps and four times faster to write; chunks sized for
nnU-Net's patch like its own files) with metadata in its ``vlmeta``: map kind, map format version,
package version, spacing, spatial shape, number of classes, ignore label, whether it
was computed per slice, and a fingerprint of the case's segmentation (size and mtime
of ``<case>_seg.b2nd`` plus a hash of its content). A file is written under a temporary
name and renamed into place, so a file with the final name is always complete.

Checks: :meth:`MapStore.verify` compares everything, re-hashing the segmentation only
when its size or mtime changed (a re-preprocessing that reproduced the same labels
keeps the maps valid); :meth:`MapStore.open` repeats the cheap checks on every load.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

from .. import __version__
from ..maps import get_map_kind
from .configuration import PreprocessedConfiguration

MAP_FOLDER_NAME = "nnunet_losses_maps"
MAP_FORMAT_VERSION = 1
"""Bumped whenever a map's definition changes; older files are then stale."""
METADATA_KEY = "nnunet_losses"
TEMPORARY_MARKER = ".partial-"


class MapError(RuntimeError):
    """Maps that cannot be used; the message names the command that fixes it."""


class MissingMapsError(MapError):
    pass


class StaleMapsError(MapError):
    pass


class CorruptMapsError(MapError):
    pass


def read_segmentation(seg_file: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The content of a ``*_seg.b2nd`` file and its fingerprint: size and mtime (taken
    before reading, so a later rewrite is never mistaken for this content) and a BLAKE2
    hash of the decompressed content."""
    stat = seg_file.stat()
    content = np.ascontiguousarray(blosc2.open(str(seg_file), mode="r")[:])
    digest = hashlib.blake2b(content.tobytes(), digest_size=16)
    digest.update(str((content.shape, content.dtype.str)).encode())
    return content, {"seg_size": stat.st_size, "seg_mtime_ns": stat.st_mtime_ns, "seg_hash": digest.hexdigest()}


def segmentation_fingerprint(seg_file: Path) -> dict[str, Any]:
    """The fingerprint of :func:`read_segmentation`."""
    return read_segmentation(seg_file)[1]


def chunking(shape: tuple[int, ...], patch_size: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """blosc2 chunks and blocks of a (C, z, y, x) float32 map, sized for the training patch as
    nnU-Net sizes its own files; a chunk holds all channels, since crops read them all."""
    blocks, chunks = comp_blosc2_params((1, *shape[1:]), tuple(patch_size), bytes_per_pixel=4)
    return (shape[0], *chunks[1:]), blocks


@dataclass(frozen=True)
class MapStore:
    """The maps of one preprocessed configuration."""

    config: PreprocessedConfiguration

    @property
    def folder(self) -> Path:
        return self.config.dataset_folder / MAP_FOLDER_NAME / self.config.configuration_manager.data_identifier

    def path(self, case: str, kind: str) -> Path:
        return self.folder / f"{case}__{kind}.b2nd"

    def seg_file(self, case: str) -> Path:
        return self.config.data_folder / f"{case}_seg.b2nd"

    def expected_metadata(self, kind: str, per_slice: bool, spacing: tuple[float, ...]) -> dict[str, Any]:
        return {
            "format": MAP_FORMAT_VERSION,
            "kind": kind,
            "spacing": list(spacing),
            "num_classes": self.config.num_classes,
            "ignore_label": self.config.ignore_label,
            "per_slice": per_slice,
        }

    # --- writing ---------------------------------------------------------------------------------

    def write(
        self, case: str, kind: str, array: np.ndarray, per_slice: bool, spacing: tuple[float, ...], fingerprint: dict[str, Any]
    ) -> int:
        """Write one map atomically; returns the file size in bytes.

        On any error (disk full, killed process aside) the temporary file is removed, so
        no partial file remains under either name.
        """
        final = self.path(case, kind)
        temporary = final.with_name(f"{final.stem}{TEMPORARY_MARKER}{os.getpid()}.b2nd")
        chunks, blocks = chunking(array.shape, tuple(self.config.configuration_manager.patch_size))
        metadata = {
            **self.expected_metadata(kind, per_slice, spacing),
            "shape": list(array.shape[1:]),
            "package_version": __version__,
            **fingerprint,
        }
        try:
            stored = blosc2.asarray(
                np.ascontiguousarray(array, dtype=np.float32),
                urlpath=str(temporary),
                mode="w",
                chunks=chunks,
                blocks=blocks,
                cparams={"codec": blosc2.Codec.ZSTD, "clevel": 1, "filters": [blosc2.Filter.SHUFFLE], "nthreads": 1},
            )
            stored.vlmeta[METADATA_KEY] = metadata
            del stored
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return final.stat().st_size

    def remove_partial_files(self) -> int:
        """Delete temporary files left by an interrupted run; returns how many."""
        partial = list(self.folder.glob(f"*{TEMPORARY_MARKER}*")) if self.folder.is_dir() else []
        for file in partial:
            file.unlink(missing_ok=True)
        return len(partial)

    # --- checking and reading ----------------------------------------------------------------------

    def _fix(self) -> str:
        return self.config.setup_maps_command()

    def read_metadata(self, case: str, kind: str) -> dict[str, Any]:
        """The metadata of a map file; Missing/CorruptMapsError with the fix otherwise."""
        file = self.path(case, kind)
        if not file.is_file():
            raise MissingMapsError(f"no {kind!r} map for case {case} ({file}). Run: {self._fix()}")
        try:
            array = blosc2.open(str(file), mode="r")
            return dict(array.vlmeta[METADATA_KEY])
        except Exception as error:  # blosc2 raises various types on damaged files
            raise CorruptMapsError(f"the {kind!r} map of case {case} is unreadable ({file}: {error}). Run: {self._fix()}") from error

    def _check_metadata(
        self, case: str, kind: str, metadata: dict[str, Any], seg_shape: tuple[int, ...], spacing: tuple[float, ...]
    ) -> None:
        expected = self.expected_metadata(kind, bool(metadata.get("per_slice")), spacing)
        differences = [key for key, value in expected.items() if metadata.get(key) != value]
        if tuple(metadata.get("shape", ())) != tuple(seg_shape):
            differences.append("shape")
        if differences:
            raise StaleMapsError(
                f"the {kind!r} map of case {case} is stale ({', '.join(differences)} differ from the preprocessed data, "
                f"which was re-planned or re-preprocessed). Run: {self._fix()}"
            )

    def verify(self, case: str, kind: str) -> dict[str, Any]:
        """Full check of one map against the current segmentation; returns its metadata."""
        metadata = self.read_metadata(case, kind)
        seg_file = self.seg_file(case)
        spacing = self.config.case_spacing(self.config.load_properties(case))
        self._check_metadata(case, kind, metadata, blosc2.open(str(seg_file), mode="r").shape[1:], spacing)
        stat = seg_file.stat()
        if (metadata.get("seg_size"), metadata.get("seg_mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
            if segmentation_fingerprint(seg_file)["seg_hash"] != metadata.get("seg_hash"):
                raise StaleMapsError(
                    f"the {kind!r} map of case {case} is stale: the preprocessed segmentation changed since the maps "
                    f"were written. Run: {self._fix()}"
                )
        return metadata

    def verify_all(self, cases: list[str], kinds: tuple[str, ...]) -> dict[str, bool]:
        """Verify every (case, kind); returns ``{kind: per_slice}``. The first problem raises,
        listing how many cases are affected."""
        per_slice: dict[str, bool] = {}
        for kind in kinds:
            get_map_kind(kind)
            problems: list[MapError] = []
            for case in cases:
                try:
                    per_slice.setdefault(kind, bool(self.verify(case, kind)["per_slice"]))
                except MapError as error:
                    problems.append(error)
            if problems:
                raise type(problems[0])(f"{len(problems)} of {len(cases)} cases have unusable {kind!r} maps; first: {problems[0]}")
        return per_slice

    def open(self, case: str, kind: str, seg_shape: tuple[int, ...], properties: dict) -> blosc2.NDArray:
        """Open a map for reading (memory-mapped) after the cheap checks (``properties``: the case's ``.pkl``)."""
        file = self.path(case, kind)
        try:
            array = blosc2.open(str(file), mode="r", mmap_mode="r", dparams={"nthreads": 1})
        except FileNotFoundError:
            raise MissingMapsError(f"no {kind!r} map for case {case} ({file}). Run: {self._fix()}") from None
        except Exception as error:
            raise CorruptMapsError(f"the {kind!r} map of case {case} is unreadable ({file}: {error}). Run: {self._fix()}") from error
        self._check_metadata(case, kind, dict(array.vlmeta[METADATA_KEY]), seg_shape, self.config.case_spacing(properties))
        return array
