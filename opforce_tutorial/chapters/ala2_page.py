"""Chapter 2's page: each table the chapter shows and each number its text cites, one call each.

Tables come back as pandas Stylers formatted for people (captions, 2–4 significant digits, "±" for
errors); the numbers the prose quotes come back as ``{key: value}`` dicts the notebook glues, so the
text cannot drift from the results. Every function computes from the registered models, their saved
simulations, the recorded replicates and long runs, or live labels: nothing here is a stored number.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from .. import pretrained
from ..data.dataset import registry_entry
from ..evaluation import dihedral_integration_by_parts_check, integration_by_parts_check, replica_bootstrap_js
from ..observables import chain_observables
from ..systems.alanine_dipeptide import RAMACHANDRAN
from . import ala2
from .page import KERNELS, LOCAL_GATE, LiveLabels, display_name, key_of, mean_sd_table, met, thousands
from .page import pm as _pm

LOCAL = [n for n in chain_observables(5) if n.split()[0] in ("bond", "angle")]
GLOBAL_GATE = 1.5  # a flow-kernel model's Ramachandran JS over the reference-forces model's
Z_PASS = 3.0  # an identity check passes when every |z| (difference over its block error) is at most this


# ------------------------------------------------------------------------------------------------ data
def data_tables(ds) -> tuple:
    """(runs, populations) of the shipped dataset: what each run contributed, and the equilibrium basin
    populations (%, block errors) next to the resample the chapter uses."""
    entry = registry_entry("ala2")
    runs = pd.DataFrame({run: {"trajectories": r["trajectories"], "ns": r["ns"], "αL visits": r["alphaL_visits"],
                               **{f"{basin} %": 100 * p["mean"] for basin, p in r["populations"].items()}}
                         for run, r in entry["per_run"].items()}).T
    runs = runs.style.format({"trajectories": "{:.0f}", "ns": "{:.0f}", "αL visits": "{:.0f}",
                              **{c: "{:.2f}" for c in runs.columns if c.endswith("%")}}).set_caption(
        f"runs at {ds.temperature:g} K: {entry['total_ns']:g} ns, {entry['alphaL_visits']} separate αL visits "
        "(hysteresis ±20° in φ)")
    resample = ala2.basin_populations(ds.positions)
    pops = pd.DataFrame({basin: {"data %": _pm(100 * p["mean"], 100 * p["block_error"]),
                                 "the chapter's resample %": f"{100 * resample[basin]['mean']:.1f}"}
                         for basin, p in entry["populations"].items()}).T
    pops = pops.style.set_caption(f"equilibrium basin populations (from {', '.join(entry['populations_from'])}; "
                                  "block errors over 10 contiguous blocks)")
    return runs, pops


def data_populations() -> dict:
    """The data's basin populations, {basin: {"mean", "block_error"}} (fractions)."""
    return registry_entry("ala2")["populations"]


# ---------------------------------------------------------------------------------------- comparison
def comparison(sims: dict, reference, prior_trajectory) -> tuple:
    """Scores of every CG model's saved simulation and of the prior alone, as (scores, table, values).

    The table has one row per model: mean JS over bonds and over angles, each flow-kernel model's ratio
    to the noise-kernel model at its σ (the CG-model gate: ≤ 1/3), the Ramachandran JS and its ratio
    to the reference-forces model's (the global gate: ≤ 1.5), and the basin populations (%, block errors).
    """
    scores = {name: ala2.score(frames, reference) for name, frames in sims.items()}
    scores["prior only"] = ala2.score(prior_trajectory, reference)
    data = data_populations()
    means = {name: {kind: float(np.mean([v["js"] for k, v in s["js"].items() if k.startswith(kind)]))
                    for kind in ("bond", "angle")} for name, s in scores.items()}
    rama_ref = scores["reference forces"]["js"]["ramachandran"]["js"]
    rows, values, names = {}, {}, {}
    for name, s in scores.items():
        source, _, sigma = name.partition(" σ=")
        row = {"mean bond JS": f"{means[name]['bond']:.3f}", "mean angle JS": f"{means[name]['angle']:.3f}"}
        for kind in ("bond", "angle"):
            if source in ("coupling", "cnf"):
                ratio = means[name][kind] / means[f"noise σ={sigma}"][kind]
                row[f"{kind}s ÷ noise"] = f"{ratio:.2f}"
                values[f"cg_{kind}_{source}{sigma.replace('.', '')}"] = ratio
            else:
                row[f"{kind}s ÷ noise"] = ""
        rama = s["js"]["ramachandran"]
        sd = replica_bootstrap_js(sims.get(name, prior_trajectory), reference, RAMACHANDRAN)["sd"]
        row["Ramachandran JS ± error (floor)"] = f"{rama['js']:.3f} ± {sd:.3f} ({rama['js_floor']:.3f})"
        row["÷ reference forces"] = f"{rama['js'] / rama_ref:.2f}"
        for basin, p in s["populations"].items():
            row[f"{basin} %"] = _pm(100 * p["mean"], 100 * p["block_error"])
        key = key_of(name)
        names[key] = name
        values[f"bonds_{key}"], values[f"angles_{key}"] = means[name]["bond"], means[name]["angle"]
        values[f"rama_{key}"], values[f"rama_sd_{key}"] = rama["js"], sd
        values[f"aR_{key}"] = 100 * s["populations"]["αR"]["mean"]
        rows[name] = row
    rows["reference data (MD)"] = {f"{b} %": _pm(100 * p["mean"], 100 * p["block_error"]) for b, p in data.items()}
    values["aR_data"] = 100 * data["αR"]["mean"]
    values.update(_verdicts(values, names))
    table = pd.DataFrame(rows).T.fillna("").style.set_caption(
        "CG simulations (64 replicas × 100 ps) against the data: JS of bonds, angles and the Ramachandran "
        "surface (± its sampling error over resampled replicas); flow-kernel models over the noise-kernel model at "
        "the same σ; populations with block errors")
    return scores, table, values


def recipe_values() -> dict:
    """The CG recipe as the chapter states it: force-matching steps and patience, and the label counts of the
    registered reference-forces model and of a kernel source."""
    fm = ala2.CG_SETTINGS.force_matching
    return {"fm_steps": fm.n_steps, "fm_patience": fm.patience,
            "n_ref_labels": pretrained.read_registry()[ala2.cg_name("reference")]["metrics"]["n_labels"],
            "n_kernel_labels": ala2.LABELS.n_frames * ala2.LABELS.repeats}


def _verdicts(values: dict, names: dict) -> dict:
    """Which flow-kernel models meet the local gate (both ratios ≤ 1/3) and the global gate (≤ 1.5 × the
    reference forces' Ramachandran JS), and whether the reference-forces model is the best on each."""
    out, local, global_ = {}, [], []
    for sigma in ala2.NOISE_STDS:
        s = f"{sigma:g}".replace(".", "")
        for source in ("coupling", "cnf"):
            name = f"{source} σ={sigma:g}"
            if values[f"cg_bond_{source}{s}"] <= LOCAL_GATE and values[f"cg_angle_{source}{s}"] <= LOCAL_GATE:
                local.append(name)
            if values[f"rama_{source}{s}"] <= GLOBAL_GATE * values["rama_ref"]:
                global_.append(name)
    n = 2 * len(ala2.NOISE_STDS)
    out["local_pass"] = f"{len(local)} of {n}" + (f" ({', '.join(local)})" if local else "")
    out["global_pass"] = f"{len(global_)} of {n}" + (f" ({', '.join(global_)})" if global_ else "")
    coupling = ala2.STUDY.flows["coupling"]
    longest = max(coupling.steps(sigma) for sigma in ala2.NOISE_STDS) / ala2.CPU_FLOWS["coupling"].n_steps
    out["local_lesson"] = (
        "where the gate is not met, the flow's own outputs were already too broad (the output table above) or the "
        "CG model lost what the labels held (README, ablation table)" if len(local) < n else
        "every flow's outputs meet the output gate (the output table above) and every CG model keeps what its "
        f"labels hold; for that the coupling flow trains {longest:g} times the generic recipe's steps (README, "
        "ablation table)")
    models = [k.removeprefix("rama_") for k in values
              if k.startswith("rama_") and not k.startswith("rama_sd_") and k != "rama_prior_only"]
    best = {kind: min(models, key=lambda m: values[f"{kind}_{m}"]) for kind in ("bonds", "rama")}
    for kind, model in best.items():
        out[f"best_{kind}"] = names[model]
        out[f"{kind}_best"] = values[f"{kind}_{model}"]
        out[f"ref_is_best_{kind}"] = "is" if model == "ref" else "is not"
    # the Ramachandran JS has a sampling error: a gap smaller than the combined error does not rank the two
    rama_best = best["rama"]
    gap = values["rama_ref"] - values[f"rama_{rama_best}"]
    if rama_best != "ref" and gap <= np.hypot(values["rama_sd_ref"], values[f"rama_sd_{rama_best}"]):
        out["ref_is_best_rama"] = "is, within the simulations' sampling error,"
    return out


def conclusions(values: dict) -> dict:
    """The chapter's sentences on the seed spread and on the reference-forces model, from the page's numbers:
    :func:`comparison`'s, :func:`seed_spread`'s and :func:`label_checks`' values and ``n_ref_labels``."""
    out = {}
    if "ref_within_sd_rama" in values:
        out["seed_sentence"] = (
            f"over training seeds (“Going further”) it {values['ref_within_sd_rama']} within one seed standard "
            f"deviation of the best seed mean ({values['seed_best_rama']}), and the αR population of the "
            f"{values['n_spread_models']} models with replicates spreads by {values['aR_sd_min']:.0f} to "
            f"{values['aR_sd_max']:.0f} percentage points (one standard deviation over seeds)")
    elif values["n_spread_models"]:
        out["seed_sentence"] = (f"over training seeds (“Going further”) {values['seed_result']}, so no model is ranked "
                                "by its seed mean")
    else:
        out["seed_sentence"] = ("the spread over training seeds is not measured for these weights yet "
                                "(“Going further”, “One training run is one draw”)")
    bonds = "the best" if values["ref_is_best_bonds"] == "is" else f"behind {values['best_bonds']}"
    n_ref, n_kernel = (thousands(values[k]) for k in ("n_ref_labels", "n_kernel_labels"))
    head = (f"They are the exact labels; with every frame ({n_ref} labels against a kernel's {n_kernel}) and the "
            f"same force-matching budget, their model is {bonds} on bonds")
    if values["ref_is_best_rama"].startswith("is,"):
        out["reference_verdict"] = (
            f"{head} and ties with {values['best_rama']} for the best Ramachandran surface (JS {values['rama_ref']:.3f} "
            f"± {values['rama_sd_ref']:.3f} against {values['rama_best']:.3f}, within the simulations' sampling "
            "error): the gold standard the kernels are measured against")
    elif values["ref_is_best_rama"] == "is":
        out["reference_verdict"] = (f"{head} and the best on the Ramachandran surface (JS {values['rama_ref']:.3f}): "
                                    "the gold standard the kernels are measured against")
    else:
        within = (", within one seed standard deviation of the best seed mean"
                  if values.get("ref_within_sd_rama") == "is" else "")
        out["reference_verdict"] = (
            f"{head}, and {values['best_rama']} is better on the Ramachandran surface (JS {values['rama_best']:.3f} "
            f"against {values['rama_ref']:.3f}{within}): instantaneous atomistic forces pin the mean force along φ "
            f"and ψ down {values['dihedral_error_ratio']:.1f} times less well than as many noise labels (“Going further”)")
    return out


def gate_summary(values: dict, seeds: pd.DataFrame | None = None) -> pd.io.formats.style.Styler:
    """The chapter's gates, one row each: what is asked, what was measured (seed 0, the registered model),
    met or not. With ``seeds`` (:func:`~opforce_tutorial.chapters.ala2.seed_metrics`), the same gates on the
    seed means of every model with replicates (:func:`seed_mean_gates`)."""
    rows = []
    for sigma in ala2.NOISE_STDS:
        s = f"{sigma:g}".replace(".", "")
        for source in ("coupling", "cnf"):
            bond, angle = values[f"cg_bond_{source}{s}"], values[f"cg_angle_{source}{s}"]
            key = f"{source}{s}"
            rama = values[f"rama_{key}"] / values["rama_ref"]
            error = rama * np.hypot(values[f"rama_sd_{key}"] / values[f"rama_{key}"],
                                    values["rama_sd_ref"] / values["rama_ref"])
            rows.append({"model": f"{source} σ={sigma:g}", "bonds ÷ noise (≤ 0.33)": f"{bond:.2f}",
                         "angles ÷ noise (≤ 0.33)": f"{angle:.2f}",
                         "local gate": met(max(bond, angle) <= LOCAL_GATE),
                         "Ramachandran ÷ reference (≤ 1.5)": f"{rama:.2f} ± {error:.2f}",
                         "global gate": met(rama <= GLOBAL_GATE)})
    table = pd.DataFrame(rows).set_index("model")
    caption = "the chapter's gates, from the table above (seed 0, the registered models)"
    if seeds is not None:
        table = table.join(_seed_gate_columns(seed_mean_gates(seeds))).fillna("")
        caption += "; the seed-mean columns average every recorded training seed (“Going further”)"
    return table.style.set_caption(caption)


def seed_mean_gates(seeds: pd.DataFrame) -> pd.DataFrame:
    """The local and global gates on seed means, one row per flow-kernel model with a replicate (index its
    display name): ``local``, the worse of its seed-mean bond and angle JS over the noise-kernel model's seed
    means at the same σ (gate ≤ 1/3); ``ramachandran``, its seed-mean Ramachandran JS over the reference-forces
    model's (gate ≤ 1.5); and the number of seeds behind each mean (``seeds``, ``noise seeds``,
    ``reference seeds``)."""
    means = seeds.groupby("model")[["mean JS bonds", "mean JS angles", "JS ramachandran"]].mean()
    counts = seeds.groupby("model").size()
    reference = ala2.cg_name("reference")
    rows = {}
    for sigma in ala2.NOISE_STDS:
        noise = ala2.cg_name("noise", sigma)
        for source in ("coupling", "cnf"):
            name = ala2.cg_name(source, sigma)
            if counts.get(name, 0) < 2 or noise not in means.index or reference not in means.index:
                continue
            rows[f"{source} σ={sigma:g}"] = {
                "local": max(means.loc[name, c] / means.loc[noise, c] for c in ("mean JS bonds", "mean JS angles")),
                "ramachandran": means.loc[name, "JS ramachandran"] / means.loc[reference, "JS ramachandran"],
                "seeds": counts[name], "noise seeds": counts[noise], "reference seeds": counts[reference]}
    return pd.DataFrame.from_dict(rows, orient="index")


def _seeds(row) -> str:
    return f"{row['seeds']:.0f} / {row['noise seeds']:.0f} / {row['reference seeds']:.0f}"


def _seed_gate_columns(gates: pd.DataFrame) -> pd.DataFrame:
    """:func:`seed_mean_gates` as the gate table's extra columns."""
    return pd.DataFrame({name: {"seeds (model / noise / reference)": _seeds(row),
                                "seed means: worse of bonds, angles ÷ noise": f"{row['local']:.2f}",
                                "seed-mean local gate": met(row["local"] <= LOCAL_GATE),
                                "seed means: Ramachandran ÷ reference": f"{row['ramachandran']:.2f}",
                                "seed-mean global gate": met(row["ramachandran"] <= GLOBAL_GATE)}
                         for name, row in gates.iterrows()}).T


def seed_gate_sentence(seeds: pd.DataFrame) -> str:
    """What :func:`seed_mean_gates` finds, in one clause per model, for the text."""
    gates = seed_mean_gates(seeds)
    if gates.empty:
        return "no flow-kernel model has a replicate of its registered weights yet"
    both = {(True, True): "meets both gates", (True, False): "meets the local gate, not the global one",
            (False, True): "meets the global gate, not the local one", (False, False): "meets neither gate"}
    return "; ".join(
        f"{name} {both[(row['local'] <= LOCAL_GATE, row['ramachandran'] <= GLOBAL_GATE)]} (local ratio "
        f"{row['local']:.2f}, Ramachandran {row['ramachandran']:.2f} × the reference's; seeds {_seeds(row)})"
        for name, row in gates.iterrows())


# ----------------------------------------------------------------------------------------------- cost
def replicate_minutes() -> tuple[int, float, str]:
    """(number, total minutes, devices) of the recorded seed replicates of the registered weights."""
    current = [r for runs in pretrained.current_replicates().values() for r in runs.values()]
    return len(current), sum(r["wall_time_s"] for r in current) / 60, ", ".join(sorted({r["device"] for r in current}))


# --------------------------------------------------------------------------------------- going further
def kernel_outputs_report(ds, flows: dict, scores: dict, n_frames: int = 20_000) -> tuple:
    """Where the global free energy is lost: for every kernel, the Ramachandran JS (with its floor) and the
    αR population of its outputs y (one draw on each of ``n_frames`` data frames,
    :meth:`~opforce_tutorial.study.Study.kernel_outputs`) next to those of the CG model trained on its labels
    (``scores``: :func:`comparison`'s). ``flows``: ``{(source, σ): flow}``. Returns (table, values, outputs): the
    values hold the seconds it took (``outputs_s``), the outputs are ``{model display name: y}``."""
    t0 = time.perf_counter()
    data_ar = 100 * data_populations()["αR"]["mean"]
    rows, values, model_ar, y_gap, model_gap, outputs = {}, {}, {}, {}, {}, {}
    for sigma in ala2.NOISE_STDS:
        for source in KERNELS:
            name, key = f"{source} σ={sigma:g}", key_of(f"{source} σ={sigma:g}")
            y = outputs[name] = ala2.STUDY.kernel_outputs(source, sigma, ds, flows.get((source, sigma)), n_frames)
            out, model = ala2.score(y[:, None]), scores[name]
            rama, model_rama = out["js"]["ramachandran"], model["js"]["ramachandran"]
            values[f"y_rama_{key}"], values[f"y_aR_{key}"] = rama["js"], 100 * out["populations"]["αR"]["mean"]
            model_ar[name] = 100 * model["populations"]["αR"]["mean"]  # glued by comparison() as aR_<key>
            y_gap[name], model_gap[name] = abs(values[f"y_aR_{key}"] - data_ar), abs(model_ar[name] - data_ar)
            rows[name] = {("kernel outputs y", "Ramachandran JS (floor)"): f"{rama['js']:.3f} ({rama['js_floor']:.3f})",
                          ("kernel outputs y", "αR %"): f"{values[f'y_aR_{key}']:.1f}",
                          ("its CG model", "Ramachandran JS (floor)"):
                              f"{model_rama['js']:.3f} ({model_rama['js_floor']:.3f})",
                          ("its CG model", "αR %"): f"{model_ar[name]:.1f}"}
    values["outputs_s"] = time.perf_counter() - t0  # the kernels' draws and their scores, for the page's text
    rows["reference data (MD)"] = {("kernel outputs y", "αR %"): f"{data_ar:.1f}", ("its CG model", "αR %"): f"{data_ar:.1f}"}
    worst = max(model_gap, key=model_gap.get)
    wk = key_of(worst)
    lost_in = ("between labels and model, not in the kernel" if max(y_gap.values()) < model_gap[worst] / 3 else
               "partly in the kernel's outputs already")
    broader = [f"{source} σ={sigma:g}" for sigma in ala2.NOISE_STDS for source in ("coupling", "cnf")
               if values[f"y_rama_{key_of(f'{source} σ={sigma:g}')}"] > values[f"y_rama_{key_of(f'noise σ={sigma:g}')}"]]
    values["outputs_result"] = (
        f"every kernel's outputs hold the data's αR population within {max(y_gap.values()):.1f} points, while the CG "
        f"models trained on them are off by up to {model_gap[worst]:.1f} ({worst}: {values[f'y_aR_{wk}']:.1f} % in its "
        f"labels' positions, {model_ar[worst]:.1f} % in its simulation; data {data_ar:.1f} %): the populations "
        f"are lost {lost_in}"
        + (f"; within the basins, the outputs of {' and '.join(broader)} are further from the data's surface than "
           "the noise kernel's at the same σ" if broader else ""))
    table = pd.DataFrame(rows).T.fillna("").style.set_caption(
        f"the Ramachandran surface in each kernel's outputs ({thousands(min(n_frames, ds.n_frames))} data frames, one "
        "draw each) and in the 64-replica simulation of the CG model trained on its labels")
    return table, values, outputs


def label_checks(ds, live: LiveLabels, kbt: float) -> tuple:
    """Integration-by-parts checks of the label sets: along every bond (z per bond) and along φ and ψ for
    the reference forces and 40 000 noise labels. Returns (bond table, dihedral table, values)."""
    checks = {"reference": integration_by_parts_check(ds.positions, ds.forces, kbt)}
    checks.update({name: integration_by_parts_check(y, live.labels[name], kbt, n_blocks=5)
                   for name, y in live.positions.items()})
    bonds = pd.DataFrame({name: {c["pair"]: c["z"] for c in rows} for name, rows in checks.items()}).T
    y_noise, f_noise, _ = ala2.labelled_set("noise", 0.05, ds, progress=False)
    dihedral = {"reference forces": dihedral_integration_by_parts_check(ds.positions[::3], ds.forces[::3], kbt),
                "noise σ=0.05": dihedral_integration_by_parts_check(y_noise, f_noise, kbt)}
    errors = {name: pd.DataFrame(rows)["block error"] for name, rows in dihedral.items()}
    values = {"ibp_z_max": float(bonds.abs().to_numpy().max()),
              "dihedral_error_ratio": float((errors["reference forces"] / errors["noise σ=0.05"]).mean())}
    dih = pd.concat({name: pd.DataFrame(rows).set_index("function")[["<F·∇h>", "block error", "z"]]
                     for name, rows in dihedral.items()}, axis=1)
    return (bonds.style.format("{:+.2f}").set_caption("z of the integration-by-parts identity per bond"),
            dih.style.format("{:+.3f}").set_caption("along the dihedrals: ⟨F·∇h⟩ = −k_BT⟨Δh⟩"), values)


SEED_COLUMNS = ["αL (φ > 0) %", "αR %", "β / PII %", "JS ramachandran", "mean JS bonds", "mean JS angles"]


def seed_spread(seeds: pd.DataFrame, names: list[str] | None = None) -> tuple:
    """Mean ± standard deviation over training seeds of every model, as (Styler, spread DataFrame, values)."""
    seeds = seeds if names is None else seeds[seeds.model.isin(names)]
    spread = seeds.groupby("model", sort=False)[SEED_COLUMNS].agg(["mean", "std"])
    table = mean_sd_table(seeds, {c: 1 if c.endswith("%") else 4 for c in SEED_COLUMNS})  # percentages, JS values
    values = {"n_seeds": int(table["seeds"].min()), "n_seeds_max": int(table["seeds"].max()),
              "aR_sd_min": float(spread["αR %"]["std"].min()), "aR_sd_max": float(spread["αR %"]["std"].max()),
              "n_spread_models": int(spread["αR %"]["std"].notna().sum())}
    spread_models = [n for n in spread.index if np.isfinite(spread.loc[n, ("αR %", "std")])]
    if len(spread_models) == 1:
        (name,) = spread_models
        values["seed_result"] = (
            f"only {display_name(name)} has replicates yet: over its {int(table['seeds'].max())} training seeds αR "
            f"spreads by {values['aR_sd_max']:.1f} percentage points and the Ramachandran JS by "
            f"{spread.loc[name, ('JS ramachandran', 'std')]:.3f} (standard deviations)")
    elif spread_models:
        values["seed_result"] = (
            f"over {values['n_seeds']} to {values['n_seeds_max']} training seeds per model, αR spreads by "
            f"{values['aR_sd_min']:.0f} to {values['aR_sd_max']:.0f} percentage points (standard deviation)")
    else:
        values["seed_result"] = ("no replicate with another seed is recorded for the current weights of any model "
                                 "yet, so the plot shows seed 0 alone and the spread over seeds is not measured")
    main = [n for n in spread_models if n in ala2.cg_model_names()]  # rank only models whose spread is measured
    reference = ala2.cg_name("reference")
    for column, short in (("JS ramachandran", "rama"), ("mean JS bonds", "bonds"), ("mean JS angles", "angles")):
        if reference in main and len(main) >= 2:
            best = min(main, key=lambda n: spread.loc[n, (column, "mean")])
            gap = spread.loc[reference, (column, "mean")] - spread.loc[best, (column, "mean")]
            values[f"seed_best_{short}"] = display_name(best)
            values[f"ref_within_sd_{short}"] = ("is" if gap <= spread.loc[reference, (column, "std")] else "is not")
    return table.style.set_caption("mean ± standard deviation over training seeds"), spread, values


def ensemble_sentence(registry: dict, spread: pd.DataFrame, long: dict | None = None) -> str:
    """What averaging fits buys the basin balance: the αR population and Ramachandran JS of the reference-forces
    ensemble (:data:`ala2.ENSEMBLE_REFERENCE`) against the single fits' mean ± standard deviation over seeds
    (``spread``: :func:`seed_spread`'s), then its 1 ns populations against the data's (``long``:
    :func:`pretrained.long_runs`, read when None), or the commands still to run, as plain text for a glue."""
    name, size = ala2.ENSEMBLE_REFERENCE, ala2.ENSEMBLE_SIZE
    if name not in registry:
        return (f"Whether averaging fits pins the balance is measured by opforce pretrain {name}: the mean energy of "
                f"{size} reference-forces networks fitted from different seeds (not trained yet)")
    m = registry[name]["metrics"]
    text = (f"The mean energy of {size} reference-forces networks fitted from different seeds ({name}) holds αR "
            f"{100 * m['populations']['αR']['mean']:.1f} % (data {100 * data_populations()['αR']['mean']:.1f} %) "
            f"with Ramachandran JS {m['js']['ramachandran']['js']:.3f}")
    single = ala2.cg_name("reference")
    if single in spread.index and np.isfinite(spread.loc[single, ("αR %", "std")]):
        text += (f", against the single fits' αR {spread.loc[single, ('αR %', 'mean')]:.1f} ± "
                 f"{spread.loc[single, ('αR %', 'std')]:.1f} % and JS {spread.loc[single, ('JS ramachandran', 'mean')]:.3f} "
                 "over seeds")
    run = (pretrained.long_runs(registry=registry) if long is None else long).get(name, {}).get("1")
    if run is None:
        return text + f"; its 1 ns run is not recorded yet (opforce long-run {name} --ns 1)"
    return text + ". " + long_populations_sentence(run["populations"], data_populations(), "the ensemble's")


def exchange_table(sims: dict) -> tuple:
    """Basin exchange of every 100 ps simulation (:func:`ala2.basin_exchange`), as (Styler, values)."""
    exchange = pd.DataFrame({name: ala2.basin_exchange(frames) for name, frames in sims.items()}).T
    values = {"arb_changes_min": float(exchange["αR ↔ β changes per replica"].min()),
              "al_entries_ref": int(exchange.loc["reference forces", "αL entries"]),
              "al_starts_ref": int(exchange.loc["reference forces", "starting in αL"]),
              "al_starts_expected": 64 * data_populations()["αL (φ > 0)"]["mean"]}
    values["al_result"] = al_result(values)
    for sigma in ala2.NOISE_STDS:
        names = [n for n in exchange.index if n.endswith(f"={sigma:g}")]
        key = f"{sigma:g}".replace(".", "")
        values[f"al_entries_min_{key}"] = int(exchange.loc[names, "αL entries"].min())
        values[f"al_entries_max_{key}"] = int(exchange.loc[names, "αL entries"].max())
    fmt = {c: "{:.1f}" for c in exchange.columns if "%" in c or "per replica" in c}
    fmt.update({c: "{:.0f}" for c in exchange.columns if c not in fmt})
    return exchange.style.format(fmt).set_caption("basin exchange in 100 ps per replica"), values


LONG_RUN_MODELS = {"ala2-cg-reference": "ref", ala2.LONG_REFERENCE: "ref24k", ala2.ENSEMBLE_REFERENCE: "ensemble",
                   ala2.CHIRAL_REFERENCE: "chiral", "ala2-cg-noise-0.05": "noise005",
                   "ala2-cg-coupling-0.05": "coupling005", "ala2-cg-cnf-0.05": "cnf005"}
LONG_RUN_FIELDS = ("aL", "aLerr", "aR", "entries", "exits", "first", "second", "drift", "versus", "ratio")


def long_run_report() -> tuple:
    """The recorded 1 ns runs of the registered weights (and the chirality-aware model's 2 ns run), as
    (Styler, values); a model without a run for its current weights reads "(not run)"."""
    registry = pretrained.read_registry()
    long, data = pretrained.long_runs(registry=registry), data_populations()
    rows, values, run_keys = {}, {}, []
    for name, key in LONG_RUN_MODELS.items():
        run = long.get(name, {}).get("1")
        text = dict.fromkeys(LONG_RUN_FIELDS, "(not run)")
        if run is not None:
            rows[display_name(name)], text = ala2.long_run_summary(run, data["αL (φ > 0)"])
            run_keys.append(key)
        values.update({f"long_{f}_{key}": v for f, v in text.items()})
    twice = long.get(ala2.CHIRAL_REFERENCE, {}).get("2")
    text = ala2.long_run_summary(twice, data["αL (φ > 0)"])[1] if twice else dict.fromkeys(LONG_RUN_FIELDS, "(not run)")
    values.update({f"long2_{f}_chiral": text[f] for f in ("aL", "aLerr", "aR", "first", "second", "drift")})
    rows["reference data (MD)"] = {f"{b} %": _pm(100 * p["mean"], 100 * p["block_error"]) for b, p in data.items()}
    values["long_aL_data"] = f"{100 * data['αL (φ > 0)']['mean']:.1f}"
    kernels = [k for k in ("noise005", "coupling005", "cnf005") if k in run_keys]
    matched = sum(values[f"long_versus_{k}"] == "matches" for k in kernels)
    values["long_kernel_verdict"] = (f"{matched} of the {len(kernels)} kernel models with a run match it within two "
                                     "block errors" + (f"; the reference-forces model {values['long_versus_ref']} it"
                                                       if "ref" in run_keys else ""))
    if "ref" in run_keys and kernels:
        ratios = [int(values[f"long_entries_{k}"]) / max(int(values["long_entries_ref"]), 1) for k in kernels]
        values["long_entries_ratio"] = f"{min(ratios):.0f} to {max(ratios):.0f}"
        values["long_result"] = (f"in 1 ns the kernel models' replicas cross the φ barrier "
                                 f"{values['long_entries_ratio']} times as often as the reference-forces model's; "
                                 f"{values['long_kernel_verdict']}")
    else:
        values["long_entries_ratio"] = "(not run)"
        names = [display_name(n) for n, k in LONG_RUN_MODELS.items() if k in run_keys]
        values["long_result"] = (f"1 ns runs are recorded for {len(names)} of the {len(LONG_RUN_MODELS)} models' current "
                                 f"weights{' (' + ', '.join(names) + ')' if names else ''}; the others read “(not run)” "
                                 "until the command below repeats them for their weights")
    values["long_detail"] = _long_detail(values, run_keys)
    values["long_ref_sentence"] = (long_populations_sentence(long[ala2.cg_name("reference")]["1"]["populations"], data)
                                   if "ref" in run_keys else
                                   "The reference-forces model's 1 ns run is not recorded for its current weights")
    values["long_ref_sentence"] += ". " + longer_budget_sentence(registry, long, data)
    table = pd.DataFrame(rows).T.fillna("").style.set_caption("64 replicas × 1 ns from the registered models' starts")
    return table, values


def longer_budget_sentence(registry: dict, long: dict, data: dict) -> str:
    """What twice the force-matching steps bought the reference-forces model (:data:`ala2.LONG_REFERENCE`):
    its best step and Ramachandran JS against the registered reference's, and its 1 ns populations
    (:func:`long_populations_sentence`), or which command is still to run, as plain text for a glue (``registry``: the models registry,
    ``long``: :func:`pretrained.long_runs`, ``data``: :func:`data_populations`)."""
    name, steps = ala2.LONG_REFERENCE, thousands(ala2.LONG_FM.n_steps)
    if name not in registry:
        return f"The reference-forces model with {steps} force-matching steps is not trained yet (opforce pretrain {name})"
    mine, ref = (registry[n]["metrics"] for n in (name, ala2.cg_name("reference")))
    text = (f"With up to {steps} force-matching steps ({name}) the fit stopped at step "
            f"{thousands(mine['stopped_step'])} "
            f"(best step {thousands(mine['best_step'])}, held-out force error {mine['best_val_force_mse']:.1f} "
            f"against {ref['best_val_force_mse']:.1f} (kcal/mol/Å)² at "
            f"{thousands(ala2.CG_SETTINGS.force_matching.n_steps)}); its Ramachandran JS is "
            f"{mine['js']['ramachandran']['js']:.3f}, against {ref['js']['ramachandran']['js']:.3f}")
    run = long.get(name, {}).get("1")
    if run is None:
        return text + f"; its 1 ns run is not recorded yet (opforce long-run {name} --ns 1)"
    text += "; " + long_populations_sentence(run["populations"], data, "its").removeprefix("In 1 ns runs ")
    base = long.get(ala2.cg_name("reference"), {}).get("1")
    if base is None:
        return text
    gap = 100 * abs(run["populations"]["αR"]["mean"] - base["populations"]["αR"]["mean"])
    err = 100 * np.hypot(run["populations"]["αR"]["block_error"], base["populations"]["αR"]["block_error"])
    apart = abs(mine["best_val_force_mse"] - ref["best_val_force_mse"])
    return text + (f". Two fits of the same labels with held-out force errors {apart:.2f} (kcal/mol/Å)² apart hold "
                   f"αR populations {gap:.1f} ± {err:.1f} points apart in 1 ns: at this label count the force-matching "
                   "loss does not pin the balance of the basins, the fit's landing place does")


def long_populations_sentence(run: dict, data: dict, whose: str = "the reference-forces model's") -> str:
    """A model's αR and β in a 1 ns run against the data's, each judged within two combined block errors or
    not (``run``, ``data``: basin → {"mean", "block_error"}, fractions; ``whose``: the model, as the
    sentence names it)."""
    parts, verdicts = [], []
    for basin, short in (("αR", "αR"), ("β / PII", "β")):
        m, e = 100 * run[basin]["mean"], 100 * run[basin]["block_error"]
        dm, de = 100 * data[basin]["mean"], 100 * data[basin]["block_error"]
        parts.append((f"{short} {m:.1f} ± {e:.1f} %", f"{dm:.1f} ± {de:.1f} %"))
        verdicts.append(f"{short} {'within' if abs(m - dm) <= 2 * np.hypot(e, de) else 'outside'}")
    return (f"In 1 ns runs {whose} {parts[0][0]} and {parts[1][0]} compare with the data's "
            f"{parts[0][1]} and {parts[1][1]}: {verdicts[0]}, {verdicts[1]} two combined block errors")


def _long_detail(values: dict, run_keys: list[str]) -> str:
    """The chapter's sentences on the recorded 1 ns runs, from :func:`long_run_report`'s values."""
    parts = []
    if "ref" in run_keys:
        parts.append(f"In 1 ns the reference-forces model's replicas entered αL {values['long_entries_ref']} times; "
                     f"its αL population, {values['long_aL_ref']} ± {values['long_aLerr_ref']} %, "
                     f"{values['long_versus_ref']} the data's {values['long_aL_data']} %.")
    kernels = [f"{label} {values[f'long_aL_{k}']} %" for k, label in
               (("noise005", "noise"), ("coupling005", "coupling flow"), ("cnf005", "CNF")) if k in run_keys]
    if kernels:
        parts.append(f"The kernel models at σ = 0.05 Å: {', '.join(kernels)} in αL.")
    if "chiral" in run_keys:
        parts.append(f"The chirality-aware reference model drains into αL: {values['long_first_chiral']} % of the first "
                     f"half's frames, then {values['long_second_chiral']} %"
                     + (f" (2 ns: {values['long2_second_chiral']} % of the second half)."
                        if values["long2_second_chiral"] != "(not run)" else "."))
    return " ".join(parts)


def mirror_report(reference, ds, reference_model, chiral_model, kbt: float, stride: int = 4) -> tuple:
    """The chiral part A = ½[F(φ, ψ) − F(−φ, −ψ)] of the data and of both reference-forces models, in the
    bins where all three have a value; returns (grids, edges, values) with the weighted RMS differences."""
    from ..evaluation import mirror_asymmetry, mirror_energy_asymmetry
    from ..systems.alanine_dipeptide import RAMACHANDRAN

    edges, p = reference.edges["ramachandran"], reference.probabilities["ramachandran"]
    frames = ds.positions[::stride]
    grids = {"reference data (MD)": mirror_asymmetry(p, kbt),
             "reference forces, distances": mirror_energy_asymmetry(reference_model, frames, edges, RAMACHANDRAN),
             "reference forces, + dihedrals": mirror_energy_asymmetry(chiral_model, frames, edges, RAMACHANDRAN)}
    both = np.all([np.isfinite(g) for g in grids.values()], axis=0)
    weight = (p + p[::-1, ::-1])[both]
    rms = {name: float(np.sqrt(np.sum(weight * (g - grids["reference data (MD)"])[both] ** 2) / weight.sum()))
           for name, g in list(grids.items())[1:]}
    values = {"chiral_rms_dist": rms["reference forces, distances"], "chiral_rms_dih": rms["reference forces, + dihedrals"]}
    values["chiral_verdict"] = "better" if values["chiral_rms_dih"] < values["chiral_rms_dist"] else "worse"
    return {name: np.where(both, g, np.nan) for name, g in grids.items()}, edges[0], values


def check_result(worst: pd.Series, at_outputs: pd.Series | None = None) -> str:
    """The dihedral-identity verdicts from each model's largest |z| at the data's frames (index: the models' display
    names) and, for the kernel models in ``at_outputs``, at their own kernel's outputs y."""
    kernels = worst.drop(["reference forces", "reference forces, + dihedrals"])

    def verdict(z):
        return f"{'passes' if z <= Z_PASS else 'fails'} it (largest |z| {z:.1f})"

    text = (f"the distance-only reference-forces model {verdict(worst['reference forces'])}, the chirality-aware one "
            f"{verdict(worst['reference forces, + dihedrals'])}, {int((kernels > Z_PASS).sum())} of the {len(kernels)} "
            f"kernel models fail it (|z| > {Z_PASS:g}; the smallest largest |z| {kernels.min():.1f})")
    if at_outputs is not None and len(at_outputs):
        text += (f"; at their own kernel's outputs y, the density their labels describe, {int((at_outputs > Z_PASS).sum())}"
                 f" of {len(at_outputs)} fail it (largest |z| {at_outputs.min():.1f} to {at_outputs.max():.1f})")
    return text + ", and a pass does not certify populations"


def al_result(values: dict) -> str:
    """What a 100 ps run measures of αL, from :func:`exchange_table`'s counts."""
    entries, starts = values["al_entries_ref"], values["al_starts_ref"]
    return (f"between αR and β every replica changes basin at least {values['arb_changes_min']:.0f} times, while the "
            f"reference-forces model's replicas entered αL {entries} times with {starts} starting there"
            + (": its 100 ps αL population is mostly the share of its starts that lay there" if entries <= starts else
               ": its 100 ps αL population is measured, if roughly"))


def model_checks(models: dict, ds, kbt: float, outputs: dict | None = None) -> tuple:
    """:func:`ala2.model_dihedral_checks` of every model at every third training frame and, for the models named in
    ``outputs`` ({display name: its kernel's outputs y}, :func:`kernel_outputs_report`), also at its own target's
    frames y (column "largest |z| at its y"), as (Styler, values)."""
    frames = ds.positions[::3]
    checks = ala2.model_dihedral_checks(models, frames, kbt)
    worst = checks.abs().max(axis=1)
    at_outputs = pd.Series({name: float(ala2.model_dihedral_checks({name: models[name]}, y, kbt)
                                        .abs().max(axis=1).iloc[0]) for name, y in (outputs or {}).items()},
                           dtype=float)
    checks["largest |z| at its y"] = at_outputs
    values = {"check_z_ref": float(worst["reference forces"]),
              "check_z_chiral": float(worst["reference forces, + dihedrals"]),
              "check_z_min_others": float(worst.drop(["reference forces", "reference forces, + dihedrals"]).min())}
    values["check_result"] = check_result(worst, at_outputs)
    n_y = {len(y) for y in (outputs or {}).values()}
    caption = (f"z of ⟨F·∇h⟩ + k_BT⟨Δh⟩ at {thousands(len(frames))} of the data's frames"
               + (f" (and the largest |z| at {thousands(max(n_y))} of the model's own kernel outputs y)" if n_y else ""))
    return checks.style.format("{:+.1f}", na_rep="").set_caption(caption), values
