"""Chapter 1's pipeline: the double-well bond labelled four ways, fitted, simulated and scored.

For every label source (strategy) and noise variance:
exact Boltzmann samples x → labels (y, f) → force matching → Langevin simulation → histogram of the
simulated bond → JS divergence against the exact distribution, and the force error against the exact
mean force. All fitted models are stacked into one :class:`~opforce_tutorial.forcefield.BondEnergy1D`
and simulated together in a single batched BAOAB run.

Strategies:

* ``reference``: y = x with the exact force −dU/dx (the delta kernel);
* ``noise``: :class:`~opforce_tutorial.kernels.NoiseKernel`;
* ``reverse (exact posterior)``: :class:`~opforce_tutorial.kernels.ReverseNoiseKernel` around
  :class:`~opforce_tutorial.systems.toy1d.ExactDenoisingPosterior`;
* ``reverse (learned flow)``: the same kernel around the learned
  :class:`~opforce_tutorial.kernels.NoiseConditionalFlow1D`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..analysis import histogram, js_divergence, js_floor
from ..catalog import ModelSpec
from ..forcefield import BondEnergy1D, FitReport, fit_force_matching
from ..kernels import NoiseKernel, ReverseNoiseKernel, keep_finite
from ..simulation import simulate_langevin
from ..systems.toy1d import DoubleWellBond, ExactDenoisingPosterior
from ..units import noise_std_from_var

#: The noise variances (Å²) of the book's static slider: σ from 0.01 to 0.1 Å, the paper's σ = 0.05 Å included.
NOISE_VARS = (1e-4, 2.5e-4, 5e-4, 1e-3, 1.5e-3, 2.5e-3, 4e-3, 6.25e-3, 1e-2)
STRATEGIES = ("reference", "noise", "reverse (exact posterior)", "reverse (learned flow)")
KERNEL_STRATEGIES = STRATEGIES[1:]


@dataclass
class BondToySettings:
    """Sizes of one study (lengths Å, time ps, mass amu). Defaults build chapter 1 in about a minute."""

    n_data: int = 20_000
    n_basis: int = 32
    hist_range: tuple[float, float] = (1.0, 2.0)
    n_replicas: int = 256
    n_steps: int = 5_000
    burn_in: int = 1_000
    save_every: int = 10
    dt: float = 0.002
    friction: float = 20.0
    mass: float = 6.0
    n_bins: int = 80
    seed: int = 0


@dataclass
class StrategyResult:
    """Labels and fitted model of one strategy at one noise level (``noise_var`` is None for reference)."""

    strategy: str
    noise_var: float | None
    y: torch.Tensor
    labels: torch.Tensor
    model: BondEnergy1D
    fit: FitReport
    n_dropped: int

    @property
    def noise_std(self) -> float | None:
        return None if self.noise_var is None else noise_std_from_var(self.noise_var)


@dataclass
class BondToyStudy:
    """Everything chapter 1 plots: data, per-strategy results, simulations and the score table."""

    system: DoubleWellBond
    settings: BondToySettings
    x: torch.Tensor
    results: list[StrategyResult]
    simulated: np.ndarray  # (n_saved, n_replicas, n_results): simulated bond lengths, one column per result
    edges: np.ndarray
    table: pd.DataFrame = field(repr=False)

    def result(self, strategy: str, noise_var: float | None = None) -> StrategyResult:
        for r in self.results:
            if r.strategy == strategy and (noise_var is None or np.isclose(r.noise_var, noise_var)):
                return r
        raise KeyError(f"no result for {strategy!r} at noise_var={noise_var}")

    def simulated_samples(self, strategy: str, noise_var: float | None = None) -> np.ndarray:
        """All saved frames of all replicas of one result, flattened (Å)."""
        return self.simulated[..., self.results.index(self.result(strategy, noise_var))].ravel()

    @property
    def noise_vars(self) -> list[float]:
        return sorted({r.noise_var for r in self.results if r.noise_var is not None})


def make_kernel(strategy: str, system: DoubleWellBond, noise_std: float, flow=None):
    """The kernel of a strategy at noise level ``noise_std`` (Å)."""
    if strategy == "noise":
        return NoiseKernel(noise_std, system.kbt)
    if strategy == "reverse (exact posterior)":
        return ReverseNoiseKernel(ExactDenoisingPosterior(system, noise_std), noise_std, system.kbt)
    if strategy == "reverse (learned flow)":
        if flow is None:
            raise ValueError("the learned-flow strategy needs a trained NoiseConditionalFlow1D")
        return ReverseNoiseKernel(flow.at(noise_std), noise_std, system.kbt)
    raise ValueError(f"unknown kernel strategy {strategy!r}; choose from {KERNEL_STRATEGIES}")


def label(system: DoubleWellBond, strategy: str, x: torch.Tensor, noise_var: float | None = None, flow=None,
          generator: torch.Generator | None = None):
    """Labelled positions and forces ``(y, f, n_dropped)`` of one strategy (non-finite labels dropped)."""
    if strategy == "reference":
        y, f = x, system.mean_force(x)
    else:
        y, f = make_kernel(strategy, system, noise_std_from_var(noise_var), flow).sample_with_forces(x, generator)
    return keep_finite(y.detach(), f.detach())


def fit_strategy(system, strategy, x, noise_var=None, flow=None, settings=BondToySettings(), generator=None):
    """Label with one strategy and fit a :class:`BondEnergy1D` by force matching."""
    y, f, n_dropped = label(system, strategy, x, noise_var, flow, generator)
    model = BondEnergy1D(settings.n_basis)
    report = fit_force_matching(model, y, f, kbt=system.kbt, seed=settings.seed)
    return StrategyResult(strategy, noise_var, y, f, model, report, n_dropped)


def simulate_results(system, results: list[StrategyResult], settings: BondToySettings, x_start: torch.Tensor,
                     generator=None, progress=False) -> np.ndarray:
    """Simulate every fitted model at once (one column each); returns ``(n_saved, n_replicas, n_results)``."""
    stacked = BondEnergy1D.stack([r.model for r in results])
    idx = torch.randint(len(x_start), (settings.n_replicas, len(results)), generator=generator)
    traj = simulate_langevin(stacked.forces, x_start[idx], masses=settings.mass, kbt=system.kbt, dt=settings.dt,
                             friction=settings.friction, n_steps=settings.n_steps, burn_in=settings.burn_in,
                             save_every=settings.save_every, generator=generator, progress=progress)
    return traj.numpy()


def score(system, results, simulated, edges, x_eval) -> pd.DataFrame:
    """One row per result: JS of the simulation against the exact density and force errors."""
    exact = system.bin_probabilities(edges)
    simulated = simulated.reshape(-1, len(results))
    floor = js_floor(exact, len(simulated))
    f_exact = system.mean_force(x_eval)
    rows = []
    for i, r in enumerate(results):
        with torch.no_grad():
            err = float(((r.model.forces(x_eval) - f_exact) ** 2).mean())
        rows.append({
            "strategy": r.strategy,
            "noise_var (Å²)": r.noise_var,
            "noise_std (Å)": r.noise_std,
            "JS(sim ‖ exact)": js_divergence(histogram(simulated[:, i], edges), exact),
            "JS floor": floor,
            "force MSE vs exact mean force": err,
            "validation FM loss": r.fit.val_mse,
            "dropped labels": r.n_dropped,
        })
    return pd.DataFrame(rows)


def run_study(system: DoubleWellBond, noise_vars=NOISE_VARS, flow=None, settings: BondToySettings = BondToySettings(),
              strategies=STRATEGIES, progress: bool = True) -> BondToyStudy:
    """Run the whole chapter-1 pipeline for every strategy and noise variance (Å²)."""
    gen = torch.Generator().manual_seed(settings.seed)
    x = system.sample(settings.n_data, generator=gen)
    results = []
    for strategy in strategies:
        for var in [None] if strategy == "reference" else noise_vars:
            results.append(fit_strategy(system, strategy, x, var, flow, settings, gen))
    simulated = simulate_results(system, results, settings, x, gen, progress)
    edges = np.linspace(*settings.hist_range, settings.n_bins + 1)
    table = score(system, results, simulated, edges, system.sample(20_000, generator=gen))
    return BondToyStudy(system, settings, x, results, simulated, edges, table)


def recipes() -> dict[str, ModelSpec]:
    """Chapter 1's recipe for the catalog (:mod:`opforce_tutorial.catalog`): the learned 1D flow."""
    from dataclasses import asdict

    from ..kernels.flow1d import Flow1DConfig, Flow1DTraining, NoiseConditionalFlow1D, train_flow1d

    def train_toy_flow(device, work_dir=None):  # half a minute: nothing to resume
        training = Flow1DTraining()
        flow, metrics = train_flow1d(DoubleWellBond(), training, device=device)
        return flow, asdict(flow.config), asdict(training), metrics, None

    return {"toy1d-flow": ModelSpec(train=train_toy_flow, file="toy1d_flow.pt",
                                    build=lambda cfg: NoiseConditionalFlow1D(Flow1DConfig(**cfg)))}


def draw_spread(study: BondToyStudy, flow=None, seeds=(1, 2), progress: bool = False) -> pd.DataFrame:
    """JS(sim ‖ exact) of every strategy and noise variance over independent draws: ``study`` (its seed)
    and the same study rerun with each of ``seeds`` (new samples, labels, fits and simulation; ``flow``:
    the learned flow ``study`` used). One row per (strategy, noise variance): mean and standard deviation
    of JS over the draws, their number, and the JS floor of one draw."""
    from dataclasses import replace

    noise_vars = tuple(sorted(study.table["noise_var (Å²)"].dropna().unique()))
    strategies = tuple(dict.fromkeys(study.table["strategy"]))
    tables = [study.table] + [run_study(study.system, noise_vars, flow, replace(study.settings, seed=s), strategies,
                                        progress).table for s in seeds]
    both = pd.concat([t.assign(draw=k) for k, t in enumerate(tables)])
    spread = (both.groupby(["strategy", "noise_var (Å²)"], dropna=False, sort=False)["JS(sim ‖ exact)"]
              .agg(["mean", "std", "count"]).reset_index())
    spread["JS floor"] = float(study.table["JS floor"].iloc[0])
    return spread.rename(columns={"mean": "JS mean", "std": "JS sd", "count": "draws"})


def conclusions(spread: pd.DataFrame, within: float = 3.0) -> dict:
    """The chapter's claims, computed from :func:`draw_spread`. The yardstick is the reference-forces
    model's mean JS over the same draws (its simulation frames are correlated, so even exact forces sit
    above the independent-sample floor): for each kernel, the noise variances at which its mean JS is
    within ``within`` times that, and its JS (mean, sd over draws) at the smallest and largest variance."""
    reference = float(spread.loc[spread.strategy == "reference", "JS mean"].iloc[0])
    out = {"within": within, "ref_js": reference,
           "ref_sd": float(spread.loc[spread.strategy == "reference", "JS sd"].iloc[0]),
           "floor": float(spread["JS floor"].iloc[0]), "n_draws": int(spread["draws"].min())}
    for strategy, short in (("noise", "noise"), ("reverse (exact posterior)", "exact"), ("reverse (learned flow)", "flow")):
        rows = spread[spread.strategy == strategy].sort_values("noise_var (Å²)")
        close = rows["JS mean"].to_numpy() <= within * reference
        variances = rows["noise_var (Å²)"].to_numpy()
        if not close.any():
            out[f"{short}_close"] = "at no variance"
        elif close[np.argmax(close):].all():  # every variance from the first close one up
            out[f"{short}_close"] = f"from σ² = {variances[np.argmax(close)]:g} Å² up"
        else:
            out[f"{short}_close"] = "at σ² = " + ", ".join(f"{v:g}" for v in variances[close]) + " Å²"
        for end, row in (("small", rows.iloc[0]), ("large", rows.iloc[-1])):
            out[f"{short}_js_{end}"] = float(row["JS mean"])
            out[f"{short}_sd_{end}"] = float(row["JS sd"])
            out[f"{short}_over_ref_{end}"] = float(row["JS mean"] / reference)
    out["var_small"] = float(spread["noise_var (Å²)"].min())
    out["var_large"] = float(spread["noise_var (Å²)"].max())
    return out
