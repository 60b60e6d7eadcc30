"""File helpers shared by every writer of the package: checksums and atomic npz writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_savez(path: Path, **arrays) -> None:
    """``np.savez`` to a temporary file beside ``path`` (unique per process), then rename over it.

    A reader never sees a half-written file, and processes writing different files of one directory
    (torchrun ranks) do not share a temporary name.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
