"""Chapter 3's study (CLN025) end to end on a tiny 10-bead set: labels → CG model → simulation → every evaluator."""

from dataclasses import replace

import numpy as np
import pytest

from opforce_tutorial.chapters import ala2, cln025
from opforce_tutorial.data.dataset import CGDataset, load_dataset
from opforce_tutorial.observables import observable

from test_study import TINY


@pytest.fixture(scope="module")
def tiny_study():
    ds = load_dataset("cln025")
    pick = np.r_[0:600, 30_000:30_600]  # two stretches of two trajectories, weights kept
    small = CGDataset("cln025-tiny", ds.positions[pick], ds.forces[pick], ds.temperature, ds.traj_ids[pick],
                      ds.save_interval_ps, ds.bead_names, ds.weights[pick], masses=ds.masses)
    return replace(cln025.STUDY, dataset=small, flows=dict(TINY["flows"]), labels=TINY["labels"],
                   output_labels=TINY["output_labels"], cg=replace(TINY["cg"], cutoff=12.0))


@pytest.mark.parametrize("source", ["reference", "noise", "coupling", "cnf"])
def test_every_label_source_runs_through_every_evaluator(tiny_study, source, tmp_path):
    ds = tiny_study.training_frames()
    flow = None
    if source in ("coupling", "cnf"):
        flow = tiny_study.fit_flow(ds, source, 0.05, 0, "cpu")[0].eval()
        out = tiny_study.kernel_output_js(source, 0.05, flow, ds, work_dir=tmp_path)
        assert len(out) == 9 + 8  # bonds and angles of the 10-bead chain
        assert (tmp_path / "output_gate" / "labels.npz").exists()  # kept: a killed pretrain resumes its output gate
        assert tiny_study.kernel_output_js(source, 0.05, flow, ds, work_dir=tmp_path) == out
    run, metrics, _ = tiny_study.cg_run(ds, source, 0.05 if source != "reference" else None, flow, 0, "cpu")
    assert run.trajectory.shape == (4, 4, 10, 3) and np.isfinite(run.trajectory).all()
    assert metrics["best_step"] <= metrics["stopped_step"] == run.history["step"][-1]
    owned = {observable(o).name for o in cln025.SYSTEM.observables}
    assert set(metrics["js"]) == owned and all(0 <= v["js"] <= np.log(2) for v in metrics["js"].values())
    folded = metrics["populations"]["folded"]["mean"]
    assert 0 <= folded <= 1 and folded + metrics["populations"]["unfolded"]["mean"] == pytest.approx(1.0)


def test_the_chapter_recipes_are_published_and_required_but_the_measurements():
    from opforce_tutorial import pretrained

    specs = pretrained._specs()
    names = [n for n in specs if n.startswith("cln025-")]
    assert "cln025-cg-reference" in names and "cln025-cnf-0.1" in names and len(names) == 1 + 2 * 3 + 2 * 2 + 1 + 1  # + the prior-only run
    assert specs[cln025.LONG_REFERENCE].train is not None  # the longer force-matching budget, a variant
    assert [n for n in names if not specs[n].required] == [cln025.LONG_REFERENCE]
    assert [n for n in specs if n.startswith("ala2-") and not specs[n].required] == [
        ala2.LONG_REFERENCE, ala2.CNF_PAPER_LABELS, ala2.ENSEMBLE_REFERENCE]
    assert cln025.BEAD_TYPES == [0, 0, 1, 2, 3, 4, 5, 4, 6, 0]
    assert cln025.STUDY.labels.frames_to_keep(49_960) == 4996 and cln025.STUDY.labels.repeats == 10


def test_the_gpu_script_trains_every_chapter_3_model_after_its_flow():
    from opforce_tutorial import pretrained

    chains = cln025.STUDY.training_chains()
    assert sorted(n for chain in chains for n in chain) == sorted(n for n in pretrained._specs() if n.startswith("cln025-"))
    for chain in chains:
        *flows, cg = chain
        if flows:
            assert cg == "cln025-cg-" + flows[0].removeprefix("cln025-")


def test_the_long_run_of_a_model_counts_its_folding_events(tiny_study):
    from opforce_tutorial.cg import fit_priors
    from opforce_tutorial.cg.pipeline import CGRunSettings
    from opforce_tutorial.units import kbt

    study = replace(tiny_study, cg=CGRunSettings(n_replicas=3, n_steps=200, save_every=50, burn_in=0, cutoff=12.0))
    ds = study.training_frames()
    prior = fit_priors(ds.positions, kbt(ds.temperature))[0]  # the prior alone is a CG model too
    out = study.long_run(prior, ns=0.0004, progress=False)  # 200 steps of 2 fs
    assert out["replicas"] == 3 and out["foldings"] >= 0 and out["unfoldings"] >= 0
    assert set(out["populations"]) == {"folded", "unfolded"}
    assert 0 <= out["folded % first half"] <= 100


def test_chapter_three_is_calls_and_plots():
    """As chapter 2: narrative, calls and plots, ≤ 100 code lines, no tables built by hand, glue-only cells
    hidden, conclusions before the deep dives, the paper cited by name."""
    from notebooks import calls_and_plots

    text = calls_and_plots("03_chignolin.ipynb", ("glue(", "for key, value", "    glue(", "registry =", "from ", "     display=False"))
    assert "Klein et al. (arXiv" in text and "Running this chapter" in text
    assert text.index("## Conclusions") < text.index("## Going further")
    assert "the seed" not in text.lower()


def test_the_page_names_every_model_it_cannot_show():
    from opforce_tutorial.chapters import cln025_page

    status = cln025_page.model_status().data
    assert set(status.index) == set(cln025.recipes())
    for name, row in status.iterrows():
        assert row["status"] == "registered" or f"opforce pretrain {name}" in row["status"]


def test_the_gates_are_judged_from_the_numbers_and_the_control_row_shows_the_exact_labels():
    from opforce_tutorial.chapters import cln025_page as page

    values = {"bond_ref": 0.002, "angle_ref": 0.018, "tica_ref": 0.10, "folded_ref": 5.0,
              "bond_noise005": 0.05, "angle_noise005": 0.015, "tica_noise005": 0.14, "folded_noise005": 4.0,
              "cg_bond_coupling005": 0.1, "cg_angle_coupling005": 0.2, "tica_coupling005": 0.14, "folded_coupling005": 20.0,
              "cg_bond_cnf005": 0.5, "cg_angle_cnf005": 0.2, "tica_cnf005": 0.16, "folded_cnf005": 6.0}
    models = ["reference forces", "noise σ=0.05", "coupling σ=0.05", "cnf σ=0.05"]
    out = page._verdicts(values, models)
    assert out["local_pass"] == "1 of 2 (coupling σ=0.05)"  # cnf: bonds 0.5 > 1/3
    assert out["bond_pass"] == "1 of 2 (coupling σ=0.05)" and out["angle_pass"] == "2 of 2 (coupling σ=0.05, cnf σ=0.05)"
    assert out["tica_pass"] == "1 of 2 (coupling σ=0.05)"  # cnf: 0.16 > 1.5 × 0.10
    assert out["folded_pass"] == "1 of 2 (cnf σ=0.05)"  # coupling: 20 − 5 > 10 percentage points
    assert out["ref_angle_noise005"] == pytest.approx(1.2) and "above 1/3" in out["angle_gate_verdict"]
    assert out["best_tica"] == "reference forces" and out["closest_folded"] == "cnf σ=0.05"  # 6 % vs the data's 9.1 %
    table = page.gate_summary({**values, **out}).data
    assert table.loc["coupling σ=0.05", "local (≤ 1/3)"] == "met" and table.loc["cnf σ=0.05", "local (≤ 1/3)"] == "not met"
    assert table.loc["coupling σ=0.05", "folded (± 10 pp)"] == "not met"
    assert table.loc["reference forces ÷ noise σ=0.05 (control)", "angles ÷ noise"] == "1.20"
    assert table.loc["cnf σ=0.1", "local (≤ 1/3)"] == "not built yet"


def test_the_folding_free_energy_gap_is_the_log_odds_ratio():
    from opforce_tutorial.chapters.cln025_page import free_energy_gap

    assert free_energy_gap(50.0, 50.0, 0.6) == pytest.approx(0.0)
    assert free_energy_gap(0.75, 9.12, 0.6757) == pytest.approx(0.6757 * np.log((0.0912 / 0.9088) / (0.0075 / 0.9925)))
    assert free_energy_gap(0.0, 9.12, 0.6757) < 10  # an empty state is clipped, not infinite


def test_the_seed_spread_pools_the_registered_model_with_its_current_replicates():
    from opforce_tutorial.chapters import cln025_page as page

    def metrics(folded):
        return {"populations": {"folded": {"mean": folded}}, "js": {"tica": {"js": 0.1}, "bond 0-1": {"js": 0.002},
                                                                   "bond 1-2": {"js": 0.004}, "angle 0-1-2": {"js": 0.01}}}

    registry = {name: {"sha256": name, "metrics": metrics(0.02)} for name in cln025.cg_model_names()[:3]}
    table, values = page.seed_spread(registry, {})
    assert "no model has a replicate" in values["seed_result"] and set(table.data["seeds"]) == {1}
    assert list(table.data.index) == ["reference forces", "noise σ=0.05", "coupling σ=0.05"]  # unbuilt models left out
    replicates = {"cln025-cg-reference": {"1": {"model_sha256": "cln025-cg-reference", "metrics": metrics(0.04)},
                                          "2": {"model_sha256": "older weights", "metrics": metrics(0.5)}}}
    table, values = page.seed_spread(registry, replicates)
    sd = np.std([2.0, 4.0], ddof=1)
    assert values["folded_sd_ref"] == pytest.approx(sd) and table.data.loc["reference forces", "seeds"] == 2
    assert table.data.loc["reference forces", "folded %"] == f"3.0 ± {sd:.1f}"
    assert table.data.loc["reference forces", "mean JS bonds"] == "0.0030 ± 0.0000"
    assert values["seed_result"].startswith("only reference forces has replicates: over its 2 training seeds the "
                                            f"folded fraction spreads by {sd:.1f} percentage points")
    assert f"is {10 / sd:.0f} such deviations" in values["seed_result"]


def test_the_long_budget_verdict_says_when_early_stopping_returned_the_same_weights(monkeypatch):
    from opforce_tutorial.chapters import cln025_page as page

    metrics = {"stopped_step": 5800, "best_step": 2800}
    registry = {cln025.LONG_REFERENCE: {"sha256": "a", "metrics": metrics}, "cln025-cg-reference": {"sha256": "a"}}
    monkeypatch.setattr(page.pretrained, "read_registry", lambda: registry)
    text = page.long_budget_verdict(None)
    assert "early stopping ended the fit at step 5 800 with its best step 2 800, the 3 000-step fit's: the same " \
           "weights" in text
    monkeypatch.setattr(page.pretrained, "read_registry", lambda: {})
    assert "opforce pretrain cln025-cg-reference-12k" in page.long_budget_verdict(None)
