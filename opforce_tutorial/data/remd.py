"""Resumable temperature replica exchange (T-REMD) with OpenMM, saving the target replica's CG data.

With a single temperature this is plain, resumable Langevin MD saved every ``exchange_every_ps``.

R replicas at temperatures T_0 < … < T_{R−1} run Langevin dynamics (LangevinMiddle, low friction)
for ``exchange_every_ps``; then neighbouring pairs (even pairs, then odd pairs, alternating) try to
swap configurations with the Metropolis probability

.. math::  P_\\mathrm{acc} = \\min\\{1, \\exp[(β_i − β_j)(U(x_i) − U(x_j))]\\}, \\qquad β = 1/k_BT,

which keeps every replica's Boltzmann distribution exact; velocities are rescaled by √(T_new/T_old).
After each exchange the configuration at T_0 is saved: CG positions (Å) and mapped CG forces
(kcal/mol/Å, see :mod:`.forcemap`), its potential energy, which walker it belongs to, and every
``save_all_atom_every``-th all-atom frame.

Checkpoint/resume: frames are written in chunk files of ``chunk_frames`` frames, each followed by an
atomic checkpoint (all replica positions and velocities, the exchange RNG state, counters), so a
killed run loses at most one chunk (a few minutes). ``run.json`` holds the configuration, which a
resumed run must match, and ``log.txt`` records every invocation.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.unit as u
from tqdm.auto import tqdm

from ..checks import InputError, check_count, check_md_settings, check_temperature
from ..storage import atomic_savez, atomic_write_json, read_json, remove_stale_temporaries
from ..units import ANGSTROM_PER_NM, KB_KJ_PER_MOL_K, KJ_PER_KCAL
from .molecules import SYSTEMS

#: kJ/mol/nm → kcal/mol/Å
FORCE_KJ_NM_TO_KCAL_A = 1.0 / (KJ_PER_KCAL * ANGSTROM_PER_NM)


def log_invocation(out_dir: Path, message: str) -> None:
    """Append one line to ``out_dir/log.txt``: time, machine, versions, the message and the command line."""
    with open(out_dir / "log.txt", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()} {platform.processor() or platform.machine()} "
                  f"openmm {mm.__version__} python {platform.python_version()}: {message} : {' '.join(sys.argv)}\n")


def run_config(out_dir: Path, config, config_class, asked: dict | None = None):
    """A run directory's configuration: ``run.json`` if it exists, else ``config`` (or the class's
    defaults, or the class built from ``asked``), validated *before* it is written to ``run.json``.

    On a resume, ``config`` (if given) must equal the saved one, and every setting in ``asked`` (what a
    command line set explicitly) must match it: a changed flag is refused, naming the setting, never
    silently ignored. Temporaries of killed writers are removed (:func:`remove_stale_temporaries`).
    """
    path = out_dir / "run.json"
    if path.exists():
        remove_stale_temporaries(out_dir)
        saved = config_class(**read_json(path, f"move {out_dir} away to start a new run"))
        if config is not None and asdict(config) != asdict(saved):
            raise ValueError(f"{path} holds a different configuration; use a new directory to change it")
        for key, value in (asked or {}).items():
            if getattr(saved, key) != value:
                raise InputError(f"{out_dir} is a run with {key} = {getattr(saved, key)!r}, asked for {value!r}; "
                                 "resume it without that flag, or give a new --out to start another run")
        return saved
    config = config or config_class(**(asked or {}))  # __post_init__ validates before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, asdict(config))
    return config


@dataclass
class REMDConfig:
    system: str = "ala2"
    temperatures: list[float] = field(default_factory=lambda: [300.0, 365.0, 445.0, 540.0])
    timestep_fs: float = 4.0
    friction_per_ps: float = 0.1
    exchange_every_ps: float = 1.0
    chunk_frames: int = 500
    save_all_atom_every: int = 10
    seed: int = 0
    platform: str = "CPU"
    threads: int = 1

    def __post_init__(self):
        if not self.temperatures:
            raise InputError("temperatures: give at least one temperature in kelvin")
        for t in self.temperatures:
            check_temperature(t, "temperatures")
        check_md_settings(self.timestep_fs, self.friction_per_ps, self.exchange_every_ps, self.chunk_frames,
                          self.threads)
        check_count(self.save_all_atom_every, "save_all_atom_every")

    @property
    def steps_per_exchange(self) -> int:
        return int(round(self.exchange_every_ps * 1000.0 / self.timestep_fs))


class ReplicaExchange:
    """The replicas of one run directory; :meth:`run` extends it to a target length."""

    def __init__(self, out_dir: str | Path, config: REMDConfig | None = None, asked: dict | None = None):
        self.out = Path(out_dir)
        self.config = config = run_config(self.out, config, REMDConfig, asked)
        self.mol = SYSTEMS[config.system]()
        self.force_map = self.mol.force_map
        self.betas = np.array([1.0 / (KB_KJ_PER_MOL_K * t) for t in config.temperatures])  # 1/(kJ/mol)
        self._load_checkpoint()
        self._make_contexts()

    # ------------------------------------------------------------------ state and checkpoint
    def _load_checkpoint(self):
        ck = self.out / "checkpoint.npz"
        if ck.exists():
            d = np.load(ck)
            self.iteration = int(d["iteration"])
            self.positions, self.velocities = d["positions"], d["velocities"]
            self.walker = d["walker"]
            self.accepted, self.attempted = d["accepted"], d["attempted"]
            self.rng = np.random.default_rng()
            self.rng.bit_generator.state = json.loads(str(d["rng_state"]))
        else:
            self.iteration = 0
            self.positions = self.velocities = None
            n = len(self.config.temperatures)
            self.walker = np.arange(n)
            self.accepted, self.attempted = np.zeros(n - 1, int), np.zeros(n - 1, int)
            self.rng = np.random.default_rng(self.config.seed)
        for chunk in self.out.glob("chunk_*.npz"):  # written after the last checkpoint: redo them
            if int(chunk.stem.split("_")[1]) > self.iteration:
                chunk.unlink()

    def _save_checkpoint(self):
        states = [c.getState(getPositions=True, getVelocities=True) for c in self.contexts]
        atomic_savez(self.out / "checkpoint.npz", iteration=self.iteration,
                      positions=np.array([s.getPositions(asNumpy=True).value_in_unit(u.nanometer) for s in states]),
                      velocities=np.array([s.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond) for s in states]),
                      walker=self.walker, accepted=self.accepted, attempted=self.attempted,
                      rng_state=json.dumps(self.rng.bit_generator.state))

    def _make_contexts(self):
        cfg = self.config
        plat = mm.Platform.getPlatformByName(cfg.platform)
        props = {"Threads": str(cfg.threads)} if cfg.platform == "CPU" else {}
        self.integrators, self.contexts = [], []
        for k, t in enumerate(cfg.temperatures):
            integ = mm.LangevinMiddleIntegrator(t * u.kelvin, cfg.friction_per_ps / u.picosecond, cfg.timestep_fs * u.femtosecond)
            integ.setRandomNumberSeed((cfg.seed * 7919 + self.iteration * 131 + k) % 2_000_000_000 + 1)
            ctx = mm.Context(self.mol.system, integ, plat, props)
            if self.positions is None:
                ctx.setPositions(self.mol.positions)
                if k == 0:
                    mm.LocalEnergyMinimizer.minimize(ctx)
                    start = ctx.getState(getPositions=True).getPositions()
                ctx.setPositions(start)
                ctx.setVelocitiesToTemperature(t * u.kelvin, cfg.seed + k + 1)
            else:
                ctx.setPositions(self.positions[k] * u.nanometer)
                ctx.setVelocities(self.velocities[k] * u.nanometer / u.picosecond)
            self.integrators.append(integ)
            self.contexts.append(ctx)

    # -------------------------------------------------------------------------- dynamics
    def _exchange(self, energies):
        start = self.iteration % 2
        for i in range(start, len(self.contexts) - 1, 2):
            j = i + 1
            self.attempted[i] += 1
            log_acc = (self.betas[i] - self.betas[j]) * (energies[i] - energies[j])
            if log_acc >= 0 or self.rng.random() < math.exp(log_acc):
                self.accepted[i] += 1
                si = self.contexts[i].getState(getPositions=True, getVelocities=True)
                sj = self.contexts[j].getState(getPositions=True, getVelocities=True)
                ti, tj = self.config.temperatures[i], self.config.temperatures[j]
                self.contexts[i].setPositions(sj.getPositions())
                self.contexts[i].setVelocities(sj.getVelocities() * math.sqrt(ti / tj))
                self.contexts[j].setPositions(si.getPositions())
                self.contexts[j].setVelocities(si.getVelocities() * math.sqrt(tj / ti))
                energies[i], energies[j] = energies[j], energies[i]
                self.walker[i], self.walker[j] = self.walker[j], self.walker[i]

    def run(self, target_ns: float, progress: bool = True) -> None:
        """Extend the run until the target replica has ``target_ns`` ns (resumes where it stopped)."""
        cfg = self.config
        n_total = int(round(target_ns * 1000.0 / cfg.exchange_every_ps))
        log_invocation(self.out, f"extend from iteration {self.iteration} to {n_total} ({target_ns} ns)")
        buf: dict[str, list] = {k: [] for k in ("iteration", "cg_positions", "cg_forces", "energy", "walker")}
        aa: dict[str, list] = {"iteration": [], "positions": []}
        t0, it0 = time.perf_counter(), self.iteration
        bar = tqdm(total=n_total, initial=self.iteration, desc=f"MD {cfg.system} ({len(cfg.temperatures)} replica(s))",
                   unit="frame", disable=not progress, mininterval=5.0)
        while self.iteration < n_total:
            energies = np.empty(len(self.contexts))
            for k, (integ, ctx) in enumerate(zip(self.integrators, self.contexts)):
                integ.step(cfg.steps_per_exchange)
                energies[k] = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
            self._exchange(energies)
            self.iteration += 1
            st = self.contexts[0].getState(getPositions=True, getForces=True, getEnergy=True)
            xyz = st.getPositions(asNumpy=True).value_in_unit(u.nanometer)
            f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
            buf["iteration"].append(self.iteration)
            buf["cg_positions"].append(self.force_map.map_positions(xyz) * ANGSTROM_PER_NM)
            buf["cg_forces"].append(self.force_map.map_forces(f) * FORCE_KJ_NM_TO_KCAL_A)
            buf["energy"].append(st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) / KJ_PER_KCAL)
            buf["walker"].append(int(self.walker[0]))
            if self.iteration % cfg.save_all_atom_every == 0:
                aa["iteration"].append(self.iteration)
                aa["positions"].append(xyz * ANGSTROM_PER_NM)
            if len(buf["iteration"]) == cfg.chunk_frames or self.iteration == n_total:
                self._write_chunk(buf, aa)
                self._save_checkpoint()
                buf = {k: [] for k in buf}
                aa = {k: [] for k in aa}
            bar.update(1)
            ns_per_day = (self.iteration - it0) * cfg.exchange_every_ps * 1e-3 / max(time.perf_counter() - t0, 1e-9) * 86400
            bar.set_postfix(target_ns_day=f"{ns_per_day:.0f}", acc=np.round(self.acceptance(), 2).tolist(), refresh=False)
        bar.close()

    def _write_chunk(self, buf, aa):
        first = buf["iteration"][0]
        atomic_savez(self.out / f"chunk_{first:08d}.npz",
                      iteration=np.array(buf["iteration"]),
                      cg_positions=np.array(buf["cg_positions"], dtype=np.float32),
                      cg_forces=np.array(buf["cg_forces"], dtype=np.float32),
                      energy_kcal=np.array(buf["energy"], dtype=np.float32),
                      walker=np.array(buf["walker"], dtype=np.int16),
                      aa_iteration=np.array(aa["iteration"], dtype=np.int64),
                      aa_positions=np.array(aa["positions"], dtype=np.float32).reshape(-1, self.mol.system.getNumParticles(), 3))

    def acceptance(self) -> np.ndarray:
        return self.accepted / np.maximum(self.attempted, 1)
