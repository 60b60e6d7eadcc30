"""The one plot style of the book, and the colour of each label source."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

from .analysis import histogram, pmf

#: One colour per label source, used by every figure of the book.
COLORS = {
    "exact": "#222222",
    "reference": "#1b7837",
    "noise": "#d95f02",
    "reverse (exact posterior)": "#7570b3",
    "reverse (learned flow)": "#1f78b4",
    # chapter 2: the molecular label sources
    "coupling": "#1f78b4",
    "cnf": "#e7298a",
}


def _offline_notebook_renderer():
    """plotly's notebook renderer without its ``<script src=...mathjax...>`` CDN link."""
    import re

    from plotly.io._base_renderers import NotebookRenderer

    class OfflineNotebookRenderer(NotebookRenderer):
        def to_mimebundle(self, fig_dict):
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = re.sub(r'<script src="https?://[^"]*mathjax[^"]*"></script>', "", bundle["text/html"])
            return bundle

    return OfflineNotebookRenderer()


def set_style() -> None:
    """Apply the book's plot style (call once at the top of a chapter).

    Sets the matplotlib defaults, and makes plotly figures carry plotly.js inline so that they work
    in the static HTML book without a kernel or internet access (plotly's notebook renderer also links
    MathJax from a CDN; the book serves its own, so that link is dropped).
    """
    import plotly.io as pio

    pio.renderers["offline_notebook"] = _offline_notebook_renderer()
    pio.renderers.default = "plotly_mimetype+offline_notebook"
    mpl.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 120,
        "figure.figsize": (7.0, 4.0),
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.labelsize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.25,
        "legend.frameon": False,
        "legend.fontsize": 8,
        "lines.linewidth": 1.6,
        "figure.constrained_layout.use": True,
    })


# ----------------------------------------------------------------------------- chapter 1 figures
def _centres(edges):
    edges = np.asarray(edges)
    return 0.5 * (edges[1:] + edges[:-1])


def plot_toy_system(system, samples, edges):
    """The toy: its potential (= PMF) and its exact density against a histogram of the samples."""
    g = system.grid(1001)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.plot(g, system.pmf(g), color=COLORS["exact"])
    a.set(xlabel="bond length r (Å)", ylabel="U(r) − U_min (kcal/mol)", ylim=(-0.3, 6), title="potential = exact PMF")
    a.axhline(system.kbt, ls=":", color="grey")
    a.text(g[20], system.kbt + 0.1, "k_BT", color="grey")
    b.hist(np.asarray(samples), bins=edges, density=True, color=COLORS["reference"], alpha=0.4, label="exact samples")
    b.plot(g, system.density(g), color=COLORS["exact"], label="p(r)")
    b.set(xlabel="bond length r (Å)", ylabel="density (1/Å)", xlim=(1.2, 1.8), title=f"Boltzmann density at {system.temperature:g} K")
    b.legend()
    return fig


def plot_posteriors(system, flow, noise_std, conditioning=(1.30, 1.45, 1.50, 1.62)):
    """Learned reverse kernel q(y|c) against the exact denoising posterior p(y|c) for a few c."""
    from .systems.toy1d import ExactDenoisingPosterior

    g = torch.linspace(1.15, 1.85, 701, dtype=torch.float64)
    exact = ExactDenoisingPosterior(system, noise_std)
    fig, axes = plt.subplots(1, len(conditioning), figsize=(2.4 * len(conditioning), 2.6), sharey=True)
    for ax, c in zip(axes, conditioning):
        cc = torch.full_like(g, c)
        with torch.no_grad():
            ax.plot(g, torch.exp(exact.log_prob(g, cc)), color=COLORS["reverse (exact posterior)"], label="exact p(y|c)")
            ax.plot(g, torch.exp(flow.log_prob(g, cc, noise_std)), "--", color=COLORS["reverse (learned flow)"], label="flow q(y|c)")
        ax.axvline(c, color="grey", lw=0.8)
        ax.set(xlabel="y (Å)", title=f"c = {c:.2f} Å")
    axes[0].set_ylabel("density (1/Å)")
    axes[0].legend()
    fig.suptitle(f"reverse kernels at σ = {noise_std:.3f} Å")
    return fig


def plot_strategy_grid(study, noise_var, n_scatter=3000):
    """One row per strategy: labelled positions, labels vs mean force, fitted force, simulated PMF."""
    from .units import noise_std_from_var

    system, edges = study.system, study.edges
    sigma = noise_std_from_var(noise_var)
    g = torch.linspace(edges[0], edges[-1], 501, dtype=torch.float64)
    exact_force = system.mean_force(g)
    smoothed_force = system.smoothed_mean_force(g, sigma)
    strategies = ["reference", "noise", "reverse (exact posterior)", "reverse (learned flow)"]
    fig, axes = plt.subplots(len(strategies), 4, figsize=(12, 2.4 * len(strategies)), sharex=True)
    for row, strategy in zip(axes, strategies):
        r = study.result(strategy, None if strategy == "reference" else noise_var)
        color = COLORS[strategy]
        row[0].hist(r.y.numpy(), bins=edges, density=True, color=color, alpha=0.5)
        row[0].plot(g, system.density(g), color=COLORS["exact"], lw=1)
        if strategy == "noise":
            row[0].plot(g, system.smoothed_density(g, sigma), ":", color=COLORS["exact"], lw=1.2, label="p * N(0, σ²)")
            row[0].legend(loc="upper left")
        row[0].set_ylabel(strategy, color=color, fontsize=10, fontweight="bold")
        idx = torch.randperm(len(r.y), generator=torch.Generator().manual_seed(0))[:n_scatter]
        row[1].scatter(r.y[idx], r.labels[idx], s=2, alpha=0.25, color=color, rasterized=True)
        row[1].plot(g, exact_force, color=COLORS["exact"], lw=1)
        with torch.no_grad():
            row[2].plot(g, r.model.forces(g), color=color, label="fitted")
        row[2].plot(g, exact_force, color=COLORS["exact"], lw=1, label="exact mean force")
        if strategy == "noise":
            for ax in row[1:3]:
                ax.plot(g, smoothed_force, ":", color=COLORS["exact"], lw=1.2, label="smoothed mean force")
        row[2].legend(loc="upper right")
        spread = float(exact_force[(g > 1.25) & (g < 1.75)].abs().max()) * 1.3
        row[1].set_ylim(-4 * spread, 4 * spread)
        row[2].set_ylim(-spread, spread)
        sim = study.simulated_samples(strategy, None if strategy == "reference" else noise_var)
        row[3].plot(_centres(edges), pmf(histogram(sim, edges), edges, system.kbt), color=color, label="simulated")
        row[3].plot(g, system.pmf(g), color=COLORS["exact"], lw=1, label="exact")
        row[3].set_ylim(-0.2, 5)
        row[3].legend(loc="upper center")
    titles = ["labelled positions y", "labels (kcal/mol/Å)", "fitted force field (kcal/mol/Å)", "PMF of Langevin run (kcal/mol)"]
    for ax, t in zip(axes[0], titles):
        ax.set_title(t)
    for ax in axes[-1]:
        ax.set_xlabel("bond length (Å)")
    fig.suptitle(f"σ² = {noise_var:g} Å²  (σ = {sigma:.3f} Å), T = {system.temperature:g} K")
    return fig


def plot_scores(table):
    """JS divergence of the simulations and force error against noise variance, per strategy."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    ref = table[table.strategy == "reference"].iloc[0]
    for strategy, rows in table[table.strategy != "reference"].groupby("strategy", sort=False):
        a.plot(rows["noise_var (Å²)"], rows["JS(sim ‖ exact)"], "o-", color=COLORS[strategy], label=strategy)
        b.plot(rows["noise_var (Å²)"], rows["force MSE vs exact mean force"], "o-", color=COLORS[strategy], label=strategy)
    a.axhline(ref["JS(sim ‖ exact)"], color=COLORS["reference"], ls="--", label="reference forces")
    a.axhline(ref["JS floor"], color="grey", ls=":", label="iid sampling floor")
    b.axhline(ref["force MSE vs exact mean force"], color=COLORS["reference"], ls="--", label="reference forces")
    a.set(xscale="log", yscale="log", xlabel="noise variance σ² (Å²)", ylabel="JS(simulated ‖ exact) (nats)")
    b.set(xscale="log", yscale="log", xlabel="noise variance σ² (Å²)", ylabel="force MSE ((kcal/mol/Å)²)")
    a.legend(fontsize=7)
    return fig


def plot_trajectories(study, noise_var, n_frames=300):
    """The first replica's bond length over time for every strategy (saved frames)."""
    dt_save = study.settings.dt * study.settings.save_every
    fig, ax = plt.subplots(figsize=(9, 2.6))
    for i, r in enumerate(study.results):
        if r.noise_var is None or np.isclose(r.noise_var, noise_var):
            t = np.arange(n_frames) * dt_save
            ax.plot(t, study.simulated[:n_frames, 0, i], color=COLORS[r.strategy], lw=0.8, label=r.strategy)
    ax.set(xlabel="time (ps)", ylabel="bond length (Å)", title="one Langevin replica per force field")
    ax.legend(ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.08))
    return fig


# ----------------------------------------------------------------------------- chapter 2 figures
def source_color(name: str) -> str:
    """Colour of a label-source name such as "noise σ=0.05" (its first word picks the colour)."""
    return COLORS.get(name.split(" ")[0], "#666666")


def source_styles(names) -> dict:
    """{name: (colour, line style)}: the source's colour, and solid, dashed, dotted … for the second and
    later names of the same colour (e.g. "noise σ=0.05" solid, "noise σ=0.1" dashed)."""
    seen, styles = {}, {}
    for name in names:
        color = source_color(name)
        styles[name] = (color, ("-", "--", ":", "-.")[seen.get(color, 0) % 4])
        seen[color] = seen.get(color, 0) + 1
    return styles


def molecule_view(mol, bead_names):
    """nglview widget of an all-atom structure (sticks) with its CG beads as translucent green spheres.

    The view is saved with the executed notebook (nglview archives its calls in the widget state), so it
    renders on the static book page too (the book serves the widget JavaScript, see ``book/widget_js.py``).
    """
    import io

    import nglview
    import openmm.app as app
    import openmm.unit as u

    pdb = io.StringIO()
    app.PDBFile.writeFile(mol.topology, mol.positions, pdb)
    beads = ",".join(str(i) for i in mol.bead_atoms)
    labels = {atom: f"{k}: {name}" for k, (atom, name) in enumerate(zip(mol.bead_atoms, bead_names))}  # by atom index
    view = nglview.show_text(pdb.getvalue(), ext="pdb", representations=[
        {"type": "licorice", "params": {"sele": "all", "radius": 0.15}},
        {"type": "spacefill", "params": {"sele": f"@{beads}", "color": "#1b7837", "opacity": 0.45, "radius": 0.9}},
        {"type": "label", "params": {"sele": f"@{beads}", "labelType": "text", "color": "#1b7837", "zOffset": 1.5,
                                     "yOffset": 1.2, "labelText": labels}}])
    view.layout.height = "380px"
    _frame_camera(view, np.array([[v.x, v.y, v.z] for v in mol.positions.value_in_unit(u.angstrom)]))
    return view


def _frame_camera(view, xyz: np.ndarray) -> None:
    """Point an nglview camera at coordinates ``xyz`` (Å).

    The saved view replays before the structure has loaded, so NGL's own autoView would frame an empty
    scene: set the camera explicitly. NGL's orientation matrix (column-major 4×4) is rotation × camera
    distance with the scene translation in its last column; the rotation puts the molecule's principal
    axes along x, y, z and the distance frames its radius in the 40° field of view.
    """
    centre = xyz.mean(0)
    axes = np.linalg.svd(xyz - centre)[2]
    axes[2] *= np.sign(np.linalg.det(axes))
    distance = (np.linalg.norm(xyz - centre, axis=1).max() + 1.5) / np.tan(np.radians(20.0))
    orientation = np.eye(4)
    orientation[:3, :3] = axes * distance
    orientation[:3, 3] = -centre
    view._set_camera_orientation(orientation.T.flatten().tolist())


def cg_frames_view(frames: dict, bead_names, gap: float = 6.0):
    """nglview widget of CG frames (Å, beads × 3) side by side: each superposed on the first, shifted along
    x by its width plus ``gap``, drawn as bead spheres on a trace and labelled with its name."""
    import nglview

    from .structures import ca_pdb_text, superpose

    first = np.asarray(next(iter(frames.values())), dtype=float)
    placed, x_end = {}, None
    for name, xyz in frames.items():
        xyz = superpose(np.asarray(xyz, dtype=float), first) - np.mean(first, axis=0)
        if x_end is not None:
            xyz = xyz + [x_end + gap - xyz[:, 0].min(), 0.0, 0.0]
        placed[name], x_end = xyz, xyz[:, 0].max()
    n = len(bead_names)
    colors = ["#1b7837", "#762a83", "#2166ac", "#b35806"]
    representations = [{"type": "licorice", "params": {"sele": "all", "radius": 0.35, "color": "#888888"}}]
    for k, (chain, name) in enumerate(zip("ABCDEFGHIJ", placed)):
        representations += [
            {"type": "spacefill", "params": {"sele": f":{chain}", "color": colors[k % len(colors)], "radius": 1.3,
                                             "opacity": 0.75}},
            {"type": "label", "params": {"sele": f"@{k * n}", "labelType": "text", "color": colors[k % len(colors)],
                                         "zOffset": 2.5, "yOffset": 2.5, "labelText": {k * n: name}}}]
    view = nglview.show_text(ca_pdb_text(placed, list(bead_names)), ext="pdb", representations=representations)
    view.layout.height = "320px"
    _frame_camera(view, np.concatenate(list(placed.values())))
    return view


def plot_ramachandran_panels(samples: dict, kbt: float, max_kcal: float = 6.0, ncols: int = 4):
    """Free energy −k_BT log p(φ, ψ) (kcal/mol, 60 × 60 grid) of every entry of ``samples`` (frames)."""
    from .systems.alanine_dipeptide import RAMACHANDRAN

    edges = np.linspace(-180.0, 180.0, 61)
    n = len(samples)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.7 * nrows), sharex=True, sharey=True, squeeze=False)
    for ax, (name, frames) in zip(axes.flat, samples.items()):
        rama = RAMACHANDRAN.values(frames)
        h, *_ = np.histogram2d(rama[:, 0], rama[:, 1], bins=[edges, edges])
        with np.errstate(divide="ignore"):
            f = -kbt * np.log(h / h.sum())
        f -= np.min(f[np.isfinite(f)])
        im = ax.pcolormesh(edges, edges, np.where(np.isfinite(f), f, np.nan).T, vmin=0, vmax=max_kcal, cmap="viridis",
                           rasterized=True)
        ax.set_title(name, color=source_color(name), fontsize=9)
        ax.set_aspect("equal")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("φ (°)")
    for ax in axes[:, 0]:
        ax.set_ylabel("ψ (°)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="free energy (kcal/mol)")
    return fig


def plot_mirror_asymmetry(grids: dict, edges, max_kcal: float = 3.0):
    """Chiral parts A(φ, ψ) = ½[F(φ, ψ) − F(−φ, −ψ)] (kcal/mol, :func:`~.evaluation.mirror_asymmetry`)
    side by side, one panel per entry of ``grids`` (NaN bins blank), on a diverging scale."""
    fig, axes = plt.subplots(1, len(grids), figsize=(2.9 * len(grids), 2.8), sharey=True, squeeze=False)
    for ax, (name, grid) in zip(axes[0], grids.items()):
        im = ax.pcolormesh(edges, edges, np.asarray(grid).T, vmin=-max_kcal, vmax=max_kcal, cmap="RdBu_r", rasterized=True)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("φ (°)")
    axes[0, 0].set_ylabel("ψ (°)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="½[F(φ, ψ) − F(−φ, −ψ)] (kcal/mol)")
    return fig


def plot_observable_overlays(samples: dict, reference, names: list[str], ncols: int = 4):
    """Histograms of internal coordinates of every entry of ``samples`` over the reference (filled)."""
    from .evaluation import observable_values

    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    styles = source_styles(samples)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.3 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        edges = reference.edges[name][0]
        width = np.diff(edges)
        ax.fill_between(_centres(edges), reference.probabilities[name] / width, step="mid", color="#cccccc",
                        label="reference data")
        for label, frames in samples.items():
            p = histogram(observable_values(frames, name), edges)
            color, style = styles[label]
            ax.step(_centres(edges), p / width, where="mid", color=color, ls=style, lw=1.1, label=label)
        unit = "Å" if name.startswith("bond") else "°"
        ax.set(xlabel=f"{name} ({unit})", yticks=[])
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="upper left")
    return fig


def plot_prior_fits(fits, ncols: int = 5):
    """Boltzmann-inverted PMF of each prior term (dots) and its fitted energy (line), kcal/mol."""
    ncols = min(ncols, len(fits))
    nrows = -(-len(fits) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.1 * nrows), squeeze=False)
    for ax, fit in zip(axes.flat, fits):
        x = np.degrees(fit.centers) if fit.term in ("angle", "dihedral") else fit.centers
        shift = np.min(fit.fitted)  # both curves from the prior's minimum
        ax.plot(x, fit.inverted - shift, ".", ms=3, color="#888888", label="−k_BT log(p/J)")
        ax.plot(x, fit.fitted - shift, color=COLORS["reference"], label="prior")
        ax.set_title(f"{fit.term} {'-'.join(map(str, fit.beads))}", fontsize=9)
        ax.set_ylim(-0.5, 6 if fit.term != "dihedral" else 1.1 * np.ptp(fit.fitted))
    for ax in axes.flat[len(fits):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    axes.flat[0].set_ylabel("kcal/mol")
    return fig


def plot_seed_spread(metrics, labels: dict, data_populations: dict,
                     columns=("αL (φ > 0) %", "αR %", "β / PII %", "JS ramachandran")):
    """One dot per training seed of every model (``metrics``: rows of model, seed and ``columns``).

    ``labels`` maps a model name to its display name (its first word picks the colour); the data's basin
    populations (fractions with block errors) are drawn as a band of ± 2 block errors.
    """
    models = list(dict.fromkeys(metrics["model"]))
    fig, axes = plt.subplots(1, len(columns), figsize=(3.0 * len(columns), 3.4), sharex=True)
    for ax, column in zip(axes, columns):
        for i, name in enumerate(models):
            values = metrics.loc[metrics["model"] == name, column].to_numpy()
            ax.plot(np.full(len(values), i), values, "o", ms=5, alpha=0.8, color=source_color(labels[name]))
            ax.plot([i - 0.25, i + 0.25], [values.mean()] * 2, color=source_color(labels[name]), lw=2)
        basin = column.removesuffix(" %")
        if basin in data_populations:
            mean, err = (100 * data_populations[basin][k] for k in ("mean", "block_error"))
            ax.axhspan(mean - 2 * err, mean + 2 * err, color="grey", alpha=0.25, lw=0, label="data ± 2 block errors")
        ax.set(title=column, xticks=range(len(models)))
        ax.set_xticklabels([labels[n] for n in models], rotation=60, ha="right")
    axes[0].legend(loc="best")
    return fig


def _free_energy(p, kbt: float) -> np.ndarray:
    """−k_BT log p (kcal/mol) from its minimum; empty bins are NaN."""
    with np.errstate(divide="ignore"):
        f = -kbt * np.log(np.asarray(p, dtype=float))
    f = np.where(np.isfinite(f), f, np.nan)
    return f - np.nanmin(f)


def plot_surface_panels(samples: dict, observable, reference, kbt: float, max_kcal: float = 5.0, ncols: int = 4,
                        marker=None, region=None, axis_labels=("TIC 1", "TIC 2")):
    """Free energy −k_BT log p (kcal/mol) of a 2-D observable (an :class:`~.observables.Observable` whose
    values are pairs, e.g. the TICA plane) on the reference's grid: the reference data's (weighted)
    first, then every entry of ``samples`` (frames). ``marker``: a point (x, y) drawn as a star on each
    panel (e.g. the folded reference); ``region``: frames whose histogram's outline (5 % of its peak) is
    drawn dashed on each panel (e.g. the data's folded frames)."""
    edges = reference.edges[observable.name]
    panels = {"reference data": reference.probabilities[observable.name]}
    from .observables import histogram as binned

    panels |= {name: binned(observable.values(frames), edges) for name, frames in samples.items()}
    outline = binned(observable.values(region), edges) if region is not None else None
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 2.7 * nrows), sharex=True, sharey=True, squeeze=False)
    for ax, (name, p) in zip(axes.flat, panels.items()):
        im = ax.pcolormesh(edges[0], edges[1], _free_energy(p, kbt).T, vmin=0, vmax=max_kcal, cmap="viridis",
                           rasterized=True)
        if outline is not None:
            ax.contour(_centres(edges[0]), _centres(edges[1]), outline.T, levels=[0.05 * outline.max()],
                       colors="white", linestyles="--", linewidths=1.0)
        if marker is not None:
            ax.plot(*marker, "*", ms=11, color="white", mec="black", mew=0.6)
        ax.set_title(name, color=source_color(name), fontsize=9)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(axis_labels[0])
    for ax in axes[:, 0]:
        ax.set_ylabel(axis_labels[1])
    fig.colorbar(im, ax=axes, shrink=0.8, label="free energy (kcal/mol)")
    return fig


def plot_profiles(samples: dict, observables: list, reference, kbt: float, units: dict | None = None,
                  max_kcal: float = 6.0):
    """Free-energy profiles −k_BT log p (kcal/mol) of 1-D observables (e.g. the RMSD to the folded state),
    the reference data's (weighted, grey) under every entry of ``samples`` (frames); one panel each."""
    units, styles = units or {}, source_styles(samples)
    fig, axes = plt.subplots(1, len(observables), figsize=(4.6 * len(observables), 3.3), squeeze=False)
    for ax, obs in zip(axes[0], observables):
        edges = reference.edges[obs.name][0]
        centres = _centres(edges)
        ax.plot(centres, _free_energy(reference.probabilities[obs.name], kbt), color="#999999", lw=4, alpha=0.7,
                label="reference data")
        for name, frames in samples.items():
            color, style = styles[name]
            ax.plot(centres, _free_energy(histogram(obs.values(frames), edges), kbt), color=color, ls=style,
                    lw=1.3, label=name)
        ax.set(xlabel=f"{obs.name} ({units[obs.name]})" if obs.name in units else obs.name,
               ylabel="free energy (kcal/mol)", ylim=(-0.3, max_kcal))
    axes[0, 0].legend(fontsize=8)
    return fig


def plot_melting_curve(curve: list[dict], temperature: float, ax=None):
    """Folded fraction (%) against temperature with one-standard-error bars; hollow markers where fewer
    than 20 independent samples per state remain after reweighting (``reliable`` false)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.3))
    for reliable in (True, False):
        rows = [r for r in curve if r["reliable"] == reliable]
        if rows:
            ax.errorbar([r["T_K"] for r in rows], [100 * r["folded_fraction"] for r in rows],
                        [100 * r["err"] for r in rows], fmt="o", ms=5, capsize=2, color=COLORS["reference"],
                        mfc=COLORS["reference"] if reliable else "white",
                        label="reweighted" if reliable else "reweighted (< 20 samples per state)")
    ax.axvline(temperature, color="#999999", lw=1, ls="--")
    ax.set(xlabel="temperature (K)", ylabel="folded (%)")
    ax.legend(fontsize=8)
    return ax


def plot_force_profiles(profiles: dict, names: list[str], coordinate: str = "native contacts Q"):
    """⟨F·∇h | h⟩ of force sets binned in h (:func:`~.evaluation.force_along`): the first name (e.g. the
    reference forces) as a band of ± 2 standard errors, the others as lines."""
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    x = profiles["centres"]
    first, *rest = names
    mean, err = profiles[first]["mean"], profiles[first]["stderr"]
    ax.fill_between(x, mean - 2 * err, mean + 2 * err, color="#cccccc", label=f"{first} ± 2 s.e.")
    ax.plot(x, mean, color="#888888", lw=1)
    for name, (color, style) in source_styles(rest).items():
        ax.plot(x, profiles[name]["mean"], marker="o", ms=3, lw=1.2, color=color, ls=style, label=name)
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel=coordinate, ylabel="⟨F·∇h | h⟩ (kcal/mol)")
    ax.legend(fontsize=8)
    return fig
