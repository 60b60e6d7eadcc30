"""Systems own their observables: alanine dipeptide's Ramachandran plane and basins, CLN025's folded
reference, native contacts, pair distances and states, checked against hand-computed values."""

import numpy as np
import pytest

from opforce_tutorial.analysis import state_populations
from opforce_tutorial.observables import ReferenceHistograms, observable, observable_values
from opforce_tutorial.systems import CG_SYSTEMS, cln025
from opforce_tutorial.structures import rmsd


def _rotation(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_q_is_one_at_the_reference_and_follows_the_sigmoid_by_hand():
    ref = cln025.folded_reference()
    i, j, r0 = cln025.native_contacts(ref)
    assert len(i) > 0 and (np.abs(i - j) >= 3).all() and (r0 < 8.0).all()
    q_ref = cln025.fraction_of_native_contacts(ref[None], ref)[0]
    assert q_ref == pytest.approx(np.mean(1 / (1 + np.exp(5.0 * (r0 - 1.2 * r0)))))
    # stretch one native contact to twice its length: its term falls to 1/(1 + e^{5·0.8 r0})
    x = ref.copy()
    k = int(np.argmax(j - i))
    x[j[k]] = x[i[k]] + 2.0 * (x[j[k]] - x[i[k]])
    r = np.linalg.norm(x[i] - x[j], axis=-1)
    expected = np.mean(1 / (1 + np.exp(5.0 * (r - 1.2 * r0))))
    assert cln025.fraction_of_native_contacts(x[None], ref)[0] == pytest.approx(expected)
    assert expected < q_ref


def test_rmsd_to_the_folded_reference_by_hand():
    ref = cln025.folded_reference()
    moved = (ref - ref.mean(0)) @ _rotation(0.7).T + [3.0, -1.0, 2.0]  # a rigid motion: RMSD 0
    assert cln025.rmsd_to_folded(moved[None])[0] == pytest.approx(0.0, abs=1e-6)
    shifted = ref.copy()
    shifted[0] += [0.0, 0.0, 1.0]  # one bead off by 1 Å, the others in place: ≤ sqrt(1/10) after superposition
    assert cln025.rmsd_to_folded(shifted[None])[0] <= np.sqrt(0.1) + 1e-9
    assert rmsd(shifted[None], ref)[0] == pytest.approx(cln025.rmsd_to_folded(shifted[None])[0])


def test_the_folded_fraction_with_weights_of_a_constructed_two_state_set():
    ref = cln025.folded_reference()
    unfolded = ref.copy()
    unfolded[5:] += np.array([0.0, 6.0, 0.0])  # half the hairpin pulled away: RMSD ≫ 1 Å
    frames = np.stack([ref] * 30 + [unfolded] * 70)
    states = cln025.states(frames)
    assert states["folded"][:30].all() and not states["folded"][30:].any()
    assert state_populations(frames, cln025.states, n_blocks=10)["folded"]["mean"] == pytest.approx(0.3)
    weights = np.r_[np.full(30, 3.0), np.full(70, 1.0)]  # weighted: 90 / 160
    assert float(np.sum(weights * states["folded"]) / weights.sum()) == pytest.approx(90 / 160)


def test_pair_distances_are_named_observables_on_tenth_of_an_angstrom_bins():
    x = np.cumsum(np.random.default_rng(0).normal(0, 1, (200, 10, 3)) + [3.8, 0, 0], axis=1)
    d = observable("distance 0-3")
    assert np.allclose(d.values(x), np.linalg.norm(x[:, 3] - x[:, 0], axis=-1))
    edges = d.bin_edges(d.values(x), 100)[0]
    assert np.allclose(np.diff(edges), 0.1) and edges[0] < d.values(x).min() and edges[-1] > d.values(x).max()
    assert np.allclose(observable_values(x, "distance 2-7"), np.linalg.norm(x[:, 7] - x[:, 2], axis=-1))


def test_the_shipped_cln025_histograms_hold_every_observable_the_system_owns():
    from opforce_tutorial.data.dataset import verified_path

    ref = ReferenceHistograms.load(verified_path("cln025-histograms"))
    owned = {observable(o).name for o in CG_SYSTEMS["cln025"].observables}
    assert set(ref.probabilities) == owned and len(owned) == 9 + 8 + 7 + 28 + 2 + 1  # + RMSD, Q, TICA
    assert sum(ref.probabilities["native contacts Q"]) == pytest.approx(1.0)
    folded = ref.probabilities["rmsd folded"][:10].sum()  # bins of 0.1 Å up to 1 Å: the weighted folded fraction
    assert folded == pytest.approx(0.091, abs=0.005)


def test_the_saved_tica_projection_is_deeptimes_transform(tmp_path):
    """fit_tica on a toy 10-bead dataset, then the saved model projects frames exactly as deeptime does."""
    import json

    from deeptime.decomposition import TICA

    from opforce_tutorial.data.tica import fit_tica
    from opforce_tutorial.storage import sha256

    rng = np.random.default_rng(0)
    steps = rng.normal(0, 0.3, (3, 400, 10, 3))
    x = (np.cumsum(steps, axis=1) * 0.05 + np.arange(10)[:, None] * np.array([3.8, 0.0, 0.0])
         + rng.normal(0, 0.2, (3, 400, 10, 3))).reshape(-1, 10, 3).astype(np.float32)
    np.savez(tmp_path / "toy.npz", positions=x, forces=np.zeros_like(x), traj_ids=np.repeat([0, 1, 2], 400),
             traj_sources=np.array(["a", "b", "c"]), temperature=340.0, save_interval_ps=10.0,
             bead_names=np.array(cln025.BEAD_NAMES))
    (tmp_path / "registry.json").write_text(json.dumps({"toy": {"file": "toy.npz", "sha256": sha256(tmp_path / "toy.npz")}}))
    entry = fit_tica("toy", cln025.tica_features, lag=5, data_dir=tmp_path)
    assert entry["trajectories_used"] == 3 and json.loads((tmp_path / "registry.json").read_text())["toy-tica"]
    saved = dict(np.load(tmp_path / "toy_tica.npz"))
    series = [cln025.tica_features(x[k * 400:(k + 1) * 400]) for k in range(3)]
    reference = TICA(lagtime=5, dim=2).fit(series).fetch_model()
    assert np.allclose(cln025.tica_projection(x[:50], saved), reference.transform(series[0][:50]), atol=1e-8)
    assert cln025.tica_features(x[:3]).shape == (3, 45 + 14)


def test_the_data_folded_state_is_a_compact_basin_of_the_tica_plane():
    from opforce_tutorial.data.dataset import load_dataset

    ds = load_dataset("cln025")
    tic = cln025.tica_projection(ds.positions[::10])
    folded = cln025.states(ds.positions[::10])["folded"]
    offset = (tic[folded].mean(axis=0) - tic[~folded].mean(axis=0)) / tic[folded].std(axis=0)
    assert np.linalg.norm(offset) > 3.0, offset  # the folded frames' centre is > 3 of their spreads away


def test_folding_transitions_count_core_set_crossings_by_hand():
    folded = cln025.folded_reference()
    unfolded = folded.copy()
    unfolded[5:] += np.array([10.0, 0.0, 0.0])  # one arm pulled away: RMSD well above 3 Å
    between = folded.copy()
    between[5:] += np.array([4.0, 0.0, 0.0])  # between the cores: no transition by itself
    assert cln025.rmsd_to_folded(unfolded[None])[0] > 3 and 1 < cln025.rmsd_to_folded(between[None])[0] < 3
    # replica 0: F F B F U U B U F F (1 unfolding, then 1 folding); replica 1: U B U B U B U B U U (none)
    r0 = [folded, folded, between, folded, unfolded, unfolded, between, unfolded, folded, folded]
    r1 = [unfolded, between] * 4 + [unfolded, unfolded]
    out = cln025.folding_transitions(np.stack([np.stack(r0), np.stack(r1)], axis=1))
    assert out["folded at first frame"] == 1 and out["foldings"] == 1 and out["unfoldings"] == 1
    assert out["replicas folding"] == 1 and out["replicas unfolding"] == 1
    assert out["folded % first half"] == pytest.approx(100 * 3 / 10) and out["folded % second half"] == pytest.approx(20)
    with pytest.raises(ValueError, match="frames, replicas, 10, 3"):
        cln025.folding_transitions(np.stack(r0))


def test_ca_pdb_text_writes_chains_that_read_back(tmp_path):
    from opforce_tutorial.structures import ca_pdb_text, read_ca_pdb

    xyz = np.random.default_rng(0).normal(size=(2, 10, 3)) * 5
    text = ca_pdb_text({"folded": xyz[0], "unfolded": xyz[1]}, list(cln025.BEAD_NAMES))
    atoms = [line for line in text.splitlines() if line.startswith("ATOM")]
    assert len(atoms) == 20 and {line[21] for line in atoms} == {"A", "B"}
    assert sum(line.startswith("CONECT") for line in text.splitlines()) == 18  # no bond between the chains
    (tmp_path / "two.pdb").write_text(text)
    np.testing.assert_allclose(read_ca_pdb(tmp_path / "two.pdb"), xyz.reshape(20, 3), atol=1e-3)
