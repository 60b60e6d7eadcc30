"""Many independent copies of one molecule in one OpenMM System: GPU throughput for small peptides.

A 166-atom peptide leaves a GPU almost idle: each step is a few dozen kernel launches on a few hundred
atoms. K copies in one System make every launch K times larger at nearly the same cost, so the
aggregate sampling rate grows with K until the all-pairs nonbonded work (no cutoff: O((K·N)²)) takes
over; ``opforce data copies --probe`` measures where that happens on a machine.

Independence. Copy k sits near site s_k of a cubic lattice of spacing ``spacing_nm``, held there by a
harmonic restraint on its centre of mass alone,

.. math::  U_k = \\tfrac12 k_\\mathrm{com} |R_k - s_k|^2, \\qquad R_k = \\frac{\\sum_{a\\in k} m_a r_a}{\\sum_{a\\in k} m_a}.

The molecule's own energy is translation invariant, so the configurational integral factorises into
centre of mass × internal coordinates and the restraint leaves the internal distribution (and the CG
distribution) exactly as it is. It lives in force group :data:`RESTRAINT_GROUP`, which the saved
forces leave out. Copies still feel each other through the untruncated electrostatics; in GB the
interaction of distant charges is screened to q_i q_j / (ε_solvent r) (ε = 78.5), and the part of it
that varies across a molecule (what could bias internal coordinates) falls off as size/r. The tests
check that every copy's mapped forces equal those of the lone molecule to a small tolerance.

Every copy is its own trajectory; all copies share temperature, friction and time step. Frames are
saved every ``save_every_ps`` in chunk files ``chunk_<first iteration>.npz`` with CG positions (Å,
relative to the copy's lattice site) and mapped CG forces (kcal/mol/Å), shaped (frames, copies,
beads, 3), and every copy's potential energy as a lone molecule (kcal/mol, shaped (frames, copies);
evaluated in a separate one-molecule context, so neither the restraint nor the other copies enter it:
the energy that reweighting to another temperature needs); each chunk is followed by an atomic
checkpoint, as in :mod:`.remd`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as u
from tqdm.auto import tqdm

from ..checks import check_count, check_md_settings, check_positive, check_temperature
from ..storage import atomic_savez, atomic_write_json
from ..units import ANGSTROM_PER_NM, KJ_PER_KCAL
from .molecules import SYSTEMS
from .remd import FORCE_KJ_NM_TO_KCAL_A, log_invocation, run_config

#: force group of the centre-of-mass restraints (left out of the saved forces)
RESTRAINT_GROUP = 31


@dataclass
class CopiesConfig:
    system: str = "cln025"
    n_copies: int = 16
    temperature: float = 340.0
    timestep_fs: float = 4.0
    friction_per_ps: float = 0.1
    save_every_ps: float = 10.0
    chunk_frames: int = 50
    spacing_nm: float = 10.0
    com_k_kj_per_nm2: float = 10.0
    start_from: str | None = None
    start_near: str | None = None
    equilibrium_starts: bool = False
    seed: int = 0
    platform: str = "CPU"
    threads: int = 1

    def __post_init__(self):
        check_count(self.n_copies, "--copies")
        check_temperature(self.temperature, "--temperature")
        check_md_settings(self.timestep_fs, self.friction_per_ps, self.save_every_ps, self.chunk_frames, self.threads)
        check_positive(self.spacing_nm, "spacing_nm", "nm")

    @property
    def steps_per_frame(self) -> int:
        return int(round(self.save_every_ps * 1000.0 / self.timestep_fs))


def lattice_sites(n: int, spacing_nm: float) -> np.ndarray:
    """(n, 3) sites of a cubic lattice, filled row by row (nm)."""
    m = math.ceil(round(n ** (1 / 3), 9))
    grid = np.array([(i, j, k) for i in range(m) for j in range(m) for k in range(m)], dtype=float)
    return grid[:n] * spacing_nm


def repeated_topology(topology: app.Topology, n: int) -> app.Topology:
    """``n`` copies of ``topology`` (chains, residues, atoms, bonds) in one topology, copy after copy."""
    out = app.Topology()
    for _ in range(n):
        atoms = {}
        for chain in topology.chains():
            new_chain = out.addChain(chain.id)
            for res in chain.residues():
                new_res = out.addResidue(res.name, new_chain, res.id, res.insertionCode)
                for atom in res.atoms():
                    atoms[atom] = out.addAtom(atom.name, atom.element, new_res)
        for bond in topology.bonds():
            out.addBond(atoms[bond[0]], atoms[bond[1]], bond.type, bond.order)
    return out


def start_structures(run_dir: str | Path, n: int, near: np.ndarray | None = None,
                     bead_atoms: list[int] | None = None,
                     equilibrium_seed: int | None = None) -> tuple[np.ndarray, list[int]]:
    """``n`` all-atom starts (nm) from the saved all-atom frames of an earlier run, and their iterations.

    With ``equilibrium_seed`` the starts are ``n`` distinct frames drawn uniformly at random (seeded):
    a sample of the run's own distribution. When that run samples equilibrium at the copies'
    temperature (e.g. the target replica of a replica-exchange run), plain MD from these starts stays
    in equilibrium at every time (the Boltzmann distribution is stationary under Langevin dynamics),
    so the copies' frames are equilibrium frames even where the copies themselves cross barriers
    rarely; the starts set how well slow basins are represented (see ``data/README.md``).

    Otherwise half (rounded up, so a single start is the closest frame) are the most compact frames
    (smallest radius of gyration of the whole molecule, so starts near folded states come from the run
    itself) or, given ``near`` (bead positions in Å, e.g. a folded reference) and the ``bead_atoms``,
    the frames closest to it by bead RMSD; the rest are evenly spaced in time over the run. Such starts
    are not an equilibrium sample: reweight (an MSM) after.
    """
    chunks = sorted(Path(run_dir).glob("chunk_*.npz"))
    frames, its = [], []
    for c in chunks:
        d = np.load(c)
        frames.append(d["aa_positions"])
        its.append(d["aa_iteration"])
    if not chunks or not sum(len(f) for f in frames):
        raise ValueError(f"{run_dir} holds no all-atom frames to start from")
    xyz = np.concatenate(frames) / ANGSTROM_PER_NM
    its = np.concatenate(its)
    if n > len(xyz):
        raise ValueError(f"{run_dir} holds {len(xyz)} all-atom frames, fewer than the {n} starts asked for")
    if equilibrium_seed is not None:
        chosen = np.sort(np.random.default_rng(equilibrium_seed).choice(len(xyz), n, replace=False))
        return xyz[chosen], [int(its[i]) for i in chosen]
    if near is None:
        closeness = np.sqrt(((xyz - xyz.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1))  # radius of gyration
    else:
        from ..structures import rmsd

        closeness = rmsd(xyz[:, bead_atoms] * ANGSTROM_PER_NM, near)
    compact = list(np.argsort(closeness)[: n - n // 2])
    rest = [i for i in np.linspace(0, len(xyz) - 1, len(xyz)).astype(int) if i not in compact]
    spread = [rest[int(j)] for j in np.linspace(0, len(rest) - 1, n - len(compact))] if n > len(compact) else []
    chosen = compact + spread
    return xyz[chosen], [int(its[i]) for i in chosen]


class CopiesMD:
    """K copies of a molecule in one System; :meth:`run` extends every copy to a target length."""

    def __init__(self, out_dir: str | Path, config: CopiesConfig | None = None, asked: dict | None = None):
        self.out = Path(out_dir)
        self.config = config = run_config(self.out, config, CopiesConfig, asked)
        self.mol = SYSTEMS[config.system]()
        self.n_atoms = self.mol.system.getNumParticles()
        self.force_map = self.mol.force_map
        self.sites = lattice_sites(config.n_copies, config.spacing_nm)
        self.system = self._combined_system()
        self._load_checkpoint()
        self._make_context()

    def _combined_system(self) -> mm.System:
        cfg = self.config
        system = self.mol.create_system(repeated_topology(self.mol.topology, cfg.n_copies))
        com = mm.CustomCentroidBondForce(1, "0.5*k_com*((x1-sx)^2+(y1-sy)^2+(z1-sz)^2)")
        com.addGlobalParameter("k_com", cfg.com_k_kj_per_nm2)
        for name in ("sx", "sy", "sz"):
            com.addPerBondParameter(name)
        for k, site in enumerate(self.sites):
            group = com.addGroup(list(range(k * self.n_atoms, (k + 1) * self.n_atoms)))
            com.addBond([group], list(site))
        com.setForceGroup(RESTRAINT_GROUP)
        system.addForce(com)
        return system

    def _load_checkpoint(self):
        ck = self.out / "checkpoint.npz"
        self.positions = self.velocities = None
        self.iteration = 0
        if ck.exists():
            d = np.load(ck)
            self.iteration, self.positions, self.velocities = int(d["iteration"]), d["positions"], d["velocities"]
        for chunk in self.out.glob("chunk_*.npz"):  # written after the last checkpoint: redo them
            if int(chunk.stem.split("_")[1]) > self.iteration:
                chunk.unlink()

    def _initial_positions(self) -> np.ndarray:
        cfg = self.config
        if cfg.start_from:
            near = None
            if cfg.start_near:
                from ..structures import read_ca_pdb

                near = read_ca_pdb(cfg.start_near)
            if cfg.equilibrium_starts:
                source = json.loads((Path(cfg.start_from) / "run.json").read_text())
                source_t = source.get("temperature", source.get("temperatures", [None])[0])
                if source_t != cfg.temperature:
                    raise ValueError(f"equilibrium starts need a run at the copies' temperature: {cfg.start_from} "
                                     f"samples {source_t} K, the copies run at {cfg.temperature} K")
            starts, its = start_structures(cfg.start_from, cfg.n_copies, near, self.mol.bead_atoms,
                                           equilibrium_seed=cfg.seed if cfg.equilibrium_starts else None)
            atomic_write_json(self.out / "starts.json", {"run": cfg.start_from, "near": cfg.start_near,
                                                          "equilibrium": cfg.equilibrium_starts, "aa_iterations": its})
        else:
            one = np.array(self.mol.positions.value_in_unit(u.nanometer))
            starts = np.repeat(one[None], cfg.n_copies, axis=0)
        masses = np.array([self.mol.system.getParticleMass(i).value_in_unit(u.dalton) for i in range(self.n_atoms)])
        com = (starts * masses[:, None]).sum(1, keepdims=True) / masses.sum()
        return (starts - com + self.sites[:, None, :]).reshape(-1, 3)

    def _make_context(self):
        cfg = self.config
        plat = mm.Platform.getPlatformByName(cfg.platform)
        props = {"Threads": str(cfg.threads)} if cfg.platform == "CPU" else {}
        if cfg.platform in ("CUDA", "OpenCL"):
            props["Precision"] = "mixed"
        self.integrator = mm.LangevinMiddleIntegrator(cfg.temperature * u.kelvin, cfg.friction_per_ps / u.picosecond,
                                                      cfg.timestep_fs * u.femtosecond)
        self.integrator.setRandomNumberSeed((cfg.seed * 7919 + self.iteration * 131) % 2_000_000_000 + 1)
        self.context = mm.Context(self.system, self.integrator, plat, props)
        self.lone = mm.Context(self.mol.system, mm.VerletIntegrator(cfg.timestep_fs * u.femtosecond), plat, props)
        if self.positions is None:
            self.context.setPositions(self._initial_positions() * u.nanometer)
            if not cfg.start_from:
                mm.LocalEnergyMinimizer.minimize(self.context)
            self.context.setVelocitiesToTemperature(cfg.temperature * u.kelvin, cfg.seed + 1)
        else:
            self.context.setPositions(self.positions * u.nanometer)
            self.context.setVelocities(self.velocities * u.nanometer / u.picosecond)

    def _save_checkpoint(self):
        st = self.context.getState(getPositions=True, getVelocities=True)
        atomic_savez(self.out / "checkpoint.npz", iteration=self.iteration,
                     positions=st.getPositions(asNumpy=True).value_in_unit(u.nanometer),
                     velocities=st.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond))

    def frame(self) -> tuple[np.ndarray, np.ndarray]:
        """CG positions (copies, beads, 3) in Å relative to each site, mapped forces in kcal/mol/Å, and
        every copy's lone-molecule potential energy (copies,) in kcal/mol."""
        st = self.context.getState(getPositions=True, getForces=True, groups=set(range(RESTRAINT_GROUP)))
        shape = (self.config.n_copies, self.n_atoms, 3)
        xyz = st.getPositions(asNumpy=True).value_in_unit(u.nanometer).reshape(shape)
        f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer).reshape(shape)
        cg = (self.force_map.map_positions(xyz) - self.sites[:, None, :]) * ANGSTROM_PER_NM
        energy = np.empty(self.config.n_copies)
        for k in range(self.config.n_copies):
            self.lone.setPositions(xyz[k])
            energy[k] = self.lone.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        return cg, self.force_map.map_forces(f) * FORCE_KJ_NM_TO_KCAL_A, energy / KJ_PER_KCAL

    def run(self, target_ns: float, max_minutes: float | None = None, progress: bool = True) -> float:
        """Extend every copy to ``target_ns`` ns, or stop cleanly after ``max_minutes``; returns ns/day per copy."""
        cfg = self.config
        n_total = int(round(target_ns * 1000.0 / cfg.save_every_ps))
        deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
        log_invocation(self.out, f"{cfg.n_copies} copies on {cfg.platform}: extend from frame {self.iteration} "
                                 f"to {n_total} ({target_ns} ns per copy)")
        its, pos, frc, ene = [], [], [], []
        t0, it0 = time.perf_counter(), self.iteration
        bar = tqdm(total=n_total, initial=self.iteration, desc=f"MD {cfg.system} ({cfg.n_copies} copies)",
                   unit="frame", disable=not progress, mininterval=5.0)
        rate = 0.0
        while self.iteration < n_total:
            self.integrator.step(cfg.steps_per_frame)
            self.iteration += 1
            x, f, e = self.frame()
            its.append(self.iteration)
            pos.append(x)
            frc.append(f)
            ene.append(e)
            out_of_time = deadline is not None and time.monotonic() > deadline
            if len(its) == cfg.chunk_frames or self.iteration == n_total or out_of_time:
                atomic_savez(self.out / f"chunk_{its[0]:08d}.npz", iteration=np.array(its),
                             cg_positions=np.array(pos, dtype=np.float32), cg_forces=np.array(frc, dtype=np.float32),
                             energy_kcal=np.array(ene, dtype=np.float32))
                self._save_checkpoint()
                its, pos, frc, ene = [], [], [], []
            bar.update(1)
            rate = (self.iteration - it0) * cfg.save_every_ps * 1e-3 / max(time.perf_counter() - t0, 1e-9) * 86400
            bar.set_postfix(ns_day_per_copy=f"{rate:.0f}", ns_day_total=f"{rate * cfg.n_copies:.0f}", refresh=False)
            if out_of_time:
                break
        bar.close()
        log_invocation(self.out, f"stopped at frame {self.iteration}: {rate:.0f} ns/day per copy, "
                                 f"{rate * cfg.n_copies:.0f} ns/day in all")
        return rate


def throughput(config: CopiesConfig, seconds: float = 5.0) -> dict:
    """Measured ns/day (per copy and in all) of ``config`` on its platform, in a throw-away directory."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        md = CopiesMD(tmp, config)
        md.integrator.step(config.steps_per_frame)  # kernels compiled, caches warm
        md.context.getState(getEnergy=True)
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            md.integrator.step(config.steps_per_frame)
            md.context.getState(getEnergy=True)  # waits for the device
            steps += config.steps_per_frame
        per_copy = steps * config.timestep_fs * 1e-6 / (time.perf_counter() - t0) * 86400
    return {"n_copies": config.n_copies, "platform": config.platform, "ns_day_per_copy": round(per_copy, 1),
            "ns_day_total": round(per_copy * config.n_copies, 1)}
