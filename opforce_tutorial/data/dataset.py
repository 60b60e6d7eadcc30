"""One dataclass for every CG reference dataset, and its verified loader.

A shipped dataset is ``data/<name>.npz`` with an entry in ``data/registry.json`` (sha256, the command
that made it, provenance). :func:`build_dataset` assembles it from replica-exchange run directories;
:func:`load_dataset` verifies and loads it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..observables import chain_observables, make_reference
from ..storage import atomic_write, read_json, register, sha256, verified
from ..systems import CG_SYSTEMS

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt or unknown; the message says how to regenerate it."""


@dataclass
class CGDataset:
    """CG reference data: positions (frames, beads, 3) in Å and mapped forces in kcal/mol/Å."""

    name: str
    positions: np.ndarray
    forces: np.ndarray
    temperature: float
    traj_ids: np.ndarray
    save_interval_ps: float
    bead_names: list[str]
    weights: np.ndarray | None = None
    masses: np.ndarray | None = None  # (beads,) amu; default: from the element of each bead name
    length_unit: str = "Å"
    energy_unit: str = "kcal/mol"

    def __post_init__(self):
        if self.positions.shape != self.forces.shape or self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise ValueError(f"positions {self.positions.shape} and forces {self.forces.shape} must both be (frames, beads, 3)")
        if len(self.traj_ids) != len(self.positions):
            raise ValueError("traj_ids needs one entry per frame")
        if self.weights is not None and len(self.weights) != len(self.positions):
            raise ValueError("weights needs one entry per frame")
        if self.masses is not None:
            self.masses = np.asarray(self.masses, dtype=float).reshape(-1)
            if len(self.masses) != self.positions.shape[1] or not (self.masses > 0).all():
                raise ValueError(f"masses needs one positive mass (amu) per bead, got {self.masses.tolist()}")

    @property
    def n_frames(self) -> int:
        return len(self.positions)

    @property
    def bead_masses(self) -> np.ndarray:
        """Bead masses (amu), shape (beads, 1): :attr:`masses` if given, else from the element of each bead's
        atom name (CA → carbon).

        The mass of a bead only sets the time scale of CG dynamics, not its equilibrium distribution.
        """
        if self.masses is not None:
            return self.masses[:, None]
        table = {"C": 12.011, "N": 14.007, "O": 15.999, "S": 32.06}
        if any(n[:1] not in table for n in self.bead_names):
            raise ValueError(f"no element mass for the bead names {self.bead_names}: give the bead masses in amu "
                             "(masses=..., `bead_masses` in a frames file, or `opforce study --masses`)")
        return np.array([[table[n[0]]] for n in self.bead_names])

    def equilibrium_frames(self) -> "CGDataset":
        """The dataset as an unweighted equilibrium sample, for code that treats every frame alike.

        Without weights (or with equal ones) that is the dataset itself. Otherwise ``n_frames`` frames are
        drawn by systematic resampling: frame i appears ⌊n wᵢ⌋ or ⌈n wᵢ⌉ times (w normalised), so the
        resample is as close to the weighted distribution as whole copies allow; frames keep their
        dataset order, so every trajectory stays contiguous and in time order (the saving interval no
        longer spaces them evenly).
        """
        if self.weights is None or np.ptp(self.weights) <= 1e-12 * np.abs(self.weights).max():
            return self
        idx = equilibrium_resample(self.weights)
        return CGDataset(name=self.name, positions=self.positions[idx], forces=self.forces[idx],
                         temperature=self.temperature, traj_ids=self.traj_ids[idx],
                         save_interval_ps=self.save_interval_ps, bead_names=self.bead_names, masses=self.masses)

    def topology(self):
        """An mdtraj topology of the beads (one residue per bead, CA-named atoms joined by bonds i, i+1)."""
        import mdtraj as md

        top = md.Topology()
        chain = top.add_chain()
        atoms = []
        for name in self.bead_names:
            res = top.add_residue("CG", chain)
            atoms.append(top.add_atom(name, md.element.carbon, res))
        for a, b in zip(atoms[:-1], atoms[1:]):
            top.add_bond(a, b)
        return top


@dataclass
class Trajectory:
    positions: np.ndarray  # (frames, beads, 3) Å
    forces: np.ndarray  # (frames, beads, 3) kcal/mol/Å
    source: str
    temperature: float
    save_interval_ps: float
    replica_exchange: bool = False  # the target replica of a replica-exchange run
    energies: np.ndarray | None = None  # (frames,) potential energy, kcal/mol, where the run saved it
    system: str | None = None  # the molecule the run simulated (its run.json), e.g. "ala2"


def load_trajectories(run_dirs: list[str | Path]) -> list[Trajectory]:
    """Every trajectory of the runs: one per plain/replica-exchange run, one per copy of a copies run."""
    out = []
    for run in sorted(Path(r) for r in run_dirs):
        cfg = json.loads((run / "run.json").read_text())
        chunks = sorted(run.glob("chunk_*.npz"))
        if not chunks:
            raise DatasetError(f"{run} has no frames yet (no chunk_*.npz)")
        data = [np.load(c) for c in chunks]
        pos = np.concatenate([d["cg_positions"] for d in data])
        frc = np.concatenate([d["cg_forces"] for d in data])
        # energies only where every chunk has them (copies runs saved them from session 6 on)
        energy = np.concatenate([d["energy_kcal"] for d in data]) if all("energy_kcal" in d for d in data) else None
        if "n_copies" in cfg:
            out += [Trajectory(pos[:, k], frc[:, k], f"{run.name}/copy{k:02d}", cfg["temperature"], cfg["save_every_ps"],
                               energies=None if energy is None else energy[:, k], system=cfg.get("system"))
                    for k in range(cfg["n_copies"])]
        else:
            out.append(Trajectory(pos, frc, run.name, cfg["temperatures"][0], cfg["exchange_every_ps"],
                                  replica_exchange=len(cfg["temperatures"]) > 1, energies=energy,
                                  system=cfg.get("system")))
    return out


def thin_to_common_interval(trajs: list[Trajectory]) -> list[Trajectory]:
    """Every trajectory at the longest saving interval of the set (every k-th frame; k must be whole).

    Runs saved at 1 ps and at 2 ps pool into one dataset at 2 ps, so every frame stands for the same
    span of time and plain frame averages stay time averages.
    """
    interval = max(t.save_interval_ps for t in trajs)
    out = []
    for t in trajs:
        stride = interval / t.save_interval_ps
        if abs(stride - round(stride)) > 1e-9:
            raise ValueError(f"{t.source} saves every {t.save_interval_ps} ps: not a whole fraction of {interval} ps")
        k = int(round(stride))
        out.append(Trajectory(t.positions[::k], t.forces[::k], t.source, t.temperature, interval, t.replica_exchange,
                              None if t.energies is None else t.energies[::k], t.system))
    return out


def build_dataset(name: str, run_dirs: list[str | Path], bead_names: list[str], data_dir: Path = DATA_DIR,
                  weights: np.ndarray | None = None, provenance: dict | None = None,
                  trajectories: list[Trajectory] | None = None) -> dict:
    """Concatenate the trajectories of ``run_dirs`` into ``data/<name>.npz`` and register it.

    Runs saved at different intervals are thinned to the longest (:func:`thin_to_common_interval`).
    ``weights`` (one per frame of the thinned set, e.g. an MSM's equilibrium weights) are stored with
    the frames; ``provenance`` is added to the registry entry; ``trajectories`` are the runs' already
    loaded trajectories (:func:`load_trajectories`), to save reading them again.
    """
    trajs = thin_to_common_interval(load_trajectories(run_dirs) if trajectories is None else trajectories)
    systems = {t.system for t in trajs if t.system is not None}
    if len(systems) > 1 or (name in CG_SYSTEMS and systems - {name}):
        raise DatasetError(f"the runs simulated {sorted(systems)}, not one molecule {name!r}: pass only {name} runs")
    if len({t.positions.shape[1] for t in trajs} | {len(bead_names)}) > 1:
        raise DatasetError(f"{len(bead_names)} bead names for runs with {sorted({t.positions.shape[1] for t in trajs})} "
                           "beads per frame")
    temperatures = {t.temperature for t in trajs}
    intervals = {t.save_interval_ps for t in trajs}
    if len(temperatures) > 1:
        raise ValueError(f"runs differ in temperature: {sorted(temperatures)} K")
    positions = np.concatenate([t.positions for t in trajs])
    ids = np.concatenate([np.full(len(t.positions), k, dtype=np.int16) for k, t in enumerate(trajs)])
    if weights is not None and len(weights) != len(positions):
        raise ValueError(f"{len(weights)} weights for {len(positions)} frames")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"{name}.npz"
    extra = {} if weights is None else {"weights": np.asarray(weights, dtype=np.float64)}
    arrays = dict(positions=positions, forces=np.concatenate([t.forces for t in trajs]), traj_ids=ids,
                  traj_sources=np.array([t.source for t in trajs]), temperature=temperatures.pop(),
                  save_interval_ps=intervals.pop(), bead_names=np.array(bead_names), **extra)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    registry_path = data_dir / "registry.json"
    registry = {}
    registry[name] = {"file": path.name, "sha256": sha256(path), "command": build_command(name),
                      "runs": [str(Path(r)) for r in sorted(run_dirs)], "n_frames": len(positions),
                      "n_trajectories": len(trajs), "temperature_K": trajs[0].temperature,
                      "save_interval_ps": trajs[0].save_interval_ps, "created": time.strftime("%Y-%m-%d"),
                      **(provenance or {})}
    register(registry_path, registry)
    write_reference_histograms(name, data_dir)
    return registry[name]


def write_reference_histograms(name: str, data_dir: Path = DATA_DIR) -> dict:
    """``data/<name>_histograms.npz``: the small saved reference histograms of every observable the
    dataset's system owns (a dataset of no known system: its chain observables), equilibrium-weighted
    when the dataset has weights, so that chapters evaluate without the dataset; registered as
    ``<name>-histograms`` (``opforce data histograms <name>``, also run by ``opforce data build``)."""
    ds = load_dataset(name, data_dir)
    system = CG_SYSTEMS.get(name)
    observables = system.observables if system else chain_observables(ds.positions.shape[1])
    path = data_dir / f"{name}_histograms.npz"
    make_reference(ds.positions, observables, ds.weights).save(path)
    entry = {"file": path.name, "sha256": sha256(path), "command": f"opforce data histograms {name}",
             "made_from": f"{name}.npz", "weighted": ds.weights is not None, "created": time.strftime("%Y-%m-%d")}
    register(data_dir / "registry.json", {f"{name}-histograms": entry})
    return entry


def registry_entry(name: str, data_dir: Path = DATA_DIR) -> dict:
    """The ``data/registry.json`` entry of a shipped file (dataset or reference histograms)."""
    registry_path = data_dir / "registry.json"
    registry = read_json(registry_path, "restore it with `git checkout -- data/registry.json`") if registry_path.exists() else {}
    if name not in registry:
        raise DatasetError(f"{name!r} has no entry in {registry_path}; {_fix(name)}")
    return registry[name]


def build_command(name: str) -> str:
    """The command that rebuilds dataset ``name`` (its system's; empty for a dataset of no known system)."""
    system = CG_SYSTEMS.get(name)
    return system.build_command if system else ""


def _fix(name: str) -> str:
    system = name.split("-")[0]
    return f"regenerate it with `{build_command(system) or 'opforce data build ' + system}` (see data/README.md)"


def verified_path(name: str, data_dir: Path = DATA_DIR) -> Path:
    """Path of a registered data file after checking that it exists and matches its sha256."""
    entry = registry_entry(name, data_dir)
    return verified(data_dir / entry["file"], entry["sha256"], "data file", _fix(name), DatasetError)


def load_dataset(name: str, data_dir: Path = DATA_DIR) -> CGDataset:
    """Load ``data/<name>.npz`` after verifying its sha256 against ``data/registry.json``."""
    d = np.load(verified_path(name, data_dir))
    return CGDataset(name=name, positions=d["positions"], forces=d["forces"], temperature=float(d["temperature"]),
                     traj_ids=d["traj_ids"], save_interval_ps=float(d["save_interval_ps"]),
                     bead_names=[str(b) for b in d["bead_names"]], weights=d["weights"] if "weights" in d else None,
                     masses=None if name not in CG_SYSTEMS else CG_SYSTEMS[name].bead_masses)


def equilibrium_resample(weights) -> np.ndarray:
    """Indices of n frames drawn by systematic resampling from per-frame weights (n = len(weights)):
    frame i appears ⌊n wᵢ⌋ or ⌈n wᵢ⌉ times (w normalised), in dataset order."""
    w = np.asarray(weights, dtype=float)
    if not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise ValueError("weights must be finite and non-negative with a positive sum")
    n = len(w)
    return np.minimum(np.searchsorted(np.cumsum(w / w.sum()), (np.arange(n) + 0.5) / n), n - 1)


@dataclass
class Frames:
    """Frames to label or train on (:func:`load_frames`): positions (frames, beads, 3) in Å, temperature
    in K, a name, and how per-frame weights were used (``weighting``, recorded in every output)."""

    positions: np.ndarray
    temperature: float
    name: str
    weighting: str


def load_frames(spec: str | Path) -> Frames:
    """Frames to label or train on, as the chapters use them: an equilibrium sample.

    ``spec`` is a registered dataset name (see :func:`load_dataset`) or the path of an npz file with
    ``positions`` and ``temperature`` (and, optionally, ``weights`` per frame and ``length_unit``, which
    must then be "Å"). Per-frame weights (MSM or basin weights) become repeated frames by the
    chapters' rule (:meth:`CGDataset.equilibrium_frames`), so the CLI labels the distribution the book does.
    """
    path = Path(spec)
    resampled = "equilibrium resample of the per-frame weights (systematic resampling, as the chapters)"
    ds = load_dataset(str(spec)) if path.suffix != ".npz" else load_user_dataset(path)
    if ds.weights is None:
        return Frames(ds.positions, ds.temperature, ds.name, "unweighted (no per-frame weights)")
    return Frames(ds.equilibrium_frames().positions, ds.temperature, ds.name, resampled)


def load_user_dataset(path: str | Path, masses=None) -> CGDataset:
    """A user's own CG frames as a dataset (not registered): an npz with ``positions`` (frames, beads, 3)
    in Å and ``temperature`` in K, and optionally ``forces`` (kcal/mol/Å; without them the reference label
    source is unavailable), ``weights`` per frame, ``bead_names``, ``bead_masses`` (amu) and ``traj_ids``
    (one per frame, each trajectory contiguous and in time order; default: one trajectory). ``masses``
    (amu per bead) overrides the file's. Validated before any work (Å not nm, finite, a temperature in K).
    """
    from ..checks import check_frames, check_temperature

    path = Path(path)
    if not path.exists():
        raise DatasetError(f"frames file {path} does not exist")
    d = np.load(path)
    missing = {"positions", "temperature"} - set(d.files)
    if missing:
        raise DatasetError(f"{path} lacks {sorted(missing)}: it needs positions (frames, beads, 3) in Å and "
                           "temperature in K")
    if "length_unit" in d.files and str(d["length_unit"]) != "Å":
        raise DatasetError(f"{path} has length_unit {str(d['length_unit'])!r}; convert positions to Å first")
    positions = check_frames(d["positions"], f"{path}: positions").astype(np.float32)
    n, beads = positions.shape[:2]
    forces = d["forces"].astype(np.float32) if "forces" in d.files else np.full_like(positions, np.nan)
    if forces.shape != positions.shape:
        raise DatasetError(f"{path}: forces {forces.shape} do not match positions {positions.shape}")
    if "weights" in d.files and len(d["weights"]) != n:
        raise DatasetError(f"{path} has {len(d['weights'])} weights for {n} frames")
    names = [str(b) for b in d["bead_names"]] if "bead_names" in d.files else [f"B{i}" for i in range(beads)]
    masses = masses if masses is not None else (d["bead_masses"] if "bead_masses" in d.files else None)
    return CGDataset(name=path.stem, positions=positions, forces=forces,
                     temperature=check_temperature(float(d["temperature"]), f"{path}: temperature"),
                     traj_ids=d["traj_ids"] if "traj_ids" in d.files else np.zeros(n, dtype=int),
                     save_interval_ps=float(d["save_interval_ps"]) if "save_interval_ps" in d.files else 1.0,
                     bead_names=names, weights=d["weights"] if "weights" in d.files else None, masses=masses)
