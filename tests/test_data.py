"""Force maps worked out by hand, the replica-exchange run's resume, and the dataset loader."""

import json

import numpy as np
import pytest

from opforce_tutorial.data.dataset import CGDataset, DatasetError, build_dataset, load_dataset
from opforce_tutorial.data.forcemap import ForceMap


def test_force_map_sums_constraint_groups_by_hand():
    # atoms 0-1 constrained (heavy atom + H), 2 alone, 3-4 constrained; beads on 0, 2, 4
    fm = ForceMap.from_constraints(5, [0, 2, 4], [(0, 1), (4, 3)])
    assert fm.groups == [[0, 1], [2], [3, 4]]
    f = np.arange(15, dtype=float).reshape(5, 3)
    expected = np.array([f[0] + f[1], f[2], f[3] + f[4]])
    assert np.allclose(fm.map_forces(f), expected)
    assert np.allclose(fm.map_forces(np.stack([f, 2 * f])), np.stack([expected, 2 * expected]))
    assert np.allclose(fm.map_positions(f), f[[0, 2, 4]])
    with pytest.raises(ValueError, match="overlaps"):
        ForceMap.from_constraints(3, [0, 1], [(0, 1)])


def test_alanine_dipeptide_map_matches_the_atom_table():
    from opforce_tutorial.data.molecules import alanine_dipeptide

    mol = alanine_dipeptide()
    # openmmtools' PDB: 4 C(ACE), 6 N, 7 H, 8 CA, 9 HA, 14 C, 16 N(NME), 17 H(NME)
    assert mol.bead_atoms == [4, 6, 8, 14, 16]
    assert mol.force_map.groups == [[4], [6, 7], [8, 9], [14], [16, 17]]


def test_remd_resumes_without_gaps_and_refuses_a_changed_config(tmp_path):
    from opforce_tutorial.data.remd import REMDConfig, ReplicaExchange

    cfg = REMDConfig(temperatures=[300.0, 400.0], exchange_every_ps=0.2, chunk_frames=3, save_all_atom_every=2)
    ReplicaExchange(tmp_path, cfg).run(0.001, progress=False)  # 5 exchanges
    run = ReplicaExchange(tmp_path)
    assert run.iteration == 5
    run.run(0.0016, progress=False)  # 8 exchanges
    chunks = sorted(tmp_path.glob("chunk_*.npz"))
    its = np.concatenate([np.load(c)["iteration"] for c in chunks])
    assert its.tolist() == list(range(1, 9))
    d = np.load(chunks[0])
    assert d["cg_positions"].shape == (3, 5, 3) and d["cg_forces"].dtype == np.float32
    # Å: the C–N peptide bond (beads 0 and 1) is ≈ 1.33 Å
    assert np.linalg.norm(d["cg_positions"][:, 1] - d["cg_positions"][:, 0], axis=-1) == pytest.approx(1.34, abs=0.08)
    assert (run.attempted >= 1).all()
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert len(log) == 2 and "extend from iteration 5 to 8" in log[1]
    with pytest.raises(ValueError, match="different configuration"):
        ReplicaExchange(tmp_path, REMDConfig(temperatures=[300.0, 350.0]))
    # assemble a dataset from the run and load it back, verified
    data_dir = tmp_path / "data"
    entry = build_dataset("tiny", [tmp_path], ["C", "N", "CA", "C", "N"], data_dir=data_dir)
    ds = load_dataset("tiny", data_dir=data_dir)
    assert ds.n_frames == entry["n_frames"] == 8 and ds.temperature == 300.0 and ds.save_interval_ps == 0.2
    assert ds.topology().n_atoms == 5 and ds.topology().n_bonds == 4
    (data_dir / "tiny.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="corrupt.*tiny.npz|tiny.npz.*corrupt"):
        load_dataset("tiny", data_dir=data_dir)


def test_dataset_loader_errors(tmp_path):
    with pytest.raises(DatasetError, match="no entry"):
        load_dataset("ala2", data_dir=tmp_path)
    (tmp_path / "registry.json").write_text(json.dumps({"ala2": {"file": "ala2.npz", "sha256": "0"}}))
    with pytest.raises(DatasetError, match="missing.*opforce data build ala2"):
        load_dataset("ala2", data_dir=tmp_path)
    with pytest.raises(ValueError, match="frames, beads, 3"):
        CGDataset("x", np.zeros((2, 5, 3)), np.zeros((2, 5)), 300.0, np.zeros(2), 1.0, ["A"] * 5)


def test_chignolin_build_charge_map_and_native_obc2_energy():
    import openmm as mm
    import openmm.app as app
    import openmm.unit as u

    from opforce_tutorial.data.molecules import chignolin

    mol = chignolin()
    assert mol.system.getNumParticles() == 166
    nb = next(f for f in mol.system.getForces() if isinstance(f, mm.NonbondedForce))
    charge = sum(nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(nb.getNumParticles()))
    assert charge == pytest.approx(-2.0, abs=1e-6)
    assert mol.bead_names == ["TYR", "TYR", "ASP", "PRO", "GLU", "THR", "GLY", "THR", "TRP", "TYR"]
    groups = mol.force_map.groups
    assert [len(g) for g in groups] == [2, 2, 2, 2, 2, 2, 3, 2, 2, 2]  # Cα + HA (Gly: HA2 + HA3)
    assert not any(isinstance(f, mm.CustomGBForce) for f in mol.system.getForces())
    custom = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
        mol.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, hydrogenMass=3 * u.amu)

    def energy(system):
        ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(mol.positions)
        return ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)

    assert energy(mol.system) == pytest.approx(energy(custom), abs=1e-2)


def test_dihedral_sign_and_value_by_hand():
    from opforce_tutorial.geometry import dihedral

    # trans (180°), cis (0°), and +90° by the IUPAC convention
    b = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0]])
    assert dihedral(np.vstack([b, [-1.0, 1.0, 0]]), 0, 1, 2, 3) == pytest.approx(180.0)
    assert dihedral(np.vstack([b, [1.0, 1.0, 0]]), 0, 1, 2, 3) == pytest.approx(0.0)
    assert dihedral(np.vstack([b, [0.0, 1.0, -1.0]]), 0, 1, 2, 3) == pytest.approx(90.0)


def test_visit_counting_uses_hysteresis_and_block_errors():
    from opforce_tutorial.analysis import committed_states, count_visits
    from opforce_tutorial.evaluation import block_mean

    phi = np.array([-60, 30, -10, 25, -60, -70, 40, 50, -30, 60])
    # enters at 30, recrosses to -10 (not a core) and back: same visit; leaves at -60; enters at 40; at 60
    assert count_visits(phi > 20, phi < -20) == 3
    assert count_visits(phi[1:] > 20, phi[1:] < -20) == 3  # a trajectory starting inside: that is a visit
    assert count_visits(phi[:0] > 20, phi[:0] < -20) == 0
    assert committed_states(phi[:4] > 20, phi[:4] < -20).tolist() == [1, 0, 0, 0]
    assert committed_states(np.array([0, 0, 1], bool), np.zeros(3, bool)).tolist() == [-1, -1, 0]
    mean, err = block_mean(np.r_[np.zeros(50), np.ones(50)], n_blocks=2)
    assert mean == 0.5 and err == pytest.approx(0.5)


def test_copies_in_one_system_feel_the_lone_molecules_forces(tmp_path):
    import openmm as mm
    import openmm.unit as u

    from opforce_tutorial.data.copies import CopiesConfig, CopiesMD
    from opforce_tutorial.data.remd import FORCE_KJ_NM_TO_KCAL_A

    md = CopiesMD(tmp_path, CopiesConfig(system="ala2", n_copies=3, spacing_nm=10.0, save_every_ps=0.1))
    assert md.system.getNumParticles() == 3 * 22
    md.integrator.step(50)  # copies now differ from each other
    cg, mapped, energy = md.frame()
    assert cg.shape == mapped.shape == (3, 5, 3) and energy.shape == (3,)
    xyz = md.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer).reshape(3, 22, 3)
    lone = mm.Context(md.mol.system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    for k in range(3):
        lone.setPositions(xyz[k])
        f = lone.getState(getForces=True).getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        expected = md.force_map.map_forces(f) * FORCE_KJ_NM_TO_KCAL_A
        e = lone.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilocalorie_per_mole)
        assert energy[k] == pytest.approx(e, abs=1e-4)  # the lone molecule's energy, kcal/mol        # the other copies (10 nm away, screened by the solvent) and the restraint (left out) change nothing
        assert np.abs(mapped[k] - expected).max() < 1e-3 * np.abs(expected).max()
        # positions are relative to the copy's lattice site, in Å
        assert np.allclose(cg[k], (xyz[k][md.mol.bead_atoms] - md.sites[k]) * 10.0, atol=1e-4)
    # the centre-of-mass restraint holds each copy near its site
    assert np.linalg.norm(cg.mean(1), axis=-1).max() < 10.0


def test_copies_run_resumes_and_stops_on_time(tmp_path):
    from opforce_tutorial.data.copies import CopiesConfig, CopiesMD, lattice_sites

    assert lattice_sites(9, 2.0).shape == (9, 3) and len({tuple(s) for s in lattice_sites(27, 1.0)}) == 27
    cfg = CopiesConfig(system="ala2", n_copies=2, save_every_ps=0.1, chunk_frames=3)
    CopiesMD(tmp_path, cfg).run(0.0005, progress=False)  # 5 frames
    run = CopiesMD(tmp_path)
    assert run.iteration == 5
    run.run(0.0008, progress=False)
    chunks = sorted(tmp_path.glob("chunk_*.npz"))
    assert np.concatenate([np.load(c)["iteration"] for c in chunks]).tolist() == list(range(1, 9))
    assert np.load(chunks[0])["cg_positions"].shape == (3, 2, 5, 3) and np.load(chunks[0])["energy_kcal"].shape == (3, 2)
    assert CopiesMD(tmp_path).run(1.0, max_minutes=0.0, progress=False) > 0  # one frame, then a clean stop
    assert CopiesMD(tmp_path).iteration == 9
    with pytest.raises(ValueError, match="different configuration"):
        CopiesMD(tmp_path, CopiesConfig(system="ala2", n_copies=3))


def test_chignolin_tiny_run_maps_saves_resumes_and_loads(tmp_path):
    """A few hundred steps of CLN025 through the generation code path: Cα map, mapped forces, resume, loader."""
    from opforce_tutorial.data.dataset import load_trajectories
    from opforce_tutorial.data.remd import REMDConfig, ReplicaExchange

    cfg = REMDConfig(system="cln025", temperatures=[340.0], exchange_every_ps=0.2, chunk_frames=2, save_all_atom_every=2)
    ReplicaExchange(tmp_path / "run", cfg).run(0.0006, progress=False)  # 3 frames × 50 steps
    ReplicaExchange(tmp_path / "run").run(0.001, progress=False)  # resumed to 5 frames
    (traj,) = load_trajectories([tmp_path / "run"])
    assert traj.positions.shape == traj.forces.shape == (5, 10, 3) and traj.temperature == 340.0
    bonds = np.linalg.norm(np.diff(traj.positions, axis=1), axis=-1)  # Cα–Cα ≈ 3.8 Å (trans peptides)
    assert np.allclose(bonds, 3.8, atol=0.25)
    assert np.isfinite(traj.forces).all() and np.abs(traj.forces).max() < 500.0  # kcal/mol/Å, not kJ/mol/nm


def test_copies_start_from_the_frames_closest_to_a_reference(tmp_path):
    from opforce_tutorial.data.copies import start_structures
    from opforce_tutorial.structures import rmsd

    rng = np.random.default_rng(0)
    aa = rng.normal(scale=5.0, size=(12, 8, 3)).astype(np.float32)  # Å, 8 atoms, beads on atoms 1, 3, 5, 7
    np.savez(tmp_path / "chunk_00000001.npz", aa_positions=aa, aa_iteration=np.arange(10, 130, 10))
    beads = [1, 3, 5, 7]
    near = aa[4][beads] + 0.01
    starts, its = start_structures(tmp_path, 4, near, beads)
    assert its[0] == 50 and starts.shape == (4, 8, 3) and np.allclose(starts[0], aa[4] / 10.0, atol=1e-6)
    d = rmsd(aa[:, beads].astype(float), near)
    assert its[1] == 10 * (np.argsort(d)[1] + 1)  # the second half of the starts: second-closest, then spread
    assert start_structures(tmp_path, 1, near, beads)[1] == [50]  # a single start is the closest frame
    compact, its_rg = start_structures(tmp_path, 4)
    rg = np.sqrt(((aa - aa.mean(1, keepdims=True)) ** 2).sum(-1).mean(-1))
    assert its_rg[0] == 10 * (np.argmin(rg) + 1)
    with pytest.raises(ValueError, match="no all-atom frames"):
        start_structures(tmp_path / "nothing", 2)


def test_equilibrium_starts_are_a_seeded_random_draw_at_the_runs_temperature(tmp_path):
    from opforce_tutorial.data.copies import CopiesConfig, CopiesMD, start_structures

    aa = np.arange(12 * 22 * 3, dtype=np.float32).reshape(12, 22, 3)
    np.savez(tmp_path / "chunk_00000001.npz", aa_positions=aa, aa_iteration=np.arange(10, 130, 10))
    starts, its = start_structures(tmp_path, 5, equilibrium_seed=3)
    assert len(set(its)) == 5 and its == sorted(its) and its == start_structures(tmp_path, 5, equilibrium_seed=3)[1]
    assert its != start_structures(tmp_path, 5, equilibrium_seed=4)[1]
    assert np.allclose(starts[0], aa[its[0] // 10 - 1] / 10.0)  # Å → nm
    with pytest.raises(ValueError, match="fewer than the 13 starts"):
        start_structures(tmp_path, 13, equilibrium_seed=0)
    (tmp_path / "run.json").write_text(json.dumps({"temperatures": [300.0, 400.0]}))
    with pytest.raises(ValueError, match="samples 300.0 K, the copies run at 310.0 K"):
        CopiesMD(tmp_path / "copies", CopiesConfig(system="ala2", n_copies=2, temperature=310.0,
                                                   start_from=str(tmp_path), equilibrium_starts=True))


def _ala2_frames(phis: list[float]) -> np.ndarray:
    """5-bead frames (Å) whose φ (beads 0-1-2-3) takes the given values; ψ fixed."""
    from opforce_tutorial.systems.alanine_dipeptide import ramachandran

    base = np.array([[0.0, 0, 0], [1.33, 0, 0], [1.9, 1.35, 0], [3.4, 1.4, 0], [4.0, 2.7, 0.3]])
    frames = []
    for phi in phis:
        x = base.copy()
        # rotate bead 0 about the 1→2 axis (Rodrigues)
        axis = (x[2] - x[1]) / np.linalg.norm(x[2] - x[1])
        a = np.radians(ramachandran(base[None])[0][0] - phi)  # turning bead 0 by +a about 1→2 lowers φ by a
        v = x[0] - x[1]
        x[0] = x[1] + v * np.cos(a) + np.cross(axis, v) * np.sin(a) + axis * (axis @ v) * (1 - np.cos(a))
        frames.append(x)
    return np.array(frames, dtype=np.float32)


def test_ala2_report_and_build_pool_replica_exchange_and_copies_runs(tmp_path):
    from opforce_tutorial.data.dataset import load_trajectories, thin_to_common_interval
    from opforce_tutorial.data.report import ala2_report
    from opforce_tutorial.systems.alanine_dipeptide import ramachandran

    phis = [-80, 60, 70, -80, -75, 65, -70, -60]  # 1 ps frames: αL entries at frames 1 and 5
    x = _ala2_frames(phis)
    assert np.allclose(ramachandran(x)[0], phis, atol=1e-3)
    remd, copies = tmp_path / "ala2_remd", tmp_path / "ala2_copies"
    remd.mkdir(), copies.mkdir()
    (remd / "run.json").write_text(json.dumps({"temperatures": [300.0, 400.0], "exchange_every_ps": 1.0}))
    np.savez(remd / "chunk_00000001.npz", cg_positions=x, cg_forces=np.zeros_like(x))
    (copies / "run.json").write_text(json.dumps({"n_copies": 2, "temperature": 300.0, "save_every_ps": 2.0}))
    xc = np.stack([_ala2_frames([70, 70, -80, -80]), _ala2_frames([-80] * 4)], axis=1)  # αL: 2 of 8 frames  # (frames, copies, beads, 3)
    np.savez(copies / "chunk_00000001.npz", cg_positions=xc, cg_forces=np.zeros_like(xc))
    report = ala2_report([remd, copies], n_blocks=2)
    assert report["runs"]["ala2_remd"]["alphaL_visits"] == 2 and report["runs"]["ala2_copies"]["alphaL_visits"] == 1
    assert report["runs"]["ala2_remd"]["ns"] == 0.008 and report["runs"]["ala2_copies"]["ns"] == 0.016
    assert report["total_ns"] == 0.024 and report["alphaL_visits"] == 3
    # populations on frames 2 ps apart: remd frames 0, 2, 4, 6 (φ −80, 70, −75, −70) and the 8 copy frames
    assert report["runs"]["ala2_remd"]["populations"]["αL (φ > 0)"]["mean"] == pytest.approx(1 / 4)
    assert report["runs"]["ala2_copies"]["populations"]["αL (φ > 0)"]["mean"] == pytest.approx(2 / 8)
    assert report["populations_from"] == ["ala2_remd"]  # the equilibrium estimate: replica-exchange frames only
    from opforce_tutorial.cli import main

    assert main(["data", "build", "ala2", str(remd), str(copies), "--data-dir", str(tmp_path / "data")]) == 0
    entry = json.loads((tmp_path / "data" / "registry.json").read_text())["ala2"]
    ds = load_dataset("ala2", data_dir=tmp_path / "data")
    assert ds.n_frames == entry["n_frames"] == 12 and ds.save_interval_ps == 2.0 and entry["total_ns"] == 0.024
    assert np.bincount(ds.traj_ids).tolist() == [4, 4, 4] and entry["per_run"]["ala2_copies"]["alphaL_visits"] == 1
    assert ds.weights is not None and ds.weights.sum() == pytest.approx(1.0) and entry["populations_from"] == ["ala2_remd"]
    odd = thin_to_common_interval(load_trajectories([remd]))[0]
    odd.save_interval_ps = 1.5
    with pytest.raises(ValueError, match="not a whole fraction of 2.0 ps"):
        thin_to_common_interval([odd, load_trajectories([copies])[0]])


def test_equilibrium_frames_resample_by_weight_and_keep_trajectories_in_order():
    x = np.arange(8 * 5 * 3, dtype=np.float32).reshape(8, 5, 3)
    ids = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    plain = CGDataset("t", x, -x, 300.0, ids, 1.0, ["C"] * 5)
    assert plain.equilibrium_frames() is plain
    assert CGDataset("t", x, -x, 300.0, ids, 1.0, ["C"] * 5, weights=np.full(8, 0.125)).equilibrium_frames().n_frames == 8
    w = np.array([0, 0, 1, 1, 2, 2, 1, 1], float)  # sums to 8: frame counts 0 0 1 1 2 2 1 1
    eq = CGDataset("t", x, -x, 300.0, ids, 1.0, ["C"] * 5, weights=w).equilibrium_frames()
    frames = (eq.positions[:, 0, 0] / 15).astype(int).tolist()
    assert frames == [2, 3, 4, 4, 5, 5, 6, 7] and eq.weights is None
    assert np.array_equal(eq.forces, -eq.positions) and eq.traj_ids.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="non-negative"):
        CGDataset("t", x, -x, 300.0, ids, 1.0, ["C"] * 5, weights=-w).equilibrium_frames()


def test_basin_weights_give_the_pool_the_replica_exchange_populations():
    from opforce_tutorial.data.dataset import Trajectory
    from opforce_tutorial.data.report import basin_weights
    from opforce_tutorial.chapters.ala2 import basin_populations

    remd = _ala2_frames([-80, 60, -80, -75])  # αL a quarter of the exchange frames
    plain = _ala2_frames([-80] * 7 + [70])  # the plain copy: αL an eighth
    trajs = [Trajectory(remd, remd, "remd", 300.0, 1.0, replica_exchange=True), Trajectory(plain, plain, "c", 300.0, 1.0)]
    w = basin_weights(trajs)
    pooled = np.concatenate([remd, plain])
    phi_pos = np.array([-80, 60, -80, -75] + [-80] * 7 + [70]) > 0
    assert w.sum() == pytest.approx(1.0) and w[phi_pos].sum() == pytest.approx(0.25)
    assert np.allclose(w[phi_pos], 0.125) and np.allclose(w[~phi_pos], 0.75 / 10)
    eq = CGDataset("t", pooled, pooled, 300.0, np.r_[np.zeros(4), np.ones(8)].astype(int), 1.0, ["C"] * 5,
                   weights=w).equilibrium_frames()
    assert basin_populations(eq.positions, n_blocks=2)["αL (φ > 0)"]["mean"] == pytest.approx(0.25)
    assert basin_weights(trajs[1:]) is None
