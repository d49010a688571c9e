"""Where maps live beside nnU-Net's preprocessed data, how they are written and checked.

Layout: ``nnUNet_preprocessed/<Dataset>/nnunet_losses_maps/<data_identifier>/<case>__<kind>.b2nd``.
The maps sit outside nnU-Net's ``<data_identifier>`` folder on purpose: nnU-Net takes
every ``*.b2nd`` there for a case and asserts a single file ending, and it deletes that
folder when preprocessing is re-run. Out here they survive re-preprocessing and are
then detected as stale.

Each file is a blosc2 array of shape ``(channels, *spatial)`` in a compact stored form
(:data:`ENCODINGS`; ``docs/maps.md``, "Stored format", states each form's error and its
bound on every loss that reads the map), decoded to float32 on read:

* ``rrw`` (values in ``[-1, 0]``): ``uint8`` ``q = round(-255 v)``, decoded ``v' = -q / 255``;
  ``|v' - v| <= 1/510`` (plus the float32 rounding of the decoded value, below ``2^-22``);
* ``signed_distance`` (mm): ``float16``, rounded to nearest; ``|v' - v| <= 2^-11 |v|`` (zeros
  stay exact; a nonzero distance below ``2^-14`` mm or above 65504 mm is refused at writing,
  so every stored value is a normal float16).

Codecs: ``signed_distance`` LZ4HC level 6 with byte shuffle and blosc2's byte-delta filter
(about 0.3-0.5 bytes per voxel and channel; it decodes 2.8 to 3 times as fast as ZSTD level 3,
the codec of the first files of this format, which still decode, for 20-25 % more bytes:
``benchmarks/patch_reading.py``, ``docs/maps.md``); ``rrw`` LZ4HC level 6 (one channel: decoding ten
times faster than ZSTD matters more than its slower writing). Chunks
hold one channel (a channel is written without touching the others, so ``setup_maps``
writes one class channel at a time) and are sized for nnU-Net's patch as its own files
(nnU-Net's ``comp_blosc2_params``, ``nnunetv2/training/dataloading/nnunet_dataset.py``);
blocks are small (:data:`BLOCK_BYTES`), so a patch box decodes little more than it needs.
The ``vlmeta`` holds the map kind, map format version, the stored encoding, package
version, spacing, spatial shape, number of classes, ignore label, whether it was computed
per slice, a fingerprint of the case's segmentation (size and mtime of
``<case>_seg.b2nd`` plus a hash of its content) and a hash of the stored values
(:func:`values_hash`, channel by channel). Files of an older format version (version 2:
float32, uncompressed) are never read: they raise :class:`OlderMapFormatError` (a
:class:`StaleMapsError`) naming the command that rewrites them.
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params

from .. import __version__
from ..files import write_json
from ..maps import get_map_kind
from .configuration import PreprocessedConfiguration

MAP_FOLDER_NAME = "nnunet_losses_maps"
MAP_FORMAT_VERSION = 3
"""Bumped whenever a map's definition, stored form or metadata changes; older files are then
stale (version 2 added the hash of the values; version 3 stores the compact encodings of
:data:`ENCODINGS` instead of uncompressed float32)."""
METADATA_KEY = "nnunet_losses"
TEMPORARY_MARKER = ".partial-"
SLICING_RECORD = "setup_maps.json"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
BLOCK_BYTES = 64 * 1024
"""Upper bound on the stored bytes of one blosc2 block (the unit a read decodes)."""
FLOAT16_MAX = float(np.finfo(np.float16).max)
FLOAT16_SMALLEST_NORMAL = float(np.finfo(np.float16).tiny)


@dataclass(frozen=True)
class Encoding:
    """How one map kind is stored: ``stored = round(value / scale)`` in ``dtype`` (a float
    ``dtype`` rounds to nearest instead), ``value = stored * scale`` on reading.

    ``low``/``high``: the range of values the encoding accepts (anything else is a bug in
    the caller and refused); ``smallest``: the smallest nonzero magnitude accepted.
    """

    dtype: str
    scale: float
    low: float
    high: float
    smallest: float = 0.0
    byte_delta: bool = False
    codec: str = "ZSTD"
    clevel: int = 3

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def cparams(self) -> dict[str, Any]:
        filters = [blosc2.Filter.SHUFFLE, *([blosc2.Filter.BYTEDELTA] if self.byte_delta else [])]
        return {"codec": blosc2.Codec[self.codec], "clevel": self.clevel, "filters": filters, "filters_meta": [0] * len(filters), "nthreads": 1}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale}

    def encode(self, values: np.ndarray) -> np.ndarray:
        """The stored form of float values; ``ValueError`` for values outside the accepted range."""
        values = np.asarray(values, dtype=np.float32)
        magnitude = np.abs(values)
        nonzero_smallest = float(np.min(magnitude, where=magnitude > 0, initial=np.inf))
        if not np.isfinite(values).all() or values.min(initial=0) < self.low or values.max(initial=0) > self.high or nonzero_smallest < self.smallest:
            raise ValueError(
                f"map values must be finite, in [{self.low}, {self.high}] and 0 or at least {self.smallest} in magnitude to be "
                f"stored as {self.dtype}; got [{values.min()}, {values.max()}], smallest nonzero magnitude {nonzero_smallest}"
            )
        if self.numpy_dtype.kind == "f":
            return values.astype(self.numpy_dtype)
        stored = np.multiply(values, np.float32(1.0 / self.scale))
        return np.rint(stored, out=stored).astype(self.numpy_dtype)

    def decode_into(self, stored: np.ndarray, out: np.ndarray) -> None:
        """``out[...] = stored * scale``, computed in float32 and rounded once if ``out`` is float16 (``out``: any
        positive strides). float16 goes through torch, whose conversion is exact and, one thread, about 2.5
        times as fast as numpy's here: 1.7 against 0.7 G values/s."""
        if self.scale == 1.0:  # (torch takes no negative strides: a flipped view is copied first)
            torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(stored)))
        elif out.dtype == np.float32:
            np.multiply(stored, np.float32(self.scale), out=out)
        else:  # computed in float32 and rounded once (numpy's own float16 rounding is 10 times slower than torch's)
            torch.from_numpy(out).copy_(torch.from_numpy(np.multiply(stored, np.float32(self.scale))))

    def decode(self, stored: np.ndarray) -> np.ndarray:
        out = np.empty(stored.shape, dtype=np.float32)
        self.decode_into(stored, out)
        return out


ENCODINGS: dict[str, Encoding] = {
    # RRW lies in [-1, 0]: 255 steps of 1/255, error <= 1/510
    "rrw": Encoding("uint8", scale=-1.0 / 255.0, low=-1.0, high=0.0, codec="LZ4HC", clevel=6),
    # signed distance (mm): float16, relative error <= 2^-11 for every normal value
    "signed_distance": Encoding(
        "float16", scale=1.0, low=-FLOAT16_MAX, high=FLOAT16_MAX, smallest=FLOAT16_SMALLEST_NORMAL, byte_delta=True, codec="LZ4HC", clevel=6
    ),
}
"""The stored form of each map kind (see the module docstring and ``docs/maps.md``)."""


class MapError(RuntimeError):
    """Maps that cannot be used; the message names the command that fixes it."""


class MissingMapsError(MapError):
    pass


class StaleMapsError(MapError):
    pass


class OlderMapFormatError(StaleMapsError):
    """A map file written in an older map format version (never read; ``setup_maps`` rewrites it)."""


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


def values_hash(channels: Iterable[np.ndarray]) -> str:
    """BLAKE2 hash of a map's stored values, fed one channel at a time (so neither writing nor
    checking holds more than one channel), then of the channel count, shape and dtype: what
    a damaged file no longer reproduces."""
    digest = hashlib.blake2b(digest_size=16)
    count, shape, dtype = 0, (), ""
    for channel in channels:
        content = np.ascontiguousarray(channel)
        digest.update(content.data)
        count, shape, dtype = count + 1, content.shape, content.dtype.str
    digest.update(str((count, shape, dtype)).encode())
    return digest.hexdigest()


def segmentation_fingerprint(seg_file: Path) -> dict[str, Any]:
    """The fingerprint of :func:`read_segmentation`."""
    return read_segmentation(seg_file)[1]


def chunking(shape: tuple[int, ...], patch_size: tuple[int, ...], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """blosc2 chunks and blocks of a stored ``(C, *spatial)`` map of ``itemsize`` bytes per value.

    nnU-Net's own rule for its files (``comp_blosc2_params``): chunks of one channel, each
    spatial axis at most 1.5 patch lengths; blocks follow the patch's aspect within
    :data:`BLOCK_BYTES` (a 128^3 patch: 32^3 float16 blocks; a 2d patch: blocks one slice thick).
    Writing one channel then rewrites only that channel's chunks, and a patch box decodes
    only the small blocks it overlaps.
    """
    blocks, chunks = comp_blosc2_params((1, *shape[1:]), tuple(patch_size), bytes_per_pixel=itemsize, max_block_nbytes=BLOCK_BYTES)
    return (1, *chunks[1:]), (1, *blocks[1:])


@dataclass(frozen=True)
class StoredMap:
    """An open map file of one case and kind: its shape and how to read a box of it (float32 or float16)."""

    array: blosc2.NDArray
    encoding: Encoding
    case: str
    kind: str
    store: MapStore | None = None
    """The store the file belongs to, for the error that names the fix (``None``: the blosc2 error as it is)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def read_into(self, out: np.ndarray, ranges: Sequence[tuple[int, int]], flips: Sequence[int] = ()) -> None:
        """``out[...] = map[:, box]``, flipped along the spatial axes ``flips`` (``ranges``: (start, stop) per spatial
        axis; ``out``: float32 or float16, any positive strides).

        blosc2 decodes only the blocks the box overlaps: straight into ``out`` where it holds the
        stored dtype as it is (float16 maps into float16, contiguous, unflipped), else into a buffer
        of the stored dtype that is then flipped and dequantised into ``out`` in one pass.
        """
        if out.size == 0:
            return
        starts = (0, *(start for start, _ in ranges))
        stops = (self.array.shape[0], *(stop for _, stop in ranges))
        as_stored = self.encoding.scale == 1.0 and out.dtype == self.encoding.numpy_dtype
        direct = as_stored and not flips and out.flags.c_contiguous
        stored = out if direct else np.empty(out.shape, dtype=self.encoding.numpy_dtype)
        try:
            self.array.get_slice_numpy(stored, (starts, stops))
        except Exception as error:  # blosc2 raises RuntimeError and others on damaged data
            if self.store is None:
                raise
            raise self.store.damaged(self.case, self.kind, error) from error
        if direct:
            return
        if flips:
            stored = stored[(slice(None), *(slice(None, None, -1) if a in flips else slice(None) for a in range(len(ranges))))]
        if as_stored:
            np.copyto(out, stored)
        else:
            self.encoding.decode_into(stored, out)


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
            "encoding": ENCODINGS[kind].metadata,
        }

    # --- writing ---------------------------------------------------------------------------------

    def write(
        self, case: str, kind: str, array: np.ndarray, per_slice: bool, spacing: tuple[float, ...], fingerprint: dict[str, Any]
    ) -> int:
        """Write one map given as a whole ``(C, *spatial)`` array; see :meth:`write_channels`."""
        return self.write_channels(case, kind, iter(array), array.shape[0], tuple(array.shape[1:]), per_slice, spacing, fingerprint)

    def write_channels(
        self,
        case: str,
        kind: str,
        channels: Iterable[np.ndarray],
        num_channels: int,
        spatial_shape: tuple[int, ...],
        per_slice: bool,
        spacing: tuple[float, ...],
        fingerprint: dict[str, Any],
    ) -> int:
        """Write one map atomically from its channels, one at a time (each is encoded, hashed and
        written before the next is asked for); returns the file size in bytes.

        On any error the temporary file is removed, so no partial file remains under
        either name; errors of the file system (full disk, no permission) become a
        one-line :class:`MapWriteError`. Only a killed process leaves its temporary file,
        which the next ``setup_maps`` removes.
        """
        final = self.path(case, kind)
        temporary = final.with_name(f"{final.stem}{TEMPORARY_MARKER}{os.getpid()}.b2nd")
        encoding = ENCODINGS[kind]
        shape = (num_channels, *spatial_shape)
        try:
            stored, digest = create_map_file(temporary, kind, channels, shape, tuple(self.config.configuration_manager.patch_size))
            stored.vlmeta[METADATA_KEY] = {
                **self.expected_metadata(kind, per_slice, spacing),
                "shape": list(spatial_shape),
                "package_version": __version__,
                "values_hash": digest,
                **fingerprint,
            }
            del stored
            os.replace(temporary, final)
        except Exception as error:
            reason = self._write_failure(error, int(np.prod(shape)) * encoding.numpy_dtype.itemsize)
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
        """Decompress the map one channel at a time and compare the hash of its stored values with
        the one written beside them."""
        try:
            array = blosc2.open(str(self.path(case, kind)), mode="r", dparams={"nthreads": 1})
            digest = values_hash(array[k] for k in range(array.shape[0]))
        except Exception as error:  # blosc2 raises RuntimeError (and others) on damaged chunks
            raise self.damaged(case, kind, error) from error
        if digest != metadata.get("values_hash"):
            raise self.damaged(case, kind, "its values differ from those written (content hash mismatch)")

    def _check_metadata(
        self, case: str, kind: str, metadata: dict[str, Any], seg_shape: tuple[int, ...], spacing: tuple[float, ...]
    ) -> None:
        self._check_format(case, kind, metadata)
        expected = self.expected_metadata(kind, bool(metadata.get("per_slice")), spacing)
        differences = [key for key, value in expected.items() if metadata.get(key) != value]
        if tuple(metadata.get("shape", ())) != tuple(seg_shape):
            differences.append("shape")
        if differences:
            raise StaleMapsError(
                f"the {kind!r} map of case {case} is stale ({', '.join(differences)} differ from the preprocessed data, "
                f"which was re-planned or re-preprocessed). Run: {self.fix_command()}"
            )

    def _check_format(self, case: str, kind: str, metadata: dict[str, Any]) -> None:
        """Raise :meth:`other_format`'s error unless the file is of this map format version."""
        if metadata.get("format") != MAP_FORMAT_VERSION:
            raise self.other_format(case, kind, metadata.get("format"))

    def other_format(self, case: str, kind: str, version: Any) -> StaleMapsError:
        """The error for a map file of another format version: an older one is rewritten by the fix
        command; a newer one was written by a newer nnunet-losses."""
        written = f"format version {version}" if version is not None else "an unknown format"
        if isinstance(version, int) and version > MAP_FORMAT_VERSION:
            return StaleMapsError(
                f"the {kind!r} map of case {case} is in a newer map format ({written}; this nnunet-losses reads version "
                f"{MAP_FORMAT_VERSION}): upgrade nnunet-losses, or rewrite the maps with this version. Run: {self.fix_command()}"
            )
        return OlderMapFormatError(
            f"the {kind!r} map of case {case} is in an older map format ({written}; this nnunet-losses reads and writes "
            f"version {MAP_FORMAT_VERSION}) and must be rewritten. Run: {self.fix_command()}"
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

    def open(self, case: str, kind: str, seg_shape: tuple[int, ...], properties: dict) -> StoredMap:
        """Open a map for reading (memory-mapped) after the cheap checks (``properties``: the case's ``.pkl``)."""
        array, metadata = self._open_with_metadata(case, kind, mmap_mode="r", dparams={"nthreads": 1})
        self._check_metadata(case, kind, metadata, seg_shape, self.config.case_spacing(properties))
        if array.dtype != ENCODINGS[kind].numpy_dtype or array.ndim != len(seg_shape) + 1:
            raise self.damaged(case, kind, f"stored as {array.dtype} with {array.ndim} axes, not as its metadata says")
        return StoredMap(array, ENCODINGS[kind], case, kind, self)

    def read(self, case: str, kind: str) -> np.ndarray:
        """The whole map of a case as float32 ``(C, *spatial)``, after checking its format (for tests and tools;
        training reads boxes through :meth:`open`)."""
        array, metadata = self._open_with_metadata(case, kind)
        self._check_format(case, kind, metadata)
        try:
            return ENCODINGS[kind].decode(array[:])
        except Exception as error:
            raise self.damaged(case, kind, error) from error


def create_map_file(
    path: Path, kind: str, channels: Iterable[np.ndarray], shape: tuple[int, ...], patch_size: tuple[int, ...]
) -> tuple[blosc2.NDArray, str]:
    """Create the blosc2 file of one map of ``shape`` = (C, *spatial) in the stored form of ``kind``
    (:data:`ENCODINGS`, :func:`chunking`) from its float channels, one at a time; returns the open
    array (for its metadata) and :func:`values_hash` of the stored values."""
    encoding = ENCODINGS[kind]
    chunks, blocks = chunking(shape, patch_size, encoding.numpy_dtype.itemsize)
    stored = blosc2.empty(shape, dtype=encoding.numpy_dtype, urlpath=str(path), mode="w", chunks=chunks, blocks=blocks, cparams=encoding.cparams)
    return stored, values_hash(_written_channels(stored, channels, encoding, shape))


def _written_channels(stored: blosc2.NDArray, channels: Iterable[np.ndarray], encoding: Encoding, shape: tuple[int, ...]):
    """Encode each channel, write it into its own chunks of ``stored`` and yield its stored form (for the hash)."""
    count = 0
    for count, channel in enumerate(channels, start=1):
        if count > shape[0] or tuple(channel.shape) != shape[1:]:
            raise ValueError(f"expected {shape[0]} channels of shape {shape[1:]}, got channel {count} of shape {channel.shape}")
        values = encoding.encode(channel)
        stored[count - 1 : count] = values[None]
        yield values
    if count != shape[0]:
        raise ValueError(f"expected {shape[0]} channels, got {count}")


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
