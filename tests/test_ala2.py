"""Chapter 2's pipeline through the registry, on the shipped dataset with tiny settings."""

import importlib
from dataclasses import replace

import numpy as np
import torch
import pytest

from opforce_tutorial import pretrained, study
from opforce_tutorial.chapters import ala2
from opforce_tutorial.cg.pipeline import CGRunSettings
from opforce_tutorial.cg.training import ForceMatchingSettings
from opforce_tutorial.kernels.cnf import CPU_MAX_CHUNK, chunk_plan
from opforce_tutorial.labels import LabelSettings


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(ala2.STUDY.flows, "coupling", replace(ala2.STUDY.flows["coupling"], n_steps=10))
    monkeypatch.setattr(ala2.STUDY, "labels", LabelSettings(0.01, 2, 64))
    monkeypatch.setattr(ala2.STUDY, "reference_labels", LabelSettings(0.02, 1, 64))
    monkeypatch.setattr(ala2.STUDY, "cg", CGRunSettings(hidden=8, n_rbf=8, n_replicas=4, n_steps=200, save_every=50,
                                                           burn_in=0, force_matching=ForceMatchingSettings(
                                                               n_steps=20, eval_every=10, batch_size=32)))
    monkeypatch.setattr(pretrained, "_TRAINED", {})
    monkeypatch.setenv("OPFORCE_TRAIN", "always")


def test_cg_model_of_the_coupling_kernel_trains_its_kernel_once_and_scores(tiny):
    name = ala2.cg_name("coupling", 0.05)
    model = pretrained.load_or_train(name)
    assert set(pretrained._TRAINED) == {name, "ala2-coupling-0.05"}
    traj = pretrained.samples(name)
    assert traj.shape == (4, 4, 5, 3) and np.isfinite(traj).all()
    scores = ala2.score(traj, ala2.reference_histograms())
    assert set(scores["js"]) >= {"bond 0-1", "angle 1-2-3", "ramachandran"}
    assert model.net.config.hidden == 8


def test_pretrain_chain_labels_with_the_flow_it_saved(tiny, tmp_path, monkeypatch):
    trainings = []
    train_flow = study.train_coupling_flow

    def counted(*args, **kwargs):
        trainings.append(1)
        return train_flow(*args, **kwargs)

    monkeypatch.setattr(study, "train_coupling_flow", counted)
    pretrained.pretrain("ala2-coupling-0.05", models_dir=tmp_path)
    saved = pretrained._TRAINED["ala2-coupling-0.05"][0]
    pretrained.pretrain(ala2.cg_name("coupling", 0.05), models_dir=tmp_path)  # OPFORCE_TRAIN=always, as on a GPU
    assert len(trainings) == 1 and pretrained._TRAINED["ala2-coupling-0.05"][0] is saved
    assert set(pretrained.read_registry(tmp_path / "registry.json")) == {"ala2-coupling-0.05", "ala2-cg-coupling-0.05"}


def test_every_chapter_object_is_registered_with_a_rebuild_command():
    specs = pretrained._specs()
    for sigma in ala2.NOISE_STDS:
        for source in ("coupling", "cnf"):
            assert ala2.kernel_name(source, sigma) in specs
        for source in ("noise", "coupling", "cnf"):
            assert ala2.cg_name(source, sigma) in specs
    assert "ala2-cg-reference" in specs
    with pytest.raises(ValueError, match="no kernel"):
        ala2.make_kernel("reference", 0.05, 0.6)
    field = pretrained.load("ala2-cnf-0.05")[0]
    kernel = ala2.make_kernel("cnf", 0.05, 0.6, field)
    plan = chunk_plan(5, field.config.hidden, field.config.n_layers, 4, 2.0, max_chunk=CPU_MAX_CHUNK)  # a CPU field
    assert (kernel.flow.chunk_size, kernel.flow.group_size) == plan


def test_models_trained_on_other_data_are_named():
    current = ala2.STUDY.dataset_sha256()
    registry = {"ala2-cg-reference": {"metrics": {"dataset_sha256": current}},
                "ala2-cnf-0.05": {"metrics": {"dataset_sha256": "0" * 64}},
                "ala2-coupling-0.1": {"metrics": {}},
                "toy1d-flow": {"metrics": {}}}
    assert ala2.models_trained_on_other_data(registry) == ["ala2-cnf-0.05", "ala2-coupling-0.1"]


def test_the_gpu_script_retrains_every_chapter_model_after_its_flow():
    from pathlib import Path

    script = (Path(__file__).parent.parent / "benchmarks" / "gpu_study.sh").read_text()
    assert "s.training_chains()" in script  # the script trains the study's chains, listed by the package
    chains = ala2.STUDY.training_chains()
    assert sorted(n for chain in chains for n in chain) == sorted(n for n in pretrained._specs() if n.startswith("ala2-"))
    for chain in chains:  # a CG model of a flow comes after that flow, in the same process
        *flows, cg = chain
        if flows:
            assert cg == "ala2-cg-" + flows[0].removeprefix("ala2-")


def test_the_reference_source_has_the_kernels_label_budget():
    from opforce_tutorial.data.dataset import CGDataset

    x = np.random.default_rng(0).normal(size=(100, 5, 3)).astype(np.float32)
    ds = CGDataset("t", x, -x, 300.0, np.zeros(100, int), 1.0, ["C"] * 5)
    y, f, idx = ala2.labelled_set("reference", None, ds, settings=LabelSettings(n_frames=4, repeats=5))
    assert len(idx) == 20 and np.array_equal(y, x[idx]) and np.array_equal(f, -x[idx]) and (np.diff(idx) > 0).all()
    assert len(ala2.labelled_set("reference", None, ds, settings=LabelSettings(n_frames=40, repeats=5))[2]) == 100


def test_a_replicate_reruns_the_same_pipeline_with_another_seed(tiny, tmp_path):
    name = ala2.cg_name("reference")
    registered = pretrained.pretrain(name, models_dir=tmp_path)
    assert registered["training"]["labels"]["seed"] == 0 and registered["training"]["cg"]["force_matching"]["seed"] == 0
    same = ala2.STUDY.cg_run(ala2.training_frames(), "reference", None, None, 0, "cpu")[1]
    assert same["best_val_force_mse"] == registered["metrics"]["best_val_force_mse"]  # seed 0 is the registered run
    other = pretrained.replicate(name, 1, models_dir=tmp_path)["metrics"]
    assert other["n_labels"] == registered["metrics"]["n_labels"]
    assert other["best_val_force_mse"] != registered["metrics"]["best_val_force_mse"]
    assert set(other["populations"]) == set(registered["metrics"]["populations"])


def test_seed_metrics_pool_the_registered_model_and_its_current_replicates():
    def metrics(a_r):
        return {"populations": {"αL (φ > 0)": {"mean": 0.02}, "αR": {"mean": a_r}, "β / PII": {"mean": 0.98 - a_r}},
                "js": {"bond 0-1": {"js": 0.1}, "bond 1-2": {"js": 0.3}, "angle 0-1-2": {"js": 0.05},
                       "ramachandran": {"js": 0.04}}}

    registry = {name: {"sha256": name, "metrics": metrics(0.3)} for name in ala2.cg_model_names()}
    replicates = {"ala2-cg-reference": {"1": {"model_sha256": "ala2-cg-reference", "metrics": metrics(0.4)},
                                        "2": {"model_sha256": "older weights", "metrics": metrics(0.9)}}}
    table = ala2.seed_metrics(registry, replicates)
    assert len(table) == 8 and len(ala2.cg_model_names()) == 7
    ref = table[table.model == "ala2-cg-reference"]
    assert ref.seed.tolist() == [0, 1] and ref["αR %"].tolist() == pytest.approx([30.0, 40.0])
    assert ref["mean JS bonds"].tolist() == pytest.approx([0.2, 0.2]) and (table["mean JS angles"] == 0.05).all()


def test_a_flow_kernel_replicate_retrains_its_flow_with_the_seed(tiny, tmp_path, monkeypatch):
    seeds = []
    train_flow = study.train_coupling_flow

    def recorded(positions, config, settings, device, checkpoint=None):
        seeds.append(settings.seed)
        return train_flow(positions, config, settings, device, checkpoint)

    monkeypatch.setattr(study, "train_coupling_flow", recorded)
    pretrained.pretrain(ala2.cg_name("coupling", 0.05), models_dir=tmp_path)
    entry = pretrained.replicate(ala2.cg_name("coupling", 0.05), 2, models_dir=tmp_path)
    assert seeds == [0, 2] and np.isfinite(entry["metrics"]["flow_final_val_loss"])


def test_seed_spread_plot_draws_one_dot_per_seed_and_the_data_band():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from opforce_tutorial import plotting

    metrics = pd.DataFrame({"model": ["a", "a", "b"], "seed": [0, 1, 0], "αR %": [30.0, 40.0, 20.0],
                            "JS ramachandran": [0.05, 0.06, 0.07]})
    fig = plotting.plot_seed_spread(metrics, {"a": "noise σ=0.05", "b": "cnf σ=0.05"},
                                    {"αR": {"mean": 0.31, "block_error": 0.01}}, columns=("αR %", "JS ramachandran"))
    population, js = fig.axes
    dots = [line for line in population.lines if line.get_marker() == "o"]
    assert [len(d.get_ydata()) for d in dots] == [2, 1] and list(dots[0].get_ydata()) == [30.0, 40.0]
    band = population.patches[0]
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((29.0, 33.0))  # data ± 2 block errors, in %
    assert not js.patches and [t.get_text() for t in js.get_xticklabels()] == ["noise σ=0.05", "cnf σ=0.05"]


def test_prior_only_baseline_simulates_the_fitted_prior_with_the_chapter_settings(tiny):
    traj = ala2.prior_only_trajectory()
    assert traj.shape == (4, 4, 5, 3) and traj.dtype == np.float32 and np.isfinite(traj).all()
    from opforce_tutorial.cg import fit_priors
    from opforce_tutorial.units import kbt

    ds = ala2.training_frames()  # the chapter passes the frames and the prior it already has
    assert np.array_equal(ala2.prior_only_trajectory(ds, fit_priors(ds.positions, kbt(ds.temperature))[0]), traj)


def test_the_prior_only_recipe_saves_the_baseline_with_its_settings(tiny, tmp_path):
    entry = pretrained.pretrain(ala2.STUDY.prior_only_name, models_dir=tmp_path)
    assert entry["training"] == ala2.STUDY.prior_only_settings() and entry["samples"]["shape"] == [4, 4, 5, 3]
    saved = np.load(tmp_path / entry["samples"]["file"])["samples"]
    assert np.array_equal(saved, ala2.prior_only_trajectory())  # seeded: the recipe is the baseline
    model = pretrained._TRAINED[ala2.STUDY.prior_only_name][0]
    assert type(model).__name__ == "PriorEnergy" and entry["metrics"]["dataset_sha256"] == ala2.STUDY.dataset_sha256()


@pytest.mark.parametrize("chapter", ["ala2", "cln025"])
def test_the_shipped_prior_only_runs_hold_the_fitted_prior_and_refuse_another(chapter, monkeypatch):
    study = importlib.import_module(f"opforce_tutorial.chapters.{chapter}").STUDY
    monkeypatch.setenv("OPFORCE_TRAIN", "never")
    traj = study.saved_prior_only_trajectory()  # the shipped run is of the current prior and settings
    assert traj.shape[1:] == (study.cg.n_replicas, study.system.n_beads, 3) and np.isfinite(traj).all()
    other = study.fit_prior()[0]
    other.bond_k.mul_(1.01)
    with pytest.raises(pretrained.PretrainedError, match="another prior"):
        study.saved_prior_only_trajectory(other)
    monkeypatch.setattr(study, "cg", replace(study.cg, n_steps=study.cg.n_steps // 2))
    with pytest.raises(pretrained.PretrainedError, match="other settings"):
        study.saved_prior_only_trajectory()


def test_basin_exchange_counts_alpha_l_entries_exits_and_drift():
    from chains import chain_from_internal

    phi = np.array([[70, 70, -80, -80, -80, 70, 70, 70],  # replica 0: starts in αL, leaves, comes back
                    [-80, -80, -80, 10, -80, -80, -80, -80],  # replica 1: φ = 10° is no commitment to αL
                    [-80, -80, -80, -80, -80, -80, -80, -80]], float).T  # (time, replicas)
    psi = np.full_like(phi, -40.0)  # αR where φ ≤ 0
    psi[2:4, 2] = 150.0  # replica 2: αR → β → αR
    n = phi.size
    x = chain_from_internal(np.full((n, 4), 1.5), np.full((n, 3), np.radians(110)),
                            np.radians(np.stack([phi.ravel(), psi.ravel()], 1))).reshape(*phi.shape, 5, 3)
    row = ala2.basin_exchange(x)
    assert row["replicas"] == 3 and row["starting in αL"] == 1 and row["αL entries"] == 1 and row["αL exits"] == 1
    assert row["αR ↔ β changes per replica"] == pytest.approx(2 / 3)
    assert row["αL % first half"] == pytest.approx(100 * 3 / 12) and row["αL % second half"] == pytest.approx(100 * 3 / 12)
    assert row["αR % first half"] == pytest.approx(100 * 7 / 12) and row["αR % second half"] == pytest.approx(100 * 9 / 12)
    with pytest.raises(ValueError, match="time, replicas, 5, 3"):
        ala2.basin_exchange(x[0])


def test_model_dihedral_checks_pass_the_model_that_made_the_frames_and_fail_its_mirror_image():
    """Frames of a known chiral 5-bead energy: its own forces pass, its mirror image's fail."""
    import copy

    from chains import chain_from_internal, toy_prior

    from opforce_tutorial.cg.pipeline import simulate_cg

    prior = toy_prior()  # bonds 3.8 Å, angles 1.9 rad, Fourier dihedrals
    with torch.no_grad():
        prior.dihedral_sin.fill_(-1.0)  # strongly chiral (k_BT = 0.6 kcal/mol)
    mirror = copy.deepcopy(prior)
    with torch.no_grad():
        mirror.dihedral_sin.fill_(1.0)  # E_mirror(x) = E(x̄): the same energy for the mirror-image molecule
    rng = np.random.default_rng(0)
    x0 = chain_from_internal(np.full((64, 4), 3.8), np.full((64, 3), 1.9), rng.uniform(-np.pi, np.pi, (64, 2)))
    traj = simulate_cg(prior, x0, 0.6, np.full((5, 1), 12.0), CGRunSettings(n_replicas=64, n_steps=6000, save_every=20,
                                                                           burn_in=1000, dt=0.004, seed=3), progress=False)
    table = ala2.model_dihedral_checks({"own": prior, "mirror": mirror}, traj.reshape(-1, 5, 3), 0.6)
    assert list(table.columns) == ["z cos φ", "z sin φ", "z cos ψ", "z sin ψ"] and list(table.index) == ["own", "mirror"]
    assert (table.loc["own"].abs() < 4).all(), table
    assert (table.loc["mirror"].abs() > 6).any(), table


def test_a_long_run_is_recorded_for_the_registered_weights(tiny, tmp_path):
    name = ala2.cg_name("reference")
    registered = pretrained.pretrain(name, models_dir=tmp_path)
    entry = pretrained.record_long_run(name, ns=0.001, models_dir=tmp_path)  # 500 steps of 4 replicas
    assert entry["model_sha256"] == registered["sha256"] and entry["command"] == f"opforce long-run {name} --ns 0.001"
    assert entry["exchange"]["replicas"] == 4
    assert sum(p["mean"] for p in entry["populations"].values()) == pytest.approx(1.0, abs=1e-6)
    assert pretrained.long_runs(tmp_path) == {name: {"0.001": entry}}
    with pytest.raises(ValueError, match="ns must be positive"):
        ala2.long_run(pretrained.load(name, tmp_path)[0], ns=0)
    registry = pretrained.read_registry(tmp_path / "registry.json")
    registry[name]["sha256"] = "retrained"
    (tmp_path / "registry.json").write_text(__import__("json").dumps(registry))
    assert pretrained.long_runs(tmp_path) == {}  # a long run of older weights no longer counts


def test_long_run_summary_calls_drifts_and_differences_only_beyond_two_block_errors():
    def run(first, second, error):
        populations = {"αL (φ > 0)": {"mean": (first + second) / 200, "block_error": error / 100},
                       "αR": {"mean": 0.4, "block_error": 0.01}, "β / PII": {"mean": 0.5, "block_error": 0.01}}
        exchange = {"starting in αL": 4, "αL entries": 10, "αL exits": 8, "αL % first half": first, "αL % second half": second}
        return {"exchange": exchange, "populations": populations, "wall_time_s": 600.0}

    data = {"mean": 0.025, "block_error": 0.005}
    row, text = ala2.long_run_summary(run(16.0, 34.0, 4.8), data)
    assert text["drift"] == "rose" and text["versus"] == "exceeds" and text["ratio"] == "10.0" and text["aL"] == "25.0"
    assert row["αL % second half"] == "34.0" and row["wall time (min)"] == "10"
    assert ala2.long_run_summary(run(7.7, 7.6, 2.5), data)[1]["drift"] == "held"
    assert ala2.long_run_summary(run(12.0, 5.0, 2.5), data)[1]["drift"] == "fell"
    assert ala2.long_run_summary(run(2.9, 2.6, 0.6), data)[1]["versus"] == "matches"  # |2.75 − 2.5| < 2 · 0.78
    assert ala2.long_run_summary(run(0.4, 0.6, 0.2), data)[1]["versus"] == "falls short of"


def test_seed_anova_separates_models_only_beyond_their_seed_spread():
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = lambda name, mean: [{"model": name, "αR %": mean + 8.0 * rng.standard_normal()} for _ in range(5)]  # noqa: E731
    same = pd.DataFrame(rows("a", 40) + rows("b", 40) + rows("c", 40))
    apart = pd.DataFrame(rows("a", 20) + rows("b", 40) + rows("c", 60))
    assert ala2.seed_anova(same)[1] > 0.05 and ala2.seed_anova(apart)[1] < 0.001
    assert ala2.seed_anova(apart, names=["a", "b"])[0] > 0
    with pytest.raises(ValueError, match="at least two seeds"):
        ala2.seed_anova(apart.iloc[[0, 5, 6]])


def test_registered_coupling_flows_record_their_output_js_and_pass_the_output_gate():
    """The output gate of chapter 2: the bonds and angles of a flow kernel's positions y are at most a third
    as far (mean JS over 4 000 frames) from the data as the noise kernel's; the registry's numbers recompute."""
    registry = pretrained.read_registry()

    def mean(js, kind):
        return np.mean([v["js"] for k, v in js.items() if k.startswith(kind)])

    for sigma in ala2.NOISE_STDS:
        name = ala2.kernel_name("coupling", sigma)
        recorded = registry[name]["metrics"]["output_js"]
        again = ala2.kernel_output_js("coupling", sigma, pretrained.load(name)[0])
        assert set(again) == set(recorded) and all(v["n_samples"] == 4000 for v in again.values())
        for key in recorded:
            assert again[key]["js"] == pytest.approx(recorded[key]["js"], rel=1e-6, abs=1e-9)
        noise = ala2.kernel_output_js("noise", sigma, None)
        for kind in ("bond", "angle"):
            ratio = mean(recorded, kind) / mean(noise, kind)
            assert ratio <= 1 / 3, (name, kind, ratio)  # σ = 0.1 Å: met with 16 000 training steps


def test_registered_cnfs_record_their_output_js_and_pass_the_output_gate():
    """The CNFs' output-gate numbers (4 000 labels each, minutes of CNF solves: recorded, not recomputed here;
    the coupling flows' are recomputed above)."""
    registry = pretrained.read_registry()
    for sigma in ala2.NOISE_STDS:
        recorded = registry[ala2.kernel_name("cnf", sigma)]["metrics"]["output_js"]
        assert len(recorded) == 7 and all(v["n_samples"] == 4000 for v in recorded.values())
        noise = ala2.kernel_output_js("noise", sigma, None)
        for kind in ("bond", "angle"):
            ratio = (np.mean([v["js"] for k, v in recorded.items() if k.startswith(kind)])
                     / np.mean([v["js"] for k, v in noise.items() if k.startswith(kind)]))
            assert ratio <= 1 / 3, (sigma, kind, ratio)


def test_chapter_two_is_calls_and_plots():
    """The notebook holds narrative, calls and plots: ≤ 100 code lines, no loops building tables by hand,
    and the cells that only glue numbers for the text hidden from the reader."""
    from notebooks import calls_and_plots

    text = calls_and_plots("02_alanine_dipeptide.ipynb", ("glue(", "for key, value", "    glue(", "registry =", "n_rep", "from "))
    assert "Going further" in text and text.index("## Conclusions") < text.index("## Going further")
    assert "the seed" not in text.lower().replace("the seed replicates", "")


def test_chapter_2_gates_and_lessons_are_judged_from_the_numbers():
    from opforce_tutorial.chapters import ala2_page as page

    names = {"ref": "reference forces", "noise005": "noise σ=0.05", "coupling005": "coupling σ=0.05",
             "cnf005": "cnf σ=0.05", "noise01": "noise σ=0.1", "coupling01": "coupling σ=0.1", "cnf01": "cnf σ=0.1"}
    values = {"rama_ref": 0.06, "bonds_ref": 0.001, "rama_noise005": 0.08, "bonds_noise005": 0.17,
              "rama_noise01": 0.06, "bonds_noise01": 0.3}
    for key, rama in (("coupling005", 0.04), ("cnf005", 0.06), ("coupling01", 0.06), ("cnf01", 0.08)):
        values.update({f"cg_bond_{key}": 0.05, f"cg_angle_{key}": 0.2, f"rama_{key}": rama, f"bonds_{key}": 0.01})
    values.update({f"rama_sd_{key}": 0.001 for key in names})
    out = page._verdicts(values, names)
    assert out["local_pass"].startswith("4 of 4") and out["global_pass"].startswith("4 of 4")
    assert out["best_rama"] == "coupling σ=0.05" and out["ref_is_best_rama"] == "is not"
    values.update(rama_sd_ref=0.015, rama_sd_coupling005=0.015)  # a gap of 0.02 within the combined error 0.021
    assert page._verdicts(values, names)["ref_is_best_rama"] == "is, within the simulations' sampling error,"
    values.update(rama_sd_ref=0.001, rama_sd_coupling005=0.001)
    assert out["best_bonds"] == "reference forces" and out["ref_is_best_bonds"] == "is"
    assert "coupling flow trains 4 times" in out["local_lesson"]  # chapter 2's 16 000 steps over the generic 4 000
    values["cg_angle_cnf01"] = 0.4  # over 1/3
    failed = page._verdicts(values, names)
    assert failed["local_pass"] == "3 of 4 (coupling σ=0.05, cnf σ=0.05, coupling σ=0.1)"
    assert failed["local_lesson"].startswith("where the gate is not met")


def _seed0_gate_values() -> dict:
    """The seed-0 values :func:`ala2_page.gate_summary` reads, for every flow-kernel model of the chapter."""
    values = {"rama_ref": 0.04, "rama_sd_ref": 0.005}
    for key in ("coupling005", "cnf005", "coupling01", "cnf01"):
        values.update({f"cg_bond_{key}": 0.1, f"cg_angle_{key}": 0.1, f"rama_{key}": 0.05, f"rama_sd_{key}": 0.005})
    return values


def test_the_gates_on_seed_means_average_every_seed_of_the_model_the_noise_and_the_reference():
    import pandas as pd

    from opforce_tutorial.chapters import ala2_page as page

    def row(name, seed, bonds, angles, rama):
        return {"model": ala2.cg_name(*name), "seed": seed, "mean JS bonds": bonds, "mean JS angles": angles,
                "JS ramachandran": rama}

    seeds = pd.DataFrame([row(("reference",), 0, 0.001, 0.001, 0.04), row(("reference",), 1, 0.001, 0.001, 0.02),
                          row(("noise", 0.05), 0, 0.2, 0.06, 0.03), row(("noise", 0.05), 1, 0.2, 0.06, 0.03),
                          row(("cnf", 0.05), 0, 0.01, 0.01, 0.04), row(("cnf", 0.05), 1, 0.01, 0.02, 0.06),
                          row(("coupling", 0.05), 0, 0.01, 0.01, 0.03)])  # one seed: no seed mean
    table = page.seed_mean_gates(seeds)
    assert list(table.index) == ["cnf σ=0.05"]
    cnf = table.loc["cnf σ=0.05"]
    assert cnf["local"] == pytest.approx(0.015 / 0.06) and cnf["ramachandran"] == pytest.approx(0.05 / 0.03)
    assert (cnf["seeds"], cnf["noise seeds"], cnf["reference seeds"]) == (2, 2, 2)
    shown = page.gate_summary(_seed0_gate_values(), seeds).data.loc["cnf σ=0.05"]
    assert shown["seed means: worse of bonds, angles ÷ noise"] == "0.25" and shown["seed-mean local gate"] == "met"
    assert shown["seed means: Ramachandran ÷ reference"] == "1.67" and shown["seed-mean global gate"] == "not met"
    assert shown["seeds (model / noise / reference)"] == "2 / 2 / 2"
    assert page.gate_summary(_seed0_gate_values(), seeds).data.loc["coupling σ=0.05", "seed-mean local gate"] == ""
    assert page.seed_gate_sentence(seeds).startswith("cnf σ=0.05 meets the local gate, not the global one (local "
                                                     "ratio 0.25, Ramachandran 1.67 × the reference's")
    assert page.seed_gate_sentence(seeds[seeds.seed == 0]).startswith("no flow-kernel model has a replicate")


def test_chapter_2_conclusions_on_the_reference_and_the_seed_spread_follow_the_numbers():
    from opforce_tutorial.chapters import ala2_page as page

    values = {"n_spread_models": 0, "ref_is_best_bonds": "is", "best_bonds": "reference forces", "ref_is_best_rama": "is",
              "best_rama": "reference forces", "rama_ref": 0.037, "rama_best": 0.037, "dihedral_error_ratio": 2.5,
              "n_ref_labels": 107500, "n_kernel_labels": 40000}
    out = page.conclusions(values)
    assert "not measured" in out["seed_sentence"]
    assert "107 500 labels against a kernel's 40 000" in out["reference_verdict"]
    assert "the best on the Ramachandran surface (JS 0.037)" in out["reference_verdict"]
    tie = page.conclusions({**values, "ref_is_best_rama": "is, within the simulations' sampling error,",
                            "best_rama": "coupling σ=0.05", "rama_best": 0.036, "rama_sd_ref": 0.006})
    assert "ties with coupling σ=0.05 for the best Ramachandran surface (JS 0.037 ± 0.006 against 0.036" in \
        tie["reference_verdict"]
    values.update(ref_is_best_rama="is not", best_rama="coupling σ=0.05", rama_best=0.030, n_spread_models=3,
                  ref_within_sd_rama="is", seed_best_rama="coupling σ=0.05", aR_sd_min=1.0, aR_sd_max=4.0)
    out = page.conclusions(values)
    assert "coupling σ=0.05 is better on the Ramachandran surface (JS 0.030 against 0.037, within one seed" in \
        out["reference_verdict"]
    assert "spreads by 1 to 4 percentage points" in out["seed_sentence"]


def test_the_seed_spread_of_models_without_replicates_says_it_is_not_measured():
    import pandas as pd

    from opforce_tutorial.chapters import ala2_page as page

    rows = [{"model": name, "seed": 0, "αL (φ > 0) %": 2.0, "αR %": 30.0, "β / PII %": 68.0, "JS ramachandran": 0.04,
             "mean JS bonds": 0.01, "mean JS angles": 0.01} for name in ala2.cg_model_names()]
    _, _, values = page.seed_spread(pd.DataFrame(rows))
    assert values["n_spread_models"] == 0 and "not measured" in values["seed_result"]
    assert "ref_within_sd_rama" not in values  # no spread: no claim about it
    # one model with replicates: its spread is reported, no model is ranked against single seeds
    rows += [{**rows[0], "seed": 1, "αR %": 26.0, "JS ramachandran": 0.05}]
    _, _, values = page.seed_spread(pd.DataFrame(rows))
    assert values["n_spread_models"] == 1 and "ref_within_sd_rama" not in values
    assert values["seed_result"].startswith("only reference forces has replicates yet: over its 2 training seeds αR "
                                            "spreads by 2.8 percentage points and the Ramachandran JS by 0.007")
    sentence = page.conclusions({**values, "ref_is_best_bonds": "is", "best_bonds": "reference forces",
                                 "ref_is_best_rama": "is", "best_rama": "reference forces", "rama_best": 0.04,
                                 "rama_ref": 0.04, "rama_sd_ref": 0.005, "n_ref_labels": 107500,
                                 "n_kernel_labels": 40000})["seed_sentence"]
    assert sentence.count("only reference forces has replicates yet") == 1
    assert sentence.endswith("(standard deviations), so no model is ranked by its seed mean")


def test_chapter_2_deep_dive_results_follow_the_numbers():
    import pandas as pd

    from opforce_tutorial.chapters import ala2_page as page

    worst = pd.Series({"reference forces": 5.2, "reference forces, + dihedrals": 1.1, "noise σ=0.05": 8.0,
                       "cnf σ=0.05": 2.0})
    text = page.check_result(worst)
    assert "reference-forces model fails it (largest |z| 5.2)" in text and "one passes it (largest |z| 1.1)" in text
    assert "1 of the 2 kernel models fail it" in text
    assert "own kernel's outputs" not in text and text.endswith("a pass does not certify populations")
    text = page.check_result(worst, pd.Series({"noise σ=0.05": 1.3, "cnf σ=0.05": 3.6}))
    assert "at their own kernel's outputs y, the density their labels describe, 1 of 2 fail it (largest |z| 1.3 to 3.6)" in text
    few = {"arb_changes_min": 4.0, "al_entries_ref": 1, "al_starts_ref": 2}
    assert page.al_result(few).endswith("the share of its starts that lay there")
    assert page.al_result({**few, "al_entries_ref": 9}).endswith("measured, if roughly")


def test_the_long_run_populations_are_judged_within_two_combined_block_errors():
    from opforce_tutorial.chapters import ala2_page as page

    data = {"αR": {"mean": 0.309, "block_error": 0.008}, "β / PII": {"mean": 0.667, "block_error": 0.012}}
    run = {"αR": {"mean": 0.259, "block_error": 0.010}, "β / PII": {"mean": 0.686, "block_error": 0.017}}
    text = page.long_populations_sentence(run, data)
    assert "αR 25.9 ± 1.0 % and β 68.6 ± 1.7 %" in text and text.endswith("αR outside, β within two combined block errors")


def test_the_longer_budget_sentence_says_what_is_measured_and_what_is_still_to_run():
    from opforce_tutorial.chapters import ala2, ala2_page as page

    data = {"αR": {"mean": 0.309, "block_error": 0.008}, "β / PII": {"mean": 0.667, "block_error": 0.012}}
    ref = {"metrics": {"best_step": 11200, "best_val_force_mse": 327.28, "js": {"ramachandran": {"js": 0.037}}}}
    assert "not trained yet (opforce pretrain ala2-cg-reference-24k)" in page.longer_budget_sentence(
        {"ala2-cg-reference": ref}, {}, data)
    longer = {"metrics": {"best_step": 12500, "stopped_step": 15500, "best_val_force_mse": 327.27,
                          "js": {"ramachandran": {"js": 0.042}}}}
    registry = {"ala2-cg-reference": ref, ala2.LONG_REFERENCE: longer}
    text = page.longer_budget_sentence(registry, {}, data)
    assert text.startswith("With up to 24 000 force-matching steps (ala2-cg-reference-24k) the fit stopped at step "
                           "15 500 (best step 12 500, held-out force error 327.3 against 327.3 (kcal/mol/Å)² at 12 000)")
    assert "Ramachandran JS is 0.042, against 0.037" in text and text.endswith("--ns 1)") and "`" not in text
    late = {"metrics": {**longer["metrics"], "best_step": 23000, "stopped_step": 24000}}
    assert "stopped at step 24 000 (best step 23 000" in page.longer_budget_sentence(
        {"ala2-cg-reference": ref, ala2.LONG_REFERENCE: late}, {}, data)
    run = {"αR": {"mean": 0.300, "block_error": 0.010}, "β / PII": {"mean": 0.660, "block_error": 0.017}}
    text = page.longer_budget_sentence(registry, {ala2.LONG_REFERENCE: {"1": {"populations": run}}}, data)
    assert "; its αR 30.0 ± 1.0 % and β 66.0 ± 1.7 % compare with the data's" in text
    assert text.endswith("αR within, β within two combined block errors")
    base = {"αR": {"mean": 0.259, "block_error": 0.010}, "β / PII": {"mean": 0.686, "block_error": 0.017}}
    text = page.longer_budget_sentence(registry, {ala2.LONG_REFERENCE: {"1": {"populations": run}},
                                                  "ala2-cg-reference": {"1": {"populations": base}}}, data)
    assert "held-out force errors 0.01 (kcal/mol/Å)² apart hold αR populations 4.1 ± 1.4 points apart" in text


def test_the_kernel_outputs_report_says_where_the_populations_are_lost(monkeypatch):
    from opforce_tutorial.chapters import ala2_page as page

    ds = ala2.training_frames()
    monkeypatch.setattr(ala2.STUDY, "kernel_outputs", lambda source, sigma, d, flow, n: d.positions[:: 20])  # as the data
    model_ar = {"noise σ=0.05": 0.33, "coupling σ=0.05": 0.31, "cnf σ=0.05": 0.30, "noise σ=0.1": 0.29,
                "coupling σ=0.1": 0.30, "cnf σ=0.1": 0.44}
    scores = {name: {"js": {"ramachandran": {"js": 0.05, "js_floor": 0.01}}, "populations": {"αR": {"mean": p}}}
              for name, p in model_ar.items()}
    table, values, outputs = page.kernel_outputs_report(ds, {}, scores)
    assert set(outputs) == set(model_ar) and outputs["cnf σ=0.1"].shape == (len(ds.positions[::20]), 5, 3)
    data_ar = 100 * page.data_populations()["αR"]["mean"]
    assert table.data.loc["cnf σ=0.1", ("its CG model", "αR %")] == "44.0"
    assert values["outputs_result"].startswith("every kernel's outputs hold the data's αR population within ")
    assert f"off by up to {abs(44.0 - data_ar):.1f} (cnf σ=0.1:" in values["outputs_result"]
    assert "lost between labels and model, not in the kernel" in values["outputs_result"]
    assert "within the basins" not in values["outputs_result"]  # every kernel's outputs are the same frames here


def test_the_ensemble_sentence_names_its_command_until_built_then_compares_with_the_single_fits():
    import pandas as pd

    from opforce_tutorial.chapters import ala2_page as page

    seeds = pd.DataFrame([{"model": "ala2-cg-reference", "seed": s, "αL (φ > 0) %": 2.0, "αR %": a, "β / PII %": 98 - a,
                           "JS ramachandran": 0.05, "mean JS bonds": 0.001, "mean JS angles": 0.001}
                          for s, a in enumerate([20.0, 40.0])])
    spread = seeds.groupby("model")[page.SEED_COLUMNS].agg(["mean", "std"])
    assert "opforce pretrain ala2-cg-reference-ensemble4" in page.ensemble_sentence({}, spread)
    registry = {ala2.ENSEMBLE_REFERENCE: {"metrics": {"populations": {"αR": {"mean": 0.31}},
                                                      "js": {"ramachandran": {"js": 0.03}}}}}
    text = page.ensemble_sentence(registry, spread, long={})
    assert "holds αR 31.0 % (data 30.9 %) with Ramachandran JS 0.030" in text
    assert f"against the single fits' αR 30.0 ± {np.std([20, 40], ddof=1):.1f} % and JS 0.050 over seeds" in text
    assert text.endswith("its 1 ns run is not recorded yet (opforce long-run ala2-cg-reference-ensemble4 --ns 1)")
    data = page.data_populations()
    near = {b: {"mean": data[b]["mean"] + 0.005, "block_error": 0.01} for b in ("αR", "β / PII")}
    far = {**near, "αR": {"mean": data["αR"]["mean"] - 0.1, "block_error": 0.01}}
    for populations, verdict in ((near, "αR within, β within"), (far, "αR outside, β within")):
        text = page.ensemble_sentence(registry, spread, long={ala2.ENSEMBLE_REFERENCE: {"1": {"populations": populations}}})
        assert "In 1 ns runs the ensemble's αR " in text and text.endswith(f"{verdict} two combined block errors")
