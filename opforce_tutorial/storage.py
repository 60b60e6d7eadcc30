"""File helpers shared by every writer of the package: checksums, atomic writes, locked JSON registries.

Atomic writes go to a hidden temporary file beside the target, ``.<name>.<pid>.tmp``, which is flushed
to disk and renamed over the target: a reader never sees a half-written file, a kill mid-write leaves
the old file (or none) plus a temporary that no result pattern (``chunk_*.npz``, ``*.pt``, ``*.json``)
matches, and processes writing different files of one directory (torchrun ranks) do not share a
temporary name. :func:`remove_stale_temporaries` clears the leftovers of dead processes on start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(a) -> str:
    """Hex sha256 of an array's bytes (C order): what a run or checkpoint records of its inputs."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def state_sha256(module) -> str:
    """Hex sha256 of a torch module's state dict (names, dtypes, shapes and values, in key order): the
    checksum of weights held in memory, which a labelled set records of the kernel that made it."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def verified(path: str | Path, expected_sha256: str, what: str, fix: str, error: type[Exception] = ValueError) -> Path:
    """``path`` after checking that it exists and has ``expected_sha256``: the one verifier of every shipped
    file (data, weights, saved samples). Raises ``error`` naming ``what`` the file is and the ``fix``."""
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} is missing; {fix}")
    digest = sha256(path)
    if digest != expected_sha256:
        raise error(f"{what} {path} is corrupt: sha256 {digest} does not match the registry's {expected_sha256}; {fix}")
    return path


def register(registry: str | Path, entries: dict[str, dict]) -> None:
    """Set ``{name: entry}`` in a registry file: the one writer of every ``registry.json`` (one locked,
    atomic read-modify-write, so parallel commands lose no entry)."""
    update_json(registry, lambda current: current.update(entries))


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | Path, write: Callable) -> None:
    """Call ``write(binary file)`` on a temporary beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_savez(path: str | Path, **arrays) -> None:
    """``np.savez`` of ``arrays`` to ``path``, atomically (the name is kept as given: no ``.npz`` is added)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, obj, sort_keys: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def atomic_torch_save(path: str | Path, obj) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def read_json(path: str | Path, rebuild: str = "") -> dict:
    """A JSON file's content; a file that is not valid JSON raises an error naming it (and ``rebuild``)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        hint = f"; {rebuild}" if rebuild else ""
        raise ValueError(f"{path} is not valid JSON ({err}){hint}") from None


@contextmanager
def locked(path: str | Path, busy: str | None = None):
    """An exclusive lock on ``.<name>.lock`` beside ``path`` while the ``with`` block runs: writers queue,
    or, with ``busy`` (the error message), a second one is refused instead of waiting."""
    lock = Path(path).with_name(f".{Path(path).name}.lock")
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            raise ValueError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def update_json(path: str | Path, update: Callable[[dict], None], sort_keys: bool = True) -> dict:
    """Read ``path`` (or start from ``{}``), let ``update`` change the dict in place, write it back
    atomically; the whole read-modify-write holds :func:`locked`, so concurrent writers lose nothing."""
    path = Path(path)
    with locked(path):
        data = read_json(path) if path.exists() else {}
        update(data)
        atomic_write_json(path, data, sort_keys=sort_keys)
    return data


class RunClock:
    """The wall time of a run that may be killed and resumed, invocation by invocation: a ``with`` block
    reads the seconds of earlier invocations from ``path`` (a run's work folder holds it) and a daemon
    thread rewrites the file atomically every ``every`` seconds, so a killed invocation loses at most that
    much of its time. :attr:`invocations_s` lists each invocation's seconds, :attr:`total_s` their sum."""

    def __init__(self, path: str | Path, every: float = 30.0):
        if not every > 0:
            raise ValueError(f"every must be positive seconds, got {every}")
        self.path, self.every = Path(path), every
        self._earlier: list[float] = []
        self._t0 = self._t1 = None
        self._stop = threading.Event()

    def __enter__(self) -> "RunClock":
        if self.path.exists():
            self._earlier = [float(s) for s in read_json(self.path)["invocations_s"]]
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, {"invocations_s": self.invocations_s})

    def __exit__(self, *exc) -> None:
        self._t1 = time.perf_counter()
        self._stop.set()
        self._thread.join()
        self._write()

    @property
    def invocations_s(self) -> list[float]:
        now = time.perf_counter() if self._t1 is None else self._t1
        return [*self._earlier, round(now - self._t0, 1)]

    @property
    def total_s(self) -> float:
        return round(sum(self.invocations_s), 1)

    def record(self) -> dict:
        """The run's wall time for a registry entry: ``wall_time_s``, and each invocation's if it resumed."""
        return {"wall_time_s": self.total_s, **({"invocations_s": self.invocations_s} if self._earlier else {})}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporaries of processes that are no longer running (also those of older versions,
    ``<name>.<pid>.tmp.npz``); returns what was removed."""
    removed = []
    for tmp in [*Path(directory).glob(".*.tmp"), *Path(directory).glob("*.tmp.npz")]:
        parts = tmp.name.split(".")
        pid = parts[-2] if tmp.name.endswith(".tmp") else parts[-3]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
