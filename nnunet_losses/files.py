"""Files written so that a reader never sees half of them: write a temporary file beside the target, then rename.

A rename within one folder is atomic on POSIX file systems, so a process that is killed
mid-write (a Slurm time limit, Ctrl-C, a full disk) leaves either the old file or the new
one, never a truncated one. Every file of the package that another process may read while
it is written (run records, markers, study files, CSV results, plans) goes through here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomically(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write ``content`` (text or bytes) to ``path`` through ``.<name>.tmp`` and a rename; returns the path."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    if isinstance(content, bytes):
        temporary.write_bytes(content)
    else:
        temporary.write_text(content)
    temporary.replace(path)
    return path


def write_json(path: str | os.PathLike, content: dict | list) -> Path:
    """Write JSON (indented) atomically."""
    return write_atomically(path, json.dumps(content, indent=2))


def read_json(path: str | os.PathLike) -> dict | list | None:
    """A JSON file's content, or ``None`` if it is missing or unreadable (e.g. half written by an older version)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
