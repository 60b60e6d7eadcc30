"""End-to-end smoke test of chapter 1's pipeline on tiny data, the widgets, and the README's CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from opforce_tutorial.chapters.bond_toy import STRATEGIES, BondToySettings, run_study
from opforce_tutorial.kernels import NoiseConditionalFlow1D
from opforce_tutorial.kernels.flow1d import Flow1DConfig

TINY = BondToySettings(n_data=3000, n_basis=16, n_replicas=32, n_steps=600, burn_in=100, save_every=10)


@pytest.fixture(scope="module")
def tiny_study(system):
    flow = NoiseConditionalFlow1D(Flow1DConfig(loc=1.47, length_scale=0.14))
    return run_study(system, [1e-3, 4e-3], flow, TINY, progress=False)


def test_pipeline_produces_a_scored_result_per_strategy_and_variance(tiny_study):
    t = tiny_study.table
    assert len(tiny_study.results) == 1 + 3 * 2
    assert list(t.strategy.unique()) == list(STRATEGIES)
    assert tiny_study.simulated.shape == (50, 32, 7)
    assert np.isfinite(t["JS(sim ‖ exact)"]).all() and (t["JS(sim ‖ exact)"] >= 0).all()
    # the noise kernel distorts more at larger variance, even on tiny data
    noise = t[t.strategy == "noise"].set_index("noise_var (Å²)")
    assert noise.loc[4e-3, "force MSE vs exact mean force"] > noise.loc[1e-3, "force MSE vs exact mean force"]
    assert (t["dropped labels"] == 0).all()


def test_static_slider_has_one_distinct_frame_per_variance(tiny_study):
    from opforce_tutorial.widgets import noise_variance_figure

    fig = noise_variance_figure(tiny_study)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0.001", "0.004"]
    assert steps[0].args[0]["y"] != steps[1].args[0]["y"]
    assert "σ = 0.0316 Å" in steps[0].args[1]["title.text"]  # variance converted to std explicitly


def test_live_explorer_recomputes_at_the_slider_variance(system):
    import matplotlib

    matplotlib.use("Agg")
    from opforce_tutorial.widgets import NoiseVarianceExplorer

    flow = NoiseConditionalFlow1D(Flow1DConfig(loc=1.47, length_scale=0.14))
    explorer = NoiseVarianceExplorer(system, flow, settings=TINY)
    a = explorer.update(1e-3)
    b = explorer.update(9e-3)
    assert a.noise_vars == [1e-3] and b.noise_vars == [9e-3]
    assert "0.0949" in explorer.info.value  # √0.009 Å
    assert explorer.slider.min == pytest.approx(np.log10(0.01**2)) and explorer.slider.max == pytest.approx(np.log10(0.12**2))


def test_cli_models_command_verifies_shipped_files():
    opforce = Path(sys.executable).parent / "opforce"  # the console script, as the README runs it
    out = subprocess.run([str(opforce), "models"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok" in out.stdout and "toy1d-flow" in out.stdout


def test_flow_refuses_unknown_strategy(system):
    from opforce_tutorial.chapters.bond_toy import make_kernel

    with pytest.raises(ValueError, match="unknown kernel strategy"):
        make_kernel("magic", system, 0.05)
    with pytest.raises(ValueError, match="needs a trained"):
        make_kernel("reverse (learned flow)", system, 0.05)


def test_the_chapter_claims_are_computed_from_the_spread_over_draws():
    import pandas as pd

    from opforce_tutorial.chapters.bond_toy import conclusions

    rows = [("reference", np.nan, 1e-4, 5e-5)]
    rows += [("noise", v, 10 * v, 1e-4) for v in (1e-4, 1e-3, 1e-2)]
    rows += [("reverse (exact posterior)", 1e-4, 5e-3, 5e-3), ("reverse (exact posterior)", 1e-3, 2e-4, 1e-4),
             ("reverse (exact posterior)", 1e-2, 1e-4, 1e-4)]
    rows += [("reverse (learned flow)", v, 5e-4, 1e-4) for v in (1e-4, 1e-3, 1e-2)]
    spread = pd.DataFrame(rows, columns=["strategy", "noise_var (Å²)", "JS mean", "JS sd"]).assign(draws=3,
                                                                                                     **{"JS floor": 2e-5})
    out = conclusions(spread, within=3.0)
    assert out["exact_close"] == "from σ² = 0.001 Å² up" and out["noise_close"] == "at no variance"
    assert out["flow_close"] == "at no variance" and out["exact_js_small"] == 5e-3 and out["n_draws"] == 3
    assert out["noise_over_ref_large"] == pytest.approx(1000.0) and out["ref_js"] == 1e-4
