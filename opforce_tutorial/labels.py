"""The labelling pipeline: frames through a kernel to a labelled set (positions y, force labels).

Plan. From ``n`` input frames keep ``round(data_fraction · n)``, or ``n_frames`` (a seeded random subset), and draw
``repeats`` kernel samples from each, so that a kernel yields about as many labelled samples as the
full set (the paper labels 10 % of the frames 10 times). The (kept frame, repeat) work items are cut into
batches of ``batch_size``; batch ``b`` takes its randomness from its own generator seeded with
``seed · 1_000_003 + b``, so the labels do not depend on how batches are spread over processes, nor on
interruptions.

Incremental output. Each finished batch is written atomically to ``<out>.parts/batch_<b>.npz``; a rerun
skips batches that are there, and refuses to continue if the plan (kernel, model checksum, input,
fractions, seed, batch size) changed. When every batch is done the parts are merged in batch order
into ``<out>`` (an npz: ``positions``, ``forces``, ``frame_index`` into the input frames, and a JSON
``metadata`` string) and the parts directory is removed; a rerun of the same plan on a finished
``<out>`` returns it without labelling again.

Sharding. Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` labels the batches ``b ≡ r (mod world
size)`` (process group: gloo on CPU, NCCL on GPU), all ranks meet at a barrier, and rank 0 merges. The
ranks share the parts directory, so they must see the same file system. A pipeline that goes on from
the labels (``opforce pretrain``) does so on rank 0 only: the other ranks end it with :class:`ShareLabelled`,
which the command line reports as a clean exit.

Labels or positions that are not finite are dropped and counted (``metadata["n_dropped"]``), never
zero-filled. Units: positions Å, labels kcal/mol/Å at the input's temperature. Kernels that solve an
ODE report each label's cost and error estimate (``kernel.last_costs``); they are kept per label
(:attr:`LabelledSet.costs`), and chunks the solver gave up on are counted (``metadata["n_failed_chunks"]``).
"""

from __future__ import annotations

import contextlib

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .kernels.base import keep_finite
from .checks import check_frames, check_temperature
from .storage import array_sha256, atomic_savez, atomic_write_json, locked, remove_stale_temporaries


#: A kernel's ``last_costs`` keys → the per-label arrays of a labelled set.
COST_NAMES = {"evaluations": "solver_evaluations", "accepted": "solver_accepted", "rejected": "solver_rejected",
              "label_error": "label_error"}


@dataclass
class LabelSettings:
    """How many labels to make: ``data_fraction`` of the frames (or ``n_frames`` of them, if given),
    ``repeats`` kernel draws each."""

    data_fraction: float = 0.1
    repeats: int = 10
    batch_size: int = 256
    seed: int = 0
    n_frames: int | None = None

    def __post_init__(self):
        if not 0 < self.data_fraction <= 1:
            raise ValueError(f"data_fraction must be in (0, 1], got {self.data_fraction}")
        if self.repeats < 1 or self.batch_size < 1 or (self.n_frames is not None and self.n_frames < 1):
            raise ValueError("repeats, batch_size and n_frames must be at least 1")

    def frames_to_keep(self, n: int) -> int:
        """How many of ``n`` input frames are labelled: ``n_frames`` (at most n), else ``round(data_fraction · n)``."""
        return min(n, self.n_frames) if self.n_frames is not None else max(1, round(self.data_fraction * n))


def seeded_subset(n_total: int, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` of ``n_total`` frames (at most all), drawn without replacement with ``seed``, in order: the
    one frame-choice rule of labels, the reference source's frames and kernel outputs."""
    return np.sort(np.random.default_rng(seed).choice(n_total, min(n, n_total), replace=False))


@dataclass
class LabelledSet:
    """Kernel outputs: positions y (n, beads, 3) in Å, labels (n, beads, 3) in kcal/mol/Å."""

    positions: np.ndarray
    forces: np.ndarray
    frame_index: np.ndarray
    metadata: dict
    #: Per label, for kernels that report a solver cost (the CNF's ``last_costs``): ``solver_evaluations``,
    #: ``solver_accepted``, ``solver_rejected`` (of the solve that made it) and ``label_error`` (kcal/mol/Å).
    costs: dict = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        return len(self.positions)


def kernel_description(kernel) -> dict:
    """The kernel's type (and its conditional density's), widths (Å), k_BT (kcal/mol) and solver, for the metadata."""
    out = {"kernel": type(kernel).__name__}
    density = getattr(kernel, "flow", None)
    if density is not None:
        out["density"] = type(density).__name__
    for attr, key in (("noise_std", "noise_std_A"), ("prior_std", "prior_std_A"), ("kbt", "kbt_kcal_per_mol"),
                      ("solver", "solver"), ("method", "label_method"), ("rtol", "rtol"), ("atol", "atol_A")):
        for owner in (kernel, density):
            if owner is not None and hasattr(owner, attr) and key not in out:
                out[key] = getattr(owner, attr)
    return out


class ShareLabelled(Exception):
    """Raised by a pipeline on a non-zero torchrun rank once its share of the labels is written (rank 0 merges
    them and goes on alone)."""


def _distributed(device: torch.device):
    """(rank, world size, torch.distributed or None) from the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dist


def label_frames(positions, kernel, temperature: float, out: str | Path, settings: LabelSettings = LabelSettings(),
                 device: str | torch.device = "cpu", model_sha256: str | None = None, source: str = "",
                 progress: bool = True, frames: str = "") -> LabelledSet | None:
    """Label ``positions`` (frames, beads, 3; Å) with ``kernel`` and write ``out`` (see module docstring).

    ``kernel`` must be on ``device`` and have ``sample_with_forces(x, generator)``; ``temperature``
    (kelvin) is recorded and must be the one of the kernel's k_BT. ``model_sha256`` (of the kernel's
    weights file, or :func:`~opforce_tutorial.storage.state_sha256` of weights in memory), ``source``
    (dataset name) and ``frames`` (how its per-frame weights were used, see
    :func:`~opforce_tutorial.data.dataset.load_frames`) go into the metadata. Returns the merged
    :class:`LabelledSet` on rank 0 and ``None`` on the other ranks.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    positions = check_frames(positions).astype(np.float32, copy=False)
    check_temperature(temperature)
    rank, world, dist = _distributed(device)
    out = Path(out)
    parts = out.with_name(out.name + ".parts")

    n_keep = settings.frames_to_keep(len(positions))
    kept = seeded_subset(len(positions), n_keep, settings.seed)
    work = np.repeat(kept, settings.repeats)  # frame index of every work item
    n_batches = -(-len(work) // settings.batch_size)
    plan = {**kernel_description(kernel), "model_sha256": model_sha256, "input_sha256": array_sha256(positions),
            "source": source, "frames": frames, "temperature_K": float(temperature), **asdict(settings),
            "n_frames_in": len(positions), "n_kept_frames": int(n_keep), "n_batches": n_batches}
    if out.exists() and rank == 0 and world == 1:  # finished before (a resumed pipeline): the same plan is kept
        done = load_labels(out)
        if {k: done.metadata.get(k) for k in plan} == json.loads(json.dumps(plan)):
            return done
    lock = contextlib.ExitStack()  # rank 0 holds the output's lock until the merge
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        lock.enter_context(locked(parts / "labelling", busy=f"another process is labelling into {out}; wait for it "
                                                            "to finish"))
        remove_stale_temporaries(parts)
        plan_path = parts / "plan.json"
        if plan_path.exists() and json.loads(plan_path.read_text()) != json.loads(json.dumps(plan)):
            raise ValueError(f"{parts} holds an unfinished run with a different plan; remove it to start afresh")
        atomic_write_json(plan_path, plan)
    if dist is not None:
        dist.barrier()

    mine = [b for b in range(rank, n_batches, world) if not (parts / f"batch_{b:06d}.npz").exists()]
    t0 = time.perf_counter()
    for b in tqdm(mine, desc=f"labels ({plan['kernel']}, rank {rank}/{world})", disable=not progress or rank != 0,
                  mininterval=2.0):
        idx = work[b * settings.batch_size:(b + 1) * settings.batch_size]
        gen = torch.Generator(device=device).manual_seed(settings.seed * 1_000_003 + b)
        x = torch.as_tensor(positions[idx], device=device)
        failed_before = getattr(kernel, "failed_chunks", 0)
        y, f = kernel.sample_with_forces(x, generator=gen)
        costs = {COST_NAMES[k]: v.to(device) for k, v in getattr(kernel, "last_costs", {}).items()}
        y, f, frames, *kept_costs, n_dropped = keep_finite(y.detach(), f.detach(), torch.as_tensor(idx, device=device),
                                                           *costs.values())
        atomic_savez(parts / f"batch_{b:06d}.npz", positions=y.cpu().numpy().astype(np.float32),
                      forces=f.cpu().numpy().astype(np.float32), frame_index=frames.cpu().numpy(),
                      n_dropped=n_dropped, n_failed_chunks=getattr(kernel, "failed_chunks", 0) - failed_before,
                      **{k: v.cpu().numpy() for k, v in zip(costs, kept_costs)})
    wall = time.perf_counter() - t0
    if dist is not None:
        dist.barrier()
    if rank != 0:
        return None

    chunks = [np.load(parts / f"batch_{b:06d}.npz") for b in range(n_batches)]
    positions_out = np.concatenate([c["positions"] for c in chunks])
    cost_names = [k for k in COST_NAMES.values() if k in chunks[0]] if chunks else []
    metadata = {**plan, "n_labels": len(positions_out), "n_dropped": int(sum(int(c["n_dropped"]) for c in chunks)),
                "n_failed_chunks": int(sum(int(c["n_failed_chunks"]) for c in chunks)),
                "length_unit": "Å", "force_unit": "kcal/mol/Å", "world_size": world, "device": str(device),
                "wall_time_s_last_invocation": round(wall, 2), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    labelled = LabelledSet(positions=positions_out, forces=np.concatenate([c["forces"] for c in chunks]),
                           frame_index=np.concatenate([c["frame_index"] for c in chunks]).astype(np.int64),
                           metadata=metadata, costs={k: np.concatenate([c[k] for c in chunks]) for k in cost_names})
    atomic_savez(out, positions=labelled.positions, forces=labelled.forces, frame_index=labelled.frame_index,
                  metadata=json.dumps(labelled.metadata), **labelled.costs)
    shutil.rmtree(parts)
    lock.close()
    return labelled


def load_labels(path: str | Path) -> LabelledSet:
    """Read a labelled set written by :func:`label_frames`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labelled set {path} does not exist; make it with `opforce label ... --out {path}`")
    d = np.load(path)
    return LabelledSet(positions=d["positions"], forces=d["forces"], frame_index=d["frame_index"],
                       metadata=json.loads(str(d["metadata"])),
                       costs={k: d[k] for k in COST_NAMES.values() if k in d.files})
