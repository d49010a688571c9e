"""Where maps live beside nnU-Net's preprocessed data, how they are written and checked.

Layout: ``nnUNet_preprocessed/<Dataset>/nnunet_losses_maps/<data_identifier>/<case>__<kind>.b2nd``.
The maps sit outside nnU-Net's ``<data_identifier>`` folder on purpose: nnU-Net takes
every ``*.b2nd`` there for a case and asserts a single file ending, and it deletes that
folder when preprocessing is re-run. Out here they survive re-preprocessing and are
then detected as stale.

Each file is a blosc2 array (float32, stored uncompressed: the augmentation workers
read a patch's box of every map for every sample, and a memory-mapped uncompressed box
reads about ten times faster than a ZSTD level 1 one -- what a GPU waits for --, at
about twice the bytes on disk: ``benchmarks/data_loading.py``, README; chunks sized
for nnU-Net's patch like its own files, from nnU-Net's ``comp_blosc2_params``,
``nnunetv2/training/dataloading/nnunet_dataset.py``) with metadata in its ``vlmeta``: map kind, map format version,
package version, spacing, spatial shape, number of classes, ignore label, whether it
was computed per slice, a fingerprint of the case's segmentation (size and mtime
of ``<case>_seg.b2nd`` plus a hash of its content) and a hash of the map's own values.
A file is written under a temporary name (``<name>.partial-<pid>.b2nd``) and renamed
into place, so a file with the final name is always complete. A write that fails (a
full disk, a read-only folder) removes its temporary file and raises
:class:`MapWriteError` naming the file and the reason, whatever exception blosc2 raised.

Checks: :meth:`MapStore.verify` compares everything, re-hashing the segmentation only
when its size or mtime changed (a re-preprocessing that reproduced the same labels
keeps the maps valid); with ``content=True`` (what ``setup_maps`` does) it also
decompresses the map and compares the hash of its values, which catches damaged data
that still decodes. :meth:`MapStore.open` repeats the cheap checks on every load, and
:meth:`MapStore.damaged` is the error for a map whose data cannot be read.

Slicing: ``setup_maps.json`` in the maps folder records whether the maps were computed
per slice, so the command printed in every error (:meth:`MapStore.fix_command`) and a
plain re-run of ``setup_maps`` keep that choice.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

from .. import __version__
from ..files import write_json
from ..maps import get_map_kind
from .configuration import PreprocessedConfiguration

MAP_FOLDER_NAME = "nnunet_losses_maps"
MAP_FORMAT_VERSION = 2
"""Bumped whenever a map's definition or metadata changes; older files are then stale
(version 2 added the hash of the values)."""
METADATA_KEY = "nnunet_losses"
TEMPORARY_MARKER = ".partial-"
SLICING_RECORD = "setup_maps.json"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
STORAGE_CPARAMS = {"codec": blosc2.Codec.LZ4, "clevel": 0, "nthreads": 1}
"""Uncompressed blosc2 chunks (see the module docstring for why)."""


class MapError(RuntimeError):
    """Maps that cannot be used; the message names the command that fixes it."""


class MissingMapsError(MapError):
    pass


class StaleMapsError(MapError):
    pass


class CorruptMapsError(MapError):
    pass


class MapWriteError(RuntimeError):
    """Writing a map failed (full disk, read-only folder, ...); nothing partial is left."""


def read_segmentation(seg_file: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The content of a ``*_seg.b2nd`` file and its fingerprint: size and mtime (taken
    before reading, so a later rewrite is never mistaken for this content) and a BLAKE2
    hash of the decompressed content."""
    stat = seg_file.stat()
    content = np.ascontiguousarray(blosc2.open(str(seg_file), mode="r")[:])
    digest = hashlib.blake2b(content.tobytes(), digest_size=16)
    digest.update(str((content.shape, content.dtype.str)).encode())
    return content, {"seg_size": stat.st_size, "seg_mtime_ns": stat.st_mtime_ns, "seg_hash": digest.hexdigest()}


def values_hash(values: np.ndarray) -> str:
    """BLAKE2 hash of a map's float32 values and shape: what a damaged file no longer reproduces."""
    content = np.ascontiguousarray(values, dtype=np.float32)
    digest = hashlib.blake2b(content.data, digest_size=16)
    digest.update(str(content.shape).encode())
    return digest.hexdigest()


def segmentation_fingerprint(seg_file: Path) -> dict[str, Any]:
    """The fingerprint of :func:`read_segmentation`."""
    return read_segmentation(seg_file)[1]


def chunking(shape: tuple[int, ...], patch_size: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """blosc2 chunks and blocks of a (C, z, y, x) float32 map: chunks sized for the training patch as
    nnU-Net sizes its own files, holding all channels, since crops read them all; blocks are one
    channel's (y, x) plane of a chunk, the largest contiguous runs a crop can use (uncompressed
    data reads about three times faster than with nnU-Net's smaller 3D blocks).

    Uncompressed, the padding of the edge chunks is written in full, so each spatial chunk
    length ``c`` of an axis of length ``n`` is evened out over the same number of chunks,
    ``k = ceil(n / c)``: ``c' = ceil(n / k) <= c``, which leaves less than ``k`` voxels of
    padding (a 160-voxel axis with nnU-Net's 128: two chunks of 80 instead of 256 voxels).
    """
    _, chunks = comp_blosc2_params((1, *shape[1:]), tuple(patch_size), bytes_per_pixel=4)
    even = tuple(-(-n // -(-n // c)) for n, c in zip(shape[1:], chunks[1:]))
    return (shape[0], *even), (1, 1, *even[1:])


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

        On any error the temporary file is removed, so no partial file remains under
        either name; errors of the file system (full disk, no permission) become a
        one-line :class:`MapWriteError`. Only a killed process leaves its temporary file,
        which the next ``setup_maps`` removes.
        """
        final = self.path(case, kind)
        temporary = final.with_name(f"{final.stem}{TEMPORARY_MARKER}{os.getpid()}.b2nd")
        values = np.ascontiguousarray(array, dtype=np.float32)
        chunks, blocks = chunking(values.shape, tuple(self.config.configuration_manager.patch_size))
        metadata = {
            **self.expected_metadata(kind, per_slice, spacing),
            "shape": list(values.shape[1:]),
            "package_version": __version__,
            "values_hash": values_hash(values),
            **fingerprint,
        }
        try:
            stored = blosc2.asarray(
                values,
                urlpath=str(temporary),
                mode="w",
                chunks=chunks,
                blocks=blocks,
                cparams=STORAGE_CPARAMS,
            )
            stored.vlmeta[METADATA_KEY] = metadata
            del stored
            os.replace(temporary, final)
        except Exception as error:
            reason = self._write_failure(error, values.nbytes)
            temporary.unlink(missing_ok=True)
            if reason is None:
                raise
            raise MapWriteError(f"cannot write the {kind!r} map of case {case} to {final}: {reason}") from error
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return final.stat().st_size

    def _write_failure(self, error: Exception, size: int) -> str | None:
        """What a failed write means for the user, or ``None`` for an error that is not the file system's.

        blosc2 reports a full disk as ``RuntimeError`` without an errno, so the free space
        is measured while the temporary file still occupies it: less than the map's
        uncompressed size left means the disk is (nearly) full.
        """
        rerun = "finished cases are kept and no partial file was left: run the same command again to resume"
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return f"disk full ({error.strerror}). Free some space; {rerun}"
        if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{error.strerror}. Fix the folder's permissions; {rerun}"
        free = shutil.disk_usage(self.folder).free
        if free < size:
            return f"disk full ({free / 2**20:.1f} MiB free; blosc2: {error}). Free some space; {rerun}"
        if isinstance(error, OSError):
            return f"{error.strerror or error}. {rerun}"
        return None

    def remove_partial_files(self) -> int:
        """Delete temporary files left by killed writers; returns how many.

        A temporary file names its writer's pid: files of a process that is still
        alive (another ``setup_maps``, or a worker of one) are left alone, and so are
        files in a folder this process may not write (their names are never read as maps).
        """
        removed = 0
        for file in self.folder.glob(f"*{TEMPORARY_MARKER}*") if self.folder.is_dir() else []:
            if _writer_alive(file):
                continue
            try:
                file.unlink(missing_ok=True)
            except PermissionError:
                continue
            removed += 1
        return removed

    # --- the slicing chosen for this folder ----------------------------------------------------------

    @property
    def slicing_record(self) -> Path:
        return self.folder / SLICING_RECORD

    def recorded_per_slice(self) -> bool | None:
        """Whether the last ``setup_maps`` on this folder computed maps per slice; ``None`` if unknown."""
        try:
            return bool(json.loads(self.slicing_record.read_text())["per_slice"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def record_per_slice(self, per_slice: bool) -> None:
        """Record the slicing of this folder's maps (atomically)."""
        write_json(self.slicing_record, {"per_slice": per_slice})

    def existing_per_slice(self, kinds: tuple[str, ...]) -> set[bool]:
        """The slicings recorded in the metadata of the readable maps of ``kinds`` in this folder."""
        found: set[bool] = set()
        for file in self.folder.glob("*__*.b2nd") if self.folder.is_dir() else []:
            if TEMPORARY_MARKER in file.name or file.stem.rsplit("__", 1)[1] not in kinds:
                continue
            try:
                array = blosc2.open(str(file), mode="r")  # held: its vlmeta dies with it
                found.add(bool(array.vlmeta[METADATA_KEY]["per_slice"]))
            except Exception:  # unreadable files are rewritten; they do not decide the slicing
                continue
        return found

    # --- checking and reading ----------------------------------------------------------------------

    def fix_command(self) -> str:
        """The command that (re)writes this folder's maps, with ``--per-slice`` when they are computed per slice."""
        return self.config.setup_maps_command(*(["--per-slice"] if self.recorded_per_slice() else []))

    def damaged(self, case: str, kind: str, error: BaseException | str) -> CorruptMapsError:
        """The error for a map file that cannot be read or whose values changed; names the file and the fix.

        Use it wherever a map is read: ``except Exception as e: raise store.damaged(case, kind, e) from e``.
        """
        detail = error if isinstance(error, str) else str(error).strip() or type(error).__name__
        return CorruptMapsError(
            f"the {kind!r} map of case {case} is damaged ({self.path(case, kind)}: {detail}). Run: {self.fix_command()}"
        )

    def missing(self, case: str, kind: str) -> MissingMapsError:
        return MissingMapsError(f"no {kind!r} map for case {case} ({self.path(case, kind)}). Run: {self.fix_command()}")

    def _open_with_metadata(self, case: str, kind: str, **options: Any) -> tuple[blosc2.NDArray, dict[str, Any]]:
        """Open a map file (``options``: blosc2's) and read its metadata; Missing/CorruptMapsError with the fix otherwise."""
        try:
            array = blosc2.open(str(self.path(case, kind)), mode="r", **options)
            return array, dict(array.vlmeta[METADATA_KEY])
        except FileNotFoundError:
            raise self.missing(case, kind) from None
        except Exception as error:  # blosc2 raises various types on damaged files
            raise self.damaged(case, kind, error) from error

    def read_metadata(self, case: str, kind: str) -> dict[str, Any]:
        """The metadata of a map file; Missing/CorruptMapsError with the fix otherwise."""
        return self._open_with_metadata(case, kind)[1]

    def check_values(self, case: str, kind: str, metadata: dict[str, Any]) -> None:
        """Decompress the map and compare the hash of its values with the one written beside them."""
        try:
            values = blosc2.open(str(self.path(case, kind)), mode="r", dparams={"nthreads": 1})[:]
        except Exception as error:  # blosc2 raises RuntimeError (and others) on damaged chunks
            raise self.damaged(case, kind, error) from error
        if values_hash(values) != metadata.get("values_hash"):
            raise self.damaged(case, kind, "its values differ from those written (content hash mismatch)")

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
                f"which was re-planned or re-preprocessed). Run: {self.fix_command()}"
            )

    def verify(self, case: str, kind: str, content: bool = False) -> dict[str, Any]:
        """Full check of one map against the current segmentation; returns its metadata.

        ``content``: also decompress the map and check the hash of its values (about the
        cost of reading the map once; ``setup_maps`` does it, training starts skip it).
        """
        metadata = self.read_metadata(case, kind)
        seg_file = self.seg_file(case)
        spacing = self.config.case_spacing(self.config.load_properties(case))
        self._check_metadata(case, kind, metadata, blosc2.open(str(seg_file), mode="r").shape[1:], spacing)
        stat = seg_file.stat()
        if (metadata.get("seg_size"), metadata.get("seg_mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
            if segmentation_fingerprint(seg_file)["seg_hash"] != metadata.get("seg_hash"):
                raise StaleMapsError(
                    f"the {kind!r} map of case {case} is stale: the preprocessed segmentation changed since the maps "
                    f"were written. Run: {self.fix_command()}"
                )
        if content:
            self.check_values(case, kind, metadata)
        return metadata

    def verify_all(self, cases: list[str], kinds: tuple[str, ...], content: bool = False) -> dict[str, bool]:
        """Verify every (case, kind) (``content``: see :meth:`verify`); returns ``{kind: per_slice}``.
        The first problem raises, listing how many cases are affected."""
        per_slice: dict[str, bool] = {}
        for kind in kinds:
            get_map_kind(kind)
            problems: list[MapError] = []
            for case in cases:
                try:
                    per_slice.setdefault(kind, bool(self.verify(case, kind, content)["per_slice"]))
                except MapError as error:
                    problems.append(error)
            if problems:
                raise type(problems[0])(f"{len(problems)} of {len(cases)} cases have unusable {kind!r} maps; first: {problems[0]}")
        return per_slice

    def open(self, case: str, kind: str, seg_shape: tuple[int, ...], properties: dict) -> blosc2.NDArray:
        """Open a map for reading (memory-mapped) after the cheap checks (``properties``: the case's ``.pkl``)."""
        array, metadata = self._open_with_metadata(case, kind, mmap_mode="r", dparams={"nthreads": 1})
        self._check_metadata(case, kind, metadata, seg_shape, self.config.case_spacing(properties))
        return array


def _writer_alive(temporary: Path) -> bool:
    """Whether the process named in a temporary file's name (``...partial-<pid>...``) still runs."""
    digits = temporary.name.split(TEMPORARY_MARKER, 1)[1].split(".", 1)[0]
    if not digits.isdigit():
        return False
    try:
        os.kill(int(digits), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return int(digits) != os.getpid()  # our own pid here is a dead writer's, reused
