"""The noise-variance control of chapter 1, in two forms that share the package's pipeline.

* :func:`noise_variance_figure`: a plotly figure with a slider over a precomputed grid of variances.
  It works in the static HTML book (the switching happens in the browser) and is computed, when the
  book builds, by :func:`opforce_tutorial.chapters.bond_toy.run_study`.
* :class:`NoiseVarianceExplorer`: an ipywidgets slider for a live kernel that recomputes the noise
  and reverse-kernel results (labels, force matching, Langevin run) at any variance the learned flow
  was trained for.

Both show the variance σ² (Å²) and convert it explicitly to the standard deviation the code uses
(:func:`opforce_tutorial.units.noise_std_from_var`).
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .analysis import histogram, pmf
from .chapters.bond_toy import KERNEL_STRATEGIES, BondToySettings, run_study
from .plotting import COLORS
from .units import noise_std_from_var


def _curves(study, noise_var, g):
    """Per kernel strategy: simulated PMF (on bin centres) and fitted force (on g) at one variance."""
    centres = 0.5 * (study.edges[1:] + study.edges[:-1])
    out = {}
    for strategy in KERNEL_STRATEGIES:
        r = study.result(strategy, noise_var)
        f = pmf(histogram(study.simulated_samples(strategy, noise_var), study.edges), study.edges, study.system.kbt)
        with torch.no_grad():
            out[strategy] = (centres, f, r.model.forces(g).numpy())
    return out


def _title(study, noise_var):
    t = study.table
    rows = t[np.isclose(t["noise_var (Å²)"].fillna(-1), noise_var)].set_index("strategy")["JS(sim ‖ exact)"]
    js = " · ".join(f"{s}: {rows[s]:.4f}" for s in KERNEL_STRATEGIES)
    return f"σ² = {noise_var:g} Å² (σ = {noise_std_from_var(noise_var):.4f} Å) — JS to exact: {js}"


def noise_variance_figure(study) -> go.Figure:
    """Plotly figure with a slider over the study's noise variances (PMFs and fitted forces)."""
    system = study.system
    g = torch.linspace(1.2, 1.8, 241, dtype=torch.float64)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("PMF of the Langevin run (kcal/mol)", "fitted force (kcal/mol/Å)"))
    fig.add_trace(go.Scatter(x=g.numpy(), y=system.pmf(g).numpy(), name="exact", line=dict(color=COLORS["exact"])), 1, 1)
    fig.add_trace(go.Scatter(x=g.numpy(), y=system.mean_force(g).numpy(), name="exact mean force", showlegend=False,
                             line=dict(color=COLORS["exact"])), 1, 2)
    vars_ = study.noise_vars
    first = _curves(study, vars_[0], g)
    dynamic = []
    for strategy, (centres, f, force) in first.items():
        dynamic.append(len(fig.data))
        fig.add_trace(go.Scatter(x=centres, y=f, name=strategy, line=dict(color=COLORS[strategy])), 1, 1)
        dynamic.append(len(fig.data))
        fig.add_trace(go.Scatter(x=g.numpy(), y=force, name=strategy, showlegend=False, line=dict(color=COLORS[strategy])), 1, 2)
    steps = []
    for v in vars_:
        ys = []
        for centres, f, force in _curves(study, v, g).values():
            ys += [np.where(np.isnan(f), None, f).tolist(), force.tolist()]
        steps.append(dict(method="update", label=f"{v:g}", args=[{"y": ys}, {"title.text": _title(study, v)}, dynamic]))
    start = 0
    fig.update_layout(
        title=dict(text=_title(study, vars_[start]), font=dict(size=12)),
        sliders=[dict(active=start, currentvalue=dict(prefix="noise variance σ² (Å²): "), pad=dict(t=40), steps=steps)],
        height=460, margin=dict(t=80, b=20, l=50, r=20), legend=dict(orientation="h", y=-0.45),
    )
    fig.update_yaxes(range=[-0.2, 5], row=1, col=1)
    fig.update_yaxes(range=[-60, 60], row=1, col=2)
    fig.update_xaxes(title_text="bond length (Å)")
    return fig


class NoiseVarianceExplorer:
    """Live slider over the noise variance σ² (Å²): recomputes kernel labels, fits and simulations.

    Each move runs :func:`~opforce_tutorial.chapters.bond_toy.run_study` for the kernel strategies at the new
    variance (a few seconds on a laptop CPU with the default sizes) and redraws PMFs and forces.
    """

    def __init__(self, system, flow, settings: BondToySettings | None = None, noise_var: float = 2.5e-3):
        self.system, self.flow = system, flow
        self.settings = settings or BondToySettings(n_data=10_000, n_replicas=128, n_steps=3_000)
        lo, hi = flow.config.noise_std_min ** 2, flow.config.noise_std_max ** 2
        self.slider = widgets.FloatLogSlider(value=noise_var, base=10, min=math.log10(lo), max=math.log10(hi), step=0.05,
                                             description="σ² (Å²)", continuous_update=False, readout_format=".2e")
        self.info = widgets.HTML()
        self.output = widgets.Output()
        self.slider.observe(lambda change: self.update(change["new"]), names="value")
        self.widget = widgets.VBox([widgets.HBox([self.slider, self.info]), self.output])

    def compute(self, noise_var: float):
        return run_study(self.system, [noise_var], self.flow, self.settings, strategies=KERNEL_STRATEGIES, progress=False)

    def update(self, noise_var: float):
        sigma = noise_std_from_var(noise_var)
        self.info.value = f"&nbsp;σ = √σ² = {sigma:.4f} Å &nbsp;(computing …)"
        study = self.compute(noise_var)
        g = torch.linspace(1.2, 1.8, 241, dtype=torch.float64)
        with self.output:
            self.output.clear_output(wait=True)
            fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
            a.plot(g, self.system.pmf(g), color=COLORS["exact"], label="exact")
            b.plot(g, self.system.mean_force(g), color=COLORS["exact"], label="exact")
            for strategy, (centres, f, force) in _curves(study, noise_var, g).items():
                a.plot(centres, f, color=COLORS[strategy], label=strategy)
                b.plot(g, force, color=COLORS[strategy])
            a.set(ylim=(-0.2, 5), xlabel="bond length (Å)", ylabel="PMF (kcal/mol)")
            b.set(ylim=(-60, 60), xlabel="bond length (Å)", ylabel="fitted force (kcal/mol/Å)")
            a.legend(fontsize=7)
            plt.show()
        self.info.value = f"&nbsp;σ = √σ² = {sigma:.4f} Å"
        return study

    def _ipython_display_(self):
        from IPython.display import display

        self.update(self.slider.value)
        display(self.widget)
