"""Chapter 2: alanine dipeptide, as a configuration of the study (:mod:`opforce_tutorial.study`), and the
chapter's own analyses (basin exchange, long runs, seed spread, dihedral checks).

Data: ``data/ala2.npz`` (5 backbone heavy atoms C N CA C N, 300 K, Å, kcal/mol/Å; see data/README.md).
Label sources, each at the noise levels :data:`NOISE_STDS` (standard deviations in Å): the reference
forces, the noise kernel, and the reverse kernel around a coupling flow (``ala2-coupling-<σ>``) or a
CNF (``ala2-cnf-<σ>``). Every kernel makes the same number of labels (:data:`LABELS`: 4 000 frames, 10
draws each); the reference takes every frame with its force (:data:`REFERENCE_LABELS`). Every source trains
the same CG model (:data:`CG_SETTINGS`) on the same validation split, simulated from the same data frames.
Sizes are CPU-sized; every trained object is a registered pretrained model, rebuilt by
``opforce pretrain <name>``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..analysis import count_transitions
from ..evaluation import dihedral_integration_by_parts_check, state_populations
from ..labels import LabelSettings
from ..study import CPU_CG, CPU_FLOWS, CPU_LABELS, OUTPUT_LABELS, CGVariant, Study
from ..systems.alanine_dipeptide import BASINS, SYSTEM, basins, ramachandran

#: The chapter's noise levels (Å). 0.05 Å is the paper's σ; the stiffest ala2 bonds fluctuate by about
#: 0.025 Å at 300 K, about the Cα–Cα bond fluctuation of the paper's chignolin, so 0.05 Å keeps the paper's
#: ratio of noise to bond width; 0.1 Å doubles it.
NOISE_STDS = (0.05, 0.1)
BEAD_TYPES = [0, 1, 2, 3, 4]  # one type per bead along the backbone
#: The study's CPU recipes (:data:`~opforce_tutorial.study.CPU_FLOWS` and the rest), measured on this
#: chapter: the coupling flow's couplings act on each bond's displacement in a frame of c's bond and its
#: conditioners also see c's bond lengths and angle cosines. Against the authors' parametrisation at the
#: same size and budget (``benchmarks/ala2_ablation.py``, README): bond JS of its outputs 0.003 vs 0.13,
#: angle JS 0.019 vs 0.088 at σ = 0.05 Å. Every kernel makes 40 000 labels, whatever the size of the dataset:
#: 4 000 frames drawn at random, 10 draws each (the paper's protocol).
COUPLING_CONFIG, COUPLING_STEPS = CPU_FLOWS["coupling"].config, CPU_FLOWS["coupling"].n_steps
CNF_STEPS = CPU_FLOWS["cnf"].n_steps
LABELS, OUTPUT_LABELS = CPU_LABELS, OUTPUT_LABELS
#: The reference is the reference: it takes every frame with its force (about 107 500), since instantaneous
#: forces are noisy labels whose noise force matching must average away. With the kernels' 40 000 (and 3000
#: steps) its Ramachandran JS was 0.067, worse than a kernel model's (README, ablation table).
REFERENCE_LABELS = LabelSettings(data_fraction=1.0, repeats=1, batch_size=256, seed=0)
#: The generic CG recipe (:data:`~opforce_tutorial.study.CPU_CG`) with 4 × its force-matching steps (12 000,
#: patience 30 evaluations), for every source: with every frame and 12 000 steps (best step 11 200) the reference's
#: Ramachandran JS fell from 0.067 to 0.037, the coupling σ = 0.05 Å model's from 0.042 to 0.037 (ablation table).
CG_SETTINGS = replace(CPU_CG, force_matching=replace(CPU_CG.force_matching, n_steps=12_000, patience=30))
#: Chapter 2's coupling flows train 16 000 steps at both σ (:data:`COUPLING_STEPS` is the generic recipe's,
#: :data:`~opforce_tutorial.study.CPU_FLOWS`, 4 000 at 0.05 Å, the ablations' base): with 4 000 steps at 0.05 Å its
#: outputs' angles stayed at 0.29 × the noise kernel's JS and the CG model trained on its labels at 0.35 ×, over
#: the CG gate's 1/3 (README, ablation table).
FLOWS = {**CPU_FLOWS, "coupling": replace(CPU_FLOWS["coupling"], n_steps=16_000, n_steps_at={})}
#: The chirality-aware model: :data:`CG_SETTINGS` with a network that also sees the signed dihedrals
#: (``SchNetConfig.dihedral_hidden`` = :data:`CHIRAL_WIDTH`), trained on the reference forces. The
#: distance-only network cannot tell a configuration from its mirror image (αR from its mirror in αL).
CHIRAL_REFERENCE, CHIRAL_WIDTH = "ala2-cg-reference-chiral", 64
#: The reference-forces model with twice :data:`CG_SETTINGS`' steps (24 000, same patience): at 12 000 its best
#: step was 11 200 and its 1 ns αR population 5 points below the data's. Measured: early stopping ends it at step
#: 15 500 (best 12 500) with the same held-out force error (327.28 vs 327.28), so the 12 000-step fit had converged.
LONG_REFERENCE = "ala2-cg-reference-24k"
LONG_FM = replace(CG_SETTINGS.force_matching, n_steps=24_000)
#: The σ = 0.1 Å CNF model with the paper's label protocol (10 % of the frames, about 10 750, 10 draws each:
#: about 107 500 labels, as many as the reference has) where every kernel has 40 000: its labels scatter like
#: atomistic forces (mean per-bead |label| 36 against 41 kcal/mol/Å), and the reference needed every frame
#: (with 40 000 labels its Ramachandran JS was 0.067, with 107 500 0.037). Measures whether label count is what
#: the σ = 0.1 Å CNF model's Ramachandran surface lacks.
CNF_PAPER_LABELS = "ala2-cg-cnf-0.1-paper-labels"
PAPER_LABELS = LabelSettings(data_fraction=0.1, repeats=10, batch_size=256, seed=0)
#: The reference-forces model as an ensemble of 4 networks fitted to the same labels from different seeds
#: (:class:`~opforce_tutorial.cg.network.NetworkEnsemble`): fits of the same labels at the same held-out force
#: error hold αR populations 25 points apart (more steps, an annealed learning rate, the last step's weights:
#: README), so where a fit lands, not the labels, sets the basin balance. Measures whether averaging fits pins it.
ENSEMBLE_REFERENCE, ENSEMBLE_SIZE = "ala2-cg-reference-ensemble4", 4

STUDY = Study(name="ala2", dataset="ala2", system=SYSTEM, bead_types=BEAD_TYPES, noise_stds=NOISE_STDS,
              flows=FLOWS,
              labels=LABELS, output_labels=OUTPUT_LABELS, cg=CG_SETTINGS, reference_labels=REFERENCE_LABELS,
              variants=(CGVariant(CHIRAL_REFERENCE, "reference", None, CHIRAL_WIDTH, label="+ dihedrals"),
                        CGVariant(LONG_REFERENCE, "reference", force_matching=LONG_FM, required=False,
                                  label="24k steps"),
                        CGVariant(CNF_PAPER_LABELS, "cnf", 0.1, labels=PAPER_LABELS, required=False,
                                  label="paper's label protocol"),
                        CGVariant(ENSEMBLE_REFERENCE, "reference", ensemble=ENSEMBLE_SIZE, required=False,
                                  label=f"ensemble of {ENSEMBLE_SIZE}")),
              long_run_analysis=lambda trajectory: {"exchange": basin_exchange(trajectory)})

# the study's stages, as the chapter calls them
kernel_name, cg_name, cg_model_names = STUDY.kernel_name, STUDY.cg_name, STUDY.cg_model_names
training_frames, reference_histograms, score = STUDY.training_frames, STUDY.reference_histograms, STUDY.score
make_kernel, labelled_set, kernel_output_js = STUDY.make_kernel, STUDY.labelled_set, STUDY.kernel_output_js
prior_only_trajectory, models_trained_on_other_data = STUDY.prior_only_trajectory, STUDY.models_trained_on_other_data
models_with_other_settings = STUDY.models_with_other_settings
recipes, long_run = STUDY.recipes, STUDY.long_run


def basin_populations(frames, n_blocks: int = 10) -> dict[str, dict[str, float]]:
    """β/PII, αR and αL populations with block errors (:func:`~opforce_tutorial.evaluation.state_populations`
    of alanine dipeptide's :func:`~opforce_tutorial.systems.alanine_dipeptide.basins`)."""
    return state_populations(frames, basins, n_blocks)


def basin_exchange(trajectory) -> dict:
    """Is a CG simulation (time, replicas, 5, 3) long enough for the populations it reports?

    Counts, over all replicas, how many start in αL and how often the replicas enter and leave it
    (committed to αL at φ > 20°, to the rest at φ < −20°, as the data's αL visits), the mean number of
    changes between αR and β per replica (committed to the basin last visited), and the αL and αR
    populations (%) in the first and second half of the saved time. A population that drifts between the
    halves, or an αL population carried by the replicas that started there with few entries and exits,
    is set by the starts (data frames) and the simulation's length, not by the model's free energy.
    """
    traj = np.asarray(trajectory)
    if traj.ndim != 4 or traj.shape[2:] != (5, 3):
        raise ValueError(f"expected a simulation of shape (time, replicas, 5, 3), got {traj.shape}")
    n_time, n_rep = traj.shape[:2]
    phi, psi = ramachandran(traj.reshape(-1, 5, 3))
    phi, psi = phi.reshape(n_time, n_rep), psi.reshape(n_time, n_rep)
    in_ar, in_b = BASINS["αR"](phi, psi), BASINS["β / PII"](phi, psi)
    exits = entries = ar_b = 0
    for r in range(n_rep):
        out, into = count_transitions(phi[:, r] > 20, phi[:, r] < -20)
        exits, entries = exits + out, entries + into
        ar_b += sum(count_transitions(in_ar[:, r], in_b[:, r]))
    half = n_time // 2
    row = {"replicas": n_rep, "starting in αL": int((phi[0] > 0).sum()), "αL entries": entries, "αL exits": exits,
           "αR ↔ β changes per replica": ar_b / n_rep}
    for basin in ("αL (φ > 0)", "αR"):
        short = basin.split()[0]
        for name, sl in (("first half", slice(0, half)), ("second half", slice(half, None))):
            row[f"{short} % {name}"] = 100 * float(BASINS[basin](phi[sl], psi[sl]).mean())
    return row


def model_dihedral_checks(models: dict, frames, kbt: float, batch_size: int = 4096):
    """The dihedral integration-by-parts check of every CG model's forces at the data's ``frames``.

    A model whose Boltzmann density were the data's would pass it: its forces at the data's frames
    would satisfy ⟨F·∇h⟩ = −k_BT⟨Δh⟩ for every h
    (:func:`~opforce_tutorial.evaluation.dihedral_integration_by_parts_check`, h = cos and sin of φ and ψ).
    The difference is k_BT⟨∇ log(p_model/p_data) · ∇h⟩ over the data: it sees where the model's
    density differs from the data's *along* the frames, and little of a difference in weight between
    basins separated by a sparsely sampled barrier. No simulation is needed. Returns a DataFrame of z
    values, one row per model (the keys of ``models``), one column per test function.
    """
    import pandas as pd

    x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    forces = {name: model.forces_in_batches(x, batch_size).numpy() for name, model in models.items()}
    checks = dihedral_integration_by_parts_check(np.asarray(frames), forces, kbt)
    names = {"cos dihedral 0-1-2-3": "cos φ", "sin dihedral 0-1-2-3": "sin φ",
             "cos dihedral 1-2-3-4": "cos ψ", "sin dihedral 1-2-3-4": "sin ψ"}
    return pd.DataFrame({name: {f"z {names.get(r['function'], r['function'])}": r["z"] for r in rows}
                         for name, rows in checks.items()}).T


def long_run_summary(run: dict, data_alpha_l: dict) -> tuple[dict, dict]:
    """A recorded long run (:func:`long_runs`) as a table row and as pre-formatted text for the chapter.

    ``data_alpha_l``: the reference data's αL population, ``{"mean", "block_error"}`` (fractions). In the
    text, ``drift`` says how the run's αL population moved from the first half of the run to the second:
    "held" when the change is within two block errors of the whole run's αL population, else "rose" or
    "fell"; ``versus`` compares it with the data's: "matches" within two combined block errors, else
    "exceeds" or "falls short of"; ``ratio`` is the run's αL population over the data's.
    """
    x, p = run["exchange"], run["populations"]
    al, al_err = 100 * p["αL (φ > 0)"]["mean"], 100 * p["αL (φ > 0)"]["block_error"]
    data, data_err = 100 * data_alpha_l["mean"], 100 * data_alpha_l["block_error"]
    versus = ("matches" if abs(al - data) <= 2 * np.hypot(al_err, data_err)
              else ("exceeds" if al > data else "falls short of"))
    first, second = x["αL % first half"], x["αL % second half"]
    drift = "held" if abs(second - first) <= 2 * al_err else ("rose" if second > first else "fell")
    row = {"starting in αL": x["starting in αL"], "αL entries": x["αL entries"], "αL exits": x["αL exits"],
           **{f"{basin} %": f"{100 * p[basin]['mean']:.1f} ± {100 * p[basin]['block_error']:.1f}"
              for basin in ("αL (φ > 0)", "αR", "β / PII")},
           "αL % first half": f"{first:.1f}", "αL % second half": f"{second:.1f}",
           "wall time (min)": f"{run['wall_time_s'] / 60:.0f}"}
    text = {"aL": f"{al:.1f}", "aLerr": f"{al_err:.1f}", "aR": f"{100 * p['αR']['mean']:.0f}",
            "entries": str(x["αL entries"]), "exits": str(x["αL exits"]), "first": f"{first:.0f}",
            "second": f"{second:.0f}", "drift": drift, "versus": versus, "ratio": f"{al / data:.1f}"}
    return row, text


def seed_metrics(models_registry: dict | None = None, replicates: dict | None = None, names: list[str] | None = None):
    """The scores of the CG models ``names`` (default :func:`cg_model_names`) per training seed, one row
    per (model, seed), as a DataFrame.

    Seed 0 is the registered model (``models/registry.json``); other seeds are its replicates recorded
    for the same registered weights (``opforce replicate``, :func:`~.pretrained.replicates_of`).
    Columns: basin populations (%), Ramachandran JS and the mean JS over the bonds and over the angles (nats).
    """
    import pandas as pd

    from ..pretrained import metrics_by_seed

    rows = []
    for name, runs in metrics_by_seed(cg_model_names() if names is None else names, models_registry,
                                      replicates).items():
        for seed, m in runs.items():
            js = m["js"]
            rows.append({"model": name, "seed": seed,
                         **{f"{basin} %": 100 * p["mean"] for basin, p in m["populations"].items()},
                         "JS ramachandran": js["ramachandran"]["js"],
                         "mean JS bonds": float(np.mean([v["js"] for k, v in js.items() if k.startswith("bond")])),
                         "mean JS angles": float(np.mean([v["js"] for k, v in js.items() if k.startswith("angle")]))})
    return pd.DataFrame(rows)


def seed_anova(seeds, column: str = "αR %", names: list[str] | None = None) -> tuple[float, float]:
    """Do the models ``names`` (default: all in ``seeds``) differ in ``column`` beyond their spread over
    training seeds? One-way ANOVA on :func:`seed_metrics` rows: F, the ratio of the between-model to
    the within-model (seed) variance, and its p-value (the chance of an F at least this large if every
    model had the same mean). Needs two seeds or more of at least two models."""
    from scipy.stats import f_oneway

    names = list(dict.fromkeys(seeds["model"])) if names is None else names
    groups = [seeds.loc[seeds["model"] == name, column].to_numpy() for name in names]
    if len(groups) < 2 or min(len(g) for g in groups) < 2:
        raise ValueError(f"need at least two seeds of at least two models, got {dict(zip(names, map(len, groups)))}")
    result = f_oneway(*groups)
    return float(result.statistic), float(result.pvalue)
