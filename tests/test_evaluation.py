"""Evaluators: JS against saved reference histograms with floors, and basin populations."""

import numpy as np
import pytest

from opforce_tutorial.evaluation import (ReferenceHistograms, chain_observables, evaluate, make_reference,
                                         observable_values, replica_bootstrap_js, state_populations)
from opforce_tutorial.systems.alanine_dipeptide import RAMACHANDRAN, SYSTEM, basins

from chains import ala2_like


def test_observables_are_named_by_beads_and_in_degrees():
    names = SYSTEM.observables
    assert names[:2] == ("bond 0-1", "bond 1-2") and "angle 1-2-3" in names and names[-1].name == "ramachandran"
    assert list(names[:-1]) == chain_observables(5)
    x, _ = ala2_like(200, np.random.default_rng(0))
    assert np.allclose(observable_values(x, "bond 1-2").mean(), 1.46, atol=0.01)
    assert np.allclose(observable_values(x, "angle 0-1-2").mean(), 120.0, atol=1.0)
    rama = observable_values(x, RAMACHANDRAN)
    assert rama.shape == (200, 2) and np.allclose(rama[:, 0], observable_values(x, "dihedral 0-1-2-3"))


def test_js_is_at_the_floor_for_the_same_distribution_and_far_above_it_for_broadened_bonds(tmp_path):
    rng = np.random.default_rng(1)
    names = SYSTEM.observables
    ref = make_reference(ala2_like(40_000, rng)[0], names)
    ref.save(tmp_path / "ref.npz")
    ref = ReferenceHistograms.load(tmp_path / "ref.npz")
    assert ref.n_samples == 40_000 and ref.edges["ramachandran"][0].shape == (61,)
    same = evaluate(ala2_like(5000, rng)[0], ref, names)
    for name, r in same.items():
        assert r["js"] < 3 * r["js_floor"] + 1e-3, (name, r)
    broad = evaluate(ala2_like(5000, rng, bond_std=0.1)[0], ref, ["bond 0-1", RAMACHANDRAN])
    assert broad["bond 0-1"]["js"] > 10 * broad["bond 0-1"]["js_floor"]
    assert broad["ramachandran"]["js"] < 3 * broad["ramachandran"]["js_floor"] + 1e-3  # dihedrals unchanged


def test_an_observable_the_system_owns_must_be_passed_in():
    """The evaluators assume no system: a reference with the Ramachandran plane is scored with its Observable."""
    x, _ = ala2_like(500, np.random.default_rng(3))
    ref = make_reference(x, SYSTEM.observables)
    with pytest.raises(ValueError, match="not a chain observable.*RAMACHANDRAN"):
        evaluate(x, ref)
    with pytest.raises(ValueError, match="no histogram of 'dihedral 0-1-2-3'"):
        evaluate(x, make_reference(x, ["bond 0-1"]), ["dihedral 0-1-2-3"])
    assert set(evaluate(x, ref, SYSTEM.observables)) == set(ref.probabilities)


def test_basin_populations_with_block_errors():
    rng = np.random.default_rng(2)
    x, which = ala2_like(20_000, rng, basins=((-75.0, -40.0, 0.3), (-150.0, 150.0, 0.6), (60.0, 40.0, 0.1)))
    pops = state_populations(x, basins)
    assert pops["αL (φ > 0)"]["mean"] == pytest.approx((which == 2).mean(), abs=0.01)
    assert sum(p["mean"] for p in pops.values()) == pytest.approx(1.0)
    assert 0 < pops["αR"]["block_error"] < 0.02
    sim = x.reshape(1000, 20, 5, 3)  # (time, replicas, beads, 3)
    assert state_populations(sim, basins)["αR"]["mean"] == pytest.approx(pops["αR"]["mean"])


def test_integration_by_parts_identity_holds_for_exact_forces_and_flags_wrong_ones():
    from opforce_tutorial.evaluation import integration_by_parts_check

    rng = np.random.default_rng(3)
    kbt, k = 0.6, 2.0
    x = rng.normal(scale=np.sqrt(kbt / k), size=(200_000, 3, 3)) + np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]])
    f = -k * (x - np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]]))
    good = integration_by_parts_check(x, f, kbt)
    assert [g["pair"] for g in good] == ["0-1", "1-2"]
    assert all(abs(g["z"]) < 4 for g in good), good
    bad = integration_by_parts_check(x, 0.7 * f, kbt)  # e.g. a force map that misses part of the force
    assert all(abs(b["z"]) > 10 for b in bad), bad
    hot = integration_by_parts_check(x, f, 1.3 * kbt)  # labels at the wrong temperature
    assert all(abs(h["z"]) > 10 for h in hot), hot


def test_dihedral_integration_by_parts_holds_for_exact_forces_and_flags_wrong_ones():
    from opforce_tutorial.evaluation import dihedral_integration_by_parts_check

    rng = np.random.default_rng(4)
    kbt, k = 0.6, 60.0  # stiff enough that no frame comes near a collinear (undefined) dihedral
    x0 = np.array([[0.0, 1.0, 0], [0, 0, 0], [1.5, 0, 0], [1.8, 0.7, 0.9]])
    x = rng.normal(scale=np.sqrt(kbt / k), size=(30_000, 4, 3)) + x0
    f = -k * (x - x0)
    good = dihedral_integration_by_parts_check(x, f, kbt)
    assert [g["function"] for g in good] == ["cos dihedral 0-1-2-3", "sin dihedral 0-1-2-3"]
    assert all(abs(g["z"]) < 4 for g in good), good
    assert all(abs(b["z"]) > 8 for b in dihedral_integration_by_parts_check(x, 0.7 * f, kbt))
    assert all(abs(h["z"]) > 6 for h in dihedral_integration_by_parts_check(x, f, 1.3 * kbt))
    several = dihedral_integration_by_parts_check(x, {"exact": f, "scaled": 0.7 * f}, kbt)  # one set of derivatives
    assert several["exact"] == good and all(abs(b["z"]) > 8 for b in several["scaled"])
    with pytest.raises(ValueError, match="beads ≥ 4"):
        dihedral_integration_by_parts_check(x[:, :3], f[:, :3], kbt)
    with pytest.raises(ValueError, match="must be"):
        dihedral_integration_by_parts_check(x, {"exact": f, "short": f[:10]}, kbt)


def test_mirror_asymmetry_is_the_odd_part_of_the_free_energy():
    from opforce_tutorial.evaluation import mirror_asymmetry

    kbt, a = 0.6, 0.8
    centres = np.linspace(-180, 180, 61)[:-1] + 3.0  # the 60 × 60 grid's bin centres, symmetric about 0
    phi, psi = np.meshgrid(np.radians(centres), np.radians(centres), indexing="ij")
    u = a * np.sin(phi) + 0.5 * np.cos(psi) + 0.3 * np.cos(phi) * np.cos(psi)  # odd part: a sin φ
    p = np.exp(-u / kbt)
    p /= p.sum()
    assert np.allclose(mirror_asymmetry(p, kbt), a * np.sin(phi))
    p[0, 0] = 0.0
    A = mirror_asymmetry(p, kbt)
    assert np.isnan(A[0, 0]) and np.isnan(A[-1, -1]) and np.isfinite(A[1:-1]).all()


def test_mirror_energy_asymmetry_of_a_distance_network_is_the_priors_sine_part():
    import torch
    from chains import chain_from_internal, toy_prior

    from opforce_tutorial.cg import SchNetConfig, SchNetEnergy
    from opforce_tutorial.cg.network import CGModel
    from opforce_tutorial.evaluation import mirror_energy_asymmetry

    torch.manual_seed(0)
    angles = np.radians([[-60.0, -45.0], [-150.0, 150.0], [60.0, 45.0]])  # αR, β and αR's mirror
    x = chain_from_internal(np.full((3, 4), 1.5), np.full((3, 3), 1.9), angles)
    edges = [np.linspace(-180.0, 180.0, 61)] * 2
    model = CGModel(toy_prior(), SchNetEnergy(SchNetConfig(bead_types=[0, 1, 2, 3, 4], hidden=8, n_rbf=8)))
    grid = mirror_energy_asymmetry(model, x, edges, RAMACHANDRAN)
    n = np.arange(1, 4)
    odd = -0.2 * np.sin(angles[:, :, None] * n).sum((1, 2))  # toy prior: dihedral_sin = −0.2 for n = 1, 2, 3
    i, j = (np.digitize(np.degrees(angles[:, k]), edges[0]) - 1 for k in (0, 1))
    assert np.allclose(grid[i, j], odd) and np.isnan(grid).sum() == 60 * 60 - 3
    assert grid[i[0], j[0]] == pytest.approx(-grid[i[2], j[2]])  # mirror bins: opposite values
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is left in float32


def test_mirror_asymmetry_plot_draws_one_panel_per_grid_with_blank_empty_bins():
    import matplotlib

    matplotlib.use("Agg")
    from opforce_tutorial import plotting

    edges = np.linspace(-180.0, 180.0, 61)
    grid = np.zeros((60, 60))
    grid[0, 0] = np.nan
    fig = plotting.plot_mirror_asymmetry({"data": grid, "model": grid + 1.0}, edges)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["data", "model"]
    mesh = panels[1].collections[0]
    assert np.ma.is_masked(mesh.get_array()[0]) or np.isnan(mesh.get_array()[0])  # the empty bin stays blank
    assert mesh.get_clim() == (-3.0, 3.0)


def test_force_along_a_coordinate_by_hand_for_a_harmonic_density():
    """Frames of p ∝ exp(−k|x|²/2k_BT) with exact forces −kx, h = |x|²: F·∇h = −2k|x|², so in a bin of h
    the mean push is −2k·h; the identity ⟨F·∇h⟩ = −k_BT⟨Δh⟩ = −2·(3n)·k_BT holds; forces half as strong
    fail it."""
    from opforce_tutorial.evaluation import force_along

    kbt, k = 0.6, 4.0
    x = np.random.default_rng(0).normal(0.0, np.sqrt(kbt / k), size=(20_000, 3, 3))
    edges = np.linspace(0.5, 2.5, 5)
    out = force_along(x, {"exact": -k * x, "weak": -0.5 * k * x}, kbt, lambda f: (f ** 2).sum(dim=(1, 2)), edges)
    assert out["counts"].sum() > 10_000
    np.testing.assert_allclose(out["exact"]["mean"], -2 * k * out["centres"], rtol=0.05)
    assert out["exact"]["rhs"] == pytest.approx(-2 * 9 * kbt)
    assert abs(out["exact"]["z"]) < 3 and out["weak"]["z"] > 20
    assert np.all(out["exact"]["stderr"] > 0)


def test_coordinate_derivatives_by_hand():
    from opforce_tutorial.evaluation import coordinate_derivatives

    x = np.random.default_rng(1).normal(size=(7, 4, 3))
    h, grad, lap = coordinate_derivatives(x, lambda f: (f ** 2).sum(dim=(1, 2)) + f[:, 0, 0] ** 3, batch_size=3)
    np.testing.assert_allclose(h, (x ** 2).sum((1, 2)) + x[:, 0, 0] ** 3)
    expected = 2 * x
    expected[:, 0, 0] += 3 * x[:, 0, 0] ** 2
    np.testing.assert_allclose(grad, expected)
    np.testing.assert_allclose(lap, 2 * 12 + 6 * x[:, 0, 0])
    assert coordinate_derivatives(x, lambda f: f.sum(dim=(1, 2)), laplacian=False)[2] is None


def test_unvisited_fraction_counts_frames_with_any_angle_where_the_data_never_went():
    from chains import chain_from_internal
    from opforce_tutorial.evaluation import unvisited_fraction

    rng = np.random.default_rng(0)
    n = 5000
    theta = np.radians(np.where(rng.random((n, 2)) < 0.5, 90.0, 130.0) + rng.normal(0, 3.0, (n, 2)))
    data = chain_from_internal(np.full((n, 3), 3.8), theta, rng.uniform(-np.pi, np.pi, (n, 1)))
    names = ["angle 0-1-2", "angle 1-2-3"]
    reference = make_reference(data, names, n_bins=50)
    assert unvisited_fraction(data, reference, names) == 0.0
    # 10 % of model frames close their first angle to 40° (below the data), 10 % put their second at
    # 110° (between the data's two peaks, bins the data left empty), 5 % do both
    model_theta = theta[:1000].copy()
    model_theta[:100, 0] = np.radians(40.0)
    model_theta[50:150, 1] = np.radians(110.0)
    model = chain_from_internal(np.full((1000, 3), 3.8), model_theta, np.zeros((1000, 1)))
    assert unvisited_fraction(model, reference, names) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="1-D histogram"):
        unvisited_fraction(model, reference, ["bond 0-1"])


def test_the_replica_bootstrap_gives_the_full_js_and_an_error_that_shrinks_with_more_replicas():
    rng = np.random.default_rng(3)
    ref = make_reference(ala2_like(40_000, rng)[0], ["bond 0-1", RAMACHANDRAN])

    def simulation(n_rep):  # bonds broader than the reference's: a JS set by a real difference, not by noise
        return ala2_like(50 * n_rep, rng, bond_std=0.06)[0].reshape(50, n_rep, 5, 3)

    few, many = simulation(16), simulation(256)
    for obs in ("bond 0-1", RAMACHANDRAN):
        r = replica_bootstrap_js(few, ref, obs, n_resamples=100)
        assert r["js"] == pytest.approx(evaluate(few.reshape(-1, 5, 3), ref, [obs])[getattr(obs, "name", obs)]["js"])
        assert r["sd"] > 0
    ratio = (replica_bootstrap_js(few, ref, "bond 0-1", 100)["sd"] / replica_bootstrap_js(many, ref, "bond 0-1", 100)["sd"])
    assert 2.0 < ratio < 8.0  # 16 times the replicas: about 4 (= √16) times smaller
    copies = np.repeat(few[:, :1], 8, axis=1)  # eight copies of one replica: every resample is the same histogram
    assert replica_bootstrap_js(copies, ref, "bond 0-1", 20)["sd"] == pytest.approx(0.0, abs=1e-12)


def test_the_replica_bootstrap_refuses_what_it_cannot_resample():
    ref = make_reference(ala2_like(1000, np.random.default_rng(0))[0], ["bond 0-1"])
    x = ala2_like(100, np.random.default_rng(1))[0]
    with pytest.raises(ValueError, match="replicas >= 2"):
        replica_bootstrap_js(x, ref, "bond 0-1")
    with pytest.raises(ValueError, match="no histogram"):
        replica_bootstrap_js(x.reshape(50, 2, 5, 3), ref, "bond 1-2")
