"""Chapter 3's page: each table the chapter shows and each number its text cites, one call each.

As for chapter 2 (:mod:`.ala2_page`): tables are pandas Stylers formatted for people, the numbers the
prose quotes come back as ``{key: value}`` dicts the notebook glues. Everything is computed from the
shipped data and its folding report, the registered models and their saved simulations, or live labels.
The chapter's models are published as not required, so every function works with the models that are
registered and names the others with the command that builds them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .. import pretrained
from ..cg.pipeline import replica_starts
from ..data.copies import start_structures
from ..data.molecules import chignolin
from ..observables import chain_observables
from ..evaluation import unvisited_fraction
from ..labels import seeded_subset
from ..storage import read_json
from ..systems import cln025 as system
from ..units import kbt as thermal_energy
from . import cln025
from .page import FLOW_KERNELS, LOCAL_GATE, display_name, key_of, mean_js, mean_sd_table, met, pm, thousands

LOCAL = [n for n in chain_observables(system.SYSTEM.n_beads) if n.split()[0] in ("bond", "angle")]
ANGLES = [n for n in LOCAL if n.startswith("angle")]
SHOWN_LOCAL = ["bond 0-1", "bond 4-5", "bond 8-9", "angle 1-2-3", "angle 5-6-7", "angle 7-8-9"]
TICA_GATE = 1.5  # a flow-kernel model's TICA JS over the reference-forces model's
FOLDED_GATE = 10.0  # percentage points: a flow-kernel model's folded fraction from the reference-forces model's
UNITS = {"rmsd folded": "Å", "native contacts Q": "fraction"}
ATOMISTIC = "mapped atomistic forces"  # the data's own forces, the reference-forces models' labels


# ------------------------------------------------------------------------------------- the system
def folded_molecule():
    """The all-atom CLN025 (:func:`~opforce_tutorial.data.molecules.chignolin`) at the saved frame of the
    long extended-start run closest to the folded reference by Cα-RMSD: the hairpin the data fold into."""
    mol = chignolin()
    xyz, _ = start_structures(system.DATA_DIR / "runs" / "cln025_340K_ext_s0", 1, near=system.folded_reference(),
                              bead_atoms=mol.bead_atoms)
    import openmm as mm
    import openmm.unit as u

    return replace(mol, positions=[mm.Vec3(*p) for p in xyz[0].tolist()] * u.nanometer)


def folded_and_unfolded(ds) -> dict:
    """The data's frame nearest the folded reference and one frame at the data's median RMSD among
    the unfolded frames, {"folded": (10, 3), "unfolded": (10, 3)} in Å."""
    d = system.rmsd_to_folded(ds.positions)
    unfolded = np.flatnonzero(d >= system.UNFOLDED_ABOVE)
    median = unfolded[np.argsort(d[unfolded])[len(unfolded) // 2]]
    return {"folded": ds.positions[int(np.argmin(d))], "unfolded": ds.positions[int(median)]}


# ------------------------------------------------------------------------------------------- data
def folding_report() -> dict:
    return read_json(system.DATA_DIR / "cln025_folding.json")


def data_values(ds) -> dict:
    """The data's numbers the chapter quotes: size, transitions, the MSM's folded fraction (%, block
    bootstrap error) and implied timescale at its lag, and the folding free energy in kcal/mol."""
    report = folding_report()
    msm = report["msm"]
    folded = msm["folded_fraction"]
    return {"data_ns": report["total_ns"], "data_trajs": report["trajectories"], "data_frames": ds.n_frames,
            "foldings": report["foldings"], "unfoldings": report["unfoldings"],
            "folded_pct": 100 * folded, "folded_err": 100 * msm["folded_fraction_bootstrap_std"],
            "folded_raw_pct": 100 * report["folded_fraction_raw"], "lag_ns": msm["lag_ps"] / 1000,
            "its_ns": msm["implied_timescales_ns"][str(msm["lag_frames"])][0],
            "dg_fold": float(-thermal_energy(ds.temperature) * np.log(folded / (1 - folded))),
            "resample_folded_pct": 100 * float(system.states(ds.positions)["folded"].mean())}


def folded_frames(ds):
    """The frames of the (resampled) data in the folded state, RMSD ≤ 1 Å."""
    return ds.positions[system.states(ds.positions)["folded"]]


def data_values_of_reference(reference) -> dict:
    """The weighted data's mean Q (from its saved Q histogram) and folded fraction (%, MSM ± block bootstrap)."""
    edges, p = reference.edges[system.Q.name][0], reference.probabilities[system.Q.name]
    msm = folding_report()["msm"]
    return {"mean_q": float(np.sum(0.5 * (edges[1:] + edges[:-1]) * p) / p.sum()),
            "folded": pm(100 * msm["folded_fraction"], 100 * msm["folded_fraction_bootstrap_std"])}


def tica_marker() -> tuple[float, float]:
    """The folded reference's position in the TICA plane."""
    return tuple(system.tica_projection(system.folded_reference()[None])[0])


# --------------------------------------------------------------------------------------------- models
def model_status() -> pd.io.formats.style.Styler:
    """Every model of the chapter: registered (device and wall time) or the command that builds it."""
    registry = pretrained.read_registry()
    other = set(cln025.STUDY.models_with_other_settings(registry))
    rows = {}
    for name, spec in cln025.recipes().items():
        entry = registry.get(name)
        status = ("registered" if name not in other else
                  f"registered with other settings than its recipe's: {pretrained.rebuild_command(name)}")
        rows[name] = ({"status": status, "device": entry["device"], "wall time (min)": f"{entry['wall_time_s'] / 60:.0f}"}
                      if entry else {"status": f"not built yet: {pretrained.rebuild_command(name)}", "device": "",
                                     "wall time (min)": ""})
    return pd.DataFrame(rows).T.style.set_caption("the chapter's flows, CG models and prior-only baseline")


def registered_cg_models() -> list[str]:
    registry = pretrained.read_registry()
    return [name for name in cln025.cg_model_names() if name in registry]


def registered_flows() -> list[tuple[str, float]]:
    registry = pretrained.read_registry()
    return [(s, g) for g in cln025.NOISE_STDS for s in FLOW_KERNELS if cln025.kernel_name(s, g) in registry]


# ----------------------------------------------------------------------------------------- comparison
def comparison(sims: dict, reference, prior_trajectory) -> tuple:
    """Scores of every registered CG model's saved simulation and of the prior alone, as
    (scores, (local table, global table), values). Local: mean JS over bonds, angles, dihedrals and pair
    distances, the flow-kernel models' ratios to the noise-kernel model at their σ, and the % of frames with
    an angle where the data never go (:func:`~opforce_tutorial.evaluation.unvisited_fraction`); global: the JS of the
    TICA surface, its ratio to the reference-forces model's, the JS of the RMSD and Q profiles, the mean Q
    and the folded fraction (%, block errors over replicas). The last row of each table is the floor (the
    JS of as many independent data samples) or the data's own values."""
    scores = {name: cln025.score(frames, reference) for name, frames in sims.items()}
    scores["prior only"] = cln025.score(prior_trajectory, reference)
    q = {name: float(system.Q.values(frames).mean()) for name, frames in sims.items()}
    q["prior only"] = float(system.Q.values(prior_trajectory).mean())
    local, global_, values = {}, {}, {}
    tica_ref = scores["reference forces"]["js"]["tica"]["js"] if "reference forces" in scores else np.nan
    kinds = (("bond", "bonds"), ("angle", "angles"), ("dihedral", "dihedrals"), ("distance", "pair distances"))
    for name, s in scores.items():
        js, key = s["js"], key_of(name)
        source, _, sigma = name.partition(" σ=")
        row = {}
        for kind, title in kinds:
            values[f"{kind}_{key}"] = mean_js(js, kind)
            row[(title, "JS")] = f"{values[f'{kind}_{key}']:.3f}"
            if kind in ("bond", "angle"):
                noise = f"noise σ={sigma}"
                if source in FLOW_KERNELS and noise in scores:
                    values[f"cg_{kind}_{key}"] = values[f"{kind}_{key}"] / mean_js(scores[noise]["js"], kind)
                    row[(title, "÷ noise")] = f"{values[f'cg_{kind}_{key}']:.2f}"
                else:
                    row[(title, "÷ noise")] = ""
        frames = sims.get(name, prior_trajectory)
        values[f"unvisited_{key}"] = 100 * unvisited_fraction(frames, reference, ANGLES)
        row[("angles", "% where the data never go")] = f"{values[f'unvisited_{key}']:.1f}"
        local[name] = row
        values[f"tica_{key}"] = js["tica"]["js"]
        folded = s["populations"]["folded"]
        values[f"folded_{key}"], values[f"folded_err_{key}"] = 100 * folded["mean"], 100 * folded["block_error"]
        global_[name] = {("TICA", "JS"): f"{js['tica']['js']:.3f}", ("TICA", "÷ ref. forces"): f"{js['tica']['js'] / tica_ref:.2f}",
                         ("RMSD", "JS"): f"{js['rmsd folded']['js']:.3f}", ("Q", "JS"): f"{js['native contacts Q']['js']:.3f}",
                         ("Q", "mean"): f"{q[name]:.2f}", ("folded", "%"): pm(100 * folded["mean"], 100 * folded["block_error"])}
    values.update(_verdicts(values, list(sims)))
    unvisited = [values[f"unvisited_{key_of(name)}"] for name in sims]
    values["unvisited_verdict"] = (
        f"the models spend {min(unvisited):.1f} to {max(unvisited):.1f} % of their frames with a Cα angle where the "
        "data never go")
    first = next(iter(scores.values()))["js"]  # every simulation saves as many frames: one floor per observable
    local["floor"] = {(title, "JS"): f"{np.mean([v['js_floor'] for k, v in first.items() if k.startswith(kind)]):.3f}"
                      for kind, title in kinds}
    data = data_values_of_reference(reference)
    global_["reference data (MD)"] = {("TICA", "JS"): f"floor {first['tica']['js_floor']:.3f}",
                                      ("Q", "mean"): f"{data['mean_q']:.2f}", ("folded", "%"): data["folded"]}
    tables = []
    for rows, caption in ((local, "local structure of the CG simulations (64 replicas × 100 ps) against the "
                                  "MSM-weighted data: mean JS over bonds, angles, dihedrals and pair distances "
                                  "|i − j| ≥ 3; flow-kernel models over the noise-kernel model at the same σ"),
                          (global_, "global structure: JS of the TICA surface (and over the reference-forces "
                                    "model's), of the RMSD to the folded reference and of Q; mean Q; folded fraction "
                                    "(block errors over replicas; the data's: the MSM estimate ± its block bootstrap)")):
        frame = pd.DataFrame(rows).T.fillna("")
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
        tables.append(frame.style.set_caption(caption))
    return scores, tuple(tables), values


def _verdicts(values: dict, models: list[str]) -> dict:
    """The gates of every registered flow-kernel model that has its noise-kernel partner, as text."""
    out, local, bonds, angles, tica, folded, judged = {}, [], [], [], [], [], []
    for name in models:
        source, _, _ = name.partition(" σ=")
        key = key_of(name)
        if source not in FLOW_KERNELS or f"cg_bond_{key}" not in values:
            continue
        judged.append(name)
        bonds += [name] if values[f"cg_bond_{key}"] <= LOCAL_GATE else []
        angles += [name] if values[f"cg_angle_{key}"] <= LOCAL_GATE else []
        local += [name] if name in bonds and name in angles else []
        if "tica_ref" in values and values[f"tica_{key}"] <= TICA_GATE * values["tica_ref"]:
            tica.append(name)
        if "folded_ref" in values and abs(values[f"folded_{key}"] - values["folded_ref"]) <= FOLDED_GATE:
            folded.append(name)
    for short, passed in (("local", local), ("bond", bonds), ("angle", angles), ("tica", tica), ("folded", folded)):
        out[f"{short}_pass"] = (f"{len(passed)} of {len(judged)}" + (f" ({', '.join(passed)})" if passed else "")
                                if judged else "none of the flow-kernel models (none is built yet)")
    out["n_flow_models"] = len(judged)
    controls = []
    for sigma in cln025.NOISE_STDS:  # the exact labels' own ratios: what the local gate can ask at all
        noise = key_of(f"noise σ={sigma:g}")
        if f"bond_{noise}" in values and "bond_ref" in values:
            out[f"ref_bond_{noise}"] = values["bond_ref"] / values[f"bond_{noise}"]
            out[f"ref_angle_{noise}"] = values["angle_ref"] / values[f"angle_{noise}"]
            controls.append(f"{out[f'ref_angle_{noise}']:.2f} times the noise-kernel model's at σ = {sigma:g} Å")
    unfair = [g for g in cln025.NOISE_STDS if out.get(f"ref_angle_{key_of(f'noise σ={g:g}')}", 0.0) > LOCAL_GATE]
    out["angle_gate_verdict"] = (
        "at " + " and ".join(f"σ = {g:g} Å" for g in unfair) + " that is above 1/3: the angle half of the gate asks a "
        "kernel for more than the exact labels deliver at this budget (the Cα angles are broad, and the noise barely "
        "widens them: see the labelled positions' angle JS above)" if unfair else
        "the exact labels meet the gate, so it is a fair test of the kernels")
    out["angle_control"] = (f"the reference-forces model's own angle JS is {' and '.join(controls)}" if controls
                            else "no noise-kernel model is built yet")
    out["noise_verdict"] = _noise_verdict(values)
    best = min((m for m in models), key=lambda m: values[f"tica_{key_of(m)}"])
    out["best_tica"], out["tica_best"] = best, values[f"tica_{key_of(best)}"]
    data = 100 * folding_report()["msm"]["folded_fraction"]
    closest = min(models, key=lambda m: abs(values[f"folded_{key_of(m)}"] - data))
    out["closest_folded"], out["closest_folded_pct"] = closest, values[f"folded_{key_of(closest)}"]
    return out


def _noise_verdict(values: dict) -> str:
    """What the noise-kernel models keep, against the reference-forces model, as one sentence."""
    keys = [f"noise{sigma:g}".replace(".", "") for sigma in cln025.NOISE_STDS]
    built = [(sigma, k) for sigma, k in zip(cln025.NOISE_STDS, keys) if f"bond_{k}" in values]
    if not built or "bond_ref" not in values:
        return "the noise-kernel models are not built yet"
    parts = [f"at σ = {sigma:g} Å mean bond JS {values[f'bond_{k}']:.3f} ({values[f'bond_{k}'] / values['bond_ref']:.0f} × "
             f"the reference-forces model's), TICA JS {values[f'tica_{k}']:.3f}, folded {values[f'folded_{k}']:.1f} %"
             for sigma, k in built]
    return "; ".join(parts)


def gate_summary(values: dict) -> pd.io.formats.style.Styler:
    """The chapter's gates, one row per flow-kernel model and σ: what is asked, what was measured."""
    rows = []
    for sigma in cln025.NOISE_STDS:
        for source in FLOW_KERNELS:
            name = f"{source} σ={sigma:g}"
            key = key_of(name)
            if source == FLOW_KERNELS[0] and f"ref_bond_{key_of(f'noise σ={sigma:g}')}" in values:
                noise = key_of(f"noise σ={sigma:g}")
                rows.append({"model": f"reference forces ÷ noise σ={sigma:g} (control)",
                             "bonds ÷ noise": f"{values[f'ref_bond_{noise}']:.2f}",
                             "angles ÷ noise": f"{values[f'ref_angle_{noise}']:.2f}"})
            if f"cg_bond_{key}" not in values:
                rows.append({"model": name, "local (≤ 1/3)": "not built yet"})
                continue
            bond, angle = values[f"cg_bond_{key}"], values[f"cg_angle_{key}"]
            tica = values[f"tica_{key}"] / values["tica_ref"]
            gap = values[f"folded_{key}"] - values["folded_ref"]
            rows.append({"model": name, "bonds ÷ noise": f"{bond:.2f}", "angles ÷ noise": f"{angle:.2f}",
                         "local (≤ 1/3)": met(max(bond, angle) <= LOCAL_GATE),
                         "TICA ÷ ref.": f"{tica:.2f}", "TICA (≤ 1.5)": met(tica <= TICA_GATE),
                         "folded − ref. (pp)": f"{gap:+.1f}",
                         "folded (± 10 pp)": met(abs(gap) <= FOLDED_GATE)})
    table = pd.DataFrame(rows).set_index("model").fillna("")
    table.index.name = None
    return table.style.set_caption("the chapter's gates: bonds and angles ≤ 1/3 of the noise-kernel model's JS at "
                                   "the same σ; TICA JS ≤ 1.5 × the reference-forces model's; folded fraction within "
                                   "± 10 percentage points of its")


def transitions_table(sims: dict, ds) -> tuple:
    """Foldings and unfoldings of every saved simulation (:func:`~opforce_tutorial.systems.cln025.folding_transitions`),
    with the folded replicas among the starts (the registered simulations' seed-0 starts), as (Styler, values)."""
    starts = replica_starts(ds.positions, cln025.STUDY.cg)
    folded_starts = int(system.states(starts)["folded"].sum())
    rows = {name: {"folded starts": folded_starts, **system.folding_transitions(frames)} for name, frames in sims.items()}
    table = pd.DataFrame(rows).T
    both = table[(table["foldings"] > 0) & (table["unfoldings"] > 0)].index
    values = {"folded_starts": folded_starts, "min_events": int((table["foldings"] + table["unfoldings"]).min()),
              "max_events": int((table["foldings"] + table["unfoldings"]).max()),
              "transitions_verdict": ("every model's replicas fold and unfold, so its folded fraction is measured from "
                                      "crossings, not only inherited from its starts" if len(both) == len(table) else
                                      f"{len(table) - len(both)} of {len(table)} models do not both fold and unfold "
                                      "in 100 ps: their folded fractions are inherited from the starts")}
    values.update({f"events_{key_of(n)}": int(r["foldings"] + r["unfoldings"]) for n, r in rows.items()})
    fmt = {c: "{:.1f}" for c in table.columns if "%" in c}
    fmt.update({c: "{:.0f}" for c in table.columns if c not in fmt})
    return table.style.format(fmt).set_caption("folding events in 64 replicas × 100 ps (core sets ≤ 1 Å and ≥ 3 Å "
                                               "of Cα-RMSD)"), values


def free_energy_gap(folded_pct: float, data_pct: float, kbt: float) -> float:
    """How far (kcal/mol) a folded fraction's folding free energy −k_BT ln(p/(1 − p)) is from the data's."""
    def dg(pct):
        p = min(max(pct / 100, 1e-6), 1 - 1e-6)
        return -kbt * np.log(p / (1 - p))

    return float(abs(dg(folded_pct) - dg(data_pct)))


def long_budget_verdict(reference) -> str:
    """What 4 × the force-matching steps bought the reference-forces model, as a sentence (or how to build it)."""
    name = cln025.LONG_REFERENCE
    registry = pretrained.read_registry()
    if name not in registry:
        return (f"what four times the steps buys is measured by {pretrained.rebuild_command(name)} "
                "(not built yet)")
    long, base = registry[name], registry[cln025.cg_name("reference")]
    steps = (f"early stopping ended the fit at step {thousands(long['metrics']['stopped_step'])} with its best step "
             f"{thousands(long['metrics']['best_step'])}")
    if long["sha256"] == base["sha256"]:
        return (f"with four times the steps ({name}) {steps}, the {thousands(cln025.STUDY.cg.force_matching.n_steps)}"
                "-step fit's: the same weights, so the force-matching budget is not what the fold lacks")
    s = cln025.score(pretrained.samples(name), reference)
    folded = s["populations"]["folded"]
    return (f"with four times the steps ({name}) {steps}, and the model is folded "
            f"{pm(100 * folded['mean'], 100 * folded['block_error'])} % (TICA JS {s['js']['tica']['js']:.3f})")


# ------------------------------------------------------------------------------------- going further
SEED_COLUMNS = {"folded %": 1, "TICA JS": 3, "mean JS bonds": 4, "mean JS angles": 4}  # column: digits shown


def seed_spread(registry: dict | None = None, replicates: dict | None = None) -> tuple:
    """Folded fraction, TICA JS and mean bond and angle JS of every registered CG model over its training seeds
    (seed 0 the registered model, others its ``opforce replicate`` runs), as (Styler of mean ± standard deviation,
    values: ``folded_sd_<key>`` per model with replicates, and the one-line ``seed_result``)."""
    runs = pretrained.metrics_by_seed(cln025.cg_model_names(), registry, replicates)
    seeds = pd.DataFrame([{"model": name, "folded %": 100 * m["populations"]["folded"]["mean"],
                           "TICA JS": m["js"]["tica"]["js"], "mean JS bonds": mean_js(m["js"], "bond"),
                           "mean JS angles": mean_js(m["js"], "angle")}
                          for name, by_seed in runs.items() for m in by_seed.values()])
    table = mean_sd_table(seeds, SEED_COLUMNS)
    folded_sd = seeds.groupby("model", sort=False)["folded %"].std().dropna()
    spread = {display_name(name): float(sd) for name, sd in folded_sd.items()}
    values = {f"folded_sd_{key_of(shown)}": sd for shown, sd in spread.items()}
    if spread:
        widest = max(spread, key=spread.get)
        who = (f"only {widest} has replicates: over its {table.loc[widest, 'seeds']} training seeds the folded fraction "
               f"spreads by {spread[widest]:.1f} percentage points" if len(spread) == 1 else
               f"{len(spread)} of {len(runs)} models have replicates; over their training seeds the folded fraction "
               f"spreads by {min(spread.values()):.1f} to {spread[widest]:.1f} percentage points")
        values["seed_result"] = (
            f"{who} (one standard deviation): the folded-fraction gate's ± {FOLDED_GATE:.0f} points is "
            f"{FOLDED_GATE / spread[widest]:.0f} such deviations" if spread[widest] > 0 else
            "the replicates' folded fractions agree exactly")
    else:
        values["seed_result"] = ("no model has a replicate with another training seed yet "
                                 f"({pretrained.replicate_command(cln025.cg_name('reference'), 1)}): the spread over "
                                 "seeds is not measured")
    return table.style.set_caption("mean ± standard deviation over training seeds (64 replicas × 100 ps each)"), values


def force_profiles(ds, models: dict, kbt: float, n_frames: int = 6_000, seed: int = 0) -> tuple:
    """The push along Q (:func:`~opforce_tutorial.evaluation.force_along`) of the mapped atomistic forces
    (:data:`ATOMISTIC`) and of every model's forces at the same ``n_frames`` data frames, as (profiles,
    values): per model, its mean push in the folded region Q ≥ 0.6 over the atomistic forces' there, and
    the z of the identity ⟨F·∇Q⟩ = −k_BT⟨ΔQ⟩ ("qz_atomistic" for the atomistic forces)."""
    from ..evaluation import force_along

    if ATOMISTIC in models:
        raise ValueError(f"{ATOMISTIC!r} names the data's forces; call the models otherwise")
    idx = seeded_subset(ds.n_frames, n_frames, seed)
    profiles = force_along(ds.positions[idx], {ATOMISTIC: ds.forces[idx], **models}, kbt,
                           system.native_contacts_q, np.linspace(0.0, 1.0, 11))
    high = profiles["centres"] >= 0.6
    weights = profiles["counts"][high]

    def push(name):
        return float(np.sum(profiles[name]["mean"][high] * weights) / weights.sum())

    atomistic = push(ATOMISTIC)
    err = float(np.sqrt(np.sum((profiles[ATOMISTIC]["stderr"][high] * weights) ** 2)) / weights.sum())
    values = {f"push_{key_of(name)}": push(name) / atomistic for name in models}
    values.update({f"qz_{key_of(name)}": profiles[name]["z"] for name in models})
    values.update({"qz_atomistic": profiles[ATOMISTIC]["z"], "push_rel_err": err / atomistic, "push_frames": len(idx)})
    weaker = [name for name in models if push(name) < atomistic - 2 * err]
    values["push_verdict"] = (f"{len(weaker)} of {len(models)} push towards the fold more weakly than the atomistic "
                              "forces, by more than two of their standard errors"
                              + (f" ({', '.join(weaker)})" if weaker else ""))
    return profiles, values


def label_noise_along_q(ds, live, n_frames: int = 2000, seed: int = 0) -> dict:
    """How noisy each label set is along the folding coordinate: the standard deviation of f · ∇Q per label
    (kcal/mol), for ``n_frames`` mapped atomistic forces at data frames and for each live label set at its
    positions y, and each kernel's ratio to the atomistic forces' ({"qnoise_<source><σ>": ratio,
    "qnoise_atomistic": sd}). Fewer labels suffice where it is smaller: a mean's standard error scales as
    sd / √n."""
    from ..evaluation import coordinate_derivatives

    idx = seeded_subset(ds.n_frames, n_frames, seed)
    sets = {"atomistic": (ds.positions[idx], ds.forces[idx])}
    sets |= {key_of(name): (live.positions[name], live.labels[name]) for name in live.positions}
    sd = {}
    for key, (y, f) in sets.items():
        _, grad, _ = coordinate_derivatives(y, system.native_contacts_q, laplacian=False)
        sd[key] = float(np.einsum("nbk,nbk->n", np.asarray(f, dtype=np.float64), grad).std())
    return {"qnoise_atomistic": sd["atomistic"], **{f"qnoise_{k}": v / sd["atomistic"] for k, v in sd.items()
                                                   if k != "atomistic"}}
