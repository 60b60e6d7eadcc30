"""Folding analysis: RMSD, the data-defined folded reference, transitions, the MSM and the chignolin build."""

import json

import numpy as np
import pytest

from opforce_tutorial.data.dataset import DatasetError, Trajectory, load_dataset, load_trajectories
from opforce_tutorial.data.folding import (block_bootstrap, folded_reference, folding_msm, smallest_good_dimension,
                                           tica_dimension_scores, write_folding_results)
from opforce_tutorial.structures import read_ca_pdb, rmsd, superpose, write_ca_pdb
from opforce_tutorial.analysis import count_transitions

HAIRPIN = np.array([[0.0, 0, 0], [3.8, 0, 0], [7.6, 0.5, 0], [11.0, 2.0, 0], [12.5, 5.0, 0.5],
                    [11.0, 8.0, 0], [7.6, 9.5, 0], [3.8, 10.0, 0], [0.0, 10.0, 0.3], [-3.0, 9.0, 1.0]])


def _rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_rmsd_is_superposition_invariant_and_sees_mirror_images():
    rng = np.random.default_rng(0)
    moved = HAIRPIN @ _rotation(rng).T + np.array([5.0, -3.0, 2.0])
    assert rmsd(moved[None], HAIRPIN)[0] == pytest.approx(0.0, abs=1e-6)
    noisy = HAIRPIN + rng.normal(scale=0.5, size=HAIRPIN.shape)
    fitted = superpose(noisy, HAIRPIN)
    assert rmsd(noisy[None], HAIRPIN)[0] == pytest.approx(np.sqrt(((fitted - HAIRPIN) ** 2).sum(1).mean()), rel=1e-9)
    mirror = HAIRPIN * np.array([1.0, 1.0, -1.0])  # not chiral-equivalent: no proper rotation maps it back
    assert rmsd(mirror[None], HAIRPIN)[0] > 0.1


def _coil(rng, n):
    steps = rng.normal(size=(n, 10, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
    return np.cumsum(steps, axis=1)


def test_folded_reference_is_the_densest_conformation():
    rng = np.random.default_rng(1)
    folded = HAIRPIN + rng.normal(scale=0.2, size=(300, 10, 3))
    frames = np.concatenate([_coil(rng, 700), folded])
    from opforce_tutorial.data.dataset import Trajectory

    traj = Trajectory(frames, np.zeros_like(frames), "t", 340.0, 10.0)
    ref, info = folded_reference([traj], n_sample=500)
    assert rmsd(ref[None], HAIRPIN)[0] < 0.3 and info["fraction_within_radius"] > 0.2


def test_transitions_need_commitment_to_the_other_core():
    folded = np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1], bool)
    unfolded = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0], bool)
    # f f . u . . f . u . f : unfold, fold, unfold, fold (the recrossing at index 6 counts, it came from u)
    assert count_transitions(folded, unfolded) == (2, 2)
    assert count_transitions(folded, np.zeros(11, bool)) == (0, 0)
    assert count_transitions(folded[:0], unfolded[:0]) == (0, 0)


def _two_state_runs(tmp_path, rng, n_copies=6, n_frames=1500, p_fold=0.01, p_unfold=0.02, energies=False):
    """A copies run whose copies jump between a hairpin and coils by a Markov chain: π(folded) = 1/3;
    with ``energies``, each copy's potential energy is −10 kcal/mol folded, 0 unfolded, plus noise."""
    run = tmp_path / "runs" / "cln025_340K_toy"
    run.mkdir(parents=True)
    json.dump({"n_copies": n_copies, "temperature": 340.0, "save_every_ps": 10.0}, open(run / "run.json", "w"))
    states = np.zeros((n_frames, n_copies), bool)
    states[0] = rng.random(n_copies) < 1 / 3
    for t in range(1, n_frames):
        r = rng.random(n_copies)
        states[t] = np.where(states[t - 1], r > p_unfold, r < p_fold)
    coils = _coil(rng, n_frames * n_copies).reshape(n_frames, n_copies, 10, 3)
    hairpins = HAIRPIN + rng.normal(scale=0.25, size=(n_frames, n_copies, 10, 3))
    pos = np.where(states[..., None, None], hairpins, coils).astype(np.float32)
    energy = (np.where(states, -10.0, 0.0) + rng.normal(scale=3.0, size=states.shape)).astype(np.float32)
    for start in range(0, n_frames, 500):
        extra = {"energy_kcal": energy[start:start + 500]} if energies else {}
        np.savez(run / f"chunk_{start + 1:08d}.npz", iteration=np.arange(start + 1, start + 501),
                 cg_positions=pos[start:start + 500], cg_forces=np.zeros_like(pos[start:start + 500]), **extra)
    return run, states


def test_msm_recovers_the_folded_population_and_weights_frames():
    rng = np.random.default_rng(2)
    import tempfile
    from pathlib import Path

    run, states = _two_state_runs(Path(tempfile.mkdtemp()), rng)
    trajs = load_trajectories([run])
    assert len(trajs) == 6 and trajs[0].positions.shape == (1500, 10, 3) and trajs[0].source.endswith("copy00")
    folded = [rmsd(t.positions.astype(float), HAIRPIN) < 1.5 for t in trajs]
    assert np.array_equal(np.stack(folded, 1), states)
    msm = folding_msm(trajs, folded, lag=5, n_microstates=20, its_lags=(2, 5, 10), n_samples=20)
    assert msm.folded_fraction == pytest.approx(1 / 3, abs=0.06)
    assert 0 < msm.folded_fraction_std < 0.06
    w = np.concatenate(msm.weights)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert np.dot(w, np.concatenate(folded)) == pytest.approx(msm.folded_fraction, abs=1e-6)
    # the slowest implied timescale is the folding relaxation: 1/(p_fold + p_unfold) = 33 frames = 0.33 ns
    assert msm.implied_timescales_ns[10][0] == pytest.approx(0.33, rel=0.3)


def test_chignolin_build_ships_weights_reference_and_report(tmp_path):
    rng = np.random.default_rng(3)
    run, states = _two_state_runs(tmp_path, rng, n_copies=4, n_frames=1000, energies=True)
    trajs = load_trajectories([run])
    assert trajs[1].energies.shape == (1000,) and trajs[1].energies[states[:, 1]].mean() < -8  # per copy, kcal/mol
    data_dir = tmp_path / "data"
    entry = write_folding_results([run], ["TYR"] * 10, data_dir)
    ds = load_dataset("cln025", data_dir=data_dir)
    assert ds.n_frames == entry["n_frames"] == 4000 and ds.weights.sum() == pytest.approx(1.0)
    assert len(np.unique(ds.traj_ids)) == 4 and entry["foldings"] + entry["unfoldings"] > 20
    ref = read_ca_pdb(data_dir / "cln025_folded_ca.pdb")
    assert rmsd(ref[None], HAIRPIN)[0] < 0.3
    report = json.loads((data_dir / "cln025_folding.json").read_text())
    assert report["total_ns"] == pytest.approx(40.0) and len(report["per_trajectory"]) == 4
    melting = report["melting"]  # from the saved energies: folding lowers U by 10 kcal/mol, so heating melts
    assert len(melting["trajectories"]) == 4 and melting["delta_u_folded_minus_unfolded_kcal"] == pytest.approx(-10, abs=0.5)
    curve = {row["T_K"]: row["folded_fraction"] for row in melting["curve"]}
    assert curve[340.0] == pytest.approx(report["msm"]["folded_fraction"], abs=1e-4) and curve[300.0] > curve[380.0]
    registry = json.loads((data_dir / "registry.json").read_text())
    assert {"cln025", "cln025-histograms", "cln025-folded-reference", "cln025-folding-report"} <= set(registry)
    # the reference histograms are those of the MSM-weighted frames
    from opforce_tutorial.evaluation import ReferenceHistograms, chain_observables, make_reference

    assert registry["cln025-histograms"]["weighted"] is True
    saved = ReferenceHistograms.load(data_dir / "cln025_histograms.npz")
    weighted = make_reference(ds.positions, chain_observables(10), ds.weights)
    unweighted = make_reference(ds.positions, chain_observables(10))
    name = "bond 0-1"
    assert np.allclose(saved.probabilities[name], weighted.probabilities[name])
    assert not np.allclose(saved.probabilities[name], unweighted.probabilities[name])
    xyz = HAIRPIN + 0.1
    write_ca_pdb(tmp_path / "x.pdb", xyz, ["GLY"] * 10)
    assert np.allclose(read_ca_pdb(tmp_path / "x.pdb"), xyz, atol=1e-3)


def test_runs_must_share_temperature_and_have_frames(tmp_path):
    from opforce_tutorial.data.dataset import build_dataset

    rng = np.random.default_rng(4)
    run, _ = _two_state_runs(tmp_path, rng, n_copies=2, n_frames=500)
    other = tmp_path / "runs" / "cln025_300K"
    other.mkdir()
    json.dump({"temperatures": [300.0], "exchange_every_ps": 10.0}, open(other / "run.json", "w"))
    with pytest.raises(DatasetError, match="no frames yet"):
        load_trajectories([other])
    np.savez(other / "chunk_00000001.npz", cg_positions=np.zeros((3, 10, 3)), cg_forces=np.zeros((3, 10, 3)))
    with pytest.raises(ValueError, match="differ in temperature"):
        build_dataset("cln025", [run, other], ["TYR"] * 10, tmp_path / "data")


def test_folding_and_copies_commands(tmp_path, capsys):
    """The README's `opforce data folding` and `opforce data copies --probe` commands."""
    from opforce_tutorial.cli import main

    run, _ = _two_state_runs(tmp_path, np.random.default_rng(5), n_copies=4, n_frames=1000)
    assert main(["data", "folding", str(run)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trajectories"] == 4 and report["foldings"] + report["unfoldings"] > 10
    assert "melting" not in report  # these runs saved no energies
    assert main(["data", "copies", "ala2", "--probe", "1", "--interval-ps", "0.1"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["n_copies"] == 1 and row["ns_day_per_copy"] > 0
    assert main(["data", "copies", "ala2"]) == 2


def test_melting_curve_reweights_each_state_exactly_for_gaussian_energies():
    from opforce_tutorial.data.folding import melting_curve
    from opforce_tutorial.units import KB_KCAL_PER_MOL_K

    rng = np.random.default_rng(5)
    t0, p0, mu_f, mu_u, sd = 340.0, 0.2, -15.0, 0.0, 6.0  # kcal/mol: folding lowers the energy
    folded = rng.random(40_000) < 0.3  # the frames' mix need not be the equilibrium one: only K(T0) sets it
    energy = np.where(folded, mu_f, mu_u) + sd * rng.standard_normal(len(folded))
    temps = np.arange(300.0, 381.0, 10.0)
    curve = melting_curve([energy[:25_000], energy[25_000:]], [folded[:25_000], folded[25_000:]], t0, p0, 0.01, temps)
    dbeta = 1 / (KB_KCAL_PER_MOL_K * temps) - 1 / (KB_KCAL_PER_MOL_K * t0)
    exact = 1 / (1 + (1 - p0) / p0 * np.exp(dbeta * (mu_f - mu_u)))  # equal widths: the σ² terms cancel
    assert curve.folded_fraction[temps == t0][0] == pytest.approx(p0)
    assert np.all(np.abs(curve.folded_fraction - exact) < 3 * curve.folded_fraction_err + 0.005)
    assert (np.diff(curve.folded_fraction) < 0).all()  # melts on heating
    t_mid = 1 / (KB_KCAL_PER_MOL_K * (1 / (KB_KCAL_PER_MOL_K * t0) + np.log(p0 / (1 - p0)) / (mu_f - mu_u)))
    assert curve.midpoint() == pytest.approx(t_mid, abs=2.0)  # 320 K
    assert curve.delta_u == pytest.approx(mu_f - mu_u, abs=0.2) and curve.delta_u_err < 0.2
    far = melting_curve([energy], [folded], t0, p0, 0.01, [150.0, 340.0], min_ess=50)
    assert far.reliable.tolist() == [False, True] and far.inefficiency == pytest.approx(1.0, abs=0.05)
    assert far.ess_folded[1] == pytest.approx(folded.sum() / far.inefficiency)
    with pytest.raises(ValueError, match="both the folded and the unfolded"):
        melting_curve([energy], [np.zeros(len(energy), bool)], t0, p0, 0.01, temps)


def test_statistical_inefficiency_of_an_ar1_process():
    from opforce_tutorial.data.folding import statistical_inefficiency

    rng = np.random.default_rng(6)
    a, series = 0.9, []
    for _ in range(4):
        x = np.zeros(20_000)
        for t in range(1, len(x)):
            x[t] = a * x[t - 1] + rng.standard_normal()
        series.append(x)
    assert statistical_inefficiency(series) == pytest.approx((1 + a) / (1 - a), rel=0.15)  # 19 frames
    assert statistical_inefficiency([rng.standard_normal(20_000)]) == pytest.approx(1.0, abs=0.05)


def _telegraph(rng, n_frames, p_switch):
    """A two-state Markov chain (±1) switching with probability ``p_switch`` per frame."""
    flips = rng.random(n_frames) < p_switch
    return np.where(np.cumsum(flips) % 2 == 0, 1.0, -1.0)


@pytest.mark.parametrize("second_process", ["everywhere", "one_trajectory"])
def test_cross_validation_keeps_slow_processes_seen_everywhere_and_drops_one_off_visits(second_process):
    rng = np.random.default_rng(4)
    feats = []
    for k in range(8):
        x = rng.normal(scale=0.3, size=(2000, 4))
        x[:, 0] += _telegraph(rng, 2000, 0.01)
        if second_process == "everywhere":
            x[:, 1] += 2.0 * _telegraph(rng, 2000, 0.02)
        elif k == 0:
            x[700:1200, 1] += 3.0  # a state visited once, in one trajectory
        feats.append(x)
    scores = tica_dimension_scores(feats, dims=(1, 2), lag=5, n_microstates=20, block_frames=500)
    expected = 2 if second_process == "everywhere" else 1
    assert smallest_good_dimension(scores) == expected, scores


def test_one_standard_error_rule_prefers_the_smaller_dimension():
    assert smallest_good_dimension({1: (1.90, 0.05), 2: (2.00, 0.05), 3: (2.02, 0.04)}) == 2
    assert smallest_good_dimension({1: (1.99, 0.05), 2: (2.00, 0.05), 3: (1.50, 0.04)}) == 1


def test_chapman_kolmogorov_prediction_matches_a_markovian_two_state_process():
    rng = np.random.default_rng(5)
    states = [(_telegraph(rng, 3000, 0.02) > 0) for _ in range(6)]
    trajs = [Trajectory(positions=np.where(s[:, None, None], HAIRPIN, 2.0 * HAIRPIN).astype(np.float32)
                        + rng.normal(scale=0.1, size=(3000, 10, 3)).astype(np.float32),
                        forces=np.zeros((3000, 10, 3), np.float32), save_interval_ps=10.0, temperature=340.0,
                        source=f"toy/copy{k:02d}") for k, s in enumerate(states)]
    msm = folding_msm(trajs, states, lag=5, n_microstates=10, tica_dims=(1,), its_lags=(5, 10), ck_steps=(1, 2, 4),
                      n_samples=10, n_boot=10, long_lags=(40, 5000))
    # long-lag diagnostic: lags no trajectory exceeds are left out; the timescale is the chain's, −1/ln(1 − 2p)
    assert set(msm.long_lag_timescales) == {40} and msm.long_lag_timescales[40]["trajectories_longer"] == 6
    assert msm.long_lag_timescales[40]["its_ns"][0] == pytest.approx(-0.01 / np.log(1 - 2 * 0.02), rel=0.3)
    # exact for the telegraph chain: P(same state after n frames) = (1 + (1 − 2p)^n) / 2
    for k, (predicted, estimated) in msm.folded_ck_test.items():
        exact = (1 + (1 - 2 * 0.02) ** (5 * k)) / 2
        assert predicted == pytest.approx(exact, abs=0.03) and estimated == pytest.approx(exact, abs=0.03)
    assert abs(msm.slowest_process_folded_correlation) > 0.99


def _two_state_chain(rng, n_frames, p_fold, p_unfold):
    """Microstate trajectory of a two-state Markov chain (1 = folded), started from its equilibrium."""
    x = np.empty(n_frames, np.int32)
    x[0] = rng.random() < p_fold / (p_fold + p_unfold)
    r = rng.random(n_frames)
    for t in range(1, n_frames):
        x[t] = r[t] > p_unfold if x[t - 1] else r[t] < p_fold
    return x


def test_block_bootstrap_error_matches_the_spread_of_independent_datasets():
    from deeptime.markov.msm import MaximumLikelihoodMSM

    rng = np.random.default_rng(7)
    p_fold, p_unfold, lag = 0.01, 0.02, 5  # π(folded) = 1/3, relaxation time 1/0.03 = 33 frames

    def dataset():
        return [_two_state_chain(rng, 2000, p_fold, p_unfold) for _ in range(6)]

    def folded_fraction(d):
        return MaximumLikelihoodMSM(lagtime=lag, reversible=True).fit(d).fetch_model().stationary_distribution[1]

    spread = np.std([folded_fraction(dataset()) for _ in range(40)], ddof=1)
    d = dataset()
    fractions, its = block_bootstrap(d, [x == 1 for x in d], lag, its_lags=(lag, 10), block_frames=500, n_boot=100)
    assert fractions.mean() == pytest.approx(1 / 3, abs=0.05)
    assert 0.6 < np.std(fractions, ddof=1) / spread < 1.6, (np.std(fractions, ddof=1), spread)
    exact_its = -1 / np.log(1 - p_fold - p_unfold)  # 32.8 frames at every lag (a Markov chain)
    for tau, samples in its.items():
        low, high = np.percentile(samples, [2.5, 97.5])
        assert low < exact_its < high and high - low < exact_its, (tau, low, high)
